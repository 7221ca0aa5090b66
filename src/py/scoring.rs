//! Binding of the log-loss scoring pass.

use numpy::{PyArray1, PyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::error::XentError;
use crate::float::Float;
use crate::kernels::log_loss::{Probabilities, log_loss as score};
use crate::py::arrays::{
    Dtype, FloatArray, TargetArray, dtype_name, float_array, readonly, slice, typed,
};
use crate::py::gil::detached;

/// What one log-loss pass found (`xent_rs._core.LogLossSummary`).
#[pyclass(frozen, module = "xent_rs._core", name = "LogLossSummary")]
pub(crate) struct Summary {
    /// `Σ sw · -ln(clip(p[y]))` over the rows whose label is in range.
    #[pyo3(get)]
    loss_sum: f64,
    /// `Σ sw` over all rows.
    #[pyo3(get)]
    weight_sum: f64,
    /// Whether some probability lies outside `[0, 1]` or is NaN.
    #[pyo3(get)]
    out_of_range: bool,
    /// Whether every row sums to 1 within the tolerance.
    #[pyo3(get)]
    normalized: bool,
    /// Whether every label lies in `[0, classes)`.
    #[pyo3(get)]
    labels_in_range: bool,
    /// For each class, whether some label names it (a bool array).
    #[pyo3(get)]
    seen: Py<PyAny>,
}

/// `log_loss(proba, labels, sample_weight, eps, sum_rtol)`: one pass over 2-D probabilities
/// (or 1-D positive-class probabilities) and integer labels, summarised in a
/// [`Summary`].
#[pyfunction]
pub(crate) fn log_loss<'py>(
    py: Python<'py>,
    proba: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    sample_weight: Option<&Bound<'py, PyAny>>,
    eps: f64,
    sum_rtol: f64,
) -> PyResult<Summary> {
    match float_array(proba, "y_proba")? {
        FloatArray::F32(p) => typed_log_loss(py, &p, labels, sample_weight, eps, sum_rtol),
        FloatArray::F64(p) => typed_log_loss(py, &p, labels, sample_weight, eps, sum_rtol),
        // scikit-learn's log_loss has no bfloat16 (the Python layer computes it in float32).
        FloatArray::Bf16(_) => Err(XentError::Type(
            "y_proba must be a float32 or float64 array, got dtype bfloat16".into(),
        )
        .into()),
    }
}

fn typed_log_loss<'py, T: Float + Dtype>(
    py: Python<'py>,
    p: &Bound<'py, PyArrayDyn<T>>,
    labels: &Bound<'py, PyAny>,
    sample_weight: Option<&Bound<'py, PyAny>>,
    eps: f64,
    sum_rtol: f64,
) -> PyResult<Summary> {
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
    Ok(Summary {
        loss_sum: s.loss,
        weight_sum: s.weight,
        out_of_range: s.out_of_range,
        normalized: s.normalized,
        labels_in_range: s.labels_in_range,
        seen: PyArray1::from_vec(py, s.seen).into_any().unbind(),
    })
}
