//! Bindings of the losses: cross entropy, NLL, the multiclass focal loss, binary cross entropy
//! (on probabilities and on logits), the binary focal loss on logits and the KL divergence.
//! Each returns the loss (a Python float when reduced, an array for `none`) or, with
//! `return_grad`, `(loss, grad)`. With `partial=return_losses` (a bool; `None` by default) the
//! same pass serves the streaming accumulators: it returns a [`PartialResult`] (the loss sum,
//! the `mean` denominator, the number of loss terms and, with `partial=True`, the per-sample
//! losses), never reduced.

use std::borrow::Cow;

use numpy::{
    Element, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods, npyffi,
};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyTuple};

use crate::error::{XentError, format_index};
use crate::kernels::binary::{self, BinaryOptions, Broadcast, FocalOptions};
use crate::kernels::cross_entropy::{self as ce, ClassOptions};
use crate::kernels::kl_div::{self as kl, KlOptions};
use crate::kernels::{GradOutput, Io, Layout, Partial, Reduction};
use crate::py::arrays::{
    Axis, Dtype, FloatArray, Output, TargetArray, borrow_output, check_shape, dtype_name,
    float_array, float_name, layout, output, readonly, slice, slice_mut, typed, uninit, widened,
    without_axis,
};
use crate::py::gil::detached;

/// Which multiclass loss.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClassLoss {
    CrossEntropy,
    Nll,
    /// Focal loss, with its `gamma` in [`ClassArgs::gamma`].
    Focal,
}

/// `cross_entropy(...)`; see the Python docstring.
#[pyfunction]
#[pyo3(signature = (
    input, target, axis, weight, sample_weight, ignore_index, reduction, label_smoothing,
    return_grad, grad_output, grad_out, z_loss=0.0, softcap=None, partial=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn cross_entropy<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    axis: Axis,
    weight: Option<&Bound<'py, PyAny>>,
    sample_weight: Option<&Bound<'py, PyAny>>,
    ignore_index: &Bound<'py, PyAny>,
    reduction: &str,
    label_smoothing: f64,
    return_grad: bool,
    grad_output: Option<&Bound<'py, PyAny>>,
    grad_out: Option<&Bound<'py, PyAny>>,
    z_loss: f64,
    softcap: Option<f64>,
    partial: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    let args = ClassArgs {
        target,
        axis,
        weight,
        sample_weight,
        ignore_index: ignore_index_arg(ignore_index)?,
        reduction: kernel_reduction(reduction, partial),
        label_smoothing,
        z_loss,
        softcap,
        gamma: 0.0,
        return_grad,
        grad_output,
        grad_out,
        loss: ClassLoss::CrossEntropy,
    };
    class_call(py, input, &args)?.finish(py, Reduction::parse(reduction)?, partial)
}

/// `nll_loss(...)`; see the Python docstring.
#[pyfunction]
#[pyo3(signature = (
    input, target, axis, weight, sample_weight, ignore_index, reduction, return_grad, grad_output, partial=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn nll_loss<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    axis: Axis,
    weight: Option<&Bound<'py, PyAny>>,
    sample_weight: Option<&Bound<'py, PyAny>>,
    ignore_index: &Bound<'py, PyAny>,
    reduction: &str,
    return_grad: bool,
    grad_output: Option<&Bound<'py, PyAny>>,
    partial: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    let args = ClassArgs {
        target,
        axis,
        weight,
        sample_weight,
        ignore_index: ignore_index_arg(ignore_index)?,
        reduction: kernel_reduction(reduction, partial),
        label_smoothing: 0.0,
        z_loss: 0.0,
        softcap: None,
        gamma: 0.0,
        return_grad,
        grad_output,
        grad_out: None,
        loss: ClassLoss::Nll,
    };
    class_call(py, input, &args)?.finish(py, Reduction::parse(reduction)?, partial)
}

/// `focal_loss(...)`: the multiclass (softmax) focal loss of hard targets; see
/// [`ce::focal_loss`]. `gamma = 0` is `cross_entropy` bit for bit.
#[pyfunction]
#[pyo3(signature = (
    input, target, axis, gamma, weight, sample_weight, ignore_index, reduction, return_grad,
    grad_output, grad_out, partial=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn focal_loss<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    axis: Axis,
    gamma: f64,
    weight: Option<&Bound<'py, PyAny>>,
    sample_weight: Option<&Bound<'py, PyAny>>,
    ignore_index: &Bound<'py, PyAny>,
    reduction: &str,
    return_grad: bool,
    grad_output: Option<&Bound<'py, PyAny>>,
    grad_out: Option<&Bound<'py, PyAny>>,
    partial: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    let args = ClassArgs {
        target,
        axis,
        weight,
        sample_weight,
        ignore_index: ignore_index_arg(ignore_index)?,
        reduction: kernel_reduction(reduction, partial),
        label_smoothing: 0.0,
        z_loss: 0.0,
        softcap: None,
        gamma,
        return_grad,
        grad_output,
        grad_out,
        loss: ClassLoss::Focal,
    };
    class_call(py, input, &args)?.finish(py, Reduction::parse(reduction)?, partial)
}

/// What a call with `partial=return_losses` returns: one chunk's contribution to a streaming
/// loss.
#[pyclass(frozen, module = "xent_rs._core", name = "Partial")]
pub(crate) struct PartialResult {
    /// The sum of the per-sample losses (with their weights), in float64.
    #[pyo3(get)]
    loss_sum: f64,
    /// What the `mean` reduction divides by (see the one-shot functions).
    #[pyo3(get)]
    denominator: f64,
    /// The number of loss terms: samples (ignored ones included) or elements.
    #[pyo3(get)]
    count: usize,
    /// The per-sample losses, when asked for.
    #[pyo3(get)]
    losses: Option<Py<PyAny>>,
}

#[pymethods]
impl PartialResult {
    fn __repr__(&self) -> String {
        format!(
            "Partial(loss_sum={:?}, denominator={:?}, count={}, losses={})",
            self.loss_sum,
            self.denominator,
            self.count,
            if self.losses.is_some() { "..." } else { "None" }
        )
    }
}

/// A loss call's outputs, before they become the Python result.
struct Scored<'py> {
    partial: Partial,
    /// The number of loss terms (the size of the `none` output).
    count: usize,
    losses: Option<Bound<'py, PyAny>>,
    grad: Option<Bound<'py, PyAny>>,
    /// The input dtype's [`Dtype::reduced`].
    reduced: fn(f64) -> f64,
}

impl<'py> Scored<'py> {
    /// The call's result. One-shot (`partial` is `None`): the reduced loss (or the per-sample
    /// losses for `none`), with the gradient when one was asked for. Streaming (`partial` is
    /// `Some(return_losses)`): the [`PartialResult`], which carries no gradient.
    fn finish(
        self,
        py: Python<'py>,
        reduction: Reduction,
        partial: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if partial.is_none() {
            let loss = match self.losses {
                Some(l) => l,
                None => PyFloat::new(py, (self.reduced)(self.partial.reduce(reduction))).into_any(),
            };
            return result(py, loss, self.grad);
        }
        if self.grad.is_some() {
            return Err(XentError::Value(
                "a partial result carries no gradient: return_grad must be False".into(),
            )
            .into());
        }
        let partial = PartialResult {
            loss_sum: self.partial.loss_sum,
            denominator: self.partial.denominator,
            count: self.count,
            losses: self.losses.map(Bound::unbind),
        };
        Ok(Bound::new(py, partial)?.into_any())
    }
}

/// The reduction the kernel runs with: the caller's for a one-shot call; for a partial one
/// (`Some(return_losses)`), `none` when the per-sample losses are wanted (the kernel stores
/// them and still sums them), else `sum`.
fn kernel_reduction(reduction: &str, partial: Option<bool>) -> &str {
    match partial {
        None => reduction,
        Some(true) => "none",
        Some(false) => "sum",
    }
}

/// A multiclass loss call, dispatched on the input's dtype.
fn class_call<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    args: &ClassArgs<'_, 'py>,
) -> PyResult<Scored<'py>> {
    match float_array(input, "input")? {
        FloatArray::F32(x) => class_loss(py, &x, args),
        FloatArray::F64(x) => class_loss(py, &x, args),
        FloatArray::Bf16(x) => class_loss(py, &x, args),
    }
}

/// `ignore_index` as an `i64`. A Python integer beyond that range is a `ValueError` that names
/// the argument, as torch's is (PyO3's own conversion error is an `OverflowError` naming
/// nothing). Anything that is not an integer (`__index__`: NumPy integers are) is a
/// `TypeError` naming the argument and the type, as torch's is; so is a bool (an `int` to
/// Python, but never a class index), Python's or NumPy's (`np.bool_` has an `__index__`
/// before NumPy 2, deprecated).
pub(crate) fn ignore_index_arg(value: &Bound<'_, PyAny>) -> PyResult<i64> {
    let not_an_integer = || -> PyErr {
        XentError::Type(format!(
            "ignore_index must be an integer, got {} {}",
            value
                .get_type()
                .name()
                .map_or_else(|_| "?".to_owned(), |n| n.to_string()),
            value
                .repr()
                .map_or_else(|_| "?".to_owned(), |r| r.to_string()),
        ))
        .into()
    };
    if value.is_instance_of::<PyBool>() || is_numpy_bool(value) {
        return Err(not_an_integer());
    }
    value.extract::<i64>().map_err(|e| {
        if e.is_instance_of::<PyOverflowError>(value.py()) {
            PyValueError::new_err(format!(
                "ignore_index must lie in [-2**63, 2**63) (class indices are 64-bit), got {value}"
            ))
        } else if e.is_instance_of::<PyTypeError>(value.py()) {
            not_an_integer()
        } else {
            e
        }
    })
}

/// Whether `value` is a NumPy bool scalar (`np.bool_`).
fn is_numpy_bool(value: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `get_type_object` reads NumPy's C API table, which rust-numpy imports on first
    // use (with the GIL held, as here); the type object it hands back is a static of NumPy's.
    let bool_type =
        unsafe { npyffi::get_type_object(value.py(), npyffi::NpyTypes::PyBoolArrType_Type) };
    // SAFETY: both pointers are live: `value` is borrowed for this call, `bool_type` is static.
    unsafe { pyo3::ffi::PyObject_TypeCheck(value.as_ptr(), bool_type) != 0 }
}

struct ClassArgs<'a, 'py> {
    target: &'a Bound<'py, PyAny>,
    axis: Axis,
    weight: Option<&'a Bound<'py, PyAny>>,
    sample_weight: Option<&'a Bound<'py, PyAny>>,
    ignore_index: i64,
    reduction: &'a str,
    label_smoothing: f64,
    z_loss: f64,
    softcap: Option<f64>,
    /// Focal loss's exponent (unused by the other losses).
    gamma: f64,
    return_grad: bool,
    grad_output: Option<&'a Bound<'py, PyAny>>,
    grad_out: Option<&'a Bound<'py, PyAny>>,
    loss: ClassLoss,
}

/// The target of a multiclass loss, once its kind is known.
enum Target<'py, T: Element> {
    Hard(TargetArray<'py>),
    Soft(PyReadonlyArrayDyn<'py, T>),
}

fn class_target<'py, T: Dtype>(
    target: &Bound<'py, PyAny>,
    shape: &[usize],
    sample_shape: &[usize],
    axis: usize,
    loss: ClassLoss,
) -> PyResult<Target<'py, T>> {
    let mismatch = |got: &[usize], want: &[usize], what: &str| -> PyErr {
        XentError::Shape(format!(
            "target has shape {} but {what} {} (input shape {}, class axis {axis})",
            format_index(got),
            format_index(want),
            format_index(shape)
        ))
        .into()
    };
    if let Some(hard) = TargetArray::extract(target)? {
        if hard.shape() != sample_shape {
            return Err(mismatch(
                hard.shape(),
                sample_shape,
                "class indices need shape",
            ));
        }
        return Ok(Target::Hard(hard));
    }
    let Ok(soft) = target.cast::<PyArrayDyn<T>>() else {
        return Err(XentError::Type(format!(
            "target must hold integer class indices or {} class probabilities, got dtype {}",
            float_name::<T>(),
            dtype_name(target)
        ))
        .into());
    };
    if soft.shape() == sample_shape {
        return Err(XentError::Type(format!(
            "target has the shape of class indices {} but a floating dtype ({}); \
             cast it to integers, e.g. target.astype(np.int64)",
            format_index(sample_shape),
            float_name::<T>()
        ))
        .into());
    }
    let hard_only = match loss {
        ClassLoss::CrossEntropy => None,
        ClassLoss::Nll => Some("nll_loss"),
        ClassLoss::Focal => Some("focal_loss"),
    };
    if let Some(name) = hard_only {
        return Err(XentError::Type(format!(
            "{name} needs integer class indices, got dtype {}",
            float_name::<T>()
        ))
        .into());
    }
    if soft.shape() != shape {
        return Err(mismatch(
            soft.shape(),
            shape,
            "class probabilities need the input's shape",
        ));
    }
    Ok(Target::Soft(readonly(soft, "target")?))
}

/// A per-class or per-sample weight array of dtype `T` and shape `want`.
fn weight_array<'py, T: Dtype>(
    obj: Option<&Bound<'py, PyAny>>,
    what: &str,
    want: &[usize],
    of: &str,
) -> PyResult<Option<PyReadonlyArrayDyn<'py, T>>> {
    let Some(obj) = obj else { return Ok(None) };
    let a = typed::<T>(obj, what)?;
    check_shape(what, a.shape(), want, of)?;
    Ok(Some(readonly(&a, what)?))
}

/// The upstream gradient: a float for reduced losses, an array of the loss's shape for
/// `none`.
enum Upstream<'py, T: Element> {
    Scalar(f64),
    Array(PyReadonlyArrayDyn<'py, T>),
}

/// The upstream gradient's values as the kernels read them.
enum UpstreamValues<'a, T: Clone> {
    Scalar(f64),
    /// Widened to the kernels' float where the input's dtype is narrower.
    Array(Cow<'a, [T]>),
}

impl<T: Dtype> Upstream<'_, T> {
    fn values(&self) -> PyResult<UpstreamValues<'_, T::Compute>> {
        Ok(match self {
            Upstream::Scalar(g) => UpstreamValues::Scalar(*g),
            Upstream::Array(a) => UpstreamValues::Array(widened(slice(a)?)),
        })
    }
}

impl<T: Clone> UpstreamValues<'_, T> {
    fn grad_output(&self) -> GradOutput<'_, T> {
        match self {
            UpstreamValues::Scalar(g) => GradOutput::Scalar(*g),
            UpstreamValues::Array(a) => GradOutput::PerSample(a),
        }
    }
}

fn upstream<'py, T: Dtype>(
    obj: Option<&Bound<'py, PyAny>>,
    reduction: Reduction,
    loss_shape: &[usize],
) -> PyResult<Upstream<'py, T>> {
    let Some(obj) = obj else {
        return Ok(Upstream::Scalar(1.0));
    };
    if obj.is_instance_of::<PyFloat>() {
        if reduction == Reduction::None && !loss_shape.is_empty() {
            return Err(XentError::Shape(format!(
                "grad_output must have the loss's shape {} for reduction \"none\", got a scalar",
                format_index(loss_shape)
            ))
            .into());
        }
        return Ok(Upstream::Scalar(obj.extract::<f64>()?));
    }
    let a = typed::<T>(obj, "grad_output")?;
    if reduction != Reduction::None {
        return Err(XentError::Shape(format!(
            "grad_output must be a scalar for a reduced loss, got shape {}",
            format_index(a.shape())
        ))
        .into());
    }
    check_shape("grad_output", a.shape(), loss_shape, "the loss has shape")?;
    Ok(Upstream::Array(readonly(&a, "grad_output")?))
}

/// Assembles the Python result: `loss` or `(loss, grad)`.
fn result<'py>(
    py: Python<'py>,
    loss: Bound<'py, PyAny>,
    grad: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    match grad {
        None => Ok(loss),
        Some(g) => Ok(PyTuple::new(py, [loss, g])?.into_any()),
    }
}

fn class_loss<'py, T: Dtype>(
    py: Python<'py>,
    x: &Bound<'py, PyArrayDyn<T>>,
    args: &ClassArgs<'_, 'py>,
) -> PyResult<Scored<'py>> {
    let shape = x.shape().to_vec();
    let (layout, axis) = layout(&shape, args.axis)?;
    let reduction = Reduction::parse(args.reduction)?;
    let sample_shape = without_axis(&shape, axis);
    let target = class_target::<T>(args.target, &shape, &sample_shape, axis, args.loss)?;
    if matches!(target, Target::Soft(_)) && args.ignore_index >= 0 {
        return Err(XentError::Value(format!(
            "ignore_index ({}) does not apply to soft (class probability) targets",
            args.ignore_index
        ))
        .into());
    }
    let classes = [layout.classes];
    let weight = weight_array::<T>(args.weight, "weight", &classes, "one value per class needs")?;
    let sample_weight = weight_array::<T>(
        args.sample_weight,
        "sample_weight",
        &sample_shape,
        "one value per sample needs",
    )?;
    if args.grad_out.is_some() && !args.return_grad {
        return Err(XentError::Value("grad_out is only used with return_grad=True".into()).into());
    }
    let upstream = upstream::<T>(args.grad_output, reduction, &sample_shape)?;

    let losses = (reduction == Reduction::None)
        .then(|| uninit::<T>(py, &sample_shape))
        .transpose()?;
    let (grad, in_place) = match (args.return_grad, args.grad_out) {
        (false, _) => (None, false),
        (true, Some(o)) => {
            let (g, same) = output(o, "grad_out", x)?;
            (Some(g), same)
        }
        (true, None) => (Some(uninit::<T>(py, &shape)?), false),
    };

    let partial = {
        let w = weight.as_ref().map(slice).transpose()?.map(widened);
        let sw = sample_weight.as_ref().map(slice).transpose()?.map(widened);
        let g = upstream.values()?;
        let opts = ClassOptions {
            weight: w.as_deref(),
            sample_weight: sw.as_deref(),
            ignore_index: args.ignore_index,
            reduction,
            label_smoothing: args.label_smoothing,
            grad_output: g.grad_output(),
            z_loss: args.z_loss,
            softcap: args.softcap,
        };
        let mut loss_rw = losses.as_ref().map(|l| l.readwrite());
        let loss_out = loss_rw.as_mut().map(slice_mut).transpose()?;
        let grad_borrow = grad
            .as_ref()
            .map(|g| borrow_output(g, in_place, "grad_out"))
            .transpose()?;
        let xr = if in_place {
            None
        } else {
            Some(readonly(x, "input")?)
        };
        let call = Call {
            layout,
            target: &target,
            opts: &opts,
            loss: args.loss,
            gamma: args.gamma,
        };
        match grad_borrow {
            None => {
                let input = slice(xr.as_ref().expect("read borrow taken when not in place"))?;
                call.run(py, Io::Read(input), loss_out)?
            }
            Some(Output::InPlace(mut rw)) => {
                call.run(py, Io::InPlace(slice_mut(&mut rw)?), loss_out)?
            }
            Some(Output::Separate(mut rw)) => {
                let input = slice(xr.as_ref().expect("read borrow taken when not in place"))?;
                call.run(
                    py,
                    Io::ReadWrite {
                        input,
                        out: slice_mut(&mut rw)?,
                    },
                    loss_out,
                )?
            }
        }
    };
    Ok(Scored {
        partial,
        count: sample_shape.iter().product(),
        losses: losses.map(Bound::into_any),
        grad: grad.map(Bound::into_any),
        reduced: T::reduced,
    })
}

/// One multiclass-loss kernel call, with everything extracted.
struct Call<'a, 'py, T: Dtype> {
    layout: Layout,
    target: &'a Target<'py, T>,
    opts: &'a ClassOptions<'a, T::Compute>,
    loss: ClassLoss,
    gamma: f64,
}

impl<T: Dtype> Call<'_, '_, T> {
    fn run(&self, py: Python<'_>, io: Io<'_, T>, losses: Option<&mut [T]>) -> PyResult<Partial> {
        let (layout, opts) = (self.layout, self.opts);
        match self.target {
            Target::Hard(t) => {
                let targets = t.targets()?;
                let shape = t.shape().to_vec();
                let (loss, gamma) = (self.loss, self.gamma);
                detached(py, layout.len(), || match loss {
                    ClassLoss::CrossEntropy => {
                        ce::cross_entropy(io, layout, targets, &shape, opts, losses)
                    }
                    ClassLoss::Nll => ce::nll_loss(io, layout, targets, &shape, opts, losses),
                    ClassLoss::Focal => {
                        ce::focal_loss(io, layout, targets, &shape, opts, gamma, losses)
                    }
                })
            }
            Target::Soft(t) => {
                let probs = slice(t)?;
                detached(py, layout.len(), || {
                    ce::cross_entropy_soft(io, layout, probs, opts, losses)
                })
            }
        }
    }
}

/// `binary_cross_entropy(...)`; `weight` is given as its distinct values and a repeat count
/// (see [`Broadcast`]).
#[pyfunction]
#[pyo3(signature = (input, target, weight, weight_repeat, reduction, return_grad, grad_output, partial=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn binary_cross_entropy<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    weight: Option<&Bound<'py, PyAny>>,
    weight_repeat: usize,
    reduction: &str,
    return_grad: bool,
    grad_output: Option<&Bound<'py, PyAny>>,
    partial: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    let args = BinaryArgs {
        target,
        weight: weight.map(|w| (w, weight_repeat)),
        pos_weight: None,
        reduction: kernel_reduction(reduction, partial),
        return_grad,
        grad_output,
        kind: BinaryKind::Probabilities,
    };
    binary_call(py, input, &args)?.finish(py, Reduction::parse(reduction)?, partial)
}

/// `binary_cross_entropy_with_logits(...)`; `weight` and `pos_weight` are given as their
/// distinct values and repeat counts (see [`Broadcast`]).
#[pyfunction]
#[pyo3(signature = (
    input, target, weight, weight_repeat, pos_weight, pos_weight_repeat, reduction, return_grad,
    grad_output, partial=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn binary_cross_entropy_with_logits<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    weight: Option<&Bound<'py, PyAny>>,
    weight_repeat: usize,
    pos_weight: Option<&Bound<'py, PyAny>>,
    pos_weight_repeat: usize,
    reduction: &str,
    return_grad: bool,
    grad_output: Option<&Bound<'py, PyAny>>,
    partial: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    let args = BinaryArgs {
        target,
        weight: weight.map(|w| (w, weight_repeat)),
        pos_weight: pos_weight.map(|w| (w, pos_weight_repeat)),
        reduction: kernel_reduction(reduction, partial),
        return_grad,
        grad_output,
        kind: BinaryKind::Logits,
    };
    binary_call(py, input, &args)?.finish(py, Reduction::parse(reduction)?, partial)
}

/// `binary_focal_loss_with_logits(...)`: torchvision's `sigmoid_focal_loss`; `alpha=None`
/// weights neither class; `weight` is given as its distinct values and a repeat count (see
/// [`Broadcast`]).
#[pyfunction]
#[pyo3(signature = (
    input, target, gamma, alpha, weight, weight_repeat, reduction, return_grad, grad_output, partial=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn binary_focal_loss_with_logits<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    gamma: f64,
    alpha: Option<f64>,
    weight: Option<&Bound<'py, PyAny>>,
    weight_repeat: usize,
    reduction: &str,
    return_grad: bool,
    grad_output: Option<&Bound<'py, PyAny>>,
    partial: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    let args = BinaryArgs {
        target,
        weight: weight.map(|w| (w, weight_repeat)),
        pos_weight: None,
        reduction: kernel_reduction(reduction, partial),
        return_grad,
        grad_output,
        kind: BinaryKind::Focal(FocalOptions { gamma, alpha }),
    };
    binary_call(py, input, &args)?.finish(py, Reduction::parse(reduction)?, partial)
}

/// A binary loss call, dispatched on the input's dtype.
fn binary_call<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    args: &BinaryArgs<'_, 'py>,
) -> PyResult<Scored<'py>> {
    match float_array(input, "input")? {
        FloatArray::F32(x) => binary_loss(py, &x, args),
        FloatArray::F64(x) => binary_loss(py, &x, args),
        FloatArray::Bf16(x) => binary_loss(py, &x, args),
    }
}

struct BinaryArgs<'a, 'py> {
    target: &'a Bound<'py, PyAny>,
    weight: Option<(&'a Bound<'py, PyAny>, usize)>,
    pos_weight: Option<(&'a Bound<'py, PyAny>, usize)>,
    reduction: &'a str,
    return_grad: bool,
    grad_output: Option<&'a Bound<'py, PyAny>>,
    kind: BinaryKind,
}

/// Which binary loss.
#[derive(Clone, Copy)]
enum BinaryKind {
    Probabilities,
    Logits,
    Focal(FocalOptions),
}

/// A broadcast operand's values as a 1-D array of dtype `T`.
fn broadcast_values<'py, T: Dtype>(
    operand: Option<(&Bound<'py, PyAny>, usize)>,
    what: &str,
) -> PyResult<Option<(PyReadonlyArrayDyn<'py, T>, usize)>> {
    let Some((obj, repeat)) = operand else {
        return Ok(None);
    };
    let a = typed::<T>(obj, what)?;
    if a.ndim() != 1 || a.len() == 0 || repeat == 0 {
        return Err(XentError::Shape(format!(
            "{what} values must be a non-empty 1-D array with a positive repeat count"
        ))
        .into());
    }
    Ok(Some((readonly(&a, what)?, repeat)))
}

/// A broadcast operand's values as the kernels' float, and its repeat count.
type WidenedBroadcast<'a, T> = Option<(Cow<'a, [T]>, usize)>;

/// An extracted broadcast operand's values as the kernels' float, and its repeat count.
fn broadcast_widened<'a, T: Dtype>(
    b: &'a Option<(PyReadonlyArrayDyn<'_, T>, usize)>,
) -> PyResult<WidenedBroadcast<'a, T::Compute>> {
    b.as_ref()
        .map(|(a, repeat)| Ok((widened(slice(a)?), *repeat)))
        .transpose()
}

/// The kernel's view of a widened broadcast operand.
fn as_broadcast<'a, T: Clone>(b: &'a WidenedBroadcast<'_, T>) -> Option<Broadcast<'a, T>> {
    b.as_ref().map(|(values, repeat)| Broadcast {
        values,
        repeat: *repeat,
    })
}

fn binary_loss<'py, T: Dtype>(
    py: Python<'py>,
    x: &Bound<'py, PyArrayDyn<T>>,
    args: &BinaryArgs<'_, 'py>,
) -> PyResult<Scored<'py>> {
    let shape = x.shape().to_vec();
    let reduction = Reduction::parse(args.reduction)?;
    let target = typed::<T>(args.target, "target")?;
    if target.shape() != shape.as_slice() {
        return Err(XentError::Shape(format!(
            "target size {} must be the same as input size {}",
            format_index(target.shape()),
            format_index(&shape)
        ))
        .into());
    }
    let weight = broadcast_values::<T>(args.weight, "weight")?;
    let pos_weight = broadcast_values::<T>(args.pos_weight, "pos_weight")?;
    let upstream = upstream::<T>(args.grad_output, reduction, &shape)?;
    let losses = (reduction == Reduction::None)
        .then(|| uninit::<T>(py, &shape))
        .transpose()?;
    let grad = args
        .return_grad
        .then(|| uninit::<T>(py, &shape))
        .transpose()?;
    let partial = {
        let (xr, tr) = (readonly(x, "input")?, readonly(&target, "target")?);
        let (input, target) = (slice(&xr)?, slice(&tr)?);
        let (w, pw) = (broadcast_widened(&weight)?, broadcast_widened(&pos_weight)?);
        let g = upstream.values()?;
        let opts = BinaryOptions {
            weight: as_broadcast(&w),
            pos_weight: as_broadcast(&pw),
            reduction,
            grad_output: g.grad_output(),
        };
        let mut loss_rw = losses.as_ref().map(|l| l.readwrite());
        let loss_out = loss_rw.as_mut().map(slice_mut).transpose()?;
        let mut grad_rw = grad.as_ref().map(|g| g.readwrite());
        let io = match grad_rw.as_mut() {
            None => Io::Read(input),
            Some(rw) => Io::ReadWrite {
                input,
                out: slice_mut(rw)?,
            },
        };
        let n = input.len();
        match args.kind {
            BinaryKind::Logits => detached(py, n, || {
                binary::binary_cross_entropy_with_logits(io, target, &opts, loss_out)
            })?,
            BinaryKind::Probabilities => detached(py, n, || {
                binary::binary_cross_entropy(io, target, &shape, &opts, loss_out)
            })?,
            BinaryKind::Focal(focal) => detached(py, n, || {
                binary::binary_focal_loss_with_logits(io, target, &focal, &opts, loss_out)
            })?,
        }
    };
    Ok(Scored {
        partial,
        count: shape.iter().product(),
        losses: losses.map(Bound::into_any),
        grad: grad.map(Bound::into_any),
        reduced: T::reduced,
    })
}

/// `kl_div(...)`: torch's `kl_div` of log-probabilities `input` from `target`
/// (log-probabilities with `log_target`); `reduction` is `"none"`, `"mean"` (over elements),
/// `"sum"` or `"batchmean"` (over `input.shape[0]`; a 0-d input is its own batch of one, as
/// torch's sum).
#[pyfunction]
#[pyo3(signature = (input, target, reduction, log_target, return_grad, grad_output, partial=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn kl_div<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    reduction: &str,
    log_target: bool,
    return_grad: bool,
    grad_output: Option<&Bound<'py, PyAny>>,
    partial: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    let (reduction, batchmean) = kl_reduction(reduction)?;
    let args = KlArgs {
        target,
        reduction: match partial {
            None => reduction,
            Some(_) => Reduction::parse(kernel_reduction("sum", partial))?,
        },
        batchmean,
        log_target,
        return_grad,
        grad_output,
    };
    kl_call(py, input, &args)?.finish(py, reduction, partial)
}

/// `kl_div`'s reduction: the kernel's, and whether `mean` is `batchmean`.
fn kl_reduction(name: &str) -> PyResult<(Reduction, bool)> {
    match name {
        "batchmean" => Ok((Reduction::Mean, true)),
        "none" | "mean" | "sum" => Ok((Reduction::parse(name)?, false)),
        _ => Err(XentError::Value(format!(
            "reduction must be \"none\", \"mean\", \"sum\" or \"batchmean\", got {name:?}"
        ))
        .into()),
    }
}

struct KlArgs<'a, 'py> {
    target: &'a Bound<'py, PyAny>,
    reduction: Reduction,
    batchmean: bool,
    log_target: bool,
    return_grad: bool,
    grad_output: Option<&'a Bound<'py, PyAny>>,
}

/// A `kl_div` call, dispatched on the input's dtype.
fn kl_call<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    args: &KlArgs<'_, 'py>,
) -> PyResult<Scored<'py>> {
    match float_array(input, "input")? {
        FloatArray::F32(x) => kl_loss(py, &x, args),
        FloatArray::F64(x) => kl_loss(py, &x, args),
        FloatArray::Bf16(x) => kl_loss(py, &x, args),
    }
}

fn kl_loss<'py, T: Dtype>(
    py: Python<'py>,
    x: &Bound<'py, PyArrayDyn<T>>,
    args: &KlArgs<'_, 'py>,
) -> PyResult<Scored<'py>> {
    let shape = x.shape().to_vec();
    let target = typed::<T>(args.target, "target")?;
    if target.shape() != shape.as_slice() {
        return Err(XentError::Shape(format!(
            "target shape {} must match input shape {}",
            format_index(target.shape()),
            format_index(&shape)
        ))
        .into());
    }
    let count: usize = shape.iter().product();
    // torch divides `batchmean` by `input.size(0)` except for a 0-d input, which it sums.
    let denominator = match (args.batchmean, shape.first()) {
        (true, Some(&batch)) => batch as f64,
        (true, None) => 1.0,
        (false, _) => count as f64,
    };
    let upstream = upstream::<T>(args.grad_output, args.reduction, &shape)?;
    let losses = (args.reduction == Reduction::None)
        .then(|| uninit::<T>(py, &shape))
        .transpose()?;
    let grad = args
        .return_grad
        .then(|| uninit::<T>(py, &shape))
        .transpose()?;
    let partial = {
        let (xr, tr) = (readonly(x, "input")?, readonly(&target, "target")?);
        let (input, target) = (slice(&xr)?, slice(&tr)?);
        let g = upstream.values()?;
        let opts = KlOptions {
            log_target: args.log_target,
            reduction: args.reduction,
            denominator,
            grad_output: g.grad_output(),
        };
        let mut loss_rw = losses.as_ref().map(|l| l.readwrite());
        let loss_out = loss_rw.as_mut().map(slice_mut).transpose()?;
        let mut grad_rw = grad.as_ref().map(|g| g.readwrite());
        let io = match grad_rw.as_mut() {
            None => Io::Read(input),
            Some(rw) => Io::ReadWrite {
                input,
                out: slice_mut(rw)?,
            },
        };
        detached(py, count, || kl::kl_div(io, target, &opts, loss_out))?
    };
    Ok(Scored {
        partial,
        count,
        reduced: T::reduced,
        losses: losses.map(Bound::into_any),
        grad: grad.map(Bound::into_any),
    })
}
