"""``log_loss`` against scikit-learn (when installed) and its own contract."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xent_rs

sklearn_metrics = pytest.importorskip("sklearn.metrics")
_SKLEARN = tuple(int(part) for part in pytest.importorskip("sklearn").__version__.split(".")[:2])


def _probabilities(rng: np.random.Generator, n: int, c: int, dtype: type) -> np.ndarray:
    p = rng.random((n, c)) ** 3
    return (p / p.sum(axis=1, keepdims=True)).astype(dtype)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 60),
    c=st.integers(2, 7),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
    weighted=st.booleans(),
    normalize=st.booleans(),
)
def test_matches_scikit_learn(
    n: int, c: int, seed: int, dtype: type, weighted: bool, normalize: bool
) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    y[:c] = np.arange(c)[:n]
    p = _probabilities(rng, n, c, dtype)
    sw = rng.random(n) + 0.1 if weighted else None
    labels = np.arange(c)
    want = sklearn_metrics.log_loss(y, p, sample_weight=sw, normalize=normalize, labels=labels)
    got = xent_rs.log_loss(y, p, sample_weight=sw, normalize=normalize, labels=labels)
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=2e-5 if dtype is np.float32 else 1e-10)


@pytest.mark.parametrize(
    "y",
    [
        np.array(["b", "a", "c", "a"]),
        np.array([10, 30, 20, 10]),
        np.array([2, 0, 1, 1]),
        np.array([True, False, True, False]),
    ],
    ids=["strings", "sparse-ints", "ints", "bools"],
)
def test_any_label_type(y: np.ndarray) -> None:
    classes = np.unique(y).shape[0]
    p = _probabilities(np.random.default_rng(0), 4, classes, np.float64)
    assert xent_rs.log_loss(y, p) == pytest.approx(sklearn_metrics.log_loss(y, p), rel=1e-12)


def test_binary_positive_column_and_clipping() -> None:
    y = np.array([0, 1, 1, 0])
    p = np.array([0.0, 1.0, 0.3, 0.8])
    assert xent_rs.log_loss(y, p) == pytest.approx(sklearn_metrics.log_loss(y, p), rel=1e-12)
    p32 = p.astype(np.float32)
    assert xent_rs.log_loss(y, p32) == pytest.approx(sklearn_metrics.log_loss(y, p32), rel=1e-6)


def test_indicator_y_true() -> None:
    y = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    p = _probabilities(np.random.default_rng(1), 3, 3, np.float64)
    assert xent_rs.log_loss(y, p) == pytest.approx(sklearn_metrics.log_loss(y, p), rel=1e-12)


def test_from_logits_equals_probabilities_of_the_softmax() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4)) * 3
    y = rng.integers(0, 4, 50)
    y[:4] = np.arange(4)
    want = sklearn_metrics.log_loss(y, xent_rs.softmax(x))
    assert xent_rs.log_loss(y, x, from_logits=True) == pytest.approx(want, rel=1e-9)
    z = rng.normal(size=50)
    yb = (rng.random(50) > 0.5).astype(int)
    want = sklearn_metrics.log_loss(yb, 1 / (1 + np.exp(-z)))
    assert xent_rs.log_loss(yb, z, from_logits=True) == pytest.approx(want, rel=1e-9)


def test_warns_when_rows_do_not_sum_to_one() -> None:
    with pytest.warns(UserWarning, match="do not sum to one"):
        xent_rs.log_loss([0, 1], [[0.5, 0.6], [0.2, 0.8]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xent_rs.log_loss([0, 1], [[0.5, 0.5], [0.2, 0.8]])


@pytest.mark.parametrize(
    ("y", "p", "kwargs", "match"),
    [
        ([0, 1], [[0.5, 1.5], [0.2, 0.8]], {}, "greater than 1: 1.5"),
        ([0, 1], [[0.5, -0.5], [0.2, 0.8]], {}, "lower than 0"),
        ([0, 1], [[np.nan, 0.5], [0.2, 0.8]], {}, "NaN"),
        ([1, 1], [[0.5, 0.5], [0.2, 0.8]], {}, "only one label"),
        ([0, 5], [[0.5, 0.5], [0.2, 0.8]], {"labels": [0, 1]}, r"values \{5\}"),
        ([0, 1, 2], [[0.5, 0.5], [0.2, 0.8], [0.1, 0.9]], {}, "different number of classes"),
        ([0, 1, 1], [[0.5, 0.5], [0.2, 0.8]], {}, "inconsistent numbers of samples"),
        ([0, 1], np.zeros((0, 2)), {}, "0 sample"),
        ([0, 1], [[0.5, 0.5], [0.2, 0.8]], {"sample_weight": [0.0, 0.0]}, "non-zero"),
    ],
)
def test_errors_are_scikit_learns(y: object, p: object, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        xent_rs.log_loss(y, p, **kwargs)


P3 = [[0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]


@pytest.mark.parametrize(
    ("y", "kwargs", "error", "match"),
    [
        ([0.5, 1.5, 2.5], {}, ValueError, "Unknown label type: continuous values such as 0.5"),
        ([0, 1, 2], {"labels": [0.5, 1, 2]}, ValueError, "Unknown label type: continuous"),
        (["a", 1, "a"], {}, ValueError, "Mix of label input types"),
        ([0, 1, 1], {"labels": ["a", 1, 2]}, ValueError, "Mix of label input types"),
        ([0.0, np.nan, 1.0], {}, ValueError, "contains NaN"),
        ([0.0, np.inf, 1.0], {}, ValueError, "contains infinity"),
        (np.array([0, 1, 2], dtype=object), {}, ValueError, "Unknown label type: object"),
        ([1j, 0, 1], {}, ValueError, "Complex data not supported"),
        ([b"a", b"b", b"c"], {}, TypeError, "bytes"),
    ],
    ids=[
        "continuous",
        "continuous-labels",
        "mixed",
        "mixed-labels",
        "nan",
        "inf",
        "objects",
        "complex",
        "bytes",
    ],
)
def test_labels_scikit_learn_refuses(y: object, kwargs: dict, error: type, match: str) -> None:
    """Labels that are not classes (a regression target, NaN, mixed strings and numbers...)
    are refused, not scored."""
    if match == "bytes" and _SKLEARN < (1, 7):
        # scikit-learn deprecated bytes labels in 1.5 and refuses them from 1.7 on; xent_rs
        # refuses them as 1.7 does
        with pytest.warns(FutureWarning, match="bytes"):
            sklearn_metrics.log_loss(y, P3, **kwargs)
    else:
        with pytest.raises(error), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scikit-learn's cast of NaN labels
            sklearn_metrics.log_loss(y, P3, **kwargs)
    with pytest.raises(error, match=match):
        xent_rs.log_loss(y, P3, **kwargs)
    with pytest.raises(error, match=match):
        xent_rs.log_loss(y, np.log(P3), **kwargs, from_logits=True)


def test_whole_float_and_object_string_labels_are_classes() -> None:
    for y in ([0.0, 1.0, 2.0], np.array(["a", "b", "c"], dtype=object)):
        want = sklearn_metrics.log_loss(y, P3)
        assert xent_rs.log_loss(y, P3) == pytest.approx(want, rel=1e-12)


def test_y_pred_is_an_alias_of_y_proba() -> None:
    p = [[0.25, 0.75], [0.5, 0.5]]
    assert xent_rs.log_loss([1, 0], y_pred=p) == xent_rs.log_loss([1, 0], p)
    with pytest.raises(ValueError, match="both"):
        xent_rs.log_loss([1, 0], p, y_pred=p)
