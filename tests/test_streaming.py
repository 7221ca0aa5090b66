"""Streaming accumulators: chunk after chunk equals the one-shot function on the concatenation."""

from __future__ import annotations

import copy
import doctest
import itertools
import math
import pickle
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xent_rs
from xent_rs import streaming
from xent_rs.streaming import (
    BinaryCrossEntropyAccumulator,
    BinaryCrossEntropyWithLogitsAccumulator,
    CrossEntropyAccumulator,
    ExactSum,
    LogLossAccumulator,
    NLLLossAccumulator,
)

IGNORE = -7


def chunk_bounds(n: int, rng: np.random.Generator, pieces: int) -> list[tuple[int, int]]:
    """Random row ranges covering ``0..n``, empty ranges included (repeated cut points)."""
    cuts = np.sort(rng.integers(0, n + 1, size=pieces))
    edges = [0, *cuts.tolist(), n]
    return list(itertools.pairwise(edges))


def chunking(most_pieces: int) -> dict[str, st.SearchStrategy[int]]:
    """``@given`` strategies for the seed of a test's data and the cuts that chunk it."""
    return {"seed": st.integers(0, 2**32 - 1), "pieces": st.integers(0, most_pieces)}


def feed(
    acc: streaming.Accumulator,
    bounds: list[tuple[int, int]],
    x: np.ndarray,
    t: Any,
    sw: np.ndarray | None = None,
) -> streaming.Accumulator:
    for lo, hi in bounds:
        acc.update(x[lo:hi], t[lo:hi], None if sw is None else sw[lo:hi])
    return acc


def assert_same_loss(got: float, want: Any, rel: float = 1e-12) -> None:
    want = float(want)
    assert isinstance(got, float)
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, rel=rel, abs=1e-300)


# ---------------------------------------------------------------------------------------------
# equivalence over random chunkings
# ---------------------------------------------------------------------------------------------


@settings(max_examples=80)
@given(
    n=st.integers(0, 70),
    c=st.integers(1, 6),
    **chunking(8),
    weighted=st.booleans(),
    sample_weighted=st.booleans(),
    smoothing=st.sampled_from([0.0, 0.1, 1.0]),
    reduction=st.sampled_from(["mean", "sum"]),
)
def test_cross_entropy_hard_targets(
    n: int,
    c: int,
    seed: int,
    pieces: int,
    weighted: bool,
    sample_weighted: bool,
    smoothing: float,
    reduction: str,
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c)) * 4
    t = rng.integers(0, c, size=n)
    t[rng.random(n) < 0.3] = IGNORE
    t[n // 3 : n // 2] = IGNORE  # a run of ignored targets: some chunks count nothing
    weight = rng.random(c) + 0.1 if weighted else None
    sw = rng.random(n) if sample_weighted else None
    acc = CrossEntropyAccumulator(
        weight=weight, ignore_index=IGNORE, label_smoothing=smoothing, reduction=reduction
    )
    feed(acc, chunk_bounds(n, rng, pieces), x, t, sw)
    want = xent_rs.cross_entropy(
        x,
        t,
        weight=weight,
        sample_weight=sw,
        ignore_index=IGNORE,
        label_smoothing=smoothing,
        reduction=reduction,  # type: ignore[arg-type]
    )
    assert_same_loss(acc.result(), want)
    assert acc.count == n


@settings(max_examples=40)
@given(
    n=st.integers(0, 30),
    **chunking(6),
    sample_weighted=st.booleans(),
    smoothing=st.sampled_from([0.0, 0.25]),
)
def test_cross_entropy_soft_targets_class_axis_1(
    n: int, seed: int, pieces: int, sample_weighted: bool, smoothing: float
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4, 3))  # (N, C, L): classes along axis 1
    t = xent_rs.softmax(rng.normal(size=(n, 4, 3)), axis=1)
    sw = rng.random((n, 3)) if sample_weighted else None
    weight = np.array([1.0, 2.0, 0.5, 1.5])
    acc = CrossEntropyAccumulator(axis=1, weight=weight, label_smoothing=smoothing)
    feed(acc, chunk_bounds(n, rng, pieces), x, t, sw)
    want = xent_rs.cross_entropy(
        x, t, axis=1, weight=weight, sample_weight=sw, label_smoothing=smoothing
    )
    assert_same_loss(acc.result(), want)
    assert acc.count == n * 3


@settings(max_examples=40)
@given(
    n=st.integers(0, 50),
    **chunking(6),
    reduction=st.sampled_from(["mean", "sum"]),
)
def test_nll_loss(n: int, seed: int, pieces: int, reduction: str) -> None:
    rng = np.random.default_rng(seed)
    logp = xent_rs.log_softmax(rng.normal(size=(n, 5)))
    t = rng.integers(-1, 5, size=n).astype(np.int32)
    weight = rng.random(5)
    sw = rng.random(n)
    acc = NLLLossAccumulator(weight=weight, ignore_index=-1, reduction=reduction)
    feed(acc, chunk_bounds(n, rng, pieces), logp, t, sw)
    want = xent_rs.nll_loss(
        logp,
        t,
        weight=weight,
        sample_weight=sw,
        ignore_index=-1,
        reduction=reduction,  # type: ignore[arg-type]
    )
    assert_same_loss(acc.result(), want)


@settings(max_examples=40)
@given(
    n=st.integers(0, 50),
    **chunking(6),
    logits=st.booleans(),
    weighted=st.booleans(),
    sample_weighted=st.booleans(),
    reduction=st.sampled_from(["mean", "sum"]),
)
def test_binary_cross_entropy(
    n: int,
    seed: int,
    pieces: int,
    logits: bool,
    weighted: bool,
    sample_weighted: bool,
    reduction: str,
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * 3 if logits else rng.random((n, 3))
    t = (rng.random((n, 3)) < 0.4).astype(np.float64)
    weight = rng.random(3) + 0.5 if weighted else None
    sw = rng.random(n) if sample_weighted else None
    full_weight = None
    if sw is not None:
        full_weight = sw[:, None] if weight is None else weight * sw[:, None]
    elif weight is not None:
        full_weight = weight
    acc: streaming.Accumulator
    if logits:
        pos_weight = np.array([1.0, 3.0, 0.5])
        acc = BinaryCrossEntropyWithLogitsAccumulator(
            weight=weight, pos_weight=pos_weight, reduction=reduction
        )
        want = xent_rs.binary_cross_entropy_with_logits(
            x,
            t,
            weight=full_weight,
            pos_weight=pos_weight,
            reduction=reduction,  # type: ignore[arg-type]
        )
    else:
        acc = BinaryCrossEntropyAccumulator(weight=weight, reduction=reduction)
        want = xent_rs.binary_cross_entropy(
            x,
            t,
            weight=full_weight,
            reduction=reduction,  # type: ignore[arg-type]
        )
    feed(acc, chunk_bounds(n, rng, pieces), x, t, sw)
    assert_same_loss(acc.result(), want)
    assert acc.count == 3 * n


@settings(max_examples=60)
@given(
    n=st.integers(1, 60),
    c=st.integers(2, 6),
    **chunking(8),
    weighted=st.booleans(),
    normalize=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_log_loss_matches_scikit_learn(
    n: int,
    c: int,
    seed: int,
    pieces: int,
    weighted: bool,
    normalize: bool,
    dtype: type,
) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    p = rng.random((n, c)) ** 3 + 1e-3
    p = (p / p.sum(axis=1, keepdims=True)).astype(dtype)
    y = rng.integers(0, c, size=n)
    sw = rng.random(n) + 0.05 if weighted else None
    acc = LogLossAccumulator(normalize=normalize)  # classes 0..c-1 from the columns
    feed(acc, chunk_bounds(n, rng, pieces), p, y, sw)
    want = metrics.log_loss(y, p, labels=np.arange(c), sample_weight=sw, normalize=normalize)
    assert_same_loss(acc.result(), want, rel=2e-6 if dtype is np.float32 else 1e-11)


def test_log_loss_string_labels_binary_column_and_logits() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    y = rng.choice(np.array(["cat", "dog", "emu"]), size=40)
    p = rng.dirichlet(np.ones(3), size=40)
    acc = feed(LogLossAccumulator(labels=["cat", "dog", "emu"]), [(0, 0), (0, 7), (7, 40)], p, y)
    assert_same_loss(acc.result(), metrics.log_loss(y, p, labels=["cat", "dog", "emu"]))

    yb = rng.integers(0, 2, size=40)
    pb = rng.random(40)
    acc = feed(LogLossAccumulator(), [(0, 13), (13, 13), (13, 40)], pb, yb)
    assert_same_loss(acc.result(), metrics.log_loss(yb, pb))

    logits = rng.normal(size=(40, 3)) * 3
    codes = rng.integers(0, 3, size=40)
    acc = feed(LogLossAccumulator(from_logits=True), [(0, 21), (21, 40)], logits, codes)
    assert_same_loss(acc.result(), xent_rs.log_loss(codes, logits, from_logits=True))
    acc = feed(LogLossAccumulator(from_logits=True), [(0, 9), (9, 40)], logits[:, 0], yb)
    assert_same_loss(acc.result(), xent_rs.log_loss(yb, logits[:, 0], from_logits=True))


def test_float32_chunks_match_the_float32_one_shot() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(5000, 10)).astype(np.float32)
    t = rng.integers(0, 10, size=5000)
    acc = feed(CrossEntropyAccumulator(), chunk_bounds(5000, rng, 7), x, t)
    one_shot = xent_rs.cross_entropy(x, t)
    assert one_shot.dtype == np.float32
    assert acc.result() == pytest.approx(float(one_shot), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# empty and fully ignored streams, merging, pickling
# ---------------------------------------------------------------------------------------------


def test_nothing_counted_is_nan_for_mean_and_zero_for_sum() -> None:
    x = np.zeros((3, 4))
    t = np.full(3, -100)
    mean, total = CrossEntropyAccumulator(), CrossEntropyAccumulator(reduction="sum")
    assert math.isnan(mean.result()) and total.result() == 0.0
    for acc in (mean, total):
        acc.update(x, t)
        acc.update(x[:0], t[:0])
    assert math.isnan(mean.result())
    assert math.isnan(float(xent_rs.cross_entropy(x, t)))
    assert total.result() == 0.0 and mean.count == 3 and mean.denominator == 0.0
    with pytest.raises(ValueError, match="no samples"):
        LogLossAccumulator().result()
    acc = LogLossAccumulator()
    acc.update(np.full((2, 2), 0.5), [0, 1], sample_weight=[0.0, 0.0])
    with pytest.raises(ValueError, match="non-zero"):
        acc.result()


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), workers=st.integers(1, 5))
def test_merge_is_exact_and_order_independent(seed: int, workers: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    x = rng.normal(size=(n, 7)) * 10
    t = rng.integers(-100, 7, size=n).clip(-100, 6)
    t[t < 0] = -100
    sw = rng.random(n) * 1e6
    bounds = chunk_bounds(n, rng, 12)
    single = feed(CrossEntropyAccumulator(), bounds, x, t, sw)
    parts = [CrossEntropyAccumulator() for _ in range(workers)]
    for lo, hi in bounds:
        parts[rng.integers(workers)].update(x[lo:hi], t[lo:hi], sw[lo:hi])
    rng.shuffle(parts)  # type: ignore[arg-type]
    merged = parts[0]
    for other in parts[1:]:
        merged.merge(pickle.loads(pickle.dumps(other)))
    assert merged.result() == single.result() or (
        math.isnan(merged.result()) and math.isnan(single.result())
    )
    assert merged.loss_sum == single.loss_sum
    assert merged.denominator == single.denominator
    assert merged.count == single.count == n


def test_exact_sum_is_independent_of_the_order() -> None:
    rng = np.random.default_rng(3)
    terms = (rng.normal(size=500) * 10.0 ** rng.integers(-20, 20, size=500)).tolist()
    terms += [1e300, -1e300, 1e-300]
    values = set()
    for _ in range(5):
        rng.shuffle(terms)
        s = ExactSum()
        for term in terms:
            s.add(term)
        values.add(s.value)
    assert values == {math.fsum(terms)}
    s = ExactSum()
    s.add(math.inf)
    s.add(1.0)
    assert s.value == math.inf
    s.add(-math.inf)
    assert math.isnan(s.value)


def test_pickle_round_trip_keeps_options_and_state() -> None:
    rng = np.random.default_rng(4)
    x, t = rng.normal(size=(20, 3)), rng.integers(0, 3, size=20)
    accs: list[streaming.Accumulator] = [
        CrossEntropyAccumulator(weight=[1.0, 2.0, 3.0], label_smoothing=0.2, ignore_index=1),
        NLLLossAccumulator(reduction="sum"),
        BinaryCrossEntropyWithLogitsAccumulator(pos_weight=[2.0, 1.0, 1.0]),
        LogLossAccumulator(from_logits=True),
    ]
    for acc in accs:
        target: Any = t
        if isinstance(acc, BinaryCrossEntropyWithLogitsAccumulator):
            target = (x > 0).astype(np.float64)
        acc.update(x[:10], target[:10])
        clone = pickle.loads(pickle.dumps(acc))
        assert type(clone) is type(acc) and repr(clone) == repr(acc)
        acc.update(x[10:], target[10:])
        clone.update(x[10:], target[10:])
        assert clone.result() == acc.result()
        assert clone.copy().merge(clone).count == 2 * acc.count


def test_copy_module_copies_are_independent() -> None:
    x, t = np.random.default_rng(5).normal(size=(6, 3)), np.array([0, 1, 2, 0, 1, 2])
    acc = CrossEntropyAccumulator(reduction="sum")
    acc.update(x[:3], t[:3])
    state = (acc.count, acc.loss_sum, acc.denominator, acc.result())
    for clone in (copy.copy(acc), copy.deepcopy(acc)):
        clone.update(x[3:], t[3:])
        assert clone.count == 6
        assert (acc.count, acc.loss_sum, acc.denominator, acc.result()) == state


@pytest.mark.parametrize("from_logits", [False, True])
def test_float16_per_sample_losses_are_float16(from_logits: bool) -> None:
    p = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]], dtype=np.float16)
    t = np.array([1, 0, 1])
    accs: list[tuple[streaming.Accumulator, Any]] = [
        (LogLossAccumulator(from_logits=from_logits), t),
        (CrossEntropyAccumulator(), t),
        (NLLLossAccumulator(), t),
        (BinaryCrossEntropyWithLogitsAccumulator(), (p > 0.5).astype(np.float16)),
    ]
    for acc, target in accs:
        losses = acc.update(p, target, return_losses=True)
        assert losses.dtype == np.float16, type(acc).__name__


def test_merge_refuses_other_losses_and_options() -> None:
    with pytest.raises(TypeError, match="cannot merge"):
        CrossEntropyAccumulator().merge(NLLLossAccumulator())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="different weight"):
        CrossEntropyAccumulator(weight=[1.0, 2.0]).merge(CrossEntropyAccumulator())
    with pytest.raises(ValueError, match="different ignore_index"):
        NLLLossAccumulator(ignore_index=0).merge(NLLLossAccumulator())
    with pytest.raises(ValueError, match="different labels"):
        LogLossAccumulator(labels=[0, 1]).merge(LogLossAccumulator(labels=[1, 2]))


# ---------------------------------------------------------------------------------------------
# per-sample losses, errors and warnings
# ---------------------------------------------------------------------------------------------


def test_return_losses_gives_the_none_reduction_and_the_same_totals() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    t = rng.integers(0, 4, size=30)
    sw = rng.random(30)
    plain, with_rows = CrossEntropyAccumulator(), CrossEntropyAccumulator()
    plain.update(x, t, sw)
    rows = with_rows.update(x, t, sw, return_losses=True)
    np.testing.assert_array_equal(
        rows, xent_rs.cross_entropy(x, t, sample_weight=sw, reduction="none")
    )
    assert rows.dtype == np.float32
    assert plain.loss_sum == with_rows.loss_sum

    p = xent_rs.softmax(x.astype(np.float64))
    acc = LogLossAccumulator()
    rows = acc.update(p, t, sw, return_losses=True)
    assert rows.shape == (30,)
    assert float(rows.sum()) == pytest.approx(acc.loss_sum, rel=1e-12)
    np.testing.assert_allclose(rows, -np.log(p[np.arange(30), t]) * sw, rtol=1e-12)


def test_a_failing_update_changes_nothing() -> None:
    acc = CrossEntropyAccumulator()
    acc.update(np.zeros((2, 3)), np.array([0, 1]))
    before = repr(acc)
    with pytest.raises(IndexError, match="out of bounds"):
        acc.update(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError):
        acc.update(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="integers"):
        acc.update(np.zeros((2, 3)), np.array([0.0, 1.0]))
    assert repr(acc) == before
    with pytest.raises(ValueError, match="reduction"):
        CrossEntropyAccumulator(reduction="none")
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyAccumulator(label_smoothing=-0.1)
    with pytest.raises(ValueError, match="unknown loss"):
        streaming.accumulator("hinge")
    with pytest.raises(ValueError, match="ignore_index must lie in"):
        CrossEntropyAccumulator(ignore_index=2**63)


def test_log_loss_checks_every_chunk_like_scikit_learn() -> None:
    acc = LogLossAccumulator()
    with pytest.raises(ValueError, match="outside the 3 classes"):
        acc.update(np.full((2, 3), 1 / 3), np.array([0, 3]))
    with pytest.raises(ValueError, match="needs labels="):
        acc.update(np.full((2, 3), 1 / 3), np.array(["a", "b"]))
    with pytest.raises(ValueError, match="greater than 1"):
        acc.update(np.array([[1.5, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match="NaN"):
        acc.update(np.array([[np.nan, 0.5]]), np.array([0]))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        acc.update(np.full((2, 2), 0.5), np.array([0]))
    with pytest.raises(TypeError, match="predictions first"):
        acc.update(["a", "b"], np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="not belonging to the passed labels"):
        LogLossAccumulator(labels=["a", "b"]).update(np.full((1, 2), 0.5), ["c"])
    with pytest.raises(ValueError, match="number of classes in labels"):
        LogLossAccumulator(labels=["a", "b", "c"]).update(np.full((1, 2), 0.5), ["a"])
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        LogLossAccumulator(labels=[0.0, 1.0]).update(np.full((2, 2), 0.5), [0.0, 0.5])
    with pytest.raises(ValueError, match="Mix of label input types"):
        LogLossAccumulator(labels=["a", 1])
    assert acc.count == 0


def test_log_loss_warns_once_for_rows_not_summing_to_one() -> None:
    acc = LogLossAccumulator()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            acc.update(np.array([[0.2, 0.2], [0.5, 0.5]]), np.array([0, 1]))
    assert [str(w.message) for w in caught] == [
        "The y_prob values do not sum to one. Make sure to pass probabilities."
    ]
    assert not acc.sums_to_one
    fine = LogLossAccumulator()
    fine.update(np.array([[0.5, 0.5]]), np.array([1]))
    assert fine.sums_to_one and not fine.merge(acc).sums_to_one


def test_package_exports_and_doctests() -> None:
    for name in streaming.__all__:
        assert getattr(xent_rs, name) is getattr(streaming, name)
        assert name in xent_rs.__all__
    result = doctest.testmod(streaming, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
