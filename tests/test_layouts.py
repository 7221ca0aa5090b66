"""Memory layouts, array-likes and dtypes: C-contiguous input is used in place; any other layout
or array-like gives the very same results; integer/bool inputs are float64; float16 computes in
float32; every integer target dtype is accepted."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import reference as ref
from conftest import LAYOUTS, assert_golden_close, assert_same_bits

xent_rs = pytest.importorskip("xent_rs")

Array = npt.NDArray[Any]
FLOATS = (np.float32, np.float64)


def _rng() -> np.random.Generator:
    return np.random.default_rng(11)


def _inputs(dtype: Any = np.float64) -> dict[str, Array]:
    """A small problem of every kind, in C order."""
    rng = _rng()
    x = (2.0 * rng.standard_normal((6, 5, 7))).astype(dtype)  # classes on axis 1 or -1
    t1 = rng.integers(0, 5, size=(6, 7))
    t1[0, 0] = -100
    t_last = rng.integers(0, 7, size=(6, 5))
    soft = rng.random((6, 5, 7)).astype(dtype)
    soft /= soft.sum(axis=-1, keepdims=True)
    p = rng.uniform(0.01, 0.99, size=(6, 5, 7)).astype(dtype)
    y = (rng.random((6, 5, 7)) < 0.5).astype(dtype)
    w5 = rng.uniform(0.5, 2.0, size=5).astype(dtype)
    w7 = rng.uniform(0.5, 2.0, size=7).astype(dtype)
    sw = rng.uniform(0.5, 2.0, size=(6, 7)).astype(dtype)
    g = rng.standard_normal((6, 5, 7)).astype(dtype)
    return {
        "x": x, "t1": t1, "t_last": t_last, "soft": soft, "p": p, "y": y,
        "w5": w5, "w7": w7, "sw": sw, "g": g,
    }  # fmt: skip


Call = Callable[[dict[str, Any]], Any]

# every operation, as a function of the arrays it reads
CALLS: dict[str, Call] = {
    "log_softmax": lambda a: xent_rs.log_softmax(a["x"], axis=1),
    "softmax": lambda a: xent_rs.softmax(a["x"]),
    "logsumexp": lambda a: xent_rs.logsumexp(a["x"], axis=1),
    "log_softmax_backward": lambda a: xent_rs.log_softmax_backward(a["g"], a["soft"]),
    "softmax_backward": lambda a: xent_rs.softmax_backward(a["g"], a["soft"], axis=1),
    "ce_axis1": lambda a: xent_rs.cross_entropy(
        a["x"],
        a["t1"],
        axis=1,
        weight=a["w5"],
        sample_weight=a["sw"],
        label_smoothing=0.1,
        return_grad=True,
    ),
    "ce_last_none": lambda a: xent_rs.cross_entropy(
        a["x"], a["t_last"], weight=a["w7"], reduction="none", return_grad=True
    ),
    "ce_soft": lambda a: xent_rs.cross_entropy(
        a["x"], a["soft"], weight=a["w7"], label_smoothing=0.2, return_grad=True
    ),
    "nll": lambda a: xent_rs.nll_loss(a["x"], a["t_last"], weight=a["w7"], return_grad=True),
    "bce": lambda a: xent_rs.binary_cross_entropy(
        a["p"], a["y"], weight=a["w7"], reduction="sum", return_grad=True
    ),
    "bce_logits": lambda a: xent_rs.binary_cross_entropy_with_logits(
        a["x"], a["y"], weight=a["sw"][:, None, :], pos_weight=a["w7"], return_grad=True
    ),
}


def _results(res: Any) -> list[Any]:
    return list(res) if isinstance(res, tuple) else [res]


def _assert_same_results(got: Any, want: Any, what: str) -> None:
    g, w = _results(got), _results(want)
    assert len(g) == len(w)
    for i, (a, b) in enumerate(zip(g, w, strict=True)):
        assert type(a) is type(b), f"{what}[{i}]: {type(a)} != {type(b)}"
        assert_same_bits(a, b, what=f"{what}[{i}]")


def _read_only(a: Array) -> Array:
    b = a.copy()
    b.flags.writeable = False
    return b


# --------------------------------------------------------------------------------------------
# layouts give identical results
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout", [*sorted(LAYOUTS), "readonly"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_layouts_identical(call: str, layout: str, dtype: Any) -> None:
    arrays = _inputs(dtype)
    want = CALLS[call](arrays)
    convert = _read_only if layout == "readonly" else LAYOUTS[layout]
    variant = {k: convert(v) for k, v in arrays.items()}
    if layout != "readonly":
        assert not variant["x"].flags.c_contiguous
    got = CALLS[call](variant)
    _assert_same_results(got, want, f"{call} ({layout})")
    for k, v in arrays.items():  # inputs are not modified
        np.testing.assert_array_equal(variant[k], v)


@pytest.mark.parametrize("call", sorted(CALLS))
def test_memmap_inputs_identical(call: str, tmp_path: Path) -> None:
    arrays = _inputs(np.float32)
    want = CALLS[call](arrays)
    mapped: dict[str, Any] = {}
    for k, v in arrays.items():
        mm = np.memmap(tmp_path / f"{k}.bin", dtype=v.dtype, mode="w+", shape=v.shape)
        mm[...] = v
        mm.flush()
        mapped[k] = np.memmap(tmp_path / f"{k}.bin", dtype=v.dtype, mode="r", shape=v.shape)
    got = CALLS[call](mapped)
    for a, b in zip(_results(got), _results(want), strict=True):
        assert_same_bits(np.asarray(a), np.asarray(b), what=f"{call} (memmap)")


@pytest.mark.parametrize("dtype", FLOATS)
def test_mixed_layouts_in_one_call(dtype: Any) -> None:
    a = _inputs(dtype)
    want = CALLS["ce_axis1"](a)
    mixed = {
        **a,
        "x": LAYOUTS["fortran"](a["x"]),
        "t1": LAYOUTS["negstride"](a["t1"]),
        "w5": LAYOUTS["strided"](a["w5"]),
        "sw": _read_only(a["sw"]),
    }
    _assert_same_results(CALLS["ce_axis1"](mixed), want, "mixed layouts")


# --------------------------------------------------------------------------------------------
# C-contiguous float32/float64 input is used in place
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_grad_out_input_in_place_shares_memory(dtype: Any) -> None:
    a = _inputs(dtype)
    x = a["x"].copy()
    want_loss, want_grad = xent_rs.cross_entropy(x, a["t_last"], return_grad=True)
    loss, grad = xent_rs.cross_entropy(x, a["t_last"], return_grad=True, grad_out=x)
    assert grad is x
    assert np.shares_memory(grad, x)
    assert_same_bits(grad, want_grad)
    assert_same_bits(loss, want_loss)


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_out_returns_same_object(op: str, dtype: Any) -> None:
    x = _inputs(dtype)["x"]
    out = np.empty_like(x)
    res = getattr(xent_rs, op)(x, axis=1, out=out)
    assert res is out
    assert_same_bits(out, getattr(xent_rs, op)(x, axis=1))


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
def test_out_may_be_the_input(op: str) -> None:
    x = _inputs(np.float64)["x"]
    want = getattr(xent_rs, op)(x)
    y = x.copy()
    res = getattr(xent_rs, op)(y, out=y)
    assert res is y
    assert_same_bits(y, want)


def _peak_traced_bytes(fn: Callable[[], Any]) -> int:
    fn()  # warm up (first-call allocations, thread pool start)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start


@pytest.mark.parametrize("dtype", FLOATS)
def test_c_contiguous_input_is_not_copied(dtype: Any) -> None:
    # NumPy reports its array allocations to tracemalloc: a copy of the input would show up
    rng = _rng()
    x = rng.standard_normal((2000, 500)).astype(dtype)
    t = rng.integers(0, 500, size=2000)
    out = np.empty_like(x)
    peak = _peak_traced_bytes(lambda: xent_rs.log_softmax(x, out=out))
    assert peak < x.nbytes // 4, f"log_softmax(out=) allocated {peak} bytes for {x.nbytes}"
    buf = np.empty_like(x)
    peak = _peak_traced_bytes(lambda: xent_rs.cross_entropy(x, t, return_grad=True, grad_out=buf))
    assert peak < x.nbytes // 4, f"cross_entropy(grad_out=) allocated {peak} bytes"
    peak = _peak_traced_bytes(lambda: xent_rs.cross_entropy(x, t))
    assert peak < x.nbytes // 4, f"cross_entropy allocated {peak} bytes for {x.nbytes}"


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((2, 21, 100_003), 1), ((20_011, 211), -1)],
    ids=["class-axis-1", "class-axis-last"],
)
def test_large_outputs_match_smaller_calls(shape: tuple[int, ...], axis: int) -> None:
    # outputs of 16 MiB and more are written with non-temporal stores (from unaligned rows
    # and spans here); the same rows in calls half the size are written with plain stores
    rng = _rng()
    x = rng.standard_normal(shape).astype(np.float32)
    t = rng.integers(0, shape[axis], size=x.shape[: axis % x.ndim] + x.shape[axis % x.ndim + 1 :])
    half = shape[0] // 2
    parts = (slice(0, half), slice(half, None))
    assert x.nbytes >= 16 << 20 > max(x[part].nbytes for part in parts)
    out = np.empty_like(x)
    xent_rs.log_softmax(x, axis=axis, out=out)
    for part in parts:
        assert_same_bits(out[part], xent_rs.log_softmax(x[part], axis=axis))
    kw: dict[str, Any] = {"axis": axis, "reduction": "none", "return_grad": True}
    loss, grad = xent_rs.cross_entropy(x, t, **kw)
    for part in parts:
        part_loss, part_grad = xent_rs.cross_entropy(x[part], t[part], **kw)
        assert_same_bits(loss[part], part_loss)
        assert_same_bits(grad[part], part_grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_very_many_classes_off_the_last_axis(dtype: Any) -> None:
    # Past 2**16 classes with the class axis not last, each position's classes are gathered
    # into a row for the row kernels: the numbers are those of the class axis last.
    rng = _rng()
    c = 70_001
    x = rng.standard_normal((2, c, 3)).astype(dtype)
    last = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    t = rng.integers(0, c, size=(2, 3))
    t[0, 1] = -100
    soft = rng.random(x.shape).astype(dtype)
    soft /= soft.sum(axis=1, keepdims=True)
    soft_last = np.ascontiguousarray(np.moveaxis(soft, 1, -1))
    w = rng.uniform(0.5, 2.0, c).astype(dtype)
    for fn in (xent_rs.log_softmax, xent_rs.softmax):
        assert_same_bits(np.moveaxis(fn(x, axis=1), 1, -1), fn(last))
    assert_same_bits(xent_rs.logsumexp(x, axis=1), xent_rs.logsumexp(last))
    for kw in ({}, {"weight": w, "label_smoothing": 0.1}):
        for reduction in ("none", "sum"):
            common: dict[str, Any] = {"reduction": reduction, "return_grad": True, **kw}
            for target, target_last in ((t, t), (soft, soft_last)):
                loss, grad = xent_rs.cross_entropy(x, target, axis=1, **common)
                want, want_grad = xent_rs.cross_entropy(last, target_last, **common)
                assert_same_bits(loss, want)
                assert_same_bits(np.moveaxis(grad, 1, -1), want_grad)
    assert_same_bits(
        xent_rs.nll_loss(x, t, axis=1, reduction="none"),
        xent_rs.nll_loss(last, t, reduction="none"),
    )


def test_float32_beyond_2_pow_24_classes_off_the_last_axis() -> None:
    # The lane groups count classes in the element type: past 2**24 float32 classes they
    # picked wrong target logits (a loss of 20.06 here, for 0.0554).
    c = 2**24 + 8
    x = np.zeros((1, c, 2), np.float32)
    x[0, 2**24 + 3, 0] = 20.0
    x[0, 5, 1] = 20.0
    t = np.array([[2**24 + 3, 5]])
    want = xent_rs.cross_entropy(np.ascontiguousarray(np.moveaxis(x, 1, -1)), t)
    assert xent_rs.cross_entropy(x, t, axis=1) == want
    assert float(want) == pytest.approx(np.log1p(c * np.exp(-20.0)), rel=1e-5)


class _Subclass(np.ndarray):
    """An ndarray subclass: converted like any other array-like, never taken as it is."""


def _misaligned(a: Array) -> Array:
    """A copy of ``a`` whose data starts one byte past an element boundary."""
    raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
    b = raw.view(a.dtype).reshape(a.shape)
    b[...] = a
    assert not b.flags.aligned
    return b


#: One way each in which a class-loss call misses the shortcut for arrays the core reads as
#: they are (input, target) -> the same call's arguments in another form.
NOT_PLAIN: dict[str, Callable[[Array, Array], tuple[Any, Any]]] = {
    "int32 target": lambda x, t: (x, t.astype(np.int32)),
    "big-endian target": lambda x, t: (x, t.astype(">i8")),
    "strided target": lambda x, t: (x, np.repeat(t, 2)[::2]),
    "list target": lambda x, t: (x, t.tolist()),
    "Fortran input": lambda x, t: (np.asfortranarray(x), t),
    "strided input": lambda x, t: (np.repeat(x, 2, axis=0)[::2], t),
    "big-endian input": lambda x, t: (x.astype(x.dtype.newbyteorder(">")), t),
    "misaligned input": lambda x, t: (_misaligned(x), t),
    "subclass input": lambda x, t: (x.view(_Subclass), t),
}


@pytest.mark.parametrize(
    "kw",
    [{}, {"reduction": "none"}, {"return_grad": True}, {"reduction": "sum", "ignore_index": 3}],
    ids=["mean", "none", "grad", "sum-ignore"],
)
@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_plain_arrays_shortcut_matches_conversions(dtype: Any, op: str, kw: dict[str, Any]) -> None:
    # C-contiguous float32/float64 logits with int64 labels skip the argument conversions;
    # every other form of the same arrays is converted first: the results are the same bits
    from xent_rs import _backend as _arrays

    rng = _rng()
    x = rng.standard_normal((40, 10)).astype(dtype)
    t = rng.integers(0, 10, size=40)
    assert _arrays.plain_labels(x, t)
    want = getattr(xent_rs, op)(x, t, **kw)
    for name, make in NOT_PLAIN.items():
        xv, tv = make(x, t)
        assert not _arrays.plain_labels(xv, tv), name
        _assert_same_results(getattr(xent_rs, op)(xv, tv, **kw), want, f"{op} {name}")


# --------------------------------------------------------------------------------------------
# array-likes and dtypes
# --------------------------------------------------------------------------------------------


def test_lists_accepted() -> None:
    x = [[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]]
    t = [2, 0]
    xa = np.array(x)
    assert_same_bits(xent_rs.log_softmax(x), xent_rs.log_softmax(xa))
    assert_same_bits(xent_rs.softmax(x), xent_rs.softmax(xa))
    assert_same_bits(xent_rs.logsumexp(x), xent_rs.logsumexp(xa))
    _assert_same_results(
        xent_rs.cross_entropy(x, t, weight=[1.0, 2.0, 0.5], return_grad=True),
        xent_rs.cross_entropy(xa, np.array(t), weight=np.array([1.0, 2.0, 0.5]), return_grad=True),
        "cross_entropy(list)",
    )
    _assert_same_results(
        xent_rs.binary_cross_entropy([0.2, 0.7], [0.0, 1.0], return_grad=True),
        xent_rs.binary_cross_entropy(np.array([0.2, 0.7]), np.array([0.0, 1.0]), return_grad=True),
        "binary_cross_entropy(list)",
    )
    _assert_same_results(
        xent_rs.binary_cross_entropy_with_logits([0.2, -3.0], [0.0, 1.0], pos_weight=[2.0]),
        xent_rs.binary_cross_entropy_with_logits(
            np.array([0.2, -3.0]), np.array([0.0, 1.0]), pos_weight=np.array([2.0])
        ),
        "binary_cross_entropy_with_logits(list)",
    )


class _ArrayWrapper:
    """A foreign array type exposing only ``__array__`` (like a CPU tensor)."""

    def __init__(self, a: Array) -> None:
        self._a = a

    def __array__(self, dtype: Any = None, copy: Any = None) -> Array:
        return self._a if dtype is None else self._a.astype(dtype)


def test_array_protocol_objects_accepted() -> None:
    a = _inputs(np.float32)
    want = CALLS["ce_axis1"](a)
    wrapped = {k: _ArrayWrapper(v) for k, v in a.items()}
    got = xent_rs.cross_entropy(
        wrapped["x"], wrapped["t1"], axis=1, weight=wrapped["w5"], sample_weight=wrapped["sw"],
        label_smoothing=0.1, return_grad=True,
    )  # fmt: skip
    _assert_same_results(got, want, "__array__ inputs")
    assert_same_bits(xent_rs.log_softmax(wrapped["x"]), xent_rs.log_softmax(a["x"]))


def test_dlpack_objects_accepted() -> None:
    class _DLPackOnly:
        def __init__(self, a: Array) -> None:
            self._a = a

        def __dlpack__(self, **kw: Any) -> Any:
            return self._a.__dlpack__(**kw)

        def __dlpack_device__(self) -> Any:
            return self._a.__dlpack_device__()

    x = _inputs(np.float64)["x"]
    assert_same_bits(xent_rs.log_softmax(_DLPackOnly(x)), xent_rs.log_softmax(x))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
def test_integer_and_bool_inputs_are_float64(dtype: Any) -> None:
    x = (np.arange(24).reshape(4, 6) % 5).astype(dtype)
    xf = x.astype(np.float64)
    for op in ("log_softmax", "softmax", "logsumexp"):
        got = getattr(xent_rs, op)(x)
        assert np.asarray(got).dtype == np.float64, op
        assert_same_bits(got, getattr(xent_rs, op)(xf), what=op)
    t = np.array([0, 5, 2, 3])
    loss, grad = xent_rs.cross_entropy(x, t, return_grad=True)
    assert isinstance(loss, np.float64)
    assert grad.dtype == np.float64
    _assert_same_results((loss, grad), xent_rs.cross_entropy(xf, t, return_grad=True), "ce")
    y = np.ones((4, 6))
    res = xent_rs.binary_cross_entropy_with_logits(x, y, return_grad=True)
    _assert_same_results(
        res, xent_rs.binary_cross_entropy_with_logits(xf, y, return_grad=True), "bcel"
    )


def test_integer_probabilities_for_bce_are_float64() -> None:
    p = np.array([[0, 1], [1, 0]], dtype=np.int64)
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    loss, grad = xent_rs.binary_cross_entropy(p, y, return_grad=True)
    assert isinstance(loss, np.float64)
    assert grad.dtype == np.float64
    assert loss == 0.0


# --------------------------------------------------------------------------------------------
# float16
# --------------------------------------------------------------------------------------------

F16_RTOL, F16_ATOL = 2e-3, 1e-3


@pytest.mark.parametrize("op", ["log_softmax", "softmax", "logsumexp"])
def test_float16_softmax_family(op: str) -> None:
    x16 = (3.0 * _rng().standard_normal((9, 13))).astype(np.float16)
    got = getattr(xent_rs, op)(x16)
    assert np.asarray(got).dtype == np.float16
    from32 = getattr(xent_rs, op)(x16.astype(np.float32))
    assert_golden_close(got, from32, F16_RTOL, F16_ATOL, what=f"{op} float16 vs float32")
    assert_golden_close(got, getattr(ref, op)(x16), F16_RTOL, F16_ATOL, what=f"{op} vs ref")


def test_float16_out_buffer() -> None:
    x16 = (3.0 * _rng().standard_normal((9, 13))).astype(np.float16)
    out = np.empty_like(x16)
    assert xent_rs.log_softmax(x16, out=out) is out
    assert_same_bits(out, xent_rs.log_softmax(x16))


@pytest.mark.parametrize("call", ["ce_axis1", "ce_soft", "nll", "bce", "bce_logits"])
def test_float16_losses(call: str) -> None:
    a16 = _inputs(np.float16)
    a32 = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in a16.items()}
    loss16, grad16 = CALLS[call](a16)
    loss32, grad32 = CALLS[call](a32)
    assert isinstance(loss16, np.float16)
    assert grad16.dtype == np.float16
    assert grad16.shape == a16["x"].shape
    assert_golden_close(loss16, loss32, F16_RTOL, F16_ATOL, what="loss")
    assert_golden_close(grad16, grad32, F16_RTOL, F16_ATOL, grad=True, what="grad")


def test_float16_grad_out() -> None:
    a16 = _inputs(np.float16)
    x = a16["x"]
    want_loss, want_grad = xent_rs.cross_entropy(x, a16["t_last"], return_grad=True)
    buf = np.empty_like(x)
    loss, grad = xent_rs.cross_entropy(x, a16["t_last"], return_grad=True, grad_out=buf)
    assert grad is buf
    assert_same_bits(grad, want_grad)
    assert_same_bits(loss, want_loss)


# --------------------------------------------------------------------------------------------
# integer target dtypes
# --------------------------------------------------------------------------------------------

TARGET_DTYPES = [
    np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.intp, np.uintp, np.longlong, np.ulonglong,
]  # fmt: skip


@pytest.mark.parametrize("tdtype", TARGET_DTYPES)
@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
def test_every_integer_target_dtype(op: str, tdtype: Any) -> None:
    rng = _rng()
    x = rng.standard_normal((50, 7))
    t = rng.integers(0, 7, size=50)
    kw: dict[str, Any] = {"weight": rng.uniform(0.5, 2.0, 7), "return_grad": True}
    signed = np.issubdtype(tdtype, np.signedinteger)
    if signed:
        t[::5] = -1
        kw["ignore_index"] = -1
    else:
        t[::5] = 6
        kw["ignore_index"] = 6
    want = getattr(xent_rs, op)(x, t.astype(np.int64), **kw)
    got = getattr(xent_rs, op)(x, t.astype(tdtype), **kw)
    _assert_same_results(got, want, f"{op} target {np.dtype(tdtype)}")
    # and with reduction='none', the ignored rows are zero
    loss = getattr(xent_rs, op)(x, t.astype(tdtype), **{**kw, "reduction": "none"})[0]
    assert np.all(loss[::5] == 0.0)


def test_zero_dim_target_for_one_dim_input() -> None:
    x = np.array([0.5, 2.0, -1.0])
    for t in (np.array(1), np.int64(1), np.uint8(1), 1):
        loss, grad = xent_rs.cross_entropy(x, t, axis=0, return_grad=True)
        want_loss, want_grad = ref.cross_entropy(x, np.asarray(t))
        assert_golden_close(loss, want_loss, 1e-12, 1e-14)
        assert_golden_close(grad, want_grad, 1e-12, 1e-14, grad=True)
    none = xent_rs.cross_entropy(x, np.array(1), reduction="none")
    assert np.shape(none) == ()


# --------------------------------------------------------------------------------------------
# the public module
# --------------------------------------------------------------------------------------------

#: Every operation the float64 reference implements, and the thread controls.
PUBLIC_NAMES = (*ref.SOFTMAX_FAMILY, *ref.LOSSES, "set_num_threads", "get_num_threads")


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_names(name: str) -> None:
    assert callable(getattr(xent_rs, name, None)), f"xent_rs.{name} is missing"
    assert name in getattr(xent_rs, "__all__", ()), f"{name} is not in xent_rs.__all__"


def test_import_does_not_import_cupy() -> None:
    code = "import sys, xent_rs; print('cupy' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "False"
