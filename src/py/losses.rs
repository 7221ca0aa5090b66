//! Bindings of the losses, one function per family: [`class_loss`] (cross entropy, NLL, the
//! multiclass focal loss), [`binary_loss`] (binary cross entropy on probabilities and on
//! logits, the binary focal loss on logits) and [`kl_div`]. Each takes the call's checked
//! options as the `xent_rs._spec` object the Python layer built (read here by attribute and
//! checked again: this is the last line before memory is touched), and returns the loss (a
//! Python float when reduced, an array for `none`) or, with `return_grad`, `(loss, grad)`.
//! With `partial=return_losses` (a bool; `None` by default) the same pass serves the
//! streaming accumulators: it returns a [`PartialResult`] (the loss sum, the `mean`
//! denominator, the number of loss terms and, with `partial=True`, the per-sample losses),
//! never reduced.

use std::borrow::Cow;

use numpy::{
    Element, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods, npyffi,
};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBool, PyFloat, PyTuple};

use crate::error::{XentError, format_index};
use crate::kernels::binary::{self, BinaryOptions, Broadcast, FocalOptions};
use crate::kernels::cross_entropy::{self as ce, ClassOptions};
use crate::kernels::kl_div::{self as kl, KlOptions};
use crate::kernels::{GradOutput, Io, Layout, Partial, Reduction};
use crate::py::arrays::{
    Axis, Dtype, Output, TargetArray, borrow_output, check_shape, dtype_name, float_array,
    float_name, layout, output, readonly, slice, slice_mut, typed, uninit, widened, with_dtype,
    without_axis,
};
use crate::py::gil::detached;

/// Which multiclass loss: `_spec.ClassLoss.loss`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClassLoss {
    CrossEntropy,
    Nll,
    /// Focal loss, with its `gamma` in [`ClassSpec::gamma`].
    Focal,
}

impl ClassLoss {
    /// The loss called `name` (`_spec.ClassLoss.loss`).
    fn from_name(name: &str) -> PyResult<Self> {
        match name {
            "cross_entropy" => Ok(Self::CrossEntropy),
            "nll_loss" => Ok(Self::Nll),
            "focal_loss" => Ok(Self::Focal),
            other => Err(unknown_loss(other)),
        }
    }

    /// The loss's public name.
    fn name(self) -> &'static str {
        match self {
            Self::CrossEntropy => "cross_entropy",
            Self::Nll => "nll_loss",
            Self::Focal => "focal_loss",
        }
    }
}

/// The error for a loss name that is not of the function's family.
fn unknown_loss(name: &str) -> PyErr {
    XentError::Value(format!("no such loss in this family: {name:?}")).into()
}

/// A `_spec.ClassLoss`: the options of one multiclass-loss call, read by attribute. The loss
/// name and `ignore_index` are checked after the read, so that their errors reach Python
/// as they are (PyO3 would wrap an error of a field's conversion in a `TypeError`).
#[derive(FromPyObject)]
pub(crate) struct ClassSpec<'py> {
    loss: PyBackedStr,
    axis: Axis,
    ignore_index: Bound<'py, PyAny>,
    reduction: PyBackedStr,
    label_smoothing: f64,
    z_loss: f64,
    softcap: Option<f64>,
    /// Focal loss's exponent (0 for the other losses).
    gamma: f64,
    return_grad: bool,
}

impl ClassSpec<'_> {
    /// An option `loss` does not have must keep its neutral value: `nll_loss` has none of
    /// `label_smoothing`, `z_loss`, `softcap` and `gamma`, `focal_loss` only `gamma`, and
    /// `cross_entropy` all but `gamma`.
    fn check_options(&self, loss: ClassLoss) -> PyResult<()> {
        let ce = loss == ClassLoss::CrossEntropy;
        let set = [
            ("label_smoothing", self.label_smoothing != 0.0, ce),
            ("z_loss", self.z_loss != 0.0, ce),
            ("softcap", self.softcap.is_some(), ce),
            ("gamma", self.gamma != 0.0, loss == ClassLoss::Focal),
        ];
        match set.into_iter().find(|&(_, on, has)| on && !has) {
            Some((option, _, _)) => {
                Err(XentError::Value(format!("{} has no {option} option", loss.name())).into())
            }
            None => Ok(()),
        }
    }
}

/// `class_loss(spec, input, target, weight, sample_weight, grad_output, grad_out,
/// partial=None)`: the multiclass loss `spec.loss` (see the Python docstrings of
/// `cross_entropy`, `nll_loss` and `focal_loss`; focal loss with `gamma = 0` is cross entropy
/// bit for bit).
#[pyfunction]
#[pyo3(signature = (
    spec, input, target, weight, sample_weight, grad_output, grad_out, partial=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn class_loss<'py>(
    py: Python<'py>,
    spec: ClassSpec<'py>,
    input: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    weight: Option<&Bound<'py, PyAny>>,
    sample_weight: Option<&Bound<'py, PyAny>>,
    grad_output: Option<&Bound<'py, PyAny>>,
    grad_out: Option<&Bound<'py, PyAny>>,
    partial: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    let loss = ClassLoss::from_name(&spec.loss)?;
    let ignore_index = ignore_index_arg(&spec.ignore_index)?;
    let reduction = Reduction::parse(&spec.reduction)?;
    spec.check_options(loss)?;
    no_gradient_in_partial(spec.return_grad, partial)?;
    let args = ClassArgs {
        target,
        weight,
        sample_weight,
        reduction: kernel_reduction(reduction, partial),
        grad_output,
        grad_out,
        loss,
        ignore_index,
        spec: &spec,
    };
    let scored = with_dtype!(float_array(input, "input")?, x => class_scored(py, &x, &args));
    scored?.finish(py, reduction, partial)
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
    /// `Some(return_losses)`): the [`PartialResult`] (the call asked for no gradient: see
    /// [`no_gradient_in_partial`]).
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
fn kernel_reduction(reduction: Reduction, partial: Option<bool>) -> Reduction {
    match partial {
        None => reduction,
        Some(true) => Reduction::None,
        Some(false) => Reduction::Sum,
    }
}

/// A partial result carries no gradient: refused before any array is read.
fn no_gradient_in_partial(return_grad: bool, partial: Option<bool>) -> PyResult<()> {
    if return_grad && partial.is_some() {
        return Err(XentError::Value(
            "a partial result carries no gradient: return_grad must be False".into(),
        )
        .into());
    }
    Ok(())
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

/// A multiclass-loss call's arrays and options, before the input's dtype is known.
struct ClassArgs<'a, 'py> {
    target: &'a Bound<'py, PyAny>,
    weight: Option<&'a Bound<'py, PyAny>>,
    sample_weight: Option<&'a Bound<'py, PyAny>>,
    /// The reduction the kernel runs with ([`kernel_reduction`]).
    reduction: Reduction,
    grad_output: Option<&'a Bound<'py, PyAny>>,
    grad_out: Option<&'a Bound<'py, PyAny>>,
    loss: ClassLoss,
    ignore_index: i64,
    /// The other options.
    spec: &'a ClassSpec<'py>,
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
    if loss != ClassLoss::CrossEntropy {
        return Err(XentError::Type(format!(
            "{} needs integer class indices, got dtype {}",
            loss.name(),
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

fn class_scored<'py, T: Dtype>(
    py: Python<'py>,
    x: &Bound<'py, PyArrayDyn<T>>,
    args: &ClassArgs<'_, 'py>,
) -> PyResult<Scored<'py>> {
    let spec = args.spec;
    let shape = x.shape().to_vec();
    let (layout, axis) = layout(&shape, spec.axis)?;
    let reduction = args.reduction;
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
    if args.grad_out.is_some() && !spec.return_grad {
        return Err(XentError::Value("grad_out is only used with return_grad=True".into()).into());
    }
    let upstream = upstream::<T>(args.grad_output, reduction, &sample_shape)?;

    let losses = (reduction == Reduction::None)
        .then(|| uninit::<T>(py, &sample_shape))
        .transpose()?;
    let (grad, in_place) = match (spec.return_grad, args.grad_out) {
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
            label_smoothing: spec.label_smoothing,
            grad_output: g.grad_output(),
            z_loss: spec.z_loss,
            softcap: spec.softcap,
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
            gamma: spec.gamma,
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

/// A `_spec.BinaryLoss`: the options of one element-wise-loss call, read by attribute.
#[derive(FromPyObject)]
pub(crate) struct BinarySpec {
    loss: PyBackedStr,
    reduction: PyBackedStr,
    /// The focal loss's exponent (0 for the other losses).
    gamma: f64,
    /// The focal loss's class balance (`None` for the other losses).
    alpha: Option<f64>,
    return_grad: bool,
}

impl BinarySpec {
    /// Which loss, with its options; an option the loss does not have must keep its neutral
    /// value (`gamma = 0`, `alpha = None`).
    fn kind(&self) -> PyResult<ElementwiseKind> {
        let kind = match &*self.loss {
            "binary_cross_entropy" => ElementwiseKind::Probabilities,
            "binary_cross_entropy_with_logits" => ElementwiseKind::Logits,
            "binary_focal_loss_with_logits" => {
                return Ok(ElementwiseKind::Focal(FocalOptions {
                    gamma: self.gamma,
                    alpha: self.alpha,
                }));
            }
            other => return Err(unknown_loss(other)),
        };
        if self.gamma != 0.0 || self.alpha.is_some() {
            return Err(XentError::Value(format!(
                "{} has no gamma or alpha (those are the focal loss's)",
                &*self.loss
            ))
            .into());
        }
        Ok(kind)
    }
}

/// A broadcast operand as Python passes it: `(values or None, repeat count)` (see
/// [`Broadcast`]).
type BroadcastArg<'py> = (Option<Bound<'py, PyAny>>, usize);

/// `binary_loss(spec, input, target, weight, pos_weight, grad_output, partial=None)`: the
/// element-wise loss `spec.loss` (see the Python docstrings of `binary_cross_entropy`,
/// `binary_cross_entropy_with_logits` and `binary_focal_loss_with_logits`, torchvision's
/// `sigmoid_focal_loss`). `weight` and `pos_weight` are each given as `(distinct values or
/// None, repeat count)` (see [`Broadcast`]); only the loss on logits has a `pos_weight` (the
/// kernels refuse it for the others).
#[pyfunction]
#[pyo3(signature = (spec, input, target, weight, pos_weight, grad_output, partial=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn binary_loss<'py>(
    py: Python<'py>,
    spec: BinarySpec,
    input: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    weight: BroadcastArg<'py>,
    pos_weight: BroadcastArg<'py>,
    grad_output: Option<&Bound<'py, PyAny>>,
    partial: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    let reduction = Reduction::parse(&spec.reduction)?;
    let kind = spec.kind()?;
    no_gradient_in_partial(spec.return_grad, partial)?;
    let args = ElementwiseArgs {
        target,
        weight: weight.0.as_ref().map(|w| (w, weight.1)),
        pos_weight: pos_weight.0.as_ref().map(|w| (w, pos_weight.1)),
        reduction: kernel_reduction(reduction, partial),
        return_grad: spec.return_grad,
        grad_output,
        kind,
    };
    let scored = with_dtype!(float_array(input, "input")?, x => elementwise_loss(py, &x, &args));
    scored?.finish(py, reduction, partial)
}

/// An element-wise-loss call's arrays and options, before the input's dtype is known.
struct ElementwiseArgs<'a, 'py> {
    target: &'a Bound<'py, PyAny>,
    weight: Option<(&'a Bound<'py, PyAny>, usize)>,
    pos_weight: Option<(&'a Bound<'py, PyAny>, usize)>,
    /// The reduction the kernel runs with ([`kernel_reduction`]).
    reduction: Reduction,
    return_grad: bool,
    grad_output: Option<&'a Bound<'py, PyAny>>,
    kind: ElementwiseKind,
}

/// Which element-wise loss.
#[derive(Clone, Copy)]
enum ElementwiseKind {
    /// Binary cross entropy of probabilities.
    Probabilities,
    /// Binary cross entropy of logits.
    Logits,
    /// The binary focal loss of logits.
    Focal(FocalOptions),
    /// The KL divergence; `batchmean`: its `mean` divides by the batch, not the elements.
    Kl { log_target: bool, batchmean: bool },
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

/// An element-wise loss (binary or KL) over `x` of dtype `T`: its checks, its options, and
/// the kernel's call.
fn elementwise_loss<'py, T: Dtype>(
    py: Python<'py>,
    x: &Bound<'py, PyArrayDyn<T>>,
    args: &ElementwiseArgs<'_, 'py>,
) -> PyResult<Scored<'py>> {
    let shape = x.shape().to_vec();
    let reduction = args.reduction;
    let kind = args.kind;
    let target = elementwise_target::<T>(args.target, &shape, |t, x| match kind {
        ElementwiseKind::Kl { .. } => format!("target shape {t} must match input shape {x}"),
        _ => format!("target size {t} must be the same as input size {x}"),
    })?;
    let weight = broadcast_values::<T>(args.weight, "weight")?;
    let pos_weight = broadcast_values::<T>(args.pos_weight, "pos_weight")?;
    let upstream = upstream::<T>(args.grad_output, reduction, &shape)?;
    let (w, pw) = (broadcast_widened(&weight)?, broadcast_widened(&pos_weight)?);
    let g = upstream.values()?;
    let opts = BinaryOptions {
        weight: as_broadcast(&w),
        pos_weight: as_broadcast(&pw),
        reduction,
        grad_output: g.grad_output(),
    };
    elementwise_scored(
        py,
        x,
        &target,
        reduction,
        args.return_grad,
        |io, target, losses| match kind {
            ElementwiseKind::Logits => {
                binary::binary_cross_entropy_with_logits(io, target, &opts, losses)
            }
            ElementwiseKind::Probabilities => {
                binary::binary_cross_entropy(io, target, &shape, &opts, losses)
            }
            ElementwiseKind::Focal(focal) => {
                binary::binary_focal_loss_with_logits(io, target, &focal, &opts, losses)
            }
            ElementwiseKind::Kl {
                log_target,
                batchmean,
            } => {
                let kl = KlOptions {
                    log_target,
                    reduction,
                    denominator: kl_denominator(&shape, batchmean),
                    grad_output: opts.grad_output,
                };
                kl::kl_div(io, target, &kl, losses)
            }
        },
    )
}

/// What `kl_div`'s `mean` divides by: the elements, or for `batchmean` `input.shape[0]`
/// (torch's; a 0-d input, which torch sums, counts as a batch of one).
fn kl_denominator(shape: &[usize], batchmean: bool) -> f64 {
    match (batchmean, shape.first()) {
        (true, Some(&batch)) => batch as f64,
        (true, None) => 1.0,
        (false, _) => shape.iter().product::<usize>() as f64,
    }
}

/// An element-wise loss's target: an array of dtype `T` of the input's `shape`, else the
/// error `mismatch(target shape, input shape)` words (torch's words differ between losses).
fn elementwise_target<'py, T: Dtype>(
    target: &Bound<'py, PyAny>,
    shape: &[usize],
    mismatch: impl Fn(String, String) -> String,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let t = typed::<T>(target, "target")?;
    if t.shape() != shape {
        let message = mismatch(format_index(t.shape()), format_index(shape));
        return Err(XentError::Shape(message).into());
    }
    Ok(t)
}

/// An element-wise loss's call over `x` and `target` (of `x`'s shape): the output buffers
/// (per-element losses for `none`, the gradient with `return_grad`), the borrows, and
/// `kernel(io, target, losses)` with the GIL released.
fn elementwise_scored<'py, T, K>(
    py: Python<'py>,
    x: &Bound<'py, PyArrayDyn<T>>,
    target: &Bound<'py, PyArrayDyn<T>>,
    reduction: Reduction,
    return_grad: bool,
    kernel: K,
) -> PyResult<Scored<'py>>
where
    T: Dtype,
    K: FnOnce(Io<'_, T>, &[T], Option<&mut [T]>) -> Result<Partial, XentError> + Send,
{
    let shape = x.shape();
    let count = x.len();
    let losses = (reduction == Reduction::None)
        .then(|| uninit::<T>(py, shape))
        .transpose()?;
    let grad = return_grad.then(|| uninit::<T>(py, shape)).transpose()?;
    let partial = {
        let (xr, tr) = (readonly(x, "input")?, readonly(target, "target")?);
        let (input, target) = (slice(&xr)?, slice(&tr)?);
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
        detached(py, count, || kernel(io, target, loss_out))?
    };
    Ok(Scored {
        partial,
        count,
        losses: losses.map(Bound::into_any),
        grad: grad.map(Bound::into_any),
        reduced: T::reduced,
    })
}

/// A `_spec.KlDiv`: the options of one `kl_div` call, read by attribute.
#[derive(FromPyObject)]
pub(crate) struct KlSpec {
    reduction: PyBackedStr,
    log_target: bool,
    return_grad: bool,
}

/// `kl_div(spec, input, target, grad_output, partial=None)`: torch's `kl_div` of
/// log-probabilities `input` from `target` (log-probabilities with `spec.log_target`);
/// `spec.reduction` is `"none"`, `"mean"` (over elements), `"sum"` or `"batchmean"` (over
/// `input.shape[0]`; a 0-d input is its own batch of one, as torch's sum).
#[pyfunction]
#[pyo3(signature = (spec, input, target, grad_output, partial=None))]
pub(crate) fn kl_div<'py>(
    py: Python<'py>,
    spec: KlSpec,
    input: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    grad_output: Option<&Bound<'py, PyAny>>,
    partial: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    let (reduction, batchmean) = kl_reduction(&spec.reduction)?;
    no_gradient_in_partial(spec.return_grad, partial)?;
    let args = ElementwiseArgs {
        target,
        weight: None,
        pos_weight: None,
        reduction: kernel_reduction(reduction, partial),
        return_grad: spec.return_grad,
        grad_output,
        kind: ElementwiseKind::Kl {
            log_target: spec.log_target,
            batchmean,
        },
    };
    let scored = with_dtype!(float_array(input, "input")?, x => elementwise_loss(py, &x, &args));
    scored?.finish(py, reduction, partial)
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
