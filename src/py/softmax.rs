//! Bindings of the softmax family.

use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::error::XentError;
use crate::kernels::{Io, Layout, softmax as k};
use crate::py::arrays::{
    Axis, Dtype, Output, borrow_output, check_shape, float_array, layout, output, readonly, slice,
    slice_mut, typed, uninit, with_dtype, without_axis,
};
use crate::py::gil::detached;

type Normalizer<T> = fn(Io<'_, T>, Layout) -> Result<(), XentError>;

/// `softmax(x, axis, out, log)`: the softmax of `x` along `axis` (its logarithm, computed as
/// such, with `log`): a new array, or `out` filled.
#[pyfunction]
pub(crate) fn softmax<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    axis: Axis,
    out: Option<&Bound<'py, PyAny>>,
    log: bool,
) -> PyResult<Bound<'py, PyAny>> {
    with_dtype!(float_array(x, "input")?, a => normalize(py, &a, axis, out, log))
}

fn normalize<'py, T: Dtype>(
    py: Python<'py>,
    x: &Bound<'py, PyArrayDyn<T>>,
    axis: Axis,
    out: Option<&Bound<'py, PyAny>>,
    log: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let kernel: Normalizer<T> = if log { k::log_softmax } else { k::softmax };
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
    with_dtype!(float_array(x, "input")?, a => typed_lse(py, &a, axis))
}

type Backward<T> = fn(&[T], &[T], Layout, &mut [T]) -> Result<(), XentError>;

/// `softmax_backward(grad_output, output, axis, log)`: the vector-Jacobian product of
/// `softmax` (of `log_softmax` with `log`) at its `output`.
#[pyfunction]
pub(crate) fn softmax_backward<'py>(
    py: Python<'py>,
    grad_output: &Bound<'py, PyAny>,
    output: &Bound<'py, PyAny>,
    axis: Axis,
    log: bool,
) -> PyResult<Bound<'py, PyAny>> {
    with_dtype!(float_array(output, "output")?, y => backward(py, grad_output, &y, axis, log))
}

fn backward<'py, T: Dtype>(
    py: Python<'py>,
    grad_output: &Bound<'py, PyAny>,
    y: &Bound<'py, PyArrayDyn<T>>,
    axis: Axis,
    log: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let (log_vjp, vjp) = (k::log_softmax_backward, k::softmax_backward);
    let kernel: Backward<T> = if log { log_vjp } else { vjp };
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
