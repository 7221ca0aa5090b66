"""Runs a batch of calls that must fail, in a process of its own, for ``test_fuzz.py``.

A crash (segfault, abort), a hang or an unexpected exception in the native code must not take
the test session down with it: the parent pickles a list of :class:`Call` to this script's
stdin, and the script runs them one by one, printing ``start <i>`` before call ``i`` and one
JSON line with its outcome after it, so that the parent knows which call killed the process.

Arrays travel as :class:`Arr` (a C-ordered array and the name of a layout, applied here:
pickling would not keep strides, offsets or the read-only flag). This module is imported by
``test_fuzz.py`` for :class:`Arr`, :class:`Call` and :func:`relayout`.
"""

from __future__ import annotations

import faulthandler
import json
import pickle
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from conftest import as_fortran, as_negative_stride, as_strided

Array = npt.NDArray[Any]


def as_big_endian(a: Array) -> Array:
    """The same values, byte-swapped (non-native byte order), C-contiguous."""
    if a.dtype.itemsize == 1 or a.dtype.kind not in "fiuc":
        return a.copy()
    return a.astype(a.dtype.newbyteorder(">" if sys.byteorder == "little" else "<"))


def as_misaligned(a: Array) -> Array:
    """A copy whose data starts one byte past an element boundary (not ``aligned``)."""
    if a.dtype.itemsize == 1 or a.dtype.kind == "O":
        return a.copy()
    raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
    b = raw.view(a.dtype).reshape(a.shape)
    b[...] = a
    return b


def as_sliced(a: Array) -> Array:
    """A view into a larger array, one element in from every edge (an offset, and strides
    that skip the margins)."""
    if a.ndim == 0:
        return a.copy()
    big = np.zeros(tuple(s + 2 for s in a.shape), dtype=a.dtype)
    inner = tuple(slice(1, s + 1) for s in a.shape)
    big[inner] = a
    return big[inner]


def as_read_only(a: Array) -> Array:
    b = a.copy()
    b.flags.writeable = False
    return b


def as_list(a: Array) -> Any:
    """Nested lists (NumPy gives them back as float64 / int64 / bool)."""
    return a.tolist()


#: name -> function giving the same values in another memory layout (or an array-like)
LAYOUTS = {
    "C": lambda a: a,
    "fortran": as_fortran,
    "strided": as_strided,
    "negstride": as_negative_stride,
    "sliced": as_sliced,
    "readonly": as_read_only,
    "bigendian": as_big_endian,
    "misaligned": as_misaligned,
    "list": as_list,
}
#: layouts that keep the array's values and dtype as NumPy reads them back
LIST_DTYPES = (np.dtype(np.float64), np.dtype(np.int64), np.dtype(np.bool_))


def relayout(a: Array, layout: str) -> Any:
    """``a`` (a C-ordered array) in ``layout``; as it is where the layout would change the
    values (a list of another dtype than float64, int64 or bool, or of an empty array, whose
    shape a list cannot hold)."""
    if layout == "list" and (a.dtype not in LIST_DTYPES or 0 in a.shape):
        return a
    return LAYOUTS[layout](a)


@dataclass
class Arr:
    """An argument array: the values (C order) and the layout to hand them over in."""

    values: Array
    layout: str = "C"

    def build(self) -> Any:
        return relayout(np.array(self.values, order="C"), self.layout)  # 0-d stays 0-d

    def describe(self) -> str:
        v = self.values
        return f"<{v.dtype} {v.shape} {self.layout}>"


@dataclass
class Overlap:
    """A buffer that shares all but one element with argument ``of`` (an ``out=`` /
    ``grad_out=`` that partially overlaps the input)."""

    of: int = 0

    def describe(self) -> str:
        return f"<overlapping args[{self.of}]>"


@dataclass
class SameAs:
    """The very object passed as argument ``of`` (an int: positional; a str: keyword)."""

    of: int | str

    def describe(self) -> str:
        return f"<args[{self.of!r}] itself>"


@dataclass
class Call:
    """One call that must raise.

    ``fn``: a name in ``xent_rs`` (``"cross_entropy"``), or ``"Class.update"`` /
    ``"Class.merge"`` for an accumulator of ``xent_rs`` built with ``ctor`` and first updated
    with the valid chunk ``prime`` (for ``merge``, ``args[0]`` is the keyword arguments of
    the other accumulator, or the name of another accumulator class).
    ``expect``: the acceptable exception class names. ``why``: the mutation that makes it
    invalid.
    """

    fn: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    expect: tuple[str, ...]
    why: str
    ctor: dict[str, Any] | None = None
    prime: tuple[Any, ...] = ()

    def __repr__(self) -> str:
        return f"Call<{self.describe()}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's reports
        printer.text(repr(self))

    def describe(self) -> str:
        def d(v: Any) -> str:
            if isinstance(v, (Arr, Overlap, SameAs)):
                return v.describe()
            if isinstance(v, dict):
                return "{" + ", ".join(f"{k}={d(x)}" for k, x in v.items()) + "}"
            return repr(v)

        args = [d(a) for a in self.args] + [f"{k}={d(v)}" for k, v in self.kwargs.items()]
        ctor = "" if self.ctor is None else f" on {d(self.ctor)}"
        return f"{self.fn}({', '.join(args)}){ctor}  [{self.why}; expects {self.expect}]"


def _build(value: Any) -> Any:
    if isinstance(value, Arr):
        return value.build()
    if isinstance(value, dict):
        return {k: _build(v) for k, v in value.items()}
    return value


def _resolve(args: list[Any], kwargs: dict[str, Any]) -> None:
    """Replaces :class:`Overlap` and :class:`SameAs` markers by the arrays they name."""
    for key, v in list(enumerate(args)) + list(kwargs.items()):
        target = args if isinstance(key, int) else kwargs
        if isinstance(v, SameAs):
            target[key] = args[v.of] if isinstance(v.of, int) else kwargs[v.of]  # type: ignore[index]
        elif isinstance(v, Overlap):
            src = np.ascontiguousarray(args[v.of])
            buf = np.empty(src.size + 1, dtype=src.dtype)
            buf[1:] = src.reshape(-1)
            args[v.of] = buf[1:].reshape(src.shape)
            target[key] = buf[:-1].reshape(src.shape)  # type: ignore[index]


def _state(acc: Any) -> tuple[Any, ...]:
    return (repr(acc.loss_sum), repr(acc.denominator), acc.count)


def run_one(xent_rs: Any, call: Call) -> dict[str, Any]:
    """Runs ``call``; returns its outcome (what was raised, whether outputs were touched)."""
    args = [_build(a) for a in call.args]
    kwargs = {k: _build(v) for k, v in call.kwargs.items()}
    _resolve(args, kwargs)
    outputs = {
        k: np.array(v, copy=True)
        for k, v in kwargs.items()
        if k in ("out", "grad_out") and isinstance(v, np.ndarray)
    }
    outcome: dict[str, Any] = {"raised": None, "msg": "", "touched": [], "state_changed": False}
    acc = before = None
    if "." in call.fn:  # an accumulator method: build it, feed it a valid chunk
        cls_name, method = call.fn.split(".")
        try:
            acc = getattr(xent_rs, cls_name)(**_build(call.ctor or {}))
            if call.prime:
                acc.update(*[_build(a) for a in call.prime])
        except Exception as exc:  # the valid part of the call is not: a bug of the test
            return {**outcome, "raised": "SetupError", "msg": f"{type(exc).__name__}: {exc}"}
        before = _state(acc)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if acc is not None:
                if method == "merge":
                    other = args[0]
                    if isinstance(other, str):
                        other = getattr(xent_rs, other)()
                    else:
                        other = getattr(xent_rs, cls_name)(**other)
                    acc.merge(other)
                else:
                    getattr(acc, method)(*args, **kwargs)
            else:
                getattr(xent_rs, call.fn)(*args, **kwargs)
    except Exception as exc:
        outcome["raised"] = type(exc).__name__
        outcome["msg"] = str(exc)
    if acc is not None:
        outcome["state_changed"] = _state(acc) != before
    for k, before_value in outputs.items():
        if not np.array_equal(kwargs[k], before_value, equal_nan=True):
            outcome["touched"].append(k)
    return outcome


def main() -> None:
    faulthandler.enable()
    import xent_rs

    calls: list[Call] = pickle.loads(sys.stdin.buffer.read())
    for i, call in enumerate(calls):
        print(f"start {i}", flush=True)
        outcome = run_one(xent_rs, call)
        print(json.dumps({"i": i, **outcome}), flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    # Run as a script, this file is ``__main__``; the pickled calls name ``_fuzz_worker``'s
    # classes, so run that module's copy (its classes are the ones the calls are made of).
    import _fuzz_worker

    _fuzz_worker.main()
