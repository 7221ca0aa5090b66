"""The float64 NumPy reference (tests/reference.py) against every golden case.

These tests do not need xent_rs: they establish that the reference used by the property tests
reproduces PyTorch's numbers, edge cases included.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import reference as ref
from conftest import GoldenCase, assert_golden_close, golden_params, load_golden

# The reference computes in float64 from the stored input values, like the golden oracle, so it
# is held to float64 tolerances. One exception: in the float32/float16 cases the oracle used the
# auxiliary float arrays (weight, pos_weight, grad_output, soft/binary targets) before they were
# rounded to the case's dtype for storage, so there the reference can only match to about the
# rounding error of that dtype.
TIGHT = (1e-10, 1e-12)
AUX_TOL = {"float32": (1e-6, 1e-9)}


def _tolerance(case: GoldenCase) -> tuple[float, float]:
    aux_float = any(
        name != "input" and np.issubdtype(arr.dtype, np.floating)
        for name, arr in case.inputs.items()
    )
    if case.dtype == "float64" or not aux_float:
        return TIGHT
    return AUX_TOL.get(case.dtype, (case.rtol, case.atol))


def _f64_inputs(case: GoldenCase) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, arr in case.inputs.items():
        if np.issubdtype(arr.dtype, np.floating):
            out[name] = arr.astype(np.float64)
        else:
            out[name] = arr
    return out


def _is_reference_case(case: GoldenCase) -> bool:
    return case.expect_error is None and case.op != "log_loss"


@pytest.mark.parametrize("case", golden_params(_is_reference_case))
def test_reference_matches_golden(case: GoldenCase) -> None:
    inputs = _f64_inputs(case)
    kwargs = dict(case.kwargs)
    rtol, atol = _tolerance(case)
    want = case.expected["output"]
    if case.op in ("log_softmax", "softmax"):
        fwd = getattr(ref, case.op)
        bwd = getattr(ref, f"{case.op}_backward")
        axis = kwargs.get("axis", -1)
        out = fwd(inputs["input"], axis=axis)
        assert_golden_close(out, want, rtol, atol, what="output")
        grad = bwd(inputs["grad_output"], out, axis=axis)
        assert_golden_close(grad, case.expected["grad"], rtol, atol, grad=True, what="grad")
    elif case.op == "logsumexp":
        out = ref.logsumexp(inputs["input"], **kwargs)
        assert_golden_close(out, want, rtol, atol, what="output")
    else:
        fn = ref.LOSSES[case.op]
        loss, grad = fn(**inputs, **kwargs)
        assert_golden_close(loss, want, rtol, atol, what="loss")
        assert_golden_close(grad, case.expected["grad"], rtol, atol, grad=True, what="grad")
        assert grad.shape == case.inputs["input"].shape


def test_every_reference_case_is_covered() -> None:
    ops = {c.op for c in load_golden() if _is_reference_case(c)}
    assert ops == {
        "log_softmax",
        "softmax",
        "logsumexp",
        "cross_entropy",
        "nll_loss",
        "binary_cross_entropy",
        "binary_cross_entropy_with_logits",
    }
    assert sum(1 for c in load_golden() if _is_reference_case(c)) >= 100


# --------------------------------------------------------------------------------------------
# the reference's own error handling mirrors the contract for the golden error cases
# --------------------------------------------------------------------------------------------

_ERRORS = {"ValueError": ValueError, "IndexError": IndexError, "TypeError": TypeError}


def _is_reference_error_case(case: GoldenCase) -> bool:
    # dtype checks (complex input) are the package's business: the reference converts anything
    return case.expect_error is not None and case.op in ref.LOSSES


@pytest.mark.parametrize("case", golden_params(_is_reference_error_case))
def test_reference_raises_on_golden_error_cases(case: GoldenCase) -> None:
    fn = ref.LOSSES[case.op]
    with pytest.raises(_ERRORS[case.expect_error or ""]):
        fn(**case.inputs, **case.kwargs)


# --------------------------------------------------------------------------------------------
# edge cases of the reference itself (documented torch behaviour)
# --------------------------------------------------------------------------------------------


def test_reference_special_rows() -> None:
    x = np.array(
        [
            [0.0, 1.0, 2.0],
            [-np.inf, -np.inf, -np.inf],
            [np.inf, 0.0, 1.0],
            [np.nan, 0.0, 1.0],
            [-np.inf, 0.0, 1.0],
        ]
    )
    lp = ref.log_softmax(x)
    sm = ref.softmax(x)
    lse = ref.logsumexp(x)
    assert np.all(np.isfinite(lp[0]))
    assert np.all(np.isnan(lp[1:4]))
    assert np.all(np.isnan(sm[1:4]))
    assert lp[4, 0] == -np.inf
    assert sm[4, 0] == 0.0
    np.testing.assert_array_equal(lse[1:4], [-np.inf, np.inf, np.nan])
    np.testing.assert_allclose(np.exp(lp[0]), sm[0], rtol=1e-15)
    np.testing.assert_allclose(lse[0], np.log(np.sum(np.exp(x[0]))), rtol=1e-15)


def test_reference_bce_extremes() -> None:
    p = np.array([0.0, 1.0, 0.0, 1.0])
    y = np.array([1.0, 1.0, 0.0, 0.0])
    loss, grad = ref.binary_cross_entropy(p, y, reduction="none")
    np.testing.assert_array_equal(loss, [100.0, 0.0, 0.0, 100.0])
    eps = float(np.float32(1e-12))
    np.testing.assert_array_equal(grad, [-1.0 / eps, 0.0, 0.0, 1.0 / eps])
    assert grad[0] == pytest.approx(-1.0000000040e12, rel=1e-10)


def test_reference_bce_with_logits_stable_for_large_logits() -> None:
    x = np.array([-1000.0, 1000.0, 0.0])
    y = np.array([1.0, 0.0, 0.5])
    loss, grad = ref.binary_cross_entropy_with_logits(x, y, reduction="none")
    np.testing.assert_allclose(loss, [1000.0, 1000.0, np.log(2.0)], rtol=1e-15)
    np.testing.assert_allclose(grad, [-1.0, 1.0, 0.0], atol=1e-300)


def test_reference_all_ignored_mean_is_nan_with_zero_grad() -> None:
    x = np.arange(6.0).reshape(2, 3)
    t = np.array([-100, -100])
    for ls in (0.0, 0.3):
        loss, grad = ref.cross_entropy(x, t, label_smoothing=ls)
        assert np.isnan(loss)
        np.testing.assert_array_equal(grad, np.zeros_like(x))
        loss_sum, grad_sum = ref.cross_entropy(x, t, reduction="sum", label_smoothing=ls)
        assert loss_sum == 0.0
        np.testing.assert_array_equal(grad_sum, np.zeros_like(x))


def test_reference_cross_entropy_gradient_by_finite_differences() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5))
    t = np.array([0, 3, -100, 4])
    w = rng.uniform(0.5, 2.0, size=5)
    sw = rng.uniform(0.5, 2.0, size=4)
    kw: dict[str, Any] = {"weight": w, "sample_weight": sw, "label_smoothing": 0.2}
    _, grad = ref.cross_entropy(x, t, **kw)
    h = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = (
            float(ref.cross_entropy(xp, t, **kw)[0]) - float(ref.cross_entropy(xm, t, **kw)[0])
        ) / (2 * h)
    np.testing.assert_allclose(grad, fd, atol=1e-8)
