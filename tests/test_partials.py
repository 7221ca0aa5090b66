"""The native partial results (a loss called with ``partial=``, ``_core.log_loss``'s
summary): the same pass as the one-shot functions, never reduced, so that the accumulators
consume them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import core_binary, core_class

import xent_rs
from xent_rs import _core

RNG = np.random.default_rng(7)


def _class_case(dtype: Any, soft: bool, weighted: bool) -> dict[str, Any]:
    x = (3 * RNG.standard_normal((300, 7))).astype(dtype)
    if soft:
        t = RNG.dirichlet(np.ones(7), 300).astype(dtype)
    else:
        t = RNG.integers(0, 7, 300)
        t[::9] = -100
    w = RNG.uniform(0.5, 2.0, 7).astype(dtype) if weighted else None
    sw = RNG.uniform(0.0, 2.0, 300).astype(dtype) if weighted else None
    return {"x": x, "t": t, "w": w, "sw": sw}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("return_losses", [False, True])
def test_cross_entropy_partial_is_the_one_shot_pass(
    dtype: Any, soft: bool, weighted: bool, return_losses: bool
) -> None:
    c = _class_case(dtype, soft, weighted)
    x, t, w, sw = c["x"], c["t"], c["w"], c["sw"]
    kw = {"weight": w, "sample_weight": sw, "label_smoothing": 0.1}
    p = core_class(
        "cross_entropy", x, t, w, sw, partial=return_losses, reduction="sum", label_smoothing=0.1
    )
    # The one-shot functions round the same float64 numbers to the input's dtype.
    assert dtype(p.loss_sum) == xent_rs.cross_entropy(x, t, reduction="sum", **kw)
    assert dtype(p.loss_sum / p.denominator) == xent_rs.cross_entropy(x, t, **kw)
    assert p.count == 300
    if return_losses:
        assert p.losses is not None
        np.testing.assert_array_equal(p.losses, xent_rs.cross_entropy(x, t, reduction="none", **kw))
    else:
        assert p.losses is None
    if not soft:
        counted = t != -100
        if weighted:
            want = (w[t[counted]].astype(np.float64) * sw[counted].astype(np.float64)).sum()
        else:
            want = counted.sum()
        assert p.denominator == pytest.approx(want, rel=1e-12)


def test_nll_partial() -> None:
    c = _class_case(np.float64, False, True)
    x, t, w, sw = c["x"], c["t"], c["w"], c["sw"]
    p = core_class("nll_loss", x, t, w, sw, partial=True, reduction="sum")
    assert p.loss_sum == xent_rs.nll_loss(x, t, weight=w, sample_weight=sw, reduction="sum")
    np.testing.assert_array_equal(
        p.losses, xent_rs.nll_loss(x, t, weight=w, sample_weight=sw, reduction="none")
    )
    assert p.loss_sum / p.denominator == xent_rs.nll_loss(x, t, weight=w, sample_weight=sw)


@pytest.mark.parametrize("return_losses", [False, True])
def test_binary_partials(return_losses: bool) -> None:
    x = RNG.standard_normal((50, 4)).astype(np.float32)
    t = (RNG.random((50, 4)) < 0.5).astype(np.float32)
    w = RNG.uniform(0.5, 2, 4).astype(np.float32)
    p = core_binary(
        "binary_cross_entropy_with_logits", x, t, w, w, partial=return_losses, reduction="sum"
    )
    kw = {"weight": w, "pos_weight": w}
    # The one-shot functions round the same float64 sum to float32 (compared as float32: NumPy
    # 1.x would compare a float32 scalar with a Python float in float64).
    got = np.float32(p.loss_sum)
    assert got == xent_rs.binary_cross_entropy_with_logits(x, t, reduction="sum", **kw)
    assert p.denominator == 200.0 and p.count == 200
    prob = 1 / (1 + np.exp(-x))
    q = core_binary("binary_cross_entropy", prob, t, partial=return_losses, reduction="sum")
    assert np.float32(q.loss_sum) == xent_rs.binary_cross_entropy(prob, t, reduction="sum")
    if return_losses:
        np.testing.assert_array_equal(
            p.losses, xent_rs.binary_cross_entropy_with_logits(x, t, reduction="none", **kw)
        )
        np.testing.assert_array_equal(
            q.losses, xent_rs.binary_cross_entropy(prob, t, reduction="none")
        )


def _ce_partial(x: np.ndarray, t: np.ndarray, label_smoothing: float, losses: bool) -> Any:
    """``_core.class_loss``'s partial result of cross entropy, no weights."""
    options = {"reduction": "sum", "label_smoothing": label_smoothing}
    return core_class("cross_entropy", x, t, partial=losses, **options)


def test_partials_check_like_the_one_shot_functions() -> None:
    x = np.zeros((3, 4))
    with pytest.raises(IndexError, match="out of bounds"):
        _ce_partial(x, np.array([0, 4, 1]), 0.0, False)
    with pytest.raises(ValueError, match="label_smoothing"):
        _ce_partial(x, np.array([0, 1, 1]), 2.0, False)
    with pytest.raises(TypeError, match="ignore_index"):
        core_class("nll_loss", x, np.array([0, 1, 1]), partial=False, ignore_index=1.5)


def test_a_partial_result_carries_no_gradient() -> None:
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match="partial result carries no gradient"):
        core_class("cross_entropy", x, np.array([0, 1, 1]), partial=False, return_grad=True)


def test_zero_class_soft_partial_gives_nan_mean() -> None:
    p = _ce_partial(np.zeros((3, 0)), np.zeros((3, 0)), 0.0, True)
    assert p.loss_sum == 0.0 and p.denominator == 0.0
    np.testing.assert_array_equal(p.losses, np.zeros(3))


def test_log_loss_summary_is_named() -> None:
    proba = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    s = _core.log_loss(proba, np.array([1, 0, 3]), None, 1e-15, 1e-7)
    assert s.loss_sum == pytest.approx(-np.log(0.8) - np.log(0.6))
    assert s.weight_sum == 3.0
    assert (s.out_of_range, s.normalized, s.labels_in_range) == (False, True, False)
    np.testing.assert_array_equal(s.seen, [True, True])


def test_accumulator_update_is_one_native_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """``update(..., return_losses=True)`` calls the core once, for its partial result."""
    calls: list[Any] = []
    original = _core.class_loss

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("partial"))
        return original(*args, **kwargs)

    monkeypatch.setattr(_core, "class_loss", spy)
    c = _class_case(np.float32, False, True)
    acc = xent_rs.streaming.CrossEntropyAccumulator(weight=c["w"])
    losses = acc.update(c["x"], c["t"], c["sw"], return_losses=True)
    assert calls == [True]
    np.testing.assert_array_equal(
        losses,
        xent_rs.cross_entropy(
            c["x"], c["t"], weight=c["w"], sample_weight=c["sw"], reduction="none"
        ),
    )
