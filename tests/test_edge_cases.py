"""Edge cases found in review: exact messages for huge targets, zero mean denominators,
float16 output buffers."""

from __future__ import annotations

import numpy as np
import pytest

import xent_rs


def test_huge_uint64_target_is_reported_exactly() -> None:
    x = np.zeros((2, 3), np.float32)
    y = np.array([0, 2**64 - 1], dtype=np.uint64)
    with pytest.raises(IndexError, match="18446744073709551615"):
        xent_rs.cross_entropy(x, y)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_mean_with_zero_total_weight_is_nan_with_zero_gradient(label_smoothing: float) -> None:
    x = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])
    y = np.array([0, 0])
    weight = np.array([0.0, 1.0, 1.0])
    loss, grad = xent_rs.cross_entropy(
        x, y, weight=weight, label_smoothing=label_smoothing, return_grad=True
    )
    assert np.isnan(loss)
    assert np.array_equal(grad, np.zeros_like(x))


@pytest.mark.parametrize("fn", [xent_rs.log_softmax, xent_rs.softmax])
def test_float16_out_must_be_float16(fn: object) -> None:
    x = np.zeros((2, 3), np.float16)
    with pytest.raises(TypeError, match="float16"):
        fn(x, out=np.zeros((2, 3), np.float32))  # type: ignore[operator]
    with pytest.raises(ValueError, match="shape"):
        fn(x, out=np.zeros((3, 2), np.float16))  # type: ignore[operator]
    out = np.zeros((2, 3), np.float16)
    assert fn(x, out=out) is out  # type: ignore[operator]
    assert out.dtype == np.float16


@pytest.mark.parametrize("classes", [2, 40])  # lane groups and contiguous rows
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_ignored_rows_get_zero_gradient_whatever_their_logits(
    classes: int, label_smoothing: float
) -> None:
    # torch's gradient is nan on such rows (0 times a nan softmax); see docs/semantics.md.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, classes))
    x[0, 1], x[2, 0], x[3] = np.nan, np.inf, -np.inf
    y = np.array([-100, 1, -100, -100, 0])
    loss, grad = xent_rs.cross_entropy(x, y, label_smoothing=label_smoothing, return_grad=True)
    clean = [1, 4]
    want_loss, want_grad = xent_rs.cross_entropy(
        x[clean], y[clean], label_smoothing=label_smoothing, return_grad=True
    )
    assert loss == want_loss
    assert np.array_equal(grad[[0, 2, 3]], np.zeros((3, classes)))
    assert np.array_equal(grad[clean], want_grad)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_soft_targets_without_classes(label_smoothing: float, dtype: type) -> None:
    # torch: -(target * log_softmax(input)).sum(1) is 0 for each row of a (3, 0) input (an
    # empty sum), their sum is 0, and a mean over an input with no elements is NaN.
    x, t = np.zeros((3, 0), dtype), np.zeros((3, 0), dtype)
    kw = {"label_smoothing": label_smoothing, "return_grad": True}
    losses, grad = xent_rs.cross_entropy(x, t, reduction="none", **kw)
    assert losses.dtype == dtype and grad.dtype == dtype and grad.shape == (3, 0)
    np.testing.assert_array_equal(losses, np.zeros(3))
    loss, _ = xent_rs.cross_entropy(x, t, reduction="sum", sample_weight=np.ones(3), **kw)
    assert loss == 0.0
    assert np.isnan(xent_rs.cross_entropy(x, t, label_smoothing=label_smoothing))
    assert np.isnan(xent_rs.cross_entropy(x, t, sample_weight=np.ones(3)))
    # the accumulators agree with the one-shot calls
    acc = xent_rs.CrossEntropyAccumulator(label_smoothing=label_smoothing)
    np.testing.assert_array_equal(acc.update(x, t, return_losses=True), np.zeros(3))
    assert np.isnan(acc.result()) and acc.count == 3
    total = xent_rs.CrossEntropyAccumulator(reduction="sum")
    total.update(x, t, sample_weight=np.ones(3))
    assert total.result() == 0.0


def test_hard_targets_without_classes_all_ignored() -> None:
    x, t = np.zeros((3, 0)), np.full(3, -100)
    np.testing.assert_array_equal(xent_rs.cross_entropy(x, t, reduction="none"), np.zeros(3))
    assert xent_rs.cross_entropy(x, t, reduction="sum") == 0.0
    assert np.isnan(xent_rs.cross_entropy(x, t))  # nothing counted


def test_scalar_binary_weights_equal_their_full_broadcast_bit_for_bit() -> None:
    """A scalar or (1,) weight/pos_weight (laid out by one fill per chunk) gives the bits of
    the same value broadcast to the input's full shape, across chunk boundaries."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1000, 7)).astype(np.float32)
    t = (rng.random(x.shape) < 0.5).astype(np.float32)
    full = np.full(x.shape, 1.7, np.float32)
    want = xent_rs.binary_cross_entropy_with_logits(
        x, t, weight=full, pos_weight=full * 2, reduction="none", return_grad=True
    )
    for w in (np.float32(1.7), np.array([1.7], np.float32)):
        got = xent_rs.binary_cross_entropy_with_logits(
            x, t, weight=w, pos_weight=w * 2, reduction="none", return_grad=True
        )
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    p = 1 / (1 + np.exp(-x))
    np.testing.assert_array_equal(
        xent_rs.binary_cross_entropy(p, t, weight=np.float32(1.7), reduction="none"),
        xent_rs.binary_cross_entropy(p, t, weight=full, reduction="none"),
    )
