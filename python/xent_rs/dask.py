"""The losses on Dask arrays: lazy, block by block, on one machine or a ``distributed`` cluster.

Each function takes ``dask.array`` inputs chunked along the rows (any axis but the class axis,
which must be a single chunk) and returns lazy results built from per-block calls of the native
kernels:

- a reduced loss (``"mean"``/``"sum"``, and :func:`log_loss`) is a 0-d dask array computed by
  a tree of streaming accumulators (:mod:`xent_rs.streaming`): each block is scored where it
  lives, and only the small accumulators travel to be merged, so a cluster scores data that no
  single machine holds. It equals the one-shot function on the whole array up to float64
  rounding.
- per-sample losses (``reduction="none"``) and gradients are dask arrays with the input's
  chunks (the loss's chunks are the input's without the class axis).

Targets, sample weights and ``grad_output`` may be dask or NumPy arrays; they are rechunked to
the input's chunks. Class weights (``weight=``, ``pos_weight=``) are NumPy constants sent with
every block. Dask is an optional extra (``pip install 'xent-rs[dask]'``); importing this module
imports it, nothing else in ``xent_rs`` does.

>>> import dask.array as da, numpy as np, xent_rs.dask
>>> logits = da.from_array(np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), chunks=(2, 2))
>>> loss = xent_rs.dask.cross_entropy(logits, np.array([0, 0, 1]))
>>> round(float(loss.compute()), 6)
0.982334
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np

from xent_rs import _backend, _functional, _spec, streaming

__all__ = [
    "accumulate",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "binary_focal_loss_with_logits",
    "cross_entropy",
    "focal_loss",
    "kl_div",
    "log_loss",
    "nll_loss",
]

_KEYWORD = inspect.Parameter.KEYWORD_ONLY
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_F64 = np.dtype(np.float64)


# ---------------------------------------------------------------------------------------------
# layout: which block of each argument goes with which block of the input
# ---------------------------------------------------------------------------------------------


class _Layout:
    """The input, its aligned companions, and how their blocks line up.

    ``kind`` is ``"class"`` (classes along ``axis``; targets and sample weights without it),
    ``"soft"`` (class-probability targets with the input's shape), ``"binary"`` (targets with
    the input's shape, per-row or full-shape sample weights) or ``"rows"`` (``log_loss``:
    1-D labels and sample weights along the rows).
    """

    def __init__(
        self,
        input: Any,
        target: Any,
        sample_weight: Any,
        *,
        kind: str,
        axis: int | None = None,
    ) -> None:
        x = _as_dask(input, "input")
        _known_chunks(x, "input")
        self.x = x
        self.axis = None if axis is None else _normalize_axis(axis, x.ndim)
        t = _as_dask(target, "target", like=x if kind == "rows" else None)
        if kind == "class" and t.dtype.kind == "f":
            kind = "soft"
        self.kind = kind
        ax = self.axis
        letters = _LETTERS[: x.ndim]
        self.x_ind = letters
        if kind in ("class", "soft"):
            assert ax is not None
            if x.numblocks[ax] != 1:
                raise ValueError(
                    f"the class axis (axis {ax}, {x.shape[ax]} classes) of the input is split "
                    f"into {x.numblocks[ax]} chunks; it must be one chunk: "
                    f"input.rechunk({{{ax}: -1}})"
                )
            self.sample_ind = letters[:ax] + letters[ax + 1 :]
            sample_chunks = x.chunks[:ax] + x.chunks[ax + 1 :]
            sample_shape = x.shape[:ax] + x.shape[ax + 1 :]
            if kind == "class":
                if t.shape != sample_shape:
                    raise ValueError(
                        f"target of shape {t.shape} does not match the input of shape "
                        f"{x.shape} with classes on axis {ax} (expected {sample_shape})"
                    )
                self.t, self.t_ind = t.rechunk(sample_chunks), self.sample_ind
            else:
                if t.shape != x.shape:
                    raise ValueError(
                        f"soft target of shape {t.shape} must have the input's shape {x.shape}"
                    )
                self.t, self.t_ind = t.rechunk(x.chunks), letters
            self.sw, self.sw_ind = _aligned(
                sample_weight, sample_shape, sample_chunks, self.sample_ind, "sample_weight"
            )
            self.out_ind = self.sample_ind
        elif kind == "binary":
            if t.shape != x.shape:
                raise ValueError(f"target size {t.shape} must be the same as input size {x.shape}")
            self.t, self.t_ind = t.rechunk(x.chunks), letters
            self.sample_ind = letters
            if sample_weight is not None and np.ndim(sample_weight) == 1 and x.ndim >= 1:
                self.sw, self.sw_ind = _aligned(
                    sample_weight, x.shape[:1], x.chunks[:1], letters[:1], "sample_weight"
                )
            else:
                self.sw, self.sw_ind = _aligned(
                    sample_weight, x.shape, x.chunks, letters, "sample_weight"
                )
            self.out_ind = letters
        else:  # rows: log_loss
            if x.ndim not in (1, 2):
                raise ValueError(f"y_proba must be 1-D or 2-D, got an array of shape {x.shape}")
            if x.ndim == 2 and x.numblocks[1] != 1:
                raise ValueError(
                    f"the class axis of y_proba ({x.shape[1]} columns) is split into "
                    f"{x.numblocks[1]} chunks; it must be one chunk: y_proba.rechunk({{1: -1}})"
                )
            if t.ndim != 1 or t.shape[0] != x.shape[0]:
                raise ValueError(
                    "Found input variables with inconsistent numbers of samples: "
                    f"{[x.shape[0], t.shape[0] if t.ndim else 1]}"
                )
            self.t, self.t_ind = t.rechunk(x.chunks[:1]), "a"
            self.sw, self.sw_ind = _aligned(
                sample_weight, x.shape[:1], x.chunks[:1], "a", "sample_weight"
            )
            self.sample_ind = "a"
            self.out_ind = "a"

    def block_index(self, index: tuple[int, ...], ind: str) -> tuple[int, ...]:
        """The block of an argument with index letters ``ind`` that goes with input block
        ``index``."""
        return tuple(index[self.x_ind.index(letter)] for letter in ind)

    def check_constant(self, value: Any, name: str) -> None:
        """A constant weight must not vary along an axis that is split into chunks."""
        if value is None:
            return
        shape = np.shape(value)
        x = self.x
        if len(shape) > x.ndim:
            raise ValueError(
                f"{name} of shape {shape} does not broadcast against the input's shape {x.shape}"
            )
        padded = (1,) * (x.ndim - len(shape)) + shape
        for i, extent in enumerate(padded):
            if extent != 1 and x.numblocks[i] > 1:
                hint = " (per-row weights go in sample_weight)" if i == 0 else ""
                raise ValueError(
                    f"{name} of shape {shape} varies along axis {i}, which the input splits "
                    f"into {x.numblocks[i]} chunks; rechunk that axis to one chunk{hint}"
                )


def _as_dask(value: Any, name: str, like: Any = None) -> Any:
    if isinstance(value, da.Array):
        _backend.refuse_masked(value._meta, name)  # blocks of numpy.ma arrays (dask.array.ma)
        return value
    array = _backend.to_ndarray(value, name)
    if like is not None and array.ndim >= 1 and array.shape[0] == like.shape[0]:
        return da.from_array(array, chunks=like.chunks[:1] + array.shape[1:])
    return da.from_array(array, chunks=array.shape or ())


def _known_chunks(x: Any, name: str) -> None:
    if any(math.isnan(c) for chunks in x.chunks for c in chunks):
        raise ValueError(
            f"the {name} has unknown chunk sizes; call .compute_chunk_sizes() on it first"
        )


def _normalize_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an input with {ndim} dimensions")
    return axis % ndim


def _aligned(
    value: Any, shape: tuple[int, ...], chunks: tuple[tuple[int, ...], ...], ind: str, name: str
) -> tuple[Any, str | None]:
    """``value`` as a dask array of ``shape`` with ``chunks`` (``None`` stays ``None``)."""
    if value is None:
        return None, None
    array = _as_dask(value, name)
    if array.shape != shape:
        raise ValueError(f"{name} of shape {array.shape} does not match the expected {shape}")
    _known_chunks(array, name)
    return array.rechunk(chunks), ind


def _result_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    if dtype.kind == "f":
        return dtype
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    raise TypeError(
        f"input must be a real floating (or integer) array, got dtype {dtype}; "
        "complex, object and string arrays are not supported"
    )


# ---------------------------------------------------------------------------------------------
# reduced losses: a tree of accumulators
# ---------------------------------------------------------------------------------------------


def _score_block(
    template: streaming.Accumulator, x: np.ndarray, t: np.ndarray, sw: np.ndarray | None
) -> streaming.Accumulator:
    acc = template.copy()
    acc.update(x, t, sw)
    return acc


def _merge(*accs: streaming.Accumulator) -> streaming.Accumulator:
    out = accs[0].copy()
    for acc in accs[1:]:
        out.merge(acc)
    return out


def _accumulate(template: streaming.Accumulator, layout: _Layout, split_every: int | None) -> Any:
    x_blocks = layout.x.to_delayed()
    t_blocks = layout.t.to_delayed()
    sw_blocks = None if layout.sw is None else layout.sw.to_delayed()
    score = dask.delayed(_score_block, pure=False)
    parts = []
    for index in np.ndindex(*layout.x.numblocks):
        t_block = t_blocks[layout.block_index(index, layout.t_ind)]
        sw_block = None
        if sw_blocks is not None:
            assert layout.sw_ind is not None
            sw_block = sw_blocks[layout.block_index(index, layout.sw_ind)]
        parts.append(score(template, x_blocks[index], t_block, sw_block))
    fan_in = max(2, int(split_every or 8))
    merge = dask.delayed(_merge, pure=False)
    if not parts:
        return dask.delayed(template.copy, pure=False)()
    while len(parts) > 1:
        parts = [merge(*parts[i : i + fan_in]) for i in range(0, len(parts), fan_in)]
    return parts[0]


def _as_scalar(acc: streaming.Accumulator, dtype: np.dtype[Any]) -> np.ndarray:
    return np.asarray(acc.result(), dtype=dtype)


def _denominator(acc: streaming.Accumulator) -> np.ndarray:
    return np.asarray(acc.denominator, dtype=np.float64)


def accumulate(
    accumulator: streaming.Accumulator,
    input: Any,
    target: Any,
    sample_weight: Any = None,
    *,
    split_every: int | None = None,
) -> Any:
    """Feeds every block of ``input`` (with its targets) to copies of ``accumulator``, merged.

    Parameters
    ----------
    accumulator : xent_rs.streaming.Accumulator
        A template (its options; usually empty). It is not modified.
    input, target, sample_weight : dask or NumPy arrays
        As ``accumulator.update`` takes them, for the whole data; the blocks of ``target``
        and ``sample_weight`` are aligned with the blocks of ``input``.
    split_every : int, optional
        How many accumulators one merge task combines (default 8).

    Returns
    -------
    dask.delayed.Delayed
        Computes to an accumulator holding every block: read its ``result()``,
        ``loss_sum``, ``denominator`` and ``count``, or merge it with others.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> from xent_rs.dask import accumulate
    >>> from xent_rs.streaming import NLLLossAccumulator
    >>> logp = da.from_array(np.log(np.full((6, 3), 1 / 3)), chunks=(2, 3))
    >>> acc = accumulate(NLLLossAccumulator(), logp, np.zeros(6, np.int64)).compute()
    >>> acc.count, round(acc.result(), 6)
    (6, 1.098612)
    """
    if isinstance(accumulator, streaming.LogLossAccumulator):
        kind, axis = "rows", None
    elif isinstance(accumulator, streaming._BinaryAccumulator):
        kind, axis = "binary", None
    elif isinstance(accumulator, streaming._ClassAccumulator):
        kind, axis = "class", accumulator.axis
    else:
        raise TypeError(f"expected a xent_rs.streaming accumulator, got {type(accumulator)}")
    layout = _Layout(input, target, sample_weight, kind=kind, axis=axis)
    for name in ("weight", "pos_weight"):
        if kind == "binary":
            layout.check_constant(getattr(accumulator, name, None), name)
    return _accumulate(accumulator, layout, split_every)


# ---------------------------------------------------------------------------------------------
# per-sample losses and gradients: blockwise
# ---------------------------------------------------------------------------------------------


def _block_call(
    x: np.ndarray,
    t: np.ndarray,
    *rest: Any,
    template: streaming.Accumulator,
    has_sw: bool,
    has_go: bool,
    has_den: bool,
    reduction: str,
    scale: float,
    want_grad: bool,
) -> np.ndarray:
    """One block: per-sample losses, or the gradient (``grad_output`` scaled for a mean)."""
    x, t = streaming._aligned(x), streaming._aligned(t)
    rest_list = [streaming._aligned(r) for r in rest]
    sw = rest_list.pop(0) if has_sw else None
    go = rest_list.pop(0) if has_go else None
    den = rest_list.pop(0) if has_den else None
    if want_grad and reduction != "none":
        if den is not None:
            d = float(den)
            scale = scale / d if d != 0.0 else 0.0
        reduction, go = "sum", scale
    assert isinstance(
        template,
        (streaming._ClassAccumulator, streaming._BinaryAccumulator, streaming.KLDivAccumulator),
    )
    spec = dataclasses.replace(template.spec, reduction=reduction, return_grad=want_grad)
    if isinstance(spec, _spec.KlDiv):
        result = _backend.kl_div(spec, x, t, go)
    elif isinstance(spec, _spec.ClassLoss):
        assert isinstance(template, streaming._ClassAccumulator)
        result = _backend.class_loss(spec, x, t, template.weight, sw, go, None)
    else:  # per-row (or full-shape) weights times ``weight``, multiplied in float64
        assert isinstance(template, streaming._BinaryAccumulator)
        w = _backend.element_weight(template.weight, sw, x.shape, _F64)
        result = _backend.binary_loss(spec, x, t, w, template.pos_weight, go)
    return np.asarray(result[1] if want_grad else result)


def _template_reduction(reduction: str, kl: bool) -> str:
    """The accumulator reduction for a call's ``reduction`` (``none`` sums no differently);
    a reduction the one-shot function refuses is its ``ValueError``."""
    checked = _spec.kl_div(reduction).reduction if kl else _spec.reduction(reduction)
    return "mean" if checked == "none" else checked


def _blockwise(
    template: streaming.Accumulator,
    layout: _Layout,
    *,
    want_grad: bool,
    reduction: str,
    grad_output: Any = None,
    denominator: Any = None,
) -> Any:
    x = layout.x
    dtype = _result_dtype(x.dtype)
    args: list[Any] = [x, layout.x_ind, layout.t, layout.t_ind]
    if layout.sw is not None:
        args += [layout.sw, layout.sw_ind]
    scale = 1.0
    has_go = False
    if want_grad and reduction == "none" and grad_output is not None:
        go_shape = tuple(x.shape[layout.x_ind.index(c)] for c in layout.out_ind)
        go_chunks = tuple(x.chunks[layout.x_ind.index(c)] for c in layout.out_ind)
        go, go_ind = _aligned(grad_output, go_shape, go_chunks, layout.out_ind, "grad_output")
        args += [go, go_ind]
        has_go = True
    elif want_grad and grad_output is not None:
        if np.ndim(grad_output) != 0:
            raise ValueError(
                f'grad_output must be a scalar for reduction "{reduction}", got shape '
                f"{np.shape(grad_output)}"
            )
        _backend.refuse_masked(grad_output, "grad_output")
        scale = float(grad_output)
    if denominator is not None:
        args += [denominator, ""]
    out_ind = layout.x_ind if want_grad else layout.out_ind
    return da.blockwise(
        _block_call,
        out_ind,
        *args,
        dtype=dtype,
        concatenate=True,
        meta=np.empty((0,) * len(out_ind), dtype=dtype),
        template=template,
        has_sw=layout.sw is not None,
        has_go=has_go,
        has_den=denominator is not None,
        reduction=reduction,
        scale=scale,
        want_grad=want_grad,
    )


# ---------------------------------------------------------------------------------------------
# the public functions
# ---------------------------------------------------------------------------------------------


def _loss(
    template: streaming.Accumulator,
    layout: _Layout,
    reduction: str,
    return_grad: bool,
    grad_output: Any,
    split_every: int | None,
) -> Any:
    dtype = _result_dtype(layout.x.dtype)
    if reduction == "none":
        losses = _blockwise(template, layout, want_grad=False, reduction="none")
        if not return_grad:
            return losses
        grad = _blockwise(
            template, layout, want_grad=True, reduction="none", grad_output=grad_output
        )
        return losses, grad
    acc = _accumulate(template, layout, split_every)
    loss = da.from_delayed(dask.delayed(_as_scalar, pure=False)(acc, dtype), shape=(), dtype=dtype)
    if not return_grad:
        return loss
    denominator = None
    if reduction == "mean":
        denominator = da.from_delayed(
            dask.delayed(_denominator, pure=False)(acc), shape=(), dtype=np.float64
        )
    grad = _blockwise(
        template,
        layout,
        want_grad=True,
        reduction=reduction,
        grad_output=grad_output,
        denominator=denominator,
    )
    return loss, grad


def _lazy(
    name: str, accumulator: type[streaming.Accumulator], kind: str, doc: str
) -> Callable[..., Any]:
    """The dask twin of the public function ``name``: its parameters (less ``grad_out``; plus
    per-row ``sample_weight`` for the element-wise losses, and ``split_every``), the options
    handed to ``accumulator``, which checks them (``_spec``) and scores the blocks."""
    public = inspect.signature(getattr(_functional, name))
    params = [p for p in public.parameters.values() if p.name != "grad_out"]
    kl = accumulator is streaming.KLDivAccumulator  # no weights at all
    if "sample_weight" not in public.parameters and not kl:
        at = [p.name for p in params].index("reduction")
        params.insert(at, inspect.Parameter("sample_weight", _KEYWORD, default=None))
    params.append(inspect.Parameter("split_every", _KEYWORD, default=None))
    signature = public.replace(parameters=params)
    options = [n for n in inspect.signature(accumulator).parameters if n != "reduction"]

    def lazy(*args: Any, **kwargs: Any) -> Any:
        call = signature.bind(*args, **kwargs)
        call.apply_defaults()
        given = call.arguments
        reduction = given["reduction"]
        template = accumulator(
            reduction=_template_reduction(reduction, kl), **{n: given[n] for n in options}
        )
        axis = template.axis if isinstance(template, streaming._ClassAccumulator) else None
        sample_weight = given.get("sample_weight")
        layout = _Layout(given["input"], given["target"], sample_weight, kind=kind, axis=axis)
        if layout.kind == "soft" and name != "cross_entropy":
            raise TypeError(f"{name} needs integer class indices, got dtype {layout.t.dtype}")
        for constant in ("weight", "pos_weight"):
            if kind == "binary":
                layout.check_constant(getattr(template, constant, None), constant)
        grad_output, return_grad = given["grad_output"], given["return_grad"]
        if reduction == "batchmean":  # blocks may split the rows' elements: sum, then divide
            rows = layout.x.shape[0] if layout.x.ndim else 1
            template = accumulator(reduction="sum", **{n: given[n] for n in options})
            scale = 1.0 if grad_output is None else float(grad_output)
            result = _loss(template, layout, "sum", return_grad, scale / rows, given["split_every"])
            return (result[0] / rows, result[1]) if return_grad else result / rows
        return _loss(template, layout, reduction, return_grad, grad_output, given["split_every"])

    lazy.__signature__ = signature  # type: ignore[attr-defined]
    lazy.__name__ = lazy.__qualname__ = name
    lazy.__module__ = __name__
    lazy.__doc__ = doc
    return lazy


cross_entropy = _lazy(
    "cross_entropy",
    streaming.CrossEntropyAccumulator,
    "class",
    """:func:`xent_rs.cross_entropy` on dask arrays, lazily.

    Parameters
    ----------
    input : dask.array.Array
        Logits; the class axis ``axis`` must be one chunk.
    target : dask.array.Array or array_like
        Class indices (the input's shape minus ``axis``) or class probabilities (the input's
        shape); rechunked to the input's chunks.
    axis, weight, sample_weight, ignore_index, reduction, label_smoothing, return_grad
        As in :func:`xent_rs.cross_entropy` (``weight`` is a NumPy constant).
    grad_output : float or array, optional
        A scalar for ``mean``/``sum``; an array of the loss's shape for ``none``.
    split_every : int, optional
        Fan-in of the tree that merges the block accumulators (default 8).

    Returns
    -------
    loss : dask.array.Array
        0-d (``mean``/``sum``, the input's float dtype) or per-sample losses with the input's
        chunks minus the class axis (``none``).
    grad : dask.array.Array
        Only with ``return_grad=True``: with the input's shape and chunks.

    Examples
    --------
    >>> import dask.array as da, numpy as np, xent_rs, xent_rs.dask
    >>> rng = np.random.default_rng(0)
    >>> logits, labels = rng.normal(size=(1000, 5)), rng.integers(0, 5, size=1000)
    >>> x = da.from_array(logits, chunks=(300, 5))
    >>> y = da.from_array(labels, chunks=250)
    >>> loss, grad = xent_rs.dask.cross_entropy(x, y, return_grad=True)
    >>> grad.chunks == x.chunks
    True
    >>> want = xent_rs.cross_entropy(logits, labels)
    >>> bool(np.isclose(loss.compute(), want, rtol=1e-12))
    True
    """,
)


nll_loss = _lazy(
    "nll_loss",
    streaming.NLLLossAccumulator,
    "class",
    """:func:`xent_rs.nll_loss` on dask arrays, lazily (see :func:`cross_entropy`).

    Examples
    --------
    >>> import dask.array as da, numpy as np, xent_rs.dask
    >>> logp = da.from_array(np.log([[0.25, 0.75], [0.5, 0.5]]), chunks=(1, 2))
    >>> xent_rs.dask.nll_loss(logp, np.array([1, 0]), reduction="none").compute()
    array([0.28768207, 0.69314718])
    """,
)


binary_cross_entropy = _lazy(
    "binary_cross_entropy",
    streaming.BinaryCrossEntropyAccumulator,
    "binary",
    """:func:`xent_rs.binary_cross_entropy` on dask arrays, lazily.

    ``weight`` is a NumPy constant broadcast against every block (it may not vary along an
    axis that is split into chunks); per-row weights are ``sample_weight``, shape ``(n,)`` (or
    the input's shape), which multiplies ``weight``. ``mean`` divides by the number of
    elements. Any chunking of the input works.

    Examples
    --------
    >>> import dask.array as da, numpy as np, xent_rs.dask
    >>> p = da.from_array(np.array([[0.5, 0.9], [0.2, 0.5]]), chunks=1)
    >>> loss = xent_rs.dask.binary_cross_entropy(p, np.array([[1.0, 1.0], [0.0, 0.0]]))
    >>> round(float(loss.compute()), 6)
    0.4287
    """,
)


binary_cross_entropy_with_logits = _lazy(
    "binary_cross_entropy_with_logits",
    streaming.BinaryCrossEntropyWithLogitsAccumulator,
    "binary",
    """:func:`xent_rs.binary_cross_entropy_with_logits` on dask arrays, lazily.

    ``weight`` and ``pos_weight`` are NumPy constants (see :func:`binary_cross_entropy`).

    Examples
    --------
    >>> import dask.array as da, numpy as np, xent_rs.dask
    >>> x = da.zeros((4, 3), chunks=(2, 3))
    >>> loss = xent_rs.dask.binary_cross_entropy_with_logits(x, da.ones((4, 3), chunks=2))
    >>> round(float(loss.compute()), 6)  # log(2)
    0.693147
    """,
)


focal_loss = _lazy(
    "focal_loss",
    streaming.FocalLossAccumulator,
    "class",
    """:func:`xent_rs.focal_loss` on dask arrays, lazily (see :func:`cross_entropy`).

    Examples
    --------
    >>> import dask.array as da, numpy as np, xent_rs, xent_rs.dask
    >>> logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> x = da.from_array(logits, chunks=(2, 2))
    >>> loss = xent_rs.dask.focal_loss(x, np.array([0, 1, 1]), gamma=2.0)
    >>> bool(np.isclose(loss.compute(), xent_rs.focal_loss(logits, np.array([0, 1, 1]))))
    True
    """,
)


binary_focal_loss_with_logits = _lazy(
    "binary_focal_loss_with_logits",
    streaming.BinaryFocalLossWithLogitsAccumulator,
    "binary",
    """:func:`xent_rs.binary_focal_loss_with_logits` on dask arrays, lazily.

    ``weight`` is a NumPy constant, per-row weights are ``sample_weight`` (see
    :func:`binary_cross_entropy`).

    Examples
    --------
    >>> import dask.array as da, numpy as np, xent_rs, xent_rs.dask
    >>> logits, y = np.array([[3.0, -1.0], [0.5, 2.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> loss = xent_rs.dask.binary_focal_loss_with_logits(da.from_array(logits, chunks=1), y)
    >>> bool(np.isclose(loss.compute(), xent_rs.binary_focal_loss_with_logits(logits, y)))
    True
    """,
)


kl_div = _lazy(
    "kl_div",
    streaming.KLDivAccumulator,
    "binary",
    """:func:`xent_rs.kl_div` on dask arrays, lazily; ``batchmean`` divides by the number of
    rows of the whole input.

    Examples
    --------
    >>> import dask.array as da, numpy as np, xent_rs.dask
    >>> logq = da.from_array(np.log([[0.9, 0.1], [0.5, 0.5]]), chunks=1)
    >>> p = np.array([[0.5, 0.5], [0.5, 0.5]])
    >>> round(float(xent_rs.dask.kl_div(logq, p, reduction="batchmean").compute()), 6)
    0.255413
    """,
)


def log_loss(
    y_true: Any,
    y_proba: Any,
    *,
    sample_weight: Any = None,
    labels: Any = None,
    normalize: bool = True,
    from_logits: bool = False,
    split_every: int | None = None,
) -> Any:
    """:func:`xent_rs.log_loss` (scikit-learn's) on dask arrays, lazily.

    The classes are fixed up front as in :class:`xent_rs.streaming.LogLossAccumulator`:
    ``labels=`` when given, else integer labels ``0 .. C-1`` from the columns of ``y_proba``
    (whose columns must be one chunk). Each block gets scikit-learn's checks and clipping.

    Returns
    -------
    dask.array.Array
        A 0-d float64 array.

    Examples
    --------
    >>> import dask.array as da, numpy as np, xent_rs.dask
    >>> p = da.from_array(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), chunks=(2, 2))
    >>> round(float(xent_rs.dask.log_loss(np.array([0, 1, 1]), p).compute()), 6)
    0.414932
    """
    template = streaming.LogLossAccumulator(labels, normalize=normalize, from_logits=from_logits)
    layout = _Layout(y_proba, y_true, sample_weight, kind="rows")
    x = layout.x
    columns = 2 if x.ndim == 1 or x.shape[1] == 1 else x.shape[1]
    if template.labels is not None and template.labels.shape[0] != columns:
        raise ValueError(
            "The number of classes in labels is different from that in y_prob. Classes found "
            f"in labels: {template.labels}"
        )
    acc = _accumulate(template, layout, split_every)
    return da.from_delayed(
        dask.delayed(_as_scalar, pure=False)(acc, np.dtype(np.float64)),
        shape=(),
        dtype=np.float64,
    )
