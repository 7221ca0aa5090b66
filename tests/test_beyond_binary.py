"""``binary_focal_loss_with_logits`` and ``kl_div`` through ``_core`` (the binding): every case
of ``tests/golden-beyond`` for them (PyTorch autograd in float64), finite-difference
gradients, ``gamma=0, alpha=None`` against BCE-with-logits, extreme logits, thread counts,
the partial twins and the errors with their exact types and messages.

``_core`` takes C-contiguous float32/float64 arrays and returns a Python float for a reduced
loss; the public front end (being redesigned) will wrap these calls.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import pytest
from conftest import (
    GOLDEN_BEYOND_DIR,
    GoldenCase,
    assert_golden_close,
    central_differences,
    load_golden,
)

import xent_rs
from xent_rs import _backend, _core
from xent_rs._spec import BinaryLoss, KlDiv

OPS = ("binary_focal_loss_with_logits", "kl_div")


CASES = [c for c in load_golden(GOLDEN_BEYOND_DIR) if c.op in OPS]


def _params(errors: bool) -> list[Any]:
    return [pytest.param(c, id=c.id) for c in CASES if (c.expect_error is not None) == errors]


def _defaults(name: str, **given: Any) -> dict[str, Any]:
    """``given`` completed with the defaults of the public ``xent_rs.<name>`` (SPEC.md's)."""
    public = inspect.signature(getattr(xent_rs, name))
    bound = public.bind(None, None, **given)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k not in ("input", "target")}


def focal(x: np.ndarray, t: np.ndarray, **given: Any) -> Any:
    """``_core.binary_loss`` of the binary focal loss, with the public defaults (the options
    unchecked by ``_spec``) and a broadcast weight."""
    o = _defaults("binary_focal_loss_with_logits", **given)
    w = _backend.broadcast(_backend.NUMPY, o["weight"], x.shape, x.dtype, "weight")
    loss = "binary_focal_loss_with_logits"
    spec = BinaryLoss(loss, o["reduction"], o["gamma"], o["alpha"], o["return_grad"])
    return _core.binary_loss(spec, x, t, w, (None, 1), o["grad_output"])


def kl(x: np.ndarray, t: np.ndarray, **given: Any) -> Any:
    """``_core.kl_div`` with the public defaults (the options unchecked by ``_spec``)."""
    o = _defaults("kl_div", **given)
    spec = KlDiv(o["reduction"], o["log_target"], o["return_grad"])
    return _core.kl_div(spec, x, t, o["grad_output"])


def _call(case: GoldenCase, return_grad: bool = False) -> Any:
    """The case's call; its ``grad_output`` is only passed with ``return_grad``."""
    inputs = case.copy_inputs()
    x, t = inputs.pop("input"), inputs.pop("target")
    grad_output = inputs.pop("grad_output", None)
    fn = focal if case.op == "binary_focal_loss_with_logits" else kl
    extra = {"return_grad": True, "grad_output": grad_output} if return_grad else {}
    return fn(x, t, **inputs, **case.kwargs, **extra)


def test_every_case_is_here() -> None:
    ops = [c.op for c in CASES]
    assert ops.count("binary_focal_loss_with_logits") == 14
    assert ops.count("kl_div") == 12


@pytest.mark.parametrize("case", _params(errors=False))
def test_golden_case(case: GoldenCase) -> None:
    out = _call(case)
    assert_golden_close(out, case.expected["output"], case.rtol, case.atol, what="output")
    if case.kwargs.get("reduction", "mean") == "none":
        assert isinstance(out, np.ndarray)
        assert out.dtype == np.dtype(case.dtype)
    else:
        assert isinstance(out, float)
    loss, grad = _call(case, return_grad=True)
    assert grad.dtype == np.dtype(case.dtype)
    assert grad.shape == case.inputs["input"].shape
    assert_golden_close(grad, case.expected["grad"], case.rtol, case.atol, grad=True, what="grad")
    # The loss of the gradient pass is the very same.
    assert np.asarray(loss).tobytes() == np.asarray(out).tobytes()


@pytest.mark.parametrize("case", _params(errors=True))
def test_golden_error_case(case: GoldenCase) -> None:
    assert case.expect_error == "ValueError"
    with pytest.raises(ValueError):
        _call(case)


# --------------------------------------------------------------------------------------------
# float64 references and finite differences
# --------------------------------------------------------------------------------------------


def focal_reference(
    x: np.ndarray, t: np.ndarray, gamma: float, alpha: float | None, w: Any = None
) -> np.ndarray:
    """torchvision's ``sigmoid_focal_loss`` per element, in float64 (moderate logits)."""
    x, t = x.astype(np.float64), t.astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    ce = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    q = p * (1 - t) + (1 - p) * t
    loss = ce * q**gamma
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return loss if w is None else loss * w


@pytest.mark.parametrize(
    ("gamma", "alpha"), [(2.0, 0.25), (0.0, None), (1.0, 0.9), (3.0, None), (0.5, 0.5), (2.5, 0.1)]
)
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_matches_reference_and_finite_differences(
    rng: np.random.Generator, gamma: float, alpha: float | None, weighted: bool
) -> None:
    x = 4 * rng.standard_normal((9, 5))
    t = rng.uniform(0, 1, (9, 5))
    t[::2] = np.round(t[::2])
    w = rng.uniform(0.5, 2, (9, 1)) if weighted else None
    loss, grad = focal(x, t, gamma=gamma, alpha=alpha, weight=w, return_grad=True)
    want = focal_reference(x, t, gamma, alpha, w)
    np.testing.assert_allclose(loss, want.mean(), rtol=1e-12)
    none = focal(x, t, gamma=gamma, alpha=alpha, weight=w, reduction="none")
    np.testing.assert_allclose(none, want, rtol=1e-12, atol=1e-300)
    fd = central_differences(lambda v: focal_reference(v, t, gamma, alpha, w).mean(), x)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "batchmean"])
def test_kl_gradient_matches_finite_differences(
    rng: np.random.Generator, log_target: bool, reduction: str
) -> None:
    x = np.log(rng.dirichlet(np.ones(6), 5))
    t = rng.dirichlet(np.ones(6), 5)
    t[0, :3] = 0.0
    if log_target:
        with np.errstate(divide="ignore"):
            t = np.log(t)
    loss, grad = kl(x, t, reduction=reduction, log_target=log_target, return_grad=True)
    fd = central_differences(
        lambda v: kl(v, t, reduction=reduction, log_target=log_target), x, h=1e-6
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)
    total = kl(x, t, reduction="sum", log_target=log_target)
    scale = {"mean": x.size, "sum": 1, "batchmean": x.shape[0]}[reduction]
    assert loss == pytest.approx(total / scale, rel=1e-15)


def test_kl_zero_negative_and_nan_targets_follow_torch() -> None:
    x = np.array([-1.0, -np.inf, -1.0, -1.0, -2.0])
    t = np.array([0.0, 0.0, -0.5, np.nan, 0.25])
    losses, grad = kl(x, t, reduction="none", return_grad=True)
    # 0 where t = 0 whatever the input (torch: NaN for 0 * -inf); NaN for t < 0 and NaN.
    assert losses[0] == 0.0 and losses[1] == 0.0
    assert np.isnan(losses[2]) and np.isnan(losses[3])
    assert losses[4] == pytest.approx(0.25 * math.log(0.25) + 0.5)
    # torch's gradient is -t, finite for t < 0.
    np.testing.assert_array_equal(grad, [-0.0, -0.0, 0.5, np.nan, -0.25])
    # The same with log targets: a -inf target (probability 0) contributes 0.
    with np.errstate(divide="ignore"):
        log_t = np.log(np.where(t > 0, t, 0.0))
    lt, lgrad = kl(x, log_t, reduction="none", log_target=True, return_grad=True)
    assert lt[0] == 0.0 and lt[1] == 0.0 and lgrad[0] == 0.0


def test_kl_batchmean_of_0d_and_empty_inputs() -> None:
    x, t = np.array(-1.0), np.array(0.5)
    # A 0-d input is its own batch of one, as torch's (which skips the division).
    assert kl(x, t, reduction="batchmean") == kl(x, t, reduction="sum")
    assert kl(x, t, reduction="batchmean") == pytest.approx(0.5 * math.log(0.5) + 0.5)
    e = np.zeros((0, 3))
    assert math.isnan(kl(e, e, reduction="batchmean"))
    assert math.isnan(kl(e, e, reduction="mean"))
    assert kl(e, e, reduction="sum") == 0.0
    z = np.zeros((3, 0))
    assert kl(z, z, reduction="batchmean") == 0.0


# --------------------------------------------------------------------------------------------
# focal: BCE at gamma 0, extreme logits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_focal_gamma_zero_without_alpha_is_bce_bit_for_bit(
    rng: np.random.Generator, dtype: Any, reduction: str
) -> None:
    x = (20 * rng.standard_normal((33, 17))).astype(dtype)
    t = rng.uniform(0, 1, (33, 17)).astype(dtype)
    w = rng.uniform(0, 2, 17).astype(dtype)
    got = focal(x, t, gamma=0.0, alpha=None, weight=w, reduction=reduction, return_grad=True)
    spec = BinaryLoss("binary_cross_entropy_with_logits", reduction, return_grad=True)
    want = _core.binary_loss(spec, x, t, (w, 1), (None, 1), None)
    for g, h in zip(got, want, strict=True):
        assert np.asarray(g).tobytes() == np.asarray(h).tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.25, None), (4.0, 0.5)])
def test_focal_is_finite_for_extreme_logits(dtype: Any, gamma: float, alpha: float | None) -> None:
    big = np.finfo(dtype).max
    mag = np.array([0.0, 1e-30, 1e-3, 1, 30, 100, 1e4, 1e30, big], dtype=dtype)
    x = np.concatenate([mag, -mag])
    for tv in (0.0, 1.0, 0.2):
        t = np.full_like(x, tv)
        losses, grad = focal(x, t, gamma=gamma, alpha=alpha, reduction="none", return_grad=True)
        assert np.all(np.isfinite(losses)) and np.all(losses >= 0)
        assert np.all(np.isfinite(grad))
        # Far on the wrong side the loss is the logit times alpha_t.
        wrong = -1e4 if tv == 1.0 else 1e4
        if tv != 0.2:
            i = int(np.flatnonzero(x == wrong)[0])
            a = 1.0 if alpha is None else (alpha if tv == 1.0 else 1 - alpha)
            assert losses[i] == pytest.approx(a * 1e4, rel=1e-6)


# --------------------------------------------------------------------------------------------
# threads, partials
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_and_two_threads_give_the_same_bits(restore_threads: Any, dtype: Any) -> None:
    rng = np.random.default_rng(3)
    n = 1 << 18
    x = (5 * rng.standard_normal(n)).astype(dtype)
    t = (rng.uniform(0, 1, n) > 0.7).astype(dtype)
    lp = np.log(rng.dirichlet(np.ones(64), n // 64).astype(dtype)).reshape(-1)
    q = rng.dirichlet(np.ones(64), n // 64).astype(dtype).reshape(-1)
    runs = []
    for threads in (1, 2):
        restore_threads.set_num_threads(threads)
        runs.append(
            [
                focal(x, t, return_grad=True),
                focal(x, t, gamma=1.5, alpha=None, reduction="sum", return_grad=True),
                kl(lp.reshape(-1, 64), q.reshape(-1, 64), reduction="batchmean", return_grad=True),
            ]
        )
    for (l1, g1), (l2, g2) in zip(*runs, strict=True):
        assert np.float64(l1).tobytes() == np.float64(l2).tobytes()
        assert g1.tobytes() == g2.tobytes()


@pytest.mark.parametrize("return_losses", [False, True])
def test_partials_are_the_one_shot_pass(rng: np.random.Generator, return_losses: bool) -> None:
    x = 3 * rng.standard_normal((40, 6))
    t = rng.uniform(0, 1, (40, 6))
    w = rng.uniform(0.5, 2, 6)
    spec = BinaryLoss("binary_focal_loss_with_logits", "sum", 2.0, 0.25)
    p = _core.binary_loss(spec, x, t, (w, 1), (None, 1), None, partial=return_losses)
    assert p.loss_sum == focal(x, t, weight=w, reduction="sum")
    assert p.denominator == 240.0 and p.count == 240
    assert p.loss_sum / p.denominator == focal(x, t, weight=w)
    if return_losses:
        np.testing.assert_array_equal(p.losses, focal(x, t, weight=w, reduction="none"))
    else:
        assert p.losses is None

    lp, q = np.log(rng.dirichlet(np.ones(6), 40)), rng.dirichlet(np.ones(6), 40)
    for batchmean, reduction, denominator in [(False, "mean", 240.0), (True, "batchmean", 40.0)]:
        spec = KlDiv("batchmean" if batchmean else "sum")
        k = _core.kl_div(spec, lp, q, None, partial=return_losses)
        assert k.loss_sum == kl(lp, q, reduction="sum")
        assert k.denominator == denominator and k.count == 240
        assert k.loss_sum / k.denominator == kl(lp, q, reduction=reduction)
        if return_losses:
            np.testing.assert_array_equal(k.losses, kl(lp, q, reduction="none"))


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gamma", "alpha", "message"),
    [
        (-1.0, 0.25, "gamma must be a finite number >= 0.0, got -1.0"),
        (math.nan, 0.25, "gamma must be a finite number >= 0.0, got NaN"),
        (math.inf, 0.25, "gamma must be a finite number >= 0.0, got inf"),
        (2.0, 1.5, "alpha must lie in [0, 1] or be None, got 1.5"),
        (2.0, -0.25, "alpha must lie in [0, 1] or be None, got -0.25"),
        (2.0, math.nan, "alpha must lie in [0, 1] or be None, got NaN"),
    ],
)
def test_focal_option_errors(gamma: float, alpha: float, message: str) -> None:
    x = np.zeros(4)
    with pytest.raises(ValueError) as info:
        focal(x, x, gamma=gamma, alpha=alpha)
    assert str(info.value) == message
    spec = BinaryLoss("binary_focal_loss_with_logits", "sum", gamma, alpha)
    with pytest.raises(ValueError):
        _core.binary_loss(spec, x, x, (None, 1), (None, 1), None, partial=False)


def test_shape_dtype_and_reduction_errors() -> None:
    x = np.zeros((4, 3))
    with pytest.raises(ValueError) as info:
        kl(x, np.zeros((4, 2)))
    assert str(info.value) == "target shape (4, 2) must match input shape (4, 3)"
    with pytest.raises(ValueError) as info:
        kl(x, x, reduction="avg")
    assert str(info.value) == ('reduction must be "none", "mean", "sum" or "batchmean", got "avg"')
    with pytest.raises(ValueError) as info:
        focal(x, x, reduction="batchmean")
    assert str(info.value) == 'reduction must be "none", "mean" or "sum", got "batchmean"'
    with pytest.raises(ValueError):
        focal(x, np.zeros((3, 4)))
    with pytest.raises(TypeError):
        kl(x, x.astype(np.float32))
    with pytest.raises(TypeError):
        focal(x.astype(np.int64), x)
    with pytest.raises(ValueError):
        kl(x, x, reduction="none", grad_output=1.0, return_grad=True)
    with pytest.raises(ValueError):
        kl(x, x, reduction="sum", grad_output=np.ones((4, 3)), return_grad=True)
