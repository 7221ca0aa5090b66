"""The GPU core: the native core's functions for CuPy arrays, with the CPU path's semantics.

``xent_rs._backend`` sends a call here when its arrays are CuPy arrays (CuPy is imported only
then), converted as for the CPU core; every function here takes the arguments of its
namesake in ``xent_rs._core`` and returns what it returns (a reduced loss as a 0-d device
array instead of a Python float, so that nothing waits for the device).

The row-wise operations (the softmax family, cross entropy, NLL) are one fused CUDA kernel
each, compiled once (NVRTC, cached by CuPy) from ``cuda/rows.cu``: a row is handled by one
thread, a group of lanes of a warp or a whole block depending on its length and layout; its
maximum and sum of exponentials come from one online pass accumulated in float64, and the loss
and the gradient are written by the same kernel (the gradient possibly over the logits). The
binary losses are CuPy elementwise and reduction kernels calling the device functions of
``cuda/binary.cuh``; ``xent_rs._cuda`` names every kernel and its source. Everything that can
fail is checked before any output is written; the checks of class indices and probabilities
read one index back from the device.
"""

from __future__ import annotations

import importlib
import math
import operator
from functools import cache
from typing import Any

import numpy as np

from xent_rs import _cuda
from xent_rs._spec import BinaryLoss, ClassLoss, KlDiv

#: A CuPy array (CuPy is imported at first use, so it types as ``Any``).
Array = Any

_BLOCK = 256
#: Threads per block for a few rows of at least ``_BLOCK_ROW`` values (when registers allow).
_BIG_BLOCK = 1024
_MAX_GRID = 1 << 20
#: Rows at least this long (contiguous) are handled by a whole block rather than a warp.
_BLOCK_ROW = 1024
_NULL = np.uint64(0)
_NO_INDEX = (1 << 64) - 1

_CTYPES = {np.dtype(k): v for k, v in _cuda.ROW_TYPES.items()}


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------


def _cp() -> Any:
    return importlib.import_module("cupy")


@cache
def _module() -> Any:
    """The row kernels: ``cuda/rows.cu``, compiled at first use (NVRTC, cached by CuPy)."""
    return _cp().RawModule(
        code=_cuda.source(_cuda.ROWS), name_expressions=_cuda.row_name_expressions()
    )


@cache
def _raw(name: str, dtype: np.dtype[Any]) -> Any:
    return _module().get_function(_cuda.row_name(name, _CTYPES[dtype]))


def _kernel(kind: str, spec: _cuda.Elementwise | _cuda.Reduction) -> Any:
    """A CuPy ``ElementwiseKernel`` or ``ReductionKernel`` from ``spec`` (whose fields are
    its keyword arguments), with ``cuda/binary.cuh`` as preamble."""
    arguments = spec._asdict()
    del arguments["bindings"]
    return getattr(_cp(), kind)(**arguments, preamble=_cuda.source(_cuda.BINARY))


@cache
def _elementwise(spec: _cuda.Elementwise) -> Any:
    return _kernel("ElementwiseKernel", spec)


@cache
def _reduction(spec: _cuda.Reduction) -> Any:
    return _kernel("ReductionKernel", spec)


def _ptr(a: Any) -> Any:
    """A kernel argument for an optional array: the array, or a null pointer."""
    return _NULL if a is None else a


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------


def _axis(shape: tuple[int, ...], axis: int) -> int:
    ndim = len(shape)
    if ndim == 0:
        raise ValueError(
            "the input must have at least one dimension (the class axis), got a 0-d array"
        )
    axis = operator.index(axis)  # a float axis is a TypeError, as on the CPU
    normalized = axis + ndim if axis < 0 else axis
    if not 0 <= normalized < ndim:
        raise ValueError(
            f"axis {axis} is out of range for an input of shape {shape} ({ndim} dimensions)"
        )
    return normalized


def _geometry(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """``(rows, classes, inner)`` of ``shape`` around the (normalized) class axis."""
    classes = shape[axis]
    inner = math.prod(shape[axis + 1 :])
    rows = math.prod(shape[:axis]) * inner
    return rows, classes, inner


def _output_form(obj: Any, what: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
    """Checks an output buffer's type, dtype (``dtype``), shape and layout."""
    cp = _cp()
    if not isinstance(obj, cp.ndarray) or obj.dtype != dtype:
        got = getattr(obj, "dtype", type(obj).__name__)
        raise TypeError(f"{what} must be a {dtype} array like the input, got dtype {got}")
    if obj.shape != shape:
        raise ValueError(f"{what} has shape {obj.shape} but the input has shape {shape}")
    if not obj.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")


def _address(a: Any) -> int:
    """The device address of ``a``'s data."""
    return int(a.data.ptr)


def _output(obj: Any, what: str, x: Any) -> bool:
    """Checks an output buffer for input ``x``; returns whether it is ``x`` itself."""
    _output_form(obj, what, x.dtype, x.shape)
    nbytes = x.nbytes
    a, b = _address(x), _address(obj)
    if a != b and nbytes > 0 and a < b + nbytes and b < a + nbytes:
        raise ValueError(
            f"{what} overlaps the input; pass the input itself to write in place, "
            "or a separate array"
        )
    return bool(a == b and nbytes > 0)


def _upstream(g: Any, reduction: str, loss_shape: tuple[int, ...]) -> tuple[float, Any]:
    """The converted upstream gradient (a float, an array or ``None``) as ``(scalar,
    per-sample array or None)``, checked against the loss's shape."""
    if g is None:
        return 1.0, None
    if isinstance(g, float):
        return g, None
    if reduction != "none":
        raise ValueError(f"grad_output must be a scalar for a reduced loss, got shape {g.shape}")
    if g.shape != loss_shape:
        raise ValueError(f"grad_output has shape {g.shape} but the loss has shape {loss_shape}")
    return 1.0, g


def _first_index(spec: _cuda.Elementwise, *args: Any) -> int:
    """The first flat index where ``spec``'s condition holds over ``args``, or -1.

    One elementwise kernel (an ``atomicMin`` on the index, see ``_cuda.first_index``) and one
    value read back.
    """
    cp = _cp()
    if args[0].size == 0:
        return -1
    first = cp.full(1, np.uint64(_NO_INDEX), dtype=cp.uint64)
    _elementwise(spec)(*args, first)
    index = int(first.get()[0])
    return -1 if index == _NO_INDEX else index


def _position(flat: int, shape: tuple[int, ...]) -> str:
    return str(tuple(int(i) for i in np.unravel_index(flat, shape)))


# ---------------------------------------------------------------------------------------------
# softmax family
# ---------------------------------------------------------------------------------------------


def _normalize(a: Any, axis: int, out: Any, log: bool) -> Any:
    ax = _axis(a.shape, axis)
    if out is None:
        dest = _cp().empty_like(a)
    else:
        _output(out, "out", a)
        dest = out
    rows, classes, inner = _geometry(a.shape, ax)
    _launch_row("xent_softmax", a.dtype, rows, classes, inner, (a, dest), (np.int32(log),))
    return dest


def _launch_row(
    name: str,
    dtype: np.dtype[Any],
    rows: int,
    classes: int,
    inner: int,
    args: tuple[Any, ...],
    extra: tuple[Any, ...] = (),
) -> None:
    """Runs a row kernel as ``kernel(*args, rows, classes, inner, group, *extra)``.

    A contiguous row of ``classes >= _BLOCK_ROW`` values is reduced by a whole block (group 0),
    a shorter one by a power-of-two group of lanes giving each lane about 4 values; rows whose
    values are ``inner > 1`` apart (class axis not last) are handled one per thread, so that
    neighbouring threads read neighbouring values.
    """
    if rows == 0:
        return
    kernel = _raw(name, np.dtype(dtype))
    threads = _BLOCK
    if inner == 1 and classes >= _BLOCK_ROW:
        group, grid = 0, rows
        if rows < _BIG_BLOCK:  # few long rows: more threads per row
            threads = max(_BLOCK, min(_BIG_BLOCK, int(kernel.max_threads_per_block)) // 32 * 32)
    else:
        group = 1 if inner != 1 else min(32, 1 << (max(1, -(-classes // 4)) - 1).bit_length())
        grid = -(-rows * group // _BLOCK)
    grid = min(grid, _MAX_GRID)
    sizes = (np.int64(rows), np.int64(classes), np.int64(inner))
    kernel((grid,), (threads,), (*args, *sizes, np.int32(group), *extra))


def softmax(x: Array, axis: int, out: Array | None, log: bool) -> Any:
    """``_core.softmax``: probabilities (log-probabilities with ``log``) of ``x`` along
    ``axis`` (into ``out``)."""
    return _normalize(x, axis, out, log)


def logsumexp(x: Any, axis: int) -> Any:
    """``_core.logsumexp``: ``log(sum(exp(x)))`` along ``axis``."""
    ax = _axis(x.shape, axis)
    rows, classes, inner = _geometry(x.shape, ax)
    dest = _cp().empty(x.shape[:ax] + x.shape[ax + 1 :], dtype=x.dtype)
    _launch_row("xent_logsumexp", x.dtype, rows, classes, inner, (x, dest))
    return dest


def _backward(g: Any, y: Any, axis: int, log: bool) -> Any:
    ax = _axis(y.shape, axis)
    if g.shape != y.shape:
        raise ValueError(f"grad_output has shape {g.shape} but output has shape {y.shape}")
    dest = _cp().empty_like(y)
    rows, classes, inner = _geometry(y.shape, ax)
    _launch_row(
        "xent_softmax_backward", y.dtype, rows, classes, inner, (g, y, dest), (np.int32(log),)
    )
    return dest


def softmax_backward(grad_output: Array, output: Array, axis: int, log: bool) -> Any:
    """``_core.softmax_backward``: ``output * (g - sum(g * output))`` along ``axis``, or
    ``g - exp(output) * sum(g)`` with ``log``."""
    return _backward(grad_output, output, axis, log)


# ---------------------------------------------------------------------------------------------
# multiclass losses
# ---------------------------------------------------------------------------------------------


def _check_targets(t: Any, classes: int, ignore_index: int) -> None:
    """``IndexError`` for the first class index outside ``[0, classes)`` not ignored."""
    if t.size == 0:
        return
    flat = _first_index(_cuda.BAD_TARGET, t, ignore_index, classes)
    if flat < 0:
        return
    value = int(t.ravel()[flat].get())
    where = f"target {value} at position {_position(flat, t.shape)}"
    if classes == 0:  # the core's words (src/error.rs)
        raise IndexError(
            f"{where} is out of range: the input has 0 classes (every target must be ignore_index)"
        )
    raise IndexError(
        f"{where} is out of bounds for {classes} classes (valid: 0 to {classes - 1}, or "
        "ignore_index)"
    )


def _hard_denominator(t: Any, w: Any, sw: Any, ignore_index: int) -> Any:
    """``sum(w[y] * sw)`` over the counted samples, as a 0-d float64 device array."""
    args = [a for a in (t, ignore_index, w, sw) if a is not None]
    return _elementwise(_cuda.hard_denominator(w is not None, sw is not None))(*args).sum()


def cross_entropy_denominator(
    target: Any, classes: int, weight: Any, sample_weight: Any, ignore_index: int
) -> float:
    """``_core.cross_entropy_denominator`` on the device: the class indices checked (the
    ``IndexError`` naming value and position) and the ``mean`` denominator, read back."""
    _check_targets(target, classes, ignore_index)
    t = target.reshape(-1).astype(np.int64, copy=False)
    sw = None if sample_weight is None else sample_weight.reshape(-1)
    return float(_hard_denominator(t, weight, sw, ignore_index))


def matmul(a: Any, b: Any, out: Any, accumulate: bool) -> None:
    """``_core.matmul`` on the device, cuBLAS through ``cupy.matmul``: ``out = a @ b``, or
    ``out += a @ b`` a few rows at a time through a block of half ``a``'s size
    (``cupy.matmul`` cannot accumulate into its output)."""
    cp = _cp()
    if not accumulate:
        cp.matmul(a, b, out=out)
        return
    rows, cols = out.shape
    step = max(1, min(rows, a.size // 2 // max(1, cols)))
    block = cp.empty((step, cols), out.dtype)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        part = block[: r1 - r0]
        cp.matmul(a[r0:r1], b, out=part)
        cp.add(out[r0:r1], part, out=out[r0:r1])


def _class_loss(spec: ClassLoss, x: Any, t: Any, w: Any, sw: Any, g: Any, grad_out: Any) -> Any:
    cp = _cp()
    axis, ignore_index, reduction = spec.axis, spec.ignore_index, spec.reduction
    eps, return_grad, loss_name = spec.label_smoothing, spec.return_grad, spec.loss
    z_loss, softcap, gamma = spec.z_loss, spec.softcap, spec.gamma
    nll = loss_name == "nll_loss"
    work = np.dtype(x.dtype)
    shape = tuple(x.shape)
    ax = _axis(shape, axis)
    sample_shape = shape[:ax] + shape[ax + 1 :]
    hard = t.dtype.kind in "iu"

    def mismatch(want: tuple[int, ...], what: str) -> ValueError:
        return ValueError(
            f"target has shape {tuple(t.shape)} but {what} {want} "
            f"(input shape {shape}, class axis {ax})"
        )

    if hard:
        if t.shape != sample_shape:
            raise mismatch(sample_shape, "class indices need shape")
    else:
        if t.shape == sample_shape:
            raise TypeError(
                f"target has the shape of class indices {sample_shape} but a floating dtype "
                f"({work}); cast it to integers, e.g. target.astype(np.int64)"
            )
        if loss_name != "cross_entropy":
            raise TypeError(f"{loss_name} needs integer class indices, got dtype {work}")
        if t.shape != shape:
            raise mismatch(shape, "class probabilities need the input's shape")
        if ignore_index >= 0:
            raise ValueError(
                f"ignore_index ({ignore_index}) does not apply to soft (class probability) targets"
            )
    rows, classes, inner = _geometry(shape, ax)
    if w is not None and w.shape != (classes,):
        raise ValueError(f"weight has shape {w.shape} but one value per class needs {(classes,)}")
    if sw is not None and sw.shape != sample_shape:
        raise ValueError(
            f"sample_weight has shape {sw.shape} but one value per sample needs {sample_shape}"
        )
    if grad_out is not None and not return_grad:
        raise ValueError("grad_out is only used with return_grad=True")
    gscalar, go = _upstream(g, reduction, sample_shape)
    if grad_out is not None:
        _output(grad_out, "grad_out", x)
        for other in (t, w, sw, go):  # the CPU path's borrow check refuses these too
            if other is not None and cp.may_share_memory(grad_out, other):
                raise ValueError(
                    "grad_out overlaps another argument (a target, weight or grad_output "
                    "array) that this call reads; pass a separate array"
                )

    # Everything below the checks writes.
    denom = None
    if hard:
        _check_targets(t, classes, ignore_index)
        t = t.astype(np.int64, order="C", copy=False)
        if reduction == "mean":
            denom = _hard_denominator(t, w, sw, ignore_index)
    elif reduction == "mean":
        denom = cp.asarray(float(rows)) if sw is None else cp.sum(sw, dtype=cp.float64)
    grad = None
    if return_grad:
        grad = grad_out if grad_out is not None else cp.empty(shape, dtype=work)
    rowloss = cp.empty(sample_shape, dtype=cp.float64)
    # The kernels' z-loss, soft cap and focal gamma; 0 is off.
    options = (np.float64(z_loss), np.float64(softcap or 0.0), np.float64(gamma))
    common = (_ptr(w), _ptr(sw), _ptr(go), np.float64(gscalar), _ptr(denom), rowloss)
    if hard:
        wtotal = float(classes)
        if w is not None and eps > 0.0:
            wtotal = float(cp.sum(w, dtype=cp.float64))
        _launch_row(
            "xent_ce_hard",
            work,
            rows,
            classes,
            inner,
            (x, _ptr(grad), t, *common),
            (
                np.int64(ignore_index),
                np.float64(eps),
                np.float64(wtotal),
                np.int32(not nll),
                *options,
            ),
        )
    else:
        _launch_row(
            "xent_ce_soft",
            work,
            rows,
            classes,
            inner,
            (x, t, _ptr(grad), *common),
            (np.float64(eps), *options[:2]),
        )
        if classes == 0:  # as on the CPU: each row's loss is an empty sum, a mean is NaN
            rowloss.fill(0.0)
            if denom is not None:
                denom = cp.zeros((), dtype=cp.float64)

    if reduction == "none":
        loss = rowloss.astype(work)
    else:
        total = rowloss.sum()
        if reduction == "mean":  # nothing counted: NaN, whatever the sum (as on the CPU)
            total = cp.where(denom == 0, cp.nan, total / denom)
        loss = total.astype(work)
    return (loss, grad) if return_grad else loss


def class_loss(
    spec: ClassLoss,
    input: Array,
    target: Array,
    weight: Array | None,
    sample_weight: Array | None,
    grad_output: float | Array | None,
    grad_out: Array | None,
    partial: bool | None = None,
) -> Any:
    """``_core.class_loss`` on the device: the loss (0-d when reduced) or ``(loss, grad)``
    (focal loss with ``gamma = 0`` runs cross entropy's path)."""
    _no_partial(partial)
    _check_options(spec.z_loss, spec.softcap, spec.gamma)
    return _class_loss(spec, input, target, weight, sample_weight, grad_output, grad_out)


def _no_partial(partial: bool | None) -> None:
    """The accumulators' partial results come from the CPU core only (they take NumPy chunks)."""
    if partial is not None:
        raise TypeError("partial results are computed by the CPU core: pass NumPy arrays")


def _shown(v: float) -> str:
    """A value as the core's messages show it (Rust's ``{:?}``: ``NaN``, ``inf``, ``1.5``)."""
    return "NaN" if math.isnan(v) else repr(float(v))


def _check_options(z_loss: float, softcap: float | None, gamma: float) -> None:
    """The core's checks of the options, in its words (NaN shown as ``NaN``)."""
    if not (z_loss >= 0.0 and math.isfinite(z_loss)):
        raise ValueError(f"z_loss must be a finite number >= 0.0, got {_shown(z_loss)}")
    if softcap is not None and not (softcap > 0.0 and math.isfinite(softcap)):
        raise ValueError(
            f"softcap must be a finite number > 0.0 (or None for no cap), got {_shown(softcap)}"
        )
    if not (gamma >= 0.0 and math.isfinite(gamma)):
        raise ValueError(f"gamma must be a finite number >= 0.0, got {_shown(gamma)}")


# ---------------------------------------------------------------------------------------------
# binary losses
# ---------------------------------------------------------------------------------------------


def _broadcast(values: Any, repeat: int, shape: tuple[int, ...]) -> Any:
    """A weight given as distinct values and a repeat count (``_backend.broadcast``) as a
    read-only view of ``shape``: flat element ``i`` reads ``values[(i // repeat) % len]``."""
    if values is None:
        return None
    # The values vary along a run of axes: the trailing ones whose sizes multiply to
    # ``repeat`` are constant, the run before them multiplies to the values' length.
    last, product = len(shape), 1
    while last > 0 and product < repeat:
        last -= 1
        product *= shape[last]
    first, length = last, 1
    while first > 0 and length < values.size:
        first -= 1
        length *= shape[first]
    view = (1,) * first + tuple(shape[first:last]) + (1,) * (len(shape) - last)
    return _cp().broadcast_to(values.reshape(view), shape)


def _check_probabilities(p: Any) -> None:
    """``ValueError`` naming the first probability outside ``[0, 1]`` (NaN included)."""
    flat = _first_index(_cuda.BAD_PROBABILITY, p)
    if flat < 0:
        return
    value = p.ravel()[flat].get()[()]
    raise ValueError(
        f"all elements of input should be between 0 and 1: got {value} at position "
        f"{_position(flat, p.shape)}"
    )


def binary_loss(
    spec: BinaryLoss,
    input: Array,
    target: Array,
    weight: tuple[Array | None, int],
    pos_weight: tuple[Array | None, int],
    grad_output: float | Array | None,
    partial: bool | None = None,
) -> Any:
    """``_core.binary_loss`` on the device (the binary focal loss with ``gamma = 0`` and no
    ``alpha`` runs the path of the loss on logits)."""
    _no_partial(partial)
    shape = tuple(input.shape)
    w = _broadcast(*weight, shape)
    pw = _broadcast(*pos_weight, shape)
    work = np.dtype(input.dtype)
    args = [a for a in (input, target, pw, w) if a is not None]
    if spec.loss == "binary_focal_loss_with_logits":
        gamma, alpha = spec.gamma, spec.alpha
        _check_options(0.0, None, gamma)
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1] or be None, got {_shown(alpha)}")
        if gamma != 0.0 or alpha is not None:
            power = int(gamma) if gamma == int(gamma) and gamma <= 16 else -1
            a = 0.0 if alpha is None else alpha
            args += [work.type(gamma), np.int32(power), np.int32(alpha is not None)]
            args += [work.type(a), work.type(1.0 - a)]
            parts = _cuda.focal_parts(w is not None)
        else:  # exactly BCE with logits
            parts = _cuda.binary_parts(True, False, w is not None)
    else:
        logits = spec.loss == "binary_cross_entropy_with_logits"
        if not logits:  # the upstream gradient's checks first, as on the CPU
            _upstream(grad_output, spec.reduction, shape)
            _check_probabilities(input)
        # The kernels' parameters: x, t, then pw and w when given (see _cuda.binary).
        parts = _cuda.binary_parts(logits, pw is not None, w is not None)
    n = math.prod(shape)
    return _pointwise_loss(
        parts, args, shape, work, spec.reduction, spec.return_grad, grad_output, n
    )


def _pointwise_loss(
    parts: _cuda.Pointwise,
    args: list[Any],
    shape: tuple[int, ...],
    work: np.dtype[Any],
    reduction: str,
    return_grad: bool,
    g: Any,
    denominator: float,
) -> Any:
    """An element-wise loss over ``args`` (the kernels' parameters before the upstream
    gradient): per-element losses, or their float64 sum divided by ``denominator`` for
    ``mean``, and the gradient scaled by the upstream gradient."""
    cp = _cp()
    gscalar, go = _upstream(g, reduction, shape)
    grad = None
    if reduction == "none":
        if return_grad:
            upstream = go if go is not None else work.type(gscalar)
            loss, grad = _elementwise(_cuda.pointwise(parts, "none_grad"))(*args, upstream)
        else:
            loss = _elementwise(_cuda.pointwise(parts, "none"))(*args)
    else:
        if math.prod(shape) == 0:
            total = cp.zeros((), dtype=cp.float64)
        else:
            total = _reduction(_cuda.pointwise_sum(parts))(*args)
        if reduction == "mean":
            total = total / denominator if denominator else cp.full((), cp.nan)
        loss = total.astype(work)
        if return_grad:
            scale = (
                gscalar if reduction == "sum" else (gscalar / denominator if denominator else 0.0)
            )
            grad = _elementwise(_cuda.pointwise(parts, "grad"))(*args, work.type(scale))
    return (loss, grad) if return_grad else loss


def kl_div(
    spec: KlDiv,
    input: Array,
    target: Array,
    grad_output: float | Array | None,
    partial: bool | None = None,
) -> Any:
    """``_core.kl_div`` on the device (``batchmean`` divides by ``input.shape[0]``)."""
    _no_partial(partial)
    reduction = spec.reduction
    if reduction not in ("none", "mean", "sum", "batchmean"):
        raise ValueError(
            f'reduction must be "none", "mean", "sum" or "batchmean", got "{reduction}"'
        )
    shape = tuple(input.shape)
    if tuple(target.shape) != shape:
        raise ValueError(f"target shape {tuple(target.shape)} must match input shape {shape}")
    work = np.dtype(input.dtype)
    if reduction == "batchmean":
        denominator = float(shape[0]) if shape else 1.0
        reduction = "mean"
    else:
        denominator = float(math.prod(shape))
    parts = _cuda.kl_parts(spec.log_target)
    return _pointwise_loss(
        parts, [input, target], shape, work, reduction, spec.return_grad, grad_output, denominator
    )
