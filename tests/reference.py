"""Float64 NumPy reference implementation of every xent_rs operation.

Written from the formulas of torch.nn.functional (see docs/semantics.md), independently of the
package, so that the test suite can compare xent_rs against it on arbitrary inputs. Everything is
computed in float64 whatever the input dtype; the loss functions return ``(loss, grad)`` where
``grad`` is the vector-Jacobian product with ``grad_output`` (default: ones), exactly what
``return_grad=True`` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from typing_extensions import Unpack

Array = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

#: torch declares the BCE gradient clamp ``EPSILON = 1e-12`` as a C++ ``float``.
BCE_GRAD_EPS: float = float(np.float32(1e-12))
#: torch clamps each BCE log term at -100.
BCE_LOG_CLAMP: float = -100.0

REDUCTIONS = ("none", "mean", "sum")


def _f64(a: ArrayLike) -> Array:
    return np.asarray(a, dtype=np.float64)


def _norm_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array of dimension {ndim}")
    return axis % ndim


def _bad_rows(x: Array, axis: int) -> npt.NDArray[np.bool_]:
    """Rows (along ``axis``, kept as a length-1 axis) that torch turns into nan."""
    has_nan = np.isnan(x).any(axis=axis, keepdims=True)
    has_pinf = (x == np.inf).any(axis=axis, keepdims=True)
    all_ninf = (x == -np.inf).all(axis=axis, keepdims=True)
    return np.asarray(has_nan | has_pinf | all_ninf)


# --------------------------------------------------------------------------------------------
# softmax family
# --------------------------------------------------------------------------------------------


def _along_rows(x: ArrayLike, axis: int, finish: Callable[[Array, int], Array]) -> Array:
    """``finish(x - max, axis)`` along ``axis``, with nan where torch gives nan rows.

    The max is taken as 0 where it is not finite, so rows of -inf stay -inf before ``finish``.
    """
    xf = _f64(x)
    ax = _norm_axis(axis, xf.ndim)
    if xf.size == 0:
        return xf.copy()
    bad = _bad_rows(xf, ax)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.max(xf, axis=ax, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        out = finish(xf - m, ax)
    return np.where(bad, np.nan, out)


def _log_normalize(shifted: Array, ax: int) -> Array:
    return np.asarray(shifted - np.log(np.sum(np.exp(shifted), axis=ax, keepdims=True)))


def _normalize_exp(shifted: Array, ax: int) -> Array:
    e = np.exp(shifted)
    return np.asarray(e / np.sum(e, axis=ax, keepdims=True))


def log_softmax(x: ArrayLike, axis: int = -1) -> Array:
    """``x - logsumexp(x)`` along ``axis``; rows with nan, +inf or only -inf are all nan."""
    return _along_rows(x, axis, _log_normalize)


def softmax(x: ArrayLike, axis: int = -1) -> Array:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``; same nan rows as log_softmax."""
    return _along_rows(x, axis, _normalize_exp)


def logsumexp(x: ArrayLike, axis: int = -1, keepdims: bool = False) -> Array:
    """torch.logsumexp: all -inf -> -inf, any +inf -> +inf, any nan -> nan."""
    xf = _f64(x)
    ax = _norm_axis(axis, xf.ndim)
    if xf.shape[ax] == 0:
        shape = list(xf.shape)
        shape[ax] = 1
        out = np.full(shape, -np.inf)
    else:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            m = np.max(xf, axis=ax, keepdims=True)
            m0 = np.where(np.isinf(m), 0.0, m)  # torch masks infinite maxima to 0
            out = np.log(np.sum(np.exp(xf - m0), axis=ax, keepdims=True)) + m0
    if not keepdims:
        out = np.squeeze(out, axis=ax)
    return np.asarray(out, dtype=np.float64)


def _vjp_operands(grad_output: ArrayLike, output: ArrayLike, axis: int) -> tuple[Array, Array, int]:
    """The upstream gradient and the forward output in float64, and the normalized axis."""
    out = _f64(output)
    return _f64(grad_output), out, _norm_axis(axis, out.ndim)


def log_softmax_backward(grad_output: ArrayLike, output: ArrayLike, axis: int = -1) -> Array:
    """VJP of log_softmax: ``g - exp(out) * sum(g)``."""
    g, out, ax = _vjp_operands(grad_output, output, axis)
    return np.asarray(g - np.exp(out) * np.sum(g, axis=ax, keepdims=True))


def softmax_backward(grad_output: ArrayLike, output: ArrayLike, axis: int = -1) -> Array:
    """VJP of softmax: ``out * (g - sum(g * out))``."""
    g, out, ax = _vjp_operands(grad_output, output, axis)
    return np.asarray(out * (g - np.sum(g * out, axis=ax, keepdims=True)))


# --------------------------------------------------------------------------------------------
# helpers for the losses
# --------------------------------------------------------------------------------------------


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"bad reduction {reduction!r}")


def _upstream(grad_output: ArrayLike | None, reduction: str, loss_shape: tuple[int, ...]) -> Array:
    """The upstream gradient as a float64 array of the loss's shape (scalar for reductions)."""
    if grad_output is None:
        return np.ones(loss_shape if reduction == "none" else ())
    g = _f64(grad_output)
    want = loss_shape if reduction == "none" else ()
    if g.shape != want:
        raise ValueError(f"grad_output shape {g.shape} != {want}")
    return g


def _reduce(
    per_sample: Array, reduction: str, denom: float
) -> tuple[Array | np.float64, float | None]:
    """Returns the loss and the scale d(loss)/d(per_sample) (None for 'none')."""
    if reduction == "none":
        return per_sample, None
    total = float(np.sum(per_sample))
    if reduction == "sum":
        return np.float64(total), 1.0
    if denom == 0.0:
        return np.float64(np.nan), 0.0
    return np.float64(total / denom), 1.0 / denom


def _is_hard(target: np.ndarray[Any, Any]) -> bool:
    return bool(np.issubdtype(target.dtype, np.integer))


# --------------------------------------------------------------------------------------------
# cross entropy / nll
# --------------------------------------------------------------------------------------------


def _hard_terms(
    c: int, target: np.ndarray[Any, Any], weight: Array | None, ignore_index: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.intp], Array, Array]:
    """Valid mask, safe target (0 where ignored), class weights (C,), w[y] (0 where ignored)."""
    t = target.astype(np.int64)
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= c))
    if np.any(bad):
        raise IndexError(f"target {t[bad][0]} is out of bounds")
    t_safe = np.where(valid, t, 0).astype(np.intp)
    w = np.ones(c) if weight is None else weight
    # with no classes every target is ignored (anything else raised above)
    wy = np.where(valid, w[t_safe], 0.0) if c else np.zeros(t.shape)
    return valid, t_safe, w, wy


class MulticlassOptions(TypedDict, total=False):
    """The keywords nll_loss takes, with the defaults of :func:`_multiclass`."""

    axis: int
    weight: ArrayLike | None
    sample_weight: ArrayLike | None
    ignore_index: int
    reduction: str
    grad_output: ArrayLike | None


class CrossEntropyOptions(MulticlassOptions, total=False):
    """The keywords cross_entropy takes: those of nll_loss and label smoothing."""

    label_smoothing: float


def cross_entropy(
    input: ArrayLike, target: ArrayLike, **options: Unpack[CrossEntropyOptions]
) -> tuple[Array | np.float64, Array]:
    """torch.nn.functional.cross_entropy (hard or soft targets) and its gradient."""
    return _multiclass(input, target, logits=True, **options)


def nll_loss(
    input: ArrayLike, target: ArrayLike, **options: Unpack[MulticlassOptions]
) -> tuple[Array | np.float64, Array]:
    """torch.nn.functional.nll_loss (input = log-probabilities) and its gradient."""
    return _multiclass(input, target, logits=False, **options)


def _multiclass(
    input: ArrayLike,
    target: ArrayLike,
    *,
    logits: bool,
    axis: int = -1,
    weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    grad_output: ArrayLike | None = None,
) -> tuple[Array | np.float64, Array]:
    """Cross entropy over logits, or nll_loss over log-probabilities (``logits=False``)."""
    tgt = np.asarray(target)
    if not logits and not _is_hard(tgt):
        raise TypeError("nll_loss takes integer class indices")
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing {label_smoothing} outside [0, 1]")
    x = _f64(input)
    if x.ndim == 0:
        raise ValueError("input must have a class axis")
    ax = _norm_axis(axis, x.ndim)
    xl = np.moveaxis(x, ax, -1)  # (..., C)
    c = xl.shape[-1]
    eps = float(label_smoothing)
    w_arr = None if weight is None else _f64(weight)
    if w_arr is not None and w_arr.shape != (c,):
        raise ValueError(f"weight shape {w_arr.shape} != ({c},)")
    sample_shape = xl.shape[:-1]
    sw = np.ones(sample_shape) if sample_weight is None else _f64(sample_weight)
    if sw.shape != sample_shape:
        raise ValueError(f"sample_weight shape {sw.shape} != {sample_shape}")

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if logits:
            lp = log_softmax(xl, axis=-1)
            p = softmax(xl, axis=-1)
        else:
            lp = xl
            p = xl  # unused: nll_loss has no softmax
        if _is_hard(tgt):
            if tgt.shape != sample_shape:
                raise ValueError(f"target shape {tgt.shape} != {sample_shape}")
            valid, t_safe, w, wy = _hard_terms(c, tgt, w_arr, ignore_index)
            if c == 0:  # no classes: every target is ignored
                loss, _ = _reduce(np.zeros(sample_shape), reduction, 0.0)
                _upstream(grad_output, reduction, sample_shape)  # still checked
                return loss, np.zeros(x.shape)
            lp_y = np.take_along_axis(lp, t_safe[..., None], axis=-1)[..., 0]
            nll = np.where(valid, -wy * lp_y, 0.0)
            if eps > 0.0:
                smooth = np.where(valid, -np.sum(w * lp, axis=-1), 0.0)
                per = (1.0 - eps) * nll + (eps / c) * smooth
            else:
                per = nll
            per = np.where(valid, per * sw, 0.0)
            denom = float(np.sum(wy * sw))
            loss, scale = _reduce(per, reduction, denom)
            g = _upstream(grad_output, reduction, sample_shape)
            row_scale = g * sw if scale is None else g * scale * sw
            row_scale = np.where(valid, row_scale, 0.0)
            onehot = np.zeros_like(xl)
            np.put_along_axis(onehot, t_safe[..., None], 1.0, axis=-1)
            if logits:
                d = (1.0 - eps) * wy[..., None] * (p - onehot)
                if eps > 0.0:
                    d = d + (eps / c) * (np.sum(w) * p - w)
            else:
                d = -wy[..., None] * onehot
            grad = np.where(valid[..., None], d * row_scale[..., None], 0.0)
            if scale == 0.0:
                grad = np.zeros_like(xl)
        else:
            if not np.issubdtype(tgt.dtype, np.floating):
                raise TypeError(f"unsupported target dtype {tgt.dtype}")
            if tgt.shape == sample_shape and tgt.shape != x.shape:
                raise TypeError("a floating target shaped like class indices: cast it to integers")
            t = np.moveaxis(_f64(tgt), ax, -1)
            if t.shape != xl.shape:
                raise ValueError(f"target shape {tgt.shape} != input shape {x.shape}")
            if ignore_index >= 0:
                raise ValueError("ignore_index does not apply to soft targets")
            w = np.ones(c) if w_arr is None else w_arr
            ts = (1.0 - eps) * t + eps / c
            wt = w * ts
            per = -np.sum(wt * lp, axis=-1) * sw
            denom = float(np.sum(sw))
            loss, scale = _reduce(per, reduction, denom)
            g = _upstream(grad_output, reduction, sample_shape)
            row_scale = g * sw if scale is None else g * scale * sw
            d = p * np.sum(wt, axis=-1, keepdims=True) - wt
            grad = d * row_scale[..., None]
            if scale == 0.0:
                grad = np.zeros_like(xl)
    return loss, np.ascontiguousarray(np.moveaxis(grad, -1, ax))


# --------------------------------------------------------------------------------------------
# binary losses
# --------------------------------------------------------------------------------------------


def _binary_reduce(
    per: Array, d: Array, reduction: str, grad_output: ArrayLike | None
) -> tuple[Array | np.float64, Array]:
    loss, scale = _reduce(per, reduction, float(per.size))
    if reduction == "mean" and per.size == 0:
        scale = 0.0
    g = _upstream(grad_output, reduction, per.shape)
    grad = d * g if scale is None else d * (g * scale)
    return loss, np.asarray(grad, dtype=np.float64)


def _broadcast_weight(weight: ArrayLike | None, shape: tuple[int, ...]) -> Array:
    """An elementwise weight of ``shape`` in float64 (ones when absent)."""
    return np.ones(shape) if weight is None else np.broadcast_to(_f64(weight), shape)


def _binary_operands(
    input: ArrayLike, target: ArrayLike, weight: ArrayLike | None, reduction: str
) -> tuple[Array, Array, Array]:
    """Input, target and weight in float64, after the checks both binary losses make."""
    _check_reduction(reduction)
    x = _f64(input)
    y = _f64(target)
    if x.shape != y.shape:
        raise ValueError(f"target shape {y.shape} != input shape {x.shape}")
    return x, y, _broadcast_weight(weight, x.shape)


def binary_cross_entropy(
    input: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    grad_output: ArrayLike | None = None,
) -> tuple[Array | np.float64, Array]:
    """torch.nn.functional.binary_cross_entropy (log terms clamped at -100) and its gradient."""
    p, y, w = _binary_operands(input, target, weight, reduction)
    if np.any(~((p >= 0.0) & (p <= 1.0))):
        raise ValueError("probabilities must lie in [0, 1]")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = np.maximum(np.log(p), BCE_LOG_CLAMP)
        log_1mp = np.maximum(np.log1p(-p), BCE_LOG_CLAMP)
        per = -w * (y * log_p + (1.0 - y) * log_1mp)
        d = w * (p - y) / np.maximum(p * (1.0 - p), BCE_GRAD_EPS)
    return _binary_reduce(np.asarray(per), np.asarray(d), reduction, grad_output)


def sigmoid(x: ArrayLike) -> Array:
    """Numerically stable logistic function in float64."""
    xf = _f64(x)
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(xf))
        return np.asarray(np.where(xf >= 0, 1.0 / (1.0 + e), e / (1.0 + e)))


def binary_cross_entropy_with_logits(
    input: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: str = "mean",
    grad_output: ArrayLike | None = None,
) -> tuple[Array | np.float64, Array]:
    """torch.nn.functional.binary_cross_entropy_with_logits and its gradient."""
    x, y, w = _binary_operands(input, target, weight, reduction)
    pw = _broadcast_weight(pos_weight, x.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        softplus_neg = np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0.0)  # -log sigmoid(x)
        per = w * ((1.0 - y) * x + (1.0 + (pw - 1.0) * y) * softplus_neg)
        d = w * ((pw * y + 1.0 - y) * sigmoid(x) - pw * y)
    return _binary_reduce(np.asarray(per), np.asarray(d), reduction, grad_output)


#: Name -> reference function of the softmax family, for tests that iterate over operations.
SOFTMAX_FAMILY: dict[str, Callable[..., Array]] = {
    "log_softmax": log_softmax,
    "softmax": softmax,
    "logsumexp": logsumexp,
    "log_softmax_backward": log_softmax_backward,
    "softmax_backward": softmax_backward,
}

#: Name -> reference function, for tests that iterate over operations.
LOSSES: dict[str, Callable[..., tuple[Array | np.float64, Array]]] = {
    "cross_entropy": cross_entropy,
    "nll_loss": nll_loss,
    "binary_cross_entropy": binary_cross_entropy,
    "binary_cross_entropy_with_logits": binary_cross_entropy_with_logits,
}
