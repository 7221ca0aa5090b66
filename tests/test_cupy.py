"""The GPU backend (``xent_rs._cupy``): CuPy arrays in, CuPy arrays out, the CPU path's numbers.

Every golden case runs with ``cupy.asarray`` inputs; every operation and option is compared with
the CPU path on random inputs (including torch's special values, in-place gradients, float16 and
non-contiguous inputs); every error class of the contract is raised before anything is written.
The whole module is skipped when CuPy is not importable or no GPU is visible.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import (
    GOLDEN_BEYOND_DIR,
    GoldenCase,
    assert_golden_close,
    assert_same_bits,
    cupy_with_a_gpu,
    golden_params,
    has_number,
    raises_exactly,
    raises_writing_into,
)

cp = cupy_with_a_gpu()

xent_rs = pytest.importorskip("xent_rs")

Array = npt.NDArray[Any]
FLOATS = (np.float32, np.float64)
REDUCTIONS = ("none", "mean", "sum")
#: (rtol, atol) of GPU against CPU per dtype.
TOL = {
    np.dtype(np.float16): (3e-3, 1e-3),
    np.dtype(np.float32): (3e-5, 3e-6),
    np.dtype(np.float64): (1e-10, 1e-12),
}
#: name -> (shape, class axis): rows handled by groups of 4 lanes, by threads (class axis not
#: last), by blocks of 1024 threads, by threads (3 classes), by 16 lanes, by whole warps, by
#: blocks of 256 threads.
LAYOUTS = {
    "rows": ((37, 11), -1),
    "axis1": ((6, 9, 5), 1),
    "wide": ((5, 1500), -1),
    "many": ((3000, 3), -1),
    "g16": ((33, 40), -1),
    "g32": ((19, 300), -1),
    "blocks": ((1100, 1024), -1),
}
SENTINEL = -12345.0


def _dev(v: Any) -> Any:
    """NumPy arrays moved to the GPU; anything else unchanged."""
    return cp.asarray(v) if isinstance(v, np.ndarray) else v


def _dev_kw(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: _dev(v) for k, v in kw.items()}


def _agree(gpu: Any, cpu: Any, dtype: Any, *, grad: bool = False, what: str = "value") -> None:
    """A GPU result is a CuPy array of ``dtype`` and the CPU result's shape and numbers."""
    assert isinstance(gpu, cp.ndarray), f"{what}: got a {type(gpu)}"
    assert gpu.dtype == np.dtype(dtype), f"{what}: dtype {gpu.dtype} != {np.dtype(dtype)}"
    assert gpu.shape == np.shape(cpu), f"{what}: shape {gpu.shape} != {np.shape(cpu)}"
    rtol, atol = TOL[np.dtype(dtype)]
    assert_golden_close(cp.asnumpy(gpu), np.asarray(cpu), rtol, atol, grad=grad, what=what)


# --------------------------------------------------------------------------------------------
# golden cases
# --------------------------------------------------------------------------------------------


def _is_plain(case: GoldenCase) -> bool:
    return case.expect_error is None and case.op != "log_loss"


def _golden_call(case: GoldenCase, inputs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    kw = dict(inputs)
    args = [kw.pop("input")]
    if case.is_loss:
        args.append(kw.pop("target"))
    return args, {**kw, **case.kwargs}


def _beyond_on_gpu(case: GoldenCase) -> bool:
    """golden-beyond's cases CuPy can run: not bfloat16 (CuPy has no such dtype), not
    ``linear_cross_entropy`` (``test_cupy_linear.py``)."""
    return not case.cast and case.op != "linear_cross_entropy"


@pytest.mark.parametrize(
    "case",
    golden_params(_is_plain)
    + golden_params(lambda c: _is_plain(c) and _beyond_on_gpu(c), GOLDEN_BEYOND_DIR),
)
def test_golden_case_on_gpu(case: GoldenCase) -> None:
    inputs = {k: cp.asarray(v) for k, v in case.copy_inputs().items()}
    grad_output = inputs.pop("grad_output", None)
    args, kwargs = _golden_call(case, inputs)
    fn = getattr(xent_rs, case.op)
    dtype = np.dtype(case.dtype)
    out = fn(*args, **kwargs)
    assert isinstance(out, cp.ndarray), type(out)
    assert out.dtype == dtype
    assert_golden_close(
        cp.asnumpy(out), case.expected["output"], case.rtol, case.atol, what="output"
    )
    if case.op in ("log_softmax", "softmax"):
        assert out.shape == case.inputs["input"].shape
        if grad_output is not None:
            bwd = getattr(xent_rs, f"{case.op}_backward")
            grad = bwd(grad_output, out, axis=kwargs.get("axis", -1))
            assert isinstance(grad, cp.ndarray)
            assert grad.dtype == dtype
            assert_golden_close(
                cp.asnumpy(grad), case.expected["grad"], case.rtol, case.atol, grad=True
            )
    elif case.is_loss:
        extra = {} if grad_output is None else {"grad_output": grad_output}
        loss, grad = fn(*args, **kwargs, return_grad=True, **extra)
        assert isinstance(grad, cp.ndarray)
        assert isinstance(loss, cp.ndarray)
        assert grad.dtype == dtype
        assert grad.shape == case.inputs["input"].shape
        assert_golden_close(
            cp.asnumpy(grad), case.expected["grad"], case.rtol, case.atol, grad=True, what="grad"
        )
        assert_same_bits(cp.asnumpy(loss), cp.asnumpy(out), what="loss with/without grad")
        if case.reduced:
            assert out.ndim == 0
            assert loss.ndim == 0
            assert loss.dtype == dtype
        else:
            assert out.shape == case.expected["output"].shape


@pytest.mark.parametrize(
    "case",
    golden_params(lambda c: c.expect_error is not None)
    + golden_params(lambda c: c.expect_error is not None and _beyond_on_gpu(c), GOLDEN_BEYOND_DIR),
)
def test_golden_error_case_on_gpu(case: GoldenCase) -> None:
    exc = getattr(builtins, case.expect_error or "")
    inputs = {k: cp.asarray(v) for k, v in case.copy_inputs().items()}
    args, kwargs = _golden_call(case, inputs)
    fn = getattr(xent_rs, case.op)
    raises_exactly(exc, fn, *args, **kwargs)
    if case.is_loss:
        raises_exactly(exc, fn, *args, **kwargs, return_grad=True)


# --------------------------------------------------------------------------------------------
# the softmax family against the CPU path
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout", [*LAYOUTS, "axis0"])
def test_softmax_family_matches_cpu(dtype: Any, layout: str) -> None:
    shape, axis = ((7, 4), 0) if layout == "axis0" else LAYOUTS[layout]
    rng = np.random.default_rng(1)
    x = (4.0 * rng.standard_normal(shape)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    xg, gg = cp.asarray(x), cp.asarray(g)
    for name in ("log_softmax", "softmax"):
        cpu = getattr(xent_rs, name)(x, axis)
        gpu = getattr(xent_rs, name)(xg, axis)
        _agree(gpu, cpu, dtype, what=name)
        bwd = f"{name}_backward"
        cpu_b = getattr(xent_rs, bwd)(g, cpu, axis)
        gpu_b = getattr(xent_rs, bwd)(gg, cp.asarray(cpu), axis)
        _agree(gpu_b, cpu_b, dtype, grad=True, what=bwd)
    for keepdims in (False, True):
        cpu = xent_rs.logsumexp(x, axis, keepdims=keepdims)
        gpu = xent_rs.logsumexp(xg, axis, keepdims=keepdims)
        _agree(gpu, cpu, dtype, what="logsumexp")
    np.testing.assert_array_equal(cp.asnumpy(xg), x)  # the input is not touched


@pytest.mark.parametrize("dtype", FLOATS)
def test_logsumexp_1d_is_0d(dtype: Any) -> None:
    x = np.array([1.0, 2.0, 3.0], dtype=dtype)
    gpu = xent_rs.logsumexp(cp.asarray(x))
    assert isinstance(gpu, cp.ndarray)
    assert gpu.ndim == 0
    _agree(gpu, xent_rs.logsumexp(x), dtype)


def _special_rows(dtype: Any, classes: int) -> Array:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, classes)).astype(dtype)
    x[0, :] = -np.inf  # all -inf
    x[1, 2] = np.inf  # +inf
    x[2, 1] = np.nan  # nan
    x[3, ::2] = -np.inf  # some -inf
    x[4, 0] = np.inf
    x[4, 1] = -np.inf
    x[5, :] = 1e30  # large equal logits
    return x


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("classes", [3, 6, 40, 1500])
@pytest.mark.parametrize("axis", [-1, 0])
def test_special_values_match_cpu(dtype: Any, classes: int, axis: int) -> None:
    x = _special_rows(dtype, classes)
    if axis == 0:
        x = np.ascontiguousarray(x.T)
    xg = cp.asarray(x)
    with np.errstate(all="ignore"):
        for name in ("log_softmax", "softmax", "logsumexp"):
            _agree(getattr(xent_rs, name)(xg, axis), getattr(xent_rs, name)(x, axis), dtype)
        t = np.arange(7) % 3
        for reduction in REDUCTIONS:
            cpu = xent_rs.cross_entropy(x, t, axis=axis, reduction=reduction, return_grad=True)
            gpu = xent_rs.cross_entropy(
                xg, cp.asarray(t), axis=axis, reduction=reduction, return_grad=True
            )
            _agree(gpu[0], cpu[0], dtype, grad=True, what="loss")
            _agree(gpu[1], cpu[1], dtype, grad=True, what="grad")
            soft = np.full(x.shape, 1.0 / classes, dtype=dtype)
            cpu = xent_rs.cross_entropy(
                x, soft, axis=axis, reduction=reduction, return_grad=True, label_smoothing=0.1
            )
            gpu = xent_rs.cross_entropy(
                xg,
                cp.asarray(soft),
                axis=axis,
                reduction=reduction,
                return_grad=True,
                label_smoothing=0.1,
            )
            _agree(gpu[0], cpu[0], dtype, grad=True, what="soft loss")
            _agree(gpu[1], cpu[1], dtype, grad=True, what="soft grad")


def test_torch_special_rows_exact() -> None:
    x = cp.asarray(
        [[-np.inf, -np.inf, -np.inf], [1.0, np.inf, 0.0], [1.0, np.nan, 0.0], [0.0, 0.0, 0.0]]
    )
    lse = cp.asnumpy(xent_rs.logsumexp(x))
    assert lse[0] == -np.inf
    assert lse[1] == np.inf
    assert np.isnan(lse[2])
    assert lse[3] == pytest.approx(np.log(3.0))
    for name in ("log_softmax", "softmax"):
        y = cp.asnumpy(getattr(xent_rs, name)(x))
        assert np.all(np.isnan(y[:3]))
        assert np.all(np.isfinite(y[3]))


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_out_separate_and_in_place(name: str, layout: str) -> None:
    shape, axis = LAYOUTS[layout]
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    want = getattr(xent_rs, name)(x, axis)
    xg = cp.asarray(x)
    buf = cp.full(shape, SENTINEL, dtype=cp.float32)
    got = getattr(xent_rs, name)(xg, axis, out=buf)
    assert got is buf
    _agree(buf, want, np.float32)
    got = getattr(xent_rs, name)(xg, axis, out=xg)
    assert got is xg
    _agree(xg, want, np.float32)


# --------------------------------------------------------------------------------------------
# cross entropy and NLL against the CPU path
# --------------------------------------------------------------------------------------------


def _class_problem(
    layout: str, dtype: Any, kind: str, weighted: bool, sample_weighted: bool, seed: int = 0
) -> tuple[Array, Array, dict[str, Any], tuple[int, ...]]:
    shape, axis = LAYOUTS[layout]
    rng = np.random.default_rng(seed)
    x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    classes = shape[axis]
    ax = axis % len(shape)
    sample_shape = shape[:ax] + shape[ax + 1 :]
    if kind == "soft":
        t = rng.random(shape).astype(dtype)
        t /= t.sum(axis=axis, keepdims=True)
    else:
        t = rng.integers(0, classes, size=sample_shape)
        if kind == "ignore":
            t.reshape(-1)[::4] = -1
    kw: dict[str, Any] = {"axis": axis}
    if kind == "ignore":
        kw["ignore_index"] = -1
    if weighted:
        kw["weight"] = rng.uniform(0.5, 2.0, classes).astype(dtype)
    if sample_weighted:
        kw["sample_weight"] = rng.uniform(0.5, 2.0, sample_shape).astype(dtype)
    return x, t, kw, sample_shape


def _upstream(reduction: str, loss_shape: tuple[int, ...], dtype: Any) -> Any:
    if reduction != "none":
        return 0.75
    return np.random.default_rng(9).uniform(-2.0, 2.0, loss_shape).astype(dtype)


def _check_loss(op: str, x: Array, t: Array, kw: dict[str, Any], shape: tuple[int, ...]) -> None:
    """Compares ``op`` without and with ``return_grad`` (and an upstream gradient)."""
    dtype = x.dtype
    fn = getattr(xent_rs, op)
    xg, tg, kwg = cp.asarray(x), cp.asarray(t), _dev_kw(kw)
    cpu = fn(x, t, **kw)
    gpu = fn(xg, tg, **kwg)
    _agree(gpu, cpu, dtype, grad=True, what="loss")
    if kw.get("reduction", "mean") != "none":
        assert gpu.ndim == 0
    for go in (None, _upstream(kw.get("reduction", "mean"), shape, dtype)):
        cpu_l, cpu_g = fn(x, t, **kw, return_grad=True, grad_output=go)
        gpu_l, gpu_g = fn(xg, tg, **kwg, return_grad=True, grad_output=_dev(go))
        _agree(gpu_l, cpu_l, dtype, grad=True, what="loss with grad")
        _agree(gpu_g, cpu_g, dtype, grad=True, what="grad")
        assert_same_bits(cp.asnumpy(gpu_l), cp.asnumpy(gpu), what="loss with/without grad")
    np.testing.assert_array_equal(cp.asnumpy(xg), x)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout", ["rows", "axis1", "wide", "g32"])
@pytest.mark.parametrize("kind", ["hard", "ignore", "soft"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sample_weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_cpu(
    dtype: Any,
    layout: str,
    kind: str,
    weighted: bool,
    sample_weighted: bool,
    smoothing: float,
    reduction: str,
) -> None:
    x, t, kw, shape = _class_problem(layout, dtype, kind, weighted, sample_weighted)
    kw.update(reduction=reduction, label_smoothing=smoothing)
    _check_loss("cross_entropy", x, t, kw, shape)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout", ["rows", "axis1", "wide", "many", "g16"])
@pytest.mark.parametrize("kind", ["hard", "ignore"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sample_weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_matches_cpu(
    dtype: Any, layout: str, kind: str, weighted: bool, sample_weighted: bool, reduction: str
) -> None:
    x, t, kw, shape = _class_problem(layout, dtype, kind, weighted, sample_weighted)
    kw["reduction"] = reduction
    logp = xent_rs.log_softmax(x, kw["axis"])
    _check_loss("nll_loss", logp, t, kw, shape)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout", ["rows", "axis1", "wide", "g32", "blocks"])
@pytest.mark.parametrize("kind", ["hard", "ignore", "soft"])
@pytest.mark.parametrize(("z_loss", "softcap"), [(1e-3, None), (0.0, 3.0), (0.1, 20.0)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_z_loss_and_softcap_match_cpu(
    dtype: Any, layout: str, kind: str, z_loss: float, softcap: float | None, reduction: str
) -> None:
    x, t, kw, shape = _class_problem(layout, dtype, kind, True, True)
    kw.update(reduction=reduction, label_smoothing=0.1, z_loss=z_loss, softcap=softcap)
    _check_loss("cross_entropy", x, t, kw, shape)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout", ["rows", "axis1", "wide", "many", "g16"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.7])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_focal_loss_matches_cpu(dtype: Any, layout: str, gamma: float, reduction: str) -> None:
    x, t, kw, shape = _class_problem(layout, dtype, "ignore", True, True)
    kw.update(reduction=reduction, gamma=gamma)
    _check_loss("focal_loss", x, t, kw, shape)


def test_capped_gradient_in_place() -> None:
    x, t, _, _ = _class_problem("wide", np.float32, "hard", False, False)
    want = xent_rs.cross_entropy(x, t, axis=-1, softcap=5.0, return_grad=True)
    xg = cp.asarray(x)
    loss, grad = xent_rs.cross_entropy(
        xg, cp.asarray(t), axis=-1, softcap=5.0, return_grad=True, grad_out=xg
    )
    assert grad is xg
    _agree(loss, want[0], np.float32, what="loss")
    _agree(grad, want[1], np.float32, grad=True, what="grad in place")


@pytest.mark.parametrize("tdtype", [np.int8, np.uint8, np.int16, np.int32, np.uint32, np.uint64])
def test_any_integer_target_dtype(tdtype: Any) -> None:
    x, t, kw, _ = _class_problem("rows", np.float64, "hard", True, False)
    t = t.astype(tdtype)
    t[3] = 7
    kw["ignore_index"] = 7
    cpu = xent_rs.cross_entropy(x, t, **kw, return_grad=True)
    gpu = xent_rs.cross_entropy(cp.asarray(x), cp.asarray(t), **_dev_kw(kw), return_grad=True)
    _agree(gpu[0], cpu[0], np.float64)
    _agree(gpu[1], cpu[1], np.float64, grad=True)


@pytest.mark.parametrize("ignore_index", [0, 2])
def test_ignore_index_inside_class_range(ignore_index: int) -> None:
    x, t, kw, shape = _class_problem("rows", np.float32, "hard", True, True)
    kw.update(ignore_index=ignore_index, label_smoothing=0.2)
    _check_loss("cross_entropy", x, t, kw, shape)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_grad_out_separate_and_in_place(layout: str, kind: str, dtype: Any) -> None:
    x, t, kw, _ = _class_problem(layout, dtype, kind, True, True)
    kw["label_smoothing"] = 0.05
    want_l, want_g = xent_rs.cross_entropy(x, t, **kw, return_grad=True)
    tg, kwg = cp.asarray(t), _dev_kw(kw)
    xg = cp.asarray(x)
    ref_l, ref_g = xent_rs.cross_entropy(xg, tg, **kwg, return_grad=True)
    buf = cp.full(x.shape, SENTINEL, dtype=dtype)
    loss, grad = xent_rs.cross_entropy(xg, tg, **kwg, return_grad=True, grad_out=buf)
    assert grad is buf
    assert_same_bits(cp.asnumpy(grad), cp.asnumpy(ref_g), what="grad_out")
    assert_same_bits(cp.asnumpy(loss), cp.asnumpy(ref_l), what="loss")
    loss, grad = xent_rs.cross_entropy(xg, tg, **kwg, return_grad=True, grad_out=xg)
    assert grad is xg
    _agree(grad, want_g, dtype, grad=True, what="in-place grad")
    _agree(loss, want_l, dtype, what="in-place loss")
    assert_same_bits(cp.asnumpy(grad), cp.asnumpy(ref_g), what="in-place grad")


def test_all_ignored_and_empty() -> None:
    x = np.random.default_rng(3).standard_normal((4, 5))
    t = np.full(4, -100)
    xg, tg = cp.asarray(x), cp.asarray(t)
    loss, grad = xent_rs.cross_entropy(xg, tg, return_grad=True)
    assert np.isnan(float(loss))
    assert np.all(cp.asnumpy(grad) == 0.0)
    loss, grad = xent_rs.cross_entropy(xg, tg, return_grad=True, reduction="sum")
    assert float(loss) == 0.0
    assert np.all(cp.asnumpy(grad) == 0.0)
    loss, grad = xent_rs.nll_loss(xg, tg, return_grad=True)
    assert np.isnan(float(loss))
    assert np.all(cp.asnumpy(grad) == 0.0)
    zero_w = cp.zeros(4)
    loss, grad = xent_rs.cross_entropy(
        xg, cp.asarray([0, 1, 2, 3]), sample_weight=zero_w, return_grad=True
    )
    assert np.isnan(float(loss))
    assert np.all(cp.asnumpy(grad) == 0.0)
    empty = cp.zeros((0, 5), dtype=cp.float32)
    loss, grad = xent_rs.cross_entropy(empty, cp.zeros(0, dtype=cp.int64), return_grad=True)
    assert loss.dtype == np.float32
    assert np.isnan(float(loss))
    assert grad.shape == (0, 5)
    loss = xent_rs.cross_entropy(empty, cp.zeros((0, 5), dtype=cp.float32), reduction="none")
    assert loss.shape == (0,)
    loss, grad = xent_rs.binary_cross_entropy(cp.zeros(0), cp.zeros(0), return_grad=True)
    assert np.isnan(float(loss))
    assert grad.shape == (0,)


def test_one_sample_with_0d_target() -> None:
    x = np.array([0.5, -1.0, 2.0])
    for reduction in REDUCTIONS:
        cpu = xent_rs.cross_entropy(x, np.array(1), reduction=reduction, return_grad=True)
        gpu = xent_rs.cross_entropy(
            cp.asarray(x), cp.asarray(1), reduction=reduction, return_grad=True
        )
        assert gpu[0].ndim == 0
        _agree(gpu[0], cpu[0], np.float64)
        _agree(gpu[1], cpu[1], np.float64, grad=True)
    cpu = xent_rs.cross_entropy(x, np.array(2), reduction="none", return_grad=True, grad_output=2.0)
    gpu = xent_rs.cross_entropy(
        cp.asarray(x), cp.asarray(2), reduction="none", return_grad=True, grad_output=2.0
    )
    _agree(gpu[1], cpu[1], np.float64, grad=True)


# --------------------------------------------------------------------------------------------
# binary losses against the CPU path
# --------------------------------------------------------------------------------------------

BSHAPE = (6, 7)
BROADCASTS: dict[str, tuple[int, ...] | None] = {
    "none": None,
    "scalar": (),
    "classes": (7,),
    "rows": (6, 1),
    "full": (6, 7),
}


def _binary_problem(dtype: Any, logits: bool) -> tuple[Array, Array]:
    rng = np.random.default_rng(4)
    if logits:
        x = (4.0 * rng.standard_normal(BSHAPE)).astype(dtype)
        x[0, :3] = [60.0, -60.0, 0.0]
    else:
        x = rng.uniform(0.001, 0.999, BSHAPE).astype(dtype)
        x[0, :2] = [0.0, 1.0]
    t = (rng.random(BSHAPE) < 0.5).astype(dtype)
    t[1, :3] = [0.25, 0.5, 0.9]
    if not logits:
        t[0, :2] = [0.0, 1.0]  # p = 0 and p = 1 with agreeing targets: finite gradients
    return x, t


@pytest.mark.parametrize("dtype", FLOATS)
def test_bce_log_clamp_and_gradient_floor(dtype: Any) -> None:
    p = np.array([0.0, 1.0, 0.5, 1e-30, 0.0], dtype=dtype)
    y = np.array([1.0, 0.0, 1.0, 1.0, 0.0], dtype=dtype)
    cpu = xent_rs.binary_cross_entropy(p, y, reduction="none", return_grad=True)
    gpu = xent_rs.binary_cross_entropy(
        cp.asarray(p), cp.asarray(y), reduction="none", return_grad=True
    )
    _agree(gpu[0], cpu[0], dtype, what="clamped loss")
    _agree(gpu[1], cpu[1], dtype, what="floored grad")
    assert float(gpu[0][0]) == 100.0


def _weights(name: str, rng_seed: int, dtype: Any) -> Any:
    shape = BROADCASTS[name]
    if shape is None:
        return None
    return np.random.default_rng(rng_seed).uniform(0.5, 2.0, shape).astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("weight", list(BROADCASTS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_matches_cpu(dtype: Any, weight: str, reduction: str) -> None:
    x, t = _binary_problem(dtype, logits=False)
    kw = {"weight": _weights(weight, 1, dtype), "reduction": reduction}
    _check_loss("binary_cross_entropy", x, t, kw, BSHAPE)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("weight", list(BROADCASTS))
@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.0, None), (1.5, None), (3.0, 0.9)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_focal_loss_matches_cpu(
    dtype: Any, weight: str, gamma: float, alpha: float | None, reduction: str
) -> None:
    x, t = _binary_problem(dtype, logits=True)
    kw = {"weight": _weights(weight, 1, dtype), "gamma": gamma, "alpha": alpha}
    kw["reduction"] = reduction
    _check_loss("binary_focal_loss_with_logits", x, t, kw, BSHAPE)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum", "batchmean"])
def test_kl_div_matches_cpu(dtype: Any, log_target: bool, reduction: str) -> None:
    rng = np.random.default_rng(5)
    q = np.log(rng.dirichlet(np.ones(7), 300)).astype(dtype)
    p = rng.dirichlet(np.ones(7), 300).astype(dtype)
    p[0, :3] = 0.0
    t = np.log(p) if log_target else p
    _check_loss("kl_div", q, t, {"reduction": reduction, "log_target": log_target}, q.shape)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("weight", list(BROADCASTS))
@pytest.mark.parametrize("pos_weight", ["none", "scalar", "classes", "rows"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_matches_cpu(
    dtype: Any, weight: str, pos_weight: str, reduction: str
) -> None:
    x, t = _binary_problem(dtype, logits=True)
    kw = {
        "weight": _weights(weight, 1, dtype),
        "pos_weight": _weights(pos_weight, 2, dtype),
        "reduction": reduction,
    }
    _check_loss("binary_cross_entropy_with_logits", x, t, kw, BSHAPE)


@pytest.mark.parametrize("dtype", FLOATS)
def test_bce_with_logits_never_negative(dtype: Any) -> None:
    # Far below zero the two terms of the loss cancel, exactly with pos_weight 0: the device
    # code must not fuse one product into the sum (see tests/test_properties.py).
    rng = np.random.default_rng(8)
    top = 30 if dtype is np.float32 else 300
    x = (-(10.0 ** rng.uniform(0, top, (64, 16)))).astype(dtype)
    t = rng.random((64, 16)).astype(dtype)
    for pw in (None, 0.0, 0.5):
        kw = {} if pw is None else {"pos_weight": np.full(16, pw, dtype=dtype)}
        got = xent_rs.binary_cross_entropy_with_logits(
            _dev(x), _dev(t), **_dev_kw(kw), reduction="none"
        )
        assert (cp.asnumpy(got) >= 0).all()
        _agree(got, xent_rs.binary_cross_entropy_with_logits(x, t, **kw, reduction="none"), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_3d_broadcasting(reduction: str) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 5))
    t = (rng.random((3, 4, 5)) < 0.3).astype(np.float64)
    kw = {
        "pos_weight": rng.uniform(0.5, 3.0, 5),
        "weight": rng.uniform(0.5, 3.0, (4, 1)),
        "reduction": reduction,
    }
    _check_loss("binary_cross_entropy_with_logits", x, t, kw, (3, 4, 5))


# --------------------------------------------------------------------------------------------
# dtypes and layouts
# --------------------------------------------------------------------------------------------


def test_float16_computes_in_float32() -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((9, 6)).astype(np.float16)
    t = rng.integers(0, 6, 9)
    xg, tg = cp.asarray(x), cp.asarray(t)
    for name in ("log_softmax", "softmax", "logsumexp"):
        _agree(getattr(xent_rs, name)(xg), getattr(xent_rs, name)(x), np.float16, what=name)
    out = cp.zeros_like(xg)
    assert xent_rs.log_softmax(xg, out=out) is out
    _agree(out, xent_rs.log_softmax(x), np.float16)
    for reduction in REDUCTIONS:
        cpu = xent_rs.cross_entropy(x, t, reduction=reduction, return_grad=True)
        gpu = xent_rs.cross_entropy(xg, tg, reduction=reduction, return_grad=True)
        _agree(gpu[0], cpu[0], np.float16, grad=True)
        _agree(gpu[1], cpu[1], np.float16, grad=True)
    buf = cp.zeros_like(xg)
    loss, grad = xent_rs.cross_entropy(xg, tg, return_grad=True, grad_out=buf)
    assert grad is buf
    _agree(grad, xent_rs.cross_entropy(x, t, return_grad=True)[1], np.float16, grad=True)
    loss, grad = xent_rs.cross_entropy(xg, tg, return_grad=True, grad_out=xg)
    assert grad is xg
    _agree(loss, xent_rs.cross_entropy(x, t), np.float16)
    p = rng.uniform(0.01, 0.99, (4, 5)).astype(np.float16)
    y = (rng.random((4, 5)) < 0.5).astype(np.float16)
    cpu = xent_rs.binary_cross_entropy(p, y, return_grad=True)
    gpu = xent_rs.binary_cross_entropy(cp.asarray(p), cp.asarray(y), return_grad=True)
    _agree(gpu[0], cpu[0], np.float16)
    _agree(gpu[1], cpu[1], np.float16, grad=True)


def test_integer_and_bool_inputs_are_float64() -> None:
    xi = np.arange(12, dtype=np.int32).reshape(3, 4) % 5
    for x in (xi, xi > 2):
        got = xent_rs.log_softmax(cp.asarray(x))
        _agree(got, xent_rs.log_softmax(x), np.float64)
    loss = xent_rs.cross_entropy(cp.asarray(xi), cp.asarray([0, 1, 2]))
    _agree(loss, xent_rs.cross_entropy(xi, np.array([0, 1, 2])), np.float64)


def test_non_contiguous_inputs() -> None:
    rng = np.random.default_rng(10)
    base = rng.standard_normal((8, 12)).astype(np.float32)
    views = {
        "fortran": lambda a: cp.asfortranarray(cp.asarray(a)),
        "strided": lambda a: cp.asarray(np.repeat(a, 2, axis=-1))[..., ::2],
        "negative": lambda a: cp.asarray(a[::-1].copy())[::-1],
    }
    t = rng.integers(0, 12, 8)
    soft = rng.random((8, 12)).astype(np.float32)
    for make in views.values():
        xg = make(base)
        np.testing.assert_array_equal(cp.asnumpy(xg), base)
        _agree(xent_rs.log_softmax(xg), xent_rs.log_softmax(base), np.float32)
        _agree(xent_rs.logsumexp(xg, 0), xent_rs.logsumexp(base, 0), np.float32)
        cpu = xent_rs.cross_entropy(base, soft, return_grad=True, reduction="none")
        gpu = xent_rs.cross_entropy(xg, make(soft), return_grad=True, reduction="none")
        _agree(gpu[0], cpu[0], np.float32, grad=True)
        _agree(gpu[1], cpu[1], np.float32, grad=True)
        cpu = xent_rs.cross_entropy(base, t, weight=soft[0], return_grad=True)
        gpu = xent_rs.cross_entropy(
            xg, cp.asarray(t)[::-1][::-1], weight=make(soft)[0], return_grad=True
        )
        _agree(gpu[1], cpu[1], np.float32, grad=True)


def test_array_likes_next_to_cupy_arrays() -> None:
    x = [[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]]
    got = xent_rs.cross_entropy(x, cp.asarray([2, 0]), weight=[1.0, 2.0, 0.5])
    assert isinstance(got, cp.ndarray)
    want = xent_rs.cross_entropy(np.array(x), np.array([2, 0]), weight=np.array([1.0, 2.0, 0.5]))
    _agree(got, want, np.float64)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def _x(shape: tuple[int, ...] = (4, 3), dtype: Any = cp.float32) -> Any:
    return cp.asarray(np.random.default_rng(7).standard_normal(shape), dtype=dtype)


def _t(n: int = 4, c: int = 3) -> Any:
    return cp.arange(n, dtype=cp.int64) % c


def test_mixing_cupy_and_numpy_is_type_error() -> None:
    x, t = _x(), _t()
    xn, tn = cp.asnumpy(x), cp.asnumpy(t)
    calls: list[Callable[[], Any]] = [
        lambda: xent_rs.cross_entropy(x, tn),
        lambda: xent_rs.cross_entropy(xn, t),
        lambda: xent_rs.cross_entropy(x, t, weight=np.ones(3, np.float32)),
        lambda: xent_rs.cross_entropy(x, t, return_grad=True, grad_out=np.zeros_like(xn)),
        lambda: xent_rs.nll_loss(x, t, sample_weight=np.ones(4, np.float32)),
        lambda: xent_rs.log_softmax(x, out=np.zeros_like(xn)),
        lambda: xent_rs.softmax(x, out=np.zeros_like(xn)),
        lambda: xent_rs.log_softmax_backward(xn, x),
        lambda: xent_rs.softmax_backward(x, xn),
        lambda: xent_rs.binary_cross_entropy(cp.full(3, 0.5), np.zeros(3)),
        lambda: xent_rs.binary_cross_entropy_with_logits(
            cp.zeros(3), cp.zeros(3), pos_weight=np.ones(3)
        ),
    ]
    for call in calls:
        msg = raises_exactly(TypeError, call)
        assert "cupy" in msg.lower() and "numpy" in msg.lower(), msg


@pytest.mark.parametrize("op", ["log_softmax", "softmax", "logsumexp"])
def test_bad_input_dtype_softmax_family(op: str) -> None:
    msg = raises_exactly(TypeError, getattr(xent_rs, op), cp.ones((4, 3), dtype=cp.complex64))
    assert "complex" in msg


@pytest.mark.parametrize(
    "op", ["cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits"]
)
def test_bad_input_dtype_losses(op: str) -> None:
    x = cp.ones((4, 3), dtype=cp.complex128)
    t = _t() if op in ("cross_entropy", "nll_loss") else cp.zeros((4, 3), dtype=cp.float32)
    raises_exactly(TypeError, getattr(xent_rs, op), x, t)
    raises_exactly(TypeError, getattr(xent_rs, op), x, t, return_grad=True)


@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
def test_target_dtype_errors(op: str) -> None:
    fn = getattr(xent_rs, op)
    for tdtype in (cp.float16, cp.float32, cp.float64):
        msg = raises_exactly(TypeError, fn, _x(), _t().astype(tdtype))
        assert "int" in msg.lower(), msg
    for shape in ((4,), (4, 3)):
        msg = raises_exactly(TypeError, fn, _x(), cp.ones(shape, dtype=cp.bool_))
        assert "bool" in msg.lower(), msg
    raises_exactly(TypeError, fn, _x(), cp.zeros(4, dtype=cp.complex64))
    msg = raises_exactly(
        TypeError, xent_rs.nll_loss, _x(), cp.full((4, 3), 1 / 3, dtype=cp.float32)
    )
    assert "int" in msg.lower()


@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
def test_shape_errors_multiclass(op: str) -> None:
    fn = getattr(xent_rs, op)
    for xshape, tshape, axis in [((4, 3), (3,), -1), ((2, 3, 5), (2, 3), 1), ((7,), (1,), 0)]:
        msg = raises_exactly(
            ValueError, fn, _x(xshape), cp.zeros(tshape, dtype=cp.int64), axis=axis
        )
        assert str(xshape) in msg and str(tshape) in msg, msg
    msg = raises_exactly(ValueError, fn, _x(), _t(), weight=cp.ones(4, dtype=cp.float32))
    assert "weight" in msg and has_number(msg, "4") and has_number(msg, "3"), msg
    msg = raises_exactly(ValueError, fn, _x(), _t(), sample_weight=cp.ones(5, dtype=cp.float32))
    assert "sample_weight" in msg and "(5,)" in msg, msg
    for axis in (2, -3):
        assert "axis" in raises_exactly(ValueError, fn, _x(), _t(), axis=axis)
    raises_exactly(ValueError, fn, cp.asarray(1.5), cp.asarray(0))
    msg = raises_exactly(ValueError, fn, _x(), _t(), reduction="avg")
    assert "reduction" in msg and "avg" in msg


def test_shape_errors_soft_and_softmax_family() -> None:
    msg = raises_exactly(ValueError, xent_rs.cross_entropy, _x((2, 3)), cp.full((2, 4), 0.25))
    assert "(2, 3)" in msg and "(2, 4)" in msg
    for op in ("log_softmax", "softmax", "logsumexp"):
        msg = raises_exactly(ValueError, getattr(xent_rs, op), _x(), axis=2)
        assert "axis" in msg and has_number(msg, "2")
        raises_exactly(ValueError, getattr(xent_rs, op), cp.asarray(1.5))
    for op in ("log_softmax_backward", "softmax_backward"):
        msg = raises_exactly(ValueError, getattr(xent_rs, op), _x((4, 3)), _x((3, 4)))
        assert "(4, 3)" in msg and "(3, 4)" in msg
        assert "axis" in raises_exactly(ValueError, getattr(xent_rs, op), _x(), _x(), axis=2)
        msg = raises_exactly(TypeError, getattr(xent_rs, op), cp.ones((4, 3), cp.complex128), _x())
        assert "complex" in msg


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan")])
@pytest.mark.parametrize("soft", [False, True])
def test_label_smoothing_out_of_range(value: float, soft: bool) -> None:
    t = cp.full((4, 3), 1 / 3, dtype=cp.float32) if soft else _t()
    msg = raises_exactly(ValueError, xent_rs.cross_entropy, _x(), t, label_smoothing=value)
    assert "label_smoothing" in msg


def test_soft_target_with_nonnegative_ignore_index() -> None:
    t = cp.full((4, 3), 1 / 3, dtype=cp.float32)
    msg = raises_exactly(ValueError, xent_rs.cross_entropy, _x(), t, ignore_index=0)
    assert "ignore_index" in msg


@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
def test_ignore_index_beyond_64_bits_is_value_error(op: str) -> None:
    t = cp.asarray(np.array([0, 1, 2, 1]))
    msg = raises_exactly(ValueError, getattr(xent_rs, op), _x(), t, ignore_index=2**64 - 100)
    assert "ignore_index" in msg and str(2**64 - 100) in msg


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), float("inf"), 1.0001])
def test_bce_probability_out_of_range(bad: float) -> None:
    p = np.full((2, 3), 0.5, dtype=np.float32)
    p[1, 2] = bad
    pg = cp.asarray(p)
    msg = raises_exactly(ValueError, xent_rs.binary_cross_entropy, pg, cp.zeros((2, 3), cp.float32))
    assert "(1, 2)" in msg, msg
    if bad in (1.5, -0.1):
        assert str(bad) in msg, msg
    if np.isnan(bad):
        assert "nan" in msg.lower(), msg
    raises_exactly(
        ValueError,
        xent_rs.binary_cross_entropy,
        pg,
        cp.zeros((2, 3), cp.float32),
        return_grad=True,
    )


@pytest.mark.parametrize("op", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
def test_binary_shape_errors(op: str) -> None:
    fn = getattr(xent_rs, op)
    x = cp.full((2, 3), 0.5, dtype=cp.float32)
    msg = raises_exactly(ValueError, fn, x, cp.zeros((3, 2), cp.float32))
    assert "(2, 3)" in msg and "(3, 2)" in msg
    names = ["weight", "pos_weight"] if "logits" in op else ["weight"]
    for name in names:
        for wshape in [(4,), (3, 3), (2, 3, 2)]:
            w = cp.ones(wshape, dtype=cp.float32)
            msg = raises_exactly(ValueError, fn, x, cp.zeros((2, 3), cp.float32), **{name: w})
            assert str(wshape) in msg and "(2, 3)" in msg, msg
    msg = raises_exactly(ValueError, fn, x, cp.zeros((2, 3), cp.float32), reduction="MEAN")
    assert "MEAN" in msg


@pytest.mark.parametrize(
    "op", ["cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits"]
)
@pytest.mark.parametrize(("reduction", "gshape"), [("mean", (4,)), ("sum", (1,)), ("none", (3,))])
def test_grad_output_wrong_shape(op: str, reduction: str, gshape: tuple[int, ...]) -> None:
    if op in ("cross_entropy", "nll_loss"):
        x, t = _x(), _t()
    else:
        x, t = cp.full(4, 0.5, dtype=cp.float32), cp.zeros(4, dtype=cp.float32)
    g = cp.ones(gshape, dtype=cp.float32)
    fn = getattr(xent_rs, op)
    msg = raises_exactly(ValueError, fn, x, t, reduction=reduction, return_grad=True, grad_output=g)
    assert "grad_output" in msg


def test_grad_out_errors() -> None:
    x, t = _x(), _t()
    call = xent_rs.cross_entropy
    msg = raises_exactly(
        ValueError, call, x, t, return_grad=True, grad_out=cp.zeros((3, 4), cp.float32)
    )
    assert "grad_out" in msg and "(3, 4)" in msg and "(4, 3)" in msg
    for dtype in (cp.float64, cp.float16, cp.int32):
        buf = cp.zeros((4, 3), dtype=dtype)
        assert "grad_out" in raises_exactly(TypeError, call, x, t, return_grad=True, grad_out=buf)
    for buf in (
        cp.zeros((4, 6), dtype=cp.float32)[:, ::2],
        cp.zeros((4, 3), dtype=cp.float32, order="F"),
        cp.zeros((4, 3), dtype=cp.float32)[::-1],
    ):
        assert "grad_out" in raises_exactly(ValueError, call, x, t, return_grad=True, grad_out=buf)
    base = cp.zeros(20, dtype=cp.float32)
    xo = base[:12].reshape(4, 3)
    xo[...] = x
    before = cp.asnumpy(base)
    msg = raises_exactly(
        ValueError, call, xo, t, return_grad=True, grad_out=base[3:15].reshape(4, 3)
    )
    assert "grad_out" in msg
    np.testing.assert_array_equal(cp.asnumpy(base), before)
    assert "grad_out" in raises_exactly(ValueError, call, x, t, grad_out=cp.zeros_like(x))
    half = x.astype(cp.float16)
    buf = cp.zeros((4, 3), dtype=cp.float32)
    assert "grad_out" in raises_exactly(TypeError, call, half, t, return_grad=True, grad_out=buf)
    for op in ("log_softmax", "softmax"):
        out = cp.full((3, 4), SENTINEL, dtype=cp.float32)
        raises_exactly(ValueError, getattr(xent_rs, op), x, out=out)
        raises_exactly(TypeError, getattr(xent_rs, op), x, out=cp.zeros((4, 3), cp.float64))
        out = cp.full((4, 3), SENTINEL, dtype=cp.float32)
        raises_exactly(ValueError, getattr(xent_rs, op), x, axis=3, out=out)
        assert bool(cp.all(out == SENTINEL))


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
def test_float16_out_is_checked_like_the_cpu(op: str) -> None:
    fn = getattr(xent_rs, op)
    half = _x().astype(cp.float16)
    assert "out" in raises_exactly(TypeError, fn, half, out=cp.zeros((4, 3), cp.float32))
    assert "out" in raises_exactly(ValueError, fn, half, out=cp.zeros((2, 4, 3), cp.float16))
    assert "out" in raises_exactly(ValueError, fn, half, out=cp.zeros((4, 6), cp.float16)[:, ::2])
    out = cp.zeros((4, 3), cp.float16)
    assert fn(half, out=out) is out


@pytest.mark.parametrize("kind", ["float16", "strided"])
@pytest.mark.parametrize("op", ["cross_entropy", "log_softmax", "softmax"])
def test_output_overlapping_a_converted_input(kind: str, op: str) -> None:
    # The kernels read a converted copy of these inputs: the check is against the caller's.
    step = 2 if kind == "strided" else 1
    base = cp.zeros(40, dtype=cp.float16 if kind == "float16" else cp.float32)
    x = base[: 12 * step : step].reshape(4, 3)
    x[...] = _x().astype(base.dtype)
    buf = base[3:15].reshape(4, 3)
    before = cp.asnumpy(base)
    msg = raises_writing_into(ValueError, op, x, _t(), buf)
    assert "overlaps the input" in msg, msg
    np.testing.assert_array_equal(cp.asnumpy(base), before)


def test_grad_out_overlapping_another_argument() -> None:
    x = _x()
    soft = cp.full((4, 3), 1 / 3, dtype=cp.float32)
    weight = cp.ones(12, dtype=cp.float32)
    cases: list[tuple[Any, dict[str, Any]]] = [
        (soft, {"grad_out": soft}),
        (_t(), {"weight": weight[:3], "grad_out": weight.reshape(4, 3)}),
    ]
    for target, kw in cases:
        before = {k: cp.asnumpy(v) for k, v in kw.items()}
        msg = raises_exactly(ValueError, xent_rs.cross_entropy, x, target, return_grad=True, **kw)
        assert "grad_out overlaps another argument" in msg, msg
        for k, v in kw.items():
            np.testing.assert_array_equal(cp.asnumpy(v), before[k])


@pytest.mark.parametrize("soft", [False, True])
def test_mean_over_a_zero_denominator_is_nan(soft: bool) -> None:
    # Weights of both signs: the denominator is 0 but the sum is not (CPU: NaN, not inf).
    x = cp.asarray([[2.0, 0.0], [0.0, 1.0]])
    if soft:
        t: Any = cp.asarray([[1.0, 0.0], [0.0, 1.0]])
        kw: dict[str, Any] = {"sample_weight": cp.asarray([1.0, -1.0])}
    else:
        t, kw = cp.asarray([0, 1]), {"weight": cp.asarray([1.0, -1.0])}
    loss, grad = xent_rs.cross_entropy(x, t, **kw, return_grad=True)
    want, want_grad = xent_rs.cross_entropy(
        cp.asnumpy(x), cp.asnumpy(t), **{k: cp.asnumpy(v) for k, v in kw.items()}, return_grad=True
    )
    assert np.isnan(want) and bool(cp.isnan(loss))
    np.testing.assert_array_equal(cp.asnumpy(grad), want_grad)


def test_float_axis_is_type_error() -> None:
    raises_exactly(TypeError, xent_rs.log_softmax, _x(), axis=1.0)
    raises_exactly(TypeError, xent_rs.cross_entropy, _x(), _t(), axis=1.0)


@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("bad", [3, 7, -2, -101])
def test_target_out_of_range(op: str, bad: int) -> None:
    x = cp.concatenate([_x(), _x()])
    t = cp.asarray([0, 1, 2, 1, 0, bad, 1, 2], dtype=cp.int64)
    msg = raises_exactly(IndexError, getattr(xent_rs, op), x, t)
    assert has_number(msg, str(bad)), msg
    assert has_number(msg, "5"), msg
    raises_exactly(IndexError, getattr(xent_rs, op), x, t, return_grad=True)


def test_target_out_of_range_position_and_dtypes() -> None:
    t = cp.zeros((2, 4), dtype=cp.int64)
    t[1, 2] = 9
    msg = raises_exactly(IndexError, xent_rs.cross_entropy, _x((2, 3, 4)), t, axis=1)
    assert has_number(msg, "9") and "(1, 2)" in msg, msg
    for tdtype in (cp.int8, cp.uint8, cp.int32, cp.uint64):
        t = cp.asarray([0, 1, 2, 100], dtype=tdtype)
        assert has_number(raises_exactly(IndexError, xent_rs.cross_entropy, _x(), t), "100")
    t = cp.asarray([0, -1, 2, -1])
    assert bool(cp.isfinite(xent_rs.cross_entropy(_x(), t, ignore_index=-1)))
    raises_exactly(IndexError, xent_rs.cross_entropy, _x(), t)


def test_errors_write_nothing() -> None:
    x, t = _x(), _t()
    buf = cp.full_like(x, SENTINEL)
    bad_t = cp.asarray([0, 1, 5, 1])
    raises_exactly(IndexError, xent_rs.cross_entropy, x, bad_t, return_grad=True, grad_out=buf)
    assert bool(cp.all(buf == SENTINEL))
    for exc, kw in [
        (ValueError, {"label_smoothing": 1.5}),
        (ValueError, {"reduction": "avg"}),
        (ValueError, {"weight": cp.ones(5, dtype=cp.float32)}),
        (ValueError, {"grad_output": cp.ones(3, dtype=cp.float32), "reduction": "none"}),
    ]:
        raises_exactly(exc, xent_rs.cross_entropy, x, t, return_grad=True, grad_out=buf, **kw)
        assert bool(cp.all(buf == SENTINEL)), kw
    big = _x((4096, 16))
    tb = cp.arange(4096) % 16
    tb[2000] = 16
    before = cp.asnumpy(big)
    raises_exactly(IndexError, xent_rs.cross_entropy, big, tb, return_grad=True, grad_out=big)
    np.testing.assert_array_equal(cp.asnumpy(big), before)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_grid_stride_loops(layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a grid of 2 blocks every row kernel loops over many rows per thread/warp/block."""
    cupy_backend = pytest.importorskip("xent_rs._cupy")
    monkeypatch.setattr(cupy_backend, "_MAX_GRID", 2)
    x, t, kw, shape = _class_problem(layout, np.float64, "ignore", True, True)
    kw.update(label_smoothing=0.1, reduction="none")
    _check_loss("cross_entropy", x, t, kw, shape)
    soft = np.random.default_rng(12).random(x.shape)
    kw.pop("ignore_index")
    _check_loss("cross_entropy", x, soft, kw, shape)
    axis = kw["axis"]
    for name in ("log_softmax", "softmax", "logsumexp"):
        _agree(
            getattr(xent_rs, name)(cp.asarray(x), axis),
            getattr(xent_rs, name)(x, axis),
            np.float64,
            what=name,
        )
    _agree(
        xent_rs.softmax_backward(cp.asarray(soft), cp.asarray(x), axis),
        xent_rs.softmax_backward(soft, x, axis),
        np.float64,
        grad=True,
    )
