"""Streaming accumulators: a loss over data that arrives chunk by chunk.

Each accumulator scores one chunk at a time with the same native kernels as the one-shot
functions and keeps two float64 numbers: the loss sum and the ``mean`` denominator (the summed
class weight of the counted samples for hard targets, the number of samples or the summed
sample weight for soft targets and ``log_loss``, the number of elements for binary cross
entropy). ``result()`` divides them, so the loss over many chunks equals the one-shot function
on their concatenation up to float64 rounding, weighted means, ignored targets and empty
chunks included.

The sums are kept exactly (as a short list of non-overlapping float64 partials, Shewchuk's
algorithm), so ``update`` and ``merge`` in any order and any grouping give bitwise the same
``result()`` for the same chunks: only the chunking itself (each chunk's own float64 sum) can
move the last bits. (Unless a running sum passes float64's largest value on the way, which
needs terms near 1e308 of both signs: it then becomes an infinity for some orders only.)
Accumulators hold plain attributes and pickle, so partial results computed by other processes
or machines combine with ``merge``.

>>> import numpy as np, xent_rs
>>> from xent_rs.streaming import CrossEntropyAccumulator
>>> logits = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
>>> target = np.array([0, 0, 1])
>>> acc = CrossEntropyAccumulator()
>>> acc.update(logits[:2], target[:2])
>>> acc.update(logits[2:], target[2:])
>>> bool(np.isclose(acc.result(), xent_rs.cross_entropy(logits, target)))
True
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from typing import Any, Literal, TypeVar, overload

import numpy as np

from xent_rs import _backend, _core, _errors, _scoring, _spec

__all__ = [
    "Accumulator",
    "BinaryCrossEntropyAccumulator",
    "BinaryCrossEntropyWithLogitsAccumulator",
    "BinaryFocalLossWithLogitsAccumulator",
    "CrossEntropyAccumulator",
    "FocalLossAccumulator",
    "KLDivAccumulator",
    "LogLossAccumulator",
    "NLLLossAccumulator",
    "accumulator",
    "accumulator_class",
]

_Self = TypeVar("_Self", bound="Accumulator")
_F64 = np.dtype(np.float64)


class ExactSum:
    """A float64 sum kept exactly: its value does not depend on the order of the terms.

    The terms are held as non-overlapping partials (Shewchuk's algorithm, as in
    ``math.fsum``); ``value`` is the correctly rounded sum. Infinities and NaN are summed
    apart and dominate, as in ordinary float arithmetic.

    >>> s = ExactSum()
    >>> for term in (1e100, 1.0, -1e100):
    ...     s.add(term)
    >>> s.value
    1.0
    """

    def __init__(self) -> None:
        self.partials: list[float] = []
        self.special = 0.0

    def add(self, x: float) -> None:
        """Adds one term."""
        x = float(x)
        if not math.isfinite(x):
            self.special += x
            return
        partials = self.partials
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            if not math.isfinite(hi):  # overflow: the sum is infinite whatever comes next
                self.special += hi
                return
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]

    def merge(self, other: ExactSum) -> None:
        """Adds every term of ``other``."""
        for x in other.partials:
            self.add(x)
        self.special += other.special

    @property
    def value(self) -> float:
        """The correctly rounded sum of the terms."""
        if self.special != 0.0 or math.isnan(self.special):
            return self.special
        try:
            return math.fsum(self.partials)
        except OverflowError:
            return math.inf if sum(self.partials) > 0 else -math.inf


class Accumulator:
    """The common part of the streaming accumulators (use a subclass).

    Attributes
    ----------
    reduction : {"mean", "sum", "batchmean"}
        What :meth:`result` returns.
    count : int
        The number of loss terms seen: the size of the ``reduction="none"`` output summed
        over the chunks (samples for the multiclass losses and ``log_loss``, elements for
        binary cross entropy), ignored targets included.
    """

    reduction: str
    count: int

    def __init__(self, reduction: str) -> None:
        # Checked by the subclass (its options come from ``_spec``): "mean" or "sum" (or
        # kl_div's "batchmean", a mean whose denominator counts rows).
        self.reduction = reduction
        self._loss = ExactSum()
        self._denominator = ExactSum()
        self.count = 0

    # -- the state -----------------------------------------------------------------------

    @property
    def loss_sum(self) -> float:
        """The (weighted) sum of the losses seen so far, in float64."""
        return self._loss.value

    @property
    def denominator(self) -> float:
        """The ``mean`` denominator accumulated so far, in float64."""
        return self._denominator.value

    def result(self) -> float:
        """The loss over everything seen so far: the mean or the sum, as a float64.

        A ``mean`` with a zero denominator (nothing seen, every target ignored, zero weights)
        is NaN, like the one-shot functions.
        """
        total = self.loss_sum
        if self.reduction == "sum":
            return total
        denominator = self.denominator
        if denominator == 0.0:
            return math.nan
        return total / denominator

    def reset(self) -> None:
        """Forgets everything seen (the options stay)."""
        self._loss = ExactSum()
        self._denominator = ExactSum()
        self.count = 0

    def copy(self: _Self) -> _Self:
        """An independent copy (options and state)."""
        return copy.deepcopy(self)

    def __copy__(self: _Self) -> _Self:
        # A shallow copy would share the exact running sums, which are updated in place.
        return self.copy()

    def merge(self: _Self, other: _Self) -> _Self:
        """Adds the state of ``other`` (an accumulator of the same loss and options) to this one.

        Returns ``self``. Merging is exact: merged partial results give the same ``result()``
        as one accumulator fed every chunk, bitwise, in any order.
        """
        if other is self:
            other = self.copy()
        if type(other) is not type(self):
            raise TypeError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        mine, theirs = self._options(), other._options()
        for name in mine:
            if not _same(mine[name], theirs[name]):
                raise ValueError(
                    f"cannot merge accumulators with different {name}: "
                    f"{mine[name]!r} and {theirs[name]!r}"
                )
        self._loss.merge(other._loss)
        self._denominator.merge(other._denominator)
        self.count += other.count
        self._merge_extra(other)
        return self

    # -- scoring -------------------------------------------------------------------------

    @overload
    def update(
        self,
        input: Any,
        target: Any,
        sample_weight: Any = None,
        *,
        return_losses: Literal[False] = False,
    ) -> None: ...

    @overload
    def update(
        self,
        input: Any,
        target: Any,
        sample_weight: Any = None,
        *,
        return_losses: Literal[True],
    ) -> np.ndarray: ...

    def update(
        self,
        input: Any,
        target: Any,
        sample_weight: Any = None,
        *,
        return_losses: bool = False,
    ) -> np.ndarray | None:
        """Scores one chunk and adds it to the running totals.

        Parameters
        ----------
        input : array_like
            The chunk's predictions (as the one-shot function takes them). An empty chunk is
            fine.
        target : array_like
            The chunk's targets.
        sample_weight : array_like, optional
            The chunk's per-sample weights.
        return_losses : bool, default False
            Also return the chunk's per-sample losses (the one-shot function's
            ``reduction="none"``, each multiplied by its sample weight). The running totals
            are the same either way.

        Returns
        -------
        ndarray or None
            The per-sample losses with ``return_losses=True``.

        Notes
        -----
        A chunk that raises (bad shapes, out-of-range targets, ...) leaves the accumulator
        unchanged.
        """
        total, denominator, count, losses = self._score(
            _aligned(input), _aligned(target), _aligned(sample_weight), bool(return_losses)
        )
        self._loss.add(total)
        self._denominator.add(denominator)
        self.count += count
        return losses

    def _score(
        self, input: Any, target: Any, sample_weight: Any, return_losses: bool
    ) -> tuple[float, float, int, np.ndarray | None]:
        raise NotImplementedError

    def _options(self) -> dict[str, Any]:
        """The constructor's options, as the accumulator holds them (one attribute each)."""
        return {name: getattr(self, name) for name in inspect.signature(type(self)).parameters}

    def _merge_extra(self, other: Accumulator) -> None:
        """Merges state beyond the two sums and the count (subclasses)."""

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={_short(v)}" for k, v in self._options().items())
        return (
            f"{type(self).__name__}({options}; count={self.count}, loss_sum={self.loss_sum!r}, "
            f"denominator={self.denominator!r})"
        )


def _aligned(a: Any) -> Any:
    """A misaligned array (``np.frombuffer`` at an odd offset, buffers unpickled by a Dask
    worker) as an aligned copy: the native kernels take aligned memory only."""
    if isinstance(a, np.ndarray) and not a.flags.aligned:
        return a.copy()
    return a


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if a is None or b is None:
            return False
        aa, bb = np.asarray(a), np.asarray(b)
        return aa.shape == bb.shape and bool(np.array_equal(aa, bb))
    return bool(a == b)


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array(shape={value.shape})" if value.size > 6 else repr(value.tolist())
    return repr(value)


def _option_array(value: Any, name: str) -> np.ndarray | None:
    """A weight given to a constructor, kept as float64 (converted per chunk)."""
    if value is None:
        return None
    a = _backend.to_ndarray(value, name)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return np.array(a, dtype=np.float64)


class _ClassAccumulator(Accumulator):
    """Cross entropy and NLL: classes along ``axis``, hard (or, for CE, soft) targets."""

    def __init__(self, spec: _spec.ClassLoss, weight: Any) -> None:
        super().__init__(spec.reduction)
        self.spec = spec
        self.weight = _option_array(weight, "weight")
        self.axis = spec.axis
        self.ignore_index = spec.ignore_index

    def _score(
        self, input: Any, target: Any, sample_weight: Any, return_losses: bool
    ) -> tuple[float, float, int, np.ndarray | None]:
        # One native pass: the loss sum, the mean's denominator and the per-sample losses.
        return _backend.class_partial(
            self.spec, input, target, self.weight, sample_weight, return_losses
        )


class CrossEntropyAccumulator(_ClassAccumulator):
    """Streaming :func:`xent_rs.cross_entropy`: logits and class targets, chunk by chunk.

    Parameters
    ----------
    axis : int, default -1
        The class axis of every chunk.
    weight : array_like, optional
        Per-class weights, shape ``(C,)``.
    ignore_index : int, default -100
        Hard targets equal to this count for nothing (neither loss nor denominator).
    label_smoothing, z_loss, softcap
        As in :func:`xent_rs.cross_entropy`.
    reduction : {"mean", "sum"}, default "mean"
        What :meth:`result` returns. ``mean`` divides by ``Σ weight[y]·sample_weight`` over
        the non-ignored hard targets, or by the number of samples (``Σ sample_weight``) for
        soft targets, over every chunk seen: the one-shot function's ``mean`` of the
        concatenated chunks.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.streaming import CrossEntropyAccumulator
    >>> acc = CrossEntropyAccumulator(ignore_index=-1)
    >>> acc.update(np.zeros((2, 4)), np.array([0, -1]))
    >>> acc.update(np.zeros((0, 4)), np.zeros(0, np.int64))  # empty chunks are fine
    >>> round(acc.result(), 6), acc.count, acc.denominator  # log(4), one counted sample
    (1.386294, 2, 1.0)
    """

    def __init__(
        self,
        *,
        axis: int = -1,
        weight: Any = None,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        softcap: float | None = None,
        reduction: str = "mean",
    ) -> None:
        spec = _spec.cross_entropy(
            axis, ignore_index, reduction, label_smoothing, z_loss, softcap, accumulator=True
        )
        super().__init__(spec, weight)
        self.label_smoothing = spec.label_smoothing
        self.z_loss = spec.z_loss
        self.softcap = spec.softcap


class NLLLossAccumulator(_ClassAccumulator):
    """Streaming :func:`xent_rs.nll_loss`: log-probabilities and class indices.

    Parameters
    ----------
    axis, weight, ignore_index
        As in :class:`CrossEntropyAccumulator`.
    reduction : {"mean", "sum"}, default "mean"
        ``mean`` divides by ``Σ weight[y]·sample_weight`` over the non-ignored targets of every
        chunk seen.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.streaming import NLLLossAccumulator
    >>> acc = NLLLossAccumulator(weight=[1.0, 3.0])
    >>> acc.update(np.log([[0.5, 0.5]]), np.array([1]))
    >>> acc.update(np.log([[0.5, 0.5]]), np.array([0]))
    >>> round(acc.result(), 6), acc.denominator  # log(2), weights 3 + 1
    (0.693147, 4.0)
    """

    def __init__(
        self,
        *,
        axis: int = -1,
        weight: Any = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        spec = _spec.nll_loss(axis, ignore_index, reduction, accumulator=True)
        super().__init__(spec, weight)


class FocalLossAccumulator(_ClassAccumulator):
    """Streaming :func:`xent_rs.focal_loss`: logits and class indices, chunk by chunk.

    Parameters
    ----------
    axis, weight, ignore_index
        As in :class:`CrossEntropyAccumulator`.
    gamma : float, default 2.0
        As in :func:`xent_rs.focal_loss`.
    reduction : {"mean", "sum"}, default "mean"
        As in :class:`NLLLossAccumulator`.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.streaming import FocalLossAccumulator
    >>> acc = FocalLossAccumulator(gamma=0.0)
    >>> acc.update(np.zeros((2, 4)), np.array([0, 3]))
    >>> round(acc.result(), 6)  # gamma = 0: cross entropy, log(4)
    1.386294
    """

    def __init__(
        self,
        *,
        axis: int = -1,
        gamma: float = 2.0,
        weight: Any = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        spec = _spec.focal_loss(axis, gamma, ignore_index, reduction, accumulator=True)
        super().__init__(spec, weight)
        self.gamma = spec.gamma


class _BinaryAccumulator(Accumulator):
    """The element-wise losses: one loss per element."""

    def __init__(self, spec: _spec.BinaryLoss, weight: Any, pos_weight: Any = None) -> None:
        super().__init__(spec.reduction)
        self.spec = spec
        self.weight = _option_array(weight, "weight")
        self.pos_weight = _option_array(pos_weight, "pos_weight")

    def _score(
        self, input: Any, target: Any, sample_weight: Any, return_losses: bool
    ) -> tuple[float, float, int, np.ndarray | None]:
        return _backend.binary_partial(
            self.spec, input, target, self.weight, sample_weight, self.pos_weight, return_losses
        )


class BinaryCrossEntropyAccumulator(_BinaryAccumulator):
    """Streaming :func:`xent_rs.binary_cross_entropy`: probabilities and binary targets.

    Parameters
    ----------
    weight : array_like, optional
        Weights broadcast against every chunk's input, e.g. shape ``(C,)`` for ``(n, C)``
        chunks (so they cannot vary along the rows: per-row weights are ``sample_weight``).
    reduction : {"mean", "sum"}, default "mean"
        ``mean`` divides by the number of elements seen (torch's rule; the weights do not
        enter the denominator).

    Notes
    -----
    ``update``'s ``sample_weight`` is one weight per row (shape ``(n,)``; for a 1-D input, per
    element), or an array that broadcasts against the chunk's input; it multiplies the
    constructor's ``weight``. The result equals ``binary_cross_entropy(concatenated_input,
    concatenated_target, weight=weight * sample_weight[:, None])``.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.streaming import BinaryCrossEntropyAccumulator
    >>> acc = BinaryCrossEntropyAccumulator()
    >>> acc.update(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]]), sample_weight=[2.0])
    >>> round(acc.result(), 6), acc.count  # 2 log(2) per element, mean over 2 elements
    (1.386294, 2)
    """

    def __init__(self, *, weight: Any = None, reduction: str = "mean") -> None:
        spec = _spec.binary_cross_entropy(reduction, accumulator=True)
        super().__init__(spec, weight)


class BinaryCrossEntropyWithLogitsAccumulator(_BinaryAccumulator):
    """Streaming :func:`xent_rs.binary_cross_entropy_with_logits`.

    Parameters
    ----------
    weight : array_like, optional
        Weights broadcast against every chunk's input (see
        :class:`BinaryCrossEntropyAccumulator`; per-row weights are ``sample_weight``).
    pos_weight : array_like, optional
        Weight of the positive class, broadcast against every chunk's input.
    reduction : {"mean", "sum"}, default "mean"
        ``mean`` divides by the number of elements seen.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.streaming import BinaryCrossEntropyWithLogitsAccumulator
    >>> acc = BinaryCrossEntropyWithLogitsAccumulator(pos_weight=[3.0])
    >>> acc.update(np.array([[0.0], [0.0]]), np.array([[1.0], [0.0]]))
    >>> round(acc.result(), 6)  # (3 log 2 + log 2) / 2
    1.386294
    """

    def __init__(
        self, *, weight: Any = None, pos_weight: Any = None, reduction: str = "mean"
    ) -> None:
        spec = _spec.binary_cross_entropy_with_logits(reduction, accumulator=True)
        super().__init__(spec, weight, pos_weight)


class BinaryFocalLossWithLogitsAccumulator(_BinaryAccumulator):
    """Streaming :func:`xent_rs.binary_focal_loss_with_logits`.

    Parameters
    ----------
    gamma, alpha
        As in :func:`xent_rs.binary_focal_loss_with_logits`.
    weight, reduction
        As in :class:`BinaryCrossEntropyAccumulator` (per-row weights are ``sample_weight``).

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.streaming import BinaryFocalLossWithLogitsAccumulator
    >>> acc = BinaryFocalLossWithLogitsAccumulator(gamma=0.0, alpha=None)
    >>> acc.update(np.zeros(2), np.array([1.0, 0.0]))
    >>> round(acc.result(), 6)  # gamma = 0, no alpha: BCE with logits, log 2
    0.693147
    """

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: float | None = 0.25,
        weight: Any = None,
        reduction: str = "mean",
    ) -> None:
        spec = _spec.binary_focal_loss_with_logits(gamma, alpha, reduction, accumulator=True)
        super().__init__(spec, weight)
        self.gamma = spec.gamma
        self.alpha = spec.alpha


class KLDivAccumulator(Accumulator):
    """Streaming :func:`xent_rs.kl_div`: log-probabilities and targets, chunk by chunk.

    Parameters
    ----------
    reduction : {"mean", "batchmean", "sum"}, default "mean"
        What :meth:`result` returns: ``mean`` divides by the number of elements seen,
        ``batchmean`` by the number of rows (samples) seen.
    log_target : bool, default False
        As in :func:`xent_rs.kl_div`.

    Notes
    -----
    ``update`` takes no ``sample_weight`` (``kl_div`` has no weights): passing one is a
    ``TypeError``.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.streaming import KLDivAccumulator
    >>> acc = KLDivAccumulator(reduction="batchmean")
    >>> acc.update(np.log([[0.9, 0.1]]), np.array([[0.5, 0.5]]))
    >>> acc.update(np.log([[0.5, 0.5]]), np.array([[0.5, 0.5]]))
    >>> round(acc.result(), 6)  # (KL(p || q) + 0) / 2 rows
    0.255413
    """

    def __init__(self, *, reduction: str = "mean", log_target: bool = False) -> None:
        spec = _spec.kl_div(reduction, log_target, accumulator=True)
        super().__init__(spec.reduction)
        self.spec = spec
        self.log_target = spec.log_target

    def _score(
        self, input: Any, target: Any, sample_weight: Any, return_losses: bool
    ) -> tuple[float, float, int, np.ndarray | None]:
        if sample_weight is not None:
            raise TypeError("kl_div takes no sample_weight (it has no weights)")
        return _backend.kl_div_partial(self.spec, input, target, return_losses)


class LogLossAccumulator(Accumulator):
    """Streaming :func:`xent_rs.log_loss` (scikit-learn's ``log_loss``), chunk by chunk.

    A chunk rarely holds every class, so the classes are fixed up front:

    - with ``labels=``, they are ``np.unique(labels)`` (the columns of ``y_proba`` in sorted
      label order, as scikit-learn has them), and any label type works;
    - without, the labels must be integers (or booleans) ``0 .. C-1`` where ``C`` is the
      number of columns of ``y_proba`` (2 for a 1-D ``y_proba``, the positive-class
      probability). A label outside that range is a ``ValueError``.

    Like every accumulator, ``update`` takes the predictions first:
    ``update(y_proba, y_true, sample_weight=None)`` (scikit-learn's ``log_loss`` takes
    ``y_true`` first).

    The result over the chunks equals ``xent_rs.log_loss(y, p, labels=classes,
    sample_weight=..., normalize=...)`` of the concatenation. Every chunk gets
    scikit-learn's checks and clipping (``eps = finfo(y_proba.dtype).eps``); rows that do not
    sum to 1 give one ``UserWarning`` per accumulator (``sums_to_one`` records it).

    Parameters
    ----------
    labels : array_like, optional
        Every class label.
    normalize : bool, default True
        :meth:`result` is the (weighted) mean per sample; else the (weighted) sum.
    from_logits : bool, default False
        The chunks hold logits (log-softmax / log-sigmoid, no clipping), as in
        :func:`xent_rs.log_loss`.

    Attributes
    ----------
    sums_to_one : bool
        Whether every row seen so far summed to 1 (within scikit-learn's tolerance).

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.streaming import LogLossAccumulator
    >>> acc = LogLossAccumulator(labels=["ham", "spam"])
    >>> acc.update([[0.1, 0.9], [0.9, 0.1]], ["spam", "ham"])  # predictions first
    >>> acc.update([[0.8, 0.2], [0.35, 0.65]], ["ham", "spam"])
    >>> round(acc.result(), 5)
    0.21616
    """

    def __init__(
        self, labels: Any = None, *, normalize: bool = True, from_logits: bool = False
    ) -> None:
        super().__init__("mean" if normalize else "sum")
        self.normalize = bool(normalize)
        self.from_logits = bool(from_logits)
        self.labels: np.ndarray | None = None
        self.sums_to_one = True
        if labels is not None:
            given = np.asarray(labels)
            _scoring.check_label_type(labels, given)
            classes = np.unique(given)
            if classes.shape[0] < 2:
                raise ValueError(
                    f"The labels array needs to contain at least two labels, got {classes}."
                )
            if classes.shape != given.shape or not np.array_equal(classes, given):
                warnings.warn(
                    f"Labels passed were {labels}. But this function assumes labels are "
                    f"ordered lexicographically. Pass the ordered labels={classes.tolist()} and "
                    "ensure that the columns of y_prob correspond to this ordering.",
                    UserWarning,
                    stacklevel=2,
                )
            self.labels = classes

    def _merge_extra(self, other: Accumulator) -> None:
        assert isinstance(other, LogLossAccumulator)
        self.sums_to_one = self.sums_to_one and other.sums_to_one

    def reset(self) -> None:
        """Forgets everything seen (the options stay)."""
        super().reset()
        self.sums_to_one = True

    def result(self) -> float:
        """The log loss over everything seen so far, as a float64.

        Raises ``ValueError`` when nothing was seen, or (``normalize=True``) when the sample
        weights sum to zero, as :func:`xent_rs.log_loss` does.
        """
        if self.count == 0:
            raise ValueError("log_loss of no samples: update() the accumulator with data first")
        if self.normalize and self.denominator == 0.0:
            raise ValueError("Sample weights must contain at least one non-zero number.")
        return super().result()

    def _codes(self, y: np.ndarray, columns: int, check_range: bool) -> np.ndarray:
        """Column indices of the chunk's labels."""
        if y.ndim != 1:
            raise ValueError(
                f"y_true must be 1-D class labels for streaming log_loss, got shape {y.shape}"
            )
        classes = self.labels
        if classes is not None:
            if classes.shape[0] != columns:
                raise ValueError(
                    "The number of classes in labels is different from that in y_prob. "
                    f"Classes found in labels: {classes}"
                )
            if y.dtype.kind in "iu" and np.array_equal(classes, np.arange(columns)):
                return self._codes_in_range(y, columns, check_range, labels=True)
            present = np.isin(y, classes)
            if not present.all():
                raise _errors.labels_outside(set(y[~present].tolist()), classes.tolist())
            return np.searchsorted(classes, y).astype(np.int64)
        if y.dtype.kind == "b":
            y = y.astype(np.int8)
        if y.dtype.kind not in "iu":
            raise ValueError(
                f"y_true holds {y.dtype} labels: streaming log_loss needs labels= (every class, "
                "so that chunks missing some classes score alike); only integer labels "
                "0..C-1 can go without"
            )
        return self._codes_in_range(y, columns, check_range, labels=False)

    @staticmethod
    def _codes_in_range(y: np.ndarray, columns: int, check: bool, labels: bool) -> np.ndarray:
        if check and y.size:
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= columns:
                _bad_label(y, columns, labels)
        return y

    def _score(
        self, input: Any, target: Any, sample_weight: Any, return_losses: bool
    ) -> tuple[float, float, int, np.ndarray | None]:
        y = _backend.to_ndarray(target, "y_true")
        if y.dtype.kind in "iu":
            y = _backend.native(y)  # integer labels go to the core as they are
        elif y.ndim == 1 and y.dtype.kind != "b":
            _scoring.check_label_type(target, y)
        raw = _backend.to_ndarray(input, "y_proba")
        if raw.dtype.kind not in "fiub":
            raise TypeError(
                f"y_proba must be a real numeric array, got dtype {raw.dtype} (update() takes "
                "the predictions first: update(y_proba, y_true, sample_weight=None))"
            )
        if raw.ndim == 0 or raw.ndim > 2:
            raise ValueError(f"y_proba must be 1-D or 2-D, got an array of shape {raw.shape}")
        n = raw.shape[0]
        work = _scoring.work_dtype(raw.dtype)
        sw = _scoring.sample_weights(sample_weight, work)
        _scoring.check_lengths(n, y, sw)
        columns = 2 if raw.ndim == 1 or raw.shape[1] == 1 else raw.shape[1]
        if n == 0:
            self._codes(y, columns, check_range=False)  # the same type checks as a full chunk
            empty = np.zeros(0, dtype=_F64 if raw.dtype.kind != "f" else raw.dtype)
            return 0.0, 0.0, 0, empty if return_losses else None
        p, eps = _scoring.probabilities(raw)
        if self.from_logits:
            total, weight_sum, n, losses = self._score_logits(p, y, sw, columns, return_losses)
            return total, weight_sum, n, _backend.half_losses(losses, raw.dtype)
        codes = self._codes(y, columns, check_range=False)
        total, weight_sum, normalized, in_range = _log_loss_pass(p, codes, sw, eps)
        if not in_range:
            _bad_label(codes, columns, self.labels is not None)
        if not normalized:
            if self.sums_to_one:
                warnings.warn(
                    "The y_prob values do not sum to one. Make sure to pass probabilities.",
                    UserWarning,
                    stacklevel=3,
                )
            self.sums_to_one = False
        losses = None
        if return_losses:
            full = np.stack([1 - p, p], axis=1) if p.ndim == 1 else p
            picked = np.clip(full[np.arange(n), codes], eps, 1 - eps)
            losses = -np.log(picked)
            if sw is not None:
                losses = losses * sw
        return total, weight_sum, n, _backend.half_losses(losses, raw.dtype)

    def _score_logits(
        self,
        x: np.ndarray,
        y: np.ndarray,
        sw: np.ndarray | None,
        columns: int,
        return_losses: bool,
    ) -> tuple[float, float, int, np.ndarray | None]:
        codes = self._codes(y, columns, check_range=True)
        n = x.shape[0]
        # One native pass each: the loss sum and, when asked, the per-sample losses.
        if x.ndim == 1:
            t = codes.astype(x.dtype)
            w = _backend.broadcast(_backend.NUMPY, sw, x.shape, x.dtype, "sample_weight")
            logits = _spec.binary_cross_entropy_with_logits("sum", accumulator=True)
            p = _core.binary_loss(logits, x, t, w, (None, 1), None, partial=return_losses)
            # log_loss divides by the summed sample weight, not by BCE's element count.
            denominator = float(n) if sw is None else float(np.sum(sw, dtype=np.float64))
        else:
            ce = _spec.cross_entropy(reduction="sum", accumulator=True)
            p = _core.class_loss(ce, x, codes, None, sw, None, None, partial=return_losses)
            denominator = p.denominator
        if math.isnan(p.loss_sum) and bool(np.isnan(x).any()):
            raise ValueError("Input contains NaN.")
        return p.loss_sum, denominator, n, p.losses


def _log_loss_pass(
    p: np.ndarray, codes: np.ndarray, sw: np.ndarray | None, eps: float
) -> tuple[float, float, bool, bool]:
    """One native pass: ``(loss_sum, weight_sum, rows_sum_to_one, labels_in_range)``, after
    scikit-learn's checks of the probabilities (NaN, infinities, values outside [0, 1])."""
    summary = _core.log_loss(p, codes, sw, eps, math.sqrt(eps))
    if summary.out_of_range:
        _check_probabilities(p)
    return summary.loss_sum, summary.weight_sum, summary.normalized, summary.labels_in_range


def _check_probabilities(p: np.ndarray) -> None:
    """scikit-learn's errors for probabilities, in its order (only called when one fails)."""
    if np.isnan(p).any():
        raise ValueError("Input contains NaN.")
    if np.isinf(p).any():
        raise ValueError("Input contains infinity or a value too large for dtype('float64').")
    if p.max() > 1:
        raise ValueError(f"y_prob contains values greater than 1: {p.max()}")
    if p.min() < 0:
        raise ValueError(f"y_prob contains values lower than 0: {p.min()}")


def _bad_label(codes: np.ndarray, columns: int, labels: bool) -> None:
    bad = np.flatnonzero((codes < 0) | (codes >= columns))
    value = codes[bad[0]] if bad.size else "?"
    where = f" at position {int(bad[0])}" if bad.size else ""
    hint = "" if labels else "; pass labels= with every class"
    raise _errors.blame(
        ValueError(
            f"y_true contains label {value}{where}, outside the {columns} classes "
            f"0..{columns - 1} of y_proba's columns{hint}"
        ),
        "y_true",
        (int(bad[0]),) if bad.size else None,
    )


_BY_NAME: dict[str, type[Accumulator]] = {
    "cross_entropy": CrossEntropyAccumulator,
    "nll_loss": NLLLossAccumulator,
    "binary_cross_entropy": BinaryCrossEntropyAccumulator,
    "binary_cross_entropy_with_logits": BinaryCrossEntropyWithLogitsAccumulator,
    "focal_loss": FocalLossAccumulator,
    "binary_focal_loss_with_logits": BinaryFocalLossWithLogitsAccumulator,
    "kl_div": KLDivAccumulator,
    "log_loss": LogLossAccumulator,
}


#: The losses with an accumulator, by the name of their one-shot function.
LOSSES = tuple(_BY_NAME)


def accumulator(loss: str, **options: Any) -> Accumulator:
    """A new accumulator for the loss named like its one-shot function.

    Parameters
    ----------
    loss : {"cross_entropy", "nll_loss", "focal_loss", "binary_cross_entropy", \
"binary_cross_entropy_with_logits", "binary_focal_loss_with_logits", "kl_div", "log_loss"}
        The loss.
    **options
        The accumulator's options (``weight=``, ``ignore_index=``, ``labels=``, ...).

    Examples
    --------
    >>> from xent_rs.streaming import accumulator
    >>> accumulator("nll_loss", reduction="sum")
    NLLLossAccumulator(axis=-1, weight=None, ignore_index=-100, reduction='sum'; count=0, \
loss_sum=0.0, denominator=0.0)
    """
    return accumulator_class(loss)(**options)


def accumulator_class(loss: str) -> type[Accumulator]:
    """The accumulator class of the loss named like its one-shot function (see
    :func:`accumulator`)."""
    try:
        return _BY_NAME[loss]
    except KeyError:
        raise ValueError(
            f"unknown loss {loss!r}; expected one of {', '.join(sorted(_BY_NAME))}"
        ) from None
