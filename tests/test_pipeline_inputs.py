"""Arrays as data pipelines hand them over: byte-swapped (big-endian files, network buffers),
misaligned (``np.frombuffer`` at an odd offset, unpickled buffers), masked (``numpy.ma``) and
pandas objects backed by pyarrow. Every public function and accumulator takes the first two as
it takes native arrays, with the very same bits; masked arrays are a ``TypeError`` that names
the argument; pandas extension dtypes are converted."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import assert_same_bits

import xent_rs
from xent_rs import _backend, _scoring, streaming

Array = npt.NDArray[Any]
FLOATS = (np.float32, np.float64)
SWAPPED = ">" if sys.byteorder == "little" else "<"


def swapped(a: Array) -> Array:
    """The same values in the other byte order."""
    b = a.astype(a.dtype.newbyteorder(SWAPPED))
    assert not b.dtype.isnative
    return b


def misaligned(a: Array) -> Array:
    """The same values, C-contiguous, at an address that is not a multiple of the itemsize."""
    raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
    b = raw.view(a.dtype).reshape(a.shape)
    b[...] = a
    assert b.flags.c_contiguous and not b.flags.aligned
    return b


def masked(a: Array) -> Any:
    mask = np.zeros(a.shape, bool)
    mask.flat[0] = True
    return np.ma.masked_array(a, mask=mask)


CONVERSIONS = {"swapped": swapped, "misaligned": misaligned}


def _arrays_of(dtype: Any) -> dict[str, Array]:
    rng = np.random.default_rng(5)
    x = (2.0 * rng.standard_normal((8, 4))).astype(dtype)
    t = np.array([0, 1, 2, 3, 3, 2, 1, 0], dtype=np.int64)
    p = xent_rs.softmax(x.astype(np.float64)).astype(dtype)
    return {
        "x": x,
        "t": t,
        "p": p,
        "p1": rng.uniform(0.05, 0.95, 8).astype(dtype),  # positive-class probabilities
        "t2": t % 2,
        "names": np.array(["ant", "bee", "cat", "dog"])[t],
        "soft": p[::-1].copy(),
        "y": (rng.random((8, 4)) < 0.5).astype(dtype),
        "w": rng.uniform(0.5, 2.0, 4).astype(dtype),
        "sw": rng.uniform(0.5, 2.0, 8).astype(dtype),
        "g": rng.standard_normal((8, 4)).astype(dtype),
        "g8": rng.standard_normal(8).astype(dtype),
    }


def _accumulated(acc: streaming.Accumulator, *args: Any, **kw: Any) -> tuple[Any, ...]:
    losses = acc.update(*args, return_losses=True, **kw)
    return losses, acc.result(), acc.denominator


Call = Callable[[dict[str, Any]], Any]


def _hard_target_call(loss: Callable[..., Any]) -> tuple[Call, dict[str, str]]:
    """cross_entropy or nll_loss with every array argument their hard targets take, by name."""
    names = {"x": "input", "t": "target", "w": "weight", "sw": "sample_weight", "g8": "grad_output"}

    def call(a: dict[str, Any]) -> Any:
        arrays = {arg: a[key] for key, arg in names.items()}
        return loss(**arrays, reduction="none", return_grad=True)

    return call, names


def _weighted_update(
    make: Callable[[dict[str, Any]], streaming.Accumulator], first: str, second: str
) -> Call:
    """The accumulator ``make(a)`` updated with ``a[first]``, ``a[second]`` and sample weights."""
    return lambda a: _accumulated(make(a), a[first], a[second], sample_weight=a["sw"])


# Every public function and accumulator, as (the call, {array key: the argument's name}).
CALLS: dict[str, tuple[Call, dict[str, str]]] = {
    "log_softmax": (lambda a: xent_rs.log_softmax(a["x"]), {"x": "input"}),
    "softmax": (lambda a: xent_rs.softmax(a["x"], axis=0), {"x": "input"}),
    "logsumexp": (lambda a: xent_rs.logsumexp(a["x"]), {"x": "input"}),
    "log_softmax_backward": (
        lambda a: xent_rs.log_softmax_backward(a["g"], a["x"]),
        {"g": "grad_output", "x": "output"},
    ),
    "softmax_backward": (
        lambda a: xent_rs.softmax_backward(a["g"], a["p"]),
        {"g": "grad_output", "p": "output"},
    ),
    "cross_entropy": _hard_target_call(xent_rs.cross_entropy),
    "cross_entropy_plain": (lambda a: xent_rs.cross_entropy(a["x"], a["t"]), {"x": "input"}),
    "cross_entropy_soft": (
        lambda a: xent_rs.cross_entropy(
            a["x"], a["soft"], sample_weight=a["sw"], label_smoothing=0.1, return_grad=True
        ),
        {"x": "input", "soft": "target", "sw": "sample_weight"},
    ),
    "nll_loss": _hard_target_call(xent_rs.nll_loss),
    "binary_cross_entropy": (
        lambda a: xent_rs.binary_cross_entropy(
            a["p"], a["y"], weight=a["w"], reduction="none", return_grad=True, grad_output=a["g"]
        ),
        {"p": "input", "y": "target", "w": "weight", "g": "grad_output"},
    ),
    "binary_cross_entropy_with_logits": (
        lambda a: xent_rs.binary_cross_entropy_with_logits(
            a["x"],
            a["y"],
            weight=a["g"],
            pos_weight=a["w"],
            reduction="none",
            return_grad=True,
            grad_output=a["g"],
        ),
        {"x": "input", "y": "target", "g": "weight", "w": "pos_weight"},
    ),
    "log_loss": (
        lambda a: xent_rs.log_loss(a["t"], a["p"], sample_weight=a["sw"]),
        {"t": "y_true", "p": "y_proba", "sw": "sample_weight"},
    ),
    "log_loss_positive_column": (
        lambda a: xent_rs.log_loss(a["t2"], a["p1"], normalize=False),
        {"t2": "y_true", "p1": "y_proba"},
    ),
    "log_loss_labels": (
        lambda a: xent_rs.log_loss(a["t"], a["p"], labels=[0, 1, 2, 3]),
        {"t": "y_true", "p": "y_proba"},
    ),
    "log_loss_string_labels": (
        lambda a: xent_rs.log_loss(a["names"], a["p"], sample_weight=a["sw"]),
        {"names": "y_true", "p": "y_proba", "sw": "sample_weight"},
    ),
    "log_loss_from_logits": (
        lambda a: xent_rs.log_loss(a["t"], a["x"], sample_weight=a["sw"], from_logits=True),
        {"t": "y_true", "x": "y_proba", "sw": "sample_weight"},
    ),
    "CrossEntropyAccumulator": (
        _weighted_update(lambda a: streaming.CrossEntropyAccumulator(weight=a["w"]), "x", "t"),
        {"x": "input", "t": "target", "w": "weight", "sw": "sample_weight"},
    ),
    "CrossEntropyAccumulator_soft": (
        lambda a: _accumulated(streaming.CrossEntropyAccumulator(), a["x"], a["soft"]),
        {"x": "input", "soft": "target"},
    ),
    "NLLLossAccumulator": (
        _weighted_update(lambda a: streaming.NLLLossAccumulator(weight=a["w"]), "x", "t"),
        {"x": "input", "t": "target", "w": "weight", "sw": "sample_weight"},
    ),
    "BinaryCrossEntropyAccumulator": (
        _weighted_update(
            lambda a: streaming.BinaryCrossEntropyAccumulator(weight=a["w"]), "p", "y"
        ),
        {"p": "input", "y": "target", "w": "weight", "sw": "sample_weight"},
    ),
    "BinaryCrossEntropyWithLogitsAccumulator": (
        _weighted_update(
            lambda a: streaming.BinaryCrossEntropyWithLogitsAccumulator(
                weight=a["w"], pos_weight=a["w"]
            ),
            "x",
            "y",
        ),
        {"x": "input", "y": "target", "w": "weight", "sw": "sample_weight"},
    ),
    "LogLossAccumulator": (
        _weighted_update(lambda _: streaming.LogLossAccumulator(), "p", "t"),
        {"p": "y_proba", "t": "y_true", "sw": "sample_weight"},
    ),
    "LogLossAccumulator_labels": (
        lambda a: _accumulated(streaming.LogLossAccumulator(labels=[0, 1, 2, 3]), a["p"], a["t"]),
        {"p": "y_proba", "t": "y_true"},
    ),
    "LogLossAccumulator_from_logits": (
        _weighted_update(lambda _: streaming.LogLossAccumulator(from_logits=True), "x", "t"),
        {"x": "y_proba", "t": "y_true", "sw": "sample_weight"},
    ),
}


def _results(res: Any) -> list[Any]:
    return list(res) if isinstance(res, tuple) else [res]


def _assert_same(got: Any, want: Any, what: str) -> None:
    g, w = _results(got), _results(want)
    assert len(g) == len(w), what
    for i, (a, b) in enumerate(zip(g, w, strict=True)):
        assert type(a) is type(b), f"{what}[{i}]: {type(a)} != {type(b)}"
        assert_same_bits(a, b, what=f"{what}[{i}]")


# --------------------------------------------------------------------------------------------
# byte order and alignment: converted once, the same bits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("conversion", sorted(CONVERSIONS))
@pytest.mark.parametrize("call", sorted(CALLS))
def test_swapped_and_misaligned_arguments_give_the_same_bits(
    call: str, conversion: str, dtype: Any
) -> None:
    fn, names = CALLS[call]
    convert = CONVERSIONS[conversion]
    arrays = _arrays_of(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. log_loss's "do not sum to one": none expected
        want = fn(arrays)
        for key in [*names, "all"]:
            keys = list(names) if key == "all" else [key]
            variant = {k: convert(v) if k in keys else v for k, v in arrays.items()}
            _assert_same(fn(variant), want, f"{call} with {conversion} {key}")
            for k in keys:  # inputs are not modified
                assert_same_bits(variant[k].astype(arrays[k].dtype), arrays[k], k)


def test_log_loss_takes_probabilities_and_labels_as_they_are() -> None:
    # no copy of what the core reads in place: C-contiguous, aligned, native
    p = _arrays_of(np.float64)["p"]
    assert _scoring.probabilities(p)[0] is p
    t = np.arange(8)
    assert _backend.native(t) is t
    assert _backend.native(swapped(t)).dtype.isnative
    assert _backend.native(misaligned(t)).flags.aligned


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_log_loss_of_swapped_probabilities_keeps_their_eps(dtype: Any) -> None:
    # the clipping eps is the dtype's (scikit-learn's rule), whatever its byte order
    p = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    y = np.array([1, 0])
    want = xent_rs.log_loss(y, p)
    assert want == pytest.approx(-np.log(float(np.finfo(dtype).eps)), rel=1e-3)
    assert xent_rs.log_loss(swapped(y), swapped(p)) == want
    acc = streaming.LogLossAccumulator()
    acc.update(swapped(p), swapped(y), sample_weight=swapped(np.ones(2)))
    assert acc.result() == want


# --------------------------------------------------------------------------------------------
# masked arrays: refused, for every array argument
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", sorted(CALLS))
def test_masked_arrays_are_a_type_error_naming_the_argument(call: str) -> None:
    fn, names = CALLS[call]
    arrays = _arrays_of(np.float64)
    for key, name in names.items():
        variant = {**arrays, key: masked(arrays[key])}
        with pytest.raises(TypeError) as info:
            fn(variant)
        assert type(info.value) is TypeError
        msg = str(info.value)
        assert "masked array" in msg and f"{name}.filled(" in msg, f"{call} {key}: {msg}"
        assert "not supported" in msg and "ignore_index" in msg and "sample_weight=0" in msg


def test_masked_array_with_no_value_masked_is_refused_too() -> None:
    x = np.ma.masked_array(np.zeros((2, 3)), mask=False)
    with pytest.raises(TypeError, match=r"input is a masked array"):
        xent_rs.softmax(x)


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
def test_masked_out_is_refused(op: str) -> None:
    x = np.zeros((2, 3))
    out = masked(np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"out is a masked array"):
        getattr(xent_rs, op)(x, out=out)
    assert np.all(out.data == 0.0)


def test_masked_grad_out_and_labels_are_refused() -> None:
    x, t = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(TypeError, match=r"grad_out is a masked array"):
        xent_rs.cross_entropy(x, t, return_grad=True, grad_out=masked(np.zeros((2, 3))))
    with pytest.raises(TypeError, match=r"grad_output is a masked array"):
        xent_rs.cross_entropy(x, t, return_grad=True, grad_output=np.ma.masked_array(2.0))
    p = np.full((2, 2), 0.5)
    with pytest.raises(TypeError, match=r"labels is a masked array"):
        xent_rs.log_loss(t, p, labels=masked(np.array([0, 1])))


def test_dask_refuses_masked_arrays() -> None:
    da = pytest.importorskip("dask.array")
    import xent_rs.dask

    x = da.from_array(np.zeros((6, 3)), chunks=(3, 3))
    t = np.array([0, 1, 2, 0, 1, 2])
    with pytest.raises(TypeError, match=r"target is a masked array"):
        xent_rs.dask.cross_entropy(x, masked(t))
    with pytest.raises(TypeError, match=r"sample_weight is a masked array"):
        xent_rs.dask.cross_entropy(x, t, sample_weight=masked(np.ones(6)))
    masked_x = da.from_array(masked(np.zeros((6, 3))), chunks=(3, 3))
    with pytest.raises(TypeError, match=r"input is a masked array"):
        xent_rs.dask.cross_entropy(masked_x, t)


# --------------------------------------------------------------------------------------------
# pandas objects with pyarrow-backed or nullable columns
# --------------------------------------------------------------------------------------------


def _frames() -> tuple[Array, Array]:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((12, 3)).astype(np.float32)
    t = np.arange(12) % 3
    return x, t


@pytest.mark.parametrize("backend", ["float32[pyarrow]", "convert_dtypes", "Float32"])
def test_pandas_extension_dtypes_are_converted(backend: str) -> None:
    pd = pytest.importorskip("pandas")
    if backend != "Float32":
        pytest.importorskip("pyarrow")
    x, t = _frames()
    if backend == "convert_dtypes":
        df = pd.DataFrame(x).convert_dtypes(dtype_backend="pyarrow")
        labels = pd.Series(t).convert_dtypes(dtype_backend="pyarrow")
    else:
        df = pd.DataFrame(x, dtype=backend)
        labels = pd.Series(t, dtype="int64[pyarrow]" if "pyarrow" in backend else "Int64")
    assert np.asarray(df).dtype == object  # what NumPy alone makes of it
    ref = x.astype(df.dtypes.iloc[0].numpy_dtype)  # the dtype pandas chose
    _assert_same(xent_rs.cross_entropy(df, labels), xent_rs.cross_entropy(ref, t), backend)
    _assert_same(xent_rs.softmax(df), xent_rs.softmax(ref), backend)
    p = pd.DataFrame(xent_rs.softmax(ref), dtype=df.dtypes.iloc[0])
    sw = pd.Series(np.linspace(0.5, 2.0, 12), dtype=p.dtypes.iloc[0])
    want = xent_rs.log_loss(t, xent_rs.softmax(ref), sample_weight=np.linspace(0.5, 2.0, 12))
    assert xent_rs.log_loss(labels, p, sample_weight=sw) == want
    acc = streaming.CrossEntropyAccumulator()
    acc.update(df, labels)
    assert acc.result() == pytest.approx(float(xent_rs.cross_entropy(ref, t)), rel=1e-6)


def test_pandas_mixed_columns_and_string_labels() -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"a": [0.25, 0.5], "b": [1, 2]}).convert_dtypes(dtype_backend="pyarrow")
    want = xent_rs.log_softmax(np.array([[0.25, 1.0], [0.5, 2.0]]))
    _assert_same(xent_rs.log_softmax(frame), want, "mixed float and int columns")
    labels = pd.Series(["spam", "ham"], dtype="string[pyarrow]")
    p = np.array([[0.2, 0.8], [0.9, 0.1]])
    assert xent_rs.log_loss(labels, p) == xent_rs.log_loss(["spam", "ham"], p)


def test_pandas_missing_values_that_cannot_convert_are_a_type_error() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [0, 1], "b": [1, None]}, dtype="Int64")
    with pytest.raises(TypeError, match=r"(?s)input is a pandas object .*fillna"):
        xent_rs.softmax(frame)


def test_import_does_not_import_pandas() -> None:
    pytest.importorskip("pandas")
    code = "import sys, xent_rs, xent_rs.streaming; assert 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
