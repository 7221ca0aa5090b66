//! Bindings for the losses that run the core's kernels in pieces from Python: the `mean`
//! denominator of a hard-target cross entropy, known (and its targets checked) before the
//! first piece runs.

use numpy::PyUntypedArrayMethods;
use pyo3::prelude::*;

use crate::error::XentError;
use crate::float::Float;
use crate::kernels::cross_entropy as ce;
use crate::py::arrays::{
    Dtype, FloatArray, TargetArray, check_shape, dtype_name, float_array, readonly, slice, typed,
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
