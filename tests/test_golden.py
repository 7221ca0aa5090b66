"""Every golden case through the public API: ``tests/golden`` (PyTorch and scikit-learn) and
``tests/golden-beyond`` (the losses and options beyond the first release, PyTorch autograd in
float64; its ``linear_cross_entropy`` cases are in ``test_linear.py``).

Losses are called without and with ``return_grad``; the softmax family is checked forward and
through its VJP; each case is also replayed with Fortran-ordered, strided and negative-stride
inputs, which must give the C-contiguous results bit for bit. bfloat16 cases (``cast``) need
``ml_dtypes``.
"""

from __future__ import annotations

import builtins
import importlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import (
    GOLDEN_BEYOND_DIR,
    GOLDEN_DIR,
    LAYOUTS,
    SHARED_GOLDEN_BEYOND_DIR,
    SHARED_GOLDEN_DIR,
    GoldenCase,
    assert_golden_close,
    assert_same_bits,
    assert_same_files,
    golden_params,
    result_dtype,
)

xent_rs: Any
try:
    xent_rs = importlib.import_module("xent_rs")
except ImportError:  # the package is not built: only the golden-copy checks can run
    xent_rs = None

needs_xent = pytest.mark.skipif(xent_rs is None, reason="xent_rs is not importable")


def _is_plain(case: GoldenCase) -> bool:
    return case.expect_error is None and case.op not in ("log_loss", "linear_cross_entropy")


def _every(predicate: Any) -> list[Any]:
    """The cases of both golden directories matching ``predicate``."""
    return golden_params(predicate) + golden_params(predicate, GOLDEN_BEYOND_DIR)


def _is_error(case: GoldenCase) -> bool:
    return case.expect_error is not None and case.op != "linear_cross_entropy"


def _split_grad_output(case: GoldenCase) -> tuple[dict[str, Any], Any]:
    inputs = case.copy_inputs()
    grad_output = inputs.pop("grad_output", None)
    return inputs, grad_output


def _call_args(case: GoldenCase, inputs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments for a case.

    ``input`` (and ``target``) go positionally: the softmax family names its first parameter
    ``x`` while the golden cases call it ``input``; every other array goes by its name.
    """
    kw = dict(inputs)
    args = [kw.pop("input")]
    if case.is_loss:
        args.append(kw.pop("target"))
    return args, {**kw, **case.kwargs}


def _run(case: GoldenCase, inputs: dict[str, Any]) -> dict[str, Any]:
    """Runs a case's op on ``inputs`` (which may hold grad_output) and collects every result."""
    assert xent_rs is not None
    inputs = dict(inputs)
    grad_output = inputs.pop("grad_output", None)
    args, kwargs = _call_args(case, inputs)
    fn = getattr(xent_rs, case.op)
    res: dict[str, Any] = {}
    if case.op in ("log_softmax", "softmax"):
        out = fn(*args, **kwargs)
        res["output"] = out
        if grad_output is not None:
            bwd = getattr(xent_rs, f"{case.op}_backward")
            res["grad"] = bwd(grad_output, out, axis=kwargs.get("axis", -1))
    elif case.op == "logsumexp":
        res["output"] = fn(*args, **kwargs)
    else:
        res["output"] = fn(*args, **kwargs)
        extra = {} if grad_output is None else {"grad_output": grad_output}
        loss, grad = fn(*args, **kwargs, return_grad=True, **extra)
        res["loss_with_grad"] = loss
        res["grad"] = grad
    return res


# --------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------


@needs_xent
@pytest.mark.parametrize("case", _every(_is_plain))
def test_golden_case(case: GoldenCase) -> None:
    res = _run(case, case.copy_inputs())
    dtype = result_dtype(case.dtype)
    out = res["output"]
    in_shape = case.inputs["input"].shape

    assert np.asarray(out).dtype == dtype, f"output dtype {np.asarray(out).dtype} != {dtype}"
    assert_golden_close(out, case.expected["output"], case.rtol, case.atol, what="output")

    if case.op in ("log_softmax", "softmax"):
        assert isinstance(out, np.ndarray)
        assert out.shape == in_shape
        if "grad" not in case.expected:  # a forward-only case
            return
        grad = res["grad"]
        assert isinstance(grad, np.ndarray)
        assert grad.dtype == dtype
        assert_golden_close(
            grad, case.expected["grad"], case.rtol, case.atol, grad=True, what="backward"
        )
    elif case.is_loss:
        loss2, grad = res["loss_with_grad"], res["grad"]
        assert isinstance(grad, np.ndarray)
        assert grad.dtype == dtype
        assert grad.shape == in_shape
        assert_golden_close(
            grad, case.expected["grad"], case.rtol, case.atol, grad=True, what="grad"
        )
        # return_grad=True gives the very same loss as return_grad=False
        assert_same_bits(loss2, out, what="loss with and without return_grad")
        if case.reduced:
            for loss in (out, loss2):
                assert isinstance(loss, np.generic), f"reduced loss is a {type(loss)}"
                assert loss.dtype == dtype
        else:
            assert np.shape(out) == case.expected["output"].shape


# --------------------------------------------------------------------------------------------
# layouts: Fortran order, strided views, negative strides
# --------------------------------------------------------------------------------------------


@needs_xent
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("case", _every(_is_plain))
def test_golden_case_layouts_bitwise(case: GoldenCase, layout: str) -> None:
    base = _run(case, case.copy_inputs())
    convert: Callable[[Any], Any] = LAYOUTS[layout]
    variant_inputs = {k: convert(v) for k, v in case.copy_inputs().items()}
    for k, v in variant_inputs.items():
        np.testing.assert_array_equal(v, case.inputs[k])
    got = _run(case, variant_inputs)
    assert got.keys() == base.keys()
    for key in base:
        assert_same_bits(got[key], base[key], what=f"{key} ({layout})")
    if case.op in ("log_softmax", "softmax") and "grad_output" in case.inputs:
        # the VJP with both of its arguments in the other layout
        bwd = getattr(xent_rs, f"{case.op}_backward")
        axis = case.kwargs.get("axis", -1)
        g = bwd(convert(case.inputs["grad_output"]), convert(base["output"]), axis=axis)
        assert_same_bits(g, base["grad"], what=f"backward ({layout})")


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


@needs_xent
@pytest.mark.parametrize("case", _every(_is_error))
def test_golden_error_case(case: GoldenCase) -> None:
    assert xent_rs is not None
    exc = getattr(builtins, case.expect_error or "")
    assert isinstance(exc, type)
    assert issubclass(exc, BaseException)
    fn = getattr(xent_rs, case.op)
    args, kwargs = _call_args(case, case.copy_inputs())
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    assert type(info.value) is exc, f"raised {type(info.value).__name__}, want {exc.__name__}"
    if case.is_loss:
        with pytest.raises(exc) as info:
            fn(*args, **kwargs, return_grad=True)
        assert type(info.value) is exc


# --------------------------------------------------------------------------------------------
# log_loss (scikit-learn semantics)
# --------------------------------------------------------------------------------------------

needs_log_loss = pytest.mark.skipif(
    not hasattr(xent_rs, "log_loss"), reason="xent_rs.log_loss is not available"
)


def _log_loss_args(case: GoldenCase) -> tuple[Any, Any, dict[str, Any]]:
    inputs = case.copy_inputs()
    y_true = inputs.pop("y_true")
    y_pred = inputs.pop("y_pred")
    return y_true, y_pred, {**inputs, **case.kwargs}


@needs_log_loss
@pytest.mark.parametrize("case", golden_params(lambda c: c.op == "log_loss"))
def test_golden_log_loss(case: GoldenCase) -> None:
    assert xent_rs is not None
    y_true, y_pred, kwargs = _log_loss_args(case)
    got = xent_rs.log_loss(y_true, y_pred, **kwargs)
    assert np.ndim(got) == 0
    assert np.isfinite(float(got))
    assert_golden_close(float(got), case.expected["output"], case.rtol, case.atol, what="log_loss")


@needs_log_loss
@pytest.mark.parametrize("keyword", ["y_pred", "y_proba"])
@pytest.mark.parametrize("case", golden_params(lambda c: c.op == "log_loss"))
def test_golden_log_loss_keywords(case: GoldenCase, keyword: str) -> None:
    assert xent_rs is not None
    y_true, y_pred, kwargs = _log_loss_args(case)
    got = xent_rs.log_loss(y_true, **{keyword: y_pred}, **kwargs)
    positional = xent_rs.log_loss(y_true, y_pred, **kwargs)
    assert float(got) == float(positional)


# --------------------------------------------------------------------------------------------
# the golden files are an exact copy of the shared reference cases
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_GOLDEN_DIR.is_dir(), reason="../shared/golden is not present")
def test_golden_copy_matches_shared() -> None:
    assert_same_files(GOLDEN_DIR, SHARED_GOLDEN_DIR)


@pytest.mark.skipif(
    not SHARED_GOLDEN_BEYOND_DIR.is_dir(), reason="../shared/golden-beyond is not present"
)
def test_golden_beyond_copy_matches_shared() -> None:
    assert_same_files(GOLDEN_BEYOND_DIR, SHARED_GOLDEN_BEYOND_DIR)


def test_golden_cases_load() -> None:
    cases = [p.values[0] for p in golden_params()]
    assert len(cases) >= 100
    assert len({c.id for c in cases}) == len(cases)
    for c in cases:
        if c.expect_error is None:
            assert "output" in c.expected, c.id
        for arr in c.inputs.values():
            assert isinstance(arr, np.ndarray)


def test_xent_rs_importable_under_ci() -> None:
    # the other test modules skip when the package cannot be imported; in CI that would hide a
    # broken build, so there an import failure is an error
    if xent_rs is None and not os.environ.get("CI"):
        pytest.skip("xent_rs is not importable (outside CI)")
    importlib.import_module("xent_rs")
