//! Bindings for the losses that run the core's kernels in pieces from Python: the `mean`
//! denominator of a hard-target cross entropy, known (and its targets checked) before the
//! first piece runs, and the matrix products of `linear_cross_entropy`'s chunks.

use numpy::ndarray::ArrayViewD;
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::error::XentError;
use crate::float::Float;
use crate::kernels::cross_entropy as ce;
use crate::kernels::linear::{self, Dims, Gemm, Order};
use crate::py::arrays::{
    Dtype, FloatArray, TargetArray, check_shape, dtype_name, float_array, readonly,
    readonly_any_layout, slice, typed,
};
use crate::py::gil::detached;
use crate::py::losses::ignore_index_arg;

/// `cross_entropy_denominator(target, classes, weight, sample_weight, ignore_index)`: checks
/// integer class indices against `classes` as `cross_entropy` does (the same `IndexError`,
/// naming value and position) and returns the `mean` reduction's denominator, `Σ w[y] sw`
/// over the counted samples, exactly as a `cross_entropy` call over all of them computes it.
///
/// `weight` (`(classes,)`) and `sample_weight` (the target's shape) are float32 or float64
/// arrays of one dtype; their values enter the sum as that dtype holds them.
#[pyfunction]
#[pyo3(signature = (target, classes, weight, sample_weight, ignore_index))]
pub(crate) fn cross_entropy_denominator(
    py: Python<'_>,
    target: &Bound<'_, PyAny>,
    classes: usize,
    weight: Option<&Bound<'_, PyAny>>,
    sample_weight: Option<&Bound<'_, PyAny>>,
    ignore_index: &Bound<'_, PyAny>,
) -> PyResult<f64> {
    let ignore_index = ignore_index_arg(ignore_index)?;
    let Some(targets) = TargetArray::extract(target)? else {
        return Err(XentError::Type(format!(
            "target must hold integer class indices, got dtype {}",
            dtype_name(target)
        ))
        .into());
    };
    // The weights' dtype decides the sum's terms; without weights every term is 1.
    match weight
        .or(sample_weight)
        .map(|w| float_array(w, "weight"))
        .transpose()?
    {
        None | Some(FloatArray::F64(_)) => {
            denominator::<f64>(py, &targets, classes, weight, sample_weight, ignore_index)
        }
        Some(FloatArray::F32(_)) => {
            denominator::<f32>(py, &targets, classes, weight, sample_weight, ignore_index)
        }
        // The Python layer hands over the weights of half-precision inputs in float32.
        Some(FloatArray::Bf16(_)) => Err(XentError::Type(
            "weight must be float32 or float64 here, got bfloat16".into(),
        )
        .into()),
    }
}

/// [`cross_entropy_denominator`] with weights of dtype `T`.
fn denominator<T: Dtype + Float>(
    py: Python<'_>,
    targets: &TargetArray<'_>,
    classes: usize,
    weight: Option<&Bound<'_, PyAny>>,
    sample_weight: Option<&Bound<'_, PyAny>>,
    ignore_index: i64,
) -> PyResult<f64> {
    let weight = weight.map(|w| typed::<T>(w, "weight")).transpose()?;
    let sample_weight = sample_weight
        .map(|w| typed::<T>(w, "sample_weight"))
        .transpose()?;
    let shape = targets.shape().to_vec();
    if let Some(w) = &weight {
        check_shape("weight", w.shape(), &[classes], "one value per class needs")?;
    }
    if let Some(sw) = &sample_weight {
        check_shape(
            "sample_weight",
            sw.shape(),
            &shape,
            "one value per sample needs",
        )?;
    }
    let w = weight.as_ref().map(|w| readonly(w, "weight")).transpose()?;
    let sw = sample_weight
        .as_ref()
        .map(|w| readonly(w, "sample_weight"))
        .transpose()?;
    let (w, sw) = (
        w.as_ref().map(slice).transpose()?,
        sw.as_ref().map(slice).transpose()?,
    );
    let t = targets.targets()?;
    detached(py, t.len(), || {
        ce::hard_target_denominator(t, &shape, classes, w, sw, ignore_index)
    })
}

/// `matmul(a, b, out, accumulate)`: `out = a @ b`, or `out += a @ b` with `accumulate`, for
/// 2-D float32 or float64 arrays of one dtype, each C- or Fortran-contiguous (a transposed
/// view is one), `out` overlapping neither `a` nor `b`. Runs on the private pool with the
/// GIL released; the bits are the same for any thread count.
#[pyfunction]
#[pyo3(signature = (a, b, out, accumulate))]
pub(crate) fn matmul(
    py: Python<'_>,
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    accumulate: bool,
) -> PyResult<()> {
    match float_array(a, "a")? {
        FloatArray::F32(a) => typed_matmul(py, &a, b, out, accumulate),
        FloatArray::F64(a) => typed_matmul(py, &a, b, out, accumulate),
        // The Python layer computes half-precision heads in float32.
        FloatArray::Bf16(_) => {
            Err(XentError::Type("a must be float32 or float64 here, got bfloat16".into()).into())
        }
    }
}

/// [`matmul`] on arrays of `T`.
fn typed_matmul<'py, T: Dtype + Gemm>(
    py: Python<'py>,
    a: &Bound<'py, PyArrayDyn<T>>,
    b: &Bound<'py, PyAny>,
    out: &Bound<'py, PyAny>,
    accumulate: bool,
) -> PyResult<()> {
    let (b, out) = (typed::<T>(b, "b")?, typed::<T>(out, "out")?);
    // Either order is accepted: `matrix` checks the layout.
    let (ar, br) = (readonly_any_layout(a, "a")?, readonly_any_layout(&b, "b")?);
    // rust-numpy refuses the write borrow when `out` shares memory with `a` or `b`.
    let mut or = out.try_readwrite().map_err(|_| {
        XentError::Value("out overlaps a or b, which this call reads; pass a separate array".into())
    })?;
    let (a, da) = matrix(ar.as_array(), "a")?;
    let (b, db) = matrix(br.as_array(), "b")?;
    let out = or.as_array_mut();
    let dc = dims(out.shape(), out.is_standard_layout(), "out")?;
    let c = match dc.order {
        Order::Rows => out.into_slice(),
        Order::Columns => out.reversed_axes().into_slice(),
    }
    .ok_or_else(|| contiguous("out"))?;
    let work = da.rows.saturating_mul(da.cols).saturating_mul(db.cols);
    detached(py, work, || {
        linear::matmul((a, da), (b, db), (c, dc), accumulate)
    })
}

/// A read view as a contiguous matrix: its values in memory order and its [`Dims`].
fn matrix<'a, T>(view: ArrayViewD<'a, T>, what: &str) -> PyResult<(&'a [T], Dims)> {
    let d = dims(view.shape(), view.is_standard_layout(), what)?;
    let values = match d.order {
        Order::Rows => view.to_slice(),
        Order::Columns => view.reversed_axes().to_slice(),
    };
    Ok((values.ok_or_else(|| contiguous(what))?, d))
}

/// The error for an operand that is neither C- nor Fortran-contiguous.
fn contiguous(what: &str) -> PyErr {
    XentError::Value(format!("{what} must be C- or Fortran-contiguous")).into()
}

/// The [`Dims`] of a 2-D array of `shape`: C order when `c_order`, else Fortran order (which
/// the slice of its reversed axes then confirms, or refutes).
fn dims(shape: &[usize], c_order: bool, what: &str) -> PyResult<Dims> {
    let &[rows, cols] = shape else {
        return Err(XentError::Shape(format!(
            "{what} must be 2-D, got {} dimensions",
            shape.len()
        ))
        .into());
    };
    let order = if c_order { Order::Rows } else { Order::Columns };
    Ok(Dims { rows, cols, order })
}
