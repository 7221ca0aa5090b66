"""``linear_cross_entropy``: the cross entropy of a linear head, without ever holding the logits.

``linear_cross_entropy(h, W, y, linear_bias=b)`` is ``cross_entropy(h @ W.T + b, y)``. The
rows of ``h`` are processed in chunks: each chunk's logits come from one matrix product into
one buffer reused by every chunk, the core's fused cross-entropy pass writes the chunk's
gradient over them in place, and three more matrix products turn that gradient into the
gradients of ``h``, ``W`` and ``b``. The ``(..., V)`` logits never exist at once.

The matrix products and the fused pass are the backend core's: on NumPy arrays the Rust
core's ``matmul`` (tiles of one product on its private pool, ``xent_rs.set_num_threads``, the
GIL released, each chunk's weight gradient accumulated in place) and its fused pass; on CuPy
arrays cuBLAS (``cupy.matmul``) and the CUDA kernel. The NumPy and the CuPy paths are this one
code with the backend (``xent_rs._backend``) as a parameter. The chunks and the core's tiles
depend on the shapes only, so on NumPy arrays the results are the same bits for any thread
count.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any, NamedTuple

import numpy as np

from xent_rs import _backend, _spec

#: Bytes of the one logits buffer when ``chunk_size`` is not given.
CHUNK_BYTES = 32 << 20
#: Rows below which the matrix products lose speed (measured, benches/NOTES.md): the default
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


def _float_input(ns: _backend.Namespace, obj: Any) -> tuple[Any, np.dtype[Any]]:
    """The input as the backend's ``float_input`` gives it, bfloat16 computed in float32 like
    float16 (the chunks' logits are the work dtype's)."""
    a = ns.asarray(obj, "input")
    if _backend.is_bfloat16(a.dtype):
        return ns.require(a, _backend.FLOAT32), a.dtype
    return _backend.float_input(ns, a, "input")


def _secondary(ns: _backend.Namespace, obj: Any, work: np.dtype[Any], name: str) -> Any:
    """A weight, bias or class weight in the work dtype (bfloat16 read as well); ``None``
    stays ``None``."""
    if obj is None:
        return None
    a = ns.asarray(obj, name)
    if _backend.is_bfloat16(a.dtype):
        a = a.astype(np.float32)
    return _backend.like(ns, a, work, name)


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


def check_chunk_size(chunk_size: Any) -> None:
    """``chunk_size``: ``None`` or an integer >= 1, checked before any work."""
    if chunk_size is None:
        return
    if isinstance(chunk_size, (bool, np.bool_)):
        raise TypeError(f"chunk_size must be an integer, got {chunk_size!r}")
    if operator.index(chunk_size) < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")


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
    memory beyond the arguments is the gradients plus one chunk's logits (on CuPy arrays half
    as much again, through which each chunk's ``linear_weight`` gradient is added).

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
    spec = _spec.cross_entropy(
        -1, ignore_index, reduction, label_smoothing, z_loss, softcap, return_grad
    )
    check_chunk_size(chunk_size)
    ns = _backend.namespace(
        input, linear_weight, target, linear_bias, weight, sample_weight, grad_output
    )
    x, dtype = _float_input(ns, input)
    work = np.dtype(x.dtype)
    w = _secondary(ns, linear_weight, work, "linear_weight")
    t = ns.asarray(target, "target")
    if t.dtype.kind not in "iu":
        raise TypeError(
            f"linear_cross_entropy needs integer class indices, got target dtype {t.dtype}"
        )
    t = ns.require(t, t.dtype.newbyteorder("="))
    b = _secondary(ns, linear_bias, work, "linear_bias")
    cw = _secondary(ns, weight, work, "weight")
    sw = _secondary(ns, sample_weight, work, "sample_weight")
    n, d, v = check_shapes(
        tuple(x.shape),
        tuple(w.shape),
        tuple(t.shape),
        None if b is None else tuple(b.shape),
        None if cw is None else tuple(cw.shape),
        None if sw is None else tuple(sw.shape),
    )
    go = _backend.upstream(ns, grad_output, spec.reduction, work)
    if go is not None and not isinstance(go, float):
        if spec.reduction != "none":
            raise ValueError(
                f"grad_output must be a scalar for a reduced loss, got shape {go.shape}"
            )
        if go.shape != t.shape:
            raise ValueError(f"grad_output has shape {go.shape} but the loss has shape {t.shape}")
    core = ns.core
    # Checks the targets (the core's IndexError, naming value and position) and gives the
    # mean's denominator before any matrix product.
    denominator = core.cross_entropy_denominator(t, v, cw, sw, spec.ignore_index)
    t1 = t.reshape(n)
    sw1 = None if sw is None else sw.reshape(n)

    # Each chunk is summed (or kept per sample): the mean divides once, at the end.
    chunk_spec = dataclasses.replace(spec, reduction="none" if spec.reduction == "none" else "sum")

    def fused(z: Any, rows: slice, upstream: Any) -> Any:
        sw_rows = None if sw1 is None else sw1[rows]
        result = core.class_loss(
            chunk_spec, z, t1[rows], cw, sw_rows, upstream, z if spec.return_grad else None
        )
        return result[0] if spec.return_grad else result

    chunked = Chunked(
        xp=ns.xp,
        matmul=core.matmul,
        rows=chunk_rows(n, v, work.itemsize, chunk_size),
        reduction=spec.reduction,
        denominator=denominator,
        return_grad=spec.return_grad,
    )
    loss, grads = chunked.run(x.reshape(n, d), w, b, go, fused)
    out = _restore(ns.xp.asarray(loss), dtype)
    if spec.reduction == "none":
        out = out.reshape(t.shape)
    elif ns is _backend.NUMPY:
        out = out[()]
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
    #: The backend core's ``matmul(a, b, out, accumulate)``: ``out = a @ b``, or ``out += a @ b``.
    matmul: Any
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
        upstream)`` runs the fused pass over chunk ``z`` of ``rows`` (summed, or per sample
        for ``none``) and returns its loss."""
        xp, matmul, reduction = self.xp, self.matmul, self.reduction
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

        logits = xp.empty((rows, v), work)
        losses = xp.empty(n, work) if reduction == "none" else None
        sums: list[Any] = []
        grad_h = grad_w = grad_b = None
        if self.return_grad:
            grad_h = xp.empty((n, d), work)
            grad_w = xp.zeros((v, d), work) if n == 0 else xp.empty((v, d), work)
            grad_b = None if b is None else xp.zeros(v, xp.float64)
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            z = logits[: r1 - r0]
            hc = h[r0:r1]
            matmul(hc, w.T, z, False)
            if b is not None:
                xp.add(z, b, out=z)
            if losses is not None:
                chunk_go = None if go1 is None else go1[r0:r1]
                losses[r0:r1] = fused(z, slice(r0, r1), chunk_go)
            else:
                sums.append(fused(z, slice(r0, r1), upstream))
            if grad_h is None:
                continue
            assert grad_w is not None
            # z now holds the chunk's gradient with respect to its logits.
            matmul(z, w, grad_h[r0:r1], False)
            matmul(z.T, hc, grad_w, r0 > 0)
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
