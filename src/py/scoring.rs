//! Binding of the log-loss scoring pass.

use numpy::{Element, PyArray1, PyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::error::XentError;
use crate::float::Float;
use crate::kernels::log_loss::{Probabilities, log_loss as score};
use crate::py::arrays::{FloatArray, TargetArray, dtype_name, float_array, readonly, slice, typed};
use crate::py::gil::detached;

/// `log_loss(proba, labels, sample_weight, eps, sum_rtol)`: one pass over 2-D probabilities
/// (or 1-D positive-class probabilities) and integer labels. Returns
/// `(loss_sum, weight_sum, out_of_range, normalized, labels_in_range, seen)`.
#[pyfunction]
pub(crate) fn log_loss<'py>(
    py: Python<'py>,
    proba: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    sample_weight: Option<&Bound<'py, PyAny>>,
    eps: f64,
    sum_rtol: f64,
) -> PyResult<Bound<'py, PyTuple>> {
    match float_array(proba, "y_proba")? {
        FloatArray::F32(p) => typed_log_loss(py, &p, labels, sample_weight, eps, sum_rtol),
        FloatArray::F64(p) => typed_log_loss(py, &p, labels, sample_weight, eps, sum_rtol),
    }
}

fn typed_log_loss<'py, T: Float + Element>(
    py: Python<'py>,
    p: &Bound<'py, PyArrayDyn<T>>,
    labels: &Bound<'py, PyAny>,
    sample_weight: Option<&Bound<'py, PyAny>>,
    eps: f64,
    sum_rtol: f64,
) -> PyResult<Bound<'py, PyTuple>> {
    let Some(labels) = TargetArray::extract(labels)? else {
        return Err(XentError::Type(format!(
            "labels must be integers, got dtype {}",
            dtype_name(labels)
        ))
        .into());
    };
    let sw = sample_weight
        .map(|w| typed::<T>(w, "sample_weight"))
        .transpose()?;
    let sw = sw
        .as_ref()
        .map(|w| readonly(w, "sample_weight"))
        .transpose()?;
    let pr = readonly(p, "y_proba")?;
    let values = slice(&pr)?;
    let proba = match p.shape() {
        [_] => Probabilities::Positive(values),
        [_, c] => Probabilities::Classes(values, *c),
        other => {
            return Err(XentError::Shape(format!(
                "y_proba must be 1-D or 2-D, got {} dimensions",
                other.len()
            ))
            .into());
        }
    };
    let targets = labels.targets()?;
    let sw = sw.as_ref().map(slice).transpose()?;
    let s = detached(py, values.len(), || {
        score(proba, targets, sw, eps, sum_rtol)
    })?;
    let seen = PyArray1::from_vec(py, s.seen);
    (
        s.loss,
        s.weight,
        s.out_of_range,
        s.normalized,
        s.labels_in_range,
        seen,
    )
        .into_pyobject(py)
}
