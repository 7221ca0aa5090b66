"""The contract of every public loss: its options, their checks and their messages.

Each call of a loss is described by one frozen options object built here (:class:`ClassLoss`
for the multiclass losses, :class:`BinaryLoss` for the element-wise ones, :class:`KlDiv`),
checked once when it is built. The NumPy functions, the CuPy backend, the streaming
accumulators, ``xent_rs.dask`` and the command line all build theirs through the functions of
this module, so that every front end refuses the same values with the same exception and the
same words. The builders are cached on their (hashable) arguments: the common call, with the
same options as the previous one, costs one dictionary lookup.

The native core checks every option again (it is the last line before memory is touched), in
the same words.
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

#: torch's reductions, in the order the messages name them.
REDUCTIONS = ("none", "mean", "sum")
#: What an accumulator can return (per-sample losses come from ``update``).
ACCUMULATOR_REDUCTIONS = ("mean", "sum")
#: ``kl_div``'s reductions: torch's three and ``batchmean``.
KL_REDUCTIONS = ("none", "mean", "sum", "batchmean")

Reduction = Literal["none", "mean", "sum"]

#: The multiclass losses (classes along an axis, class-index or probability targets).
ClassLossName = Literal["cross_entropy", "nll_loss", "focal_loss"]
#: The element-wise losses (one target per input element).
BinaryLossName = Literal[
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "binary_focal_loss_with_logits"
]


@dataclass(frozen=True, slots=True)
class ClassLoss:
    """The checked options of one multiclass loss call.

    ``reduction`` is one of torch's three for a one-shot call, ``mean`` or ``sum`` for an
    accumulator (``accumulator=True`` in :func:`class_loss`). Options a loss does not have
    keep their neutral value (``label_smoothing=0`` for ``nll_loss``...).
    """

    loss: ClassLossName
    axis: int = -1
    ignore_index: int = -100
    reduction: str = "mean"
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float | None = None
    gamma: float = 0.0
    return_grad: bool = False


@dataclass(frozen=True, slots=True)
class BinaryLoss:
    """The checked options of one element-wise loss call."""

    loss: BinaryLossName
    reduction: str = "mean"
    gamma: float = 0.0
    alpha: float | None = None
    return_grad: bool = False


@dataclass(frozen=True, slots=True)
class KlDiv:
    """The checked options of one ``kl_div`` call."""

    reduction: str = "mean"
    log_target: bool = False
    return_grad: bool = False


def class_loss(
    loss: ClassLossName,
    *,
    axis: Any = -1,
    ignore_index: Any = -100,
    reduction: Any = "mean",
    label_smoothing: Any = 0.0,
    z_loss: Any = 0.0,
    softcap: Any = None,
    gamma: Any = 0.0,
    return_grad: Any = False,
    accumulator: bool = False,
) -> ClassLoss:
    """The options of a ``cross_entropy``, ``nll_loss`` or ``focal_loss`` call, checked."""
    key = (loss, axis, ignore_index, reduction, label_smoothing, z_loss, softcap, gamma)
    try:
        return _class_loss_cached(*key, bool(return_grad), accumulator)
    except TypeError as e:
        if "unhashable" not in str(e):
            raise
    return _class_loss(*key, bool(return_grad), accumulator)


def _class_loss(
    loss: ClassLossName,
    axis: Any,
    ignore: Any,
    reduction_: Any,
    label_smoothing_: Any,
    z_loss_: Any,
    softcap_: Any,
    gamma_: Any,
    return_grad: bool,
    accumulator: bool,
) -> ClassLoss:
    return ClassLoss(
        loss=loss,
        axis=operator.index(axis),  # a float axis is a TypeError, as NumPy's
        ignore_index=ignore_index(ignore),
        reduction=accumulator_reduction(reduction_) if accumulator else reduction(reduction_),
        label_smoothing=label_smoothing(label_smoothing_),
        z_loss=z_loss(z_loss_),
        softcap=softcap(softcap_),
        gamma=gamma(gamma_),
        return_grad=return_grad,
    )


_class_loss_cached = lru_cache(maxsize=64, typed=True)(_class_loss)


def binary_loss(
    loss: BinaryLossName,
    *,
    reduction: Any = "mean",
    gamma: Any = 0.0,
    alpha: Any = None,
    return_grad: Any = False,
    accumulator: bool = False,
) -> BinaryLoss:
    """The options of an element-wise loss call, checked."""
    key = (loss, reduction, gamma, alpha)
    try:
        return _binary_loss_cached(*key, bool(return_grad), accumulator)
    except TypeError as e:
        if "unhashable" not in str(e):
            raise
    return _binary_loss(*key, bool(return_grad), accumulator)


def _binary_loss(
    loss: BinaryLossName,
    reduction_: Any,
    gamma_: Any,
    alpha_: Any,
    return_grad: bool,
    accumulator: bool,
) -> BinaryLoss:
    return BinaryLoss(
        loss=loss,
        reduction=accumulator_reduction(reduction_) if accumulator else reduction(reduction_),
        gamma=gamma(gamma_),
        alpha=alpha(alpha_),
        return_grad=return_grad,
    )


_binary_loss_cached = lru_cache(maxsize=64, typed=True)(_binary_loss)


def kl_div(*, reduction: Any = "mean", log_target: Any = False, return_grad: Any = False) -> KlDiv:
    """The options of a ``kl_div`` call, checked."""
    if not isinstance(reduction, str) or reduction not in KL_REDUCTIONS:
        raise ValueError(
            f'reduction must be "none", "mean", "sum" or "batchmean" for kl_div, got "{reduction}"'
        )
    return KlDiv(reduction=reduction, log_target=bool(log_target), return_grad=bool(return_grad))


# ---------------------------------------------------------------------------------------------
# one option each: the rules and the messages
# ---------------------------------------------------------------------------------------------


def reduction(value: Any) -> Reduction:
    """``reduction`` of a one-shot call: one of torch's three (the core's message)."""
    if not isinstance(value, str):
        raise TypeError(f"reduction must be a string, got {type(value).__name__} {value!r}")
    if value not in REDUCTIONS:
        raise ValueError(f'reduction must be "none", "mean" or "sum", got "{value}"')
    return "none" if value == "none" else "mean" if value == "mean" else "sum"


def accumulator_reduction(value: Any) -> Literal["mean", "sum"]:
    """``reduction`` of an accumulator: ``mean`` or ``sum``."""
    if not isinstance(value, str) or value not in ACCUMULATOR_REDUCTIONS:
        raise ValueError(
            f'reduction must be "mean" or "sum" for an accumulator, got "{value}" '
            "(per-sample losses come from update(..., return_losses=True))"
        )
    return "mean" if value == "mean" else "sum"


def _real(value: Any, name: str) -> float:
    """A real number (NumPy's too; like the core, a bool reads as 0 or 1)."""
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def label_smoothing(value: Any) -> float:
    """``label_smoothing``: a real number in ``[0, 1]`` (the core's message)."""
    eps = _real(value, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {eps}")
    return eps


def z_loss(value: Any) -> float:
    """``z_loss``: a finite real number ``>= 0``."""
    s = _real(value, "z_loss")
    if not (s >= 0.0 and math.isfinite(s)):
        raise ValueError(f"z_loss must be a finite number >= 0, got {s}")
    return s


def softcap(value: Any) -> float | None:
    """``softcap``: ``None`` (off) or a finite real number ``> 0``."""
    if value is None:
        return None
    c = _real(value, "softcap")
    if not (c > 0.0 and math.isfinite(c)):
        raise ValueError(f"softcap must be None or a finite number > 0, got {c}")
    return c


def gamma(value: Any) -> float:
    """A focal loss's ``gamma``: a finite real number ``>= 0``."""
    g = _real(value, "gamma")
    if not (g >= 0.0 and math.isfinite(g)):
        raise ValueError(f"gamma must be a finite number >= 0, got {g}")
    return g


def alpha(value: Any) -> float | None:
    """The binary focal loss's ``alpha``: ``None`` (no class balance) or a number in [0, 1]."""
    if value is None:
        return None
    a = _real(value, "alpha")
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be None or between 0.0 and 1.0, got {a}")
    return a


def ignore_index(value: Any) -> int:
    """``ignore_index`` as a 64-bit integer: an integer (NumPy's too), not a float or a bool
    (a ``TypeError``, as torch's), and within 64 bits (else a ``ValueError``); the core's
    messages."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(_ignore_index_type(value))
    try:
        index = operator.index(value)
    except TypeError:
        raise TypeError(_ignore_index_type(value)) from None
    if not -(2**63) <= index < 2**63:
        raise ValueError(
            f"ignore_index must lie in [-2**63, 2**63) (class indices are 64-bit), got {index}"
        )
    return index


def _ignore_index_type(value: Any) -> str:
    return f"ignore_index must be an integer, got {type(value).__name__} {value!r}"
