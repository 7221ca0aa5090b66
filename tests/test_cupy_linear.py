"""``linear_cross_entropy`` on CuPy arrays (``_linear`` on the CuPy backend): the golden
cases and the CPU path's numbers on random problems, CuPy arrays out, errors before any work.
Skipped when CuPy is not importable or no GPU is visible."""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np
import pytest
from conftest import assert_golden_close, cupy_with_a_gpu

cp = cupy_with_a_gpu()

from test_linear import _params, _problem, _split  # noqa: E402

import xent_rs  # noqa: E402

TOL = {np.dtype(np.float32): (3e-5, 3e-6), np.dtype(np.float64): (1e-10, 1e-12)}


def _dev(v: Any) -> Any:
    return cp.asarray(v) if isinstance(v, np.ndarray) else v


def _agree(gpu: Any, cpu: Any, *, grad: bool = False, what: str = "value") -> None:
    assert isinstance(gpu, cp.ndarray), f"{what}: got a {type(gpu)}"
    cpu = np.asarray(cpu)
    assert gpu.dtype == cpu.dtype, what
    assert gpu.shape == cpu.shape, what
    rtol, atol = TOL[cpu.dtype]
    assert_golden_close(cp.asnumpy(gpu), cpu, rtol, atol, grad=grad, what=what)


@pytest.mark.parametrize("case", _params(errors=False))
def test_golden(case: Any) -> None:
    args, kwargs, grad_output = _split(case)
    extra = {} if grad_output is None else {"grad_output": cp.asarray(grad_output)}
    dev = [cp.asarray(a) for a in args]
    kw = {k: _dev(v) for k, v in kwargs.items()}
    loss, grads = xent_rs.linear_cross_entropy(*dev, **kw, **extra, return_grad=True)
    assert_golden_close(cp.asnumpy(loss), case.expected["output"], case.rtol, case.atol)
    for name, got in zip(
        ("grad_input", "grad_linear_weight", "grad_linear_bias"), grads, strict=True
    ):
        if name not in case.expected:
            assert got is None
            continue
        assert_golden_close(
            cp.asnumpy(got), case.expected[name], case.rtol, case.atol, grad=True, what=name
        )


@pytest.mark.parametrize("case", _params(errors=True))
def test_golden_errors(case: Any) -> None:
    args, kwargs, _ = _split(case)
    exc = getattr(builtins, case.expect_error or "")
    with pytest.raises(exc) as info:
        xent_rs.linear_cross_entropy(*(cp.asarray(a) for a in args), **kwargs, return_grad=True)
    assert type(info.value) is exc


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk", [None, 5])
def test_matches_the_cpu(dtype: Any, reduction: str, chunk: int | None) -> None:
    h, w, b, y = _problem((3, 7), 6, 23, seed=1, dtype=dtype)
    rng = np.random.default_rng(2)
    kw: dict[str, Any] = {
        "reduction": reduction,
        "weight": (rng.random(23) + 0.5).astype(dtype),
        "sample_weight": rng.random((3, 7)).astype(dtype),
        "label_smoothing": 0.1,
        "grad_output": rng.standard_normal((3, 7)).astype(dtype) if reduction == "none" else 0.5,
        "chunk_size": chunk,
    }
    want_loss, want = xent_rs.linear_cross_entropy(h, w, y, linear_bias=b, return_grad=True, **kw)
    loss, grads = xent_rs.linear_cross_entropy(
        cp.asarray(h),
        cp.asarray(w),
        cp.asarray(y),
        linear_bias=cp.asarray(b),
        return_grad=True,
        **{k: _dev(v) for k, v in kw.items()},
    )
    _agree(loss, want_loss, what="loss")
    for g, c in zip(grads, want, strict=True):
        _agree(g, c, grad=True)
    alone = xent_rs.linear_cross_entropy(
        cp.asarray(h), cp.asarray(w), cp.asarray(y), **{k: _dev(v) for k, v in kw.items()}
    )
    _agree(alone, xent_rs.linear_cross_entropy(h, w, y, **kw), what="loss without bias")


def test_errors_before_any_work() -> None:
    h, w, y = cp.zeros((4, 3)), cp.zeros((5, 2)), cp.zeros(4, cp.int64)
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 2\)"):
        xent_rs.linear_cross_entropy(h, w, y)
    with pytest.raises(IndexError, match="target 7 at position"):
        xent_rs.linear_cross_entropy(
            cp.zeros((2, 2)), cp.zeros((5, 2)), cp.asarray([0, 7]), return_grad=True
        )
