"""Conversion of user arguments into what the native core accepts.

The core takes C-contiguous float32/float64/bfloat16 NumPy arrays. Everything else (lists, float16,
integer and boolean arrays, Fortran-ordered, strided or negative-stride views, objects with
``__array__`` or ``__dlpack__``) is converted here, once, following NumPy's conventions.
C-contiguous float32/float64 arrays pass through untouched: no copy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from xent_rs import _bfloat16

FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
FLOAT16 = np.dtype(np.float16)
INT64 = np.dtype(np.int64)
NATIVE = (FLOAT32, FLOAT64)


def is_cupy(obj: object) -> bool:
    """Whether ``obj`` is a CuPy array (without importing CuPy)."""
    return type(obj).__module__.startswith("cupy")


def uses_cupy(*args: object) -> bool:
    """Whether the call runs on CuPy: every array argument is a CuPy array.

    Raises ``TypeError`` when CuPy and NumPy arrays are mixed in one call. NumPy arrays and
    ``None`` are recognised first, so the common call costs a few type checks.
    """
    ndarray = np.ndarray
    cupy = False
    numpy_seen = False
    for a in args:
        if a is None:
            continue
        if type(a) is ndarray or isinstance(a, ndarray):
            numpy_seen = True
        elif is_cupy(a):
            cupy = True
    if not cupy:
        return False
    if numpy_seen:
        raise TypeError(
            "cannot mix CuPy and NumPy arrays in one call; move them to the same device "
            "(cupy.asarray / cupy.asnumpy)"
        )
    return True


def to_ndarray(obj: Any, name: str = "input") -> np.ndarray:
    """Any array-like as a NumPy array (no copy when it already is one).

    A masked array is a ``TypeError`` (see :func:`refuse_masked`); a pandas object with
    extension dtypes (pyarrow-backed or nullable columns) is converted with ``to_numpy``.
    """
    if isinstance(obj, np.ndarray):
        if type(obj) is not np.ndarray:
            refuse_masked(obj, name)
        return obj
    if type(obj).__module__.startswith("pandas"):
        return _from_pandas(obj, name)
    if not hasattr(obj, "__array__") and hasattr(obj, "__dlpack__"):
        return np.from_dlpack(obj)
    return np.asarray(obj)


def refuse_masked(obj: Any, name: str) -> None:
    """A ``TypeError`` for a NumPy masked array: the kernels read the data and would silently
    drop the mask. Without ``numpy.ma`` imported no masked array exists, so nothing is
    imported here."""
    ma = sys.modules.get("numpy.ma")
    if ma is None or not isinstance(obj, ma.MaskedArray):
        return
    raise TypeError(
        f"{name} is a masked array (numpy.ma.MaskedArray), which is not supported: its mask "
        f"would be ignored. Fill the masked values ({name}.filled(value)), leave those samples "
        f"out with ignore_index (targets) or sample_weight=0, or pass {name}.data to ignore "
        "the mask"
    )


def _from_pandas(obj: Any, name: str) -> np.ndarray:
    """A pandas Series or DataFrame as a NumPy array. Columns of extension dtypes (pyarrow's
    ``float32[pyarrow]``, pandas' nullable ``Float64``...) give an object array through
    ``__array__``; numeric ones are converted to their NumPy dtype with ``to_numpy`` instead.
    Missing values that dtype cannot hold are a ``TypeError``. pandas is never imported: the
    object comes from it."""
    if getattr(obj, "ndim", None) == 2:
        columns = list(getattr(obj, "dtypes", ()))
    else:
        columns = [getattr(obj, "dtype", None)]
    if all(isinstance(d, np.dtype) for d in columns) or not hasattr(obj, "to_numpy"):
        return np.asarray(obj)
    numeric = [getattr(d, "numpy_dtype", None) for d in columns]
    if not all(isinstance(d, np.dtype) and d.kind in "biuf" for d in numeric):
        return np.asarray(obj)  # strings, categories...: pandas' own conversion
    dtype = np.result_type(*numeric)
    try:
        values: np.ndarray = obj.to_numpy(dtype=dtype)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"{name} is a pandas object whose {dtype} values cannot be converted to NumPy "
            f"({e}); fill its missing values first (e.g. {name}.fillna(...)) or convert it "
            "with to_numpy(dtype=..., na_value=...)"
        ) from e
    return values


_READY: tuple[Literal["C_CONTIGUOUS"], Literal["ALIGNED"]] = ("C_CONTIGUOUS", "ALIGNED")


def _ready(a: np.ndarray) -> bool:
    """Whether the core can read ``a`` in place: C-contiguous and aligned."""
    flags = a.flags
    return bool(flags.c_contiguous and flags.aligned)


is_ready = _ready


def plain_labels(input: Any, target: Any) -> bool:
    """Whether ``input`` and ``target`` are already what :func:`float_input` and
    :func:`class_target` return: NumPy arrays (not subclasses) of native float32/float64 and
    int64, C-contiguous and aligned.

    The common class-loss call then skips the conversions and the CuPy check (both arguments
    are NumPy arrays): about 0.5 us of a ~2.8 us call on a few rows.
    """
    if type(input) is not np.ndarray or type(target) is not np.ndarray:
        return False
    dtype = input.dtype
    return (
        (dtype is FLOAT32 or dtype is FLOAT64)
        and target.dtype is INT64
        and _ready(input)
        and _ready(target)
    )


def float_input(obj: Any, name: str = "input") -> tuple[np.ndarray, np.dtype[Any]]:
    """The input as a C-contiguous, aligned float32/float64 array in native byte order, and
    the dtype results must have.

    float16 computes in float32; bfloat16 (``ml_dtypes``) is read by the core as it is (see
    ``_bfloat16``); integer and boolean inputs become float64 (NumPy's rule); complex, object
    and string inputs are a ``TypeError``.
    """
    a = obj if type(obj) is np.ndarray else to_ndarray(obj, name)
    dtype = a.dtype
    # Built-in dtypes are singletons, so identity is the fast check; equality catches equal
    # dtypes made elsewhere (unpickled arrays, for one).
    if dtype is FLOAT32 or dtype is FLOAT64 or dtype in NATIVE:
        return (a if _ready(a) else np.require(a, dtype, _READY)), dtype
    kind = dtype.kind
    if kind == "f" and dtype.itemsize == 2:
        return np.require(a, np.float32, _READY), FLOAT16
    if kind == "f" and dtype.itemsize in (4, 8):
        native = FLOAT32 if dtype.itemsize == 4 else FLOAT64
        return np.require(a, native, _READY), native
    if kind in "biu":
        return np.require(a, np.float64, _READY), FLOAT64
    if kind == "V" and _bfloat16.is_bfloat16(dtype):
        return _bfloat16.ready(a), dtype
    raise TypeError(
        f"{name} must be a float16, bfloat16, float32 or float64 array (integers are read as "
        f"float64), got dtype {dtype}; complex, object, string and extended-precision arrays "
        "are not supported"
    )


def non_native_output(name: str, dtype: np.dtype[Any]) -> str:
    """The message for an output buffer (``out=``, ``grad_out=``) not in native byte order
    (the core's words too): unlike an input, an output cannot be converted."""
    return (
        f"{name} must be in native byte order, got dtype {dtype}: an output is written in "
        f"place, so it cannot be converted; pass a native array, e.g. "
        f"np.empty({name}.shape, {name}.dtype.newbyteorder('='))"
    )


def _host_address(a: np.ndarray) -> int:
    return int(a.ctypes.data)


def refuse_overlap(
    out: Any,
    converted: Any,
    original: Any,
    name: str,
    *,
    xp: Any = np,
    address: Callable[[Any], int] = _host_address,
) -> None:
    """The core checks an output against the array it reads. Where that is a converted copy
    of the caller's input (float16, strided, byte-swapped...), this checks the output against
    the input itself: the input (in place) or no memory in common, else the core's
    ``ValueError``. ``xp`` is the array module (NumPy, or CuPy for device arrays) and
    ``address`` gives an array's data address."""
    if converted is original or not isinstance(original, xp.ndarray):
        return
    if not isinstance(out, xp.ndarray) or out.dtype not in (converted.dtype, original.dtype):
        return  # not an output at all: the type checks that follow say so
    if not xp.may_share_memory(out, original):
        return
    in_place = (
        original.flags.c_contiguous
        and address(out) == address(original)
        and out.nbytes == original.nbytes
    )
    if not in_place:
        raise ValueError(
            f"{name} overlaps the input; pass the input itself to write in place, or a "
            "separate array"
        )


def like(obj: Any, dtype: np.dtype[Any], name: str) -> np.ndarray:
    """A secondary float argument (weights, soft targets) as C-contiguous, aligned ``dtype``."""
    a = to_ndarray(obj, name)
    if a.dtype.kind not in "fiub" and not _bfloat16.is_bfloat16(a.dtype):
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return np.require(a, dtype, _READY)


def native(a: np.ndarray) -> np.ndarray:
    """``a`` in native byte order, C-contiguous and aligned, as the core reads it: ``a``
    itself when it already is, else one copy."""
    if a.dtype.isnative and _ready(a):
        return a
    return np.require(a, a.dtype.newbyteorder("="), _READY)


def class_target(obj: Any, dtype: np.dtype[Any]) -> np.ndarray:
    """A multiclass target: integers stay as they are (in native byte order, C-contiguous and
    aligned), floats become ``dtype``."""
    a = to_ndarray(obj, "target")
    kind = a.dtype.kind
    if kind in "iu":
        return native(a)
    if kind == "f" or _bfloat16.is_bfloat16(a.dtype):
        return np.require(a, dtype, _READY)
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
    refuse_masked(grad_output, "grad_output")
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
