"""Every error of the contract (SPEC.md, docs/semantics.md): the exact exception type, a message
that names the problem, and no output written before the error."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import core_binary, core_class, has_number, raises_exactly, raises_writing_into

xent_rs = pytest.importorskip("xent_rs")

Array = npt.NDArray[Any]

LOSSES = ("cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits")
MULTICLASS = ("cross_entropy", "nll_loss")
BINARY = ("binary_cross_entropy", "binary_cross_entropy_with_logits")
SOFTMAX_FAMILY = ("log_softmax", "softmax", "logsumexp")


def _x(shape: tuple[int, ...] = (4, 3), dtype: Any = np.float32) -> Array:
    rng = np.random.default_rng(7)
    return rng.standard_normal(shape).astype(dtype)


def _t(n: int = 4, c: int = 3) -> Array:
    return np.arange(n, dtype=np.int64) % c


def _probs(shape: tuple[int, ...] = (2, 3), dtype: Any = np.float32) -> Array:
    return np.full(shape, 0.5, dtype=dtype)


def _has_position(msg: str, index: tuple[int, ...], flat: int) -> bool:
    """A position printed as a tuple/list ``1, 2`` (any brackets) or as the flat index."""
    if len(index) == 1:
        return has_number(msg, str(index[0]))
    pattern = r",\s*".join(str(i) for i in index)
    return re.search(rf"(?<!\d){pattern}(?!\d)", msg) is not None or has_number(msg, str(flat))


def _loss_call(op: str, x: Any, t: Any, **kw: Any) -> Callable[..., Any]:
    fn = getattr(xent_rs, op)
    return lambda **extra: fn(x, t, **kw, **extra)


def _valid_args(op: str) -> tuple[Array, Array]:
    if op in MULTICLASS:
        x = _x()
        return (xent_rs.log_softmax(x) if op == "nll_loss" else x), _t()
    return _probs(), np.zeros((2, 3), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# TypeError: dtypes
# --------------------------------------------------------------------------------------------

BAD_DTYPE_INPUTS = {
    "complex64": (np.ones((4, 3), dtype=np.complex64), ("complex",)),
    "complex128": (np.ones((4, 3), dtype=np.complex128), ("complex",)),
    "object": (np.ones((4, 3), dtype=object), ("object",)),
    "str": (np.full((4, 3), "a"), ("str", "<u1", "unicode", "string")),
    "bytes": (np.full((4, 3), b"a"), ("bytes", "|s1", "string", "s1")),
}


@pytest.mark.parametrize("op", SOFTMAX_FAMILY)
@pytest.mark.parametrize("kind", sorted(BAD_DTYPE_INPUTS))
def test_unsupported_input_dtype_softmax_family(op: str, kind: str) -> None:
    x, words = BAD_DTYPE_INPUTS[kind]
    msg = raises_exactly(TypeError, getattr(xent_rs, op), x)
    assert any(w in msg.lower() for w in words), msg


@pytest.mark.parametrize("op", LOSSES)
@pytest.mark.parametrize("kind", sorted(BAD_DTYPE_INPUTS))
def test_unsupported_input_dtype_losses(op: str, kind: str) -> None:
    x, words = BAD_DTYPE_INPUTS[kind]
    t = _t() if op in MULTICLASS else np.zeros((4, 3), dtype=np.float32)
    msg = raises_exactly(TypeError, getattr(xent_rs, op), x, t)
    assert any(w in msg.lower() for w in words), msg
    raises_exactly(TypeError, getattr(xent_rs, op), x, t, return_grad=True)


@pytest.mark.parametrize("op", ["log_softmax_backward", "softmax_backward"])
def test_unsupported_dtype_backward(op: str) -> None:
    g = np.ones((4, 3), dtype=np.complex128)
    msg = raises_exactly(TypeError, getattr(xent_rs, op), g, _x(dtype=np.float64))
    assert "complex" in msg.lower()


def test_string_list_input_is_type_error() -> None:
    raises_exactly(TypeError, xent_rs.log_softmax, [["a", "b"], ["c", "d"]])


@pytest.mark.parametrize("op", MULTICLASS)
@pytest.mark.parametrize("tdtype", [np.float32, np.float64, np.float16])
def test_float_target_shaped_like_indices(op: str, tdtype: Any) -> None:
    x = _x()
    t = _t().astype(tdtype)
    msg = raises_exactly(TypeError, getattr(xent_rs, op), x, t)
    assert "int" in msg.lower(), f"the message should say to cast to integers: {msg}"


def test_float_target_shaped_like_indices_axis1() -> None:
    x = _x((2, 3, 5))
    t = np.zeros((2, 5), dtype=np.float64)
    msg = raises_exactly(TypeError, xent_rs.cross_entropy, x, t, axis=1)
    assert "int" in msg.lower()


@pytest.mark.parametrize("op", MULTICLASS)
@pytest.mark.parametrize("shape", [(4,), (4, 3)])
def test_bool_target(op: str, shape: tuple[int, ...]) -> None:
    t = np.ones(shape, dtype=np.bool_)
    msg = raises_exactly(TypeError, getattr(xent_rs, op), _x(), t)
    assert "bool" in msg.lower()


@pytest.mark.parametrize("kind", ["complex", "str"])
def test_unsupported_target_dtype(kind: str) -> None:
    t = np.zeros(4, dtype=np.complex64) if kind == "complex" else np.array(["a"] * 4)
    raises_exactly(TypeError, xent_rs.cross_entropy, _x(), t)


# --------------------------------------------------------------------------------------------
# ValueError: shapes
# --------------------------------------------------------------------------------------------


def _assert_shapes_named(msg: str, *shapes: tuple[int, ...]) -> None:
    for s in shapes:
        assert str(tuple(s)) in msg, f"{tuple(s)} missing from message: {msg}"


@pytest.mark.parametrize("op", MULTICLASS)
@pytest.mark.parametrize(
    ("xshape", "tshape", "axis"),
    [
        ((4, 3), (3,), -1),
        ((4, 3), (4, 1), -1),
        ((4, 3), (), -1),
        ((2, 3, 5), (2, 3), 1),
        ((2, 3, 5), (2, 5, 1), 1),
        ((7,), (1,), 0),
    ],
)
def test_hard_target_shape_mismatch(
    op: str, xshape: tuple[int, ...], tshape: tuple[int, ...], axis: int
) -> None:
    x = _x(xshape)
    t = np.zeros(tshape, dtype=np.int64)
    msg = raises_exactly(ValueError, getattr(xent_rs, op), x, t, axis=axis)
    _assert_shapes_named(msg, xshape, tshape)


@pytest.mark.parametrize("tshape", [(2, 4), (3, 3), (2, 3, 1)])
def test_soft_target_shape_mismatch(tshape: tuple[int, ...]) -> None:
    x = _x((2, 3))
    t = np.full(tshape, 0.25, dtype=np.float32)
    msg = raises_exactly(ValueError, xent_rs.cross_entropy, x, t)
    _assert_shapes_named(msg, (2, 3), tshape)


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize(("xshape", "tshape"), [((5,), (4,)), ((2, 3), (3, 2)), ((2, 3), (2, 1))])
def test_binary_target_shape_mismatch(
    op: str, xshape: tuple[int, ...], tshape: tuple[int, ...]
) -> None:
    x = _probs(xshape)
    t = np.zeros(tshape, dtype=np.float32)
    msg = raises_exactly(ValueError, getattr(xent_rs, op), x, t)
    _assert_shapes_named(msg, xshape, tshape)


@pytest.mark.parametrize("name", ["weight", "pos_weight"])
@pytest.mark.parametrize("wshape", [(4,), (3, 3), (2, 3, 2)])
def test_binary_weight_not_broadcastable(name: str, wshape: tuple[int, ...]) -> None:
    x = _probs((2, 3))
    t = np.zeros((2, 3), dtype=np.float32)
    fn = xent_rs.binary_cross_entropy_with_logits
    msg = raises_exactly(ValueError, fn, x, t, **{name: np.ones(wshape, dtype=np.float32)})
    _assert_shapes_named(msg, wshape, (2, 3))


@pytest.mark.parametrize("wshape", [(4,), (3, 3)])
def test_bce_weight_not_broadcastable(wshape: tuple[int, ...]) -> None:
    x = _probs((2, 3))
    t = np.zeros((2, 3), dtype=np.float32)
    fn = xent_rs.binary_cross_entropy
    msg = raises_exactly(ValueError, fn, x, t, weight=np.ones(wshape, dtype=np.float32))
    _assert_shapes_named(msg, wshape, (2, 3))


@pytest.mark.parametrize("op", MULTICLASS)
@pytest.mark.parametrize("wlen", [2, 4])
def test_weight_wrong_length(op: str, wlen: int) -> None:
    x, t = _valid_args(op)
    msg = raises_exactly(
        ValueError, getattr(xent_rs, op), x, t, weight=np.ones(wlen, dtype=np.float32)
    )
    assert "weight" in msg.lower()
    assert has_number(msg, str(wlen)), msg
    assert has_number(msg, "3"), msg


def test_weight_two_dimensional() -> None:
    msg = raises_exactly(ValueError, xent_rs.cross_entropy, _x(), _t(), weight=np.ones((1, 3)))
    assert "weight" in msg.lower()


def test_soft_target_weight_wrong_length() -> None:
    t = np.full((4, 3), 1 / 3, dtype=np.float32)
    msg = raises_exactly(
        ValueError, xent_rs.cross_entropy, _x(), t, weight=np.ones(5, dtype=np.float32)
    )
    assert "weight" in msg.lower()


@pytest.mark.parametrize("op", MULTICLASS)
@pytest.mark.parametrize("swshape", [(3,), (4, 3), (5,)])
def test_sample_weight_wrong_shape(op: str, swshape: tuple[int, ...]) -> None:
    x, t = _valid_args(op)
    sw = np.ones(swshape, dtype=np.float32)
    msg = raises_exactly(ValueError, getattr(xent_rs, op), x, t, sample_weight=sw)
    assert "sample_weight" in msg.lower() or "sample weight" in msg.lower(), msg
    _assert_shapes_named(msg, swshape)


# --------------------------------------------------------------------------------------------
# ValueError: axis, 0-d input, reduction, label_smoothing, ignore_index with soft targets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", SOFTMAX_FAMILY)
@pytest.mark.parametrize("axis", [2, -3, 7])
def test_axis_out_of_range_softmax_family(op: str, axis: int) -> None:
    msg = raises_exactly(ValueError, getattr(xent_rs, op), _x(), axis=axis)
    assert "axis" in msg.lower(), msg
    assert has_number(msg, str(abs(axis))), msg


@pytest.mark.parametrize("op", ["log_softmax_backward", "softmax_backward"])
def test_axis_out_of_range_backward(op: str) -> None:
    x = _x(dtype=np.float64)
    msg = raises_exactly(ValueError, getattr(xent_rs, op), x, x, axis=2)
    assert "axis" in msg.lower()


@pytest.mark.parametrize("op", ["log_softmax_backward", "softmax_backward"])
def test_backward_shape_mismatch(op: str) -> None:
    g = _x((4, 3), dtype=np.float64)
    out = _x((3, 4), dtype=np.float64)
    msg = raises_exactly(ValueError, getattr(xent_rs, op), g, out)
    _assert_shapes_named(msg, (4, 3), (3, 4))


@pytest.mark.parametrize("op", MULTICLASS)
@pytest.mark.parametrize("axis", [2, -3])
def test_axis_out_of_range_losses(op: str, axis: int) -> None:
    x, t = _valid_args(op)
    msg = raises_exactly(ValueError, getattr(xent_rs, op), x, t, axis=axis)
    assert "axis" in msg.lower()


@pytest.mark.parametrize("op", SOFTMAX_FAMILY)
def test_zero_dim_input_softmax_family(op: str) -> None:
    raises_exactly(ValueError, getattr(xent_rs, op), np.float64(1.5))
    raises_exactly(ValueError, getattr(xent_rs, op), np.array(1.5))


@pytest.mark.parametrize("op", MULTICLASS)
def test_zero_dim_input_losses(op: str) -> None:
    raises_exactly(ValueError, getattr(xent_rs, op), np.array(1.5), np.array(0))


@pytest.mark.parametrize("op", LOSSES)
@pytest.mark.parametrize("reduction", ["avg", "MEAN", "", "elementwise_mean"])
def test_bad_reduction(op: str, reduction: str) -> None:
    x, t = _valid_args(op)
    msg = raises_exactly(ValueError, getattr(xent_rs, op), x, t, reduction=reduction)
    assert "reduction" in msg.lower()
    if reduction:
        assert reduction in msg, msg


@pytest.mark.parametrize("value", [1.5, -0.1, 1.0000001, float("nan")])
@pytest.mark.parametrize("soft", [False, True])
def test_label_smoothing_out_of_range(value: float, soft: bool) -> None:
    t = np.full((4, 3), 1 / 3, dtype=np.float32) if soft else _t()
    msg = raises_exactly(ValueError, xent_rs.cross_entropy, _x(), t, label_smoothing=value)
    assert "label_smoothing" in msg.lower() or "label smoothing" in msg.lower()
    if value in (1.5, -0.1):
        assert str(value) in msg, msg


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_label_smoothing_bounds_accepted(value: float) -> None:
    loss = xent_rs.cross_entropy(_x(), _t(), label_smoothing=value)
    assert np.isfinite(loss)


@pytest.mark.parametrize("ignore_index", [0, 2, 5])
def test_soft_target_with_nonnegative_ignore_index(ignore_index: int) -> None:
    t = np.full((4, 3), 1 / 3, dtype=np.float32)
    msg = raises_exactly(ValueError, xent_rs.cross_entropy, _x(), t, ignore_index=ignore_index)
    assert "ignore_index" in msg.lower() or "ignore index" in msg.lower()


@pytest.mark.parametrize("ignore_index", [-100, -1])
def test_soft_target_with_negative_ignore_index_accepted(ignore_index: int) -> None:
    t = np.full((4, 3), 1 / 3, dtype=np.float32)
    loss = xent_rs.cross_entropy(_x(), t, ignore_index=ignore_index)
    assert np.isfinite(loss)


# --------------------------------------------------------------------------------------------
# ValueError: BCE probabilities
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), float("inf"), -float("inf"), 1.0001])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_probability_out_of_range(bad: float, dtype: Any) -> None:
    p = _probs((2, 3), dtype=dtype)
    p[1, 2] = bad
    y = np.zeros((2, 3), dtype=dtype)
    msg = raises_exactly(ValueError, xent_rs.binary_cross_entropy, p, y)
    if bad in (1.5, -0.1):
        assert str(bad) in msg, msg
    if math.isnan(bad):
        assert "nan" in msg.lower(), msg
    assert _has_position(msg, (1, 2), 5), f"position (1, 2) not in message: {msg}"
    raises_exactly(ValueError, xent_rs.binary_cross_entropy, p, y, return_grad=True)


def test_bce_reports_first_bad_probability() -> None:
    p = np.full(10, 0.5)
    p[3] = 2.5
    p[7] = -4.0
    msg = raises_exactly(ValueError, xent_rs.binary_cross_entropy, p, np.zeros(10))
    assert "2.5" in msg, msg
    assert has_number(msg, "3"), msg


def test_bce_probability_bounds_accepted_and_targets_unchecked() -> None:
    p = np.array([0.0, 1.0, 0.3])
    y = np.array([1.5, -0.5, 2.0])  # targets are not validated
    loss, grad = xent_rs.binary_cross_entropy(p, y, reduction="none", return_grad=True)
    assert loss.shape == (3,)
    assert grad.shape == (3,)
    assert np.all(np.isfinite(loss))


# --------------------------------------------------------------------------------------------
# grad_output and grad_out
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", LOSSES)
@pytest.mark.parametrize(
    ("reduction", "gshape"), [("mean", (4,)), ("sum", (1,)), ("none", (3,)), ("none", ())]
)
def test_grad_output_wrong_shape(op: str, reduction: str, gshape: tuple[int, ...]) -> None:
    if op in MULTICLASS:
        x, t = _valid_args(op)
        if reduction == "none" and gshape == ():
            gshape = (4, 3)
    else:
        x, t = _probs((4,)), np.zeros(4, dtype=np.float32)
    g = np.ones(gshape, dtype=np.float32)
    fn = getattr(xent_rs, op)
    msg = raises_exactly(ValueError, fn, x, t, reduction=reduction, return_grad=True, grad_output=g)
    assert "grad_output" in msg, msg


def test_grad_out_wrong_shape() -> None:
    x = _x()
    buf = np.zeros((3, 4), dtype=np.float32)
    msg = raises_exactly(ValueError, xent_rs.cross_entropy, x, _t(), return_grad=True, grad_out=buf)
    assert "grad_out" in msg
    _assert_shapes_named(msg, (3, 4), (4, 3))


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_grad_out_wrong_dtype(dtype: Any) -> None:
    buf = np.zeros((4, 3), dtype=dtype)
    msg = raises_exactly(
        TypeError, xent_rs.cross_entropy, _x(), _t(), return_grad=True, grad_out=buf
    )
    assert "grad_out" in msg


@pytest.mark.parametrize("kind", ["strided", "fortran", "negstride"])
def test_grad_out_not_contiguous(kind: str) -> None:
    if kind == "strided":
        buf = np.zeros((4, 6), dtype=np.float32)[:, ::2]
    elif kind == "fortran":
        buf = np.zeros((4, 3), dtype=np.float32, order="F")
    else:
        buf = np.zeros((4, 3), dtype=np.float32)[::-1]
    assert not buf.flags.c_contiguous
    msg = raises_exactly(
        ValueError, xent_rs.cross_entropy, _x(), _t(), return_grad=True, grad_out=buf
    )
    assert "grad_out" in msg


def test_grad_out_read_only() -> None:
    buf = np.zeros((4, 3), dtype=np.float32)
    buf.flags.writeable = False
    msg = raises_exactly(
        ValueError, xent_rs.cross_entropy, _x(), _t(), return_grad=True, grad_out=buf
    )
    assert "grad_out" in msg
    assert np.all(buf == 0.0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("op", ["cross_entropy", "log_softmax", "softmax"])
def test_output_not_in_native_byte_order(op: str, dtype: Any) -> None:
    # An input in the other byte order is converted; an output is written in place, so it
    # cannot be: a TypeError (its dtype is not the input's) that says why.
    swapped = np.dtype(dtype).newbyteorder("S")
    buf = np.full((4, 3), SENTINEL, dtype=swapped)
    x = _x(dtype=dtype)
    name = "grad_out" if op == "cross_entropy" else "out"
    for source in (x, x.astype(swapped)):  # a native input, and one like the output
        msg = raises_writing_into(TypeError, op, source, _t(), buf)
        assert f"{name} must be in native byte order" in msg, msg
        assert "cannot be converted" in msg, msg
        assert np.all(buf == SENTINEL)


@pytest.mark.parametrize("op", ["cross_entropy", "log_softmax", "softmax"])
def test_output_misaligned(op: str) -> None:
    raw = np.zeros(4 * 3 * 4 + 1, np.uint8)[1:]
    buf = raw.view(np.float32).reshape(4, 3)
    buf[...] = SENTINEL
    assert buf.flags.c_contiguous and not buf.flags.aligned
    msg = raises_writing_into(ValueError, op, _x(), _t(), buf)
    name = "grad_out" if op == "cross_entropy" else "out"
    assert f"{name} must be aligned" in msg, msg
    assert np.all(buf == SENTINEL)


def test_grad_out_partial_overlap_with_input() -> None:
    base = np.zeros(20, dtype=np.float32)
    x = base[:12].reshape(4, 3)
    x[...] = _x()
    buf = base[3:15].reshape(4, 3)
    assert np.shares_memory(x, buf)
    assert x.ctypes.data != buf.ctypes.data
    before = base.copy()
    msg = raises_exactly(ValueError, xent_rs.cross_entropy, x, _t(), return_grad=True, grad_out=buf)
    assert "grad_out" in msg
    np.testing.assert_array_equal(base, before)


def test_grad_out_overlapping_another_argument() -> None:
    x = _x()
    soft = np.full((4, 3), 1 / 3, dtype=np.float32)
    weight = np.ones(12, dtype=np.float32)
    cases: list[tuple[Any, dict[str, Any]]] = [
        (soft, {"grad_out": soft}),  # the soft target itself
        (_t(), {"weight": weight[:3], "grad_out": weight.reshape(4, 3)}),
    ]
    for target, kw in cases:
        before = {k: v.copy() for k, v in kw.items()}
        msg = raises_exactly(ValueError, xent_rs.cross_entropy, x, target, return_grad=True, **kw)
        assert "grad_out overlaps another argument" in msg, msg
        for k, v in kw.items():
            np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("kind", ["float16", "strided", "big-endian"])
@pytest.mark.parametrize("op", ["cross_entropy", "log_softmax", "softmax"])
def test_output_overlapping_a_converted_input(kind: str, op: str) -> None:
    # The core reads a converted copy of these inputs, so the check is against the caller's.
    dtype = {"float16": np.float16, "strided": np.float32, "big-endian": ">f4"}[kind]
    step = 2 if kind == "strided" else 1
    base = np.zeros(40, dtype=dtype)
    x = base[: 12 * step : step].reshape(4, 3)
    x[...] = _x()
    buf = base[3:15].reshape(4, 3)
    if kind == "big-endian":  # a native float32 view of the same bytes
        buf = buf.view(np.float32)
    before = base.copy()
    msg = raises_writing_into(ValueError, op, x, _t(), buf)
    assert "overlaps the input" in msg, msg
    np.testing.assert_array_equal(base, before)


def test_float16_output_may_be_the_input() -> None:
    x = _x().astype(np.float16)
    want = xent_rs.log_softmax(x)
    assert xent_rs.log_softmax(x, out=x) is x
    np.testing.assert_array_equal(x, want)


# --------------------------------------------------------------------------------------------
# IndexError: class indices
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", MULTICLASS)
@pytest.mark.parametrize("bad", [3, 7, -2, -101])
def test_target_out_of_range(op: str, bad: int) -> None:
    x, _ = _valid_args(op)
    x = np.concatenate([x, x])  # 8 rows
    t = np.array([0, 1, 2, 1, 0, bad, 1, 2], dtype=np.int64)
    msg = raises_exactly(IndexError, getattr(xent_rs, op), x, t)
    assert has_number(msg, str(bad)), f"bad value {bad} not in message: {msg}"
    assert has_number(msg, "5"), f"position 5 not in message: {msg}"
    raises_exactly(IndexError, getattr(xent_rs, op), x, t, return_grad=True)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_target_equal_to_num_classes(reduction: str) -> None:
    t = np.array([0, 1, 3, 2], dtype=np.int64)
    msg = raises_exactly(IndexError, xent_rs.cross_entropy, _x(), t, reduction=reduction)
    assert has_number(msg, "3"), msg
    assert has_number(msg, "2"), msg


def test_target_out_of_range_reports_position_nd() -> None:
    x = _x((2, 3, 4))  # classes on axis 1 (C = 3), target (2, 4)
    t = np.zeros((2, 4), dtype=np.int64)
    t[1, 2] = 9
    msg = raises_exactly(IndexError, xent_rs.cross_entropy, x, t, axis=1)
    assert has_number(msg, "9"), msg
    assert _has_position(msg, (1, 2), 6), f"position (1, 2) not in message: {msg}"


@pytest.mark.parametrize("tdtype", [np.int8, np.uint8, np.int32, np.uint64])
def test_target_out_of_range_any_integer_dtype(tdtype: Any) -> None:
    t = np.array([0, 1, 2, 100], dtype=tdtype)
    msg = raises_exactly(IndexError, xent_rs.cross_entropy, _x(), t)
    assert has_number(msg, "100"), msg


def test_huge_uint64_target_is_not_taken_for_a_negative_ignore_index() -> None:
    # 2**64 - 100 reads as -100 (the default ignore_index) if narrowed to int64.
    t = np.array([0, 1, 2, 2**64 - 100], dtype=np.uint64)
    msg = raises_exactly(IndexError, xent_rs.cross_entropy, _x(), t)
    assert has_number(msg, str(2**64 - 100)), msg


@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("value", [2**63, 2**64 - 100, -(2**63) - 1])
def test_ignore_index_beyond_64_bits_is_value_error(op: str, value: int) -> None:
    t = np.array([0, 1, 2, 1], dtype=np.uint64)
    msg = raises_exactly(ValueError, getattr(xent_rs, op), _x(), t, ignore_index=value)
    assert "ignore_index" in msg and has_number(msg, str(value)), msg


NOT_INTEGERS = [1.5, 1.0, True, False, np.float64(1.0), np.float32(2.0), np.bool_(True), "1"]


@pytest.mark.parametrize("value", NOT_INTEGERS, ids=repr)
@pytest.mark.parametrize("kw", [{}, {"weight": np.ones(3, np.float32)}], ids=["plain", "weight"])
@pytest.mark.parametrize("op", MULTICLASS)
def test_ignore_index_not_an_integer_is_type_error(op: str, kw: dict[str, Any], value: Any) -> None:
    # torch raises TypeError too; int(1.5) == int(True) == 1 would ignore class 1 silently
    x, t = _valid_args(op)
    msg = raises_exactly(TypeError, getattr(xent_rs, op), x, t, ignore_index=value, **kw)
    assert "ignore_index must be an integer" in msg, msg
    assert type(value).__name__ in msg, msg


@pytest.mark.parametrize("value", NOT_INTEGERS, ids=repr)
@pytest.mark.parametrize(
    "make", ["CrossEntropyAccumulator", "NLLLossAccumulator", "dask.cross_entropy", "dask.nll_loss"]
)
def test_ignore_index_not_an_integer_everywhere(make: str, value: Any) -> None:
    from xent_rs import streaming

    if make.startswith("dask."):
        da = pytest.importorskip("dask.array")
        import xent_rs.dask

        x = da.from_array(_x(), chunks=(2, 3))
        call = lambda: getattr(xent_rs.dask, make[5:])(x, _t(), ignore_index=value)  # noqa: E731
    else:
        call = lambda: getattr(streaming, make)(ignore_index=value)  # noqa: E731
    msg = raises_exactly(TypeError, call)
    assert "ignore_index must be an integer" in msg and type(value).__name__ in msg, msg


@pytest.mark.parametrize("op", MULTICLASS)
def test_ignore_index_numpy_integer_is_accepted(op: str) -> None:
    x, _ = _valid_args(op)
    t = np.array([0, 1, 2, 1], dtype=np.int64)
    want = getattr(xent_rs, op)(x, t, ignore_index=1)
    for value in (np.int64(1), np.int8(1), np.uint16(1), np.array(1)):
        assert getattr(xent_rs, op)(x, t, ignore_index=value) == want
    from xent_rs import streaming

    assert streaming.CrossEntropyAccumulator(ignore_index=np.int32(1)).ignore_index == 1


@pytest.mark.parametrize("kw", [{}, {"return_grad": True}, {"reduction": "none"}])
@pytest.mark.parametrize("op", MULTICLASS)
def test_target_of_an_input_without_classes(op: str, kw: dict[str, Any]) -> None:
    x = np.zeros((3, 0))
    msg = raises_exactly(IndexError, getattr(xent_rs, op), x, np.array([-100, 0, 0]), **kw)
    assert "target 0 at position (1,) is out of range: the input has 0 classes" in msg, msg
    assert "0 to 0" not in msg, msg
    # every target ignored is fine: nothing is counted
    losses = getattr(xent_rs, op)(x, np.full(3, -100), reduction="none")
    np.testing.assert_array_equal(losses, np.zeros(3))


def test_negative_target_equal_to_ignore_index_is_fine() -> None:
    t = np.array([0, -1, 2, -1], dtype=np.int64)
    loss = xent_rs.cross_entropy(_x(), t, ignore_index=-1)
    assert np.isfinite(loss)
    msg = raises_exactly(IndexError, xent_rs.cross_entropy, _x(), t)  # default ignore_index=-100
    assert has_number(msg, "-1") or has_number(msg, "1"), msg


def test_ignore_index_inside_class_range_is_ignored_not_an_error() -> None:
    t = np.array([0, 1, 2, 1], dtype=np.int64)
    loss = xent_rs.cross_entropy(_x(), t, ignore_index=1)
    assert np.isfinite(loss)


# --------------------------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------------------------


def test_set_num_threads_zero(restore_threads: Any) -> None:
    before = xent_rs.get_num_threads()
    msg = raises_exactly(ValueError, xent_rs.set_num_threads, 0)
    assert has_number(msg, "0") or "positive" in msg.lower() or ">= 1" in msg, msg
    assert xent_rs.get_num_threads() == before


# --------------------------------------------------------------------------------------------
# errors are raised before any output is written
# --------------------------------------------------------------------------------------------

SENTINEL = -12345.0


def test_index_error_leaves_grad_out_untouched() -> None:
    x = _x()
    t = np.array([0, 1, 5, 1], dtype=np.int64)
    buf = np.full_like(x, SENTINEL)
    raises_exactly(IndexError, xent_rs.cross_entropy, x, t, return_grad=True, grad_out=buf)
    assert np.all(buf == SENTINEL)


@pytest.mark.parametrize("bad_row", [0, 3])
def test_index_error_leaves_in_place_input_untouched(bad_row: int) -> None:
    x = _x((4096, 16))  # large enough to be split across threads
    t = np.arange(4096, dtype=np.int64) % 16
    t[bad_row * 1365] = 16
    before = x.copy()
    raises_exactly(IndexError, xent_rs.cross_entropy, x, t, return_grad=True, grad_out=x)
    np.testing.assert_array_equal(x, before)


def test_value_errors_leave_grad_out_untouched() -> None:
    x = _x()
    t = _t()
    buf = np.full_like(x, SENTINEL)
    calls: list[tuple[type[BaseException], dict[str, Any]]] = [
        (ValueError, {"label_smoothing": 1.5}),
        (ValueError, {"reduction": "avg"}),
        (ValueError, {"weight": np.ones(5, dtype=np.float32)}),
        (ValueError, {"grad_output": np.ones(3, dtype=np.float32), "reduction": "none"}),
    ]
    for exc, kw in calls:
        raises_exactly(exc, xent_rs.cross_entropy, x, t, return_grad=True, grad_out=buf, **kw)
        assert np.all(buf == SENTINEL), kw


def _accepts_grad_out(op: str) -> bool:
    try:
        return "grad_out" in inspect.signature(getattr(xent_rs, op)).parameters
    except (TypeError, ValueError):
        return op == "cross_entropy"


@pytest.mark.parametrize("op", BINARY)
def test_bce_error_leaves_in_place_input_untouched(op: str) -> None:
    if not _accepts_grad_out(op):
        pytest.skip(f"{op} takes no grad_out")
    p = np.linspace(0.01, 0.99, 50_000).astype(np.float32)
    bad = np.nan if op == "binary_cross_entropy" else 0.5
    p[-1] = bad
    y = np.zeros_like(p) if op == "binary_cross_entropy" else np.zeros(3, dtype=np.float32)
    before = p.copy()
    raises_exactly(ValueError, getattr(xent_rs, op), p, y, return_grad=True, grad_out=p)
    np.testing.assert_array_equal(p, before)


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
def test_error_leaves_out_untouched(op: str) -> None:
    x = _x()
    out = np.full_like(x, SENTINEL)
    raises_exactly(ValueError, getattr(xent_rs, op), x, axis=3, out=out)
    assert np.all(out == SENTINEL)
    xc = np.ones((4, 3), dtype=np.complex64)
    raises_exactly(TypeError, getattr(xent_rs, op), xc, out=out)
    assert np.all(out == SENTINEL)


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
def test_out_wrong_shape(op: str) -> None:
    out = np.full((3, 4), SENTINEL, dtype=np.float32)
    raises_exactly(ValueError, getattr(xent_rs, op), _x(), out=out)
    assert np.all(out == SENTINEL)


def test_errors_say_which_argument_is_at_fault_and_where() -> None:
    """Front ends read ``argument``/``position`` (``xent_rs._errors``), never message text."""
    from xent_rs import _errors

    with pytest.raises(IndexError) as info:
        xent_rs.cross_entropy(np.zeros((3, 4)), np.array([[0], [5], [1]]).reshape(3))
    assert getattr(info.value, "argument", None) == "target"
    assert _errors.position_of(info.value) == (1,)
    with pytest.raises(IndexError) as info:
        xent_rs.streaming.NLLLossAccumulator(axis=1).update(
            np.zeros((2, 3, 2)), np.array([[0, 1], [1, 9]])
        )
    assert (_errors.argument_of(info.value), _errors.position_of(info.value)) == ("target", (1, 1))
    with pytest.raises(ValueError) as info:
        xent_rs.log_loss(["a", "c"], [[0.5, 0.5], [0.5, 0.5]], labels=["a", "b"])
    assert _errors.argument_of(info.value) == "y_true"
    acc = xent_rs.streaming.LogLossAccumulator()
    with pytest.raises(ValueError) as info:
        acc.update([[0.5, 0.5], [0.5, 0.5]], [0, 2])
    assert (_errors.argument_of(info.value), _errors.position_of(info.value)) == ("y_true", (1,))


def _message(call: Any) -> tuple[type[BaseException], str]:
    try:
        call()
    except (TypeError, ValueError, IndexError) as exc:
        return type(exc), str(exc)
    raise AssertionError("no error")


def test_every_path_refuses_an_option_in_the_same_words() -> None:
    """The core, the spec every front end builds its options with (the CuPy backend's too;
    no GPU needed), the accumulators and ``xent_rs.dask`` give the same exception and text
    for the same bad option."""
    pytest.importorskip("dask")
    import xent_rs.dask
    from xent_rs import _spec

    x, t = np.zeros((4, 3)), np.array([0, 1, 2, 0])
    bad_reduction = {
        _message(lambda: xent_rs.cross_entropy(x, t, reduction="foo")),
        _message(lambda: xent_rs.dask.cross_entropy(x, t, reduction="foo")),
        _message(lambda: _spec.reduction("foo")),
        _message(lambda: _spec.cross_entropy(reduction="foo")),
    }
    assert bad_reduction == {(ValueError, 'reduction must be "none", "mean" or "sum", got "foo"')}
    bad_smoothing = {
        _message(lambda: xent_rs.cross_entropy(x, t, label_smoothing=1.5)),
        _message(lambda: xent_rs.streaming.CrossEntropyAccumulator(label_smoothing=1.5)),
        _message(lambda: _spec.label_smoothing(1.5)),
    }
    assert bad_smoothing == {(ValueError, "label_smoothing must be between 0.0 and 1.0, got 1.5")}
    for value in (1.5, True, 2**64):
        got = {
            _message(lambda v=value: xent_rs.cross_entropy(x, t, ignore_index=v)),
            _message(lambda v=value: xent_rs.streaming.NLLLossAccumulator(ignore_index=v)),
        }
        assert len(got) == 1, got


NEW_OPTIONS = [
    # (public function, keyword, bad value, the core's call with that value)
    ("cross_entropy", "z_loss", -1.0, lambda x, t, v: _core_ce(x, t, z_loss=v)),
    ("cross_entropy", "z_loss", math.inf, lambda x, t, v: _core_ce(x, t, z_loss=v)),
    ("cross_entropy", "softcap", 0.0, lambda x, t, v: _core_ce(x, t, softcap=v)),
    ("cross_entropy", "softcap", math.nan, lambda x, t, v: _core_ce(x, t, softcap=v)),
    ("focal_loss", "gamma", -0.5, lambda x, t, v: _core_focal(x, t, v)),
    ("binary_focal_loss_with_logits", "gamma", -1.0, lambda x, t, v: _core_bfocal(x, v, 0.25)),
    ("binary_focal_loss_with_logits", "alpha", 1.5, lambda x, t, v: _core_bfocal(x, 2.0, v)),
]


def _core_ce(x: Any, t: Any, z_loss: float = 0.0, softcap: float | None = None) -> Any:
    return core_class("cross_entropy", x, t, z_loss=z_loss, softcap=softcap)


def _core_focal(x: Any, t: Any, gamma: float) -> Any:
    return core_class("focal_loss", x, t, gamma=gamma)


def _core_bfocal(x: Any, gamma: float, alpha: float) -> Any:
    loss = "binary_focal_loss_with_logits"
    return core_binary(loss, x, np.zeros_like(x), gamma=gamma, alpha=alpha)


@pytest.mark.parametrize(("fn", "keyword", "value", "core"), NEW_OPTIONS)
def test_new_options_are_refused_in_the_core_s_words_everywhere(
    fn: str, keyword: str, value: float, core: Any
) -> None:
    """z_loss, softcap, gamma, alpha: the public function, its accumulator, its dask twin and
    the native core give the same ValueError, naming the value."""
    pytest.importorskip("dask")
    import xent_rs.dask

    x, t = np.zeros((4, 3)), np.array([0, 1, 2, 0])
    target = t if fn != "binary_focal_loss_with_logits" else np.zeros((4, 3))
    got = {
        _message(lambda: getattr(xent_rs, fn)(x, target, **{keyword: value})),
        _message(lambda: xent_rs.streaming.accumulator(fn, **{keyword: value})),
        _message(lambda: getattr(xent_rs.dask, fn)(x, target, **{keyword: value})),
        _message(lambda: core(x, t, value)),
    }
    assert len(got) == 1, got
    ((kind, text),) = got
    assert kind is ValueError
    assert keyword in text and ("NaN" if math.isnan(value) else repr(value)) in text


def test_kl_div_refuses_a_bad_reduction_and_mismatched_shapes() -> None:
    x = np.log(np.full((2, 3), 1 / 3))
    for call in (
        lambda: xent_rs.kl_div(x, np.exp(x), reduction="avg"),
        lambda: xent_rs.streaming.KLDivAccumulator(reduction="avg"),
    ):
        with pytest.raises(ValueError, match=r'reduction must be .*"batchmean".*got "avg"'):
            call()
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)|\(3, 2\).*\(2, 3\)"):
        xent_rs.kl_div(x, np.ones((3, 2)) / 2)
    with pytest.raises(TypeError, match="kl_div takes no sample_weight"):
        xent_rs.streaming.KLDivAccumulator().update(x, np.exp(x), np.ones(2))


def test_focal_loss_refuses_soft_targets_and_out_of_range_classes() -> None:
    x = np.zeros((2, 3))
    with pytest.raises(IndexError, match=r"target 3 at position \(1,\)") as info:
        xent_rs.focal_loss(x, np.array([0, 3]))
    assert getattr(info.value, "argument", None) == "target"
    with pytest.raises(TypeError):
        xent_rs.focal_loss(x, np.full((2, 3), 1 / 3))


def test_counts_beyond_their_range_are_value_errors() -> None:
    for call, value in [
        (xent_rs.set_num_threads, 2**70),
        (xent_rs.set_num_threads, 5000),
        (xent_rs.set_num_threads, -(2**70)),
        (xent_rs.set_output_cache, 2**70),
        (xent_rs.set_output_cache, -1),
    ]:
        with pytest.raises(ValueError, match=r"threads|cache"):
            call(value)
    with pytest.raises(TypeError):
        xent_rs.set_num_threads(2.5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda x, t: core_class("nll_loss", x, t, label_smoothing=0.1),
            "nll_loss has no label_smoothing option",
        ),
        (lambda x, t: core_class("nll_loss", x, t, gamma=2.0), "nll_loss has no gamma option"),
        (
            lambda x, t: core_class("focal_loss", x, t, z_loss=1e-4),
            "focal_loss has no z_loss option",
        ),
        (
            lambda x, t: core_class("focal_loss", x, t, softcap=5.0),
            "focal_loss has no softcap option",
        ),
        (
            lambda x, t: core_class("cross_entropy", x, t, gamma=2.0),
            "cross_entropy has no gamma option",
        ),
        (lambda x, t: core_class("softmax", x, t), 'no such loss in this family: "softmax"'),
        (
            lambda x, t: core_binary("binary_cross_entropy", x, x, None, x[0]),
            "binary_cross_entropy has no pos_weight",
        ),
        (
            lambda x, t: core_binary("binary_focal_loss_with_logits", x, x, None, x[0], gamma=2.0),
            "binary_focal_loss_with_logits has no pos_weight",
        ),
        (
            lambda x, t: core_binary("binary_cross_entropy_with_logits", x, x, alpha=0.25),
            "binary_cross_entropy_with_logits has no gamma or alpha (those are the focal loss's)",
        ),
        (
            lambda x, t: core_binary("cross_entropy", x, x),
            'no such loss in this family: "cross_entropy"',
        ),
    ],
)
def test_the_core_refuses_options_its_loss_does_not_have(call: Any, message: str) -> None:
    """The native core reads a loss's options from the ``_spec`` object and checks it again: an
    option of another loss of the family, or a loss of another family, is a ValueError."""
    x, t = np.full((4, 3), 0.5), np.array([0, 1, 2, 0])
    assert raises_exactly(ValueError, call, x, t) == message
