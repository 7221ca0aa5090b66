"""Conversion of user arguments into what the native core accepts.

The core takes C-contiguous float32/float64 NumPy arrays. Everything else (lists, float16,
integer and boolean arrays, Fortran-ordered, strided or negative-stride views, objects with
``__array__`` or ``__dlpack__``) is converted here, once, following NumPy's conventions.
C-contiguous float32/float64 arrays pass through untouched: no copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
FLOAT16 = np.dtype(np.float16)
NATIVE = (FLOAT32, FLOAT64)


def is_cupy(obj: object) -> bool:
    """Whether ``obj`` is a CuPy array (without importing CuPy)."""
    return type(obj).__module__.split(".", 1)[0] == "cupy"


def uses_cupy(*args: object) -> bool:
    """Whether the call runs on CuPy: every array argument is a CuPy array.

    Raises ``TypeError`` when CuPy and NumPy arrays are mixed in one call.
    """
    cupy = [a for a in args if is_cupy(a)]
    if not cupy:
        return False
    numpy_args = [a for a in args if isinstance(a, np.ndarray)]
    if numpy_args:
        raise TypeError(
            "cannot mix CuPy and NumPy arrays in one call; move them to the same device "
            "(cupy.asarray / cupy.asnumpy)"
        )
    return True


def to_ndarray(obj: Any) -> np.ndarray:
    """Any array-like as a NumPy array (no copy when it already is one)."""
    if isinstance(obj, np.ndarray):
        return obj
    if not hasattr(obj, "__array__") and hasattr(obj, "__dlpack__"):
        return np.from_dlpack(obj)
    return np.asarray(obj)


def float_input(obj: Any, name: str = "input") -> tuple[np.ndarray, np.dtype[Any]]:
    """The input as a C-contiguous float32/float64 array, and the dtype results must have.

    float16 computes in float32; integer and boolean inputs become float64 (NumPy's rule);
    complex, object and string inputs are a ``TypeError``.
    """
    a = to_ndarray(obj)
    dtype = a.dtype
    if dtype in NATIVE:
        if a.flags.c_contiguous:
            return a, dtype
        return np.asarray(a, order="C"), dtype
    if dtype == FLOAT16:
        return np.asarray(a, dtype=np.float32, order="C"), dtype
    if dtype.kind in "biu":
        return np.asarray(a, dtype=np.float64, order="C"), FLOAT64
    raise TypeError(
        f"{name} must be a real floating (or integer) array, got dtype {dtype}; "
        "complex, object and string arrays are not supported"
    )


def like(obj: Any, dtype: np.dtype[Any], name: str) -> np.ndarray:
    """A secondary float argument (weights, soft targets) as C-contiguous ``dtype``."""
    a = to_ndarray(obj)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return np.asarray(a, dtype=dtype, order="C")


def class_target(obj: Any, dtype: np.dtype[Any]) -> np.ndarray:
    """A multiclass target: integers stay as they are, floats become ``dtype``."""
    a = to_ndarray(obj)
    kind = a.dtype.kind
    if kind in "iu":
        return a if a.flags.c_contiguous else np.asarray(a, order="C")
    if kind == "f":
        return np.asarray(a, dtype=dtype, order="C")
    if kind == "b":
        raise TypeError("target must hold integer class indices or class probabilities, got bool")
    raise TypeError(
        f"target must hold integer class indices or floating class probabilities, "
        f"got dtype {a.dtype}"
    )


def upstream(grad_output: Any, reduction: str, dtype: np.dtype[Any]) -> float | np.ndarray | None:
    """``grad_output`` as the core takes it: a float for reduced losses, an array for ``none``."""
    if grad_output is None:
        return None
    if reduction != "none" and np.ndim(grad_output) == 0:
        return float(grad_output)
    return like(grad_output, dtype, "grad_output")


def broadcast(
    operand: Any, shape: tuple[int, ...], dtype: np.dtype[Any], name: str
) -> tuple[np.ndarray | None, int]:
    """A weight broadcast against ``shape``, as distinct values and a repeat count.

    Flat element ``i`` of the input uses ``values[(i // repeat) % len(values)]``. That covers
    a scalar, trailing shapes like ``(C,)``, and shapes like ``(N, 1)`` or ``(C, 1, 1)``;
    any other broadcast is materialised. Shapes that do not broadcast are a ``ValueError``.
    """
    if operand is None:
        return None, 1
    w = like(operand, dtype, name)
    if w.ndim > len(shape):
        raise ValueError(
            f"{name} of shape {w.shape} does not broadcast against the input's shape {shape}"
        )
    padded = (1,) * (len(shape) - w.ndim) + w.shape
    for have, want in zip(padded, shape, strict=True):
        if have not in (1, want):
            raise ValueError(
                f"{name} of shape {w.shape} does not broadcast against the input's shape {shape}"
            )
    varying = [i for i, (have, want) in enumerate(zip(padded, shape, strict=True)) if have != 1]
    if 0 in shape:
        return None, 1
    if not varying:
        return w.reshape(1), 1
    first, last = varying[0], varying[-1]
    if all(padded[i] == shape[i] for i in range(first, last + 1)):
        repeat = int(np.prod(shape[last + 1 :], dtype=np.int64))
        return np.ascontiguousarray(w.reshape(-1)), max(repeat, 1)
    full: npt.NDArray[Any] = np.ascontiguousarray(np.broadcast_to(w, shape)).reshape(-1)
    return full, 1
