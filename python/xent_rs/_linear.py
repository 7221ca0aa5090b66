"""``linear_cross_entropy``: the cross entropy of a linear head, without ever holding the logits.

``linear_cross_entropy(h, W, y, linear_bias=b)`` is ``cross_entropy(h @ W.T + b, y)``. The
rows of ``h`` are processed in chunks: each chunk's logits come from one matrix product into
one buffer reused by every chunk, the core's fused cross-entropy pass writes the chunk's
gradient over them in place, and three more matrix products turn that gradient into the
gradients of ``h``, ``W`` and ``b``. The ``(..., V)`` logits never exist at once.

The matrix products are NumPy's (``np.matmul(..., out=)``, its BLAS, with the GIL released);
the fused pass is the core's (its private pool, ``xent_rs.set_num_threads``). The chunks
depend on the shapes only, so the results are the same bits for any xent_rs thread count,
given a BLAS that returns the same bits for the same product (OpenBLAS does for a fixed
number of its own threads; see ``docs/semantics.md``).
"""

from __future__ import annotations

import math
import operator
from typing import Any, NamedTuple

import numpy as np

from xent_rs import _arrays, _core, _spec

#: Bytes of the one logits buffer when ``chunk_size`` is not given.
CHUNK_BYTES = 32 << 20
#: Rows below which the BLAS products lose speed (measured, benches/NOTES.md): the default
#: chunk has at least this many while its buffer stays within ``MAX_CHUNK_BYTES``.
MIN_ROWS = 128
MAX_CHUNK_BYTES = 128 << 20


class LinearGrads(NamedTuple):
    """The gradients that ``linear_cross_entropy(..., return_grad=True)`` returns."""

    #: Gradient with respect to ``input``, with its shape.
    input: Any
    #: Gradient with respect to ``linear_weight``, ``(V, D)``.
    linear_weight: Any
    #: Gradient with respect to ``linear_bias``, ``(V,)``; ``None`` without a bias.
    linear_bias: Any


def _bfloat16(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` is ``ml_dtypes.bfloat16`` (never imported: such an array can only
    exist where it is installed)."""
    return dtype.name == "bfloat16"


def _float_input(obj: Any, name: str) -> tuple[np.ndarray, np.dtype[Any]]:
    """``_arrays.float_input`` that also reads bfloat16 (computed in float32, as float16)."""
    a = _arrays.to_ndarray(obj, name)
    if _bfloat16(a.dtype):
        return np.require(a, np.float32, ("C_CONTIGUOUS", "ALIGNED")), a.dtype
    return _arrays.float_input(a, name)


def _secondary(obj: Any, work: np.dtype[Any], name: str) -> np.ndarray:
    """A weight, bias or ``grad_output`` array in the work dtype (bfloat16 read as well)."""
    a = _arrays.to_ndarray(obj, name)
    if _bfloat16(a.dtype):
        a = a.astype(np.float32)
    return _arrays.like(a, work, name)


def _restore(a: Any, dtype: np.dtype[Any]) -> Any:
    """A float32 result of a float16/bfloat16 call in the caller's dtype."""
    return a if a is None or a.dtype == dtype else a.astype(dtype)


def check_shapes(
    input_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    target_shape: tuple[int, ...],
    bias_shape: tuple[int, ...] | None,
    class_weight_shape: tuple[int, ...] | None,
    sample_weight_shape: tuple[int, ...] | None,
) -> tuple[int, int, int]:
    """The shapes of a call checked against each other: ``(N, D, V)`` (``N`` the number of
    samples, the product of ``input``'s leading dimensions), else a ``ValueError`` naming
    both shapes. Shared by the NumPy and the CuPy paths."""
    if len(input_shape) == 0:
        raise ValueError("input must have at least one dimension (..., D), got a 0-d array")
    if len(weight_shape) != 2:
        raise ValueError(f"linear_weight must be 2-D (V, D), got shape {weight_shape}")
    v, d = weight_shape
    if input_shape[-1] != d:
        raise ValueError(
            f"input has shape {input_shape} but linear_weight has shape {weight_shape}: "
            f"the last dimension of input ({input_shape[-1]}) must be linear_weight's "
            f"second ({d})"
        )
    if bias_shape is not None and bias_shape != (v,):
        raise ValueError(
            f"linear_bias has shape {bias_shape} but linear_weight has shape {weight_shape}: "
            f"one bias per class needs ({v},)"
        )
    if class_weight_shape is not None and class_weight_shape != (v,):
        raise ValueError(
            f"weight has shape {class_weight_shape} but linear_weight has shape "
            f"{weight_shape}: one value per class needs ({v},)"
        )
    samples = input_shape[:-1]
    if target_shape != samples:
        raise ValueError(
            f"target has shape {target_shape} but class indices need shape {samples} "
            f"(input shape {input_shape})"
        )
    if sample_weight_shape is not None and sample_weight_shape != samples:
        raise ValueError(
            f"sample_weight has shape {sample_weight_shape} but one value per sample needs "
            f"{samples}"
        )
    return math.prod(samples), d, v


def check_options(z_loss: Any, softcap: Any, chunk_size: Any) -> tuple[float, float | None]:
    """``z_loss`` (a finite real >= 0), ``softcap`` (``None``, or a finite real > 0) and
    ``chunk_size`` (``None`` or an integer >= 1), checked before any work (the core's words
    for the first two)."""
    zl = float(z_loss)
    if not (zl >= 0.0 and math.isfinite(zl)):
        raise ValueError(f"z_loss must be a finite number >= 0.0, got {zl!r}")
    cap = None if softcap is None else float(softcap)
    if cap is not None and not (cap > 0.0 and math.isfinite(cap)):
        raise ValueError(f"softcap must be a finite number > 0.0 (or None for no cap), got {cap!r}")
    if chunk_size is not None:
        if isinstance(chunk_size, (bool, np.bool_)):
            raise TypeError(f"chunk_size must be an integer, got {chunk_size!r}")
        if operator.index(chunk_size) < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    return zl, cap


def chunk_rows(n: int, v: int, itemsize: int, chunk_size: int | None) -> int:
    """Rows per chunk: ``chunk_size``, else as many as keep the logits buffer within
    :data:`CHUNK_BYTES`, but at least :data:`MIN_ROWS` while that buffer stays within
    :data:`MAX_CHUNK_BYTES` (at least 1, at most ``n``)."""
    if chunk_size is not None:
        rows = operator.index(chunk_size)
    else:
        row_bytes = max(1, v * itemsize)
        rows = max(CHUNK_BYTES // row_bytes, min(MIN_ROWS, MAX_CHUNK_BYTES // row_bytes))
    return max(1, min(rows, n))


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
    """Cross entropy of a linear head, ``cross_entropy(input @ linear_weight.T + linear_bias,
    target)``, without ever holding the logits.

    The rows of ``input`` are processed ``chunk_size`` at a time: one chunk's logits are
    computed into one reused buffer, the fused loss-and-gradient pass of
    :func:`cross_entropy` runs over them in place, and the gradients with respect to
    ``input``, ``linear_weight`` and ``linear_bias`` are accumulated chunk by chunk. Peak
    memory beyond the arguments is the gradients plus one chunk's logits and half as much again
    (through which each chunk's ``linear_weight`` gradient is added).

    Parameters
    ----------
    input : array_like
        Hidden states, shape ``(..., D)``; the leading dimensions are the samples (float16,
        bfloat16 and float32 compute in float32, float64 in float64).
    linear_weight : array_like
        The head's weight, ``(V, D)`` (converted to ``input``'s compute dtype).
    target : array_like
        Integer class indices with shape ``input.shape[:-1]``.
    linear_bias : array_like, optional
        The head's bias, ``(V,)``.
    weight, sample_weight, ignore_index, reduction, label_smoothing
        As in :func:`cross_entropy` (class weights ``(V,)``; sample weights with the target's
        shape).
    z_loss : float, default 0.0
        PaLM's auxiliary loss: each counted sample's loss gains
        ``z_loss * w[y] * logsumexp(logits)**2`` (as in :func:`cross_entropy`).
    softcap : float, optional
        Caps the logits to ``softcap * tanh(logits / softcap)`` before anything else (as in
        :func:`cross_entropy`).
    return_grad : bool, default False
        Also return the gradients (without it, no gradient work is done at all).
    grad_output : float or array_like, optional
        Upstream gradient: a scalar for ``mean``/``sum`` (default 1), an array of the loss's
        shape for ``none``.
    chunk_size : int, optional
        Rows per chunk. By default as many as keep one chunk's logits within 32 MiB, but at
        least 128 (the matrix products slow down below that) while that stays within 128 MiB.

    Returns
    -------
    loss : scalar or ndarray
        A NumPy scalar of ``input``'s dtype, or per-sample losses (``target``'s shape) for
        ``none``.
    grads : LinearGrads
        Only with ``return_grad=True``: the named tuple ``(input, linear_weight,
        linear_bias)`` of gradients, each with its argument's shape and ``input``'s dtype
        (``linear_bias`` is ``None`` without a bias).

    Examples
    --------
    >>> import numpy as np, xent_rs
    >>> h = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> W = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    >>> y = np.array([0, 1, 2])
    >>> loss, grads = xent_rs.linear_cross_entropy(h, W, y, return_grad=True)
    >>> bool(np.isclose(loss, xent_rs.cross_entropy(h @ W.T, y)))
    True
    >>> grads.input.shape, grads.linear_weight.shape, grads.linear_bias is None
    ((3, 2), (3, 2), True)
    """
    if _arrays.uses_cupy(
        input, linear_weight, target, linear_bias, weight, sample_weight, grad_output
    ):
        from xent_rs import _linear_cupy

        return _linear_cupy.linear_cross_entropy(
            input,
            linear_weight,
            target,
            linear_bias=linear_bias,
            weight=weight,
            sample_weight=sample_weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            softcap=softcap,
            return_grad=return_grad,
            grad_output=grad_output,
            chunk_size=chunk_size,
        )
    x, dtype = _float_input(input, "input")
    work = x.dtype
    w = _secondary(linear_weight, work, "linear_weight")
    t = _arrays.to_ndarray(target, "target")
    if t.dtype.kind not in "iu":
        raise TypeError(
            f"linear_cross_entropy needs integer class indices, got target dtype {t.dtype}"
        )
    t = _arrays.native(t)
    b = None if linear_bias is None else _secondary(linear_bias, work, "linear_bias")
    cw = None if weight is None else _secondary(weight, work, "weight")
    sw = None if sample_weight is None else _secondary(sample_weight, work, "sample_weight")
    n, d, v = check_shapes(
        x.shape,
        w.shape,
        t.shape,
        None if b is None else b.shape,
        None if cw is None else cw.shape,
        None if sw is None else sw.shape,
    )
    reduction = _spec.reduction(reduction)
    eps = _spec.label_smoothing(label_smoothing)
    ignore = _spec.ignore_index(ignore_index)
    zl, cap = check_options(z_loss, softcap, chunk_size)
    go = _arrays.upstream(grad_output, reduction, work)
    if isinstance(go, np.ndarray):
        if reduction != "none":
            raise ValueError(
                f"grad_output must be a scalar for a reduced loss, got shape {go.shape}"
            )
        if go.shape != t.shape:
            raise ValueError(f"grad_output has shape {go.shape} but the loss has shape {t.shape}")
    # Checks the targets (the core's IndexError, naming value and position) and gives the
    # mean's denominator before any matrix product.
    denominator = _core.cross_entropy_denominator(t, v, cw, sw, ignore)
    sw1 = None if sw is None else sw.reshape(n)

    def fused(z: np.ndarray, rows: slice, upstream: Any, core_reduction: _spec.Reduction) -> Any:
        result = _core.cross_entropy(
            z,
            t1[rows],
            -1,
            cw,
            None if sw1 is None else sw1[rows],
            ignore,
            core_reduction,
            eps,
            bool(return_grad),
            upstream,
            z if return_grad else None,
            z_loss=zl,
            softcap=cap,
        )
        return result[0] if return_grad else result

    t1 = t.reshape(n)
    spec = Chunked(
        xp=np,
        rows=chunk_rows(n, v, work.itemsize, chunk_size),
        reduction=reduction,
        denominator=denominator,
        return_grad=bool(return_grad),
    )
    loss, grads = spec.run(x.reshape(n, d), w, b, go, fused)
    out = _restore(loss.reshape(t.shape), dtype) if reduction == "none" else loss.astype(dtype)[()]
    if grads is None:
        return out
    return out, LinearGrads(
        _restore(grads.input.reshape(x.shape), dtype),
        _restore(grads.linear_weight, dtype),
        _restore(grads.linear_bias, dtype),
    )


class Chunked(NamedTuple):
    """The chunk loop, the same for NumPy and CuPy arrays (``xp``): each chunk's logits by
    one matrix product into one reused buffer (plus the bias), the fused pass over them
    (``fused``, writing the gradient in place), then the three gradient products."""

    #: The array module: ``numpy`` or ``cupy``.
    xp: Any
    #: Rows per chunk.
    rows: int
    #: ``none``, ``mean`` or ``sum``.
    reduction: str
    #: The ``mean`` denominator of all the rows.
    denominator: float
    #: Whether the gradients are computed.
    return_grad: bool

    def run(self, h: Any, w: Any, b: Any, go: Any, fused: Any) -> tuple[Any, LinearGrads | None]:
        """The loss (a 0-d array in the work dtype, or ``(N,)`` per-sample losses for
        ``none``) and the gradients, for ``(N, D)`` inputs ``h``. ``go`` is the upstream
        gradient (``None``, a float, or ``(..., )`` values for ``none``); ``fused(z, rows,
        upstream, reduction)`` runs the fused pass over chunk ``z`` of ``rows`` and returns
        its loss."""
        xp, reduction = self.xp, self.reduction
        (n, d), v, work = h.shape, w.shape[0], h.dtype
        rows = self.rows
        go1 = go.reshape(n) if reduction == "none" and go is not None else go
        # mean: the whole scale g / denominator goes into every chunk's fused pass (a sum).
        upstream: Any = None
        if reduction != "none":
            g = 1.0 if go1 is None else float(go1)
            if reduction == "mean":
                g = 0.0 if self.denominator == 0.0 else g / self.denominator
            upstream = g if self.return_grad else None
        core_reduction: _spec.Reduction = "none" if reduction == "none" else "sum"

        logits = xp.empty((rows, v), work)
        losses = xp.empty(n, work) if reduction == "none" else None
        sums: list[Any] = []
        grad_h = grad_w = grad_b = block = None
        if self.return_grad:
            grad_h = xp.empty((n, d), work)
            grad_w = xp.zeros((v, d), work) if n == 0 else xp.empty((v, d), work)
            grad_b = None if b is None else xp.zeros(v, xp.float64)
            # A chunk's grad_W is added through a block of classes at a time (matmul cannot
            # accumulate into its output): half the logits buffer, so that the scratch memory
            # stays 1.5 buffers.
            step = max(1, min(v, rows * v // 2 // max(1, d)))
            block = xp.empty((step, d), work)
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            z = logits[: r1 - r0]
            hc = h[r0:r1]
            xp.matmul(hc, w.T, out=z)
            if b is not None:
                xp.add(z, b, out=z)
            if losses is not None:
                chunk_go = None if go1 is None else go1[r0:r1]
                losses[r0:r1] = fused(z, slice(r0, r1), chunk_go, core_reduction)
            else:
                sums.append(fused(z, slice(r0, r1), upstream, core_reduction))
            if grad_h is None:
                continue
            assert grad_w is not None and block is not None
            # z now holds the chunk's gradient with respect to its logits.
            xp.matmul(z, w, out=grad_h[r0:r1])
            if r0 == 0:
                xp.matmul(z.T, hc, out=grad_w)
            else:
                _accumulate(xp, grad_w, z, hc, block)
            if grad_b is not None:
                grad_b += z.sum(axis=0, dtype=xp.float64)

        if losses is not None:
            loss = losses
        else:
            # The chunks' sums (float64) added exactly, in chunk order.
            total = math.fsum(float(s) for s in sums)
            if reduction == "mean":
                total = math.nan if self.denominator == 0.0 else total / self.denominator
            loss = np.array(total, work)
        if grad_h is None:
            return loss, None
        return loss, LinearGrads(grad_h, grad_w, None if grad_b is None else grad_b.astype(work))


def _accumulate(xp: Any, grad_w: Any, g: Any, h: Any, block: Any) -> None:
    """``grad_w += g.T @ h`` through ``block``, a few classes at a time: no ``(V, D)``
    temporary (a strided column slice of ``g`` is a transposed operand to the BLAS, not a
    copy)."""
    step = block.shape[0]
    for c0 in range(0, grad_w.shape[0], step):
        c1 = min(grad_w.shape[0], c0 + step)
        part = block[: c1 - c0]
        xp.matmul(g[:, c0:c1].T, h, out=part)
        xp.add(grad_w[c0:c1], part, out=grad_w[c0:c1])
