"""Property-based tests (hypothesis): xent_rs against the float64 reference, finite-difference
gradient checks, algebraic identities between the operations, and the gradient buffers."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

import hypothesis.strategies as st
import numpy as np
import numpy.typing as npt
import pytest
import reference as ref
from conftest import assert_golden_close, assert_same_bits
from hypothesis import assume, given
from hypothesis.extra import numpy as hnp

xent_rs = pytest.importorskip("xent_rs")

F64 = np.float64
REDUCTIONS = ("none", "mean", "sum")
# float64 results against the float64 reference
RTOL, ATOL = 1e-10, 1e-12
# float32 results against the float64 reference. Per-element terms are computed in float32, so
# a loss that is a small difference of large terms (lse - x_y, or x(1-y) + softplus(-x) for very
# negative logits) carries an absolute error of a few float32 ulps of its largest term: the
# absolute tolerance is scaled by the magnitude of the inputs and weights (see _scale32).
RTOL32, ATOL32 = 1e-5, 1e-6

Array = npt.NDArray[Any]
Kwargs = dict[str, Any]


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------


def finite(lo: float, hi: float, width: Literal[16, 32, 64] = 64) -> st.SearchStrategy[float]:
    """Finite floats in [lo, hi]; for width 32 the bounds are rounded inwards to float32."""
    if width == 32:
        lo32, hi32 = np.float32(lo), np.float32(hi)
        if lo32 < lo:
            lo32 = np.nextafter(lo32, np.float32(np.inf))
        if hi32 > hi:
            hi32 = np.nextafter(hi32, np.float32(-np.inf))
        lo, hi = float(lo32), float(hi32)
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=width)


def shapes(max_dims: int = 3, max_side: int = 5) -> st.SearchStrategy[tuple[int, ...]]:
    return hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=1, max_side=max_side)


def _without(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    ax = axis % len(shape)
    return shape[:ax] + shape[ax + 1 :]


@st.composite
def logits_axis(
    draw: st.DrawFn,
    *,
    lo: float = -20.0,
    hi: float = 20.0,
    dtype: type = np.float64,
    max_dims: int = 3,
    max_side: int = 5,
    specials: bool = False,
) -> tuple[Array, int]:
    shape = draw(shapes(max_dims, max_side))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    width: Literal[32, 64] = 32 if dtype is np.float32 else 64
    elements: st.SearchStrategy[float] = finite(lo, hi, width)
    if specials:
        # mostly ordinary values, some -inf (masking), a few +inf / nan / huge values
        elements = st.one_of(
            elements,
            elements,
            elements,
            st.just(-np.inf),
            st.sampled_from([np.inf, np.nan, -1e300, 1e300]),
        )
    x = draw(hnp.arrays(dtype, shape, elements=elements))
    return x, axis


@st.composite
def hard_case(
    draw: st.DrawFn, *, smoothing: bool = True, weights: bool = True, **logits: Any
) -> tuple[Array, Array, Kwargs]:
    """Logits, integer targets (some ignored) and keyword arguments for cross_entropy.

    ``logits`` are :func:`logits_axis`'s keywords; the values lie in [-5, 5] unless ``lo`` and
    ``hi`` say otherwise.
    """
    x, axis = draw(logits_axis(**{"lo": -5.0, "hi": 5.0, **logits}))
    c = x.shape[axis]
    tshape = _without(x.shape, axis)
    ignore_index = draw(st.sampled_from([-100, -1, 0]))
    t = draw(hnp.arrays(np.int64, tshape, elements=st.integers(0, c - 1)))
    drop = draw(hnp.arrays(np.bool_, tshape, elements=st.booleans()))
    t = np.asarray(np.where(drop, ignore_index, t), dtype=np.int64)
    kw: Kwargs = {"axis": axis, "ignore_index": ignore_index}
    kw["reduction"] = draw(st.sampled_from(REDUCTIONS))
    wdt = np.float32 if x.dtype == np.float32 else np.float64
    if weights and draw(st.booleans()):
        kw["weight"] = draw(hnp.arrays(wdt, (c,), elements=finite(0.1, 3.0, 32)))
    if weights and draw(st.booleans()):
        kw["sample_weight"] = draw(hnp.arrays(wdt, tshape, elements=finite(0.1, 2.0, 32)))
    if smoothing and draw(st.booleans()):
        kw["label_smoothing"] = draw(finite(0.0, 1.0))
    return x, t, kw


@st.composite
def soft_case(
    draw: st.DrawFn, *, dtype: type = np.float64, max_side: int = 5
) -> tuple[Array, Array, Kwargs]:
    """Logits, class-probability targets and keyword arguments for cross_entropy."""
    x, axis = draw(logits_axis(lo=-5.0, hi=5.0, dtype=dtype, max_side=max_side))
    c = x.shape[axis]
    tshape = _without(x.shape, axis)
    raw = draw(hnp.arrays(np.float64, x.shape, elements=finite(0.0, 1.0)))
    raw = raw + 1e-3
    t = (raw / raw.sum(axis=axis, keepdims=True)).astype(dtype)
    kw: Kwargs = {"axis": axis, "reduction": draw(st.sampled_from(REDUCTIONS))}
    if draw(st.booleans()):
        kw["weight"] = draw(hnp.arrays(dtype, (c,), elements=finite(0.1, 3.0, 32)))
    if draw(st.booleans()):
        kw["sample_weight"] = draw(hnp.arrays(dtype, tshape, elements=finite(0.1, 2.0, 32)))
    if draw(st.booleans()):
        kw["label_smoothing"] = draw(finite(0.0, 1.0))
    return x, t, kw


@st.composite
def broadcast_to_shape(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts to ``shape`` without enlarging it: trailing dims, each 1 or kept."""
    ndim = draw(st.integers(0, len(shape)))
    tail = shape[len(shape) - ndim :]
    return tuple(draw(st.sampled_from([1, s])) for s in tail)


@st.composite
def binary_case(
    draw: st.DrawFn, *, probs: bool, dtype: type = np.float64, max_side: int = 5
) -> tuple[Array, Array, Kwargs]:
    """Inputs (probabilities away from 0/1, or logits), targets in [0, 1] and keywords."""
    shape = draw(shapes(3, max_side))
    width: Literal[32, 64] = 32 if dtype is np.float32 else 64
    elements = finite(0.05, 0.95, width) if probs else finite(-10.0, 10.0, width)
    x = draw(hnp.arrays(dtype, shape, elements=elements))
    y = draw(hnp.arrays(dtype, shape, elements=finite(0.0, 1.0, width)))
    kw: Kwargs = {"reduction": draw(st.sampled_from(REDUCTIONS))}
    if draw(st.booleans()):
        wshape = draw(broadcast_to_shape(shape))
        kw["weight"] = draw(hnp.arrays(dtype, wshape, elements=finite(0.1, 3.0, 32)))
    if not probs and draw(st.booleans()):
        pshape = draw(broadcast_to_shape(shape))
        kw["pos_weight"] = draw(hnp.arrays(dtype, pshape, elements=finite(0.1, 5.0, 32)))
    return x, y, kw


def loss_shape(x: Array, target: Array, op: str, kw: Kwargs) -> tuple[int, ...]:
    """Shape of the 'none' loss."""
    if op.startswith("binary"):
        return x.shape
    return _without(x.shape, kw.get("axis", -1))


@st.composite
def upstream(draw: st.DrawFn, shape: tuple[int, ...], reduction: str) -> Any:
    """A random grad_output for a loss of ``shape`` under ``reduction``."""
    if reduction == "none":
        return draw(hnp.arrays(np.float64, shape, elements=finite(-2.0, 2.0)))
    return draw(finite(-2.0, 2.0))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def numeric_grad(f: Callable[[Array], float], x: Array, h: float = 1e-6) -> Array:
    """Central finite differences of a scalar function of ``x``."""
    g = np.zeros(x.shape, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        xp = x.copy()
        xm = x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2.0 * h)
    return g


def assert_fd_close(analytic: Array, numeric: Array) -> None:
    scale = max(1.0, float(np.max(np.abs(analytic), initial=0.0)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=2e-6 * scale)


def scalarize(op: str, kw: Kwargs, g: Any) -> Callable[..., float]:
    """f(x, target) = sum(g * loss) for 'none', loss otherwise (g = grad_output)."""
    fn = getattr(xent_rs, op)

    def f(x: Array, target: Array) -> float:
        loss = fn(x, target, **kw)
        if kw.get("reduction", "mean") == "none":
            return float(np.sum(np.asarray(g) * loss))
        return float(g) * float(loss)

    return f


def has_counted_sample(t: Array, kw: Kwargs) -> bool:
    return bool(np.any(np.asarray(t) != kw.get("ignore_index", -100)))


def check_loss_vs_reference(
    op: str, x: Array, t: Array, kw: Kwargs, g: Any, rtol: float, atol: float, terms: int = 1
) -> None:
    """Loss and gradient against the reference; ``terms``: how many per-element terms of
    absolute error up to ``atol`` a reduced loss may add up."""
    fn = getattr(xent_rs, op)
    ref_fn = ref.LOSSES[op]
    loss = fn(x, t, **kw)
    loss2, grad = fn(x, t, **kw, return_grad=True, grad_output=g)
    want_loss, want_grad = ref_fn(x, t, **kw, grad_output=g)
    assert_same_bits(loss2, loss, what="loss with/without return_grad")
    assert np.asarray(loss).dtype == x.dtype
    assert grad.dtype == x.dtype
    assert grad.shape == x.shape
    if kw.get("reduction", "mean") != "none":
        assert isinstance(loss, np.generic)
    assert_golden_close(loss, want_loss, rtol, atol * terms, what="loss")
    assert_golden_close(grad, want_grad, rtol, atol, grad=True, what="grad")


# --------------------------------------------------------------------------------------------
# losses against the reference (float64 and float32)
# --------------------------------------------------------------------------------------------


@given(case=hard_case(), data=st.data())
def test_cross_entropy_hard_matches_reference(case: tuple[Array, Array, Kwargs], data: Any) -> None:
    x, t, kw = case
    g = data.draw(upstream(t.shape, kw["reduction"]))
    check_loss_vs_reference("cross_entropy", x, t, kw, g, RTOL, ATOL)


@given(case=soft_case(), data=st.data())
def test_cross_entropy_soft_matches_reference(case: tuple[Array, Array, Kwargs], data: Any) -> None:
    x, t, kw = case
    g = data.draw(upstream(_without(x.shape, kw["axis"]), kw["reduction"]))
    check_loss_vs_reference("cross_entropy", x, t, kw, g, RTOL, ATOL)


@given(case=hard_case(lo=-30.0, hi=0.0, smoothing=False), data=st.data())
def test_nll_loss_matches_reference(case: tuple[Array, Array, Kwargs], data: Any) -> None:
    x, t, kw = case
    g = data.draw(upstream(t.shape, kw["reduction"]))
    check_loss_vs_reference("nll_loss", x, t, kw, g, RTOL, ATOL)


@given(case=binary_case(probs=True), data=st.data())
def test_bce_matches_reference(case: tuple[Array, Array, Kwargs], data: Any) -> None:
    x, y, kw = case
    g = data.draw(upstream(x.shape, kw["reduction"]))
    check_loss_vs_reference("binary_cross_entropy", x, y, kw, g, RTOL, ATOL)


@given(case=binary_case(probs=False), data=st.data())
def test_bce_with_logits_matches_reference(case: tuple[Array, Array, Kwargs], data: Any) -> None:
    x, y, kw = case
    g = data.draw(upstream(x.shape, kw["reduction"]))
    check_loss_vs_reference("binary_cross_entropy_with_logits", x, y, kw, g, RTOL, ATOL)


@given(
    x=hnp.arrays(F64, st.tuples(st.integers(1, 6), st.integers(2, 6)), elements=finite(-50, 50)),
    data=st.data(),
)
def test_cross_entropy_masked_logits_matches_reference(x: Array, data: Any) -> None:
    # -inf on non-target classes (vocabulary masking); the target class stays finite
    n, c = x.shape
    t = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    mask = data.draw(hnp.arrays(np.bool_, x.shape, elements=st.booleans()))
    mask[np.arange(n), t] = False
    x = np.where(mask, -np.inf, x)
    ls = data.draw(st.sampled_from([0.0, 0.1]))
    red = data.draw(st.sampled_from(REDUCTIONS))
    g = data.draw(upstream((n,), red))
    kw: Kwargs = {"reduction": red, "label_smoothing": ls}
    check_loss_vs_reference("cross_entropy", x, t, kw, g, RTOL, ATOL)


LOSS_CASES_F32: dict[str, st.SearchStrategy[tuple[Array, Array, Kwargs]]] = {
    "cross_entropy": hard_case(dtype=np.float32),
    "cross_entropy_soft": soft_case(dtype=np.float32),
    "nll_loss": hard_case(lo=-30.0, hi=0.0, dtype=np.float32, smoothing=False),
    "binary_cross_entropy": binary_case(probs=True, dtype=np.float32),
    "binary_cross_entropy_with_logits": binary_case(probs=False, dtype=np.float32),
}


@pytest.mark.parametrize("name", sorted(LOSS_CASES_F32))
@given(data=st.data())
def test_float32_losses_close_to_float64_reference(name: str, data: Any) -> None:
    x, t, kw = data.draw(LOSS_CASES_F32[name])
    op = name.removesuffix("_soft")
    assert x.dtype == np.float32
    g = data.draw(upstream(loss_shape(x, t, op, kw), kw["reduction"]))
    # A float32 term such as torch's `(1 - t) x - log_sigmoid(x)` cancels to an absolute error
    # of about ulp(|x|) (e.g. x = -7: 2.4e-7 of 9.1e-4, the same bits as torch); a sum adds
    # one such error per element.
    terms = x.size if kw["reduction"] == "sum" else 1
    check_loss_vs_reference(op, x, t, kw, g, RTOL32, ATOL32 * _scale32(x, kw), terms)


def _scale32(x: Array, kw: Kwargs) -> float:
    """Magnitude of the largest per-element term of a loss: max|x| times the weights."""
    scale = max(1.0, float(np.max(np.abs(x), initial=0.0)))
    for name in ("weight", "sample_weight", "pos_weight"):
        if name in kw:
            scale *= max(1.0, float(np.max(np.abs(kw[name]), initial=0.0)))
    return scale


# --------------------------------------------------------------------------------------------
# finite-difference gradient checks
# --------------------------------------------------------------------------------------------


def check_fd(op: str, x: Array, t: Array, kw: Kwargs, g: Any) -> None:
    f = scalarize(op, kw, g)
    _, grad = getattr(xent_rs, op)(x, t, **kw, return_grad=True, grad_output=g)
    assert_fd_close(grad, numeric_grad(lambda z: f(z, t), x))


@given(case=hard_case(max_side=4), data=st.data())
def test_cross_entropy_hard_gradient_fd(case: tuple[Array, Array, Kwargs], data: Any) -> None:
    x, t, kw = case
    assume(kw["reduction"] != "mean" or has_counted_sample(t, kw))
    check_fd("cross_entropy", x, t, kw, data.draw(upstream(t.shape, kw["reduction"])))


@given(case=soft_case(max_side=4), data=st.data())
def test_cross_entropy_soft_gradient_fd(case: tuple[Array, Array, Kwargs], data: Any) -> None:
    x, t, kw = case
    g = data.draw(upstream(_without(x.shape, kw["axis"]), kw["reduction"]))
    check_fd("cross_entropy", x, t, kw, g)


@given(case=hard_case(max_side=4, smoothing=False), data=st.data())
def test_nll_loss_gradient_fd(case: tuple[Array, Array, Kwargs], data: Any) -> None:
    x, t, kw = case
    assume(kw["reduction"] != "mean" or has_counted_sample(t, kw))
    check_fd("nll_loss", x, t, kw, data.draw(upstream(t.shape, kw["reduction"])))


@given(case=binary_case(probs=True, max_side=4), data=st.data())
def test_bce_gradient_fd(case: tuple[Array, Array, Kwargs], data: Any) -> None:
    x, y, kw = case
    check_fd("binary_cross_entropy", x, y, kw, data.draw(upstream(x.shape, kw["reduction"])))


@given(case=binary_case(probs=False, max_side=4), data=st.data())
def test_bce_with_logits_gradient_fd(case: tuple[Array, Array, Kwargs], data: Any) -> None:
    x, y, kw = case
    g = data.draw(upstream(x.shape, kw["reduction"]))
    check_fd("binary_cross_entropy_with_logits", x, y, kw, g)


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
@given(xa=logits_axis(lo=-5.0, hi=5.0, max_side=4), data=st.data())
def test_vjp_gradient_fd(op: str, xa: tuple[Array, int], data: Any) -> None:
    x, axis = xa
    g = data.draw(hnp.arrays(F64, x.shape, elements=finite(-2.0, 2.0)))
    fwd = getattr(xent_rs, op)
    bwd = getattr(xent_rs, f"{op}_backward")
    vjp = bwd(g, fwd(x, axis=axis), axis=axis)
    assert vjp.shape == x.shape
    assert vjp.dtype == x.dtype
    numeric = numeric_grad(lambda z: float(np.sum(g * fwd(z, axis=axis))), x)
    assert_fd_close(vjp, numeric)


# --------------------------------------------------------------------------------------------
# softmax family: reference and identities
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
@given(xa=logits_axis(specials=True))
def test_softmax_family_matches_reference(op: str, xa: tuple[Array, int]) -> None:
    x, axis = xa
    got = getattr(xent_rs, op)(x, axis=axis)
    assert isinstance(got, np.ndarray)
    assert got.dtype == x.dtype
    assert got.shape == x.shape
    assert_golden_close(got, getattr(ref, op)(x, axis=axis), RTOL, ATOL, what=op)


@given(xa=logits_axis(specials=True), keepdims=st.booleans())
def test_logsumexp_matches_reference(xa: tuple[Array, int], keepdims: bool) -> None:
    x, axis = xa
    got = xent_rs.logsumexp(x, axis=axis, keepdims=keepdims)
    want = ref.logsumexp(x, axis=axis, keepdims=keepdims)
    assert np.asarray(got).dtype == x.dtype
    assert_golden_close(got, want, RTOL, ATOL, what="logsumexp")


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
@given(xa=logits_axis(), data=st.data())
def test_vjp_matches_reference(op: str, xa: tuple[Array, int], data: Any) -> None:
    x, axis = xa
    g = data.draw(hnp.arrays(F64, x.shape, elements=finite(-3.0, 3.0)))
    out = getattr(xent_rs, op)(x, axis=axis)
    got = getattr(xent_rs, f"{op}_backward")(g, out, axis=axis)
    want = getattr(ref, f"{op}_backward")(g, out, axis=axis)
    assert_golden_close(got, want, RTOL, ATOL, grad=True, what="vjp")


@pytest.mark.parametrize("op", ["log_softmax", "softmax", "logsumexp"])
@given(xa=logits_axis(lo=-10.0, hi=10.0, dtype=np.float32))
def test_float32_softmax_family_close_to_float64_reference(op: str, xa: tuple[Array, int]) -> None:
    x, axis = xa
    got = getattr(xent_rs, op)(x, axis=axis)
    assert np.asarray(got).dtype == np.float32
    want = getattr(ref, op)(x, axis=axis)
    assert_golden_close(got, want, RTOL32, ATOL32, what=op)


@given(xa=logits_axis(), data=st.data())
def test_log_softmax_shift_invariant(xa: tuple[Array, int], data: Any) -> None:
    x, axis = xa
    cshape = list(x.shape)
    cshape[axis] = 1
    c = data.draw(hnp.arrays(F64, tuple(cshape), elements=finite(-100.0, 100.0)))
    a = xent_rs.log_softmax(x, axis=axis)
    b = xent_rs.log_softmax(x + c, axis=axis)
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-11)


@given(xa=logits_axis(lo=-100.0, hi=100.0))
def test_softmax_rows_sum_to_one(xa: tuple[Array, int]) -> None:
    x, axis = xa
    p = xent_rs.softmax(x, axis=axis)
    assert np.all(p >= 0.0)
    assert np.all(p <= 1.0)
    np.testing.assert_allclose(
        np.sum(p, axis=axis), 1.0, rtol=0, atol=1e-14 * x.shape[axis] + 1e-15
    )


@given(xa=logits_axis())
def test_exp_log_softmax_is_softmax(xa: tuple[Array, int]) -> None:
    x, axis = xa
    np.testing.assert_allclose(
        np.exp(xent_rs.log_softmax(x, axis=axis)), xent_rs.softmax(x, axis=axis), rtol=1e-12
    )


@given(xa=logits_axis())
def test_logsumexp_consistent_with_log_softmax(xa: tuple[Array, int]) -> None:
    x, axis = xa
    lse = xent_rs.logsumexp(x, axis=axis, keepdims=True)
    assert np.shape(lse) == tuple(1 if i == axis % x.ndim else s for i, s in enumerate(x.shape))
    np.testing.assert_allclose(x - lse, xent_rs.log_softmax(x, axis=axis), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# identities between the losses
# --------------------------------------------------------------------------------------------


@given(case=hard_case(smoothing=False), data=st.data())
def test_cross_entropy_is_nll_of_log_softmax(case: tuple[Array, Array, Kwargs], data: Any) -> None:
    x, t, kw = case
    axis = kw["axis"]
    g = data.draw(upstream(t.shape, kw["reduction"]))
    lp = xent_rs.log_softmax(x, axis=axis)
    ce, ce_grad = xent_rs.cross_entropy(x, t, **kw, return_grad=True, grad_output=g)
    nll, nll_grad = xent_rs.nll_loss(lp, t, **kw, return_grad=True, grad_output=g)
    np.testing.assert_allclose(ce, nll, rtol=1e-12, atol=1e-12)
    # chain rule through log_softmax
    chained = xent_rs.log_softmax_backward(nll_grad, lp, axis=axis)
    np.testing.assert_allclose(ce_grad, chained, rtol=1e-10, atol=1e-12)


def _one_hot(t: Array, c: int, axis: int) -> Array:
    oh = (t[..., None] == np.arange(c)).astype(np.float64)
    return np.moveaxis(oh, -1, axis)


@given(case=hard_case(), data=st.data())
def test_one_hot_soft_targets_equal_hard_targets(
    case: tuple[Array, Array, Kwargs], data: Any
) -> None:
    x, t, kw = case
    axis = kw["axis"]
    c = x.shape[axis]
    # hard and soft targets share every rule except ignore_index and, with class weights, the
    # mean's denominator (sum of w[y] for hard targets, number of samples for soft ones)
    kw = {k: v for k, v in kw.items() if k != "ignore_index"}
    t = np.where(t < 0, 0, t)
    if "weight" in kw and kw["reduction"] == "mean":
        kw["reduction"] = data.draw(st.sampled_from(["none", "sum"]))
    soft = _one_hot(t, c, axis)
    g = data.draw(upstream(t.shape, kw["reduction"]))
    hard_loss, hard_grad = xent_rs.cross_entropy(x, t, **kw, return_grad=True, grad_output=g)
    soft_loss, soft_grad = xent_rs.cross_entropy(x, soft, **kw, return_grad=True, grad_output=g)
    np.testing.assert_allclose(soft_loss, hard_loss, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(soft_grad, hard_grad, rtol=1e-10, atol=1e-12)


@given(case=binary_case(probs=False), data=st.data())
def test_bce_with_logits_is_bce_of_sigmoid(case: tuple[Array, Array, Kwargs], data: Any) -> None:
    x, y, kw = case
    kw.pop("pos_weight", None)
    g = data.draw(upstream(x.shape, kw["reduction"]))
    p = ref.sigmoid(x)
    l1, g1 = xent_rs.binary_cross_entropy_with_logits(x, y, **kw, return_grad=True, grad_output=g)
    l2, g2 = xent_rs.binary_cross_entropy(p, y, **kw, return_grad=True, grad_output=g)
    np.testing.assert_allclose(l1, l2, rtol=1e-9, atol=1e-12)
    # d/dx = d/dp * p(1-p)
    np.testing.assert_allclose(g1, g2 * p * (1.0 - p), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(seed=st.integers(0, 2**32 - 1), pw=st.sampled_from([None, 0.0, 1e-3, 0.5, 1.0, 3.0]))
def test_bce_with_logits_is_never_negative(dtype: type, seed: int, pw: float | None) -> None:
    """Far below zero the loss's two terms nearly cancel (exactly, with ``pos_weight = 0``): in
    torch's order of operations they cancel to zero or more, never below."""
    rng = np.random.default_rng(seed)
    top = 30 if dtype is np.float32 else 300
    sign = rng.choice([-1.0, 1.0], (64, 16), p=[0.9, 0.1])
    x = (sign * 10.0 ** rng.uniform(0, top, (64, 16))).astype(dtype)
    y = rng.random((64, 16)).astype(dtype)
    kw: Kwargs = {} if pw is None else {"pos_weight": np.full(16, pw, dtype=dtype)}
    loss = xent_rs.binary_cross_entropy_with_logits(x, y, reduction="none", **kw)
    assert (loss >= 0).all(), (x[loss < 0], y[loss < 0], loss[loss < 0])


@pytest.mark.parametrize(
    ("dtype", "x", "y"), [(np.float32, -1.6690822e8, 0.06920225), (np.float64, -1e4, 0.3)]
)
def test_bce_with_logits_zero_pos_weight_cancels(dtype: type, x: float, y: float) -> None:
    # With pos_weight 0 the loss is (1-y) softplus(x), zero to the dtype's precision here.
    args = [np.array([v], dtype=dtype) for v in (x, y, 0.0)]
    loss = xent_rs.binary_cross_entropy_with_logits(*args[:2], pos_weight=args[2], reduction="none")
    assert loss[0] == 0.0


# --------------------------------------------------------------------------------------------
# grad_output (chain rule)
# --------------------------------------------------------------------------------------------

ANY_LOSS_CASE: dict[str, st.SearchStrategy[tuple[Array, Array, Kwargs]]] = {
    "cross_entropy": hard_case(),
    "cross_entropy_soft": soft_case(),
    "nll_loss": hard_case(smoothing=False),
    "binary_cross_entropy": binary_case(probs=True),
    "binary_cross_entropy_with_logits": binary_case(probs=False),
}


@pytest.mark.parametrize("name", sorted(ANY_LOSS_CASE))
@given(data=st.data())
def test_grad_output_scales_gradient(name: str, data: Any) -> None:
    x, t, kw = data.draw(ANY_LOSS_CASE[name])
    op = name.removesuffix("_soft")
    fn = getattr(xent_rs, op)
    shape = loss_shape(x, t, op, kw)
    g = data.draw(upstream(shape, kw["reduction"]))
    _, base = fn(x, t, **kw, return_grad=True)
    loss, scaled = fn(x, t, **kw, return_grad=True, grad_output=g)
    assert_same_bits(loss, fn(x, t, **kw), what="loss does not depend on grad_output")
    if kw["reduction"] == "none":
        gb = np.asarray(g)
        if not op.startswith("binary"):
            gb = np.expand_dims(gb, kw["axis"] % x.ndim)
        want = gb * base
    else:
        want = g * base
    assert_golden_close(scaled, want, 1e-12, 1e-15, grad=True, what="grad_output * grad")


# --------------------------------------------------------------------------------------------
# output buffers: out= and grad_out=
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
@given(xa=logits_axis())
def test_out_buffer_is_returned(op: str, xa: tuple[Array, int]) -> None:
    x, axis = xa
    fn = getattr(xent_rs, op)
    expected = fn(x, axis=axis)
    out = np.full_like(x, 7.0)
    res = fn(x, axis=axis, out=out)
    assert res is out
    assert_same_bits(out, expected, what="out=")


def _grad_out_ops() -> list[str]:
    ops = []
    for op in (
        "cross_entropy",
        "nll_loss",
        "binary_cross_entropy",
        "binary_cross_entropy_with_logits",
    ):
        fn = getattr(xent_rs, op, None)
        try:
            params = inspect.signature(fn).parameters if fn is not None else {}
        except (TypeError, ValueError):
            params = {}
        if op == "cross_entropy" or "grad_out" in params:
            ops.append(op)
    return ops


#: The loss cases whose operation takes a ``grad_out`` buffer.
GRAD_OUT_CASES = [n for n in sorted(ANY_LOSS_CASE) if n.removesuffix("_soft") in _grad_out_ops()]


def _grad_out_case(name: str, data: Any) -> tuple[Any, Array, Array, Kwargs, Any, Array]:
    """A drawn case of ``name``: the public function, its arguments and its plain result."""
    x, t, kw = data.draw(ANY_LOSS_CASE[name])
    fn = getattr(xent_rs, name.removesuffix("_soft"))
    want_loss, want_grad = fn(x, t, **kw, return_grad=True)
    return fn, x, t, kw, want_loss, want_grad


@pytest.mark.parametrize("name", GRAD_OUT_CASES)
@given(data=st.data())
def test_grad_out_buffer(name: str, data: Any) -> None:
    fn, x, t, kw, want_loss, want_grad = _grad_out_case(name, data)
    buf = np.full_like(x, np.nan)
    loss, grad = fn(x, t, **kw, return_grad=True, grad_out=buf)
    assert grad is buf
    assert_same_bits(grad, want_grad, what="grad_out")
    assert_same_bits(loss, want_loss, what="loss with grad_out")


@pytest.mark.parametrize("name", GRAD_OUT_CASES)
@given(data=st.data())
def test_grad_out_in_place(name: str, data: Any) -> None:
    fn, x, t, kw, want_loss, want_grad = _grad_out_case(name, data)
    x_inplace = x.copy()
    loss, grad = fn(x_inplace, t, **kw, return_grad=True, grad_out=x_inplace)
    assert grad is x_inplace
    assert_same_bits(x_inplace, want_grad, what="in-place gradient")
    assert_same_bits(loss, want_loss, what="loss of the in-place call")
