//! Multiclass cross entropy (hard and soft targets) and NLL, each with its gradient from the
//! same pass over the logits.
//!
//! With `m = max x`, `s = Σ exp(x - m)` (f64) and `L = m + ln s`, a hard target `y` gives
//! (torch's formulas, `ε` the label smoothing, `w` the class weights, `W = Σ_c w_c`,
//! `sw` the sample weight):
//!
//! ```text
//! loss = sw [ (1-ε) w_y (L - x_y) + (ε/C) Σ_c w_c (L - x_c) ]
//! grad = g sw [ ((1-ε) w_y + (ε/C) W) p - (1-ε) w_y onehot(y) - (ε/C) w ]     p = softmax(x)
//! ```
//!
//! where `g` is the upstream gradient (divided by `Σ w_y sw` over counted rows for `mean`).
//! `Σ_c w_c (L - x_c)` is computed as `W ln s - Σ_c w_c (x_c - m)` so that no large terms
//! cancel. A soft target `t` is smoothed to `t' = (1-ε) t + ε/C` and gives
//! `loss = sw Σ_c w_c t'_c (L - x_c)`, `grad = g sw [ (Σ_c w_c t'_c) p - w t' ]`.
//!
//! The gradient pass stores `exp(x - m)` in the gradient buffer while summing and scales it in
//! place afterwards; the target logit is read first, so the gradient may overwrite the logits.

use std::ops::Range;

use crate::error::{XentError, unravel};
use crate::float::{Float, Storage};
use crate::interrupt;
use crate::kernels::lanes::{Columns, MAX_LANES, V, live_lanes};
use crate::kernels::rows::{Ptrs, RowBuffers, RowKernel, RowResults, run_checked_rows, run_rows};
use crate::kernels::stats::{
    ColumnSum, col_max, col_sum_exp, load_upto, prefetch_row, row_max, row_sum_exp, row_tanh_max,
    store_upto,
};
use crate::kernels::{
    GradOutput, Io, Layout, Partial, RawIn, RawOut, Reduction, Targets, check_len,
};
use crate::parallel;
use crate::reduce::{self, pairwise_sum};
use crate::simd::{self, Isa, Lane, Vector, WithIsa};

/// Options of the multiclass losses.
#[derive(Clone, Copy, Debug)]
pub struct ClassOptions<'a, T> {
    /// Per-class weights, `classes` long.
    pub weight: Option<&'a [T]>,
    /// Per-sample weights, one per row.
    pub sample_weight: Option<&'a [T]>,
    /// Hard targets equal to this are ignored.
    pub ignore_index: i64,
    /// How losses are combined.
    pub reduction: Reduction,
    /// Label smoothing `ε` in `[0, 1]`.
    pub label_smoothing: f64,
    /// The upstream gradient (used only when a gradient is written).
    pub grad_output: GradOutput<'a, T>,
    /// The z-loss coefficient `s >= 0` (cross entropy only): a row's loss gains
    /// `s w_y lse^2` (hard target, `w_y = 1` without class weights) or `s lse^2` (soft target),
    /// `lse` the logsumexp of its (capped) logits, before its sample weight.
    pub z_loss: f64,
    /// The logit soft cap `c > 0` (cross entropy only): the logits become `c tanh(x / c)`
    /// before anything else, and the gradient goes through the cap. `None`: no cap.
    pub softcap: Option<f64>,
}

impl<T> ClassOptions<'_, T> {
    /// torch's defaults with `reduction`: no weights, `ignore_index = -100`, no label
    /// smoothing, no z-loss, no cap, an upstream gradient of 1.
    pub fn plain(reduction: Reduction) -> Self {
        ClassOptions {
            weight: None,
            sample_weight: None,
            ignore_index: -100,
            reduction,
            label_smoothing: 0.0,
            grad_output: GradOutput::Scalar(1.0),
            z_loss: 0.0,
            softcap: None,
        }
    }

    /// Whether z-loss or the soft cap is on (the kernels keep their plain path otherwise).
    fn extended(&self) -> bool {
        self.z_loss != 0.0 || self.softcap.is_some()
    }
}

/// Hard-target cross entropy over the class axis of `layout`.
///
/// `io` holds the logits and, unless it is [`Io::Read`], receives the gradient. `targets` has
/// one class index per row (`target_shape` is used to report positions). For
/// [`Reduction::None`] the per-sample losses go to `losses`. Returns the sum of the losses and
/// the `mean` denominator (whatever the reduction): [`Partial::reduce`] gives the reduced loss.
pub fn cross_entropy<S: Storage>(
    io: Io<'_, S>,
    layout: Layout,
    targets: Targets<'_>,
    target_shape: &[usize],
    opts: &ClassOptions<'_, S::Compute>,
    losses: Option<&mut [S]>,
) -> Result<Partial, XentError> {
    hard_target_loss(io, layout, targets, target_shape, opts, losses, |hard| {
        HardTarget {
            weight_total: match opts.weight {
                Some(w) => w.iter().map(|v| v.to_f64()).sum(),
                None => layout.classes as f64,
            },
            smoothing: opts.label_smoothing,
            z_loss: opts.z_loss,
            softcap: opts.softcap,
            hard,
        }
    })
}

/// Multiclass softmax focal loss (Lin et al.) of hard targets: with `lp = log p_y` the log
/// softmax probability of the target, a row's loss is `-w_y (1 - p_y)^gamma lp` (`1 - p_y`
/// computed as `-expm1(lp)`), times its sample weight; the `mean` denominator is
/// cross entropy's. `gamma = 0` is [`cross_entropy`] itself (the same call, so the same bits).
/// `opts` must leave label smoothing, z-loss and the soft cap off.
///
/// The gradient is cross entropy's with `w_y` replaced by
/// `G = w_y ((1-p)^gamma - gamma p (1-p)^(gamma-1) lp)`: the derivative of the loss by `lp`,
/// times `d lp / d x = onehot(y) - p`.
pub fn focal_loss<S: Storage>(
    io: Io<'_, S>,
    layout: Layout,
    targets: Targets<'_>,
    target_shape: &[usize],
    opts: &ClassOptions<'_, S::Compute>,
    gamma: f64,
    losses: Option<&mut [S]>,
) -> Result<Partial, XentError> {
    // Written so that NaN fails too.
    if !(gamma >= 0.0 && gamma.is_finite()) {
        return Err(XentError::Value(format!(
            "gamma must be a finite number >= 0.0, got {gamma:?}"
        )));
    }
    if opts.label_smoothing != 0.0 || opts.extended() {
        return Err(XentError::Value(
            "focal_loss has no label smoothing, z_loss or softcap".into(),
        ));
    }
    if gamma == 0.0 {
        return cross_entropy(io, layout, targets, target_shape, opts, losses);
    }
    hard_target_loss(io, layout, targets, target_shape, opts, losses, |hard| {
        Focal {
            hard,
            gamma: Gamma::new(gamma),
        }
    })
}

/// Negative log-likelihood of log-probabilities `io`: like [`cross_entropy`] without the
/// softmax (and without label smoothing).
pub fn nll_loss<S: Storage>(
    io: Io<'_, S>,
    layout: Layout,
    targets: Targets<'_>,
    target_shape: &[usize],
    opts: &ClassOptions<'_, S::Compute>,
    losses: Option<&mut [S]>,
) -> Result<Partial, XentError> {
    if opts.label_smoothing != 0.0 {
        return Err(XentError::Value("nll_loss has no label smoothing".into()));
    }
    if opts.extended() {
        return Err(XentError::Value("nll_loss has no z_loss or softcap".into()));
    }
    hard_target_loss(io, layout, targets, target_shape, opts, losses, |hard| {
        Nll { hard }
    })
}

/// Soft-target (class probability) cross entropy: `targets` has the logits' layout (and
/// storage).
pub fn cross_entropy_soft<S: Storage>(
    mut io: Io<'_, S>,
    layout: Layout,
    targets: &[S],
    opts: &ClassOptions<'_, S::Compute>,
    losses: Option<&mut [S]>,
) -> Result<Partial, XentError> {
    check_len("the target", targets.len(), layout.len())?;
    let rows = layout.rows();
    check_common(&io, layout, opts, losses.as_deref())?;
    let denominator = match opts.sample_weight {
        Some(sw) => reduce::sum(sw)?,
        None => rows as f64,
    };
    if layout.classes == 0 {
        // No classes: each row's loss is an empty sum, 0, as torch's
        // `-(t * log_softmax(x)).sum(class_axis)` (the row kernel would compute 0 * log 0);
        // torch's mean over an input with no elements is NaN. There is no gradient to write.
        if let Some(out) = losses {
            out.fill(S::narrow(<S::Compute as Lane>::ZERO));
        }
        return Ok(Partial {
            loss_sum: 0.0,
            denominator: 0.0,
        });
    }
    let scale = Scale::new(opts, denominator, io.writes());
    let kernel = SoftTarget {
        weight: opts.weight,
        sample_weight: opts.sample_weight,
        smoothing: opts.label_smoothing,
        z_loss: opts.z_loss,
        softcap: opts.softcap,
        classes: layout.classes,
        scale,
    };
    let (x, out) = io.raw()?;
    let buffers = RowBuffers {
        x,
        x2: Some(RawIn::new(targets)),
        out,
    };
    finish(layout, &kernel, buffers, losses, denominator)
}

/// The hard-target losses: checks, then runs the kernel `kernel` makes of the targets and
/// weights (cross entropy's or NLL's).
fn hard_target_loss<'a, S: Storage, K: RowKernel<S::Compute>>(
    mut io: Io<'_, S>,
    layout: Layout,
    targets: Targets<'a>,
    target_shape: &'a [usize],
    opts: &'a ClassOptions<'a, S::Compute>,
    losses: Option<&mut [S]>,
    kernel: impl FnOnce(HardTargets<'a, S::Compute>) -> K,
) -> Result<Partial, XentError> {
    check_len("the target", targets.len(), layout.rows())?;
    check_common(&io, layout, opts, losses.as_deref())?;
    // A reduced loss without gradient writes nothing before it is done, so the targets can be
    // checked block by block in the pass itself (one read of them, and it counts the rows).
    // Not with weights: the denominator's sum would be grouped differently from a gradient
    // call's, and lane groups, which run before their check, would look targets up in them.
    let checked_in_pass =
        !io.writes() && losses.is_none() && opts.weight.is_none() && opts.sample_weight.is_none();
    let denominator = if checked_in_pass {
        0.0
    } else {
        check_targets(targets, target_shape, layout.classes, opts)?
    };
    let kernel = kernel(HardTargets {
        targets,
        ignore_index: opts.ignore_index,
        weight: opts.weight,
        sample_weight: opts.sample_weight,
        scale: Scale::new(opts, denominator, io.writes()),
        check: checked_in_pass.then_some(BlockCheck {
            target_shape,
            classes: layout.classes,
            opts,
        }),
    });
    let (x, out) = io.raw()?;
    let buffers = RowBuffers { x, x2: None, out };
    if checked_in_pass {
        let (loss_sum, denominator) = run_checked_rows(layout, &kernel, buffers, RowResults::Sum)?;
        return Ok(Partial {
            loss_sum,
            denominator,
        });
    }
    finish(layout, &kernel, buffers, losses, denominator)
}

/// Checks the options that do not depend on the targets.
fn check_common<S: Storage>(
    io: &Io<'_, S>,
    layout: Layout,
    opts: &ClassOptions<'_, S::Compute>,
    losses: Option<&[S]>,
) -> Result<(), XentError> {
    check_len("the input", io.len(), layout.len())?;
    if let Some(w) = opts.weight
        && w.len() != layout.classes
    {
        return Err(XentError::Shape(format!(
            "weight should hold one value per class ({}), got {}",
            layout.classes,
            w.len()
        )));
    }
    if let Some(sw) = opts.sample_weight {
        check_len("sample_weight", sw.len(), layout.rows())?;
    }
    let eps = opts.label_smoothing;
    if !(0.0..=1.0).contains(&eps) {
        return Err(XentError::Value(format!(
            "label_smoothing must be between 0.0 and 1.0, got {eps}"
        )));
    }
    // Written so that NaN fails too.
    if !(opts.z_loss >= 0.0 && opts.z_loss.is_finite()) {
        return Err(XentError::Value(format!(
            "z_loss must be a finite number >= 0.0, got {:?}",
            opts.z_loss
        )));
    }
    if let Some(cap) = opts.softcap
        && !(cap > 0.0 && cap.is_finite())
    {
        return Err(XentError::Value(format!(
            "softcap must be a finite number > 0.0 (or None for no cap), got {cap:?}"
        )));
    }
    if let GradOutput::PerSample(g) = opts.grad_output {
        if opts.reduction != Reduction::None {
            return Err(XentError::Shape(
                "grad_output must be a scalar for reduction \"mean\" or \"sum\"".into(),
            ));
        }
        check_len("grad_output", g.len(), layout.rows())?;
    }
    match (opts.reduction, losses) {
        (Reduction::None, Some(l)) => check_len("the loss output", l.len(), layout.rows()),
        (Reduction::None, None) => Err(XentError::Value(
            "reduction \"none\" needs a buffer for the losses".into(),
        )),
        (_, _) => Ok(()),
    }
}

/// Runs the kernel: the per-row losses go to `losses` when given, and their sum comes back
/// with the `mean` denominator either way.
fn finish<S: Storage, K: RowKernel<S::Compute>>(
    layout: Layout,
    kernel: &K,
    buffers: RowBuffers<S>,
    losses: Option<&mut [S]>,
    denominator: f64,
) -> Result<Partial, XentError> {
    let results = match losses {
        Some(out) => RowResults::Store(RawOut::new(out)),
        None => RowResults::Sum,
    };
    Ok(Partial {
        loss_sum: run_rows(layout, kernel, buffers, results)?,
        denominator,
    })
}

/// Checks every hard target before anything is written and returns `Σ w[y] sw` over the
/// counted rows (the `mean` denominator).
fn check_targets<T: Float>(
    targets: Targets<'_>,
    target_shape: &[usize],
    classes: usize,
    opts: &ClassOptions<'_, T>,
) -> Result<f64, XentError> {
    let n = targets.len();
    let blocks = parallel::blocks(n, 1, 1);
    let partial = parallel::map_blocks(blocks, n, |range| {
        check_target_range(targets, range, target_shape, classes, opts)
    })?;
    let mut sums = Vec::with_capacity(partial.len());
    for p in partial {
        sums.push(p?);
    }
    Ok(pairwise_sum(&sums))
}

/// Checks hard targets exactly as [`cross_entropy`] does (an out-of-range target is the
/// [`XentError::ClassIndex`] naming its value and position in `target_shape`) and returns the
/// `mean` denominator `Σ w[y] sw` over the counted rows, the very value a [`cross_entropy`]
/// call over all the rows divides by.
///
/// For callers that run the loss in pieces whose `mean` must use the whole denominator from
/// the first piece on: the chunked linear cross entropy scales each chunk's gradient by
/// `grad_output / denominator` in the fused pass itself.
pub fn hard_target_denominator<T: Float>(
    targets: Targets<'_>,
    target_shape: &[usize],
    classes: usize,
    weight: Option<&[T]>,
    sample_weight: Option<&[T]>,
    ignore_index: i64,
) -> Result<f64, XentError> {
    check_len("the target", targets.len(), target_shape.iter().product())?;
    if let Some(w) = weight {
        check_len("weight", w.len(), classes)?;
    }
    if let Some(sw) = sample_weight {
        check_len("sample_weight", sw.len(), targets.len())?;
    }
    let opts = ClassOptions {
        weight,
        sample_weight,
        ignore_index,
        ..ClassOptions::plain(Reduction::Mean)
    };
    check_targets(targets, target_shape, classes, &opts)
}

/// [`check_targets`] for the targets in `range` (in order: an error names the first bad one).
fn check_target_range<T: Float>(
    targets: Targets<'_>,
    range: Range<usize>,
    target_shape: &[usize],
    classes: usize,
    opts: &ClassOptions<'_, T>,
) -> Result<f64, XentError> {
    let found = simd::dispatch(TargetScan {
        targets,
        range,
        classes,
        opts,
    });
    found.map_err(|i| XentError::ClassIndex {
        value: targets.exact(i),
        position: unravel(i, target_shape),
        classes,
    })
}

/// [`scan_targets`] over a range of targets, compiled for the CPU's instruction set: its
/// 64-bit comparisons vectorise there and not in baseline x86-64.
struct TargetScan<'a, T> {
    targets: Targets<'a>,
    range: Range<usize>,
    classes: usize,
    opts: &'a ClassOptions<'a, T>,
}

impl<T: Float> WithIsa for TargetScan<'_, T> {
    type Output = Result<f64, usize>;

    #[inline(always)]
    fn run<I: Isa>(self, _isa: I) -> Result<f64, usize> {
        let TargetScan {
            targets,
            range,
            classes,
            opts,
        } = self;
        let start = range.start;
        match targets {
            Targets::I8(t) => scan_targets(&t[range], start, classes, opts),
            Targets::I16(t) => scan_targets(&t[range], start, classes, opts),
            Targets::I32(t) => scan_targets(&t[range], start, classes, opts),
            Targets::I64(t) => scan_targets(&t[range], start, classes, opts),
            Targets::U8(t) => scan_targets(&t[range], start, classes, opts),
            Targets::U16(t) => scan_targets(&t[range], start, classes, opts),
            Targets::U32(t) => scan_targets(&t[range], start, classes, opts),
            Targets::U64(t) => scan_targets(&t[range], start, classes, opts),
        }
    }
}

/// One block of [`check_targets`]: the weight of the counted targets, or the flat index of
/// the first one out of range.
#[inline(always)]
fn scan_targets<L: Copy, T: Float>(
    t: &[L],
    start: usize,
    classes: usize,
    opts: &ClassOptions<'_, T>,
) -> Result<f64, usize>
where
    i128: From<L>,
{
    let (ignore, classes) = (opts.ignore_index as i128, classes as i128);
    let bad_at = |i: usize| Err(start + i);
    match (opts.weight, opts.sample_weight) {
        (None, None) => {
            // Branch-free, so it vectorises: count the counted targets, note any bad one, and
            // look for its position only then.
            // Compared in i64, which vectorises where i128 does not; only uint64 values past
            // i64::MAX do not convert exactly, and those are out of range.
            let (ignore64, classes64) = (opts.ignore_index, classes as i64);
            let mut counted = 0usize;
            let mut bad = false;
            for &y in t {
                let wide = i128::from(y);
                let y = wide as i64;
                let exact = y as i128 == wide;
                let ignored = exact & (y == ignore64);
                bad |= !ignored & !(exact & (0..classes64).contains(&y));
                counted += usize::from(!ignored);
            }
            if bad {
                let i = t.iter().position(|&y| {
                    let y = i128::from(y);
                    y != ignore && !(0..classes).contains(&y)
                });
                return bad_at(i.unwrap_or(0));
            }
            Ok(counted as f64)
        }
        (w, sw) => {
            let mut total = 0.0;
            for (i, &y) in t.iter().enumerate() {
                let y = i128::from(y);
                if y == ignore {
                    continue;
                }
                if !(0..classes).contains(&y) {
                    return bad_at(i);
                }
                let wy = w.map_or(1.0, |w| w[y as usize].to_f64());
                total += sw.map_or(wy, |sw| wy * sw[start + i].to_f64());
            }
            Ok(total)
        }
    }
}

/// The factor applied to each row's gradient before its sample weight.
#[derive(Clone, Copy)]
enum Scale<'a, T> {
    /// No gradient is written, or the whole gradient is zero (`mean` over nothing).
    Zero,
    /// The same for every row.
    Uniform(f64),
    /// `grad_output[r]` for row `r` (reduction `none`).
    PerRow(&'a [T]),
}

impl<'a, T: Float> Scale<'a, T> {
    fn new(opts: &ClassOptions<'a, T>, denominator: f64, writes: bool) -> Self {
        match (writes, opts.grad_output, opts.reduction) {
            (false, _, _) => Scale::Zero,
            (true, GradOutput::PerSample(g), _) => Scale::PerRow(g),
            (true, GradOutput::Scalar(_), Reduction::Mean) if denominator == 0.0 => Scale::Zero,
            (true, GradOutput::Scalar(g), Reduction::Mean) => Scale::Uniform(g / denominator),
            (true, GradOutput::Scalar(g), _) => Scale::Uniform(g),
        }
    }

    #[inline(always)]
    fn at(&self, r: usize) -> f64 {
        match self {
            Scale::Zero => 0.0,
            Scale::Uniform(g) => *g,
            Scale::PerRow(g) => g[r].to_f64(),
        }
    }

    fn is_zero(&self) -> bool {
        matches!(self, Scale::Zero)
    }
}

/// Zeroes `n` values at `out` unless it is null.
///
/// # Safety
/// `out` (unless null) must be writable for `n` values.
#[inline(always)]
unsafe fn zero_row<T: Float, I: Isa>(isa: I, out: *mut T, n: usize) {
    if out.is_null() {
        return;
    }
    let lanes = V::<T, I>::LANES;
    let z = V::<T, I>::splat(isa, T::ZERO);
    for seg in (0..n).step_by(interrupt::ROW_CHECK) {
        if interrupt::stopped_at(seg) {
            return;
        }
        for i in (seg..n.min(seg + interrupt::ROW_CHECK)).step_by(lanes) {
            // SAFETY: i < n values remain.
            unsafe { store_upto(z, out.add(i), lanes.min(n - i)) };
        }
    }
}

/// The sample weights of the `valid` rows from `r0` on (1 when there are none), and their
/// gradient factors `scale · sw` (0 without a gradient), one per lane; 0 in padding lanes.
#[inline(always)]
fn lane_weights<T: Float, I: Isa>(
    isa: I,
    sample_weight: Option<&[T]>,
    scale: &Scale<'_, T>,
    grad: bool,
    r0: usize,
    valid: usize,
) -> (V<T, I>, V<T, I>) {
    let zero = V::<T, I>::splat(isa, T::ZERO);
    let sw = match sample_weight {
        None => live_lanes::<T, I>(isa, valid),
        // SAFETY: rows r0 .. r0+valid have a sample weight each.
        Some(s) => unsafe { load_upto(isa, s.as_ptr().add(r0), valid, T::ZERO) },
    };
    let g = match scale {
        _ if !grad => zero,
        Scale::Zero => zero,
        Scale::Uniform(u) => V::<T, I>::splat(isa, T::from_f64(*u)).mul(sw),
        // SAFETY: rows r0 .. r0+valid have an upstream gradient each.
        Scale::PerRow(go) => unsafe { load_upto(isa, go.as_ptr().add(r0), valid, T::ZERO) }.mul(sw),
    };
    (sw, g)
}

/// An integer target type, read as `i64`.
trait Label: Copy {
    /// The value as `i64` (`uint64` values past `i64::MAX` wrap; they are out of range).
    fn as_i64(self) -> i64;
}

macro_rules! label {
    ($($t:ty),*) => {$(
        impl Label for $t {
            #[inline(always)]
            fn as_i64(self) -> i64 {
                self as i64
            }
        }
    )*};
}
label!(i8, i16, i32, i64, u8, u16, u32, u64);

/// Writes the targets `t` of a lane group to `y` as floats, -1 for `ignore` (lanes past
/// `t.len()` keep their value). A group of exactly `lanes` targets runs a loop of constant
/// length without branches, which vectorises. Only arithmetic: the targets may not have been
/// checked yet (see [`RowKernel::check_rows`]), and a bad one may come out as any number.
#[inline(always)]
fn lane_targets<L: Label, T: Float>(t: &[L], lanes: usize, ignore: i64, y: &mut [T; MAX_LANES]) {
    let class = |v: L| {
        let v = v.as_i64();
        if v == ignore {
            T::from_f64(-1.0)
        } else {
            T::from_f64(v as f64)
        }
    };
    if t.len() == lanes {
        for (yj, &v) in y[..lanes].iter_mut().zip(&t[..lanes]) {
            *yj = class(v);
        }
    } else {
        for (yj, &v) in y.iter_mut().zip(t) {
            *yj = class(v);
        }
    }
}

/// The targets of the `valid` rows from `r0` on as float lanes, -1 where a target is
/// `ignore` and in padding lanes. A full group of 64-bit targets (NumPy's default) is converted
/// in vector registers; other groups go through [`lane_targets`]. Only arithmetic, as there.
#[inline(always)]
fn lane_classes<T: Float, I: Isa>(
    isa: I,
    targets: Targets,
    r0: usize,
    valid: usize,
    ignore: i64,
) -> V<T, I> {
    let lanes = V::<T, I>::LANES;
    if valid == lanes {
        // `u64` labels are read as `i64`, like `Label::as_i64` does.
        let labels = match targets {
            Targets::I64(t) => Some(t[r0..r0 + lanes].as_ptr()),
            Targets::U64(t) => Some(t[r0..r0 + lanes].as_ptr().cast::<i64>()),
            _ => None,
        };
        if let Some(p) = labels {
            // SAFETY: `p` points at `lanes` labels of the slice.
            return unsafe { V::<T, I>::load_labels(isa, p, ignore) };
        }
    }
    let mut y = [T::from_f64(-1.0); MAX_LANES];
    match targets {
        Targets::I8(t) => lane_targets(&t[r0..r0 + valid], lanes, ignore, &mut y),
        Targets::I16(t) => lane_targets(&t[r0..r0 + valid], lanes, ignore, &mut y),
        Targets::I32(t) => lane_targets(&t[r0..r0 + valid], lanes, ignore, &mut y),
        Targets::I64(t) => lane_targets(&t[r0..r0 + valid], lanes, ignore, &mut y),
        Targets::U8(t) => lane_targets(&t[r0..r0 + valid], lanes, ignore, &mut y),
        Targets::U16(t) => lane_targets(&t[r0..r0 + valid], lanes, ignore, &mut y),
        Targets::U32(t) => lane_targets(&t[r0..r0 + valid], lanes, ignore, &mut y),
        Targets::U64(t) => lane_targets(&t[r0..r0 + valid], lanes, ignore, &mut y),
    }
    // SAFETY: the array holds MAX_LANES >= LANES values.
    unsafe { V::<T, I>::load(isa, y.as_ptr()) }
}

/// What [`HardTargets`] needs to check its targets block by block, in the pass.
struct BlockCheck<'a, T> {
    target_shape: &'a [usize],
    classes: usize,
    opts: &'a ClassOptions<'a, T>,
}

/// What the hard-target kernels (cross entropy and NLL) share: the targets, the weights, the
/// gradient's scale and the in-pass check.
struct HardTargets<'a, T> {
    targets: Targets<'a>,
    ignore_index: i64,
    weight: Option<&'a [T]>,
    sample_weight: Option<&'a [T]>,
    scale: Scale<'a, T>,
    /// Set when the targets were not checked before the pass; each block then checks its
    /// own, and counts them (the `mean` denominator).
    check: Option<BlockCheck<'a, T>>,
}

impl<T: Float> HardTargets<'_, T> {
    /// The row's target if it is counted.
    ///
    /// Targets were range-checked, but the GIL is released during the pass and another
    /// Python thread may rewrite them meanwhile: a target out of range by then counts as
    /// ignored (the call's numbers are then unspecified, as with any data race, but memory is
    /// never touched outside the row).
    #[inline(always)]
    fn target(&self, r: usize, classes: usize) -> Option<usize> {
        let y = self.targets.get(r);
        (y != self.ignore_index && (y as u64) < classes as u64).then_some(y as usize)
    }

    #[inline(always)]
    fn class_weight(&self, y: usize) -> f64 {
        self.weight.map_or(1.0, |w| w[y].to_f64())
    }

    #[inline(always)]
    fn sample_weight(&self, r: usize) -> f64 {
        self.sample_weight.map_or(1.0, |sw| sw[r].to_f64())
    }

    /// [`RowKernel::check_rows`] for both kernels.
    fn check_rows(&self, rows: Range<usize>) -> Result<f64, XentError> {
        match &self.check {
            None => Ok(0.0),
            Some(c) => check_target_range(self.targets, rows, c.target_shape, c.classes, c.opts),
        }
    }

    /// Per lane of the rows from `r0` on: the target as a float (-1 where ignored or
    /// padding) and its class weight (1 without class weights, and where ignored).
    #[inline(always)]
    fn lane_targets<I: Isa>(
        &self,
        isa: I,
        r0: usize,
        valid: usize,
        classes: usize,
    ) -> (V<T, I>, V<T, I>) {
        let y = lane_classes::<T, I>(isa, self.targets, r0, valid, self.ignore_index);
        let mut w_y = [T::ONE; MAX_LANES];
        if let Some(w) = self.weight {
            for (j, wj) in w_y[..valid].iter_mut().enumerate() {
                if let Some(t) = self.target(r0 + j, classes) {
                    *wj = w[t];
                }
            }
        }
        // SAFETY: the array holds MAX_LANES >= LANES values.
        (y, unsafe { V::<T, I>::load(isa, w_y.as_ptr()) })
    }
}

/// Hard-target cross entropy.
struct HardTarget<'a, T> {
    hard: HardTargets<'a, T>,
    /// `Σ w_c` (the number of classes without class weights).
    weight_total: f64,
    smoothing: f64,
    /// See [`ClassOptions::z_loss`]; 0 leaves the plain arithmetic untouched.
    z_loss: f64,
    /// See [`ClassOptions::softcap`]; a capped call runs its own row and lane functions.
    softcap: Option<f64>,
}

impl<T: Float> HardTarget<'_, T> {
    /// `(Σ exp(x - m), Σ w_c (x_c - m))` over a contiguous row (`w_c = 1` without class
    /// weights), storing `exp(x - m)` at `store` unless it is null, and prefetching the next
    /// row (see [`prefetch_row`]). Whole groups of four vectors add both sums in the element
    /// precision first and widen them once (as `row_sum_exp` does).
    ///
    /// # Safety
    /// `n` values must be readable at `p.x` and (unless null) writable at `store`; every value
    /// is read before its slot of `store` is written.
    #[inline(always)]
    unsafe fn smoothing_sums<I: Isa>(
        &self,
        isa: I,
        p: Ptrs<T>,
        n: usize,
        mv: V<T, I>,
        store: *mut T,
    ) -> (f64, f64) {
        let lanes = V::<T, I>::LANES;
        let zero = V::<T, I>::splat(isa, T::ZERO);
        let (mut se, mut sd) = (V::<T, I>::wide_zero(isa), V::<T, I>::wide_zero(isa));
        // SAFETY: see the function's contract; the class weights have n values.
        unsafe {
            let mut start = 0;
            while start + 4 * lanes <= n {
                if interrupt::stopped_at(start) {
                    return (0.0, 0.0);
                }
                let end = n.min(start + interrupt::ROW_CHECK);
                while start + 4 * lanes <= end {
                    prefetch_row(p.ahead, start, 4 * lanes);
                    let (mut e4, mut d4) = (zero, zero);
                    for i in (start..start + 4 * lanes).step_by(lanes) {
                        let d = V::<T, I>::load(isa, p.x.add(i)).sub(mv);
                        let e = T::exp(d);
                        d4 = match self.hard.weight {
                            Some(w) => d.mul_add(V::<T, I>::load(isa, w.as_ptr().add(i)), d4),
                            None => d4.add(d),
                        };
                        if !store.is_null() {
                            e.store(store.add(i));
                        }
                        e4 = e4.add(e);
                    }
                    se = e4.wide_add(se);
                    sd = d4.wide_add(sd);
                    start += 4 * lanes;
                }
            }
            for i in (start..n).step_by(lanes) {
                let k = lanes.min(n - i);
                // Padding lanes read -inf: their exp is 0, and they are dropped from the
                // smoothing sum.
                let d = load_upto(isa, p.x.add(i), k, T::NEG_INFINITY).sub(mv);
                let e = T::exp(d);
                let d = if k == lanes {
                    d
                } else {
                    V::<T, I>::select(live_lanes::<T, I>(isa, k).eq(zero), zero, d)
                };
                let wd = match self.hard.weight {
                    Some(w) => d.mul(load_upto(isa, w.as_ptr().add(i), k, T::ZERO)),
                    None => d,
                };
                sd = wd.wide_add(sd);
                if !store.is_null() {
                    store_upto(e, store.add(i), k);
                }
                se = e.wide_add(se);
            }
        }
        (V::<T, I>::wide_sum(se), V::<T, I>::wide_sum(sd))
    }
    /// The z-loss of lanes whose logsumexp is `lse` and target weight `w_y`, and what it adds
    /// to the factor of `p` in their gradient: `(s w_y lse^2, 2 s w_y lse)`.
    #[inline(always)]
    fn z_terms<I: Isa>(&self, lse: V<T, I>, w_y: V<T, I>) -> (V<T, I>, V<T, I>) {
        let isa = lse.isa();
        let zw = V::<T, I>::splat(isa, T::from_f64(self.z_loss)).mul(w_y);
        let two = V::<T, I>::splat(isa, T::from_f64(2.0));
        (zw.mul(lse).mul(lse), two.mul(zw).mul(lse))
    }

    /// [`RowKernel::row`] with the soft cap `cap`, for a counted row with target `y`.
    ///
    /// Three passes, the first over memory and the others over the caches:
    /// [`row_tanh_max`] keeps `t = tanh(x / cap)` in the driver's scratch row and its
    /// maximum (the capped maximum is `cap` times it); the second sums `exp(cap t - m)`
    /// (and, with smoothing, `Σ w_c (cap t_c - m)`) and, when a gradient is written, keeps
    /// the exponentials in the output; the third multiplies the plain gradient by `1 - t^2`.
    /// `tanh` and `exp` sit in separate loops: fused in one, their constants and four
    /// vectors in flight outgrow the registers, and the spills cost more than the extra
    /// pass over the cached row (see `benches/NOTES.md`).
    ///
    /// # Safety
    /// As [`RowKernel::row`]: `n` values readable at `p.x`, writable at `p.out` unless null,
    /// and at `p.scratch` (never null here: [`HardTarget::wants_scratch`]).
    #[inline(always)]
    unsafe fn capped_row<I: Isa>(
        &self,
        isa: I,
        r: usize,
        y: usize,
        p: Ptrs<T>,
        n: usize,
        cap: f64,
    ) -> f64 {
        let lanes = V::<T, I>::LANES;
        let eps = self.smoothing;
        let grad = !p.out.is_null();
        let sw = self.hard.sample_weight(r);
        let w_y = self.hard.class_weight(y);
        let zero = V::<T, I>::splat(isa, T::ZERO);
        let capv = V::<T, I>::splat(isa, T::from_f64(cap));
        let inv = T::from_f64(1.0 / cap);
        let t_at = p.scratch;
        // SAFETY: the driver hands over n readable values at p.x, writable at p.out and at
        // p.scratch; the first pass reads the row before the second writes the output, and
        // the target's tanh is read from the scratch, which the output never overwrites.
        unsafe {
            let t_max = row_tanh_max(isa, p.x, n, inv, t_at, p.ahead);
            let t_y = *t_at.add(y);
            let x_y = capv.mul(V::<T, I>::splat(isa, t_y)).reduce_max().to_f64();
            let t_y = t_y.to_f64();
            let mv = capv.mul(V::<T, I>::splat(isa, t_max));
            let m = mv.reduce_max().to_f64();
            let neg_m = zero.sub(mv);
            let (mut se, mut sd) = (V::<T, I>::wide_zero(isa), V::<T, I>::wide_zero(isa));
            for seg in (0..n).step_by(interrupt::ROW_CHECK) {
                if interrupt::stopped_at(seg) {
                    return 0.0;
                }
                let end = n.min(seg + interrupt::ROW_CHECK);
                let mut i = seg;
                // Whole groups of four vectors add their sums in the element precision first
                // and widen them once (as `row_sum_exp` does).
                while i + 4 * lanes <= end {
                    let (mut e4, mut d4) = (zero, zero);
                    for j in (i..i + 4 * lanes).step_by(lanes) {
                        let d = capv.mul_add(V::<T, I>::load(isa, t_at.add(j)), neg_m);
                        let e = T::exp(d);
                        e4 = e4.add(e);
                        if eps > 0.0 {
                            d4 = match self.hard.weight {
                                Some(w) => d.mul_add(V::<T, I>::load(isa, w.as_ptr().add(j)), d4),
                                None => d4.add(d),
                            };
                        }
                        if grad {
                            e.store(p.out.add(j));
                        }
                    }
                    se = e4.wide_add(se);
                    sd = d4.wide_add(sd);
                    i += 4 * lanes;
                }
                while i < end {
                    let k = lanes.min(end - i);
                    let d = capv.mul_add(load_upto(isa, t_at.add(i), k, T::ZERO), neg_m);
                    let (e, d) = if k == lanes {
                        (T::exp(d), d)
                    } else {
                        // Padding lanes add nothing to either sum.
                        let pad = live_lanes::<T, I>(isa, k).eq(zero);
                        (
                            V::<T, I>::select(pad, zero, T::exp(d)),
                            V::<T, I>::select(pad, zero, d),
                        )
                    };
                    se = e.wide_add(se);
                    if eps > 0.0 {
                        let wd = match self.hard.weight {
                            Some(w) => d.mul(load_upto(isa, w.as_ptr().add(i), k, T::ZERO)),
                            None => d,
                        };
                        sd = wd.wide_add(sd);
                    }
                    if grad {
                        store_upto(e, p.out.add(i), k);
                    }
                    i += k;
                }
            }
            let s = V::<T, I>::wide_sum(se);
            let sd = V::<T, I>::wide_sum(sd);
            let ln_s = s.ln();
            let c = n as f64;
            let lse = m + ln_s;
            let mut loss = (1.0 - eps) * w_y * ((m - x_y) + ln_s);
            if eps > 0.0 {
                loss += eps / c * (self.weight_total * ln_s - sd);
            }
            let mut coef = (1.0 - eps) * w_y + eps / c * self.weight_total;
            if self.z_loss > 0.0 {
                loss += self.z_loss * w_y * lse * lse;
                coef += 2.0 * self.z_loss * w_y * lse;
            }
            if grad {
                if self.hard.scale.is_zero() {
                    zero_row(isa, p.out, n);
                } else {
                    let g = self.hard.scale.at(r) * sw;
                    let a = V::<T, I>::splat(isa, T::from_f64(g * coef / s));
                    let b = g * eps / c;
                    let bv = V::<T, I>::splat(isa, T::from_f64(b));
                    let one = V::<T, I>::splat(isa, T::ONE);
                    for seg in (0..n).step_by(interrupt::ROW_CHECK) {
                        if interrupt::stopped_at(seg) {
                            return 0.0;
                        }
                        for i in (seg..n.min(seg + interrupt::ROW_CHECK)).step_by(lanes) {
                            let k = lanes.min(n - i);
                            let t = load_upto(isa, t_at.add(i), k, T::ZERO);
                            let e = load_upto(isa, p.out.add(i), k, T::ZERO);
                            let out = match (self.hard.weight, b != 0.0) {
                                (Some(w), true) => {
                                    let wv = load_upto(isa, w.as_ptr().add(i), k, T::ZERO);
                                    e.mul(a).sub(wv.mul(bv))
                                }
                                (None, true) => e.mul(a).sub(bv),
                                (_, false) => e.mul(a),
                            };
                            store_upto(out.mul(zero.sub(t).mul_add(t, one)), p.out.add(i), k);
                        }
                    }
                    let hit = g * (1.0 - eps) * w_y * (1.0 - t_y * t_y);
                    let at_y = (*p.out.add(y)).to_f64() - hit;
                    *p.out.add(y) = T::from_f64(at_y);
                }
            }
            sw * loss
        }
    }

    /// [`RowKernel::lanes`] with the soft cap `cap` (see [`HardTarget::capped_row`]: the
    /// output columns hold `tanh(x / cap)` between the two passes).
    ///
    /// # Safety
    /// As [`RowKernel::lanes`]: `classes` columns (and an output when one is written).
    #[inline(always)]
    unsafe fn capped_lanes<I: Isa>(
        &self,
        isa: I,
        r0: usize,
        valid: usize,
        cols: Columns<T>,
        classes: usize,
        cap: f64,
    ) -> V<T, I> {
        let zero = V::<T, I>::splat(isa, T::ZERO);
        let one = V::<T, I>::splat(isa, T::ONE);
        let eps = self.smoothing;
        let c = classes as f64;
        let grad = cols.writes();
        let capv = V::<T, I>::splat(isa, T::from_f64(cap));
        let inv = V::<T, I>::splat(isa, T::from_f64(1.0 / cap));
        let (y, w_y) = self.hard.lane_targets::<I>(isa, r0, valid, classes);
        let ignored = y.lt(zero);
        let (sw, g) = lane_weights::<T, I>(
            isa,
            self.hard.sample_weight,
            &self.hard.scale,
            grad,
            r0,
            valid,
        );
        // SAFETY: the driver hands over `classes` columns (and an output when `grad`); every
        // input column is read before the output is written.
        unsafe {
            // The raw maximum and target logits; their caps are the capped ones.
            let mut raw_max = V::<T, I>::splat(isa, T::NEG_INFINITY);
            let mut raw_y = zero;
            let mut class = zero;
            for k in 0..classes {
                let x = cols.x(isa, k);
                raw_max = raw_max.max(x);
                raw_y = V::<T, I>::select(y.eq(class), x, raw_y);
                class = class.add(one);
            }
            let m = capv.mul(T::tanh(raw_max.mul(inv)));
            let x_y = capv.mul(T::tanh(raw_y.mul(inv)));
            let (mut se, mut sd) = (ColumnSum::<T, I>::new(isa), ColumnSum::<T, I>::new(isa));
            for k in 0..classes {
                let t = T::tanh(cols.x(isa, k).mul(inv));
                let d = capv.mul(t).sub(m);
                se.add(T::exp(d));
                if eps > 0.0 {
                    sd.add(match self.hard.weight {
                        Some(w) => d.mul(V::<T, I>::splat(isa, w[k])),
                        None => d,
                    });
                }
                if grad {
                    t.store(cols.out(k));
                }
            }
            let s = se.total();
            let ln_s = T::ln(s);
            let one_minus = V::<T, I>::splat(isa, T::from_f64(1.0 - eps));
            let mut loss = one_minus.mul(w_y).mul(m.sub(x_y).add(ln_s));
            if eps > 0.0 {
                let total = V::<T, I>::splat(isa, T::from_f64(self.weight_total));
                let smooth = total.mul(ln_s).sub(sd.total());
                loss = V::<T, I>::splat(isa, T::from_f64(eps / c)).mul_add(smooth, loss);
            }
            let mix = V::<T, I>::splat(isa, T::from_f64(eps / c * self.weight_total));
            let mut coef = one_minus.mul_add(w_y, mix);
            if self.z_loss > 0.0 {
                let (z, zw) = self.z_terms(m.add(ln_s), w_y);
                loss = loss.add(z);
                coef = coef.add(zw);
            }
            let loss = V::<T, I>::select(ignored, zero, sw.mul(loss));
            if !grad {
                return loss;
            }
            if self.hard.scale.is_zero() {
                for k in 0..classes {
                    zero.store(cols.out(k));
                }
                return loss;
            }
            let a = g.mul(coef).div(s);
            let b = g.mul(V::<T, I>::splat(isa, T::from_f64(eps / c)));
            let hit = g.mul(one_minus).mul(w_y);
            let mut class = zero;
            for k in 0..classes {
                let t = V::<T, I>::load(isa, cols.out(k));
                let e = T::exp(capv.mul(t).sub(m));
                let mut out = e.mul(a);
                if eps > 0.0 {
                    let wk = match self.hard.weight {
                        Some(w) => w[k],
                        None => T::ONE,
                    };
                    out = out.sub(b.mul(V::<T, I>::splat(isa, wk)));
                }
                out = out.sub(V::<T, I>::select(y.eq(class), hit, zero));
                class = class.add(one);
                let out = out.mul(zero.sub(t).mul_add(t, one));
                V::<T, I>::select(ignored, zero, out).store(cols.out(k));
            }
            loss
        }
    }
}

impl<T: Float> RowKernel<T> for HardTarget<'_, T> {
    fn check_rows(&self, rows: Range<usize>) -> Result<f64, XentError> {
        self.hard.check_rows(rows)
    }

    /// A capped row keeps `tanh` in the scratch (see [`HardTarget::capped_row`]).
    fn wants_scratch(&self) -> bool {
        self.softcap.is_some()
    }

    /// A capped row's first pass computes a `tanh` per logit.
    fn prefetches_short_rows(&self) -> bool {
        self.softcap.is_some()
    }

    #[inline(always)]
    fn row<I: Isa>(&self, isa: I, r: usize, p: Ptrs<T>, n: usize) -> f64 {
        let Some(y) = self.hard.target(r, n) else {
            // SAFETY: n values are writable at p.out (unless null).
            unsafe { zero_row(isa, p.out, n) };
            return 0.0;
        };
        if let Some(cap) = self.softcap {
            // SAFETY: as for this function.
            return unsafe { self.capped_row(isa, r, y, p, n, cap) };
        }
        let lanes = V::<T, I>::LANES;
        let eps = self.smoothing;
        let grad = !p.out.is_null();
        let sw = self.hard.sample_weight(r);
        let w_y = self.hard.class_weight(y);
        // SAFETY: the driver hands over n readable values at p.x and writable at p.out; the
        // target logit is read before anything is written.
        unsafe {
            let x_y = (*p.x.add(y)).to_f64();
            let m = row_max(isa, p.x, n);
            let mv = V::<T, I>::splat(isa, m);
            let store = if grad { p.out } else { std::ptr::null_mut() };
            // Σ exp(x - m) and, with smoothing, Σ w_c (x_c - m), in one pass.
            let (s, sd) = if eps == 0.0 {
                (row_sum_exp(isa, p.x, n, m, store, p.ahead), 0.0)
            } else {
                self.smoothing_sums(isa, p, n, mv, store)
            };
            let ln_s = s.ln();
            let c = n as f64;
            let nll = (m.to_f64() - x_y) + ln_s;
            let mut loss = (1.0 - eps) * w_y * nll;
            if eps > 0.0 {
                let smooth = self.weight_total * ln_s - sd;
                loss += eps / c * smooth;
            }
            // The factor of p in the gradient.
            let mut coef = (1.0 - eps) * w_y + eps / c * self.weight_total;
            if self.z_loss > 0.0 {
                let lse = m.to_f64() + ln_s;
                loss += self.z_loss * w_y * lse * lse;
                coef += 2.0 * self.z_loss * w_y * lse;
            }
            if grad {
                if self.hard.scale.is_zero() {
                    zero_row(isa, p.out, n);
                } else {
                    let g = self.hard.scale.at(r) * sw;
                    let a = V::<T, I>::splat(isa, T::from_f64(g * coef / s));
                    let b = g * eps / c;
                    let bv = V::<T, I>::splat(isa, T::from_f64(b));
                    for seg in (0..n).step_by(interrupt::ROW_CHECK) {
                        if interrupt::stopped_at(seg) {
                            return 0.0;
                        }
                        for i in (seg..n.min(seg + interrupt::ROW_CHECK)).step_by(lanes) {
                            let k = lanes.min(n - i);
                            let e = load_upto(isa, p.out.add(i), k, T::ZERO);
                            let out = match (self.hard.weight, b != 0.0) {
                                (Some(w), true) => {
                                    let wv = load_upto(isa, w.as_ptr().add(i), k, T::ZERO);
                                    e.mul(a).sub(wv.mul(bv))
                                }
                                (None, true) => e.mul(a).sub(bv),
                                (_, false) => e.mul(a),
                            };
                            store_upto(out, p.out.add(i), k);
                        }
                    }
                    let at_y = (*p.out.add(y)).to_f64() - g * (1.0 - eps) * w_y;
                    *p.out.add(y) = T::from_f64(at_y);
                }
            }
            sw * loss
        }
    }

    #[inline(always)]
    fn lanes<I: Isa>(
        &self,
        isa: I,
        r0: usize,
        valid: usize,
        cols: Columns<T>,
        classes: usize,
    ) -> V<T, I> {
        if let Some(cap) = self.softcap {
            // SAFETY: as for this function.
            return unsafe { self.capped_lanes(isa, r0, valid, cols, classes, cap) };
        }
        let zero = V::<T, I>::splat(isa, T::ZERO);
        let one = V::<T, I>::splat(isa, T::ONE);
        let eps = self.smoothing;
        let c = classes as f64;
        let grad = cols.writes();
        // Per lane: the target and its class weight, and the sample weight and gradient factor.
        let (y, w_y) = self.hard.lane_targets::<I>(isa, r0, valid, classes);
        let ignored = y.lt(zero);
        let (sw, g) = lane_weights::<T, I>(
            isa,
            self.hard.sample_weight,
            &self.hard.scale,
            grad,
            r0,
            valid,
        );
        // SAFETY: the driver hands over `classes` columns (and an output when `grad`); every
        // input column is read before the output is written.
        unsafe {
            // The maximum and, picked by comparing class numbers, the target logits.
            let mut m = V::<T, I>::splat(isa, T::NEG_INFINITY);
            let mut x_y = zero;
            let mut class = zero;
            for k in 0..classes {
                let x = cols.x(isa, k);
                m = m.max(x);
                x_y = V::<T, I>::select(y.eq(class), x, x_y);
                class = class.add(one);
            }
            let mut sd = ColumnSum::<T, I>::new(isa);
            if eps > 0.0 {
                for k in 0..classes {
                    let d = cols.x(isa, k).sub(m);
                    sd.add(match self.hard.weight {
                        Some(w) => d.mul(V::<T, I>::splat(isa, w[k])),
                        None => d,
                    });
                }
            }
            let s = col_sum_exp(isa, &cols, classes, m, grad);
            let ln_s = T::ln(s);
            let one_minus = V::<T, I>::splat(isa, T::from_f64(1.0 - eps));
            let nll = m.sub(x_y).add(ln_s);
            let mut loss = one_minus.mul(w_y).mul(nll);
            if eps > 0.0 {
                let total = V::<T, I>::splat(isa, T::from_f64(self.weight_total));
                let smooth = total.mul(ln_s).sub(sd.total());
                loss = V::<T, I>::splat(isa, T::from_f64(eps / c)).mul_add(smooth, loss);
            }
            let mix = V::<T, I>::splat(isa, T::from_f64(eps / c * self.weight_total));
            // The factor of p in the gradient.
            let mut coef = one_minus.mul_add(w_y, mix);
            if self.z_loss > 0.0 {
                let (z, zw) = self.z_terms(m.add(ln_s), w_y);
                loss = loss.add(z);
                coef = coef.add(zw);
            }
            let loss = V::<T, I>::select(ignored, zero, sw.mul(loss));
            if !grad {
                return loss;
            }
            if self.hard.scale.is_zero() {
                for k in 0..classes {
                    zero.store(cols.out(k));
                }
                return loss;
            }
            let a = g.mul(coef).div(s);
            let b = g.mul(V::<T, I>::splat(isa, T::from_f64(eps / c)));
            let hit = g.mul(one_minus).mul(w_y);
            let mut class = zero;
            for k in 0..classes {
                let e = V::<T, I>::load(isa, cols.out(k));
                let mut out = e.mul(a);
                if eps > 0.0 {
                    let wk = match self.hard.weight {
                        Some(w) => w[k],
                        None => T::ONE,
                    };
                    out = out.sub(b.mul(V::<T, I>::splat(isa, wk)));
                }
                out = out.sub(V::<T, I>::select(y.eq(class), hit, zero));
                class = class.add(one);
                V::<T, I>::select(ignored, zero, out).store(cols.out(k));
            }
            loss
        }
    }
}

/// Negative log-likelihood: the input already holds log-probabilities, so a row's loss is
/// `-sw w_y x_y` and its gradient `-g sw w_y` at the target, 0 elsewhere.
struct Nll<'a, T> {
    hard: HardTargets<'a, T>,
}

impl<T: Float> RowKernel<T> for Nll<'_, T> {
    fn check_rows(&self, rows: Range<usize>) -> Result<f64, XentError> {
        self.hard.check_rows(rows)
    }

    #[inline(always)]
    fn row<I: Isa>(&self, isa: I, r: usize, p: Ptrs<T>, n: usize) -> f64 {
        let hard = &self.hard;
        let Some(y) = hard.target(r, n) else {
            // SAFETY: n values are writable at p.out (unless null).
            unsafe { zero_row(isa, p.out, n) };
            return 0.0;
        };
        let coef = hard.sample_weight(r) * hard.class_weight(y);
        // SAFETY: y < n values are readable at p.x.
        let x_y = unsafe { *p.x.add(y) }.to_f64();
        if !p.out.is_null() {
            // SAFETY: n values are writable at p.out.
            unsafe {
                zero_row(isa, p.out, n);
                *p.out.add(y) = T::from_f64(-coef * hard.scale.at(r));
            }
        }
        -coef * x_y
    }

    #[inline(always)]
    fn lanes<I: Isa>(
        &self,
        isa: I,
        r0: usize,
        valid: usize,
        cols: Columns<T>,
        classes: usize,
    ) -> V<T, I> {
        let hard = &self.hard;
        let zero = V::<T, I>::splat(isa, T::ZERO);
        let one = V::<T, I>::splat(isa, T::ONE);
        let grad = cols.writes();
        let (y, w_y) = hard.lane_targets::<I>(isa, r0, valid, classes);
        let (sw, g) = lane_weights::<T, I>(isa, hard.sample_weight, &hard.scale, grad, r0, valid);
        // SAFETY: the driver hands over `classes` columns (and an output when `grad`); every
        // input column is read before the output is written.
        unsafe {
            // The target log-probabilities, picked by comparing class numbers.
            let mut x_y = zero;
            let mut class = zero;
            for k in 0..classes {
                x_y = V::<T, I>::select(y.eq(class), cols.x(isa, k), x_y);
                class = class.add(one);
            }
            if grad {
                let hit = zero.sub(g.mul(w_y));
                let mut class = zero;
                for k in 0..classes {
                    V::<T, I>::select(y.eq(class), hit, zero).store(cols.out(k));
                    class = class.add(one);
                }
            }
            V::<T, I>::select(y.lt(zero), zero, zero.sub(sw.mul(w_y).mul(x_y)))
        }
    }
}

/// The focusing exponent of [`Focal`], with its common values as their own arithmetic.
#[derive(Clone, Copy)]
enum Gamma {
    /// `q^1`.
    One,
    /// `q^2`: a square, not a `pow`.
    Two,
    /// `q^gamma`.
    Other(f64),
}

impl Gamma {
    fn new(gamma: f64) -> Self {
        match gamma {
            1.0 => Gamma::One,
            2.0 => Gamma::Two,
            g => Gamma::Other(g),
        }
    }

    fn value(self) -> f64 {
        match self {
            Gamma::One => 1.0,
            Gamma::Two => 2.0,
            Gamma::Other(g) => g,
        }
    }

    /// For a row whose target log-probability is `lp`: its loss before the weights,
    /// `-(1-p)^gamma lp`, and the derivative of that by `lp`, negated:
    /// `(1-p)^gamma - gamma p (1-p)^(gamma-1) lp` (the factor that replaces 1 in cross
    /// entropy's gradient).
    #[inline(always)]
    fn terms(self, lp: f64) -> (f64, f64) {
        let q = -lp.exp_m1();
        let f = match self {
            Gamma::One => q,
            Gamma::Two => q * q,
            Gamma::Other(g) => q.powf(g),
        };
        // (1-p)^(gamma-1) lp = f (lp / q); lp / q tends to -1 as q -> 0, where f is 0 (gamma
        // > 0): no infinity times zero for gamma < 1.
        let ratio = if q == 0.0 { 0.0 } else { lp / q };
        let p = lp.exp();
        (-f * lp, f - self.value() * p * f * ratio)
    }

    /// [`Gamma::terms`] for the lanes of `lp`, in the element precision (`q^gamma` as
    /// `exp(gamma ln q)` for the uncommon exponents, 0 at `q = 0`).
    #[inline(always)]
    fn lane_terms<T: Float, V: Vector<Elem = T>>(self, lp: V) -> (V, V) {
        let isa = lp.isa();
        let zero = V::splat(isa, T::ZERO);
        let q = zero.sub(T::exp_m1(lp));
        let f = match self {
            Gamma::One => q,
            Gamma::Two => q.mul(q),
            Gamma::Other(g) => T::exp(V::splat(isa, T::from_f64(g)).mul(T::ln(q))),
        };
        let ratio = V::select(q.eq(zero), zero, lp.div(q));
        let gp = V::splat(isa, T::from_f64(self.value())).mul(T::exp(lp));
        (zero.sub(f.mul(lp)), f.sub(gp.mul(f).mul(ratio)))
    }
}

/// Multiclass focal loss; see [`focal_loss`].
struct Focal<'a, T> {
    hard: HardTargets<'a, T>,
    gamma: Gamma,
}

impl<T: Float> RowKernel<T> for Focal<'_, T> {
    fn check_rows(&self, rows: Range<usize>) -> Result<f64, XentError> {
        self.hard.check_rows(rows)
    }

    #[inline(always)]
    fn row<I: Isa>(&self, isa: I, r: usize, p: Ptrs<T>, n: usize) -> f64 {
        let Some(y) = self.hard.target(r, n) else {
            // SAFETY: n values are writable at p.out (unless null).
            unsafe { zero_row(isa, p.out, n) };
            return 0.0;
        };
        let lanes = V::<T, I>::LANES;
        let grad = !p.out.is_null();
        let sw = self.hard.sample_weight(r);
        let w_y = self.hard.class_weight(y);
        // SAFETY: the driver hands over n readable values at p.x and writable at p.out; the
        // target logit is read before anything is written.
        unsafe {
            let x_y = (*p.x.add(y)).to_f64();
            let m = row_max(isa, p.x, n);
            let store = if grad { p.out } else { std::ptr::null_mut() };
            let s = row_sum_exp(isa, p.x, n, m, store, p.ahead);
            let lp = (x_y - m.to_f64()) - s.ln();
            let (loss, coef) = self.gamma.terms(lp);
            if grad {
                if self.hard.scale.is_zero() {
                    zero_row(isa, p.out, n);
                } else {
                    let g = self.hard.scale.at(r) * sw * w_y * coef;
                    let a = V::<T, I>::splat(isa, T::from_f64(g / s));
                    for seg in (0..n).step_by(interrupt::ROW_CHECK) {
                        if interrupt::stopped_at(seg) {
                            return 0.0;
                        }
                        for i in (seg..n.min(seg + interrupt::ROW_CHECK)).step_by(lanes) {
                            let k = lanes.min(n - i);
                            let e = load_upto(isa, p.out.add(i), k, T::ZERO);
                            store_upto(e.mul(a), p.out.add(i), k);
                        }
                    }
                    let at_y = (*p.out.add(y)).to_f64() - g;
                    *p.out.add(y) = T::from_f64(at_y);
                }
            }
            sw * w_y * loss
        }
    }

    #[inline(always)]
    fn lanes<I: Isa>(
        &self,
        isa: I,
        r0: usize,
        valid: usize,
        cols: Columns<T>,
        classes: usize,
    ) -> V<T, I> {
        let zero = V::<T, I>::splat(isa, T::ZERO);
        let one = V::<T, I>::splat(isa, T::ONE);
        let grad = cols.writes();
        let (y, w_y) = self.hard.lane_targets::<I>(isa, r0, valid, classes);
        let ignored = y.lt(zero);
        let (sw, g) = lane_weights::<T, I>(
            isa,
            self.hard.sample_weight,
            &self.hard.scale,
            grad,
            r0,
            valid,
        );
        // SAFETY: the driver hands over `classes` columns (and an output when `grad`); every
        // input column is read before the output is written.
        unsafe {
            let mut m = V::<T, I>::splat(isa, T::NEG_INFINITY);
            let mut x_y = zero;
            let mut class = zero;
            for k in 0..classes {
                let x = cols.x(isa, k);
                m = m.max(x);
                x_y = V::<T, I>::select(y.eq(class), x, x_y);
                class = class.add(one);
            }
            let s = col_sum_exp(isa, &cols, classes, m, grad);
            let lp = x_y.sub(m).sub(T::ln(s));
            let (focal, coef) = self.gamma.lane_terms(lp);
            let loss = V::<T, I>::select(ignored, zero, sw.mul(w_y).mul(focal));
            if !grad {
                return loss;
            }
            if self.hard.scale.is_zero() {
                for k in 0..classes {
                    zero.store(cols.out(k));
                }
                return loss;
            }
            let hit = g.mul(w_y).mul(coef);
            let a = hit.div(s);
            let mut class = zero;
            for k in 0..classes {
                let e = V::<T, I>::load(isa, cols.out(k));
                let out = e.mul(a).sub(V::<T, I>::select(y.eq(class), hit, zero));
                class = class.add(one);
                V::<T, I>::select(ignored, zero, out).store(cols.out(k));
            }
            loss
        }
    }
}

/// Soft-target cross entropy; `x2` holds the target probabilities.
struct SoftTarget<'a, T> {
    weight: Option<&'a [T]>,
    sample_weight: Option<&'a [T]>,
    smoothing: f64,
    /// See [`ClassOptions::z_loss`]; 0 leaves the plain arithmetic untouched.
    z_loss: f64,
    /// See [`ClassOptions::softcap`]; a capped call runs its own row and lane functions.
    softcap: Option<f64>,
    classes: usize,
    scale: Scale<'a, T>,
}

impl<T: Float> SoftTarget<'_, T> {
    #[inline(always)]
    fn sample_weight(&self, r: usize) -> f64 {
        self.sample_weight.map_or(1.0, |sw| sw[r].to_f64())
    }

    /// `w_c t'_c` for a vector of targets `t` of classes `c..` (weights `w` there, if any).
    #[inline(always)]
    fn weighted<I: Isa>(&self, t: V<T, I>, w: Option<V<T, I>>) -> V<T, I> {
        let isa = t.isa();
        let keep = V::<T, I>::splat(isa, T::from_f64(1.0 - self.smoothing));
        let spread = V::<T, I>::splat(isa, T::from_f64(self.smoothing / self.classes as f64));
        let smoothed = t.mul_add(keep, spread);
        match w {
            Some(w) => smoothed.mul(w),
            None => smoothed,
        }
    }

    /// `w_c t'_c` for the `k` values at offset `i` of a contiguous row; 0 in padding lanes.
    ///
    /// # Safety
    /// `i + k` must not pass the row's end.
    #[inline(always)]
    unsafe fn weighted_at<I: Isa>(&self, isa: I, t: *const T, i: usize, k: usize) -> V<T, I> {
        // SAFETY: the caller keeps i + k inside the row, the target and the weights.
        unsafe {
            let tv = load_upto(isa, t.add(i), k, T::ZERO);
            // No closures in vector code (see `simd::math`): they would leave the ISA.
            #[allow(clippy::manual_map)]
            let w = match self.weight {
                Some(w) => Some(load_upto(isa, w.as_ptr().add(i), k, T::ZERO)),
                None => None,
            };
            let tw = self.weighted(tv, w);
            if k == V::<T, I>::LANES {
                tw
            } else {
                tw.mul(live_lanes::<T, I>(isa, k))
            }
        }
    }

    /// `w_c t'_c` for column `k` of a lane group.
    ///
    /// # Safety
    /// `k` must be below the number of classes.
    #[inline(always)]
    unsafe fn weighted_column<I: Isa>(&self, isa: I, cols: &Columns<T>, k: usize) -> V<T, I> {
        // SAFETY: see the function's contract.
        let tv = unsafe { cols.x2(isa, k) };
        // No closures in vector code (see `simd::math`): they would leave the ISA.
        #[allow(clippy::manual_map)]
        let w = match self.weight {
            Some(w) => Some(V::<T, I>::splat(isa, w[k])),
            None => None,
        };
        self.weighted(tv, w)
    }
    /// The z-loss of lanes whose logsumexp is `lse`, and what it adds to the factor of `p` in
    /// their gradient: `(s lse^2, 2 s lse)`.
    #[inline(always)]
    fn z_terms<I: Isa>(&self, lse: V<T, I>) -> (V<T, I>, V<T, I>) {
        let isa = lse.isa();
        let z = V::<T, I>::splat(isa, T::from_f64(self.z_loss));
        let two = V::<T, I>::splat(isa, T::from_f64(2.0));
        (z.mul(lse).mul(lse), two.mul(z).mul(lse))
    }

    /// [`RowKernel::row`] with the soft cap `cap`; the passes are those of
    /// [`HardTarget::capped_row`].
    ///
    /// # Safety
    /// As [`RowKernel::row`]: `n` values readable at `p.x` and `p.x2`, writable at `p.out`
    /// unless null, and at `p.scratch` (never null here: [`SoftTarget::wants_scratch`]).
    #[inline(always)]
    unsafe fn capped_row<I: Isa>(&self, isa: I, r: usize, p: Ptrs<T>, n: usize, cap: f64) -> f64 {
        let lanes = V::<T, I>::LANES;
        let grad = !p.out.is_null();
        let zero = V::<T, I>::splat(isa, T::ZERO);
        let one = V::<T, I>::splat(isa, T::ONE);
        let capv = V::<T, I>::splat(isa, T::from_f64(cap));
        let t_at = p.scratch;
        // SAFETY: n values at p.x, p.x2 are readable and at p.out and p.scratch writable; the
        // first pass reads the logits before the second writes the output.
        unsafe {
            let t_max = row_tanh_max(isa, p.x, n, T::from_f64(1.0 / cap), t_at, p.ahead);
            let mv = capv.mul(V::<T, I>::splat(isa, t_max));
            let m = mv.reduce_max().to_f64();
            let neg_m = zero.sub(mv);
            let (mut se, mut st, mut sd) = (
                V::<T, I>::wide_zero(isa),
                V::<T, I>::wide_zero(isa),
                V::<T, I>::wide_zero(isa),
            );
            for seg in (0..n).step_by(interrupt::ROW_CHECK) {
                if interrupt::stopped_at(seg) {
                    return 0.0;
                }
                for i in (seg..n.min(seg + interrupt::ROW_CHECK)).step_by(lanes) {
                    let k = lanes.min(n - i);
                    let d = capv.mul_add(load_upto(isa, t_at.add(i), k, T::ZERO), neg_m);
                    // Padding lanes: their target weight is 0, and so is their exponential.
                    let tw = self.weighted_at(isa, p.x2, i, k);
                    let e = if k == lanes {
                        T::exp(d)
                    } else {
                        let pad = live_lanes::<T, I>(isa, k).eq(zero);
                        V::<T, I>::select(pad, zero, T::exp(d))
                    };
                    if grad {
                        store_upto(e, p.out.add(i), k);
                    }
                    se = e.wide_add(se);
                    st = tw.wide_add(st);
                    sd = tw.mul(d).wide_add(sd);
                }
            }
            let s = V::<T, I>::wide_sum(se);
            let t_total = V::<T, I>::wide_sum(st);
            let sw = self.sample_weight(r);
            let ln_s = s.ln();
            let lse = m + ln_s;
            let mut loss = t_total * ln_s - V::<T, I>::wide_sum(sd);
            let mut coef = t_total;
            if self.z_loss > 0.0 {
                loss += self.z_loss * lse * lse;
                coef += 2.0 * self.z_loss * lse;
            }
            if grad {
                if self.scale.is_zero() {
                    zero_row(isa, p.out, n);
                } else {
                    let g = self.scale.at(r) * sw;
                    let a = V::<T, I>::splat(isa, T::from_f64(g * coef / s));
                    let gv = V::<T, I>::splat(isa, T::from_f64(g));
                    for seg in (0..n).step_by(interrupt::ROW_CHECK) {
                        if interrupt::stopped_at(seg) {
                            return 0.0;
                        }
                        for i in (seg..n.min(seg + interrupt::ROW_CHECK)).step_by(lanes) {
                            let k = lanes.min(n - i);
                            let t = load_upto(isa, t_at.add(i), k, T::ZERO);
                            let e = load_upto(isa, p.out.add(i), k, T::ZERO);
                            let tw = self.weighted_at(isa, p.x2, i, k);
                            let out = e.mul(a).sub(gv.mul(tw));
                            store_upto(out.mul(zero.sub(t).mul_add(t, one)), p.out.add(i), k);
                        }
                    }
                }
            }
            sw * loss
        }
    }

    /// [`RowKernel::lanes`] with the soft cap `cap` (the output columns hold
    /// `tanh(x / cap)` between the two passes).
    ///
    /// # Safety
    /// As [`RowKernel::lanes`]: `classes` columns of both inputs (and an output when one is
    /// written).
    #[inline(always)]
    unsafe fn capped_lanes<I: Isa>(
        &self,
        isa: I,
        r0: usize,
        valid: usize,
        cols: Columns<T>,
        classes: usize,
        cap: f64,
    ) -> V<T, I> {
        let grad = cols.writes();
        let zero = V::<T, I>::splat(isa, T::ZERO);
        let one = V::<T, I>::splat(isa, T::ONE);
        let capv = V::<T, I>::splat(isa, T::from_f64(cap));
        let inv = V::<T, I>::splat(isa, T::from_f64(1.0 / cap));
        let (sw, g) = lane_weights::<T, I>(isa, self.sample_weight, &self.scale, grad, r0, valid);
        // SAFETY: the driver hands over `classes` columns of both inputs (and an output when
        // `grad`); every input column is read before the output is written.
        unsafe {
            let m = capv.mul(T::tanh(col_max(isa, &cols, classes).mul(inv)));
            let (mut se, mut st, mut sd) = (
                ColumnSum::<T, I>::new(isa),
                ColumnSum::<T, I>::new(isa),
                ColumnSum::<T, I>::new(isa),
            );
            for k in 0..classes {
                let t = T::tanh(cols.x(isa, k).mul(inv));
                let d = capv.mul(t).sub(m);
                let tw = self.weighted_column(isa, &cols, k);
                se.add(T::exp(d));
                st.add(tw);
                sd.add(tw.mul(d));
                if grad {
                    t.store(cols.out(k));
                }
            }
            let s = se.total();
            let t_total = st.total();
            let ln_s = T::ln(s);
            let mut loss = t_total.mul(ln_s).sub(sd.total());
            let mut coef = t_total;
            if self.z_loss > 0.0 {
                let (z, zc) = self.z_terms(m.add(ln_s));
                loss = loss.add(z);
                coef = coef.add(zc);
            }
            let loss = sw.mul(loss);
            if !grad {
                return loss;
            }
            if self.scale.is_zero() {
                for k in 0..classes {
                    zero.store(cols.out(k));
                }
                return loss;
            }
            let a = g.mul(coef).div(s);
            for k in 0..classes {
                let t = V::<T, I>::load(isa, cols.out(k));
                let e = T::exp(capv.mul(t).sub(m));
                let tw = self.weighted_column(isa, &cols, k);
                let out = e.mul(a).sub(g.mul(tw));
                out.mul(zero.sub(t).mul_add(t, one)).store(cols.out(k));
            }
            loss
        }
    }
}

impl<T: Float> RowKernel<T> for SoftTarget<'_, T> {
    /// As [`HardTarget`]'s.
    fn wants_scratch(&self) -> bool {
        self.softcap.is_some()
    }

    /// As [`HardTarget`]'s.
    fn prefetches_short_rows(&self) -> bool {
        self.softcap.is_some()
    }

    #[inline(always)]
    fn row<I: Isa>(&self, isa: I, r: usize, p: Ptrs<T>, n: usize) -> f64 {
        if let Some(cap) = self.softcap {
            // SAFETY: as for this function.
            return unsafe { self.capped_row(isa, r, p, n, cap) };
        }
        let lanes = V::<T, I>::LANES;
        let grad = !p.out.is_null();
        // SAFETY: n values at p.x, p.x2 are readable and at p.out writable; each logit is
        // read before its gradient slot is written.
        unsafe {
            let m = row_max(isa, p.x, n);
            let mv = V::<T, I>::splat(isa, m);
            let (mut se, mut st, mut sd) = (
                V::<T, I>::wide_zero(isa),
                V::<T, I>::wide_zero(isa),
                V::<T, I>::wide_zero(isa),
            );
            // Whole groups of four vectors: their three sums are added in the element
            // precision first, then widened once (as `row_sum_exp` does); all targets are
            // non-negative in practice, so these short sums do not cancel.
            let zero = V::<T, I>::splat(isa, T::ZERO);
            let mut start = 0;
            while start + 4 * lanes <= n {
                if interrupt::stopped_at(start) {
                    return 0.0;
                }
                let end = n.min(start + interrupt::ROW_CHECK);
                while start + 4 * lanes <= end {
                    prefetch_row(p.ahead, start, 4 * lanes);
                    let (mut e4, mut t4, mut d4) = (zero, zero, zero);
                    for i in (start..start + 4 * lanes).step_by(lanes) {
                        let d = V::<T, I>::load(isa, p.x.add(i)).sub(mv);
                        let e = T::exp(d);
                        let tw = self.weighted_at(isa, p.x2, i, lanes);
                        if grad {
                            e.store(p.out.add(i));
                        }
                        e4 = e4.add(e);
                        t4 = t4.add(tw);
                        d4 = tw.mul_add(d, d4);
                    }
                    se = e4.wide_add(se);
                    st = t4.wide_add(st);
                    sd = d4.wide_add(sd);
                    start += 4 * lanes;
                }
            }
            for i in (start..n).step_by(lanes) {
                let k = lanes.min(n - i);
                // Padding lanes of a partial vector add nothing: exp(-inf) = 0, d = 0, and
                // their target weight is 0.
                let e = T::exp(load_upto(isa, p.x.add(i), k, T::NEG_INFINITY).sub(mv));
                let d = load_upto(isa, p.x.add(i), k, m).sub(mv);
                let tw = self.weighted_at(isa, p.x2, i, k);
                if grad {
                    store_upto(e, p.out.add(i), k);
                }
                se = e.wide_add(se);
                st = tw.wide_add(st);
                sd = tw.mul(d).wide_add(sd);
            }
            let s = V::<T, I>::wide_sum(se);
            let t_total = V::<T, I>::wide_sum(st);
            let sw = self.sample_weight(r);
            let mut loss = sw * (t_total * s.ln() - V::<T, I>::wide_sum(sd));
            // The factor of p in the gradient.
            let mut coef = t_total;
            if self.z_loss > 0.0 {
                let lse = m.to_f64() + s.ln();
                loss += sw * self.z_loss * lse * lse;
                coef += 2.0 * self.z_loss * lse;
            }
            if grad {
                if self.scale.is_zero() {
                    zero_row(isa, p.out, n);
                } else {
                    let g = self.scale.at(r) * sw;
                    let a = V::<T, I>::splat(isa, T::from_f64(g * coef / s));
                    let gv = V::<T, I>::splat(isa, T::from_f64(g));
                    for seg in (0..n).step_by(interrupt::ROW_CHECK) {
                        if interrupt::stopped_at(seg) {
                            return 0.0;
                        }
                        for i in (seg..n.min(seg + interrupt::ROW_CHECK)).step_by(lanes) {
                            let k = lanes.min(n - i);
                            let e = load_upto(isa, p.out.add(i), k, T::ZERO);
                            let tw = self.weighted_at(isa, p.x2, i, k);
                            store_upto(e.mul(a).sub(gv.mul(tw)), p.out.add(i), k);
                        }
                    }
                }
            }
            loss
        }
    }

    #[inline(always)]
    fn lanes<I: Isa>(
        &self,
        isa: I,
        r0: usize,
        valid: usize,
        cols: Columns<T>,
        classes: usize,
    ) -> V<T, I> {
        if let Some(cap) = self.softcap {
            // SAFETY: as for this function.
            return unsafe { self.capped_lanes(isa, r0, valid, cols, classes, cap) };
        }
        let grad = cols.writes();
        let (sw, g) = lane_weights::<T, I>(isa, self.sample_weight, &self.scale, grad, r0, valid);
        // SAFETY: the driver hands over `classes` columns of both inputs (and an output when
        // `grad`); every input column is read before the output is written.
        unsafe {
            let m = col_max(isa, &cols, classes);
            let (mut t_total, mut sd) = (ColumnSum::<T, I>::new(isa), ColumnSum::<T, I>::new(isa));
            for k in 0..classes {
                let tw = self.weighted_column(isa, &cols, k);
                t_total.add(tw);
                sd.add(tw.mul(cols.x(isa, k).sub(m)));
            }
            let t_total = t_total.total();
            let s = col_sum_exp(isa, &cols, classes, m, grad);
            let mut loss = t_total.mul(T::ln(s)).sub(sd.total());
            // The factor of p in the gradient.
            let mut coef = t_total;
            if self.z_loss > 0.0 {
                let (z, zc) = self.z_terms(m.add(T::ln(s)));
                loss = loss.add(z);
                coef = coef.add(zc);
            }
            let loss = sw.mul(loss);
            if !grad {
                return loss;
            }
            let zero = V::<T, I>::splat(isa, T::ZERO);
            if self.scale.is_zero() {
                for k in 0..classes {
                    zero.store(cols.out(k));
                }
                return loss;
            }
            let a = g.mul(coef).div(s);
            for k in 0..classes {
                let e = V::<T, I>::load(isa, cols.out(k));
                let tw = self.weighted_column(isa, &cols, k);
                e.mul(a).sub(g.mul(tw)).store(cols.out(k));
            }
            loss
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{
        assert_close, at, at_every_level, exclusive, layouts, lse, row, values,
    };

    /// Naive torch-semantics hard-target loss and gradient of one row (before the `mean`
    /// division), with upstream factor `g`.
    fn reference_row(
        x: &[f64],
        y: usize,
        w: Option<&[f64]>,
        sw: f64,
        eps: f64,
        g: f64,
    ) -> (f64, Vec<f64>) {
        let c = x.len() as f64;
        let l = lse(x);
        let wc = |k: usize| w.map_or(1.0, |w| w[k]);
        let big_w: f64 = (0..x.len()).map(wc).sum();
        let smooth: f64 = (0..x.len()).map(|k| wc(k) * (l - x[k])).sum();
        let loss = sw * ((1.0 - eps) * wc(y) * (l - x[y]) + eps / c * smooth);
        let grad = (0..x.len())
            .map(|k| {
                let p = (x[k] - l).exp();
                let onehot = if k == y { 1.0 } else { 0.0 };
                g * sw * ((1.0 - eps) * wc(y) * (p - onehot) + eps / c * (big_w * p - wc(k)))
            })
            .collect();
        (loss, grad)
    }

    fn options<'a>(
        weight: Option<&'a [f64]>,
        sample_weight: Option<&'a [f64]>,
        reduction: Reduction,
        eps: f64,
    ) -> ClassOptions<'a, f64> {
        ClassOptions {
            weight,
            sample_weight,
            label_smoothing: eps,
            grad_output: GradOutput::Scalar(1.5),
            ..ClassOptions::plain(reduction)
        }
    }

    /// NLL as the cross-entropy kernel computed it before NLL had its own kernel (the
    /// `softmax: false` branches of `HardTarget`, verbatim), to prove [`Nll`] gives the same
    /// bits.
    struct LegacyNll<'a, T> {
        hard: HardTargets<'a, T>,
    }

    impl<T: Float> RowKernel<T> for LegacyNll<'_, T> {
        fn check_rows(&self, rows: Range<usize>) -> Result<f64, XentError> {
            self.hard.check_rows(rows)
        }

        fn row<I: Isa>(&self, isa: I, r: usize, p: Ptrs<T>, n: usize) -> f64 {
            let Some(y) = self.hard.target(r, n) else {
                // SAFETY: n values are writable at p.out (unless null).
                unsafe { zero_row(isa, p.out, n) };
                return 0.0;
            };
            let coef = self.hard.sample_weight(r) * self.hard.class_weight(y);
            // SAFETY: y < n values are readable at p.x.
            let x_y = unsafe { *p.x.add(y) }.to_f64();
            if !p.out.is_null() {
                // SAFETY: n values are writable at p.out.
                unsafe {
                    zero_row(isa, p.out, n);
                    *p.out.add(y) = T::from_f64(-coef * self.hard.scale.at(r));
                }
            }
            -coef * x_y
        }

        fn lanes<I: Isa>(
            &self,
            isa: I,
            r0: usize,
            valid: usize,
            cols: Columns<T>,
            classes: usize,
        ) -> V<T, I> {
            let h = &self.hard;
            let zero = V::<T, I>::splat(isa, T::ZERO);
            let one = V::<T, I>::splat(isa, T::ONE);
            let grad = cols.writes();
            let y = lane_classes::<T, I>(isa, h.targets, r0, valid, h.ignore_index);
            let mut w_y = [T::ONE; MAX_LANES];
            if let Some(w) = h.weight {
                for (j, wj) in w_y[..valid].iter_mut().enumerate() {
                    if let Some(t) = h.target(r0 + j, classes) {
                        *wj = w[t];
                    }
                }
            }
            // SAFETY: the array holds MAX_LANES >= LANES values.
            let w_y = unsafe { V::<T, I>::load(isa, w_y.as_ptr()) };
            let ignored = y.lt(zero);
            let (sw, g) = lane_weights::<T, I>(isa, h.sample_weight, &h.scale, grad, r0, valid);
            // SAFETY: the driver hands over `classes` columns (and an output when `grad`).
            unsafe {
                let mut m = V::<T, I>::splat(isa, T::NEG_INFINITY);
                let mut x_y = zero;
                let mut class = zero;
                for k in 0..classes {
                    let x = cols.x(isa, k);
                    m = m.max(x);
                    x_y = V::<T, I>::select(y.eq(class), x, x_y);
                    class = class.add(one);
                }
                let _ = m;
                if grad {
                    let hit = zero.sub(g.mul(w_y));
                    let mut class = zero;
                    for k in 0..classes {
                        V::<T, I>::select(y.eq(class), hit, zero).store(cols.out(k));
                        class = class.add(one);
                    }
                }
                V::<T, I>::select(ignored, zero, zero.sub(sw.mul(w_y).mul(x_y)))
            }
        }
    }

    /// One NLL call with the kernel `kernel` makes: the partial result, the per-sample losses
    /// (for `none`) and the gradient (when `grad`), as bits.
    fn nll_bits<'a, T: Float, K: RowKernel<T>>(
        x: &[T],
        layout: Layout,
        targets: Targets<'a>,
        target_shape: &'a [usize],
        opts: &'a ClassOptions<'a, T>,
        grad: bool,
        kernel: impl FnOnce(HardTargets<'a, T>) -> K,
    ) -> Vec<u64> {
        let mut out = vec![T::NAN; if grad { layout.len() } else { 0 }];
        let mut losses = vec![T::NAN; layout.rows()];
        let io = if grad {
            Io::ReadWrite {
                input: x,
                out: &mut out,
            }
        } else {
            Io::Read(x)
        };
        let none = opts.reduction == Reduction::None;
        let losses_out = none.then_some(&mut losses[..]);
        let p =
            hard_target_loss(io, layout, targets, target_shape, opts, losses_out, kernel).unwrap();
        let mut bits = vec![p.loss_sum.to_bits(), p.denominator.to_bits()];
        let as_bits = |v: &T| v.to_f64().to_bits();
        if none {
            bits.extend(losses.iter().map(as_bits));
        }
        bits.extend(out.iter().map(as_bits));
        bits
    }

    fn nll_kernel_matches_the_legacy_path<T: Float>() {
        for layout in layouts() {
            let rows = layout.rows();
            let x: Vec<T> = values(layout.len(), 13, 9.0)
                .iter()
                .map(|&v| T::from_f64(v))
                .collect();
            let mut t64: Vec<i64> = (0..rows)
                .map(|r| ((r * 5 + 1) % layout.classes) as i64)
                .collect();
            t64[rows / 3] = -100;
            let t32: Vec<i32> = t64.iter().map(|&t| t as i32).collect();
            let w: Vec<T> = (0..layout.classes)
                .map(|k| T::from_f64(0.25 + (k % 5) as f64 * 0.375))
                .collect();
            let sw: Vec<T> = (0..rows)
                .map(|r| T::from_f64(0.5 + (r % 7) as f64 * 0.125))
                .collect();
            let g: Vec<T> = (0..rows)
                .map(|r| T::from_f64(1.0 - (r % 3) as f64 * 0.7))
                .collect();
            let shape = [rows];
            for weight in [None, Some(&w[..])] {
                for sample_weight in [None, Some(&sw[..])] {
                    for (reduction, grad_output) in [
                        (Reduction::Mean, GradOutput::Scalar(1.5)),
                        (Reduction::Sum, GradOutput::Scalar(-0.75)),
                        (Reduction::None, GradOutput::Scalar(1.0)),
                        (Reduction::None, GradOutput::PerSample(&g[..])),
                    ] {
                        let opts = ClassOptions {
                            weight,
                            sample_weight,
                            grad_output,
                            ..ClassOptions::plain(reduction)
                        };
                        for grad in [false, true] {
                            for targets in [Targets::I64(&t64), Targets::I32(&t32)] {
                                at_every_level(|level| {
                                    let new = nll_bits(
                                        &x,
                                        layout,
                                        targets,
                                        &shape,
                                        &opts,
                                        grad,
                                        |hard| Nll { hard },
                                    );
                                    let old = nll_bits(
                                        &x,
                                        layout,
                                        targets,
                                        &shape,
                                        &opts,
                                        grad,
                                        |hard| LegacyNll { hard },
                                    );
                                    assert_eq!(
                                        new,
                                        old,
                                        "{level} {layout:?} {reduction:?} grad {grad} weights {} {}",
                                        weight.is_some(),
                                        sample_weight.is_some()
                                    );
                                });
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nll_kernel_matches_the_legacy_path_bit_for_bit() {
        let _g = exclusive();
        nll_kernel_matches_the_legacy_path::<f32>();
        nll_kernel_matches_the_legacy_path::<f64>();
    }

    #[test]
    fn hard_targets_match_reference_on_every_path() {
        let _g = exclusive();
        for layout in layouts() {
            let rows = layout.rows();
            let x = values(layout.len(), 5, 8.0);
            let mut targets: Vec<i64> = (0..rows)
                .map(|r| ((r * 7 + 3) % layout.classes) as i64)
                .collect();
            targets[rows / 2] = -100;
            let w: Vec<f64> = (0..layout.classes).map(|k| 0.5 + (k % 3) as f64).collect();
            let sw: Vec<f64> = (0..rows).map(|r| 1.0 + (r % 4) as f64 * 0.25).collect();
            for (weight, sample_weight, eps) in [
                (None, None, 0.0),
                (Some(&w[..]), None, 0.1),
                (Some(&w[..]), Some(&sw[..]), 0.3),
            ] {
                let mut want_sum = 0.0;
                let mut want_den = 0.0;
                let mut want_grad = vec![0.0; layout.len()];
                for r in 0..rows {
                    if targets[r] < 0 {
                        continue;
                    }
                    let y = targets[r] as usize;
                    let s = sample_weight.map_or(1.0, |s: &[f64]| s[r]);
                    let (loss, grad) = reference_row(&row(&x, layout, r), y, weight, s, eps, 1.0);
                    want_sum += loss;
                    want_den += weight.map_or(1.0, |w: &[f64]| w[y]) * s;
                    for (c, g) in grad.iter().enumerate() {
                        want_grad[at(layout, r, c)] = *g;
                    }
                }
                at_every_level(|level| {
                    let opts = options(weight, sample_weight, Reduction::Mean, eps);
                    let mut grad = vec![f64::NAN; layout.len()];
                    let io = Io::ReadWrite {
                        input: &x,
                        out: &mut grad,
                    };
                    let got =
                        cross_entropy(io, layout, Targets::I64(&targets), &[rows], &opts, None)
                            .unwrap()
                            .reduce(opts.reduction);
                    let what = format!("{level} {layout:?} eps {eps}");
                    assert_close(got, want_sum / want_den, 1e-12, &what);
                    for (g, w) in grad.iter().zip(&want_grad) {
                        assert_close(*g, 1.5 * w / want_den, 1e-12, &what);
                    }
                    let mut losses = vec![0.0; rows];
                    let opts = options(weight, sample_weight, Reduction::None, eps);
                    let io = Io::Read(&x);
                    cross_entropy(
                        io,
                        layout,
                        Targets::I64(&targets),
                        &[rows],
                        &opts,
                        Some(&mut losses),
                    )
                    .unwrap()
                    .reduce(opts.reduction);
                    assert_close(losses.iter().sum(), want_sum, 1e-12, &what);
                    assert_eq!(losses[rows / 2], 0.0);
                });
            }
        }
    }

    #[test]
    fn in_place_gradient_equals_separate_gradient() {
        let _g = exclusive();
        for layout in layouts() {
            let x: Vec<f32> = values(layout.len(), 9, 6.0)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let targets: Vec<i32> = (0..layout.rows())
                .map(|r| (r % layout.classes) as i32)
                .collect();
            let opts = ClassOptions {
                label_smoothing: 0.2,
                ..ClassOptions::plain(Reduction::Sum)
            };
            at_every_level(|_| {
                let t = Targets::I32(&targets);
                let mut sep = vec![0.0f32; layout.len()];
                let a = cross_entropy(
                    Io::ReadWrite {
                        input: &x,
                        out: &mut sep,
                    },
                    layout,
                    t,
                    &[],
                    &opts,
                    None,
                );
                let mut buf = x.clone();
                let b = cross_entropy(Io::InPlace(&mut buf), layout, t, &[], &opts, None);
                assert_eq!(a.unwrap(), b.unwrap());
                assert_eq!(sep, buf);
            });
        }
    }

    #[test]
    fn soft_targets_without_classes_lose_nothing() {
        // torch: -(t * log_softmax(x)).sum(1) of a (3, 0) input is 0 per row; sum 0, mean NaN.
        let layout = Layout::new(&[3, 0], 1).unwrap();
        for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
            for sample_weight in [None, Some(&[1.0, 2.0, 3.0][..])] {
                let opts = ClassOptions {
                    sample_weight,
                    label_smoothing: 0.1,
                    ..ClassOptions::plain(reduction)
                };
                let mut losses = vec![f64::NAN; 3];
                let per_row = (reduction == Reduction::None).then_some(&mut losses[..]);
                let got = cross_entropy_soft(Io::Read(&[]), layout, &[], &opts, per_row)
                    .unwrap()
                    .reduce(opts.reduction);
                match reduction {
                    Reduction::None => assert_eq!(losses, [0.0; 3]),
                    Reduction::Sum => assert_eq!(got, 0.0),
                    Reduction::Mean => assert!(got.is_nan(), "{got}"),
                }
                let mut grad: [f64; 0] = [];
                let io = Io::ReadWrite {
                    input: &[],
                    out: &mut grad,
                };
                let mut grad_losses = vec![f64::NAN; 3];
                let per_row = (reduction == Reduction::None).then_some(&mut grad_losses[..]);
                let with_grad = cross_entropy_soft(io, layout, &[], &opts, per_row)
                    .unwrap()
                    .reduce(opts.reduction);
                assert!(with_grad == got || (with_grad.is_nan() && got.is_nan()));
                if reduction == Reduction::None {
                    assert_eq!(grad_losses, [0.0; 3]);
                }
            }
        }
    }

    #[test]
    fn soft_targets_match_reference() {
        let _g = exclusive();
        for layout in layouts() {
            let x = values(layout.len(), 21, 5.0);
            let t: Vec<f64> = values(layout.len(), 22, 1.0)
                .iter()
                .map(|v| v.abs())
                .collect();
            let w: Vec<f64> = (0..layout.classes).map(|k| 1.0 + (k % 2) as f64).collect();
            let eps = 0.1;
            let c = layout.classes as f64;
            let (mut want, mut want_grad) = (0.0, vec![0.0; layout.len()]);
            for r in 0..layout.rows() {
                let (xr, tr) = (row(&x, layout, r), row(&t, layout, r));
                let l = lse(&xr);
                let tw: Vec<f64> = tr
                    .iter()
                    .enumerate()
                    .map(|(k, v)| w[k] * ((1.0 - eps) * v + eps / c))
                    .collect();
                let total: f64 = tw.iter().sum();
                want += tw.iter().zip(&xr).map(|(a, v)| a * (l - v)).sum::<f64>();
                for k in 0..layout.classes {
                    want_grad[at(layout, r, k)] = total * (xr[k] - l).exp() - tw[k];
                }
            }
            at_every_level(|level| {
                let opts = ClassOptions {
                    weight: Some(&w),
                    label_smoothing: eps,
                    ..ClassOptions::plain(Reduction::Sum)
                };
                let mut grad = vec![0.0; layout.len()];
                let got = cross_entropy_soft(
                    Io::ReadWrite {
                        input: &x,
                        out: &mut grad,
                    },
                    layout,
                    &t,
                    &opts,
                    None,
                )
                .unwrap()
                .reduce(opts.reduction);
                let what = format!("{level} {layout:?}");
                assert_close(got, want, 1e-12, &what);
                for (g, w) in grad.iter().zip(&want_grad) {
                    assert_close(*g, *w, 1e-12, &what);
                }
            });
        }
    }

    /// The capped logits of a row and the derivative of the cap at each (1 without a cap).
    fn capped(x: &[f64], cap: Option<f64>) -> (Vec<f64>, Vec<f64>) {
        match cap {
            None => (x.to_vec(), vec![1.0; x.len()]),
            Some(c) => x
                .iter()
                .map(|v| {
                    let t = (v / c).tanh();
                    (c * t, 1.0 - t * t)
                })
                .unzip(),
        }
    }

    /// [`reference_row`] with z-loss `z` and soft cap `cap`.
    #[allow(clippy::too_many_arguments)]
    fn reference_row_ext(
        x: &[f64],
        y: usize,
        w: Option<&[f64]>,
        sw: f64,
        eps: f64,
        z: f64,
        cap: Option<f64>,
        g: f64,
    ) -> (f64, Vec<f64>) {
        let (xc, dcap) = capped(x, cap);
        let (loss, grad) = reference_row(&xc, y, w, sw, eps, g);
        let l = lse(&xc);
        let w_y = w.map_or(1.0, |w| w[y]);
        let loss = loss + sw * z * w_y * l * l;
        let grad = grad
            .iter()
            .enumerate()
            .map(|(k, gk)| (gk + g * sw * 2.0 * z * w_y * l * (xc[k] - l).exp()) * dcap[k])
            .collect();
        (loss, grad)
    }

    /// Targets of every kind for a layout: a few ignored, the rest spread over the classes.
    fn spread_targets(layout: Layout) -> Vec<i64> {
        let rows = layout.rows();
        let mut t: Vec<i64> = (0..rows)
            .map(|r| ((r * 7 + 3) % layout.classes) as i64)
            .collect();
        t[rows / 2] = -100;
        t
    }

    /// Checks a hard-target call (`mean` with a gradient, then `none` without) against the
    /// float64 reference `reference` of one row (loss, gradient for upstream factor 1).
    #[allow(clippy::too_many_arguments)]
    fn check_hard_call<T: Float>(
        layout: Layout,
        x: &[f64],
        targets: &[i64],
        weight: Option<&[f64]>,
        sample_weight: Option<&[f64]>,
        opts: ClassOptions<'_, T>,
        tol: f64,
        call: impl Fn(Io<'_, T>, &ClassOptions<'_, T>, Option<&mut [T]>) -> Partial,
        reference: impl Fn(&[f64], usize, f64) -> (f64, Vec<f64>),
    ) {
        let rows = layout.rows();
        let (mut want_sum, mut want_den) = (0.0, 0.0);
        let mut want_grad = vec![0.0; layout.len()];
        for r in 0..rows {
            if targets[r] < 0 {
                continue;
            }
            let y = targets[r] as usize;
            let s = sample_weight.map_or(1.0, |s| s[r]);
            let (loss, grad) = reference(&row(x, layout, r), y, s);
            want_sum += loss;
            want_den += weight.map_or(1.0, |w| w[y]) * s;
            for (c, g) in grad.iter().enumerate() {
                want_grad[at(layout, r, c)] = *g;
            }
        }
        let xt: Vec<T> = x.iter().map(|&v| T::from_f64(v)).collect();
        at_every_level(|level| {
            let mut opts = opts;
            opts.reduction = Reduction::Mean;
            opts.grad_output = GradOutput::Scalar(T::from_f64(1.5).to_f64());
            let mut grad = vec![T::NAN; layout.len()];
            let io = Io::ReadWrite {
                input: &xt,
                out: &mut grad,
            };
            let got = call(io, &opts, None).reduce(Reduction::Mean);
            let what = format!("{level} {layout:?}");
            assert_close(got, want_sum / want_den, tol, &what);
            for (g, w) in grad.iter().zip(&want_grad) {
                assert_close(g.to_f64(), 1.5 * w / want_den, tol, &what);
            }
            opts.reduction = Reduction::None;
            let mut losses = vec![T::NAN; rows];
            call(Io::Read(&xt), &opts, Some(&mut losses));
            let total: f64 = losses.iter().map(|l| l.to_f64()).sum();
            assert_close(total, want_sum, tol, &what);
            assert_eq!(losses[rows / 2].to_f64(), 0.0);
        });
    }

    fn ext_options<'a, T: Float>(
        weight: Option<&'a [T]>,
        sample_weight: Option<&'a [T]>,
        eps: f64,
        z_loss: f64,
        softcap: Option<f64>,
    ) -> ClassOptions<'a, T> {
        ClassOptions {
            weight,
            sample_weight,
            label_smoothing: eps,
            grad_output: GradOutput::Scalar(1.5),
            z_loss,
            softcap,
            ..ClassOptions::plain(Reduction::Mean)
        }
    }

    fn z_loss_and_softcap_match_reference<T: Float>(tol: f64) {
        for layout in layouts() {
            let rows = layout.rows();
            let x = values(layout.len(), 5, 8.0);
            let targets = spread_targets(layout);
            let w: Vec<f64> = (0..layout.classes).map(|k| 0.5 + (k % 3) as f64).collect();
            let sw: Vec<f64> = (0..rows).map(|r| 1.0 + (r % 4) as f64 * 0.25).collect();
            let wt: Vec<T> = w.iter().map(|&v| T::from_f64(v)).collect();
            let swt: Vec<T> = sw.iter().map(|&v| T::from_f64(v)).collect();
            for (weights, eps, z, cap) in [
                (false, 0.0, 1e-2, None),
                (true, 0.1, 0.5, None),
                (false, 0.0, 0.0, Some(3.0)),
                (false, 0.2, 0.0, Some(5.0)),
                (true, 0.0, 0.1, Some(2.0)),
                (true, 0.3, 0.05, Some(30.0)),
            ] {
                let (wo, swo) = if weights {
                    (Some(&w[..]), Some(&sw[..]))
                } else {
                    (None, None)
                };
                let (wk, swk) = if weights {
                    (Some(&wt[..]), Some(&swt[..]))
                } else {
                    (None, None)
                };
                let opts = ext_options(wk, swk, eps, z, cap);
                check_hard_call(
                    layout,
                    &x,
                    &targets,
                    wo,
                    swo,
                    opts,
                    tol,
                    |io, o, l| {
                        cross_entropy(io, layout, Targets::I64(&targets), &[rows], o, l).unwrap()
                    },
                    |xr, y, s| reference_row_ext(xr, y, wo, s, eps, z, cap, 1.0),
                );
            }
        }
    }

    #[test]
    fn z_loss_and_softcap_match_reference_on_every_path() {
        let _g = exclusive();
        z_loss_and_softcap_match_reference::<f64>(1e-12);
        z_loss_and_softcap_match_reference::<f32>(2e-5);
    }

    #[test]
    fn soft_targets_with_z_loss_and_softcap_match_reference() {
        let _g = exclusive();
        for layout in layouts() {
            let x = values(layout.len(), 21, 6.0);
            let t: Vec<f64> = values(layout.len(), 22, 1.0)
                .iter()
                .map(|v| v.abs())
                .collect();
            let w: Vec<f64> = (0..layout.classes).map(|k| 1.0 + (k % 2) as f64).collect();
            let sw: Vec<f64> = (0..layout.rows()).map(|r| 0.5 + (r % 3) as f64).collect();
            let c = layout.classes as f64;
            for (eps, z, cap) in [
                (0.0, 0.1, None),
                (0.1, 0.0, Some(2.5)),
                (0.2, 0.3, Some(4.0)),
            ] {
                let (mut want, mut want_grad) = (0.0, vec![0.0; layout.len()]);
                for r in 0..layout.rows() {
                    let (xr, tr) = (row(&x, layout, r), row(&t, layout, r));
                    let (xc, dcap) = capped(&xr, cap);
                    let l = lse(&xc);
                    let tw: Vec<f64> = tr
                        .iter()
                        .enumerate()
                        .map(|(k, v)| w[k] * ((1.0 - eps) * v + eps / c))
                        .collect();
                    let total: f64 = tw.iter().sum();
                    let ce = tw.iter().zip(&xc).map(|(a, v)| a * (l - v)).sum::<f64>();
                    want += sw[r] * (ce + z * l * l);
                    for k in 0..layout.classes {
                        let p = (xc[k] - l).exp();
                        want_grad[at(layout, r, k)] =
                            sw[r] * ((total + 2.0 * z * l) * p - tw[k]) * dcap[k];
                    }
                }
                at_every_level(|level| {
                    let mut opts = ext_options(Some(&w), Some(&sw), eps, z, cap);
                    opts.reduction = Reduction::Sum;
                    opts.grad_output = GradOutput::Scalar(1.0);
                    let mut grad = vec![0.0; layout.len()];
                    let io = Io::ReadWrite {
                        input: &x,
                        out: &mut grad,
                    };
                    let got = cross_entropy_soft(io, layout, &t, &opts, None)
                        .unwrap()
                        .reduce(opts.reduction);
                    let what = format!("{level} {layout:?} {eps} {z} {cap:?}");
                    assert_close(got, want, 1e-12, &what);
                    for (g, w) in grad.iter().zip(&want_grad) {
                        assert_close(*g, *w, 1e-12, &what);
                    }
                    // In place: the first pass's tanh overwrites the input it was read from.
                    let mut buf = x.clone();
                    let again = cross_entropy_soft(Io::InPlace(&mut buf), layout, &t, &opts, None)
                        .unwrap()
                        .reduce(opts.reduction);
                    assert_eq!(again.to_bits(), got.to_bits(), "{what}");
                    assert_eq!(buf, grad, "{what}");
                });
            }
        }
    }

    #[test]
    fn softcap_in_place_equals_separate_gradient() {
        let _g = exclusive();
        for layout in layouts() {
            let x: Vec<f32> = values(layout.len(), 9, 20.0)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let targets: Vec<i32> = (0..layout.rows())
                .map(|r| (r % layout.classes) as i32)
                .collect();
            let mut opts = ext_options(None, None, 0.2, 1e-3, Some(10.0));
            opts.reduction = Reduction::Sum;
            at_every_level(|_| {
                let t = Targets::I32(&targets);
                let mut sep = vec![0.0f32; layout.len()];
                let io = Io::ReadWrite {
                    input: &x,
                    out: &mut sep,
                };
                let a = cross_entropy(io, layout, t, &[], &opts, None);
                let mut buf = x.clone();
                let b = cross_entropy(Io::InPlace(&mut buf), layout, t, &[], &opts, None);
                assert_eq!(a.unwrap(), b.unwrap());
                assert_eq!(sep, buf);
            });
        }
    }

    /// Focal loss of one row and its gradient (upstream factor 1), naively in float64.
    fn focal_row(x: &[f64], y: usize, w: Option<&[f64]>, sw: f64, gamma: f64) -> (f64, Vec<f64>) {
        let l = lse(x);
        let lp = x[y] - l;
        let p = lp.exp();
        let q = 1.0 - p;
        let w_y = w.map_or(1.0, |w| w[y]);
        let loss = -sw * w_y * q.powf(gamma) * lp;
        // Where p = 1 (one class), the second term's limit is 0.
        let focus = if q == 0.0 {
            0.0
        } else {
            gamma * p * q.powf(gamma - 1.0) * lp
        };
        let coef = sw * w_y * (q.powf(gamma) - focus);
        let grad = (0..x.len())
            .map(|k| coef * ((x[k] - l).exp() - if k == y { 1.0 } else { 0.0 }))
            .collect();
        (loss, grad)
    }

    fn focal_matches_reference<T: Float>(tol: f64) {
        for layout in layouts() {
            let rows = layout.rows();
            let x = values(layout.len(), 15, 4.0);
            let targets = spread_targets(layout);
            let w: Vec<f64> = (0..layout.classes).map(|k| 0.5 + (k % 3) as f64).collect();
            let sw: Vec<f64> = (0..rows).map(|r| 1.0 + (r % 4) as f64 * 0.25).collect();
            let wt: Vec<T> = w.iter().map(|&v| T::from_f64(v)).collect();
            let swt: Vec<T> = sw.iter().map(|&v| T::from_f64(v)).collect();
            for (weights, gamma) in [
                (false, 2.0),
                (true, 2.0),
                (true, 1.0),
                (false, 0.5),
                (true, 3.5),
            ] {
                let (wo, swo, wk, swk) = if weights {
                    (Some(&w[..]), Some(&sw[..]), Some(&wt[..]), Some(&swt[..]))
                } else {
                    (None, None, None, None)
                };
                let opts = ext_options(wk, swk, 0.0, 0.0, None);
                check_hard_call(
                    layout,
                    &x,
                    &targets,
                    wo,
                    swo,
                    opts,
                    tol,
                    |io, o, l| {
                        let t = Targets::I64(&targets);
                        focal_loss(io, layout, t, &[rows], o, gamma, l).unwrap()
                    },
                    |xr, y, s| focal_row(xr, y, wo, s, gamma),
                );
            }
        }
    }

    #[test]
    fn focal_loss_matches_reference_on_every_path() {
        let _g = exclusive();
        focal_matches_reference::<f64>(1e-11);
        focal_matches_reference::<f32>(2e-5);
    }

    #[test]
    fn focal_loss_is_finite_where_the_target_is_certain() {
        // p = 1 exactly (one class, or a logit far above the rest): loss 0, gradient 0, for
        // every gamma (gamma < 1 included, where (1-p)^(gamma-1) is infinite).
        let layout = Layout {
            outer: 2,
            classes: 3,
            inner: 1,
        };
        let x = [0.0f64, 500.0, 0.0, 1.0, 2.0, 3.0];
        let opts = ext_options(None, None, 0.0, 0.0, None);
        for gamma in [0.25, 1.0, 2.0] {
            let mut grad = [f64::NAN; 6];
            let io = Io::ReadWrite {
                input: &x,
                out: &mut grad,
            };
            let t = Targets::I64(&[1, -100]);
            let got = focal_loss(io, layout, t, &[2], &opts, gamma, None)
                .unwrap()
                .reduce(Reduction::Mean);
            assert_eq!(got, 0.0, "{gamma}");
            assert!(grad.iter().all(|g| *g == 0.0), "{gamma} {grad:?}");
        }
    }

    #[test]
    fn focal_loss_without_focus_is_cross_entropy_bit_for_bit() {
        let _g = exclusive();
        let layout = Layout {
            outer: 50,
            classes: 7,
            inner: 1,
        };
        let x: Vec<f32> = values(layout.len(), 3, 5.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let targets = spread_targets(layout);
        let opts = ext_options(None, None, 0.0, 0.0, None);
        let t = Targets::I64(&targets);
        let (mut a, mut b) = (vec![0.0f32; layout.len()], vec![0.0f32; layout.len()]);
        let io = Io::ReadWrite {
            input: &x,
            out: &mut a,
        };
        let focal = focal_loss(io, layout, t, &[50], &opts, 0.0, None).unwrap();
        let io = Io::ReadWrite {
            input: &x,
            out: &mut b,
        };
        let ce = cross_entropy(io, layout, t, &[50], &opts, None).unwrap();
        assert_eq!(focal, ce);
        assert_eq!(a, b);
    }

    #[test]
    fn new_options_are_checked() {
        let layout = Layout {
            outer: 2,
            classes: 3,
            inner: 1,
        };
        let x = vec![0.0f64; 6];
        let t = Targets::I64(&[0, 1]);
        let value_error = |opts: &ClassOptions<'_, f64>| match cross_entropy(
            Io::Read(&x),
            layout,
            t,
            &[2],
            opts,
            None,
        ) {
            Err(XentError::Value(m)) => m,
            other => panic!("{other:?}"),
        };
        for z in [-1.0, f64::NAN, f64::INFINITY] {
            let m = value_error(&ext_options(None, None, 0.0, z, None));
            assert_eq!(
                m,
                format!("z_loss must be a finite number >= 0.0, got {z:?}")
            );
        }
        for c in [0.0, -2.0, f64::NAN, f64::INFINITY] {
            let m = value_error(&ext_options(None, None, 0.0, 0.0, Some(c)));
            assert_eq!(
                m,
                format!("softcap must be a finite number > 0.0 (or None for no cap), got {c:?}")
            );
        }
        let opts = ext_options(None, None, 0.0, 0.0, None);
        for gamma in [-0.5, f64::NAN] {
            let got = focal_loss(Io::Read(&x), layout, t, &[2], &opts, gamma, None);
            assert_eq!(
                got,
                Err(XentError::Value(format!(
                    "gamma must be a finite number >= 0.0, got {gamma:?}"
                )))
            );
        }
        let capped = ext_options(None, None, 0.0, 0.0, Some(1.0));
        assert!(nll_loss(Io::Read(&x), layout, t, &[2], &capped, None).is_err());
        assert!(focal_loss(Io::Read(&x), layout, t, &[2], &capped, 2.0, None).is_err());
    }

    #[test]
    fn nll_reads_the_target_log_probability() {
        let _g = exclusive();
        let layout = Layout {
            outer: 3,
            classes: 4,
            inner: 1,
        };
        let x: Vec<f64> = (0..12).map(|i| -(i as f64)).collect();
        let targets = [1i64, -100, 3];
        let opts = options(None, None, Reduction::Mean, 0.0);
        at_every_level(|_| {
            let mut grad = vec![9.0; 12];
            let io = Io::ReadWrite {
                input: &x,
                out: &mut grad,
            };
            let got = nll_loss(io, layout, Targets::I64(&targets), &[3], &opts, None)
                .unwrap()
                .reduce(opts.reduction);
            assert_eq!(got, (1.0 + 11.0) / 2.0);
            let mut want = vec![0.0; 12];
            want[1] = -0.75;
            want[11] = -0.75;
            assert_eq!(grad, want);
        });
    }

    #[test]
    fn out_of_range_target_is_refused_before_writing() {
        let layout = Layout {
            outer: 2,
            classes: 3,
            inner: 2,
        };
        let x = vec![0.0f64; 12];
        let targets = [0i64, 1, 2, 3];
        let opts = options(None, None, Reduction::Mean, 0.0);
        let mut grad = vec![7.0; 12];
        let io = Io::ReadWrite {
            input: &x,
            out: &mut grad,
        };
        let err =
            cross_entropy(io, layout, Targets::I64(&targets), &[2, 2], &opts, None).unwrap_err();
        assert_eq!(
            err,
            XentError::ClassIndex {
                value: 3,
                position: vec![1, 1],
                classes: 3
            }
        );
        assert!(grad.iter().all(|&g| g == 7.0));
    }

    #[test]
    fn targets_checked_in_the_pass_match_the_check_before_it() {
        let _g = exclusive();
        // Enough rows for several blocks; a forward call checks its targets block by block
        // (lane groups, C <= 32, after they ran; contiguous rows before).
        for classes in [10, 40] {
            let rows = 400_000 / classes;
            let layout = Layout {
                outer: rows,
                classes,
                inner: 1,
            };
            let x = values(layout.len(), 3, 4.0);
            let mut targets: Vec<i64> = (0..rows).map(|r| (r * 7 % classes) as i64).collect();
            for r in (5..rows).step_by(9) {
                targets[r] = -100;
            }
            let opts = options(None, None, Reduction::Mean, 0.0);
            let forward = |t: &[i64]| {
                cross_entropy(Io::Read(&x), layout, Targets::I64(t), &[rows], &opts, None)
            };
            for threads in [1, 2, 3] {
                crate::parallel::set_num_threads(threads).unwrap();
                let loss = forward(&targets).unwrap();
                // With a gradient, the targets are checked (and counted) before the pass.
                let mut grad = vec![0.0; layout.len()];
                let io = Io::ReadWrite {
                    input: &x,
                    out: &mut grad,
                };
                let with_grad =
                    cross_entropy(io, layout, Targets::I64(&targets), &[rows], &opts, None)
                        .unwrap()
                        .reduce(opts.reduction);
                assert_eq!(loss.reduce(opts.reduction).to_bits(), with_grad.to_bits());
                // Bad targets in two blocks: the first one is reported.
                for (early, late) in [(-1, classes as i64), (i64::MIN, i64::MAX)] {
                    let mut bad = targets.clone();
                    bad[rows * 3 / 4] = late;
                    bad[rows * 2 / 5] = early;
                    let err = forward(&bad).unwrap_err();
                    assert_eq!(
                        err,
                        XentError::ClassIndex {
                            value: early as i128,
                            position: vec![rows * 2 / 5],
                            classes
                        }
                    );
                }
            }
        }
    }

    #[test]
    fn mean_over_nothing_is_nan_with_zero_gradient() {
        let layout = Layout {
            outer: 2,
            classes: 3,
            inner: 1,
        };
        let x = vec![1.0f32, f32::NAN, 0.0, 2.0, 3.0, 4.0];
        let targets = [-100i64, -100];
        let opts = ClassOptions::plain(Reduction::Mean);
        let mut grad = vec![5.0f32; 6];
        let io = Io::ReadWrite {
            input: &x,
            out: &mut grad,
        };
        let got = cross_entropy(io, layout, Targets::I64(&targets), &[2], &opts, None)
            .unwrap()
            .reduce(opts.reduction);
        assert!(got.is_nan());
        assert_eq!(grad, vec![0.0; 6]);
    }

    #[test]
    fn options_are_checked() {
        let layout = Layout {
            outer: 2,
            classes: 3,
            inner: 1,
        };
        let x = vec![0.0f64; 6];
        let t = Targets::I64(&[0, 1]);
        let mut opts = options(None, None, Reduction::Mean, 1.5);
        assert!(matches!(
            cross_entropy(Io::Read(&x), layout, t, &[2], &opts, None),
            Err(XentError::Value(_))
        ));
        opts.label_smoothing = 0.0;
        opts.weight = Some(&[1.0, 2.0]);
        assert!(matches!(
            cross_entropy(Io::Read(&x), layout, t, &[2], &opts, None),
            Err(XentError::Shape(_))
        ));
        assert!(Reduction::parse("avg").is_err());
    }

    #[test]
    fn results_do_not_depend_on_thread_count() {
        let _g = exclusive();
        let layout = Layout {
            outer: 300,
            classes: 700,
            inner: 1,
        };
        let x: Vec<f32> = values(layout.len(), 1, 10.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let targets: Vec<i64> = (0..300).map(|r| (r * 13 % 700) as i64).collect();
        let opts = ClassOptions {
            label_smoothing: 0.1,
            ..ClassOptions::plain(Reduction::Mean)
        };
        let run = |threads: usize| {
            crate::parallel::set_num_threads(threads).unwrap();
            let mut grad = vec![0.0f32; layout.len()];
            let io = Io::ReadWrite {
                input: &x,
                out: &mut grad,
            };
            let loss = cross_entropy(io, layout, Targets::I64(&targets), &[300], &opts, None)
                .unwrap()
                .reduce(opts.reduction);
            (loss.to_bits(), grad)
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }

    #[test]
    fn denominator_is_the_one_the_loss_divides_by() {
        let (rows, classes) = (50, 7);
        let layout = Layout {
            outer: rows,
            classes,
            inner: 1,
        };
        let x = values(layout.len(), 5, 3.0);
        let mut targets: Vec<i64> = (0..rows).map(|r| (r * 3 % classes) as i64).collect();
        targets[4] = -100;
        let w: Vec<f64> = (0..classes).map(|k| 0.5 + k as f64 / 3.0).collect();
        let sw: Vec<f64> = (0..rows).map(|r| 1.0 + (r % 4) as f64 / 7.0).collect();
        for (weight, sample_weight) in [
            (None, None),
            (Some(&w[..]), None),
            (Some(&w[..]), Some(&sw[..])),
        ] {
            let opts = ClassOptions {
                weight,
                sample_weight,
                ..ClassOptions::plain(Reduction::Mean)
            };
            let mut grad = vec![0.0; layout.len()];
            let io = Io::ReadWrite {
                input: &x,
                out: &mut grad,
            };
            let want = cross_entropy(io, layout, Targets::I64(&targets), &[rows], &opts, None)
                .unwrap()
                .denominator;
            let got = hard_target_denominator(
                Targets::I64(&targets),
                &[rows],
                classes,
                weight,
                sample_weight,
                -100,
            )
            .unwrap();
            assert_eq!(got.to_bits(), want.to_bits());
        }
        let mut bad = targets.clone();
        bad[9] = classes as i64;
        let err =
            hard_target_denominator::<f64>(Targets::I64(&bad), &[5, 10], classes, None, None, -100)
                .unwrap_err();
        assert_eq!(
            err,
            XentError::ClassIndex {
                value: classes as i128,
                position: vec![0, 9],
                classes
            }
        );
    }
}
