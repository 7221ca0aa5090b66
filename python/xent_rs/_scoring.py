"""``log_loss``: a drop-in for ``sklearn.metrics.log_loss`` (scikit-learn >= 1.5 semantics).

Integer labels ``0 .. C-1`` are scored by one native pass over the probabilities that never
builds a one-hot matrix; any other labels (strings, sparse integers, ``labels=``) are first
encoded to column indices the way scikit-learn's ``LabelBinarizer`` orders them, then scored
by the same pass. ``from_logits=True`` (beyond scikit-learn) scores raw logits stably.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from xent_rs import _backend, _bfloat16, _core, _errors, _functional


def log_loss(
    y_true: Any,
    y_proba: Any = None,
    *,
    sample_weight: Any = None,
    labels: Any = None,
    normalize: bool = True,
    from_logits: bool = False,
    y_pred: Any = None,
) -> float:
    """Log loss (cross entropy) of predicted probabilities, like ``sklearn.metrics.log_loss``.

    Parameters
    ----------
    y_true : array_like
        True labels of any type (integers, strings, ...), or a one-hot indicator matrix.
    y_proba : array_like
        Predicted probabilities, ``(n_samples, n_classes)`` with columns in sorted label
        order, or ``(n_samples,)`` for the positive class of a binary problem. With
        ``from_logits=True``, raw logits of the same shapes.
    sample_weight : array_like, optional
        Per-sample weights.
    labels : array_like, optional
        All class labels, when ``y_true`` does not contain every class.
    normalize : bool, default True
        Return the (weighted) mean per sample; else the (weighted) sum.
    from_logits : bool, default False
        Score logits with a stable log-softmax (log-sigmoid for 1-D) instead of clipped
        probabilities.
    y_pred : array_like, optional
        scikit-learn's former name of ``y_proba``.

    Returns
    -------
    float
        The loss. Probabilities are clipped to ``[eps, 1 - eps]`` with
        ``eps = np.finfo(y_proba.dtype).eps``; rows that do not sum to 1 give a warning, as in
        scikit-learn, and the errors are scikit-learn's.

    Examples
    --------
    >>> import xent_rs
    >>> round(xent_rs.log_loss(["spam", "ham", "ham", "spam"],
    ...                        [[.1, .9], [.9, .1], [.8, .2], [.35, .65]]), 5)
    0.21616
    >>> round(xent_rs.log_loss([0, 1], [[1000.0, 0.0], [0.0, 1000.0]], from_logits=True), 5)
    0.0
    """
    if y_pred is not None:
        if y_proba is not None:
            raise ValueError("Cannot use both `y_pred` and `y_proba`; they name the same argument.")
        y_proba = y_pred
    if y_proba is None:
        raise TypeError("log_loss() missing required argument: 'y_proba'")
    p, eps = probabilities(y_proba)
    y = _backend.to_ndarray(y_true, "y_true")
    if labels is not None:
        _backend.refuse_masked(labels, "labels")
    sw = sample_weights(sample_weight, p.dtype)
    check_lengths(p.shape[0], y, sw)
    if y.dtype.kind in "iu":
        y = _backend.native(y)  # integer labels go to the core as they are
    elif y.ndim == 1 and y.dtype.kind != "b":
        check_label_type(y_true, y)
    if from_logits:
        return _from_logits(y, p, sw, labels, normalize)

    if y.ndim == 1 and y.dtype.kind in "iu" and _identity_labels(labels, p):
        # Integer labels that are already column numbers: one native pass, no encoding.
        summary = _core.log_loss(p, y, sw, eps, math.sqrt(eps))
        _check_probabilities(p, summary.out_of_range)
        columns = 2 if p.ndim == 1 else p.shape[1]
        every_class = labels is not None or bool(np.all(summary.seen))
        if summary.labels_in_range and every_class and columns >= 2:
            if not summary.normalized:
                _warn_not_normalized()
            return _average(summary.loss_sum, summary.weight_sum, normalize)

    codes, classes = _encode(y, labels)
    if codes is None:
        return _indicator(y, p, sw, eps, classes, labels, normalize)
    summary = _core.log_loss(p, codes, sw, eps, math.sqrt(eps))
    _check_probabilities(p, summary.out_of_range)
    if not summary.normalized:
        _warn_not_normalized()
    _check_columns(classes, p, labels)
    return _average(summary.loss_sum, summary.weight_sum, normalize)


def sample_weights(sample_weight: Any, dtype: np.dtype[Any]) -> np.ndarray | None:
    """scikit-learn's per-sample weights: 1-D, in the probabilities' dtype."""
    if sample_weight is None:
        return None
    sw: np.ndarray = _backend.like(_backend.NUMPY, sample_weight, dtype, "sample_weight")
    if sw.ndim != 1:
        raise ValueError(
            f"Sample weights must be 1D array or scalar, got {sw.ndim}D array instead."
        )
    return sw


def check_lengths(n: int, y: np.ndarray, sw: np.ndarray | None) -> None:
    """scikit-learn's check that predictions, labels and weights have one row per sample."""
    lengths = [n, y.shape[0] if y.ndim else 1] + ([sw.shape[0]] if sw is not None else [])
    if len(set(lengths)) > 1:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: {lengths}")


def check_label_type(raw: Any, values: np.ndarray) -> None:
    """scikit-learn's refusals of class labels (``values``, the array of ``raw``): complex
    numbers, NaN or infinity, floats that are not whole numbers (a regression target, not
    classes), bytes, object arrays not made of strings, and strings mixed with numbers."""
    kind = values.dtype.kind
    if kind == "c":
        raise ValueError(f"Complex data not supported\n{values}\n")
    if kind == "S":
        raise TypeError(
            "Support for labels represented as bytes is not supported. Convert the labels to a "
            "string or integer format."
        )
    if kind == "f":
        if np.isnan(values).any():
            raise ValueError("Input y contains NaN.")
        if np.isinf(values).any():
            raise ValueError(
                f"Input y contains infinity or a value too large for {values.dtype!r}."
            )
        fractional = values != np.trunc(values)
        if fractional.any():
            first = int(np.argmax(fractional))
            raise ValueError(
                f"Unknown label type: continuous values such as {values[first].item()!r} at "
                f"position {first}; log_loss needs class labels"
            )
    if kind == "O" and values.size and not isinstance(values.flat[0], str):
        raise ValueError(f"Unknown label type: object array of {type(values.flat[0]).__name__}")
    items = values.ravel() if kind == "O" else raw if isinstance(raw, (list, tuple)) else ()
    if kind in "OU" and len({isinstance(v, str) for v in items}) > 1:
        raise ValueError(
            f"Mix of label input types (string and number); Got {np.unique(values.astype(str))}."
        )


def _identity_labels(labels: Any, p: np.ndarray) -> bool:
    """Whether ``labels`` (``None``, or ``0 .. C-1`` for ``C`` probability columns) make
    integer labels their own column numbers."""
    if labels is None:
        return True
    given = np.asarray(labels)
    columns = 2 if p.ndim == 1 else p.shape[1]
    return (
        given.ndim == 1
        and given.dtype.kind in "iu"
        and given.shape[0] == columns
        and bool(np.array_equal(given, np.arange(columns)))
    )


def work_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype probabilities of ``dtype`` are scored in: float32 for float16 and bfloat16,
    float64 for integers and booleans, any other float as it is, in native byte order."""
    if _bfloat16.is_bfloat16(dtype):
        return _backend.FLOAT32
    if dtype.kind != "f":
        return _backend.FLOAT64
    if dtype.itemsize == 2:
        return _backend.FLOAT32
    return np.dtype(dtype.type)


def probabilities(y_proba: Any) -> tuple[np.ndarray, float]:
    """``y_proba`` as a C-contiguous, aligned float array in native byte order (NumPy's
    rules; no copy when it already is one) and its clipping ``eps``."""
    p = _backend.to_ndarray(y_proba, "y_proba")
    dtype = p.dtype
    if _bfloat16.is_bfloat16(dtype):
        eps = _bfloat16.EPS
    elif dtype.kind not in "fiub":
        raise TypeError(f"y_proba must be a real numeric array, got dtype {dtype}")
    else:
        eps = float(np.finfo(dtype if dtype.kind == "f" else _backend.FLOAT64).eps)
    native = dtype is _backend.FLOAT32 or dtype is _backend.FLOAT64
    if not (native and type(p) is np.ndarray and _backend.is_ready(p)):
        p = np.require(p, work_dtype(dtype), ("C_CONTIGUOUS", "ALIGNED", "ENSUREARRAY"))
    if p.ndim == 0 or p.ndim > 2:
        raise ValueError(f"y_proba must be 1-D or 2-D, got an array of shape {p.shape}")
    if p.shape[0] == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={p.shape}) while a minimum of 1 is required."
        )
    if p.ndim == 2 and p.shape[1] == 1:
        p = np.ascontiguousarray(p[:, 0])
    return p, eps


def _check_probabilities(p: np.ndarray, out_of_range: bool) -> None:
    """scikit-learn's checks of the probabilities, in its order (the native pass only says
    whether one fails; the message's details are found here, on that rare path)."""
    if not out_of_range:
        return
    if np.isnan(p).any():
        raise ValueError("Input contains NaN.")
    if np.isinf(p).any():
        raise ValueError("Input contains infinity or a value too large for dtype('float64').")
    high, low = p.max(), p.min()
    if high > 1:
        raise ValueError(f"y_prob contains values greater than 1: {high}")
    raise ValueError(f"y_prob contains values lower than 0: {low}")


def _warn_not_normalized() -> None:
    warnings.warn(
        "The y_prob values do not sum to one. Make sure to pass probabilities.",
        UserWarning,
        stacklevel=3,
    )


def _encode(y: np.ndarray, labels: Any) -> tuple[np.ndarray | None, np.ndarray]:
    """Column indices of ``y`` in sorted-label order, and the classes (``None`` codes for a
    one-hot indicator ``y``)."""
    if y.ndim == 2:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("Multioutput target data is not supported with label binarization")
        return None, np.arange(y.shape[1])
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D labels or a 2-D indicator, got shape {y.shape}")
    if labels is not None:
        given = np.asarray(labels)
        check_label_type(labels, given)
        classes = np.unique(given)
        if classes.shape != given.shape or not np.array_equal(classes, given):
            warnings.warn(
                f"Labels passed were {labels}. But this function assumes labels are ordered "
                f"lexicographically. Pass the ordered labels={classes.tolist()} and ensure that "
                "the columns of y_prob correspond to this ordering.",
                UserWarning,
                stacklevel=3,
            )
        present = np.isin(y, classes)
        if not present.all():
            raise _errors.labels_outside(set(y[~present].tolist()), labels)
        if classes.shape[0] == 1:
            raise ValueError(
                f"The labels array needs to contain at least two labels, got {classes}."
            )
        return np.searchsorted(classes, y).astype(np.int64), classes
    classes, codes = np.unique(y, return_inverse=True)
    if classes.shape[0] == 1:
        raise ValueError(
            f"y_true contains only one label ({classes[0]}). Please provide the list of all "
            "expected class labels explicitly through the labels argument."
        )
    return codes.reshape(-1).astype(np.int64), classes


def _check_columns(classes: np.ndarray, p: np.ndarray, labels: Any) -> None:
    columns = 2 if p.ndim == 1 else p.shape[1]
    if classes.shape[0] == columns:
        return
    if labels is None:
        raise ValueError(
            f"y_true and y_prob contain different number of classes: {classes.shape[0]} vs "
            f"{columns}. Please provide the true labels explicitly through the labels "
            f"argument. Classes found in y_true: {classes}"
        )
    raise ValueError(
        "The number of classes in labels is different from that in y_prob. Classes found in "
        f"labels: {classes}"
    )


def _average(total: float, weight: float, normalize: bool) -> float:
    if not normalize:
        return float(total)
    if weight == 0:
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return float(total / weight)


def _indicator(
    y: np.ndarray,
    p: np.ndarray,
    sw: np.ndarray | None,
    eps: float,
    classes: np.ndarray,
    labels: Any,
    normalize: bool,
) -> float:
    """A one-hot (or multi-hot) indicator ``y_true``: ``-Σ_c y_c log(clip(p_c))`` per row."""
    _check_probabilities(p, bool(np.isnan(p).any() or p.min() < 0 or p.max() > 1))
    full = np.stack([1 - p, p], axis=1) if p.ndim == 1 else p
    if not np.allclose(full.sum(axis=1), 1, rtol=math.sqrt(eps), atol=1e-8):
        _warn_not_normalized()
    indicator = y if y.shape[1] > 1 else np.concatenate([1 - y, y], axis=1)
    _check_columns(np.arange(indicator.shape[1]), p, labels)
    rows = -(indicator * np.log(np.clip(full, eps, 1 - eps))).sum(axis=1, dtype=np.float64)
    weights = np.ones(rows.shape[0]) if sw is None else sw.astype(np.float64)
    return _average(float(rows @ weights), float(weights.sum()), normalize)


def _from_logits(
    y: np.ndarray, x: np.ndarray, sw: np.ndarray | None, labels: Any, normalize: bool
) -> float:
    """Scores logits: log-softmax over the classes (log-sigmoid for 1-D logits)."""
    codes, classes = _encode(y, labels)
    if codes is None:
        raise ValueError("from_logits=True needs class labels, not an indicator matrix")
    _check_columns(classes, x, labels)
    if x.ndim == 1:
        total = _functional.binary_cross_entropy_with_logits(
            x, codes.astype(x.dtype), weight=sw, reduction="sum"
        )
    else:
        total = _functional.cross_entropy(x, codes, sample_weight=sw, reduction="sum")
    total = float(total)
    if math.isnan(total) and bool(np.isnan(x).any()):
        raise ValueError("Input contains NaN.")
    weight = float(x.shape[0]) if sw is None else float(np.sum(sw, dtype=np.float64))
    return _average(total, weight, normalize)
