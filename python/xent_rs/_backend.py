"""The backend: one choice of array module per call, the conversions, and the call into a core.

A call's arrays pick its backend once (:func:`namespace`, SciPy's ``array_namespace``
habit): NumPy arrays and array-likes run on the CPU core ``xent_rs._core`` (Rust), CuPy arrays
on the GPU core ``xent_rs._cupy`` (CUDA), whose functions take the same arguments. Everything
between the public function and the core is written once, with the :class:`Namespace` as a
parameter: converting each argument once (float16 computes in float32, integers in float64,
strides to C order, byte order, array-likes), refusing masked arrays and outputs that overlap
a converted input, and giving the core's results the input's dtype. C-contiguous float32 and
float64 inputs pass through untouched: no copy.

The options of a call arrive already checked, as one object of ``xent_rs._spec``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from xent_rs import _bfloat16, _core
from xent_rs._spec import BinaryLoss, ClassLoss, KlDiv

FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
FLOAT16 = np.dtype(np.float16)
INT64 = np.dtype(np.int64)
NATIVE = (FLOAT32, FLOAT64)

_READY: tuple[Literal["C_CONTIGUOUS"], Literal["ALIGNED"]] = ("C_CONTIGUOUS", "ALIGNED")


# ---------------------------------------------------------------------------------------------
# the backend choice
# ---------------------------------------------------------------------------------------------


class Namespace:
    """What differs between the NumPy and the CuPy backend: the array module ``xp``, the core
    its arrays go to, and how a value becomes an array the core can read."""

    name = "numpy"

    @property
    def xp(self) -> Any:
        """The array module."""
        return np

    @property
    def core(self) -> Any:
        """The module of kernels: ``_core``'s functions and signatures."""
        return _core

    def asarray(self, obj: Any, name: str) -> Any:
        """Any array-like as an array of this backend (no copy when it already is one)."""
        return to_ndarray(obj, name)

    def require(self, a: Any, dtype: Any) -> Any:
        """``a`` as C-contiguous, aligned, native ``dtype`` (``a`` itself when it is)."""
        return a if a.dtype == dtype and is_ready(a) else np.require(a, dtype, _READY)

    def address(self, a: Any) -> int:
        """The address of ``a``'s data."""
        return int(a.ctypes.data)


class _CupyNamespace(Namespace):
    name = "cupy"

    @property
    def xp(self) -> Any:
        return importlib.import_module("cupy")

    @property
    def core(self) -> Any:
        from xent_rs import _cupy

        return _cupy

    def asarray(self, obj: Any, name: str) -> Any:
        cp = self.xp
        if isinstance(obj, cp.ndarray):
            return obj
        host = to_ndarray(obj, name)  # lists and scalars: copied to the device
        if host.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a real numeric array, got dtype {host.dtype}")
        return cp.asarray(host)

    def require(self, a: Any, dtype: Any) -> Any:
        return a.astype(dtype, order="C", copy=False)

    def address(self, a: Any) -> int:
        return int(a.data.ptr)


NUMPY = Namespace()
CUPY = _CupyNamespace()


def is_cupy(obj: object) -> bool:
    """Whether ``obj`` is a CuPy array (without importing CuPy)."""
    return type(obj).__module__.startswith("cupy")


def namespace(*args: object) -> Namespace:
    """The backend of a call: CuPy when every array argument is a CuPy array, else NumPy.

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
        return NUMPY
    if numpy_seen:
        raise TypeError(
            "cannot mix CuPy and NumPy arrays in one call; move them to the same device "
            "(cupy.asarray / cupy.asnumpy)"
        )
    return CUPY


# ---------------------------------------------------------------------------------------------
# conversions
# ---------------------------------------------------------------------------------------------


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


def is_ready(a: Any) -> bool:
    """Whether the core can read ``a`` in place: C-contiguous and aligned."""
    flags = a.flags
    return bool(flags.c_contiguous and flags.aligned)


is_bfloat16 = _bfloat16.is_bfloat16


def plain_labels(input: Any, target: Any) -> bool:
    """Whether ``input`` and ``target`` are already what :func:`float_input` and
    :func:`class_target` return: NumPy arrays (not subclasses) of native float32/float64 and
    int64, C-contiguous and aligned.

    The common class-loss call then skips the conversions and the backend choice (both
    arguments are NumPy arrays): about 0.5 us of a ~2.8 us call on a few rows.
    """
    if type(input) is not np.ndarray or type(target) is not np.ndarray:
        return False
    dtype = input.dtype
    return (
        (dtype is FLOAT32 or dtype is FLOAT64)
        and target.dtype is INT64
        and is_ready(input)
        and is_ready(target)
    )


def float_input(ns: Namespace, obj: Any, name: str = "input") -> tuple[Any, np.dtype[Any]]:
    """The input as a C-contiguous, aligned float32/float64 array in native byte order, and
    the dtype results must have.

    float16 computes in float32; bfloat16 (``ml_dtypes``) is read by the core as it is (see
    ``_bfloat16``); integer and boolean inputs become float64 (NumPy's rule); complex, object
    and string inputs are a ``TypeError``.
    """
    a = obj if type(obj) is np.ndarray else ns.asarray(obj, name)
    dtype = np.dtype(a.dtype)
    # Built-in dtypes are singletons, so identity is the fast check; equality catches equal
    # dtypes made elsewhere (unpickled arrays, for one).
    if dtype is FLOAT32 or dtype is FLOAT64 or dtype in NATIVE:
        return ns.require(a, dtype), dtype
    kind = dtype.kind
    if kind == "f" and dtype.itemsize == 2:
        return ns.require(a, FLOAT32), FLOAT16
    if kind == "f" and dtype.itemsize in (4, 8):
        native_dtype = FLOAT32 if dtype.itemsize == 4 else FLOAT64
        return ns.require(a, native_dtype), native_dtype
    if kind in "biu":
        return ns.require(a, FLOAT64), FLOAT64
    if kind == "V" and _bfloat16.is_bfloat16(dtype):
        return _bfloat16.ready(a), dtype
    raise TypeError(
        f"{name} must be a float16, bfloat16, float32 or float64 array (integers are read as "
        f"float64), got dtype {dtype}; complex, object, string and extended-precision arrays "
        "are not supported"
    )


def like(ns: Namespace, obj: Any, dtype: np.dtype[Any], name: str) -> Any:
    """A secondary float argument (weights, soft targets) as C-contiguous, aligned ``dtype``."""
    a = ns.asarray(obj, name)
    if a.dtype.kind not in "fiub" and not _bfloat16.is_bfloat16(a.dtype):
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return ns.require(a, dtype)


def optional(ns: Namespace, obj: Any, dtype: np.dtype[Any], name: str) -> Any:
    """:func:`like` for an optional argument (``None`` stays ``None``)."""
    return None if obj is None else like(ns, obj, dtype, name)


def native(a: np.ndarray) -> np.ndarray:
    """``a`` in native byte order, C-contiguous and aligned, as the core reads it: ``a``
    itself when it already is, else one copy."""
    if a.dtype.isnative and is_ready(a):
        return a
    return np.require(a, a.dtype.newbyteorder("="), _READY)


def class_target(ns: Namespace, obj: Any, dtype: np.dtype[Any]) -> Any:
    """A multiclass target: integers stay as they are (in native byte order, C-contiguous and
    aligned), floats become ``dtype``."""
    a = ns.asarray(obj, "target")
    kind = a.dtype.kind
    if kind in "iu":
        return ns.require(a, a.dtype.newbyteorder("="))
    if kind == "f" or _bfloat16.is_bfloat16(a.dtype):
        return ns.require(a, dtype)
    if kind == "b":
        raise TypeError("target must hold integer class indices or class probabilities, got bool")
    raise TypeError(
        f"target must hold integer class indices or floating class probabilities, "
        f"got dtype {a.dtype}"
    )


def upstream(ns: Namespace, grad_output: Any, reduction: str, dtype: np.dtype[Any]) -> Any:
    """``grad_output`` as the core takes it: a float for reduced losses, an array for ``none``
    (``None`` when not given)."""
    if grad_output is None:
        return None
    refuse_masked(grad_output, "grad_output")
    ndim = getattr(grad_output, "ndim", None)
    if reduction != "none" and (np.ndim(grad_output) if ndim is None else ndim) == 0:
        return float(grad_output)
    return like(ns, grad_output, dtype, "grad_output")


def broadcast(
    ns: Namespace, operand: Any, shape: tuple[int, ...], dtype: np.dtype[Any], name: str
) -> tuple[Any, int]:
    """A weight broadcast against ``shape``, as distinct values and a repeat count.

    Flat element ``i`` of the input uses ``values[(i // repeat) % len(values)]``. That covers
    a scalar, trailing shapes like ``(C,)``, and shapes like ``(N, 1)`` or ``(C, 1, 1)``;
    any other broadcast is materialised. Shapes that do not broadcast are a ``ValueError``.
    """
    if operand is None:
        return None, 1
    w = like(ns, operand, dtype, name)
    wshape = tuple(w.shape)
    if w.ndim > len(shape):
        raise ValueError(
            f"{name} of shape {wshape} does not broadcast against the input's shape {shape}"
        )
    padded = (1,) * (len(shape) - w.ndim) + wshape
    for have, want in zip(padded, shape, strict=True):
        if have not in (1, want):
            raise ValueError(
                f"{name} of shape {wshape} does not broadcast against the input's shape {shape}"
            )
    varying = [i for i, (have, want) in enumerate(zip(padded, shape, strict=True)) if have != 1]
    if 0 in shape:
        return None, 1
    if not varying:
        return w.reshape(1), 1
    first, last = varying[0], varying[-1]
    xp = ns.xp
    if all(padded[i] == shape[i] for i in range(first, last + 1)):
        repeat = int(np.prod(shape[last + 1 :], dtype=np.int64))
        return xp.ascontiguousarray(w.reshape(-1)), max(repeat, 1)
    full: npt.NDArray[Any] = xp.ascontiguousarray(xp.broadcast_to(w, shape)).reshape(-1)
    return full, 1


def non_native_output(name: str, dtype: np.dtype[Any]) -> str:
    """The message for an output buffer (``out=``, ``grad_out=``) not in native byte order
    (the core's words too): unlike an input, an output cannot be converted."""
    return (
        f"{name} must be in native byte order, got dtype {dtype}: an output is written in "
        f"place, so it cannot be converted; pass a native array, e.g. "
        f"np.empty({name}.shape, {name}.dtype.newbyteorder('='))"
    )


def refuse_overlap(ns: Namespace, out: Any, converted: Any, original: Any, name: str) -> None:
    """The core checks an output against the array it reads. Where that is a converted copy
    of the caller's input (float16, strided, byte-swapped...), this checks the output against
    the input itself: the input (in place) or no memory in common, else the core's
    ``ValueError``."""
    xp = ns.xp
    if converted is original or not isinstance(original, xp.ndarray):
        return
    if not isinstance(out, xp.ndarray) or out.dtype not in (converted.dtype, original.dtype):
        return  # not an output at all: the type checks that follow say so
    if not xp.may_share_memory(out, original):
        return
    in_place = (
        original.flags.c_contiguous
        and ns.address(out) == ns.address(original)
        and out.nbytes == original.nbytes
    )
    if not in_place:
        raise ValueError(
            f"{name} overlaps the input; pass the input itself to write in place, or a "
            "separate array"
        )


def _half_output(ns: Namespace, out: Any, x: Any, dtype: np.dtype[Any], name: str) -> None:
    """Checks an ``out``/``grad_out`` for a float16 input, which is computed in float32 and
    copied into it afterwards: the same rules as the core applies to other dtypes."""
    xp = ns.xp
    if isinstance(out, np.ndarray) and not out.dtype.isnative:
        raise TypeError(non_native_output(name, out.dtype))
    if not isinstance(out, xp.ndarray) or out.dtype != dtype:
        got = getattr(out, "dtype", type(out).__name__)
        raise TypeError(f"{name} must be a {dtype} array like the input, got {got}")
    if out.shape != x.shape:
        raise ValueError(f"{name} has shape {out.shape} but the input has shape {x.shape}")
    if not out.flags.c_contiguous or not getattr(out.flags, "writeable", True):
        raise ValueError(f"{name} must be a writable C-contiguous array")


def _output(ns: Namespace, out: Any, x: Any, original: Any, dtype: np.dtype[Any], name: str) -> Any:
    """An ``out``/``grad_out`` checked against the input; what the core gets (``None`` for a
    float16 input, whose result is copied into ``out`` afterwards)."""
    if out is None:
        return None
    refuse_masked(out, name)
    refuse_overlap(ns, out, x, original, name)
    if dtype == FLOAT16:
        _half_output(ns, out, x, dtype, name)
        return None
    return out


def _restore(result: Any, dtype: np.dtype[Any]) -> Any:
    """A float32 result cast back to float16 (the only dtype computed in another one)."""
    return result.astype(dtype) if dtype == FLOAT16 else result


def _finish(ns: Namespace, result: Any, dtype: np.dtype[Any], half_out: Any) -> Any:
    """The core's ``loss`` or ``(loss, grad)`` in the input's dtype: a reduced loss as a
    scalar of that dtype (a 0-d array on CuPy), the gradient copied into a float16 caller's
    ``grad_out``."""
    if type(result) is float:
        return dtype.type(result)
    if not isinstance(result, tuple):
        return _restore(result, dtype)
    loss, grad = result
    if dtype == FLOAT16:
        grad = grad.astype(dtype)
        if half_out is not None:
            ns.xp.copyto(half_out, grad)
            grad = half_out
    return (dtype.type(loss) if type(loss) is float else _restore(loss, dtype)), grad


# ---------------------------------------------------------------------------------------------
# the softmax family
# ---------------------------------------------------------------------------------------------


def normalize(x: Any, axis: int, out: Any, log: bool) -> Any:
    """``softmax`` (``log_softmax`` with ``log``) of ``x`` along ``axis``, into ``out`` when
    given."""
    ns = namespace(x, out)
    a, dtype = float_input(ns, x)
    core_out = _output(ns, out, a, x, dtype, "out")
    if out is not None and core_out is None:  # float16: computed in float32, then copied
        ns.xp.copyto(out, ns.core.softmax(a, axis, None, log).astype(dtype))
        return out
    return _restore(ns.core.softmax(a, axis, core_out, log), dtype)


def logsumexp(x: Any, axis: int, keepdims: bool) -> Any:
    """``log(sum(exp(x)))`` along ``axis``."""
    ns = namespace(x)
    a, dtype = float_input(ns, x)
    result = _restore(ns.core.logsumexp(a, axis), dtype)
    if keepdims:
        return ns.xp.expand_dims(result, axis)
    return result[()] if result.ndim == 0 and ns is NUMPY else result


def backward(grad_output: Any, output: Any, axis: int, log: bool) -> Any:
    """The vector-Jacobian product of ``softmax`` (``log_softmax`` with ``log``)."""
    ns = namespace(grad_output, output)
    y, dtype = float_input(ns, output, "output")
    g = like(ns, grad_output, y.dtype, "grad_output")
    return _restore(ns.core.softmax_backward(g, y, axis, log), dtype)


# ---------------------------------------------------------------------------------------------
# the losses
# ---------------------------------------------------------------------------------------------


def class_loss(
    spec: ClassLoss,
    input: Any,
    target: Any,
    weight: Any,
    sample_weight: Any,
    grad_output: Any,
    grad_out: Any,
) -> Any:
    """A multiclass loss (``spec.loss``) and, with ``spec.return_grad``, its gradient."""
    if (
        weight is None
        and sample_weight is None
        and grad_output is None
        and grad_out is None
        and plain_labels(input, target)
    ):  # the common training call: nothing to convert, the NumPy backend
        result = _core.class_loss(spec, input, target, None, None, None, None)
        return _finish(NUMPY, result, input.dtype, None)
    ns = namespace(input, target, weight, sample_weight, grad_output, grad_out)
    x, dtype = float_input(ns, input)
    work = x.dtype
    core_grad_out = grad_out
    if spec.return_grad:
        core_grad_out = _output(ns, grad_out, x, input, dtype, "grad_out")
    result = ns.core.class_loss(
        spec,
        x,
        class_target(ns, target, work),
        optional(ns, weight, work, "weight"),
        optional(ns, sample_weight, work, "sample_weight"),
        upstream(ns, grad_output, spec.reduction, work),
        core_grad_out,
    )
    return _finish(ns, result, dtype, grad_out if core_grad_out is None else None)


def class_partial(
    spec: ClassLoss,
    input: Any,
    target: Any,
    weight: Any,
    sample_weight: Any,
    return_losses: bool,
) -> tuple[float, float, int, Any]:
    """The core's partial result of a multiclass loss over one chunk (NumPy): ``(loss sum,
    mean denominator, counted samples, per-sample losses or None)``."""
    x, dtype = float_input(NUMPY, input)
    work = x.dtype
    t = class_target(NUMPY, target, work)
    # np.require keeps a 0-d weight 0-d (np.ascontiguousarray makes it 1-D), so that the core
    # refuses it as the one-shot functions do.
    w = optional(NUMPY, weight, work, "weight")
    sw = optional(NUMPY, sample_weight, work, "sample_weight")
    p = _core.class_loss(spec, x, t, w, sw, None, None, partial=return_losses)
    return p.loss_sum, p.denominator, p.count, half_losses(p.losses, dtype)


def half_losses(losses: Any, dtype: np.dtype[Any]) -> Any:
    """Per-sample losses of a float16 chunk in float16, as the one-shot functions give them."""
    if losses is None or dtype != FLOAT16:
        return losses
    return losses.astype(dtype)


def binary_target(ns: Namespace, target: Any, x: Any) -> Any:
    """An element-wise loss's target: the input's shape and working dtype."""
    t = like(ns, target, x.dtype, "target")
    if t.shape != x.shape:
        raise ValueError(
            f"target size {tuple(t.shape)} must be the same as input size {tuple(x.shape)}"
        )
    return t


def binary_loss(
    spec: BinaryLoss, input: Any, target: Any, weight: Any, pos_weight: Any, grad_output: Any
) -> Any:
    """An element-wise loss (``spec.loss``) and, with ``spec.return_grad``, its gradient."""
    ns = namespace(input, target, weight, pos_weight, grad_output)
    x, dtype = float_input(ns, input)
    work = x.dtype
    shape = tuple(x.shape)
    t = binary_target(ns, target, x)
    w = broadcast(ns, weight, shape, work, "weight")
    g = upstream(ns, grad_output, spec.reduction, work)
    pw = broadcast(ns, pos_weight, shape, work, "pos_weight")
    result = ns.core.binary_loss(spec, x, t, w, pw, g)
    return _finish(ns, result, dtype, None)


def element_weight(
    weight: Any, sample_weight: Any, shape: tuple[int, ...], work: np.dtype[Any]
) -> Any:
    """An element-wise loss's weight for a chunk of ``shape`` (NumPy): ``weight`` times the
    per-row ``sample_weight`` (shape ``(n,)``, one weight per row; or anything that
    broadcasts against the chunk), as the accumulators and ``xent_rs.dask`` take them."""
    w = optional(NUMPY, weight, work, "weight")
    if sample_weight is None:
        return w
    sw = like(NUMPY, sample_weight, work, "sample_weight")
    if sw.ndim == 1 and len(shape) >= 1:
        if sw.shape[0] != shape[0]:
            raise ValueError(
                f"sample_weight of shape {sw.shape} must hold one weight per row of the "
                f"input of shape {shape}"
            )
        sw = sw.reshape(sw.shape + (1,) * (len(shape) - 1))
    return sw if w is None else np.multiply(w, sw)


def binary_partial(
    spec: BinaryLoss,
    input: Any,
    target: Any,
    weight: Any,
    sample_weight: Any,
    pos_weight: Any,
    return_losses: bool,
) -> tuple[float, float, int, Any]:
    """The core's partial result of an element-wise loss over one chunk (NumPy), weighted by
    :func:`element_weight`."""
    x, dtype = float_input(NUMPY, input)
    work = x.dtype
    shape = tuple(x.shape)
    t = binary_target(NUMPY, target, x)
    w = element_weight(weight, sample_weight, shape, work)
    bw = broadcast(NUMPY, w, shape, work, "weight")
    pw = broadcast(NUMPY, pos_weight, shape, work, "pos_weight")
    p = _core.binary_loss(spec, x, t, bw, pw, None, partial=return_losses)
    return p.loss_sum, p.denominator, p.count, half_losses(p.losses, dtype)


def kl_div(spec: KlDiv, input: Any, target: Any, grad_output: Any) -> Any:
    """``kl_div`` and, with ``spec.return_grad``, its gradient."""
    ns = namespace(input, target, grad_output)
    x, dtype = float_input(ns, input)
    work = x.dtype
    t = like(ns, target, work, "target")
    g = upstream(ns, grad_output, spec.reduction, work)
    result = ns.core.kl_div(spec, x, t, g)
    return _finish(ns, result, dtype, None)


def kl_div_partial(
    spec: KlDiv, input: Any, target: Any, return_losses: bool
) -> tuple[float, float, int, Any]:
    """The core's partial result of ``kl_div`` over one chunk (NumPy): the ``batchmean``
    denominator counts rows, ``mean``'s elements."""
    x, dtype = float_input(NUMPY, input)
    t = like(NUMPY, target, x.dtype, "target")
    p = _core.kl_div(spec, x, t, None, partial=return_losses)
    return p.loss_sum, p.denominator, p.count, half_losses(p.losses, dtype)
