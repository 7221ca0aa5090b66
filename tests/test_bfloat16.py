"""bfloat16 inputs (``ml_dtypes.bfloat16``): read natively by the core, computed in float32,
results in bfloat16.

- the bfloat16 cases of ``tests/golden-beyond`` (a copy of ``../shared/golden-beyond``: PyTorch
  autograd in float64 on the stored values);
- every op and its gradient: the bfloat16 result is, bit for bit, the float32 result on the
  same (widened) values, rounded to bfloat16, for every layout of the row driver;
- bfloat16 targets and weights, non-contiguous bfloat16 inputs, 1 vs 2 threads.

Skipped where ``ml_dtypes`` is not installed (no bfloat16 array can exist there).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SHARED_DIR, TESTS_DIR, assert_golden_close, assert_same_files, core_class

ml_dtypes = pytest.importorskip("ml_dtypes")
xent_rs = pytest.importorskip("xent_rs")

BF16 = np.dtype(ml_dtypes.bfloat16)
F32 = np.dtype(np.float32)

# Contiguous rows (many classes, and long ones), the transposed tile (few classes), and the
# class axis not last (strided lanes).
LAYOUTS = [((64, 1000), -1), ((300, 7), -1), ((3, 12000), -1), ((4, 6, 5, 3), 1), ((5, 9, 40), 0)]


def _bits(a: Any) -> np.ndarray:
    return np.asarray(a).view(np.uint16)


def _assert_rounded(got: Any, want32: Any, what: str) -> None:
    """``got`` is bfloat16 and equals the float32 result ``want32`` rounded to bfloat16."""
    got_a, want_a = np.asarray(got), np.asarray(want32)
    assert got_a.dtype == BF16, f"{what}: dtype {got_a.dtype}"
    assert want_a.dtype == F32, f"{what}: the float32 result has dtype {want_a.dtype}"
    rounded = want_a.astype(BF16)
    assert got_a.shape == rounded.shape, what
    bad = np.flatnonzero(_bits(got_a) != _bits(rounded))
    assert bad.size == 0, (
        f"{what}: {bad.size} values differ, first at {bad[0]}: "
        f"{got_a.reshape(-1)[bad[0]]} vs {rounded.reshape(-1)[bad[0]]}"
    )


def _assert_results(got: Any, want32: Any, what: str) -> None:
    """A loss (or ``(loss, grad)``) in bfloat16 against the float32 call's, rounded."""
    if isinstance(want32, tuple):
        assert isinstance(got, tuple), what
        for i, (g, w) in enumerate(zip(got, want32, strict=True)):
            _assert_results(g, w, f"{what}[{i}]")
        return
    _assert_rounded(got, want32, what)


def _values(shape: tuple[int, ...], seed: int, scale: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """bfloat16 values and the same values in float32."""
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(BF16)
    return x, x.astype(F32)


def _class_axis(shape: tuple[int, ...], axis: int) -> int:
    return axis % len(shape)


# -- golden cases -------------------------------------------------------------------------------


GOLDEN_BEYOND = TESTS_DIR / "golden-beyond"
SHARED_GOLDEN_BEYOND = SHARED_DIR / "golden-beyond"


def _golden_dir() -> Path | None:
    for d in (GOLDEN_BEYOND, SHARED_GOLDEN_BEYOND):
        if (d / "cases.json").is_file():
            return d
    return None


@pytest.mark.skipif(
    not (GOLDEN_BEYOND.is_dir() and SHARED_GOLDEN_BEYOND.is_dir()),
    reason="tests/golden-beyond or ../shared/golden-beyond is not present",
)
def test_golden_beyond_copy_matches_shared() -> None:
    assert_same_files(GOLDEN_BEYOND, SHARED_GOLDEN_BEYOND)


def _golden_cases() -> list[Any]:
    d = _golden_dir()
    if d is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no golden-beyond cases"))]
    cases = json.loads((d / "cases.json").read_text())["cases"]
    return [pytest.param(c, id=c["id"]) for c in cases if c.get("dtype") == "bfloat16"]


@pytest.mark.parametrize("case", _golden_cases())
def test_golden_bfloat16_cases(case: dict[str, Any]) -> None:
    d = _golden_dir()
    assert d is not None
    fn = getattr(xent_rs, case["op"])
    params = inspect.signature(fn).parameters
    missing = [k for k in case["kwargs"] if k not in params]
    if missing:
        pytest.skip(f"{case['op']} has no {', '.join(missing)} on this branch")
    with np.load(d / "arrays.npz") as arrays:
        inputs = {k: arrays[v] for k, v in case["inputs"].items()}
        expected = {k: arrays[v] for k, v in case["expected"].items()}
    for name, dtype in case.get("cast", {}).items():
        assert dtype == "bfloat16"
        # The stored float32 values are bfloat16 values: the cast is exact.
        cast = inputs[name].astype(BF16)
        assert np.array_equal(cast.astype(F32), inputs[name]), name
        inputs[name] = cast
    grad_output = inputs.pop("grad_output", None)
    args = [inputs.pop("input")]
    if "target" in inputs:
        args.append(inputs.pop("target"))
    kwargs = {**inputs, **case["kwargs"]}
    rtol, atol = case["rtol"], case["atol"]
    out = fn(*args, **kwargs)
    assert np.asarray(out).dtype == BF16
    assert_golden_close(out, expected["output"], rtol, atol, what="output")
    if "grad" in expected and case["op"] not in ("log_softmax", "softmax"):
        extra = {} if grad_output is None else {"grad_output": grad_output}
        loss, grad = fn(*args, **kwargs, return_grad=True, **extra)
        assert np.asarray(loss).dtype == BF16 and grad.dtype == BF16
        assert_golden_close(grad, expected["grad"], rtol, atol, grad=True, what="grad")


# -- every op: the float32 result, rounded ------------------------------------------------------


@pytest.mark.parametrize(("shape", "axis"), LAYOUTS)
def test_softmax_family(shape: tuple[int, ...], axis: int) -> None:
    x, xw = _values(shape, 1)
    for op in ("log_softmax", "softmax", "logsumexp"):
        fn = getattr(xent_rs, op)
        _assert_rounded(fn(x, axis), fn(xw, axis), op)
    g, gw = _values(shape, 2, 1.0)
    for op in ("log_softmax", "softmax"):
        y = getattr(xent_rs, op)(x, axis)
        bwd = getattr(xent_rs, f"{op}_backward")
        _assert_rounded(bwd(g, y, axis), bwd(gw, y.astype(F32), axis), f"{op}_backward")
    out = np.empty_like(x)
    assert xent_rs.log_softmax(x, axis, out=out) is out
    _assert_rounded(out, xent_rs.log_softmax(xw, axis), "log_softmax out=")
    inplace = x.copy()
    xent_rs.softmax(inplace, axis, out=inplace)
    _assert_rounded(inplace, xent_rs.softmax(xw, axis), "softmax in place")


@pytest.mark.parametrize(("shape", "axis"), LAYOUTS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_hard_target_losses(shape: tuple[int, ...], axis: int, reduction: str) -> None:
    x, xw = _values(shape, 3)
    ax = _class_axis(shape, axis)
    classes = shape[ax]
    sample_shape = shape[:ax] + shape[ax + 1 :]
    rng = np.random.default_rng(4)
    y = rng.integers(0, classes, sample_shape)
    y.reshape(-1)[::7] = -100
    w = rng.uniform(0.5, 2.0, classes).astype(BF16)
    sw = rng.uniform(0.0, 2.0, sample_shape).astype(BF16)
    g = None if reduction != "none" else rng.standard_normal(sample_shape).astype(BF16)

    def wide(a: Any) -> Any:
        return None if a is None else a.astype(F32)

    for kw in (
        {},
        {"weight": w, "label_smoothing": 0.1},
        {"sample_weight": sw},
        {"weight": w, "sample_weight": sw},
    ):
        kw32 = {k: (wide(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        common = {"axis": axis, "reduction": reduction}
        what = f"cross_entropy {sorted(kw)}"
        _assert_results(
            xent_rs.cross_entropy(x, y, **common, **kw),
            xent_rs.cross_entropy(xw, y, **common, **kw32),
            what,
        )
        _assert_results(
            xent_rs.cross_entropy(x, y, **common, **kw, return_grad=True, grad_output=g),
            xent_rs.cross_entropy(xw, y, **common, **kw32, return_grad=True, grad_output=wide(g)),
            f"{what} with grad",
        )
        kw.pop("label_smoothing", None)
        kw32.pop("label_smoothing", None)
        lp = xent_rs.log_softmax(x, axis)
        _assert_results(
            xent_rs.nll_loss(lp, y, **common, **kw, return_grad=True, grad_output=g),
            xent_rs.nll_loss(
                lp.astype(F32), y, **common, **kw32, return_grad=True, grad_output=wide(g)
            ),
            f"nll_loss {sorted(kw)}",
        )


@pytest.mark.parametrize(("shape", "axis"), LAYOUTS)
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_soft_targets_in_bfloat16(shape: tuple[int, ...], axis: int, reduction: str) -> None:
    x, xw = _values(shape, 5)
    t32 = xent_rs.softmax(_values(shape, 6)[1], axis)
    t = t32.astype(BF16)
    for smoothing in (0.0, 0.2):
        kw = {"axis": axis, "reduction": reduction, "label_smoothing": smoothing}
        _assert_results(
            xent_rs.cross_entropy(x, t, **kw, return_grad=True),
            xent_rs.cross_entropy(xw, t.astype(F32), **kw, return_grad=True),
            f"soft targets, smoothing {smoothing}",
        )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_binary_losses_with_bfloat16_targets_and_weights(reduction: str) -> None:
    shape = (37, 23)
    rng = np.random.default_rng(7)
    x, xw = _values(shape, 8, 6.0)
    p = rng.uniform(0.0, 1.0, shape).astype(BF16)
    t = rng.uniform(0.0, 1.0, shape).astype(BF16)
    w = rng.uniform(0.5, 2.0, (37, 1)).astype(BF16)
    pw = rng.uniform(0.5, 3.0, 23).astype(BF16)
    g = None if reduction != "none" else rng.standard_normal(shape).astype(BF16)
    g32 = None if g is None else g.astype(F32)
    kw = {"reduction": reduction, "return_grad": True}
    _assert_results(
        xent_rs.binary_cross_entropy_with_logits(
            x, t, weight=w, pos_weight=pw, grad_output=g, **kw
        ),
        xent_rs.binary_cross_entropy_with_logits(
            xw,
            t.astype(F32),
            weight=w.astype(F32),
            pos_weight=pw.astype(F32),
            grad_output=g32,
            **kw,
        ),
        "binary_cross_entropy_with_logits",
    )
    _assert_results(
        xent_rs.binary_cross_entropy(p, t, weight=w, grad_output=g, **kw),
        xent_rs.binary_cross_entropy(
            p.astype(F32), t.astype(F32), weight=w.astype(F32), grad_output=g32, **kw
        ),
        "binary_cross_entropy",
    )
    bad = p.copy()
    bad[3, 4] = 1.5
    with pytest.raises(ValueError, match=r"got 1\.5 at position \(3, 4\)"):
        xent_rs.binary_cross_entropy(bad, t)


def test_float32_operands_of_a_bfloat16_call_are_rounded_to_bfloat16() -> None:
    # All float arguments of a call share the input's dtype, as for float32 and float64.
    x, _ = _values((50, 11), 9)
    y = np.arange(50) % 11
    w = np.linspace(0.3, 2.0, 11, dtype=np.float32)
    t = np.random.default_rng(10).uniform(0, 1, (50, 11)).astype(np.float32)
    a = xent_rs.cross_entropy(x, y, weight=w, return_grad=True)
    b = xent_rs.cross_entropy(x, y, weight=w.astype(BF16), return_grad=True)
    assert _bits(a[0]) == _bits(b[0]) and np.array_equal(_bits(a[1]), _bits(b[1]))
    a = xent_rs.binary_cross_entropy_with_logits(x, t, reduction="none")
    b = xent_rs.binary_cross_entropy_with_logits(x, t.astype(BF16), reduction="none")
    assert np.array_equal(_bits(a), _bits(b))


def test_the_core_takes_every_float_argument_in_the_inputs_dtype() -> None:
    x, _ = _values((4, 3), 11)
    y = np.array([0, 1, 2, 0])
    w = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="weight must be a bfloat16 array like the input"):
        core_class("cross_entropy", x, y, w)
    grad = core_class("cross_entropy", x, y, w.astype(BF16), return_grad=True)[1]
    assert grad.dtype == BF16


def test_grad_out_is_written_in_bfloat16() -> None:
    x, xw = _values((40, 300), 12)
    y = np.arange(40) % 300
    out = np.empty_like(x)
    loss, grad = xent_rs.cross_entropy(x, y, return_grad=True, grad_out=out)
    assert grad is out
    _assert_results((loss, grad), xent_rs.cross_entropy(xw, y, return_grad=True), "grad_out")
    inplace = x.copy()
    _, grad = xent_rs.cross_entropy(inplace, y, return_grad=True, grad_out=inplace)
    assert grad is inplace
    _assert_rounded(grad, xent_rs.cross_entropy(xw, y, return_grad=True)[1], "in place")


def test_non_contiguous_bfloat16_inputs() -> None:
    base, _ = _values((60, 2 * 257), 13)
    x = base[::-1, ::2]
    assert not x.flags.c_contiguous
    c = np.ascontiguousarray(x)
    y = np.arange(60) % 257
    for op in ("log_softmax", "softmax", "logsumexp"):
        assert np.array_equal(_bits(getattr(xent_rs, op)(x)), _bits(getattr(xent_rs, op)(c)))
    a = xent_rs.cross_entropy(x, y, reduction="none", return_grad=True)
    b = xent_rs.cross_entropy(c, y, reduction="none", return_grad=True)
    assert np.array_equal(_bits(a[0]), _bits(b[0])) and np.array_equal(_bits(a[1]), _bits(b[1]))
    xt = base.T  # Fortran order
    t = xent_rs.softmax(base.astype(F32)).astype(BF16).T
    a = xent_rs.binary_cross_entropy_with_logits(xt, t, reduction="none", return_grad=True)
    b = xent_rs.binary_cross_entropy_with_logits(
        np.ascontiguousarray(xt), np.ascontiguousarray(t), reduction="none", return_grad=True
    )
    assert np.array_equal(_bits(a[0]), _bits(b[0])) and np.array_equal(_bits(a[1]), _bits(b[1]))


def test_one_and_two_threads_give_the_same_bits(restore_threads: Any) -> None:
    x, _ = _values((2048, 600), 14)
    few, _ = _values((40000, 9), 15)
    y = np.arange(2048) % 600
    y_few = np.arange(40000) % 9
    t = np.random.default_rng(16).uniform(0, 1, few.shape).astype(BF16)

    def run() -> list[np.ndarray]:
        ce = xent_rs.cross_entropy(x, y, return_grad=True)
        ce_few = xent_rs.cross_entropy(few, y_few, reduction="none", return_grad=True)
        bce = xent_rs.binary_cross_entropy_with_logits(few, t, return_grad=True)
        return [
            _bits(v)
            for v in (*ce, *ce_few, *bce, xent_rs.log_softmax(x), xent_rs.logsumexp(few, 0))
        ]

    restore_threads.set_num_threads(1)
    one = run()
    restore_threads.set_num_threads(2)
    two = run()
    for i, (a, b) in enumerate(zip(one, two, strict=True)):
        assert np.array_equal(a, b), i


def test_streaming_accumulators_take_bfloat16() -> None:
    x, xw = _values((90, 17), 17)
    y = np.arange(90) % 17
    acc = xent_rs.CrossEntropyAccumulator()
    for lo in range(0, 90, 40):
        acc.update(x[lo : lo + 40], y[lo : lo + 40])
    # The same float32 kernels on the same values: the float64 sums agree to rounding.
    assert acc.result() == pytest.approx(float(xent_rs.cross_entropy(xw, y)), rel=1e-6)


def test_log_loss_scores_bfloat16_in_float32_with_its_eps() -> None:
    p32 = np.array([[0.25, 0.75], [0.875, 0.125], [0.5, 0.5]], np.float32)
    y = [1, 0, 1]
    assert xent_rs.log_loss(y, p32.astype(BF16)) == pytest.approx(xent_rs.log_loss(y, p32))
    # A certain wrong prediction is clipped to bfloat16's eps: -log(2**-7).
    assert ml_dtypes.finfo(BF16).eps == 2.0**-7
    wrong = np.array([[1.0, 0.0]], BF16)
    assert xent_rs.log_loss([1], wrong, labels=[0, 1]) == pytest.approx(7 * np.log(2.0))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_bfloat16_targets_and_weights_of_other_inputs(dtype: Any) -> None:
    # Converted to the input's working dtype, as any float operand is.
    rng = np.random.default_rng(18)
    x = rng.standard_normal((30, 6)).astype(dtype)
    work = np.float32 if dtype == np.float16 else dtype
    w = rng.uniform(0.5, 2.0, 6).astype(BF16)
    t = xent_rs.softmax(rng.standard_normal((30, 6))).astype(BF16)
    y = np.arange(30) % 6
    assert xent_rs.cross_entropy(x, y, weight=w) == xent_rs.cross_entropy(
        x, y, weight=w.astype(work)
    )
    assert xent_rs.cross_entropy(x, t) == xent_rs.cross_entropy(x, t.astype(work))
    b = rng.uniform(0, 1, (30, 6)).astype(BF16)
    assert xent_rs.binary_cross_entropy_with_logits(
        x, b, pos_weight=w
    ) == xent_rs.binary_cross_entropy_with_logits(x, b.astype(work), pos_weight=w.astype(work))
