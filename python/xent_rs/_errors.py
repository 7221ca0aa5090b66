"""Errors that say which argument is at fault, and where.

An exception raised for a bad argument keeps its ordinary type (``ValueError``, ``TypeError``,
``IndexError``) and message, and carries two attributes for front ends that report it in their
own terms (the command line names the file that holds the argument): ``argument``, the
parameter's name as the one-shot functions spell it (``"input"``, ``"target"``,
``"sample_weight"``, ``"weight"``; ``log_loss``'s ``"y_true"`` and ``"y_proba"``), and
``position``, the index of the offending element in that argument when one is known. The
native core sets them on its class-index errors; the Python layer with :func:`blame`.
"""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


def blame(exc: E, argument: str, position: tuple[int, ...] | None = None) -> E:
    """``exc`` with ``argument`` and ``position`` attached (returned, for ``raise``)."""
    exc.argument = argument  # type: ignore[attr-defined]
    exc.position = position  # type: ignore[attr-defined]
    return exc


def argument_of(exc: BaseException) -> str | None:
    """The argument an exception blames, if it says."""
    argument = getattr(exc, "argument", None)
    return argument if isinstance(argument, str) else None


def position_of(exc: BaseException) -> tuple[int, ...] | None:
    """The position in that argument an exception names, if it says."""
    position = getattr(exc, "position", None)
    return tuple(position) if isinstance(position, tuple) else None


def labels_outside(values: set[object], labels: list[object]) -> ValueError:
    """scikit-learn's error for labels of ``y_true`` that ``labels=`` does not name."""
    return blame(
        ValueError(f"y_true contains values {values} not belonging to the passed labels {labels}."),
        "y_true",
    )
