"""``linear_cross_entropy``: the golden cases (PyTorch autograd in float64), the identity with
``cross_entropy(input @ W.T + b, ...)`` on shapes that stress the chunking, thread-count
independence, the memory bar and the errors."""

from __future__ import annotations

import builtins
import tracemalloc
from typing import Any

import numpy as np
import pytest
from conftest import (
    GOLDEN_BEYOND_DIR,
    GoldenCase,
    assert_golden_close,
    assert_same_bits,
    core_class,
    load_golden,
)

import xent_rs
from xent_rs import _core


def _cases() -> tuple[GoldenCase, ...]:
    return tuple(c for c in load_golden(GOLDEN_BEYOND_DIR) if c.op == "linear_cross_entropy")


def _params(errors: bool) -> list[Any]:
    out = []
    for c in _cases():
        if (c.expect_error is not None) != errors:
            continue
        out.append(pytest.param(c, id=c.id))
    return out


def _split(case: GoldenCase) -> tuple[list[Any], dict[str, Any], Any]:
    inputs = case.copy_inputs()
    args = [inputs.pop("input"), inputs.pop("linear_weight"), inputs.pop("target")]
    grad_output = inputs.pop("grad_output", None)
    return args, {**inputs, **case.kwargs}, grad_output


def test_golden_cases_present() -> None:
    ids = {c.id for c in _cases()}
    assert {"lin_mean_float32", "lin_3d_float64", "err_lin_dims", "err_lin_label_oob"} <= ids


@pytest.mark.parametrize("chunk_size", [None, 1, 3])
@pytest.mark.parametrize("case", _params(errors=False))
def test_golden(case: GoldenCase, chunk_size: int | None) -> None:
    args, kwargs, grad_output = _split(case)
    dtype = np.dtype(case.dtype)
    extra = {} if grad_output is None else {"grad_output": grad_output}
    loss = xent_rs.linear_cross_entropy(*args, **kwargs, chunk_size=chunk_size)
    loss2, grads = xent_rs.linear_cross_entropy(
        *args, **kwargs, **extra, return_grad=True, chunk_size=chunk_size
    )
    assert isinstance(grads, xent_rs.LinearGrads)
    assert np.asarray(loss).dtype == dtype
    assert_golden_close(loss, case.expected["output"], case.rtol, case.atol, what="output")
    assert_same_bits(loss2, loss, what="loss with and without return_grad")
    if kwargs.get("reduction", "mean") != "none":
        assert isinstance(loss, np.generic)
    names = {
        "grad_input": grads.input,
        "grad_linear_weight": grads.linear_weight,
        "grad_linear_bias": grads.linear_bias,
    }
    for name, got in names.items():
        if name not in case.expected:
            assert got is None, name
            continue
        assert got.dtype == dtype, name
        assert_golden_close(got, case.expected[name], case.rtol, case.atol, grad=True, what=name)


@pytest.mark.parametrize("case", _params(errors=True))
def test_golden_errors(case: GoldenCase) -> None:
    args, kwargs, _ = _split(case)
    exc = getattr(builtins, case.expect_error or "")
    for return_grad in (False, True):
        with pytest.raises(exc) as info:
            xent_rs.linear_cross_entropy(*args, **kwargs, return_grad=return_grad)
        assert type(info.value) is exc


# --------------------------------------------------------------------------------------------
# the identity with cross_entropy over the full logits
# --------------------------------------------------------------------------------------------


def _problem(
    shape: tuple[int, ...], d: int, v: int, seed: int, dtype: Any = np.float64
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((*shape, d)).astype(dtype)
    w = (rng.standard_normal((v, d)) / np.sqrt(d)).astype(dtype)
    b = rng.standard_normal(v).astype(dtype)
    y = rng.integers(0, v, shape)
    y[(np.arange(y.size) % 7 == 3).reshape(shape)] = -100
    return h, w, b, y


def _reference(
    h: np.ndarray, w: np.ndarray, b: np.ndarray | None, y: np.ndarray, **kw: Any
) -> tuple[Any, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    z = h @ w.T + (0 if b is None else b)
    loss, gz = xent_rs.cross_entropy(z, y, return_grad=True, **kw)
    d = h.shape[-1]
    g2 = gz.reshape(-1, w.shape[0])
    gb = None if b is None else g2.sum(axis=0)
    return loss, (gz @ w, g2.T @ h.reshape(-1, d), gb)


def _assert_matches(got: Any, want: Any, rtol: float = 1e-10) -> None:
    loss, grads = got
    want_loss, (gh, gw, gb) = want
    np.testing.assert_allclose(loss, want_loss, rtol=rtol, atol=rtol)
    for g, w in ((grads.input, gh), (grads.linear_weight, gw), (grads.linear_bias, gb)):
        if w is None:
            assert g is None
        else:
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * max(1.0, np.abs(w).max()))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    ("shape", "d", "v", "chunk"),
    [
        ((37,), 5, 11, 4),  # V and N not multiples of the chunk
        ((6,), 4, 13, 16),  # N smaller than one chunk
        ((3, 5), 6, 9, 4),  # 3-D input
        ((40,), 3, 50, None),  # the default chunk
        ((2,), 3, 1, 1),  # one class, one row per chunk
    ],
)
def test_matches_cross_entropy_of_the_logits(
    shape: tuple[int, ...], d: int, v: int, chunk: int | None, reduction: str
) -> None:
    h, w, b, y = _problem(shape, d, v, seed=len(shape) * 100 + d + v)
    rng = np.random.default_rng(7)
    kw: dict[str, Any] = {
        "reduction": reduction,
        "weight": rng.random(v) + 0.5,
        "sample_weight": rng.random(shape),
        "label_smoothing": 0.1,
        "grad_output": rng.standard_normal(shape) if reduction == "none" else 0.7,
    }
    got = xent_rs.linear_cross_entropy(
        h, w, y, linear_bias=b, return_grad=True, chunk_size=chunk, **kw
    )
    _assert_matches(got, _reference(h, w, b, y, **kw))
    plain = xent_rs.linear_cross_entropy(h, w, y, return_grad=True, chunk_size=chunk)
    _assert_matches(plain, _reference(h, w, None, y))
    assert_same_bits(
        xent_rs.linear_cross_entropy(h, w, y, linear_bias=b, chunk_size=chunk, **kw), got[0]
    )


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_z_loss_and_softcap(reduction: str) -> None:
    h, w, b, y = _problem((23,), 4, 10, seed=12)
    h *= 4.0  # logits beyond the cap
    got = xent_rs.linear_cross_entropy(
        h, w, y, linear_bias=b, reduction=reduction, z_loss=0.02, softcap=3.0,
        return_grad=True, chunk_size=5,
    )  # fmt: skip
    z = h @ w.T + b
    options = {"reduction": reduction, "z_loss": 0.02, "softcap": 3.0, "return_grad": True}
    loss, gz = core_class("cross_entropy", z, y, **options)
    _assert_matches(got, (loss, (gz @ w, gz.T @ h, gz.sum(axis=0))))


def test_one_sample() -> None:
    h, w, b, _ = _problem((), 4, 6, seed=3)
    y = np.array(2)
    got = xent_rs.linear_cross_entropy(h, w, y, linear_bias=b, return_grad=True)
    assert got[1].input.shape == (4,)
    _assert_matches(got, _reference(h, w, b, y))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_targets_ignored(reduction: str) -> None:
    h, w, b, y = _problem((9,), 3, 5, seed=4)
    y[:] = -100
    loss, grads = xent_rs.linear_cross_entropy(
        h, w, y, linear_bias=b, reduction=reduction, return_grad=True, chunk_size=2
    )
    if reduction == "mean":
        assert np.isnan(loss)
    else:
        assert np.all(np.asarray(loss) == 0)
    for g in grads:
        assert not np.any(g)


def test_no_samples() -> None:
    h = np.zeros((0, 3))
    w = np.ones((4, 3))
    y = np.zeros(0, np.int64)
    loss, grads = xent_rs.linear_cross_entropy(h, w, y, reduction="sum", return_grad=True)
    assert loss == 0
    assert grads.input.shape == (0, 3)
    assert not np.any(grads.linear_weight)
    assert np.isnan(xent_rs.linear_cross_entropy(h, w, y))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_low_precision(dtype: Any) -> None:
    h, w, b, y = _problem((30,), 8, 17, seed=5)
    h, w, b = h.astype(dtype), w.astype(dtype), b.astype(dtype)
    loss, grads = xent_rs.linear_cross_entropy(
        h, w, y, linear_bias=b, return_grad=True, chunk_size=7
    )
    assert np.asarray(loss).dtype == dtype
    assert all(g.dtype == dtype for g in grads)
    f64 = [a.astype(np.float64) for a in (h, w, b)]
    want = _reference(f64[0], f64[1], f64[2], y)
    rtol = 1e-5 if dtype == np.float32 else 2e-3
    _assert_matches(
        (loss.astype(np.float64), type(grads)(*(g.astype(np.float64) for g in grads))),
        want,
        rtol=rtol,
    )


def test_bfloat16() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    h, w, b, y = _problem((10,), 4, 6, seed=6)
    bf = ml_dtypes.bfloat16
    loss, grads = xent_rs.linear_cross_entropy(
        h.astype(bf), w.astype(bf), y, linear_bias=b.astype(bf), return_grad=True
    )
    assert np.asarray(loss).dtype == bf
    assert all(g.dtype == bf for g in grads)
    f32 = [a.astype(bf).astype(np.float32) for a in (h, w, b)]
    want = xent_rs.linear_cross_entropy(*f32[:2], y, linear_bias=f32[2])
    assert loss == want.astype(bf)


def test_threads_bitwise() -> None:
    h, w, b, y = _problem((700,), 16, 300, seed=8, dtype=np.float32)
    before = xent_rs.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            xent_rs.set_num_threads(threads)
            results.append(
                xent_rs.linear_cross_entropy(
                    h,
                    w,
                    y,
                    linear_bias=b,
                    label_smoothing=0.05,
                    return_grad=True,
                    chunk_size=128,
                )
            )
    finally:
        xent_rs.set_num_threads(before)
    (l1, g1), (l2, g2) = results
    assert_same_bits(l1, l2)
    for a, c in zip(g1, g2, strict=True):
        assert_same_bits(a, c)


def test_memory_bar() -> None:
    """Peak memory above the inputs is at most the gradients plus 1/8 of the full logits."""
    n, d, v = 1024, 32, 4096
    h, w, b, y = _problem((n,), d, v, seed=9, dtype=np.float32)
    item = 4
    logits = n * v * item
    grads = (n * d + v * d + v) * item
    # float64 sums of the bias gradient: V more float64 values
    allowed = grads + logits // 8
    # chunk of 64 rows: 1 MiB of logits, 0.5 MiB of accumulation block (1/8 of the logits: 2 MiB)
    xent_rs.linear_cross_entropy(h, w, y, linear_bias=b, return_grad=True, chunk_size=64)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = xent_rs.linear_cross_entropy(h, w, y, linear_bias=b, return_grad=True, chunk_size=64)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    del out
    assert peak <= allowed, f"peak {peak} bytes above the inputs, allowed {allowed}"
    assert peak >= grads  # the measurement sees NumPy's allocations


def test_no_gradient_work_without_return_grad() -> None:
    n, d, v = 256, 16, 2048
    h, w, b, y = _problem((n,), d, v, seed=10, dtype=np.float32)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        xent_rs.linear_cross_entropy(h, w, y, linear_bias=b, chunk_size=32)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 32 * v * 4 + 64 * 1024  # one chunk's logits, no gradients


# --------------------------------------------------------------------------------------------
# errors, before any matrix product
# --------------------------------------------------------------------------------------------


def test_dimension_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 2\)") as info:
        xent_rs.linear_cross_entropy(np.zeros((4, 3)), np.zeros((5, 2)), np.zeros(4, int))
    assert type(info.value) is ValueError


@pytest.mark.parametrize("what", ["linear_bias", "weight"])
def test_class_count_mismatch_names_both_shapes(what: str) -> None:
    kw = {what: np.ones(4)}
    with pytest.raises(ValueError, match=r"\(4,\).*\(5, 2\)") as info:
        xent_rs.linear_cross_entropy(np.zeros((3, 2)), np.zeros((5, 2)), np.zeros(3, int), **kw)
    assert type(info.value) is ValueError


def test_target_out_of_range() -> None:
    y = np.array([[0, 1], [5, 2]])
    with pytest.raises(IndexError, match=r"target 5 at position \(1, 0\)") as info:
        xent_rs.linear_cross_entropy(np.zeros((2, 2, 3)), np.zeros((5, 3)), y, return_grad=True)
    assert type(info.value) is IndexError
    assert getattr(info.value, "position", None) == (1, 0)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"target": np.zeros(3)}, TypeError),
        ({"target": np.zeros(4, int)}, ValueError),
        ({"reduction": "avg"}, ValueError),
        ({"label_smoothing": 1.5}, ValueError),
        ({"ignore_index": 1.0}, TypeError),
        ({"sample_weight": np.ones(4)}, ValueError),
        ({"grad_output": np.ones(3)}, ValueError),
        ({"reduction": "none", "grad_output": np.ones(4)}, ValueError),
        ({"chunk_size": 0}, ValueError),
        ({"z_loss": -1.0}, ValueError),
        ({"softcap": 0.0}, ValueError),
        ({"input": np.zeros((3, 2), complex)}, TypeError),
        ({"linear_weight": np.zeros(2)}, ValueError),
    ],
)
def test_errors(kwargs: dict[str, Any], exc: type[Exception]) -> None:
    args: dict[str, Any] = {
        "input": np.zeros((3, 2)),
        "linear_weight": np.zeros((5, 2)),
        "target": np.zeros(3, int),
    }
    kw = dict(kwargs)
    for k in list(args):
        if k in kw:
            args[k] = kw.pop(k)
    with pytest.raises(exc) as info:
        xent_rs.linear_cross_entropy(
            args["input"], args["linear_weight"], args["target"], return_grad=True, **kw
        )
    assert type(info.value) is exc


def test_denominator_matches_the_loss() -> None:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 6, (4, 5))
    y[0, 1] = -1
    w = rng.random(6)
    sw = rng.random((4, 5))
    den = _core.cross_entropy_denominator(y, 6, w, sw, -1)
    keep = y != -1
    np.testing.assert_allclose(den, (w[y[keep]] * sw[keep]).sum(), rtol=1e-14)
    assert _core.cross_entropy_denominator(y, 6, None, None, -1) == keep.sum()
    with pytest.raises(IndexError, match=r"position \(2, 3\)"):
        y[2, 3] = 6
        _core.cross_entropy_denominator(y, 6, None, None, -1)


# --------------------------------------------------------------------------------------------
# the CuPy twin's entry point (no GPU needed; tests/test_cupy_linear.py runs it on one)
# --------------------------------------------------------------------------------------------


def test_the_backend_is_a_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    """One code for NumPy and CuPy: the arrays pick the backend, whose core runs every chunk's
    checks and fused pass (here a recording stand-in for the GPU core, over NumPy arrays)."""
    from xent_rs import _backend, _core

    calls: list[str] = []

    class Recording:
        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return getattr(_core, name)

    class Stand_in(_backend.Namespace):
        name = "stand-in"

        @property
        def core(self) -> Any:
            return Recording()

    monkeypatch.setattr(_backend, "namespace", lambda *arrays: Stand_in())
    rng = np.random.default_rng(3)
    h, w, y = rng.normal(size=(10, 4)), rng.normal(size=(7, 4)), rng.integers(0, 7, 10)
    loss = xent_rs.linear_cross_entropy(h, w, y, chunk_size=4)
    # The chunk loop takes the core's matmul once, then calls the fused pass per chunk.
    assert calls == ["cross_entropy_denominator", "matmul"] + ["class_loss"] * 3
    assert loss == pytest.approx(float(xent_rs.cross_entropy(h @ w.T, y)), rel=1e-12)


def test_cupy_and_numpy_arrays_do_not_mix() -> None:
    fake = type("ndarray", (), {"__module__": "cupy._core.core"})
    with pytest.raises(TypeError, match="cannot mix CuPy and NumPy"):
        xent_rs.linear_cross_entropy(fake(), np.zeros((2, 2)), fake())


def test_docstring_example() -> None:
    import doctest

    from xent_rs import _linear

    result = doctest.testmod(_linear, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
