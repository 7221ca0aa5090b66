//! Extraction of NumPy arrays at the edge: dtype dispatch, contiguity, shapes, outputs.
//!
//! The Python layer hands over C-contiguous float32/float64/bfloat16 arrays; everything is
//! still checked here, so the private module cannot be misused into undefined behaviour.
//!
//! bfloat16 is `ml_dtypes.bfloat16`, a NumPy dtype that NumPy itself does not define: it is
//! recognised by its name (so `ml_dtypes` is never imported to look at other arrays), its
//! dtype object remembered, and arrays of it read and made as [`Bf16`].

use std::borrow::Cow;

use numpy::{
    Element, PyArrayDescr, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn,
    PyReadwriteArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use super::allocator;
use crate::error::{XentError, format_index};
use crate::float::{Bf16, Storage};
use crate::kernels::{Layout, Targets};

/// Evaluates `$body` with `$x` bound to the typed array a [`FloatArray`] holds, whichever its
/// dtype: the one dtype dispatch of every entry point, written once.
macro_rules! with_dtype {
    ($array:expr, $x:ident => $body:expr) => {
        match $array {
            $crate::py::arrays::FloatArray::F32($x) => $body,
            $crate::py::arrays::FloatArray::F64($x) => $body,
            $crate::py::arrays::FloatArray::Bf16($x) => $body,
        }
    };
}
pub(crate) use with_dtype;

/// A float32, float64 or bfloat16 array: the one dtype dispatch of every entry point.
pub(crate) enum FloatArray<'py> {
    /// float32.
    F32(Bound<'py, PyArrayDyn<f32>>),
    /// float64.
    F64(Bound<'py, PyArrayDyn<f64>>),
    /// bfloat16 (`ml_dtypes.bfloat16`), computed in float32.
    Bf16(Bound<'py, PyArrayDyn<Bf16>>),
}

/// A dtype the entry points take: a NumPy element that the kernels store.
pub(crate) trait Dtype: Element + Storage {
    /// NumPy's name for it, for messages.
    const NAME: &'static str;

    /// A reduced loss (a float64 sum or mean) as the Python float handed back for this dtype,
    /// which the Python layer makes a scalar of the dtype: unchanged where that rounds it
    /// once, as a computation in the dtype would.
    fn reduced(v: f64) -> f64 {
        v
    }
}

impl Dtype for f32 {
    const NAME: &'static str = "float32";
}

impl Dtype for f64 {
    const NAME: &'static str = "float64";
}

impl Dtype for Bf16 {
    const NAME: &'static str = "bfloat16";

    /// Rounded to float32, the type bfloat16 is computed in, then to bfloat16 (exact in the
    /// float): rounding the float64 value to bfloat16 at once would differ where float32
    /// lands on a tie.
    fn reduced(v: f64) -> f64 {
        Bf16::narrow(v as f32).widen() as f64
    }
}

/// The bfloat16 dtype object, from the first bfloat16 array seen.
static BFLOAT16: PyOnceLock<Py<PyArrayDescr>> = PyOnceLock::new();

/// Whether `dtype` is `ml_dtypes.bfloat16` (by name and size: a user-defined NumPy dtype).
fn is_bfloat16(dtype: &Bound<'_, PyArrayDescr>) -> bool {
    dtype.kind() == b'V'
        && dtype.itemsize() == 2
        && dtype
            .getattr("name")
            .and_then(|n| n.extract::<String>())
            .is_ok_and(|n| n == "bfloat16")
}

// SAFETY: `Bf16` is a transparent `u16`, plain data like the bfloat16 it describes (2 bytes,
// any bit pattern valid), and `get_dtype` describes exactly that.
unsafe impl Element for Bf16 {
    const IS_COPY: bool = true;

    /// The bfloat16 dtype remembered from an input. Arrays of it are only made, and only
    /// looked for, once an input of that dtype was seen ([`float_array`]); before that no
    /// bfloat16 array exists in this process, and `ml_dtypes` is asked for it.
    fn get_dtype(py: Python<'_>) -> Bound<'_, PyArrayDescr> {
        if let Some(d) = BFLOAT16.get(py) {
            return d.bind(py).clone();
        }
        py.import("ml_dtypes")
            .and_then(|m| m.getattr("bfloat16"))
            .and_then(|t| PyArrayDescr::new(py, &t))
            .inspect(|d| {
                let _ = BFLOAT16.set(py, d.clone().unbind());
            })
            // Without ml_dtypes no array is of this dtype: an opaque 2-byte dtype that none
            // matches.
            .or_else(|_| PyArrayDescr::new(py, "V2"))
            .unwrap_or_else(|_| PyArrayDescr::object(py))
    }

    fn clone_ref(&self, _py: Python<'_>) -> Self {
        *self
    }
}

/// `values` as the kernels' float: borrowed when they already are, else widened into a copy
/// (only for the small operands: per-class and per-sample weights, a per-sample upstream
/// gradient, broadcast values).
pub(crate) fn widened<S: Storage>(values: &[S]) -> Cow<'_, [S::Compute]> {
    match S::in_place(values.as_ptr()) {
        // SAFETY: `S` is its compute type: the same values, borrowed for as long.
        Some(p) => Cow::Borrowed(unsafe { std::slice::from_raw_parts(p, values.len()) }),
        None => Cow::Owned(values.iter().map(|v| v.widen()).collect()),
    }
}

/// The NumPy dtype name of `obj` (for messages), saying so when it is not in native byte
/// order (the Python layer converts such inputs; only direct calls of the core see this).
pub(crate) fn dtype_name(obj: &Bound<'_, PyAny>) -> String {
    obj.cast::<PyUntypedArray>()
        .map(|a| {
            let dtype = a.dtype();
            if dtype.is_native_byteorder() == Some(false) {
                format!("{dtype} (not in native byte order)")
            } else {
                dtype.to_string()
            }
        })
        .unwrap_or_else(|_| obj.get_type().to_string())
}

/// `obj` as a float32/float64 array, else a `TypeError` naming `what`.
pub(crate) fn float_array<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<FloatArray<'py>> {
    if let Ok(a) = obj.cast::<PyArrayDyn<f32>>() {
        return Ok(FloatArray::F32(a.clone()));
    }
    if let Ok(a) = obj.cast::<PyArrayDyn<f64>>() {
        return Ok(FloatArray::F64(a.clone()));
    }
    if let Ok(a) = obj.cast::<PyUntypedArray>()
        && is_bfloat16(&a.dtype())
    {
        let _ = BFLOAT16.set(obj.py(), a.dtype().unbind());
        if let Ok(a) = obj.cast::<PyArrayDyn<Bf16>>() {
            return Ok(FloatArray::Bf16(a.clone()));
        }
    }
    Err(XentError::Type(format!(
        "{what} must be a float16, bfloat16, float32 or float64 array, got dtype {}",
        dtype_name(obj)
    ))
    .into())
}

/// NumPy's name for the dtype of `T`, for messages.
pub(crate) fn float_name<T: Dtype>() -> &'static str {
    T::NAME
}

/// `obj` as an array of `T`, else a `TypeError` naming `what`.
pub(crate) fn typed<'py, T: Dtype>(
    obj: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    obj.cast::<PyArrayDyn<T>>().cloned().map_err(|_| {
        XentError::Type(format!(
            "{what} must be a {} array like the input, got dtype {}",
            float_name::<T>(),
            dtype_name(obj)
        ))
        .into()
    })
}

/// A read-only view of a C-contiguous array.
pub(crate) fn readonly<'py, T: Element>(
    a: &Bound<'py, PyArrayDyn<T>>,
    what: &str,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    if !a.is_c_contiguous() {
        return Err(XentError::Value(format!("{what} must be C-contiguous")).into());
    }
    readonly_any_layout(a, what)
}

/// A read-only view of an array in whatever layout it has (the caller checks the layout).
pub(crate) fn readonly_any_layout<'py, T: Element>(
    a: &Bound<'py, PyArrayDyn<T>>,
    what: &str,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    a.try_readonly()
        .map_err(|e| XentError::Value(format!("{what}: {e}")).into())
}

/// The contiguous values of a read-only view.
pub(crate) fn slice<'a, T: Element>(a: &'a PyReadonlyArrayDyn<'_, T>) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|e| XentError::Value(e.to_string()).into())
}

/// The contiguous values of a writable view.
pub(crate) fn slice_mut<'a, T: Element>(
    a: &'a mut PyReadwriteArrayDyn<'_, T>,
) -> PyResult<&'a mut [T]> {
    a.as_slice_mut()
        .map_err(|e| XentError::Value(e.to_string()).into())
}

/// A fresh, uninitialised C-order array that a kernel will fill completely (large ones from
/// the output cache, see [`crate::pool`]).
pub(crate) fn uninit<'py, T: Element>(
    py: Python<'py>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    // SAFETY: every caller hands the array to a kernel that writes every element before the
    // array reaches Python (or drops it unread on error).
    unsafe { allocator::new_output::<T>(py, shape) }
}

/// A class axis as Python gives it: any integer. One beyond 64 bits is out of range for every
/// array, and refused as such by [`layout`] (a `ValueError` naming the axis, where PyO3's own
/// conversion would raise an `OverflowError` naming nothing).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Axis {
    /// An axis that fits in an `isize` (possibly negative, possibly out of range).
    Index(isize),
    /// An integer beyond 64 bits.
    Huge,
}

impl<'a, 'py> FromPyObject<'a, 'py> for Axis {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<isize>() {
            Ok(axis) => Ok(Axis::Index(axis)),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(obj.py()) => {
                Ok(Axis::Huge)
            }
            Err(e) => Err(e),
        }
    }
}

/// The class-axis layout of `shape` for a possibly negative `axis`.
pub(crate) fn layout(shape: &[usize], axis: Axis) -> PyResult<(Layout, usize)> {
    let ndim = shape.len() as isize;
    if ndim == 0 {
        return Err(XentError::Value(
            "the input must have at least one dimension (the class axis), got a 0-d array".into(),
        )
        .into());
    }
    let Axis::Index(axis) = axis else {
        return Err(XentError::Value(format!(
            "axis is out of range for an input of shape {} ({ndim} dimensions): it does not fit \
             in 64 bits",
            format_index(shape)
        ))
        .into());
    };
    let normalized = if axis < 0 { axis + ndim } else { axis };
    if !(0..ndim).contains(&normalized) {
        return Err(XentError::Value(format!(
            "axis {axis} is out of range for an input of shape {} ({ndim} dimensions)",
            format_index(shape)
        ))
        .into());
    }
    let axis = normalized as usize;
    Ok((Layout::new(shape, axis)?, axis))
}

/// `shape` without dimension `axis`.
pub(crate) fn without_axis(shape: &[usize], axis: usize) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != axis)
        .map(|(_, &d)| d)
        .collect()
}

/// A `ValueError` unless `got == want`.
pub(crate) fn check_shape(what: &str, got: &[usize], want: &[usize], of: &str) -> PyResult<()> {
    if got == want {
        Ok(())
    } else {
        Err(XentError::Shape(format!(
            "{what} has shape {} but {of} {}",
            format_index(got),
            format_index(want)
        ))
        .into())
    }
}

/// A writable output for an input of shape `shape` and dtype `T`.
pub(crate) enum Output<'py, T: Element> {
    /// The output is the input itself.
    InPlace(PyReadwriteArrayDyn<'py, T>),
    /// A separate array.
    Separate(PyReadwriteArrayDyn<'py, T>),
}

/// Checks a caller's output buffer (`out=`, `grad_out=`): dtype `T` in native byte order
/// (`TypeError`), the input's shape, C-contiguous, aligned, writable, and either the input
/// itself or not overlapping it (`ValueError`). Unlike an input, an output that is none of
/// these cannot be converted: it is written in place.
pub(crate) fn output<'py, T: Dtype>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    input: &Bound<'py, PyArrayDyn<T>>,
) -> PyResult<(Bound<'py, PyArrayDyn<T>>, bool)> {
    let out = typed::<T>(obj, what).map_err(|e| non_native_output(obj, what).unwrap_or(e))?;
    check_shape(what, out.shape(), input.shape(), "the input has shape")?;
    if !out.is_c_contiguous() {
        return Err(XentError::Value(format!("{what} must be C-contiguous")).into());
    }
    if !out.is_aligned() {
        return Err(XentError::Value(format!(
            "{what} must be aligned (its data address a multiple of {} bytes): an output is \
             written in place, so it cannot be converted; pass an aligned array, e.g. \
             np.empty_like(input)",
            std::mem::align_of::<T>()
        ))
        .into());
    }
    if !obj
        .getattr("flags")?
        .getattr("writeable")?
        .extract::<bool>()?
    {
        return Err(XentError::Value(format!("{what} must be writable")).into());
    }
    let bytes = std::mem::size_of::<T>() * input.len();
    let (a, b) = (input.data() as usize, out.data() as usize);
    let same = a == b;
    if !same && bytes > 0 && a < b + bytes && b < a + bytes {
        return Err(XentError::Value(format!(
            "{what} overlaps the input; pass the input itself to write in place, or a separate array"
        ))
        .into());
    }
    Ok((out, same))
}

/// The `TypeError` for an output array not in native byte order (the Python layer's words
/// too), or `None` when `obj` is something else.
#[cold]
fn non_native_output(obj: &Bound<'_, PyAny>, what: &str) -> Option<PyErr> {
    let dtype = obj.cast::<PyUntypedArray>().ok()?.dtype();
    (dtype.is_native_byteorder() == Some(false)).then(|| {
        XentError::Type(format!(
            "{what} must be in native byte order, got dtype {dtype}: an output is written in \
             place, so it cannot be converted; pass a native array, e.g. \
             np.empty({what}.shape, {what}.dtype.newbyteorder('='))"
        ))
        .into()
    })
}

/// Takes the write borrow of an output checked by [`output`].
pub(crate) fn borrow_output<'py, T: Element>(
    out: &Bound<'py, PyArrayDyn<T>>,
    in_place: bool,
    what: &str,
) -> PyResult<Output<'py, T>> {
    // rust-numpy refuses the write borrow when the array shares memory with one borrowed
    // for reading: another argument, which this call would overwrite.
    let rw = out.try_readwrite().map_err(|_| {
        XentError::Value(format!(
            "{what} overlaps another argument (a target, weight or grad_output array) that \
             this call reads; pass a separate array"
        ))
    })?;
    Ok(if in_place {
        Output::InPlace(rw)
    } else {
        Output::Separate(rw)
    })
}

/// Class-index targets of any NumPy integer dtype.
pub(crate) enum TargetArray<'py> {
    I8(PyReadonlyArrayDyn<'py, i8>),
    I16(PyReadonlyArrayDyn<'py, i16>),
    I32(PyReadonlyArrayDyn<'py, i32>),
    I64(PyReadonlyArrayDyn<'py, i64>),
    U8(PyReadonlyArrayDyn<'py, u8>),
    U16(PyReadonlyArrayDyn<'py, u16>),
    U32(PyReadonlyArrayDyn<'py, u32>),
    U64(PyReadonlyArrayDyn<'py, u64>),
}

macro_rules! try_targets {
    ($obj:expr, $($variant:ident $t:ty),*) => {
        $(
            if let Ok(a) = $obj.cast::<PyArrayDyn<$t>>() {
                return Ok(Some(TargetArray::$variant(readonly(a, "target")?)));
            }
        )*
    };
}

impl<'py> TargetArray<'py> {
    /// `obj` as integer targets, or `None` when its dtype is not an integer.
    pub(crate) fn extract(obj: &Bound<'py, PyAny>) -> PyResult<Option<Self>> {
        try_targets!(obj, I8 i8, I16 i16, I32 i32, I64 i64, U8 u8, U16 u16, U32 u32, U64 u64);
        Ok(None)
    }

    /// The target's shape.
    pub(crate) fn shape(&self) -> &[usize] {
        match self {
            TargetArray::I8(a) => a.shape(),
            TargetArray::I16(a) => a.shape(),
            TargetArray::I32(a) => a.shape(),
            TargetArray::I64(a) => a.shape(),
            TargetArray::U8(a) => a.shape(),
            TargetArray::U16(a) => a.shape(),
            TargetArray::U32(a) => a.shape(),
            TargetArray::U64(a) => a.shape(),
        }
    }

    /// The targets as the kernels read them.
    pub(crate) fn targets(&self) -> PyResult<Targets<'_>> {
        Ok(match self {
            TargetArray::I8(a) => Targets::I8(slice(a)?),
            TargetArray::I16(a) => Targets::I16(slice(a)?),
            TargetArray::I32(a) => Targets::I32(slice(a)?),
            TargetArray::I64(a) => Targets::I64(slice(a)?),
            TargetArray::U8(a) => Targets::U8(slice(a)?),
            TargetArray::U16(a) => Targets::U16(slice(a)?),
            TargetArray::U32(a) => Targets::U32(slice(a)?),
            TargetArray::U64(a) => Targets::U64(slice(a)?),
        })
    }
}
