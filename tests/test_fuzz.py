"""Fuzzing the whole public API with hypothesis.

Valid calls: random combinations of every keyword of every public function (and of the
streaming accumulators), on shapes with empty dimensions, every accepted input dtype (float16,
float32, float64, integers and booleans), every layout (C, Fortran, strided, negative strides,
offset views, read-only, big-endian, unaligned, nested lists) and every class axis, compared
with the float64 reference of ``tests/reference.py`` (scikit-learn's formula for ``log_loss``)
within tolerances set by the result's dtype; small inputs mostly, and a few of 32 768 to
300 000 elements (the thread pool, long rows).

Invalid calls: one mutation of a valid call at a time (bad shapes, dtypes, axes, reductions,
out-of-range targets, wrong weights or output buffers, ...), run in batches in a child process
(``tests/_fuzz_worker.py``) so that a crash or a hang fails the test instead of killing the
session. Each must raise the SPEC's exception (TypeError, ValueError or IndexError) with a
message, and leave ``out=`` / ``grad_out=`` buffers and accumulators untouched.

The number of examples follows the hypothesis profile of tests/conftest.py: five times its
``max_examples`` for each valid-call test (profile ``xent``, the default: 250, about 30 s for
the file; ``--hypothesis-profile=xent-thorough``: 2500), and one batch of 40-80 invalid calls
per 25 of those. ``XENT_RS_FUZZ_EXAMPLES=N`` sets the examples of each valid-call test
directly. See the README's Development section.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import pickle
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import numpy as np
import numpy.typing as npt
import pytest
import reference as ref
from _fuzz_worker import LAYOUTS, Arr, Call, Overlap, SameAs, relayout
from conftest import TESTS_DIR, assert_golden_close, assert_same_bits
from hypothesis import given, note, settings
from hypothesis.extra import numpy as hnp
from test_layouts import F16_RTOL
from test_properties import ATOL, ATOL32, RTOL, RTOL32, broadcast_to_shape, finite

xent_rs = pytest.importorskip("xent_rs")

#: float16 results beyond float16's range become inf (see _in_range_of); NumPy's cast in
#: xent_rs._functional says so with a RuntimeWarning each time
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

Array = npt.NDArray[Any]
Kwargs = dict[str, Any]

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
REDUCTIONS = ("none", "mean", "sum")
FLOAT_DTYPES = (np.float16, np.float32, np.float64)
#: every input dtype the functions accept (integers and booleans are read as float64)
INPUT_DTYPES = (*FLOAT_DTYPES, np.int8, np.int32, np.int64, np.uint8, np.bool_)
TARGET_DTYPES = tuple(np.dtype(d) for d in "bhilqBHILQ")
#: dtypes of weights, sample weights, grad_output, soft and binary targets
AUX_DTYPES = (np.float64, np.float32, np.float16, np.int64)
ALL_LAYOUTS = tuple(LAYOUTS)
#: log_loss and LogLossAccumulator: big-endian and unaligned inputs are a known open bug
#: being fixed separately (masked arrays too, which no strategy here makes)
LOG_LOSS_LAYOUTS = tuple(name for name in LAYOUTS if name not in ("bigendian", "misaligned"))
#: integer labels of log_loss / LogLossAccumulator: non-contiguous ones are refused (a bug,
#: see test_log_loss_non_contiguous_integer_labels), so the strategies keep them contiguous
INT_LABEL_LAYOUTS = tuple(name for name in LOG_LOSS_LAYOUTS if name not in ("strided", "negstride"))


# --------------------------------------------------------------------------------------------
# example counts
# --------------------------------------------------------------------------------------------


def _examples(weight: float = 1.0) -> int:
    """Examples for one test: ``XENT_RS_FUZZ_EXAMPLES``, else five times the profile's count
    (profile ``xent``: 50, so 250; ``xent-thorough``: 500, so 2500), times ``weight``."""
    env = os.environ.get("XENT_RS_FUZZ_EXAMPLES")
    base = int(env) if env else 5 * settings.default.max_examples
    return max(1, round(base * weight))


def fuzz(weight: float = 1.0) -> Callable[[Any], Any]:
    return settings(max_examples=_examples(weight))


# --------------------------------------------------------------------------------------------
# strategies: shapes, values, layouts
# --------------------------------------------------------------------------------------------


@st.composite
def shapes(
    draw: st.DrawFn, *, min_dims: int = 1, max_dims: int = 4, max_side: int = 5, empty: bool = True
) -> tuple[int, ...]:
    """Small shapes (at most 240 elements); about one in six has an empty dimension."""
    shape = draw(
        hnp.array_shapes(
            min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side
        ).filter(lambda s: math.prod(s) <= 240)
    )
    if empty and shape and draw(st.integers(0, 5)) == 0:
        i = draw(st.integers(0, len(shape) - 1))
        shape = (*shape[:i], 0, *shape[i + 1 :])
    return shape


@st.composite
def big_shapes(draw: st.DrawFn) -> tuple[int, ...]:
    """Shapes of 32 768 to about 300 000 elements (past the size that runs on the thread
    pool), with few or many classes along some axis."""
    c = draw(st.sampled_from([1, 2, 3, 7, 16, 33, 100, 1000, 4099, 70_001]))
    rest = -(-draw(st.integers(32_768, 300_000)) // c)  # rounded up
    ndim = draw(st.integers(1, 3)) if rest > 1 else 1
    if ndim == 1:
        return (c * rest,)
    a = draw(st.integers(1, max(1, math.isqrt(rest))))
    other = (a, -(-rest // a)) if ndim == 3 else (rest,)
    pos = draw(st.integers(0, len(other)))
    return (*other[:pos], c, *other[pos:])


SPECIALS = st.sampled_from([np.inf, -np.inf, np.nan])


#: arrays larger than this are drawn from a seeded NumPy generator (hypothesis draws each
#: element, which is slow for the large-input tests)
BIG = 4096


@st.composite
def values(
    draw: st.DrawFn,
    dtype: Any,
    shape: tuple[int, ...],
    lo: float,
    hi: float,
    *,
    specials: bool = False,
    exact: tuple[float, ...] = (),
) -> Array:
    """A C-ordered array of ``dtype``: floats in [lo, hi] (plus ``exact`` values, and inf/nan
    with ``specials``), integers in [lo, hi] clipped to the dtype, or booleans."""
    dt = np.dtype(dtype)
    if math.prod(shape) > BIG:
        return _big_values(draw, dt, shape, lo, hi, specials, exact)
    if dt.kind == "b":
        return draw(hnp.arrays(np.bool_, shape))
    if dt.kind in "iu":
        info = np.iinfo(dt)
        elements = st.integers(max(math.ceil(lo), int(info.min)), min(math.floor(hi), info.max))
        return draw(hnp.arrays(dt, shape, elements=elements))
    el: st.SearchStrategy[float] = finite(lo, hi)
    if exact:
        el = st.one_of(el, st.sampled_from(exact))
    if specials:
        el = st.one_of(el, el, el, SPECIALS)
    return draw(hnp.arrays(np.float64, shape, elements=el)).astype(dt)


def _big_values(
    draw: st.DrawFn,
    dt: np.dtype[Any],
    shape: tuple[int, ...],
    lo: float,
    hi: float,
    specials: bool,
    exact: tuple[float, ...],
) -> Array:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="values seed"))
    if dt.kind == "b":
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        a, b = max(math.ceil(lo), int(info.min)), min(math.floor(hi), int(info.max))
        return rng.integers(a, b, size=shape, endpoint=True).astype(dt)
    out = rng.uniform(lo, hi, shape)
    extra = (*exact, *((np.inf, -np.inf, np.nan) if specials else ()))
    if extra and out.size:
        where = rng.random(shape) < 0.05
        out[where] = rng.choice(np.array(extra, dtype=np.float64), size=int(where.sum()))
    return out.astype(dt)


def _without(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    ax = axis % len(shape)
    return shape[:ax] + shape[ax + 1 :]


def result_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype of results for an input of ``dtype`` (native byte order)."""
    if dtype.kind == "f":
        return np.dtype(f"f{dtype.itemsize}")
    return F64


def as_work(rkw: Kwargs, input_dtype: np.dtype[Any], names: tuple[str, ...]) -> Kwargs:
    """The reference's keyword arrays ``names`` as the core reads them: converted to the
    working dtype of the input (float32 for float16; docs/semantics.md, Dtypes), so that
    e.g. a soft target of 1e-77 is 0 for a float32 input in the reference too."""
    rdt = result_dtype(input_dtype)
    work = F32 if rdt == F16 else rdt
    return {
        k: (np.asarray(v).astype(work) if k in names and v is not None else v)
        for k, v in rkw.items()
    }


class Placer:
    """Hands values over in random layouts, and remembers what it did (for ``note``)."""

    def __init__(self, draw: st.DrawFn, layouts: tuple[str, ...] = ALL_LAYOUTS) -> None:
        self.draw = draw
        self.layouts = layouts
        self.log: list[str] = []

    def __call__(self, name: str, a: Array, layouts: tuple[str, ...] | None = None) -> Any:
        layout = self.draw(st.sampled_from(layouts or self.layouts), label=f"layout of {name}")
        self.log.append(f"{name}: {a.dtype} {a.shape} {layout}")
        return relayout(a, layout)


def _magnitude(*arrays: Any) -> float:
    """The product of max(1, max|finite value|) over ``arrays`` (None skipped)."""
    scale = 1.0
    for a in arrays:
        if a is None:
            continue
        v = np.abs(np.asarray(a, dtype=np.float64))
        v = v[np.isfinite(v)]
        scale *= max(1.0, float(v.max(initial=0.0)))
    return scale


def tolerance(dtype: np.dtype[Any], scale: float, terms: int = 1) -> tuple[float, float]:
    """(rtol, atol) for a result of ``dtype`` against the float64 reference.

    Per-element terms are computed in the working precision (float32 for float16), so a
    result that is a small difference of large terms carries an absolute error of a few ulps
    of its largest term: ``atol`` scales with the magnitude ``scale`` of the inputs and
    weights (as in test_properties), and with the number of ``terms`` a sum adds up. float16
    results are then rounded to float16 (F16_RTOL, as in test_layouts).
    """
    terms = max(terms, 1)
    if dtype == F64:
        return RTOL, ATOL * scale * terms
    if dtype == F32:
        return RTOL32, ATOL32 * scale * terms
    return F16_RTOL, ATOL32 * scale * terms + 1e-7


def _copies(objs: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for k, v in objs.items()
    }


def _assert_unchanged(
    objs: dict[str, Any], before: dict[str, Any], skip: tuple[str, ...] = ()
) -> None:
    for k, v in objs.items():
        if k in skip or not isinstance(v, np.ndarray):
            continue
        assert np.array_equal(v, before[k], equal_nan=v.dtype.kind == "f"), f"{k} was modified"


def _in_range_of(want: Any, dtype: np.dtype[Any]) -> Array:
    """The reference, with values beyond ``dtype``'s range as the infinities they become
    (a float16 BCE gradient of -1e12 is -inf)."""
    w = np.asarray(want, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(np.abs(w) > np.finfo(dtype).max, w.astype(dtype), w)


def _check_loss(
    loss: Any, want: Any, dtype: np.dtype[Any], reduction: str, shape: tuple[int, ...], tol: Any
) -> None:
    assert np.asarray(loss).dtype == dtype, f"loss dtype {np.asarray(loss).dtype} != {dtype}"
    if reduction == "none":
        assert np.shape(loss) == shape, f"loss shape {np.shape(loss)} != {shape}"
    else:
        assert isinstance(loss, np.generic), f"a reduced loss is a NumPy scalar, got {type(loss)}"
    assert_golden_close(loss, _in_range_of(want, dtype), *tol, what="loss")


def _check_grad(grad: Any, want: Array, dtype: np.dtype[Any], tol: Any) -> None:
    assert isinstance(grad, np.ndarray)
    assert grad.dtype == dtype, f"grad dtype {grad.dtype} != {dtype}"
    assert grad.shape == want.shape
    assert_golden_close(grad, _in_range_of(want, dtype), *tol, grad=True, what="grad")


# --------------------------------------------------------------------------------------------
# keyword strategies shared by the losses
# --------------------------------------------------------------------------------------------


def weights(draw: st.DrawFn, shape: tuple[int, ...], lo: float, hi: float) -> Array:
    """Non-negative weights of an aux dtype: zeros, or values in [lo, hi]."""
    dt = draw(st.sampled_from(AUX_DTYPES))
    if np.dtype(dt).kind in "iu":
        return draw(values(dt, shape, 0, 3))
    return draw(values(dt, shape, lo, hi, exact=(0.0,)))


def _draw_reduction(draw: st.DrawFn, kw: Kwargs, rkw: Kwargs) -> str:
    """A reduction for the call's keywords ``kw`` (often left out when it is the default
    'mean') and for the reference's ``rkw``."""
    reduction = draw(st.sampled_from(REDUCTIONS))
    if reduction != "mean" or draw(st.booleans()):
        kw["reduction"] = reduction
    rkw["reduction"] = reduction
    return str(reduction)


def upstream(draw: st.DrawFn, reduction: str, shape: tuple[int, ...], place: Placer) -> Any:
    """A grad_output of any accepted form: scalars (Python, NumPy, 0-d arrays) for reduced
    losses, an array of the loss's shape for 'none'."""
    if reduction == "none":
        dt = draw(st.sampled_from(AUX_DTYPES))
        lo = 0 if np.dtype(dt).kind in "iu" else -2.0
        return place("grad_output", draw(values(dt, shape, lo, 2.0)))
    g = draw(finite(-2.0, 2.0))
    form = draw(st.sampled_from(["float", "int", "np64", "np32", "0-d"]))
    if form == "int":
        return round(g)
    if form == "np64":
        return np.float64(g)
    if form == "np32":
        return np.float32(g)
    if form == "0-d":
        return np.array(g)
    return g


def grad_out_for(draw: st.DrawFn, x_call: Any, x_raw: Array) -> tuple[Any, str]:
    """A grad_out: none, a fresh buffer, or the input itself where it may be (a writable,
    C-contiguous, aligned array of a float dtype in native order)."""
    rdt = result_dtype(x_raw.dtype)
    choices = ["none", "fresh"]
    if (
        isinstance(x_call, np.ndarray)
        and x_call.dtype == rdt
        and x_call.flags.c_contiguous
        and x_call.flags.aligned
        and x_call.flags.writeable
    ):
        choices.append("input")
    kind = draw(st.sampled_from(choices))
    if kind == "fresh":
        return np.full(x_raw.shape, np.nan, dtype=rdt), kind
    if kind == "input":
        return x_call, kind
    return None, kind


def ignore_index_for(draw: st.DrawFn, c: int, tdt: np.dtype[Any], soft: bool) -> int:
    if soft:
        return int(draw(st.sampled_from([-100, -1, -(2**63)])))
    info = np.iinfo(tdt)
    special = [-100, -1, 0, 1, max(c - 1, 0), c, min(int(info.max), 2**63 - 1), -(2**63)]
    return int(draw(st.one_of(st.sampled_from(special), st.integers(-(2**63), 2**63 - 1))))


def _int_form(draw: st.DrawFn, value: int) -> Any:
    """An integer as a Python int or a NumPy integer scalar."""
    form = draw(st.sampled_from(["int", "np64", "np32"]))
    if form == "np64":
        return np.int64(value)
    if form == "np32" and -(2**31) <= value < 2**31:
        return np.int32(value)
    return value


# --------------------------------------------------------------------------------------------
# valid calls: the softmax family
# --------------------------------------------------------------------------------------------


@fuzz()
@given(data=st.data(), op=st.sampled_from(["log_softmax", "softmax", "logsumexp"]))
def test_fuzz_softmax_family(data: Any, op: str) -> None:
    check_softmax_family(data.draw, op, big=False)


def check_softmax_family(draw: st.DrawFn, op: str, big: bool) -> None:
    """One valid call of ``op`` (every keyword drawn) against the reference."""
    place = Placer(draw)
    dtype = np.dtype(draw(st.sampled_from(INPUT_DTYPES)))
    shape = draw(big_shapes() if big else shapes())
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    lim = 10.0 if dtype == F16 else 30.0
    specials = dtype.kind == "f" and draw(st.integers(0, 3)) == 0
    x_raw = draw(values(dtype, shape, -lim, lim, specials=specials))
    x = place("x", x_raw)
    kw: Kwargs = {}
    if axis != -1 or draw(st.booleans()):
        kw["axis"] = _int_form(draw, axis)
    rdt = result_dtype(dtype)
    out_kind = "none"
    if op == "logsumexp":
        keepdims = draw(st.booleans())
        if keepdims or draw(st.booleans()):
            kw["keepdims"] = keepdims
    else:
        out, out_kind = grad_out_for(draw, x, x_raw)
        if out is not None:
            kw["out"] = out
    note(f"{op}(x, **{ {k: v for k, v in kw.items() if k != 'out'} }) out={out_kind}; {place.log}")
    before = _copies({"x": x})
    want = getattr(ref, op)(
        x_raw, axis=axis, **({"keepdims": kw.get("keepdims", False)} if op == "logsumexp" else {})
    )
    tol = tolerance(rdt, _magnitude(x_raw))  # (before out= may overwrite x_raw)
    got = getattr(xent_rs, op)(x, **kw)
    if out_kind != "none":
        assert got is kw["out"]
    if out_kind != "input":
        _assert_unchanged({"x": x}, before)
    assert np.asarray(got).dtype == rdt
    if op == "logsumexp" and np.ndim(want) == 0:
        assert isinstance(got, np.generic), f"1-D logsumexp is a NumPy scalar, got {type(got)}"
    else:
        assert isinstance(got, np.ndarray)
    assert np.shape(got) == np.shape(want)
    assert_golden_close(got, want, *tol, what=op)


@fuzz(0.5)
@given(data=st.data(), op=st.sampled_from(["log_softmax", "softmax"]))
def test_fuzz_softmax_backward(data: Any, op: str) -> None:
    draw = data.draw
    place = Placer(draw)
    dtype = np.dtype(draw(st.sampled_from(INPUT_DTYPES)))
    shape = draw(shapes())
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    logits = draw(values(F64, shape, -10.0, 10.0))
    fwd = getattr(ref, op)(logits, axis=axis)
    y_raw = fwd.astype(dtype) if dtype.kind == "f" else draw(values(dtype, shape, -3, 3))
    g_raw = draw(values(draw(st.sampled_from(AUX_DTYPES)), shape, -3.0, 3.0))
    y, g = place("output", y_raw), place("grad_output", g_raw)
    kw: Kwargs = {"axis": axis} if axis != -1 or draw(st.booleans()) else {}
    note(f"{op}_backward(g, y, **{kw}); {place.log}")
    before = _copies({"g": g, "y": y})
    got = getattr(xent_rs, f"{op}_backward")(g, y, **kw)
    _assert_unchanged({"g": g, "y": y}, before)
    rdt = result_dtype(dtype)
    # the core reads grad_output in the output's dtype: compare with that rounding of it
    g_work = np.asarray(g_raw, dtype=F32 if rdt == F16 else rdt)
    want = getattr(ref, f"{op}_backward")(g_work, y_raw, axis=axis)
    c = shape[axis] if shape else 1
    scale = _magnitude(g_raw) * _magnitude(y_raw) * max(c, 1)
    assert isinstance(got, np.ndarray)
    _check_grad(got, want, rdt, tolerance(rdt, scale))


# --------------------------------------------------------------------------------------------
# valid calls: cross_entropy and nll_loss
# --------------------------------------------------------------------------------------------


@st.composite
def multiclass_call(draw: st.DrawFn, op: str, soft: bool, big: bool = False) -> dict[str, Any]:
    """A valid call of ``op`` with every keyword drawn, its reference arguments, and what
    the comparison needs (``big``: tens of thousands of elements and more)."""
    place = Placer(draw)
    dtype = np.dtype(draw(st.sampled_from(INPUT_DTYPES)))
    shape = draw(big_shapes() if big else shapes())
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    if soft and shape[axis] == 0:
        # soft targets with no classes: a known open bug (nan instead of 0), fixed elsewhere
        shape = (*shape[: axis % len(shape)], 1, *shape[axis % len(shape) + 1 :])
    c = shape[axis]
    sample_shape = _without(shape, axis)
    if op == "nll_loss":
        lo, hi = (-10.0, 0.0) if dtype == F16 else (-30.0, 0.0)
    else:
        lo, hi = (-10.0, 10.0) if dtype == F16 else (-20.0, 20.0)
    specials = dtype.kind == "f" and draw(st.integers(0, 5)) == 0
    x_raw = draw(values(dtype, shape, lo, hi, specials=specials))
    kw: Kwargs = {}
    rkw: Kwargs = {"axis": axis}
    if axis != -1 or draw(st.booleans()):
        kw["axis"] = _int_form(draw, axis)

    if soft:
        tdt = np.dtype(draw(st.sampled_from(FLOAT_DTYPES)))
        t_raw = draw(values(F64, shape, 0.0, 1.0))
        if draw(st.booleans()):  # class probabilities; else any non-negative values
            t_raw = (t_raw + 1e-3) / (t_raw + 1e-3).sum(axis=axis, keepdims=True)
        t_raw = t_raw.astype(tdt)
        ii = ignore_index_for(draw, c, tdt, soft=True)
    else:
        tdt = draw(st.sampled_from([d for d in TARGET_DTYPES if np.iinfo(d).max >= c - 1]))
        ii = ignore_index_for(draw, c, tdt, soft=False)
        info = np.iinfo(tdt)
        representable = info.min <= ii <= info.max
        if c == 0 and not representable:  # every target must be ignored
            ii = -100 if tdt.kind == "i" else min(int(info.max), 2**63 - 1)
            representable = True
        t64 = draw(values(np.int64, sample_shape, 0, max(c - 1, 0)))
        if representable:
            drop = draw(values(np.bool_, sample_shape, 0, 1))
            if c == 0:
                drop[...] = True
            t64 = np.where(drop, ii, t64)
        t_raw = np.asarray(t64).astype(tdt)
    if ii != -100 or draw(st.booleans()):
        kw["ignore_index"] = _int_form(draw, ii)
    rkw["ignore_index"] = ii

    reduction = _draw_reduction(draw, kw, rkw)
    w_raw = sw_raw = None
    if draw(st.booleans()):
        w_raw = weights(draw, (c,), 0.1, 3.0)
        kw["weight"] = place("weight", w_raw)
        rkw["weight"] = w_raw
    if draw(st.booleans()):
        sw_raw = weights(draw, sample_shape, 0.1, 2.0)
        kw["sample_weight"] = place("sample_weight", sw_raw)
        rkw["sample_weight"] = sw_raw
    if op == "cross_entropy" and draw(st.booleans()):
        # (not below 1e-6: an epsilon that float32 rounds to 0 turns the inf loss of a -inf
        # target logit into 0 * inf = nan, as torch's float32 arithmetic does)
        ls = draw(st.one_of(finite(1e-6, 1.0), st.sampled_from([0.0, 1.0, 0.1])))
        form = draw(st.sampled_from(["float", "np32", "int"]))
        if form == "np32":
            ls = np.float32(ls)
        elif form == "int":
            ls = int(ls >= 0.5)
        kw["label_smoothing"] = ls
        rkw["label_smoothing"] = float(ls)

    return_grad = draw(st.booleans())
    x = place("x", x_raw)
    t = place("target", t_raw)
    grad_out_kind = "none"
    if return_grad:
        kw["return_grad"] = True
        if draw(st.booleans()):
            g = upstream(draw, reduction, sample_shape, place)
            kw["grad_output"] = g
            rkw["grad_output"] = np.asarray(g, dtype=np.float64)
        if op == "cross_entropy":
            buf, grad_out_kind = grad_out_for(draw, x, x_raw)
            if buf is not None:
                kw["grad_out"] = buf
    elif draw(st.integers(0, 3)) == 0:
        kw["return_grad"] = False
    rkw = as_work(rkw, dtype, ("weight", "sample_weight", "grad_output"))
    t_ref = as_work({"t": t_raw}, dtype, ("t",) if soft else ())["t"]  # soft: converted
    return {
        "op": op, "x": x, "t": t, "kw": kw, "x_raw": x_raw, "t_raw": t_ref, "rkw": rkw,
        "sample_shape": sample_shape, "grad_out": grad_out_kind, "log": place.log,
        "scale": _magnitude(x_raw) * _magnitude(w_raw) * _magnitude(sw_raw)
        * (1.0 if op == "nll_loss" else max(1.0, math.log(max(c, 1)) + 1.0)),
    }  # fmt: skip


def check_loss_call(case: dict[str, Any]) -> None:
    """Runs one valid loss call (without and with the gradient) against the reference."""
    op, x, t, kw = case["op"], case["x"], case["t"], case["kw"]
    fn = getattr(xent_rs, op)
    shown = {
        k: (f"<{type(v).__name__}>" if isinstance(v, np.ndarray) else v) for k, v in kw.items()
    }
    note(f"{op}(x, t, **{shown}); grad_out={case['grad_out']}; {case['log']}")
    args = {"x": x, "t": t, **{k: v for k, v in kw.items() if k != "grad_out"}}
    before = _copies(args)
    reduction = case["rkw"]["reduction"]
    with np.errstate(all="ignore"):
        want_loss, want_grad = ref.LOSSES[op](case["x_raw"], case["t_raw"], **case["rkw"])
    rdt = result_dtype(case["x_raw"].dtype)
    n = max(1, math.prod(case["sample_shape"]))
    tol_loss = tolerance(rdt, case["scale"], n if reduction == "sum" else 1)
    tol_grad = tolerance(rdt, case["scale"])
    plain = {k: v for k, v in kw.items() if k not in ("return_grad", "grad_output", "grad_out")}
    loss = fn(x, t, **plain)
    _check_loss(loss, want_loss, rdt, reduction, case["sample_shape"], tol_loss)
    if kw.get("return_grad"):
        res = fn(x, t, **kw)
        assert isinstance(res, tuple) and len(res) == 2
        loss2, grad = res
        assert_same_bits(loss2, loss, what="loss with and without return_grad")
        if "grad_out" in kw:
            assert grad is kw["grad_out"], "grad_out= is returned as grad"
        _check_grad(grad, want_grad, rdt, tol_grad)
    elif "return_grad" in kw:
        assert_same_bits(fn(x, t, **kw), loss, what="return_grad=False")
    _assert_unchanged(args, before, skip=("x",) if case["grad_out"] == "input" else ())


@fuzz()
@given(case=multiclass_call("cross_entropy", soft=False))
def test_fuzz_cross_entropy_hard(case: dict[str, Any]) -> None:
    check_loss_call(case)


@fuzz()
@given(case=multiclass_call("cross_entropy", soft=True))
def test_fuzz_cross_entropy_soft(case: dict[str, Any]) -> None:
    check_loss_call(case)


@fuzz()
@given(case=multiclass_call("nll_loss", soft=False))
def test_fuzz_nll_loss(case: dict[str, Any]) -> None:
    check_loss_call(case)


# --------------------------------------------------------------------------------------------
# valid calls: binary cross entropy (probabilities and logits)
# --------------------------------------------------------------------------------------------


@st.composite
def broadcastable(draw: st.DrawFn, shape: tuple[int, ...], lo: float, hi: float) -> Array:
    """Weights that broadcast against ``shape``: a scalar, trailing dimensions, 1s anywhere."""
    wshape = draw(broadcast_to_shape(shape))
    return weights(draw, wshape, lo, hi)


@st.composite
def binary_call(draw: st.DrawFn, op: str, big: bool = False) -> dict[str, Any]:
    place = Placer(draw)
    logits = op == "binary_cross_entropy_with_logits"
    dtype = np.dtype(draw(st.sampled_from(INPUT_DTYPES)))
    shape = draw(big_shapes() if big else shapes(min_dims=0))
    if logits:
        lim = 10.0 if dtype == F16 else 40.0
        specials = dtype.kind == "f" and draw(st.integers(0, 5)) == 0
        x_raw = draw(values(dtype, shape, -lim, lim, specials=specials))
    elif dtype.kind in "iub":
        x_raw = draw(values(dtype, shape, 0, 1))
    else:
        x_raw = draw(values(dtype, shape, 0.0, 1.0, exact=(0.0, 1.0, 1e-30, 0.5)))
    tdt = draw(st.sampled_from(AUX_DTYPES))
    if np.dtype(tdt).kind in "iu":
        y_raw = draw(values(tdt, shape, 0, 1))
    else:
        y_raw = draw(values(tdt, shape, 0.0, 1.0, exact=(0.0, 1.0)))
        if not logits:  # (p = 1 with a fractional target: the same cancellation bug)
            y_raw = np.where(x_raw == 1, np.round(y_raw), y_raw).astype(y_raw.dtype)
    kw: Kwargs = {}
    rkw: Kwargs = {}
    reduction = _draw_reduction(draw, kw, rkw)
    w_raw = pw_raw = None
    if draw(st.booleans()):
        w_raw = draw(broadcastable(shape, 0.1, 3.0))
        kw["weight"] = (
            float(w_raw) if w_raw.ndim == 0 and draw(st.booleans()) else place("weight", w_raw)
        )
        rkw["weight"] = w_raw
    if logits and draw(st.booleans()):
        pw_raw = draw(broadcastable(shape, 0.1, 5.0))
        kw["pos_weight"] = place("pos_weight", pw_raw)
        rkw["pos_weight"] = pw_raw
    x = place("x", x_raw)
    t = place("target", y_raw)
    if draw(st.booleans()):
        kw["return_grad"] = True
        if draw(st.booleans()):
            g = upstream(draw, reduction, shape, place)
            kw["grad_output"] = g
            rkw["grad_output"] = np.asarray(g, dtype=np.float64)
    scale = _magnitude(x_raw if logits else None) * _magnitude(w_raw) * _magnitude(pw_raw)
    rkw = as_work(rkw, dtype, ("weight", "pos_weight", "grad_output"))
    y_ref = as_work({"t": y_raw}, dtype, ("t",))["t"]
    return {
        "op": op, "x": x, "t": t, "kw": kw, "x_raw": x_raw, "t_raw": y_ref, "rkw": rkw,
        "sample_shape": shape, "grad_out": "none", "log": place.log, "scale": scale,
    }  # fmt: skip


@fuzz()
@given(case=binary_call("binary_cross_entropy"))
def test_fuzz_binary_cross_entropy(case: dict[str, Any]) -> None:
    check_loss_call(case)


@fuzz()
@given(case=binary_call("binary_cross_entropy_with_logits"))
def test_fuzz_binary_cross_entropy_with_logits(case: dict[str, Any]) -> None:
    check_loss_call(case)


LARGE_CASES = {
    "cross_entropy": lambda: multiclass_call("cross_entropy", soft=False, big=True),
    "cross_entropy_soft": lambda: multiclass_call("cross_entropy", soft=True, big=True),
    "nll_loss": lambda: multiclass_call("nll_loss", soft=False, big=True),
    "binary_cross_entropy": lambda: binary_call("binary_cross_entropy", big=True),
    "binary_cross_entropy_with_logits": lambda: binary_call(
        "binary_cross_entropy_with_logits", big=True
    ),
}


@pytest.mark.parametrize(
    "name", [*sorted(LARGE_CASES), "log_softmax", "softmax", "logsumexp", "log_loss"]
)
@fuzz(0.05)
@given(data=st.data())
def test_fuzz_large_inputs(name: str, data: Any) -> None:
    """The same calls on inputs that run on the thread pool, with long rows and many rows."""
    if name in LARGE_CASES:
        case = data.draw(LARGE_CASES[name]())
        assert case["x_raw"].size >= 32_768
        check_loss_call(case)
    elif name == "log_loss":
        case = data.draw(log_loss_call(big=True))
        assert case["p_raw"].size >= 32_768
        check_log_loss_call(case, alias=data.draw(st.booleans()))
    else:
        check_softmax_family(data.draw, name, big=True)


# --------------------------------------------------------------------------------------------
# valid calls: log_loss (scikit-learn's semantics)
# --------------------------------------------------------------------------------------------


def ref_log_loss(
    y: Any,
    p: Array,
    *,
    eps: float,
    sample_weight: Array | None = None,
    labels: Any = None,
    normalize: bool = True,
    from_logits: bool = False,
) -> float:
    """scikit-learn's log_loss in float64 (clipping at ``eps``), or the log-softmax /
    log-sigmoid of logits; the reference for ``xent_rs.log_loss``."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    n = p.shape[0]
    if y.ndim == 2:
        onehot = y.astype(np.float64)
        if onehot.shape[1] == 1:
            onehot = np.concatenate([1 - onehot, onehot], axis=1)
    else:
        classes = np.unique(np.asarray(labels) if labels is not None else y)
        codes = np.searchsorted(classes, y)
        columns = 2 if p.ndim == 1 else p.shape[1]
        onehot = (codes[:, None] == np.arange(columns)).astype(np.float64)
    if from_logits:
        if p.ndim == 1:
            per, _ = ref.binary_cross_entropy_with_logits(p, onehot[:, 1], reduction="none")
        else:
            per = -(onehot * ref.log_softmax(p, axis=-1)).sum(axis=1)
    else:
        full = np.stack([1 - p, p], axis=1) if p.ndim == 1 else p
        per = -(onehot * np.log(np.clip(full, eps, 1 - eps))).sum(axis=1)
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    total = float(np.sum(per * sw))
    return total / float(np.sum(sw)) if normalize else total


LABEL_KINDS = ("int", "sparse", "str", "bool", "whole-float", "indicator")


@st.composite
def log_loss_call(
    draw: st.DrawFn, *, for_accumulator: bool = False, big: bool = False
) -> dict[str, Any]:
    """A valid log_loss call: labels of any kind, probabilities (or logits) of any float
    dtype, 1-D (binary) or 2-D, with and without labels=, sample_weight=, normalize=
    (``big``: 32 768 probabilities and more)."""
    place = Placer(draw, LOG_LOSS_LAYOUTS)
    kinds = ("int", "sparse", "str") if for_accumulator else LABEL_KINDS
    kind = draw(st.sampled_from(kinds))
    from_logits = kind != "indicator" and draw(st.integers(0, 3)) == 0
    binary = kind == "bool" or draw(st.integers(0, 3)) == 0
    c = 2 if binary else draw(st.sampled_from([3, 10, 100, 300]) if big else st.integers(3, 5))
    least = 32_768 if binary else -(-32_768 // c)  # (a binary y_proba may be 1-D)
    most = 300_000 // (1 if binary else c)
    least = max(c, least)
    n = draw(st.integers(least, max(least, most)) if big else st.integers(c, 12))
    codes = draw(values(np.int64, (n,), 0, c - 1))
    give_labels = draw(st.booleans()) or (for_accumulator and kind != "int")
    if not give_labels:
        codes[:c] = np.arange(c)  # every class present
    pdt = np.dtype(draw(st.sampled_from(FLOAT_DTYPES)))
    if from_logits:
        lim = 10.0 if pdt == F16 else 30.0
        logits = draw(values(F64, (n, c), -lim, lim))
        if binary and draw(st.booleans()):
            logits = logits[:, 1] - logits[:, 0]
        p_raw = logits.astype(pdt)
    else:
        raw = draw(values(F64, (n, c), 0.0, 1.0, exact=(0.0, 1.0)))
        normalized = draw(st.integers(0, 4)) > 0
        if normalized:
            raw = np.where(raw.sum(axis=1, keepdims=True) == 0, 1.0, raw)
            raw = raw / raw.sum(axis=1, keepdims=True)
        if binary and draw(st.booleans()):
            raw = raw[:, 1]
            if draw(st.booleans()):
                raw = raw[:, None]  # (n, 1): the positive class, like 1-D
        p_raw = raw.astype(pdt)
    if kind == "int":
        tdt = draw(st.sampled_from([d for d in TARGET_DTYPES if np.iinfo(d).max >= c - 1]))
        y_raw: Any = codes.astype(tdt)
        classes: Any = np.arange(c)
    elif kind == "sparse":
        if c > 10:
            classes = draw(st.integers(-(2**40), 2**40)) + 7 * np.arange(c)
        else:
            ints = st.lists(st.integers(-50, 50), min_size=c, max_size=c, unique=True)
            classes = np.sort(draw(ints))
        y_raw = classes[codes]
    elif kind == "str":
        if c > 10:
            classes = np.array([f"class {i:05d}" for i in range(c)])
        else:
            names = st.lists(
                st.text("abcxyz", min_size=1, max_size=3), min_size=c, max_size=c, unique=True
            )
            classes = np.array(sorted(draw(names)))
        y_raw = classes[codes]
    elif kind == "bool":
        classes = np.array([False, True])
        y_raw = classes[codes]
    elif kind == "whole-float":
        classes = np.arange(c, dtype=np.float64) * 2.0 - 1.0
        y_raw = classes[codes]
    else:  # indicator
        y_raw = (codes[:, None] == np.arange(c)).astype(np.int64)
        classes = np.arange(c)
    kw: Kwargs = {}
    rkw: Kwargs = {}
    if give_labels and kind != "indicator":
        lab = np.asarray(classes)
        if not for_accumulator and draw(st.integers(0, 4)) == 0:
            lab = lab[::-1]  # unsorted: a warning, the columns still follow the sorted order
        kw["labels"] = lab.tolist() if draw(st.booleans()) else lab
        rkw["labels"] = lab
    sw_raw = None
    if draw(st.booleans()):
        sw_raw = weights(draw, (n,), 0.1, 3.0)
        if np.sum(sw_raw.astype(np.float64)) == 0:
            sw_raw[0] = 1
        rkw["sample_weight"] = sw_raw
    if draw(st.booleans()):
        kw["normalize"] = draw(st.booleans())
    rkw["normalize"] = kw.get("normalize", True)
    if from_logits:
        kw["from_logits"] = True
    rkw["from_logits"] = from_logits
    y_layouts = INT_LABEL_LAYOUTS if np.asarray(y_raw).dtype.kind in "iu" else None
    y = place("y_true", np.asarray(y_raw), y_layouts)
    p = place("y_proba", p_raw)
    if sw_raw is not None:
        kw["sample_weight"] = place("sample_weight", sw_raw)
    # scikit-learn warns when a row's sum is off 1 by more than sqrt(eps): check the warning
    # where the rows are clearly on either side of that
    rows_off = rows_on = False
    if not from_logits:
        full = p_raw.astype(np.float64)
        full = np.stack([1 - full, full], 1) if full.ndim == 1 else full
        full = full if full.shape[1] > 1 else np.concatenate([1 - full, full], 1)
        off = float(np.max(np.abs(full.sum(axis=1) - 1)))
        tol = math.sqrt(float(np.finfo(p_raw.dtype).eps))
        rows_off, rows_on = off > 2 * tol, off < tol / 2
    return {
        "y": y, "p": p, "kw": kw, "rkw": rkw, "y_raw": y_raw, "p_raw": p_raw, "kind": kind,
        "rows_off": rows_off, "normalized_rows": rows_on,
        "eps": float(np.finfo(p_raw.dtype).eps), "log": place.log, "n": n,
    }  # fmt: skip


def _log_loss_tol(case: dict[str, Any]) -> tuple[float, float]:
    dt = case["p_raw"].dtype
    scale = _magnitude(case["p_raw"]) if case["rkw"]["from_logits"] else 1.0
    scale *= _magnitude(case["rkw"].get("sample_weight"))
    terms = 1 if case["rkw"]["normalize"] else case["n"]
    return tolerance(F64 if dt == F64 else F32, 40.0 * scale, terms)


@fuzz()
@given(case=log_loss_call(), alias=st.booleans())
def test_fuzz_log_loss(case: dict[str, Any], alias: bool) -> None:
    check_log_loss_call(case, alias)


def check_log_loss_call(case: dict[str, Any], alias: bool) -> None:
    note(f"log_loss({case['kind']} labels, {case['kw']}); {case['log']}")
    y, p, kw = case["y"], case["p"], case["kw"]
    before = _copies({"y": y, "p": p, **kw})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = xent_rs.log_loss(y, y_pred=p, **kw) if alias else xent_rs.log_loss(y, p, **kw)
    _assert_unchanged({"y": y, "p": p, **kw}, before)
    messages = [str(w.message) for w in caught]
    not_one = [m for m in messages if "do not sum to one" in m]
    if case["rows_off"]:
        assert not_one, f"rows far from summing to 1 give scikit-learn's warning: {messages}"
    if case["normalized_rows"]:
        assert not not_one, f"rows summing to 1 give no warning: {messages}"
    assert type(got) is float
    want = ref_log_loss(case["y_raw"], case["p_raw"], eps=case["eps"], **case["rkw"])
    assert_golden_close(got, want, *_log_loss_tol(case), what="log_loss")


# --------------------------------------------------------------------------------------------
# valid calls: the streaming accumulators
# --------------------------------------------------------------------------------------------


def _chunks(draw: st.DrawFn, n: int) -> list[slice]:
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    bounds = [0, *cuts, n]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def _feed(
    accs: list[Any], parts: list[tuple[Any, ...]], split: int, return_losses: bool
) -> list[Any]:
    """Feeds ``parts`` to ``accs[0]`` (all), ``accs[1]`` (before ``split``) and ``accs[2]``
    (from ``split``); returns the per-chunk losses of ``accs[0]``."""
    losses = []
    for i, part in enumerate(parts):
        if return_losses:
            losses.append(accs[0].update(*part, return_losses=True))
        else:
            assert accs[0].update(*part) is None
        accs[1 if i < split else 2].update(*part)
    return losses


def _check_accumulators(accs: list[Any], want: float, tol: tuple[float, float], count: int) -> None:
    import pickle

    whole, first, second = accs
    assert whole.count == count
    got = whole.result()
    assert type(got) is float
    assert_golden_close(got, want, *tol, what="accumulated loss")
    merged = first.merge(second)
    assert merged is first
    assert repr(merged.result()) == repr(got), "merging gives the bits of one accumulator"
    assert repr(pickle.loads(pickle.dumps(whole)).result()) == repr(got)


@fuzz(0.5)
@given(data=st.data(), op=st.sampled_from(["cross_entropy", "cross_entropy_soft", "nll_loss"]))
def test_fuzz_class_accumulators(data: Any, op: str) -> None:
    draw = data.draw
    name = op.removesuffix("_soft")
    case = draw(multiclass_call(name, soft=op.endswith("_soft")))
    x_raw, t_raw, rkw = case["x_raw"], case["t_raw"], dict(case["rkw"])
    axis = rkw["axis"] % x_raw.ndim
    rkw.pop("grad_output", None)
    if rkw["reduction"] == "none":
        rkw["reduction"] = draw(st.sampled_from(["mean", "sum"]))
    ctor = {k: v for k, v in rkw.items() if k not in ("sample_weight",)}
    cls = {"cross_entropy": xent_rs.CrossEntropyAccumulator, "nll_loss": xent_rs.NLLLossAccumulator}
    accs = [cls[name](**ctor) for _ in range(3)]
    # chunks along a sample axis (the first that is not the class axis), if there is one;
    # that is axis 0 of hard targets and sample weights, the same axis of soft targets
    chunk_axis = (1 if axis == 0 else 0) if x_raw.ndim > 1 else None
    slices = [slice(None)] if chunk_axis is None else _chunks(draw, x_raw.shape[chunk_axis])
    t_axis = None if chunk_axis is None else (chunk_axis if t_raw.ndim == x_raw.ndim else 0)
    place = Placer(draw)
    sw_raw = rkw.get("sample_weight")

    def cut(a: Array, ax: int | None, s: slice) -> Array:
        return np.array(a if ax is None else a[(slice(None),) * ax + (s,)], order="C")

    parts = []
    for s in slices:
        part = [place("x", cut(x_raw, chunk_axis, s)), place("t", cut(t_raw, t_axis, s))]
        if sw_raw is not None:
            part.append(place("sample_weight", cut(sw_raw, None if t_axis is None else 0, s)))
        parts.append(tuple(part))
    note(f"{name} accumulator {ctor}; chunks {slices} along {chunk_axis}; {place.log}")
    return_losses = draw(st.booleans())
    losses = _feed(accs, parts, draw(st.integers(0, len(parts))), return_losses)
    with np.errstate(all="ignore"):
        want, _ = ref.LOSSES[name](x_raw, t_raw, **rkw)
    rdt = result_dtype(x_raw.dtype)
    samples = math.prod(case["sample_shape"])
    terms = samples if rkw["reduction"] == "sum" else 1
    _check_accumulators(accs, float(want), tolerance(rdt, case["scale"], terms), samples)
    if return_losses:
        per_sample = {**rkw, "reduction": "none"}
        for s, part, got in zip(slices, parts, losses, strict=True):
            xs = np.asarray(part[0])
            kw = {**per_sample}
            if sw_raw is not None:
                kw["sample_weight"] = np.asarray(part[2])
            with np.errstate(all="ignore"):
                want_part, _ = ref.LOSSES[name](xs, np.asarray(part[1]), **kw)
            assert np.asarray(got).dtype == rdt
            assert_golden_close(got, want_part, *tolerance(rdt, case["scale"]), what=f"losses {s}")


@fuzz(0.5)
@given(
    data=st.data(),
    op=st.sampled_from(["binary_cross_entropy", "binary_cross_entropy_with_logits"]),
)
def test_fuzz_binary_accumulators(data: Any, op: str) -> None:
    draw = data.draw
    case = draw(binary_call(op).filter(lambda c: c["x_raw"].ndim >= 1))
    x_raw, t_raw, rkw = case["x_raw"], case["t_raw"], dict(case["rkw"])
    rkw.pop("grad_output", None)
    if rkw["reduction"] == "none":
        rkw["reduction"] = draw(st.sampled_from(["mean", "sum"]))
    ctor = dict(rkw)
    for key in ("weight", "pos_weight"):  # the same for every chunk: not along the rows
        w = ctor.get(key)
        if w is not None and w.ndim == x_raw.ndim:
            ctor[key] = rkw[key] = w[:1]
    n = x_raw.shape[0]
    sw = None
    if draw(st.booleans()):
        sw = weights(draw, (n,), 0.1, 2.0)
        w_rows = sw.astype(np.float64).reshape((n,) + (1,) * (x_raw.ndim - 1))
        base = rkw.get("weight")
        rkw["weight"] = w_rows if base is None else np.asarray(base, dtype=np.float64) * w_rows
    cls = {
        "binary_cross_entropy": xent_rs.BinaryCrossEntropyAccumulator,
        "binary_cross_entropy_with_logits": xent_rs.BinaryCrossEntropyWithLogitsAccumulator,
    }[op]
    accs = [cls(**ctor) for _ in range(3)]
    slices = _chunks(draw, n)
    place = Placer(draw)
    parts = []
    for s in slices:
        part = [
            place("x", np.ascontiguousarray(x_raw[s])),
            place("t", np.ascontiguousarray(t_raw[s])),
        ]
        if sw is not None:
            part.append(place("sample_weight", np.ascontiguousarray(sw[s])))
        parts.append(tuple(part))
    note(f"{op} accumulator {ctor}; chunks {slices}; {place.log}")
    _feed(accs, parts, draw(st.integers(0, len(parts))), return_losses=draw(st.booleans()))
    with np.errstate(all="ignore"):
        want, _ = ref.LOSSES[op](x_raw, t_raw, **rkw)
    rdt = result_dtype(x_raw.dtype)
    scale = case["scale"] * _magnitude(sw)
    terms = x_raw.size if rkw["reduction"] == "sum" else 1
    _check_accumulators(accs, float(want), tolerance(rdt, scale, terms), x_raw.size)


@fuzz(0.5)
@given(data=st.data())
def test_fuzz_log_loss_accumulator(data: Any) -> None:
    draw = data.draw
    case = draw(log_loss_call(for_accumulator=True))
    kw, rkw = case["kw"], case["rkw"]
    ctor = {k: kw[k] for k in ("labels", "normalize", "from_logits") if k in kw}
    accs = [xent_rs.LogLossAccumulator(**ctor) for _ in range(3)]
    n = case["n"]
    slices = _chunks(draw, n)
    place = Placer(draw, LOG_LOSS_LAYOUTS)
    sw = rkw.get("sample_weight")
    parts = []
    for s in slices:
        part = [
            place("y_proba", np.ascontiguousarray(case["p_raw"][s])),
            place("y_true", np.asarray(case["y_raw"])[s], INT_LABEL_LAYOUTS),
        ]
        if sw is not None:
            part.append(place("sample_weight", np.ascontiguousarray(sw[s])))
        parts.append(tuple(part))
    note(f"LogLossAccumulator({ctor}); {case['kind']} labels; chunks {slices}; {place.log}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _feed(accs, parts, draw(st.integers(0, len(parts))), return_losses=draw(st.booleans()))
    want = ref_log_loss(case["y_raw"], case["p_raw"], eps=case["eps"], **rkw)
    _check_accumulators(accs, want, _log_loss_tol(case), n)
    if case["rows_off"]:
        assert not accs[0].sums_to_one
    if case["normalized_rows"]:
        assert accs[0].sums_to_one


# --------------------------------------------------------------------------------------------
# invalid calls: one mutation of a valid call, run in a child process
# --------------------------------------------------------------------------------------------

TE, VE, IE = ("TypeError",), ("ValueError",), ("IndexError",)
TE_VE = ("TypeError", "ValueError")


def _rng(draw: st.DrawFn) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))


def bad_dtype_array(draw: st.DrawFn, shape: tuple[int, ...], *, input: bool = False) -> Array:
    """An array of a dtype no argument accepts (extended precision: only inputs refuse it)."""
    kinds = ["complex64", "complex128", "object", "str", "bytes", "datetime64[s]"]
    if input and np.dtype(np.longdouble).itemsize > 8:
        kinds.append("longdouble")
    kind = draw(st.sampled_from(kinds))
    if kind == "object":
        return np.full(shape, 1.5, dtype=object)
    if kind == "str":
        return np.full(shape, "a")
    if kind == "bytes":
        return np.full(shape, b"a")
    if kind.startswith("datetime"):
        return np.zeros(shape, dtype=kind)
    return np.ones(shape, dtype=kind)


def _changed_shape(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that differs from ``shape``: one side grown, a dimension added or removed."""
    options = ["add"]
    if shape:
        options += ["grow", "drop"]
    how = draw(st.sampled_from(options))
    if how == "grow":
        i = draw(st.integers(0, len(shape) - 1))
        return (*shape[:i], shape[i] + draw(st.integers(1, 2)), *shape[i + 1 :])
    if how == "drop":
        i = draw(st.integers(0, len(shape) - 1))
        new = shape[:i] + shape[i + 1 :]
        return new if new != shape else (*shape, 2)
    return (*shape, draw(st.integers(2, 3)))


def _not_c_contiguous(draw: st.DrawFn, a: Array) -> str | None:
    """A layout in which ``a`` is not C-contiguous (None if every one is)."""
    options = [k for k in ("fortran", "strided", "negstride", "sliced")
               if not np.asarray(relayout(a, k)).flags.c_contiguous]  # fmt: skip
    return draw(st.sampled_from(options)) if options else None


def _output_buffer(
    draw: st.DrawFn,
    what: str,
    shape: tuple[int, ...],
    rdt: np.dtype[Any],
    dtypes: tuple[np.dtype[Any], ...],
    expect: tuple[str, ...],
) -> tuple[Any, tuple[str, ...]]:
    """An output buffer (``grad_out`` or ``out``) of ``shape`` and ``rdt`` broken as ``what``
    says (``shape``, ``dtype`` out of ``dtypes``, ``layout``, ``read-only``, ``list``,
    ``overlaps input``; anything else: a good one), and the error that the call should raise."""
    buf = np.zeros(shape, dtype=rdt)
    layout = "C"
    if what == "shape":
        buf = np.zeros(_changed_shape(draw, shape), dtype=rdt)
    elif what == "dtype":
        others = [d for d in dtypes if d != rdt]
        buf, expect = np.zeros(shape, dtype=draw(st.sampled_from(others))), TE
    elif what == "layout":
        layout = _not_c_contiguous(draw, buf) or "C"
        if layout == "C":
            buf = np.zeros(_changed_shape(draw, shape), dtype=rdt)
    elif what == "read-only":
        layout = "readonly"
    elif what == "list":
        return buf.tolist(), TE
    elif what == "overlaps input":
        return Overlap(0), expect
    return Arr(buf, layout), expect


def _lay(draw: st.DrawFn, a: Array, layouts: tuple[str, ...] = ALL_LAYOUTS) -> Arr:
    return Arr(a, draw(st.sampled_from(layouts), label="layout"))


BAD_REDUCTIONS = st.one_of(
    st.sampled_from(["avg", "MEAN", "Sum", " mean", "mean ", "", "elementwise_mean", "batchmean"]),
    st.text(max_size=6).filter(lambda s: s not in REDUCTIONS),
)
BAD_AXIS_TYPES = st.sampled_from([1.5, None, "0", [0], 1j])
BAD_SMOOTHING = st.sampled_from(
    [-1e-300, -0.5, 1.0 + 1e-15, 2.0, float("nan"), float("inf"), -float("inf")]
)
BEYOND_64_BITS = st.sampled_from([2**63, 2**63 + 5, 2**64, -(2**63) - 1, 10**30, -(10**30)])


#: mutations of an accumulator's options that its constructor refuses
CTOR_MUTATIONS = {"reduction", "label_smoothing", "ignore_index beyond 64 bits",
                  "ignore_index None", "weight dtype", "pos_weight dtype"}  # fmt: skip


def _accumulator_call(
    form: str,
    args: tuple[Any, ...],
    opts: Kwargs,
    opts0: Kwargs,
    expect: tuple[str, ...],
    mut: str,
    prime: tuple[Any, ...],
) -> Call:
    """The accumulator form of a mutated call: the constructor's, for options it checks;
    else ``update`` after a valid chunk (none when the options changed: it may not fit)."""
    if mut in CTOR_MUTATIONS:
        return Call(form.split(".")[0], (), opts, expect, mut)
    same = opts.keys() == opts0.keys() and all(opts[k] is v for k, v in opts0.items())
    return Call(form, args, {}, expect, mut, ctor=opts, prime=prime if same else ())


def _bad_reduction(draw: st.DrawFn) -> tuple[Any, tuple[str, ...]]:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from([None, 1, b"mean", ["mean"]])), TE_VE
    return draw(BAD_REDUCTIONS), VE


def _bad_axis(draw: st.DrawFn, mut: str, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The axis of an "axis range" mutation (an integer past the input's dimensions: a
    ``ValueError``) or an "axis type" one (not an integer: a ``TypeError``), and the error."""
    if mut == "axis type":
        return draw(BAD_AXIS_TYPES), TE
    k = draw(st.integers(0, 3))
    return draw(st.sampled_from([len(shape) + k, -len(shape) - 1 - k, 10**6])), VE


@st.composite
def invalid_multiclass(draw: st.DrawFn) -> Call:
    """cross_entropy / nll_loss and their accumulators' update, one thing wrong."""
    form = draw(st.sampled_from(
        ["cross_entropy", "nll_loss", "CrossEntropyAccumulator.update", "NLLLossAccumulator.update"]
    ))  # fmt: skip
    op = "nll_loss" if form.startswith("nll") or form.startswith("NLL") else "cross_entropy"
    acc = "." in form
    rng = _rng(draw)
    shape = draw(shapes(max_dims=3, max_side=4, empty=False))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    c, ss = shape[axis], _without(shape, axis)
    xdt = np.dtype(draw(st.sampled_from((*FLOAT_DTYPES, np.int32))))
    rdt = result_dtype(xdt)
    x = (3 * rng.standard_normal(shape)).astype(xdt)
    soft = op == "cross_entropy" and draw(st.booleans())
    tdt = np.dtype(draw(st.sampled_from(FLOAT_DTYPES if soft else TARGET_DTYPES)))
    t = rng.random(shape).astype(tdt) if soft else rng.integers(0, c, ss).astype(tdt)
    opts: Kwargs = {"axis": axis}
    ii = -100
    if not soft and draw(st.booleans()):
        ii = int(draw(st.sampled_from([-1, 0, c - 1, 255])))
        opts["ignore_index"] = ii
    if draw(st.booleans()):
        opts["weight"] = _lay(draw, rng.uniform(0.5, 2.0, c))
    if op == "cross_entropy" and draw(st.booleans()):
        opts["label_smoothing"] = 0.1
    reduction = draw(st.sampled_from(["mean", "sum"] if acc else REDUCTIONS))
    opts["reduction"] = reduction
    sw: Any = _lay(draw, rng.uniform(0.5, 2.0, ss)) if draw(st.booleans()) else None
    call_kw: Kwargs = {}

    muts = ["input dtype", "0-d input", "axis range", "reduction", "target shape",
            "float target shaped like indices", "bool target", "target dtype", "weight length",
            "weight dtype", "sample_weight shape", "ignore_index beyond 64 bits",
            "ignore_index None"]  # fmt: skip
    if not soft:
        muts.append("target out of range")
    if op == "cross_entropy":
        muts.append("label_smoothing")
        if soft:
            muts += ["soft target shape", "soft target with ignore_index >= 0"]
    else:
        muts.append("nll_loss soft target")
    if not acc:
        muts += ["axis type", "grad_output shape", "string input"]
        if op == "cross_entropy":
            muts += ["grad_out shape", "grad_out dtype", "grad_out layout", "grad_out read-only",
                     "grad_out list", "grad_out without return_grad"]  # fmt: skip
            if xdt.kind == "f" and x.size >= 2:  # (one element cannot half-overlap)
                muts.append("grad_out overlaps input")
            if soft and xdt in (F32, F64):
                muts.append("grad_out is the soft target")
    opts0, x0, t0 = dict(opts), x, t
    mut = draw(st.sampled_from(muts), label="mutation")
    xa: Any = _lay(draw, x)
    ta: Any = _lay(draw, t)
    expect = VE
    if mut == "input dtype":
        xa, expect = Arr(bad_dtype_array(draw, shape, input=True)), TE
    elif mut == "string input":
        xa, expect = np.full(shape, "x").tolist(), TE
    elif mut == "0-d input":
        xa, ta = Arr(np.array(1.5, dtype=xdt), draw(st.sampled_from(ALL_LAYOUTS))), np.array(0)
        opts.pop("weight", None)
        opts["axis"], sw = -1, None
    elif mut in ("axis range", "axis type"):
        opts["axis"], expect = _bad_axis(draw, mut, shape)
    elif mut == "reduction":
        opts["reduction"], expect = _bad_reduction(draw)
        if acc:
            opts["reduction"], expect = draw(st.sampled_from(["none", "avg", ""])), VE
    elif mut == "target out of range":
        info = np.iinfo(tdt)
        bad = [v for v in (c, c + 1, c + 100, -1, -2, -101, int(info.max), int(info.min))
               if info.min <= v <= info.max and v != ii and not 0 <= v < c]  # fmt: skip
        t = t.copy()
        pos = tuple(int(draw(st.integers(0, max(s - 1, 0)))) for s in ss)
        t[pos] = draw(st.sampled_from(bad))
        ta, expect = _lay(draw, t), IE
    elif mut == "target shape":
        ta = _lay(draw, rng.integers(0, c, _changed_shape(draw, ss)).astype(TARGET_DTYPES[3]))
    elif mut == "float target shaped like indices":
        fdt = draw(st.sampled_from(FLOAT_DTYPES))
        ta, expect = _lay(draw, rng.integers(0, c, ss).astype(fdt)), TE
    elif mut == "bool target":
        ta, expect = _lay(draw, np.ones(draw(st.sampled_from([ss, shape])), dtype=bool)), TE
    elif mut == "target dtype":
        ta, expect = Arr(bad_dtype_array(draw, draw(st.sampled_from([ss, shape])))), TE
    elif mut == "soft target shape":
        ta = _lay(draw, rng.random(_changed_shape(draw, shape)).astype(tdt))
        if len(ta.values.shape) == len(ss) or ta.values.shape == ss:
            ta = _lay(draw, rng.random((*shape, 2)).astype(tdt))
    elif mut == "soft target with ignore_index >= 0":
        opts["ignore_index"] = int(draw(st.sampled_from([0, 1, c, 10**6])))
    elif mut == "nll_loss soft target":
        ta, expect = _lay(draw, rng.random(shape).astype(draw(st.sampled_from(FLOAT_DTYPES)))), TE
    elif mut == "weight length":
        wshape = draw(st.sampled_from([(c + 1,), (c + 3,), (max(c - 1, 0),), (1, c), ()]))
        if wshape == (c,) or (acc and c == 1 and wshape == ()):
            # (an accumulator takes a 0-d weight for one class: a bug, see
            # test_accumulator_scalar_class_weight)
            wshape = (c + 1,)
        opts["weight"] = _lay(draw, rng.uniform(0.5, 2.0, wshape))
    elif mut == "weight dtype":
        opts["weight"], expect = Arr(bad_dtype_array(draw, (c,))), TE
    elif mut == "sample_weight shape":
        sw = _lay(draw, rng.uniform(0.5, 2.0, _changed_shape(draw, ss)))
    elif mut == "label_smoothing":
        opts["label_smoothing"] = draw(BAD_SMOOTHING)
    elif mut == "ignore_index beyond 64 bits":
        opts["ignore_index"] = draw(BEYOND_64_BITS)
    elif mut == "ignore_index None":
        opts["ignore_index"], expect = None, TE
    elif mut == "grad_output shape":
        call_kw["return_grad"] = True
        if reduction == "none":
            gshape = _changed_shape(draw, ss)
        else:
            gshape = draw(st.sampled_from([(1,), (2,), (1, 1), ss or (3,)]))
        call_kw["grad_output"] = _lay(draw, rng.standard_normal(gshape))
    elif mut.startswith("grad_out"):
        call_kw["return_grad"] = mut != "grad_out without return_grad"
        dtypes = (F16, F32, F64, np.dtype(np.int32), np.dtype(np.int64))
        call_kw["grad_out"], expect = _output_buffer(
            draw, mut.removeprefix("grad_out "), shape, rdt, dtypes, expect
        )
        if mut == "grad_out is the soft target":
            ta = Arr(t.astype(rdt), "C")
            call_kw["grad_out"] = SameAs(1)
    if acc:
        args = (xa, ta) if sw is None else (xa, ta, sw)
        prime = (_lay(draw, x0), _lay(draw, t0))
        return _accumulator_call(form, args, opts, opts0, expect, mut, prime)
    kw = {**opts, **call_kw}
    if sw is not None:
        kw["sample_weight"] = sw
    return Call(op, (xa, ta), kw, expect, mut)


@st.composite
def invalid_softmax_family(draw: st.DrawFn) -> Call:
    op = draw(st.sampled_from(
        ["log_softmax", "softmax", "logsumexp", "log_softmax_backward", "softmax_backward"]
    ))  # fmt: skip
    rng = _rng(draw)
    shape = draw(shapes(max_dims=3, max_side=4, empty=False))
    xdt = np.dtype(draw(st.sampled_from((*FLOAT_DTYPES, np.int32))))
    rdt = result_dtype(xdt)
    x = (3 * rng.standard_normal(shape)).astype(xdt)
    kw: Kwargs = {}
    backward = op.endswith("_backward")
    muts = ["input dtype", "0-d input", "axis range", "axis type"]
    if backward:
        muts += ["shape mismatch", "grad_output dtype"]
    elif op != "logsumexp":
        muts += ["out shape", "out dtype", "out layout", "out read-only", "out list"]
        if xdt.kind == "f" and x.size >= 2:  # (one element cannot half-overlap)
            muts.append("out overlaps input")
    mut = draw(st.sampled_from(muts), label="mutation")
    xa: Any = _lay(draw, x)
    ga: Any = _lay(draw, rng.standard_normal(shape))
    expect = VE
    if mut == "input dtype":
        xa, expect = Arr(bad_dtype_array(draw, shape, input=True)), TE
    elif mut == "0-d input":
        xa = Arr(np.array(0.5, dtype=xdt))
        ga = Arr(np.array(1.0))
    elif mut in ("axis range", "axis type"):
        kw["axis"], expect = _bad_axis(draw, mut, shape)
    elif mut == "shape mismatch":
        ga = _lay(draw, rng.standard_normal(_changed_shape(draw, shape)))
    elif mut == "grad_output dtype":
        ga, expect = Arr(bad_dtype_array(draw, shape)), TE
    elif mut.startswith("out"):
        dtypes = (F16, F32, F64, np.dtype(np.int32))
        kw["out"], expect = _output_buffer(
            draw, mut.removeprefix("out "), shape, rdt, dtypes, expect
        )
    args = (ga, xa) if backward else (xa,)
    if backward and mut == "input dtype":
        args = (ga, xa)
    return Call(op, args, kw, expect, mut)


@st.composite
def invalid_binary(draw: st.DrawFn) -> Call:
    form = draw(st.sampled_from([
        "binary_cross_entropy", "binary_cross_entropy_with_logits",
        "BinaryCrossEntropyAccumulator.update", "BinaryCrossEntropyWithLogitsAccumulator.update",
    ]))  # fmt: skip
    logits = "ogits" in form
    acc = "." in form
    rng = _rng(draw)
    shape = draw(shapes(max_dims=3, max_side=4, empty=False))
    xdt = np.dtype(draw(st.sampled_from((*FLOAT_DTYPES, np.int32))))
    x = (3 * rng.standard_normal(shape) if logits else rng.random(shape)).astype(xdt)
    if xdt.kind == "i" and not logits:
        x = (rng.random(shape) < 0.5).astype(xdt)
    y = (rng.random(shape) < 0.5).astype(np.float64)
    opts: Kwargs = {"reduction": draw(st.sampled_from(["mean", "sum"] if acc else REDUCTIONS))}
    call_kw: Kwargs = {}
    muts = ["input dtype", "target dtype", "target shape", "weight broadcast", "weight dtype",
            "reduction"]  # fmt: skip
    if logits:
        muts += ["pos_weight broadcast", "pos_weight dtype"]
    else:
        muts.append("probability outside [0, 1]")
    if acc:
        muts.append("sample_weight length")
    else:
        muts.append("grad_output shape")
    opts0, x0 = dict(opts), x
    mut = draw(st.sampled_from(muts), label="mutation")
    xa: Any = _lay(draw, x)
    ya: Any = _lay(draw, y)
    sw: Any = None
    expect = VE
    if mut == "input dtype":
        xa, expect = Arr(bad_dtype_array(draw, shape, input=True)), TE
    elif mut == "target dtype":
        ya, expect = Arr(bad_dtype_array(draw, shape)), TE
    elif mut == "target shape":
        ya = _lay(draw, rng.random(_changed_shape(draw, shape)))
    elif mut in ("weight broadcast", "pos_weight broadcast"):
        how = draw(st.sampled_from(["grow", "lead"]))
        if how == "lead":
            wshape = (draw(st.integers(2, 3)), *shape)
        else:
            i = draw(st.integers(0, len(shape) - 1))
            wshape = (*shape[:i], shape[i] + draw(st.integers(1, 2)), *shape[i + 1 :])
        opts[mut.split()[0]] = _lay(draw, rng.uniform(0.5, 2.0, wshape))
    elif mut in ("weight dtype", "pos_weight dtype"):
        opts[mut.split()[0]], expect = Arr(bad_dtype_array(draw, shape[-1:])), TE
    elif mut == "reduction":
        opts["reduction"], expect = _bad_reduction(draw)
        if acc:
            opts["reduction"], expect = draw(st.sampled_from(["none", "avg", ""])), VE
    elif mut == "probability outside [0, 1]":
        bad = draw(st.sampled_from([1.5, -0.25, 1.0 + 1e-6, -1e-30, np.nan, np.inf, -np.inf]))
        x = rng.random(shape).astype(xdt if xdt.kind == "f" else F64)
        pos = tuple(int(draw(st.integers(0, s - 1))) for s in shape)
        with np.errstate(invalid="ignore", over="ignore"):
            x[pos] = bad
        if x[pos] == np.clip(x[pos], 0, 1):  # 1 + 1e-6 is 1 in float16
            x[pos] = 2.0
        xa = _lay(draw, x)
    elif mut == "sample_weight length":
        sw = _lay(draw, rng.uniform(0.5, 2.0, (shape[0] + draw(st.integers(1, 2)),)))
        if len(shape) == 1:
            sw = _lay(draw, rng.uniform(0.5, 2.0, (2, 2, 2, 2)))
    elif mut == "grad_output shape":
        call_kw["return_grad"] = True
        red = opts["reduction"]
        gshape = (
            _changed_shape(draw, shape)
            if red == "none"
            else draw(st.sampled_from([(1,), (2,), shape]))
        )
        call_kw["grad_output"] = _lay(draw, rng.standard_normal(gshape))
    if acc:
        args = (xa, ya) if sw is None else (xa, ya, sw)
        prime = (_lay(draw, x0), _lay(draw, y))
        return _accumulator_call(form, args, opts, opts0, expect, mut, prime)
    return Call(form, (xa, ya), {**opts, **call_kw}, expect, mut)


@st.composite
def invalid_log_loss(draw: st.DrawFn) -> Call:
    """log_loss and LogLossAccumulator.update (no big-endian or unaligned arrays: a known
    open bug of theirs)."""
    acc = draw(st.booleans())
    rng = _rng(draw)
    n, c = draw(st.integers(2, 8)), draw(st.integers(2, 4))
    p = rng.random((n, c)) + 0.01
    p /= p.sum(axis=1, keepdims=True)
    pdt = np.dtype(draw(st.sampled_from(FLOAT_DTYPES)))
    p = p.astype(pdt)
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)[: min(c, n)]
    kw: Kwargs = {}
    ctor: Kwargs = {}
    muts = ["length mismatch", "y_proba ndim", "y_proba dtype", "probability outside [0, 1]",
            "sample_weight ndim", "sample_weight length", "continuous labels", "bytes labels",
            "nan labels", "labels missing a class of y", "single label in labels",
            "zero samples", "labels count != columns"]  # fmt: skip
    if acc:
        muts += ["label outside 0..C-1", "2-D y_true"]
    else:
        muts += ["one class in y_true", "y_pred and y_proba", "no y_proba", "mixed label types"]
    mut = draw(st.sampled_from(muts), label="mutation")
    lay = LOG_LOSS_LAYOUTS
    ya: Any = _lay(draw, y, lay)
    pa: Any = _lay(draw, p, lay)
    args: tuple[Any, ...] | None = None
    expect = VE
    if mut == "length mismatch":
        ya = _lay(draw, y[: n - 1], lay)
    elif mut == "y_proba ndim":
        pa = _lay(draw, draw(st.sampled_from([p[..., None], np.array(0.5, dtype=pdt)])), lay)
    elif mut == "y_proba dtype":
        pa, expect = Arr(bad_dtype_array(draw, (n, c))), TE
        if pa.values.dtype.kind == "U":
            pa = Arr(np.full((n, c), "0.5"))
    elif mut == "probability outside [0, 1]":
        p = p.copy()
        with np.errstate(invalid="ignore", over="ignore"):
            p[draw(st.integers(0, n - 1)), draw(st.integers(0, c - 1))] = draw(
                st.sampled_from([1.5, -0.25, np.nan, np.inf, -np.inf])
            )
        pa = _lay(draw, p, lay)
    elif mut == "sample_weight ndim":
        kw["sample_weight"] = _lay(draw, np.ones((n, 1)), lay)
    elif mut == "sample_weight length":
        kw["sample_weight"] = _lay(draw, np.ones(n + 1), lay)
    elif mut == "continuous labels":
        ya = _lay(draw, y + 0.5, lay)
    elif mut == "bytes labels":
        ya, expect = Arr(np.array([b"a", b"b"] * n)[:n]), TE
        if acc:
            ctor["labels"] = ["a", "b"]
    elif mut == "nan labels":
        yf = y.astype(np.float64)
        yf[0] = np.nan
        ya = _lay(draw, yf, lay)
    elif mut == "labels missing a class of y":
        (kw if not acc else ctor)["labels"] = list(range(1, c + 1))
    elif mut == "single label in labels":
        (kw if not acc else ctor)["labels"] = [0]
    elif mut == "zero samples":
        ya, pa = Arr(np.zeros(0, np.int64)), Arr(np.zeros((0, c), pdt))
        if acc:  # an empty chunk is fine; result() of nothing is the error
            return Call("LogLossAccumulator.result", (), {}, VE, "result of no samples", prime=())
    elif mut == "labels count != columns":
        (kw if not acc else ctor)["labels"] = list(range(c + 1))
    elif mut == "label outside 0..C-1":
        y2 = y.copy()
        y2[draw(st.integers(0, n - 1))] = draw(st.sampled_from([c, c + 5, -1]))
        ya = _lay(draw, y2, lay)
    elif mut == "2-D y_true":
        ya = _lay(draw, y[:, None], lay)
    elif mut == "one class in y_true":
        ya = _lay(draw, np.zeros(n, np.int64), lay)
    elif mut == "y_pred and y_proba":
        kw["y_pred"] = pa
    elif mut == "no y_proba":
        args, expect = (ya,), TE
    elif mut == "mixed label types":
        ya = ["a", *[int(v) for v in y[1:]]]
    if acc:
        if mut == "single label in labels":
            return Call("LogLossAccumulator", (), ctor, expect, mut)
        sw = kw.pop("sample_weight", None)
        update = (pa, ya) if sw is None else (pa, ya, sw)
        columns = c + 1 if mut == "labels count != columns" else c
        prime_p = Arr(np.full((2, columns), 1 / columns))
        prime: tuple[Any, ...] = (prime_p, Arr(np.array([1, 1] if "labels" in ctor else [0, 0])))
        if mut == "bytes labels":
            prime = (Arr(np.full((2, 2), 0.5)), Arr(np.array(["a", "b"])))
        return Call("LogLossAccumulator.update", update, {}, expect, mut, ctor=ctor, prime=prime)
    return Call("log_loss", args if args is not None else (ya, pa), kw, expect, mut)


PRIME_CE = (Arr(np.zeros((1, 2))), Arr(np.array([1])))


@st.composite
def invalid_misc(draw: st.DrawFn) -> Call:
    """Threads, the output cache, accumulator() and merge()."""
    what = draw(st.sampled_from(
        ["set_num_threads", "set_output_cache", "accumulator", "merge type", "merge options",
         "accumulator ctor"]
    ))  # fmt: skip
    if what == "set_num_threads":
        value = draw(st.sampled_from([0, -1, -(2**40), "2", 1.5, None]))
        return Call(what, (value,), {}, VE if isinstance(value, int) else TE, f"n={value!r}")
    if what == "set_output_cache":
        value = draw(st.sampled_from([-1, -(2**40), "2", 1.5, None]))
        return Call(what, (value,), {}, VE if isinstance(value, int) else TE, f"bytes={value!r}")
    if what == "accumulator":
        name = draw(st.sampled_from(["bogus", "CrossEntropy", "kl_divergence", ""]))
        return Call("accumulator", (name,), {}, VE, "unknown loss")
    if what == "merge type":
        return Call("CrossEntropyAccumulator.merge", ("NLLLossAccumulator",), {}, TE,
                    "merge of another loss", ctor={}, prime=PRIME_CE)  # fmt: skip
    if what == "merge options":
        other = draw(st.sampled_from(
            [{"reduction": "sum"}, {"ignore_index": 3}, {"axis": 0}, {"label_smoothing": 0.2},
             {"weight": [1.0, 2.0]}]
        ))  # fmt: skip
        return Call("CrossEntropyAccumulator.merge", (other,), {}, VE, "merge of other options",
                    ctor={}, prime=PRIME_CE)  # fmt: skip
    cls = draw(st.sampled_from(["CrossEntropyAccumulator", "NLLLossAccumulator",
                                "BinaryCrossEntropyAccumulator",
                                "BinaryCrossEntropyWithLogitsAccumulator"]))  # fmt: skip
    bad = draw(st.sampled_from(
        [{"reduction": "none"}, {"reduction": "avg"}, {"weight": np.array(["a"])},
         {"weight": np.ones(2, complex)}]
    ))  # fmt: skip
    if cls in ("CrossEntropyAccumulator", "NLLLossAccumulator") and draw(st.booleans()):
        bad = draw(st.sampled_from([{"ignore_index": 2**64}, {"ignore_index": None}]))
    expect = VE if "reduction" in bad or bad.get("ignore_index", 0) is not None else TE
    if "weight" in bad:
        expect = TE
    return Call(cls, (), bad, expect, f"constructor {bad}")


INVALID_CALLS = st.one_of(
    invalid_multiclass(),
    invalid_softmax_family(),
    invalid_binary(),
    invalid_log_loss(),
    invalid_misc(),
)
WORKER = TESTS_DIR / "_fuzz_worker.py"
WORKER_TIMEOUT_S = 60.0


def run_in_worker(calls: list[Call]) -> list[dict[str, Any]]:
    """Runs ``calls`` in a child process; fails the test on a crash or a hang, naming the
    call that was running."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(TESTS_DIR),
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *sys.path])},
    )
    timed_out = False
    try:
        out, err = proc.communicate(pickle.dumps(calls), timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        out, err = proc.communicate()
    lines = out.decode(errors="replace").splitlines()
    results = [json.loads(line) for line in lines if line.startswith("{")]
    started = [int(line.split()[1]) for line in lines if line.startswith("start ")]
    if timed_out or proc.returncode != 0 or len(results) != len(calls):
        i = started[-1] if started else -1
        culprit = calls[i].describe() if 0 <= i < len(calls) else "(before the first call)"
        how = f"hung (> {WORKER_TIMEOUT_S:g} s)" if timed_out else f"exited with {proc.returncode}"
        raise AssertionError(
            f"the worker {how} during call {i}: {culprit}\n"
            f"stderr:\n{err.decode(errors='replace')[-3000:]}"
        )
    return results


@fuzz(0.04)
@given(calls=st.lists(INVALID_CALLS, min_size=40, max_size=80))
def test_fuzz_invalid_calls_raise_cleanly(calls: list[Call]) -> None:
    results = run_in_worker(calls)
    problems = []
    for call, res in zip(calls, results, strict=True):
        if res["raised"] not in call.expect:
            got = "no exception" if res["raised"] is None else f"{res['raised']}: {res['msg']}"
            problems.append(f"{call.describe()}\n    -> {got}")
        elif not res["msg"].strip():
            problems.append(f"{call.describe()}\n    -> {res['raised']} with an empty message")
        if res["touched"]:
            problems.append(f"{call.describe()}\n    -> wrote {res['touched']} before raising")
        if res["state_changed"]:
            problems.append(f"{call.describe()}\n    -> a failed update changed the accumulator")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------
# what the fuzzing found (each a bug, fixed)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_of_confident_probabilities_keeps_its_precision(dtype: type) -> None:
    rng = np.random.default_rng(5)
    q = 2.0 ** -rng.uniform(3, 40 if dtype is np.float64 else 22, 256)
    p = (1 - q).astype(dtype)
    y = np.where(np.arange(256) % 4 == 0, 0.9, 1.0).astype(dtype)
    p[-2:], y[-2:] = 1.0, (0.999, 0.5)  # p = 1: -(t (0 + 100) - 100) cancels too
    loss = xent_rs.binary_cross_entropy(p, y, reduction="none")
    want, _ = ref.binary_cross_entropy(p, y, reduction="none")
    rtol = RTOL if dtype is np.float64 else RTOL32
    assert_golden_close(loss, want, rtol, 0.0, what="loss")


@pytest.mark.parametrize("how", ["log_loss", "log_loss labels=", "accumulator", "logits"])
def test_log_loss_non_contiguous_integer_labels(how: str) -> None:
    y = np.array([0, 9, 1, 9, 2, 9, 1, 9])[::2]
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
    assert not y.flags.c_contiguous
    if how == "log_loss":
        got, want = xent_rs.log_loss(y, p), xent_rs.log_loss(y.copy(), p)
    elif how == "log_loss labels=":
        got = xent_rs.log_loss(y, p, labels=[0, 1, 2])
        want = xent_rs.log_loss(y.copy(), p, labels=[0, 1, 2])
    else:
        logits = how == "logits"
        acc, ref_acc = (xent_rs.LogLossAccumulator(from_logits=logits) for _ in range(2))
        acc.update(p, y)
        ref_acc.update(p, y.copy())
        got, want = acc.result(), ref_acc.result()
    assert got == want


@pytest.mark.parametrize("cls", ["CrossEntropyAccumulator", "NLLLossAccumulator"])
def test_accumulator_scalar_class_weight(cls: str) -> None:
    x, t = np.zeros((3, 1)), np.zeros(3, np.int64)
    fn = xent_rs.cross_entropy if cls == "CrossEntropyAccumulator" else xent_rs.nll_loss
    with pytest.raises(ValueError, match=r"shape \(\)"):
        fn(x, t, weight=2.0)
    acc = getattr(xent_rs, cls)(weight=2.0)
    with pytest.raises(ValueError, match=r"shape \(\)"):
        acc.update(x, t)


@pytest.mark.parametrize(
    "call",
    ["log_softmax", "softmax", "logsumexp", "log_softmax_backward", "cross_entropy", "nll_loss"],
)
def test_axis_beyond_64_bits_is_value_error(call: str) -> None:
    x = np.zeros((2, 3))
    fn = getattr(xent_rs, call)
    args = (x, x) if call.endswith("_backward") else (x,)
    if call in ("cross_entropy", "nll_loss"):
        args = (x, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="axis"):
        fn(*args, axis=2**70)


def test_absurd_thread_count_is_refused_or_harmless() -> None:
    code = (
        "import numpy as np, xent_rs\n"
        "try:\n"
        "    xent_rs.set_num_threads(2**40)\n"
        "except ValueError:\n"
        "    print('refused')\n"
        "else:\n"
        "    xent_rs.log_softmax(np.zeros((100_000, 10)))\n"
        "    print('ran')\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=3
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the call after set_num_threads(2**40) hung (killed after 3 s)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in ("refused", "ran")
