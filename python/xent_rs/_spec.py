"""The rules of the losses' options, and their messages, in one place.

The native core checks every option of a call itself (it must: it is the last line before
memory is touched), in the same words. The Python front ends that check an option before the
core sees it (the CuPy backend, the accumulators' constructors, ``xent_rs.dask`` before it
builds its graph) take the check and its message from here, so that every path refuses the same
values with the same exception and the same text.
"""

from __future__ import annotations

import numbers
import operator
from typing import Any, Literal

import numpy as np

#: torch's reductions, in the order the messages name them.
REDUCTIONS = ("none", "mean", "sum")
#: What an accumulator can return (per-sample losses come from ``update``).
ACCUMULATOR_REDUCTIONS = ("mean", "sum")

Reduction = Literal["none", "mean", "sum"]


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


def label_smoothing(value: Any) -> float:
    """``label_smoothing``: a real number in ``[0, 1]`` (the core's message; like the core, a
    bool is read as 0 or 1)."""
    if not isinstance(value, numbers.Real):
        raise TypeError(
            f"label_smoothing must be a real number, got {type(value).__name__} {value!r}"
        )
    eps = float(value)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {eps}")
    return eps


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
