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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

#: torch's reductions, in the order the messages name them.
REDUCTIONS = ("none", "mean", "sum")
#: What an accumulator can return (per-sample losses come from ``update``).
ACCUMULATOR_REDUCTIONS = ("mean", "sum")
#: ``kl_div``'s reductions: torch's three and ``batchmean``.
KL_REDUCTIONS = ("none", "mean", "sum", "batchmean")

Reduction = Literal["none", "mean", "sum"]
_T = TypeVar("_T")

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


# ---------------------------------------------------------------------------------------------
# the builders: one per public loss
# ---------------------------------------------------------------------------------------------

#: Options objects already built, by the builder's arguments (bounded: cleared when full).
_BUILT: dict[tuple[Any, ...], Any] = {}
_MAX_BUILT = 256


def _built(build: Callable[..., _T], *key: Any) -> _T:
    """``build(*key)``, from the cache when these arguments were seen before: the common call
    repeats its options, and then costs one dictionary lookup. Unhashable arguments (which
    the checks refuse) are built, not cached."""
    full = (build, *key)
    try:
        found: _T = _BUILT[full]
        return found
    except KeyError:
        pass
    except TypeError:
        return build(*key)
    spec: _T = build(*key)
    if len(_BUILT) >= _MAX_BUILT:
        _BUILT.clear()
    _BUILT[full] = spec
    return spec


def _reduction_for(value: Any, accumulator: bool) -> str:
    return accumulator_reduction(value) if accumulator else reduction(value)


def _class(
    loss: ClassLossName,
    axis: Any,
    ignore: Any,
    ignore_type: type,
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
        reduction=_reduction_for(reduction_, accumulator),
        label_smoothing=label_smoothing(label_smoothing_),
        z_loss=z_loss(z_loss_),
        softcap=softcap(softcap_),
        gamma=gamma(gamma_),
        return_grad=return_grad,
    )


def cross_entropy(
    axis: Any = -1,
    ignore_index: Any = -100,
    reduction: Any = "mean",
    label_smoothing: Any = 0.0,
    z_loss: Any = 0.0,
    softcap: Any = None,
    return_grad: Any = False,
    accumulator: bool = False,
) -> ClassLoss:
    """The options of a ``cross_entropy`` call (or accumulator), checked."""
    return _built(  # type(ignore_index) in the key: True == 1, but only 1 is a class index
        _class, "cross_entropy", axis, ignore_index, type(ignore_index), reduction,
        label_smoothing, z_loss, softcap, 0.0, bool(return_grad), accumulator,
    )  # fmt: skip


def nll_loss(
    axis: Any = -1,
    ignore_index: Any = -100,
    reduction: Any = "mean",
    return_grad: Any = False,
    accumulator: bool = False,
) -> ClassLoss:
    """The options of an ``nll_loss`` call (or accumulator), checked."""
    return _built(
        _class, "nll_loss", axis, ignore_index, type(ignore_index), reduction, 0.0, 0.0, None,
        0.0, bool(return_grad), accumulator,
    )  # fmt: skip


def focal_loss(
    axis: Any = -1,
    gamma: Any = 2.0,
    ignore_index: Any = -100,
    reduction: Any = "mean",
    return_grad: Any = False,
    accumulator: bool = False,
) -> ClassLoss:
    """The options of a ``focal_loss`` call (or accumulator), checked."""
    return _built(
        _class, "focal_loss", axis, ignore_index, type(ignore_index), reduction, 0.0, 0.0,
        None, gamma, bool(return_grad), accumulator,
    )  # fmt: skip


def _binary(
    loss: BinaryLossName,
    reduction_: Any,
    gamma_: Any,
    alpha_: Any,
    return_grad: bool,
    accumulator: bool,
) -> BinaryLoss:
    return BinaryLoss(
        loss=loss,
        reduction=_reduction_for(reduction_, accumulator),
        gamma=gamma(gamma_),
        alpha=alpha(alpha_),
        return_grad=return_grad,
    )


def binary_cross_entropy(
    reduction: Any = "mean", return_grad: Any = False, accumulator: bool = False
) -> BinaryLoss:
    """The options of a ``binary_cross_entropy`` call (or accumulator), checked."""
    loss = "binary_cross_entropy"
    return _built(_binary, loss, reduction, 0.0, None, bool(return_grad), accumulator)


def binary_cross_entropy_with_logits(
    reduction: Any = "mean", return_grad: Any = False, accumulator: bool = False
) -> BinaryLoss:
    """The options of a ``binary_cross_entropy_with_logits`` call (or accumulator), checked."""
    loss = "binary_cross_entropy_with_logits"
    return _built(_binary, loss, reduction, 0.0, None, bool(return_grad), accumulator)


def binary_focal_loss_with_logits(
    gamma: Any = 2.0,
    alpha: Any = 0.25,
    reduction: Any = "mean",
    return_grad: Any = False,
    accumulator: bool = False,
) -> BinaryLoss:
    """The options of a ``binary_focal_loss_with_logits`` call (or accumulator), checked."""
    loss = "binary_focal_loss_with_logits"
    return _built(_binary, loss, reduction, gamma, alpha, bool(return_grad), accumulator)


def _kl_div(reduction_: Any, log_target: bool, return_grad: bool, accumulator: bool) -> KlDiv:
    allowed = ("mean", "sum", "batchmean") if accumulator else KL_REDUCTIONS
    if not isinstance(reduction_, str) or reduction_ not in allowed:
        names = ", ".join(f'"{r}"' for r in allowed[:-1])
        where = " for an accumulator" if accumulator else ""
        raise ValueError(f'reduction must be {names} or "{allowed[-1]}"{where}, got "{reduction_}"')
    return KlDiv(reduction=reduction_, log_target=log_target, return_grad=return_grad)


def kl_div(
    reduction: Any = "mean",
    log_target: Any = False,
    return_grad: Any = False,
    accumulator: bool = False,
) -> KlDiv:
    """The options of a ``kl_div`` call (or accumulator), checked."""
    return _built(_kl_div, reduction, bool(log_target), bool(return_grad), accumulator)


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


def _shown(v: float) -> str:
    """A value as the core's messages show it (Rust's ``{:?}``: ``NaN``, ``inf``, ``1.5``)."""
    return "NaN" if math.isnan(v) else repr(v)


def label_smoothing(value: Any) -> float:
    """``label_smoothing``: a real number in ``[0, 1]`` (the core's message)."""
    eps = _real(value, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {eps}")
    return eps


def _finite_at_least(value: Any, name: str, rule: str, ok: Callable[[float], bool]) -> float:
    v = _real(value, name)
    if not (ok(v) and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number {rule}, got {_shown(v)}")
    return v


def z_loss(value: Any) -> float:
    """``z_loss``: a finite real number ``>= 0`` (the core's message)."""
    return _finite_at_least(value, "z_loss", ">= 0.0", lambda v: v >= 0.0)


def softcap(value: Any) -> float | None:
    """``softcap``: ``None`` (off) or a finite real number ``> 0`` (the core's message)."""
    if value is None:
        return None
    return _finite_at_least(value, "softcap", "> 0.0 (or None for no cap)", lambda v: v > 0.0)


def gamma(value: Any) -> float:
    """A focal loss's ``gamma``: a finite real number ``>= 0`` (the core's message)."""
    return _finite_at_least(value, "gamma", ">= 0.0", lambda v: v >= 0.0)


def alpha(value: Any) -> float | None:
    """The binary focal loss's ``alpha``: ``None`` (no class balance) or a number in
    ``[0, 1]`` (the core's message)."""
    if value is None:
        return None
    a = _real(value, "alpha")
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] or be None, got {_shown(a)}")
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
