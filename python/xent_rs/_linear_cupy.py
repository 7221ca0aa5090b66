"""``linear_cross_entropy`` on CuPy arrays: the chunk loop of ``xent_rs._linear`` with cuBLAS
(``cupy.matmul(..., out=)``) for the matrix products and the fused CUDA cross-entropy kernel
of ``xent_rs._cupy`` for each chunk, its gradient written over the chunk's logits.

CuPy is imported only when a call gets here (from :func:`xent_rs.linear_cross_entropy`).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from xent_rs import _arrays, _cupy, _linear, _spec


def linear_cross_entropy(
    input: Any,
    linear_weight: Any,
    target: Any,
    *,
    linear_bias: Any = None,
    weight: Any = None,
    sample_weight: Any = None,
    ignore_index: int = -100,
    reduction: _spec.Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_grad: bool = False,
    grad_output: Any = None,
    chunk_size: int | None = None,
) -> Any:
    """Cross entropy of a linear head on CuPy arrays (see
    :func:`xent_rs.linear_cross_entropy`).

    Parameters
    ----------
    input, linear_weight, target, linear_bias, weight, sample_weight, ignore_index
        As in :func:`xent_rs.linear_cross_entropy`, with CuPy arrays.
    reduction, label_smoothing, z_loss, softcap, return_grad, grad_output, chunk_size
        As in :func:`xent_rs.linear_cross_entropy`.

    Returns
    -------
    loss : cupy.ndarray
        0-d for ``mean``/``sum``, per sample for ``none``, in ``input``'s dtype.
    grads : LinearGrads
        Only with ``return_grad=True``, of CuPy arrays.
    """
    cp = _cupy._cp()
    _arrays.uses_cupy(input, linear_weight, target, linear_bias, weight, sample_weight, grad_output)
    x, dtype = _cupy._float_input(input)
    work = np.dtype(x.dtype)
    w = _cupy._like(linear_weight, work, "linear_weight")
    t = _cupy._as_cupy(target, "target")
    if t.dtype.kind not in "iu":
        raise TypeError(
            f"linear_cross_entropy needs integer class indices, got target dtype {t.dtype}"
        )
    b = None if linear_bias is None else _cupy._like(linear_bias, work, "linear_bias")
    cw = None if weight is None else _cupy._like(weight, work, "weight")
    sw = None if sample_weight is None else _cupy._like(sample_weight, work, "sample_weight")
    n, d, v = _linear.check_shapes(
        tuple(x.shape),
        tuple(w.shape),
        tuple(t.shape),
        None if b is None else tuple(b.shape),
        None if cw is None else tuple(cw.shape),
        None if sw is None else tuple(sw.shape),
    )
    reduction = _spec.reduction(reduction)
    eps = _spec.label_smoothing(label_smoothing)
    ignore = _spec.ignore_index(ignore_index)
    zl, cap = _linear.check_options(z_loss, softcap, chunk_size)
    gscalar, garray = _cupy._upstream(grad_output, reduction, tuple(t.shape), work)
    go: Any = garray if reduction == "none" else gscalar
    # The targets checked, and the mean's denominator read back, before any matrix product.
    _cupy._check_targets(t, v, ignore)
    t1 = t.reshape(n).astype(np.int64, copy=False)
    denominator = 0.0
    if reduction == "mean":
        denominator = float(
            _cupy._hard_denominator(t1, cw, None if sw is None else sw.reshape(n), ignore)
        )
    extra = _extra_options(zl, cap)
    sw1 = None if sw is None else sw.reshape(n)

    def fused(z: Any, rows: slice, upstream: Any, core_reduction: _spec.Reduction) -> Any:
        result = _cupy.cross_entropy(
            z,
            t1[rows],
            weight=cw,
            sample_weight=None if sw1 is None else sw1[rows],
            ignore_index=ignore,
            reduction=core_reduction,
            label_smoothing=eps,
            return_grad=bool(return_grad),
            grad_output=upstream,
            grad_out=z if return_grad else None,
            **extra,
        )
        return result[0] if return_grad else result

    spec = _linear.Chunked(
        xp=cp,
        rows=_linear.chunk_rows(n, v, work.itemsize, chunk_size),
        reduction=reduction,
        denominator=denominator,
        return_grad=bool(return_grad),
    )
    loss, grads = spec.run(x.reshape(n, d), w, b, go, fused)
    out = cp.asarray(loss).astype(dtype)
    if reduction == "none":
        out = out.reshape(t.shape)
    if grads is None:
        return out
    return out, _linear.LinearGrads(
        grads.input.reshape(x.shape).astype(dtype, copy=False),
        grads.linear_weight.astype(dtype, copy=False),
        None if grads.linear_bias is None else grads.linear_bias.astype(dtype, copy=False),
    )


def _extra_options(z_loss: float, softcap: float | None) -> dict[str, Any]:
    """The CUDA cross entropy's ``z_loss``/``softcap`` keywords, named only when set; a
    ``NotImplementedError`` before any work where that kernel does not have them yet."""
    extra: dict[str, Any] = {}
    if z_loss != 0.0:
        extra["z_loss"] = z_loss
    if softcap is not None:
        extra["softcap"] = softcap
    missing = set(extra) - set(inspect.signature(_cupy.cross_entropy).parameters)
    if missing:
        raise NotImplementedError(
            f"{' and '.join(sorted(missing))} on CuPy arrays need the CUDA cross entropy's, "
            "which it does not have yet; compute on NumPy arrays"
        )
    return extra
