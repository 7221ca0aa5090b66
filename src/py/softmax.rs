//! Bindings of the softmax family.

use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::error::XentError;
use crate::float::Bf16;
use crate::kernels::{Io, Layout, softmax as k};
use crate::py::arrays::{
    Axis, Dtype, FloatArray, Output, borrow_output, check_shape, float_array, layout, output,
    readonly, slice, slice_mut, typed, uninit, without_axis,
};
use crate::py::gil::detached;

type Normalizer<T> = fn(Io<'_, T>, Layout) -> Result<(), XentError>;

/// `log_softmax(x, axis, out)`: a new array, or `out` filled.
#[pyfunction]
#[pyo3(signature = (x, axis, out=None))]
pub(crate) fn log_softmax<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    axis: Axis,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    match float_array(x, "input")? {
        FloatArray::F32(a) => normalize(py, &a, axis, out, k::log_softmax::<f32>),
        FloatArray::F64(a) => normalize(py, &a, axis, out, k::log_softmax::<f64>),
        FloatArray::Bf16(a) => normalize(py, &a, axis, out, k::log_softmax::<Bf16>),
    }
}

/// `softmax(x, axis, out)`: a new array, or `out` filled.
#[pyfunction]
#[pyo3(signature = (x, axis, out=None))]
pub(crate) fn softmax<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    axis: Axis,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    match float_array(x, "input")? {
        FloatArray::F32(a) => normalize(py, &a, axis, out, k::softmax::<f32>),
        FloatArray::F64(a) => normalize(py, &a, axis, out, k::softmax::<f64>),
        FloatArray::Bf16(a) => normalize(py, &a, axis, out, k::softmax::<Bf16>),
    }
}

fn normalize<'py, T: Dtype>(
    py: Python<'py>,
    x: &Bound<'py, PyArrayDyn<T>>,
    axis: Axis,
    out: Option<&Bound<'py, PyAny>>,
    kernel: Normalizer<T>,
) -> PyResult<Bound<'py, PyAny>> {
    let shape = x.shape().to_vec();
    let (layout, _) = layout(&shape, axis)?;
    let (dest, in_place) = match out {
        Some(o) => output(o, "out", x)?,
        None => (uninit::<T>(py, &shape)?, false),
    };
    match borrow_output(&dest, in_place, "out")? {
        Output::InPlace(mut rw) => {
            let buf = slice_mut(&mut rw)?;
            detached(py, layout.len(), || kernel(Io::InPlace(buf), layout))?;
        }
        Output::Separate(mut rw) => {
            let xr = readonly(x, "input")?;
            let input = slice(&xr)?;
            let out = slice_mut(&mut rw)?;
            detached(py, layout.len(), || {
                kernel(Io::ReadWrite { input, out }, layout)
            })?;
        }
    }
    Ok(dest.into_any())
}

/// `logsumexp(x, axis)`: an array of the input's shape without `axis`.
#[pyfunction]
pub(crate) fn logsumexp<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    axis: Axis,
) -> PyResult<Bound<'py, PyAny>> {
    fn typed_lse<'py, T: Dtype>(
        py: Python<'py>,
        x: &Bound<'py, PyArrayDyn<T>>,
        axis: Axis,
    ) -> PyResult<Bound<'py, PyAny>> {
        let shape = x.shape().to_vec();
        let (layout, axis) = layout(&shape, axis)?;
        let dest = uninit::<T>(py, &without_axis(&shape, axis))?;
        {
            let xr = readonly(x, "input")?;
            let input = slice(&xr)?;
            let mut rw = dest.readwrite();
            let out = slice_mut(&mut rw)?;
            detached(py, layout.len(), || k::logsumexp(input, layout, out))?;
        }
        Ok(dest.into_any())
    }
    match float_array(x, "input")? {
        FloatArray::F32(a) => typed_lse(py, &a, axis),
        FloatArray::F64(a) => typed_lse(py, &a, axis),
        FloatArray::Bf16(a) => typed_lse(py, &a, axis),
    }
}

type Backward<T> = fn(&[T], &[T], Layout, &mut [T]) -> Result<(), XentError>;

/// `log_softmax_backward(grad_output, output, axis)`.
#[pyfunction]
pub(crate) fn log_softmax_backward<'py>(
    py: Python<'py>,
    grad_output: &Bound<'py, PyAny>,
    output: &Bound<'py, PyAny>,
    axis: Axis,
) -> PyResult<Bound<'py, PyAny>> {
    match float_array(output, "output")? {
        FloatArray::F32(y) => backward(py, grad_output, &y, axis, k::log_softmax_backward::<f32>),
        FloatArray::F64(y) => backward(py, grad_output, &y, axis, k::log_softmax_backward::<f64>),
        FloatArray::Bf16(y) => backward(py, grad_output, &y, axis, k::log_softmax_backward::<Bf16>),
    }
}

/// `softmax_backward(grad_output, output, axis)`.
#[pyfunction]
pub(crate) fn softmax_backward<'py>(
    py: Python<'py>,
    grad_output: &Bound<'py, PyAny>,
    output: &Bound<'py, PyAny>,
    axis: Axis,
) -> PyResult<Bound<'py, PyAny>> {
    match float_array(output, "output")? {
        FloatArray::F32(y) => backward(py, grad_output, &y, axis, k::softmax_backward::<f32>),
        FloatArray::F64(y) => backward(py, grad_output, &y, axis, k::softmax_backward::<f64>),
        FloatArray::Bf16(y) => backward(py, grad_output, &y, axis, k::softmax_backward::<Bf16>),
    }
}

fn backward<'py, T: Dtype>(
    py: Python<'py>,
    grad_output: &Bound<'py, PyAny>,
    y: &Bound<'py, PyArrayDyn<T>>,
    axis: Axis,
    kernel: Backward<T>,
) -> PyResult<Bound<'py, PyAny>> {
    let shape = y.shape().to_vec();
    let (layout, _) = layout(&shape, axis)?;
    let g = typed::<T>(grad_output, "grad_output")?;
    check_shape("grad_output", g.shape(), &shape, "output has shape")?;
    let dest = uninit::<T>(py, &shape)?;
    {
        let (gr, yr) = (readonly(&g, "grad_output")?, readonly(y, "output")?);
        let (gs, ys) = (slice(&gr)?, slice(&yr)?);
        let mut rw = dest.readwrite();
        let out = slice_mut(&mut rw)?;
        detached(py, layout.len(), || kernel(gs, ys, layout, out))?;
    }
    Ok(dest.into_any())
}
