"""``z_loss`` / ``softcap`` in cross entropy and the multiclass ``focal_loss``, through ``_core``.

The native core is tested directly, with options objects built without ``_spec``'s checks so
that the core's own checks answer: every ``cross_entropy`` and ``focal_loss`` case of
``shared/golden-beyond`` (PyTorch autograd in float64), finite-difference gradients of every
new option, the bit-for-bit promises (options off, ``gamma = 0``, thread counts) and the
errors with their exact types and messages.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np
import pytest
from conftest import SHARED_DIR, assert_golden_close

xent_rs: Any = pytest.importorskip("xent_rs")
_core: Any = pytest.importorskip("xent_rs._core")
ClassLoss: Any = pytest.importorskip("xent_rs._spec").ClassLoss

BEYOND_DIR = SHARED_DIR / "golden-beyond"

# --------------------------------------------------------------------------------------------
# calls
# --------------------------------------------------------------------------------------------


#: What the core takes beside the options object, in its order.
ARRAYS = ("input", "target", "weight", "sample_weight", "grad_output", "grad_out")


def _core_with_public_defaults(name: str) -> Callable[..., Any]:
    """``_core.class_loss`` called as the public ``xent_rs.<name>`` is, with its defaults.

    The arguments are bound to the public signature; the options go into a ``ClassLoss``
    built directly and the arrays to the core as they are, so no Python-side check or
    conversion runs.
    """
    public = inspect.signature(getattr(xent_rs, name))
    options = {f.name for f in dataclasses.fields(ClassLoss)}

    def call(*args: Any, **kw: Any) -> Any:
        bound = public.bind(*args, **kw)
        bound.apply_defaults()
        given = dict(bound.arguments)
        spec = ClassLoss(name, **{k: given.pop(k) for k in list(given) if k in options})
        assert set(given) == set(ARRAYS), "every public argument reaches the core"
        return _core.class_loss(spec, *(given[k] for k in ARRAYS))

    return call


def partial(name: str, x: np.ndarray, t: np.ndarray, return_losses: bool = True, **kw: Any) -> Any:
    """The core's partial result of loss ``name`` (options by keyword, ``reduction="sum"``;
    ``weight`` and ``sample_weight`` too)."""
    w, sw = kw.pop("weight", None), kw.pop("sample_weight", None)
    spec = ClassLoss(name, reduction="sum", **kw)
    return _core.class_loss(spec, x, t, w, sw, None, None, partial=return_losses)


#: ``cross_entropy`` (with z_loss and softcap) and ``focal_loss`` through ``_core.class_loss``.
ce = _core_with_public_defaults("cross_entropy")
focal = _core_with_public_defaults("focal_loss")


def same_bits(a: Any, b: Any) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@contextmanager
def threads(n: int) -> Iterator[None]:
    before = _core.get_num_threads()
    _core.set_num_threads(n)
    try:
        yield
    finally:
        _core.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# golden cases
# --------------------------------------------------------------------------------------------


@cache
def _beyond() -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    with open(BEYOND_DIR / "cases.json", encoding="utf-8") as fh:
        cases = json.load(fh)["cases"]
    with np.load(BEYOND_DIR / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return cases, arrays


def _params(errors: bool) -> list[Any]:
    if not BEYOND_DIR.is_dir():
        return []
    cases, _ = _beyond()
    return [
        pytest.param(c, id=c["id"])
        for c in cases
        if c["op"] in ("cross_entropy", "focal_loss")
        and "cast" not in c
        and (c.get("expect_error") is not None) == errors
    ]


def _golden_call(case: dict[str, Any], return_grad: bool) -> Any:
    _, arrays = _beyond()
    inputs = {k: arrays[v].copy() for k, v in case["inputs"].items()}
    x, t = inputs.pop("input"), inputs.pop("target")
    kwargs = {**inputs, **case["kwargs"]}
    fn = ce if case["op"] == "cross_entropy" else focal
    return fn(x, t, return_grad=return_grad, **kwargs)


@pytest.mark.parametrize("case", _params(errors=False))
def test_golden_beyond_case(case: dict[str, Any]) -> None:
    _, arrays = _beyond()
    want = {k: arrays[v] for k, v in case["expected"].items()}
    rtol, atol = case["rtol"], case["atol"]
    out = _golden_call(case, return_grad=False)
    assert_golden_close(out, want["output"], rtol, atol, what="output")
    loss, grad = _golden_call(case, return_grad=True)
    assert grad.dtype == np.dtype(case["dtype"])
    assert_golden_close(grad, want["grad"], rtol, atol, grad=True, what="grad")
    same_bits(loss, out)


@pytest.mark.parametrize("case", _params(errors=True))
def test_golden_beyond_error(case: dict[str, Any]) -> None:
    exc = {"ValueError": ValueError, "IndexError": IndexError}[case["expect_error"]]
    for return_grad in (False, True):
        with pytest.raises(exc) as info:
            _golden_call(case, return_grad)
        assert type(info.value) is exc


# --------------------------------------------------------------------------------------------
# finite differences (float64)
# --------------------------------------------------------------------------------------------


def _fd_check(loss: Callable[[np.ndarray], tuple[float, np.ndarray]], x: np.ndarray) -> None:
    """Central differences of the sum-reduced ``loss`` against its gradient."""
    _, grad = loss(x)
    h = 1e-6
    num = np.empty_like(x)
    flat, nflat = x.reshape(-1), num.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + h
        up = loss(x)[0]
        flat[i] = keep - h
        down = loss(x)[0]
        flat[i] = keep
        nflat[i] = (up - down) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7)


RNG = np.random.default_rng(20261202)


def _logits(shape: tuple[int, ...], scale: float = 3.0) -> np.ndarray:
    return RNG.standard_normal(shape) * scale


FD_CE_OPTIONS = [
    {"z_loss": 0.05},
    {"softcap": 2.0},
    {"z_loss": 0.02, "softcap": 3.0, "label_smoothing": 0.2},
    {"z_loss": 0.1, "softcap": 1.5, "weighted": True},
    {"z_loss": 0.01, "softcap": 4.0, "label_smoothing": 0.1, "weighted": True},
]


def _hard_targets(
    shape: tuple[int, ...], axis: int, weighted: bool, ignored: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Class indices with the ``ignored``-th one set to -100, and class and sample weights."""
    c = shape[axis]
    sample_shape = tuple(d for i, d in enumerate(shape) if i != axis % len(shape))
    t = RNG.integers(0, c, size=sample_shape)
    t.reshape(-1)[ignored] = -100
    w = RNG.uniform(0.5, 2.0, c) if weighted else None
    sw = RNG.uniform(0.5, 2.0, sample_shape) if weighted else None
    return t, w, sw


def _summed(
    loss: Callable[..., Any], target: np.ndarray, **options: Any
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``loss`` of the logits and ``target``, sum-reduced with its gradient, for _fd_check."""
    return lambda x: loss(x, target, reduction="sum", return_grad=True, **options)


@pytest.mark.parametrize("opts", FD_CE_OPTIONS, ids=str)
@pytest.mark.parametrize(("shape", "axis"), [((6, 5), -1), ((3, 40), -1), ((2, 4, 3), 1)])
def test_hard_target_gradient_by_finite_differences(
    opts: dict[str, Any], shape: tuple[int, ...], axis: int
) -> None:
    opts = dict(opts)
    t, w, sw = _hard_targets(shape, axis, opts.pop("weighted", False), 0)
    loss = _summed(ce, t, axis=axis, weight=w, sample_weight=sw, **opts)
    _fd_check(loss, _logits(shape))


@pytest.mark.parametrize("opts", FD_CE_OPTIONS, ids=str)
def test_soft_target_gradient_by_finite_differences(opts: dict[str, Any]) -> None:
    opts = dict(opts)
    weighted = opts.pop("weighted", False)
    shape = (5, 7)
    p = RNG.dirichlet(np.ones(shape[1]), size=shape[0])
    w = RNG.uniform(0.5, 2.0, shape[1]) if weighted else None
    sw = RNG.uniform(0.5, 2.0, shape[0]) if weighted else None
    _fd_check(_summed(ce, p, weight=w, sample_weight=sw, **opts), _logits(shape))


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("shape", "axis"), [((6, 5), -1), ((3, 40), -1), ((2, 4, 3), 1)])
def test_focal_gradient_by_finite_differences(
    gamma: float, weighted: bool, shape: tuple[int, ...], axis: int
) -> None:
    t, w, sw = _hard_targets(shape, axis, weighted, -1)
    loss = _summed(focal, t, gamma=gamma, axis=axis, weight=w, sample_weight=sw)
    _fd_check(loss, _logits(shape, 2.0))


def test_focal_matches_its_formula() -> None:
    x = _logits((30, 9))
    t = RNG.integers(0, 9, size=30)
    w = RNG.uniform(0.5, 2.0, 9)
    m = x.max(1, keepdims=True)
    logp = x - (m + np.log(np.exp(x - m).sum(1, keepdims=True)))
    lp = logp[np.arange(30), t]
    want = -w[t] * (-np.expm1(lp)) ** 2.5 * lp
    got = focal(x, t, gamma=2.5, weight=w, reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-12)
    mean = focal(x, t, gamma=2.5, weight=w)
    np.testing.assert_allclose(mean, want.sum() / w[t].sum(), rtol=1e-12)


# --------------------------------------------------------------------------------------------
# bit-for-bit promises
# --------------------------------------------------------------------------------------------

LAYOUT_CASES = [((64, 10), -1), ((8, 300), -1), ((3, 6, 5, 7), 1), ((4, 2, 70), -1)]


def _hard(shape: tuple[int, ...], axis: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    x = _logits(shape).astype(dtype)
    c = shape[axis]
    sample_shape = tuple(d for i, d in enumerate(shape) if i != axis % len(shape))
    t = RNG.integers(0, c, size=sample_shape)
    t.reshape(-1)[1] = -100
    return x, t


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "axis"), LAYOUT_CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_options_off_are_the_plain_call_bit_for_bit(
    dtype: Any, shape: tuple[int, ...], axis: int, reduction: str
) -> None:
    x, t = _hard(shape, axis, dtype)
    c = shape[axis]
    w = RNG.uniform(0.5, 2.0, c).astype(dtype)
    for smoothing in (0.0, 0.1):
        kw: dict[str, Any] = {
            "axis": axis,
            "weight": w,
            "reduction": reduction,
            "label_smoothing": smoothing,
        }
        plain = ce(x, t, return_grad=True, **kw)
        off = ce(x, t, return_grad=True, z_loss=0.0, softcap=None, **kw)
        same_bits(off[0], plain[0])
        same_bits(off[1], plain[1])
        same_bits(ce(x, t, z_loss=0.0, **kw), ce(x, t, **kw))
        p = RNG.dirichlet(np.ones(c), size=x.size // c).astype(dtype)
        p = np.moveaxis(p.reshape(*np.moveaxis(x, axis, -1).shape), -1, axis).copy()
        soft = ce(x, p, return_grad=True, **kw)
        soft_off = ce(x, p, return_grad=True, z_loss=0.0, softcap=None, **kw)
        same_bits(soft_off[1], soft[1])
    part = partial("cross_entropy", x, t, axis=axis, weight=w)
    part_off = partial("cross_entropy", x, t, axis=axis, weight=w, z_loss=0.0, softcap=None)
    assert part.loss_sum == part_off.loss_sum
    same_bits(part.losses, part_off.losses)


def test_huge_softcap_tends_to_plain_cross_entropy() -> None:
    x, t = _hard((50, 20), -1, np.float64)
    loss, grad = ce(x, t, return_grad=True)
    capped, capped_grad = ce(x, t, return_grad=True, softcap=1e6)
    np.testing.assert_allclose(capped, loss, rtol=1e-9)
    np.testing.assert_allclose(capped_grad, grad, rtol=1e-8, atol=1e-12)


def test_softcap_keeps_huge_logits_finite() -> None:
    x = np.array([[1e30, -1e30, 0.0], [np.finfo(np.float32).max, 0.0, 1.0]], np.float32)
    loss, grad = ce(x, np.array([1, 2]), return_grad=True, softcap=10.0, z_loss=1e-3)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "axis"), LAYOUT_CASES)
def test_focal_without_focus_is_cross_entropy_bit_for_bit(
    dtype: Any, shape: tuple[int, ...], axis: int
) -> None:
    x, t = _hard(shape, axis, dtype)
    sw = RNG.uniform(0.5, 2.0, t.shape).astype(dtype)
    for reduction in ("mean", "sum", "none"):
        kw: dict[str, Any] = {"axis": axis, "sample_weight": sw, "reduction": reduction}
        a = focal(x, t, gamma=0.0, return_grad=True, **kw)
        b = ce(x, t, return_grad=True, **kw)
        same_bits(a[0], b[0])
        same_bits(a[1], b[1])
    fp = partial("focal_loss", x, t, axis=axis, sample_weight=sw)
    cp = partial("cross_entropy", x, t, axis=axis, sample_weight=sw)
    assert (fp.loss_sum, fp.denominator, fp.count) == (cp.loss_sum, cp.denominator, cp.count)
    same_bits(fp.losses, cp.losses)


@pytest.mark.parametrize(("shape", "axis"), [((40_000, 10), -1), ((600, 2_000), -1)])
def test_one_and_two_threads_give_the_same_bits(shape: tuple[int, ...], axis: int) -> None:
    x, t = _hard(shape, axis, np.float32)
    w = RNG.uniform(0.5, 2.0, shape[axis]).astype(np.float32)
    calls: list[Callable[[], Any]] = [
        lambda: ce(x, t, weight=w, return_grad=True, z_loss=1e-3, softcap=15.0),
        lambda: ce(x, t, return_grad=True, z_loss=1e-2, label_smoothing=0.1),
        lambda: ce(x, t, reduction="sum", softcap=5.0),
        lambda: focal(x, t, weight=w, return_grad=True),
        lambda: focal(x, t, gamma=1.5, reduction="sum"),
    ]
    for call in calls:
        with threads(1):
            one = call()
        with threads(2):
            two = call()
        if isinstance(one, tuple):
            same_bits(one[0], two[0])
            same_bits(one[1], two[1])
        else:
            same_bits(one, two)


def test_partials_match_the_one_shot_calls() -> None:
    x, t = _hard((200, 13), -1, np.float32)
    part = partial("cross_entropy", x, t, z_loss=0.01, softcap=4.0)
    same_bits(part.losses, ce(x, t, reduction="none", z_loss=0.01, softcap=4.0))
    assert part.loss_sum == ce(x, t, reduction="sum", z_loss=0.01, softcap=4.0)
    assert part.denominator == 199.0 and part.count == 200
    fp = partial("focal_loss", x, t, return_losses=False, gamma=2.0)
    assert fp.losses is None
    assert fp.loss_sum == focal(x, t, reduction="sum")
    assert fp.loss_sum / fp.denominator == focal(x, t)


def test_grad_output_and_grad_out() -> None:
    x, t = _hard((20, 30), -1, np.float64)
    g = RNG.uniform(-1.0, 1.0, 20)
    for call in (
        lambda **k: ce(x, t, z_loss=0.01, softcap=3.0, **k),
        lambda **k: focal(x, t, gamma=2.0, **k),
    ):
        _, grad = call(reduction="none", return_grad=True, grad_output=g)
        _, plain = call(reduction="none", return_grad=True)
        np.testing.assert_allclose(grad, plain * g[:, None], rtol=1e-12, atol=1e-15)
        out = np.empty_like(x)
        loss, same = call(return_grad=True, grad_out=out)
        assert same is out
        loss2, grad2 = call(return_grad=True)
        same_bits(out, grad2)
        assert loss == loss2


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def _rust(v: float) -> str:
    """How the core writes a float in its messages (Rust's ``{:?}``)."""
    if np.isnan(v):
        return "NaN"
    return repr(v)


def _raises_value_error(call: Callable[[], Any], message: str) -> None:
    """``call()`` raises a plain ValueError (no subclass) with exactly ``message``."""
    with pytest.raises(ValueError) as info:
        call()
    assert type(info.value) is ValueError
    assert str(info.value) == message


@pytest.mark.parametrize("z", [-1.0, float("nan"), float("inf")])
def test_bad_z_loss_is_a_value_error(z: float) -> None:
    x, t = _hard((4, 3), -1, np.float32)
    _raises_value_error(
        lambda: ce(x, t, z_loss=z), f"z_loss must be a finite number >= 0.0, got {_rust(z)}"
    )


@pytest.mark.parametrize("cap", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_softcap_is_a_value_error(cap: float) -> None:
    x, t = _hard((4, 3), -1, np.float32)
    _raises_value_error(
        lambda: ce(x, t, softcap=cap, return_grad=True),
        f"softcap must be a finite number > 0.0 (or None for no cap), got {_rust(cap)}",
    )


@pytest.mark.parametrize("gamma", [-0.5, float("nan"), float("inf")])
def test_bad_gamma_is_a_value_error(gamma: float) -> None:
    x, t = _hard((4, 3), -1, np.float32)
    _raises_value_error(
        lambda: focal(x, t, gamma=gamma),
        f"gamma must be a finite number >= 0.0, got {_rust(gamma)}",
    )
    with pytest.raises(ValueError):
        partial("focal_loss", x, t, return_losses=False, gamma=gamma)


def test_focal_errors_have_cross_entropys_types() -> None:
    x, t = _hard((4, 3), -1, np.float32)
    with pytest.raises(IndexError) as index:
        focal(x, np.array([0, 1, 3, 0]))
    assert type(index.value) is IndexError
    with pytest.raises(TypeError) as soft:
        focal(x, np.full((4, 3), 1 / 3, np.float32))
    assert type(soft.value) is TypeError
    assert "focal_loss needs integer class indices" in str(soft.value)
    with pytest.raises(ValueError):
        focal(x, t, weight=np.ones(2, np.float32))
    with pytest.raises(ValueError):
        focal(x, t, reduction="none", grad_output=1.0, return_grad=True)
