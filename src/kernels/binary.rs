//! Binary cross entropy on probabilities and on logits, and the binary focal loss on logits,
//! element by element, with the gradient from the same pass.
//!
//! torch's formulas, with `w` the weight and `pw` the positive-class weight:
//!
//! ```text
//! probabilities  loss = -w [ t max(ln p, -100) + (1-t) max(ln(1-p), -100) ]
//!                grad = g w (p - t) / max(p (1-p), 1e-12f)
//! logits         loss = w [ (1-t) x + (1 + (pw-1) t) (ln(1 + e^-|x|) + max(-x, 0)) ]
//!                grad = g w [ (pw t + 1 - t) sigmoid(x) - pw t ]
//! focal          loss = w a ce q^γ      (torchvision's sigmoid_focal_loss, see [`Focal`])
//! ```
//!
//! `mean` divides by the number of elements. The element-wise driver ([`pointwise`]) is
//! shared with the other element-wise losses ([`kl_div`](crate::kernels::kl_div)): it loads,
//! weights, scales, stores and sums around one loss's [`Terms`]. Weights broadcast against the input as a
//! [`Broadcast`]: the common NumPy broadcasts (a scalar, a trailing `(C,)`, `(N, 1)`,
//! `(C, 1, 1)`, the full shape) are all of the form "value `(i / repeat) % len` for flat
//! element `i`".

use crate::error::{XentError, unravel};
use crate::float::{Float, Storage};
use crate::kernels::lanes::{V, live_lanes};
use crate::kernels::stage::Stage;
use crate::kernels::stats::{load_upto, store_upto};
use crate::kernels::{GradOutput, Io, Partial, RawIn, RawOut, Reduction, check_len};
use crate::parallel;
use crate::reduce::pairwise_sum;
use crate::simd::{self, Isa, Lane, Vector, WithIsa};

/// Elements per chunk for which broadcast operands are laid out contiguously.
const CHUNK: usize = 512;

/// A per-element operand broadcast against the input: flat element `i` uses
/// `values[(i / repeat) % values.len()]`.
#[derive(Clone, Copy, Debug)]
pub struct Broadcast<'a, T> {
    /// The distinct values.
    pub values: &'a [T],
    /// How many consecutive elements share a value.
    pub repeat: usize,
}

impl<T: Float> Broadcast<'_, T> {
    fn check(&self, what: &str) -> Result<(), XentError> {
        if self.values.is_empty() || self.repeat == 0 {
            return Err(XentError::Shape(format!("{what} is empty")));
        }
        Ok(())
    }

    /// Pointer to the values of elements `start .. start + n`: straight into `values` when
    /// they are stored there in order, else laid out in `buf`.
    #[inline(always)]
    fn chunk(&self, start: usize, n: usize, buf: &mut [T; CHUNK]) -> *const T {
        let len = self.values.len();
        if self.repeat == 1 && start % len + n <= len {
            return self.values[start % len..].as_ptr();
        }
        if len == 1 {
            // A scalar (or shape (1,)) operand: one fill, where the loop below would copy one
            // value per step (5x the cost of the whole unweighted call).
            buf[..n].fill(self.values[0]);
            return buf.as_ptr();
        }
        let mut pos = 0;
        let mut i = start;
        while pos < n {
            if self.repeat == 1 {
                let at = i % len;
                let run = (len - at).min(n - pos);
                buf[pos..pos + run].copy_from_slice(&self.values[at..at + run]);
                pos += run;
                i += run;
            } else {
                let run = (self.repeat - i % self.repeat).min(n - pos);
                buf[pos..pos + run].fill(self.values[(i / self.repeat) % len]);
                pos += run;
                i += run;
            }
        }
        buf.as_ptr()
    }
}

/// Options of the binary losses.
#[derive(Clone, Copy, Debug)]
pub struct BinaryOptions<'a, T> {
    /// Per-element weight.
    pub weight: Option<Broadcast<'a, T>>,
    /// Positive-class weight (logits only).
    pub pos_weight: Option<Broadcast<'a, T>>,
    /// How losses are combined.
    pub reduction: Reduction,
    /// The upstream gradient; per element for `none`.
    pub grad_output: GradOutput<'a, T>,
}

/// Binary cross entropy of probabilities `io` (gradient written unless [`Io::Read`]).
/// `shape` is the input's shape (for error positions). Per-element losses go to `losses` for
/// [`Reduction::None`]; returns their sum and the `mean` denominator (the number of elements)
/// whatever the reduction.
pub fn binary_cross_entropy<S: Storage>(
    io: Io<'_, S>,
    target: &[S],
    shape: &[usize],
    opts: &BinaryOptions<'_, S::Compute>,
    losses: Option<&mut [S]>,
) -> Result<Partial, XentError> {
    no_pos_weight(opts, "binary_cross_entropy")?;
    check_probabilities(&io, shape)?;
    let n = io.len() as f64;
    pointwise(io, target, opts, losses, Probabilities, n)
}

/// Only the loss on logits has a `pos_weight`: the error for `loss`, which has none.
fn no_pos_weight<T>(opts: &BinaryOptions<'_, T>, loss: &str) -> Result<(), XentError> {
    match opts.pos_weight {
        Some(_) => Err(XentError::Value(format!("{loss} has no pos_weight"))),
        None => Ok(()),
    }
}

/// Binary cross entropy of logits `io`; see [`binary_cross_entropy`].
pub fn binary_cross_entropy_with_logits<S: Storage>(
    io: Io<'_, S>,
    target: &[S],
    opts: &BinaryOptions<'_, S::Compute>,
    losses: Option<&mut [S]>,
) -> Result<Partial, XentError> {
    let n = io.len() as f64;
    pointwise(io, target, opts, losses, Logits, n)
}

/// Refuses probabilities outside `[0, 1]` (NaN included), naming the first one.
fn check_probabilities<S: Storage>(io: &Io<'_, S>, shape: &[usize]) -> Result<(), XentError> {
    let x: &[S] = match io {
        Io::Read(x) => x,
        Io::ReadWrite { input, .. } => input,
        Io::InPlace(x) => x,
    };
    let blocks = parallel::blocks(x.len(), 1, 1);
    let bad = parallel::map_blocks(blocks, x.len(), |r| {
        let start = r.start;
        let chunk = &x[r];
        if simd::dispatch(InUnitRange { x: chunk }) {
            return None;
        }
        chunk
            .iter()
            .map(|p| p.widen())
            .position(|p| !(p >= Lane::ZERO && p <= Lane::ONE))
            .map(|i| start + i)
    })?;
    match bad.into_iter().flatten().next() {
        None => Ok(()),
        Some(i) => Err(XentError::Value(format!(
            "all elements of input should be between 0 and 1: got {:?} at position {}",
            x[i].widen(),
            crate::error::format_index(&unravel(i, shape))
        ))),
    }
}

/// Whether every value lies in `[0, 1]` (NaN does not).
struct InUnitRange<'a, S> {
    x: &'a [S],
}

impl<S: Storage> WithIsa for InUnitRange<'_, S> {
    type Output = bool;

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) -> bool {
        in_unit_range::<S::Compute, S, I>(isa, self.x)
    }
}

/// [`InUnitRange`], with the compute type named.
#[inline(always)]
fn in_unit_range<T: Float, S: Storage<Compute = T>, I: Isa>(isa: I, x: &[S]) -> bool {
    let lanes = V::<T, I>::LANES;
    let (zero, one) = (
        V::<T, I>::splat(isa, T::ZERO),
        V::<T, I>::splat(isa, T::ONE),
    );
    let mut bad = zero;
    let mut stage = Stage::<S>::new(true, CHUNK);
    for chunk in x.chunks(CHUNK) {
        let n = chunk.len();
        // SAFETY: the chunk's n <= CHUNK values.
        let p = unsafe { stage.read(isa, chunk.as_ptr(), n) };
        for i in (0..n).step_by(lanes) {
            // SAFETY: i < n values remain; padding lanes read as 0, which is in range.
            let v = unsafe { load_upto(isa, p.add(i), lanes.min(n - i), T::ZERO) };
            bad = bad.max(V::<T, I>::select(v.lt(zero), one, zero));
            bad = bad.max(V::<T, I>::select(one.lt(v), one, zero));
            bad = bad.max(V::<T, I>::select(v.is_nan(), one, zero));
        }
    }
    bad.reduce_max() == T::ZERO
}

/// The per-element arithmetic of one element-wise loss; [`pointwise`] does the rest.
pub(crate) trait Terms<T: Float>: Sync {
    /// Loss and unscaled gradient (with respect to `x`) of inputs `x` with targets `t`, and
    /// positive-class weights `pw` when the call has them. Must be `#[inline(always)]`: it is
    /// compiled into the driver's instruction set.
    fn terms<I: Isa>(&self, x: V<T, I>, t: V<T, I>, pw: Option<V<T, I>>) -> (V<T, I>, V<T, I>);
}

/// BCE on probabilities.
struct Probabilities;

impl<T: Float> Terms<T> for Probabilities {
    #[inline(always)]
    fn terms<I: Isa>(&self, p: V<T, I>, t: V<T, I>, _: Option<V<T, I>>) -> (V<T, I>, V<T, I>) {
        probability_terms::<T, I>(p, t)
    }
}

/// BCE on logits, with or without `pos_weight`.
struct Logits;

impl<T: Float> Terms<T> for Logits {
    #[inline(always)]
    fn terms<I: Isa>(&self, x: V<T, I>, t: V<T, I>, pw: Option<V<T, I>>) -> (V<T, I>, V<T, I>) {
        match pw {
            None => logit_terms::<T, I>(x, t),
            Some(pw) => weighted_logit_terms::<T, I>(x, t, pw),
        }
    }
}

/// Runs an element-wise loss over `io` (the input, and the gradient unless [`Io::Read`]) and
/// `target`, both of `n` elements: `opts.weight` multiplies loss and gradient, the gradient
/// is scaled by the upstream gradient (divided by `denominator` for `mean`), per-element
/// losses go to `losses` for [`Reduction::None`]. Returns the loss sum and `denominator`.
pub(crate) fn pointwise<S: Storage, K: Terms<S::Compute>>(
    mut io: Io<'_, S>,
    target: &[S],
    opts: &BinaryOptions<'_, S::Compute>,
    losses: Option<&mut [S]>,
    kind: K,
    denominator: f64,
) -> Result<Partial, XentError> {
    let n = io.len();
    check_len("the target", target.len(), n)?;
    if let Some(w) = &opts.weight {
        w.check("weight")?;
    }
    if let Some(pw) = &opts.pos_weight {
        pw.check("pos_weight")?;
    }
    if let GradOutput::PerSample(g) = opts.grad_output {
        if opts.reduction != Reduction::None {
            return Err(XentError::Shape(
                "grad_output must be a scalar for reduction \"mean\" or \"sum\"".into(),
            ));
        }
        check_len("grad_output", g.len(), n)?;
    }
    match (opts.reduction, losses.as_deref()) {
        (Reduction::None, Some(l)) => check_len("the loss output", l.len(), n)?,
        (Reduction::None, None) => {
            return Err(XentError::Value(
                "reduction \"none\" needs a buffer for the losses".into(),
            ));
        }
        _ => {}
    }
    let grad_scale = match (opts.grad_output, opts.reduction) {
        (GradOutput::Scalar(_), Reduction::Mean) if denominator == 0.0 => Some(0.0),
        (GradOutput::Scalar(g), Reduction::Mean) => Some(g / denominator),
        (GradOutput::Scalar(g), _) => Some(g),
        (GradOutput::PerSample(_), _) => None,
    };
    let (x, grad) = io.raw()?;
    let job = Job {
        x,
        target: RawIn::new(target),
        grad,
        losses: losses.map(RawOut::new),
        opts: *opts,
        grad_scale,
        kind,
    };
    let blocks = parallel::blocks(n, 1, CHUNK);
    let sums = parallel::map_blocks(blocks, n, |range| {
        simd::dispatch(JobBlock { job: &job, range })
    })?;
    Ok(Partial {
        loss_sum: pairwise_sum(&sums),
        denominator,
    })
}

/// One call's buffers and options.
struct Job<'a, S: Storage, K> {
    x: RawIn<S>,
    target: RawIn<S>,
    grad: Option<RawOut<S>>,
    losses: Option<RawOut<S>>,
    opts: BinaryOptions<'a, S::Compute>,
    /// The uniform upstream gradient factor, or `None` when it is per element.
    grad_scale: Option<f64>,
    kind: K,
}

struct JobBlock<'j, 'a, S: Storage, K> {
    job: &'j Job<'a, S, K>,
    range: std::ops::Range<usize>,
}

impl<S: Storage, K: Terms<S::Compute>> WithIsa for JobBlock<'_, '_, S, K> {
    type Output = f64;

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) -> f64 {
        job_block::<S::Compute, S, K, I>(isa, self.job, self.range)
    }
}

/// [`JobBlock`], with the compute type named. Staged storage is widened a chunk at a time
/// (input and target) into stack buffers, and the chunk's losses and gradient narrowed
/// from them.
#[inline(always)]
fn job_block<T: Float, S: Storage<Compute = T>, K: Terms<T>, I: Isa>(
    isa: I,
    job: &Job<'_, S, K>,
    range: std::ops::Range<usize>,
) -> f64 {
    let lanes = V::<T, I>::LANES;
    let (zero, one) = (
        V::<T, I>::splat(isa, T::ZERO),
        V::<T, I>::splat(isa, T::ONE),
    );
    let uniform = V::<T, I>::splat(isa, T::from_f64(job.grad_scale.unwrap_or(0.0)));
    let per_element = match (job.grad_scale, job.opts.grad_output) {
        (None, GradOutput::PerSample(go)) => go.as_ptr(),
        _ => std::ptr::null(),
    };
    let mut wbuf = [T::ZERO; CHUNK];
    let mut pbuf = [T::ZERO; CHUNK];
    let staged = |used: bool| Stage::<S>::new(used, CHUNK);
    let (mut xs, mut ts) = (staged(true), staged(true));
    let (mut ls, mut gs) = (staged(job.losses.is_some()), staged(job.grad.is_some()));
    let mut acc = V::<T, I>::wide_zero(isa);
    let mut start = range.start;
    while start < range.end {
        let n = CHUNK.min(range.end - start);
        let w = match job.opts.weight {
            Some(b) => b.chunk(start, n, &mut wbuf),
            None => std::ptr::null(),
        };
        let pw = match job.opts.pos_weight {
            Some(b) => b.chunk(start, n, &mut pbuf),
            None => std::ptr::null(),
        };
        let losses = job
            .losses
            .map_or(std::ptr::null_mut(), |l| l.ptr().wrapping_add(start));
        let grads = job
            .grad
            .map_or(std::ptr::null_mut(), |g| g.ptr().wrapping_add(start));
        // SAFETY: elements start .. start+n lie inside every per-element buffer; each stage
        // holds a chunk.
        let (xp, tp) = unsafe {
            (
                xs.read(isa, job.x.ptr().add(start), n),
                ts.read(isa, job.target.ptr().add(start), n),
            )
        };
        let (lp, gp) = (ls.write(losses), gs.write(grads));
        for i in (0..n).step_by(lanes) {
            let k = lanes.min(n - i);
            // SAFETY: elements i .. i+k of the chunk lie inside every per-element buffer (or
            // stage) and inside the chunk buffers; each element is written by this block only.
            unsafe {
                let x = load_upto(isa, xp.add(i), k, T::ZERO);
                let t = load_upto(isa, tp.add(i), k, T::ZERO);
                // An `if`, not `bool::then` with a closure: a closure is not
                // `#[inline(always)]`, and one left out of line would run its load outside
                // the instruction set's code.
                let pw = if pw.is_null() {
                    None
                } else {
                    Some(load_upto(isa, pw.add(i), k, T::ONE))
                };
                let (mut loss, mut grad) = job.kind.terms(x, t, pw);
                if !w.is_null() {
                    let w = load_upto(isa, w.add(i), k, T::ZERO);
                    loss = loss.mul(w);
                    grad = grad.mul(w);
                }
                if !lp.is_null() {
                    store_upto(loss, lp.add(i), k);
                }
                if k == lanes {
                    acc = loss.wide_add(acc);
                } else {
                    let live = live_lanes::<T, I>(isa, k).eq(one);
                    acc = V::<T, I>::select(live, loss, zero).wide_add(acc);
                }
                if !gp.is_null() {
                    let scale = if per_element.is_null() {
                        uniform
                    } else {
                        load_upto(isa, per_element.add(start + i), k, T::ZERO)
                    };
                    store_upto(grad.mul(scale), gp.add(i), k);
                }
            }
        }
        // SAFETY: as above.
        unsafe {
            ls.flush(isa, losses, n);
            gs.flush(isa, grads, n);
        }
        start += n;
    }
    V::<T, I>::wide_sum(acc)
}

/// torch's clamp of the gradient's denominator `p (1 - p)`: the C++ `float` 1e-12, in `T`
/// (so the float64 clamp is that float32 value widened, as torch's).
#[inline(always)]
fn bce_epsilon<T: Float>() -> T {
    T::from_f64(1e-12f32 as f64)
}

/// Loss and unscaled gradient of BCE on probabilities `p` with targets `t`.
#[inline(always)]
fn probability_terms<T: Float, I: Isa>(p: V<T, I>, t: V<T, I>) -> (V<T, I>, V<T, I>) {
    let isa = p.isa();
    let (zero, one) = (
        V::<T, I>::splat(isa, T::ZERO),
        V::<T, I>::splat(isa, T::ONE),
    );
    let floor = V::<T, I>::splat(isa, T::from_f64(-100.0));
    let lp = floor.max(T::ln(p));
    let l1p = floor.max(T::ln_1p(zero.sub(p)));
    // torch's order, `(t - 1) l1p - t lp`, each product rounded: the shorter
    // `-(t (lp - l1p) + l1p)` cancels for confident predictions (p near t near 1: 0 instead of
    // 2.4e-7 for p = 1 - 2^-22 in float32).
    let loss = t.sub(one).mul(l1p).sub(t.mul(lp));
    let denom = V::<T, I>::splat(isa, bce_epsilon::<T>()).max(p.mul(one.sub(p)));
    (loss, p.sub(t).div(denom))
}

/// Loss and unscaled gradient of BCE on logits `x` with targets `t`.
///
/// The loss is torch's `(1-t) x + softplus(-x)` evaluated in torch's order, each product
/// rounded before the sum (no fused multiply-add): for very negative `x` the two terms
/// cancel, and only that order cancels them as torch does (see [`weighted_logit_terms`]).
#[inline(always)]
fn logit_terms<T: Float, I: Isa>(x: V<T, I>, t: V<T, I>) -> (V<T, I>, V<T, I>) {
    let s = Sigmoid::<T, I>::of(x);
    (s.bce(x, t), s.p.sub(t))
}

/// Loss and unscaled gradient of BCE on logits `x` with targets `t` and `pos_weight` `pw`.
///
/// The loss `(1-t) x + (1 + (pw-1) t) softplus(-x)` is evaluated in torch's order, both
/// products rounded before the sum. For `x` far below zero `softplus(-x)` rounds to `-x` and
/// the two terms nearly cancel; with `pw = 0` exactly (the weights `1-t` of both are then the
/// same rounded number). A fused multiply-add there kept the rounding error of one product
/// alone: `x = -1.7e8, t = 0.07, pw = 0` gave a loss of -7.7 instead of 0. In this order the
/// loss is never negative for `t` in `[0, 1]` and `pw >= 0`.
#[inline(always)]
fn weighted_logit_terms<T: Float, I: Isa>(
    x: V<T, I>,
    t: V<T, I>,
    pw: V<T, I>,
) -> (V<T, I>, V<T, I>) {
    let one = V::<T, I>::splat(x.isa(), T::ONE);
    let Sigmoid {
        p: sigmoid,
        softplus_neg,
        ..
    } = Sigmoid::<T, I>::of(x);
    let pt = pw.mul(t);
    let coef = pw.sub(one).mul(t).add(one);
    (
        one.sub(t).mul(x).add(coef.mul(softplus_neg)),
        pt.add(one).sub(t).mul(sigmoid).sub(pt),
    )
}

/// What BCE on logits and the focal loss share, from one `e^-|x|`.
struct Sigmoid<T: Float, I: Isa> {
    /// `σ(x)`.
    p: V<T, I>,
    /// `1 - σ(x)`, without the cancellation of the subtraction for large `x`.
    q: V<T, I>,
    /// `softplus(-x) = ln(1 + e^-|x|) + max(-x, 0)`.
    softplus_neg: V<T, I>,
}

impl<T: Float, I: Isa> Sigmoid<T, I> {
    #[inline(always)]
    fn of(x: V<T, I>) -> Self {
        let isa = x.isa();
        let (zero, one) = (
            V::<T, I>::splat(isa, T::ZERO),
            V::<T, I>::splat(isa, T::ONE),
        );
        let e = T::exp(zero.sub(x.abs()));
        let negative = x.lt(zero);
        let p = V::<T, I>::select(negative, e, one).div(one.add(e));
        Sigmoid {
            p,
            // For x < 0, p <= 1/2 and 1 - p is exact to an ulp; for x >= 0,
            // 1 - p = e / (1 + e) = e p, with no second division.
            q: V::<T, I>::select(negative, one.sub(p), e.mul(p)),
            softplus_neg: T::ln_1p_unit(e).add(zero.max(zero.sub(x))),
        }
    }

    /// BCE on logits, `(1-t) x + softplus(-x)`, in torch's order (see [`logit_terms`]).
    #[inline(always)]
    fn bce(&self, x: V<T, I>, t: V<T, I>) -> V<T, I> {
        let one = V::<T, I>::splat(x.isa(), T::ONE);
        one.sub(t).mul(x).add(self.softplus_neg)
    }
}

/// Options of the binary focal loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FocalOptions {
    /// The focusing exponent `γ`: finite and `>= 0`; 0 is BCE.
    pub gamma: f64,
    /// The weight `α` of the positive class (`1 - α` of the negative), in `[0, 1]`; `None`
    /// weights neither.
    pub alpha: Option<f64>,
}

/// Binary focal loss of logits `io` (torchvision's `sigmoid_focal_loss`), per element:
///
/// ```text
/// p = σ(x), ce = BCE-with-logits(x, t), q = 1 - p_t = p (1-t) + (1-p) t
/// loss = w a ce q^γ,   a = α t + (1-α)(1-t)   (1 without α)
/// grad = g w a [ (p - t) q^γ + ce γ q^(γ-1) p (1-p) (1-2t) ]
/// ```
///
/// `q` is a sum of non-negative products (for `t` in `[0, 1]`) of `p` and `1 - p`, both
/// computed from `e^-|x|` without cancellation, so the loss and gradient are finite for
/// every finite logit. `opts.pos_weight` must be `None`. Otherwise as
/// [`binary_cross_entropy_with_logits`].
pub fn binary_focal_loss_with_logits<S: Storage>(
    io: Io<'_, S>,
    target: &[S],
    focal: &FocalOptions,
    opts: &BinaryOptions<'_, S::Compute>,
    losses: Option<&mut [S]>,
) -> Result<Partial, XentError> {
    no_pos_weight(opts, "binary_focal_loss_with_logits")?;
    let kind = Focal::<S::Compute>::new(focal)?;
    let n = io.len() as f64;
    pointwise(io, target, opts, losses, kind, n)
}

/// Integral exponents up to this many are powers by repeated multiplication (exact to a few
/// ulps, and the common `γ = 2` a square); others go through `exp(γ ln q)`.
const MAX_INTEGER_GAMMA: f64 = 16.0;

/// The focal loss's terms, with its options checked and cast to `T`.
#[derive(Clone, Copy)]
struct Focal<T> {
    power: Power<T>,
    /// `α` and `1 - α`.
    alpha: Option<(T, T)>,
}

/// How `q^γ` is computed.
#[derive(Clone, Copy)]
enum Power<T> {
    /// `γ` integral, at most [`MAX_INTEGER_GAMMA`].
    Integer(u32),
    /// Any other `γ > 0`.
    General(T),
}

impl<T: Float> Focal<T> {
    fn new(o: &FocalOptions) -> Result<Self, XentError> {
        if !(o.gamma.is_finite() && o.gamma >= 0.0) {
            return Err(XentError::Value(format!(
                "gamma must be a finite number >= 0.0, got {:?}",
                o.gamma
            )));
        }
        if let Some(a) = o.alpha
            && !(0.0..=1.0).contains(&a)
        {
            return Err(XentError::Value(format!(
                "alpha must lie in [0, 1] or be None, got {a:?}"
            )));
        }
        let power = if o.gamma.fract() == 0.0 && o.gamma <= MAX_INTEGER_GAMMA {
            Power::Integer(o.gamma as u32)
        } else {
            Power::General(T::from_f64(o.gamma))
        };
        Ok(Focal {
            power,
            alpha: o.alpha.map(|a| (T::from_f64(a), T::from_f64(1.0 - a))),
        })
    }
}

impl<T: Float> Terms<T> for Focal<T> {
    #[inline(always)]
    fn terms<I: Isa>(&self, x: V<T, I>, t: V<T, I>, _: Option<V<T, I>>) -> (V<T, I>, V<T, I>) {
        let isa = x.isa();
        let (zero, one) = (
            V::<T, I>::splat(isa, T::ZERO),
            V::<T, I>::splat(isa, T::ONE),
        );
        let s = Sigmoid::<T, I>::of(x);
        let ce = s.bce(x, t);
        let not_t = one.sub(t);
        let q = s.p.mul(not_t).add(s.q.mul(t));
        // d q / d x = p (1-p) (1-2t).
        let dq = s.p.mul(s.q).mul(not_t.sub(t));
        let (mut loss, mut grad) = match self.power {
            // BCE itself (bit for bit): no derivative term, whose 0 * ce is NaN at ce = inf.
            Power::Integer(0) => (ce, s.p.sub(t)),
            Power::Integer(k) => {
                // q^(k-1) first: the derivative's factor, with no division by q.
                let mut lower = one;
                for _ in 1..k {
                    lower = lower.mul(q);
                }
                let power = lower.mul(q);
                let slope = V::<T, I>::splat(isa, T::from_f64(k as f64))
                    .mul(lower)
                    .mul(dq);
                (ce.mul(power), power.mul(s.p.sub(t)).add(ce.mul(slope)))
            }
            Power::General(gamma) => {
                let gamma = V::<T, I>::splat(isa, gamma);
                let power = T::exp(gamma.mul(T::ln(q)));
                // γ q^(γ-1) dq as γ q^γ (dq / q): q^(γ-1) is infinite at q = 0 for γ < 1,
                // while |dq| <= p (1-p) <= min(p, 1-p) <= q for t in [0, 1], so the ratio
                // stays in [-1, 1]; at q = 0 the term is 0 (q^γ is).
                let ratio = V::<T, I>::select(q.eq(zero), zero, dq.div(q));
                let slope = gamma.mul(power).mul(ratio);
                (ce.mul(power), power.mul(s.p.sub(t)).add(ce.mul(slope)))
            }
        };
        if let Some((a, not_a)) = self.alpha {
            let a = V::<T, I>::splat(isa, a)
                .mul(t)
                .add(V::<T, I>::splat(isa, not_a).mul(not_t));
            loss = loss.mul(a);
            grad = grad.mul(a);
        }
        (loss, grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{assert_close, at_every_level, exclusive, values};

    fn options<'a>(
        weight: Option<Broadcast<'a, f64>>,
        pos_weight: Option<Broadcast<'a, f64>>,
        reduction: Reduction,
    ) -> BinaryOptions<'a, f64> {
        BinaryOptions {
            weight,
            pos_weight,
            reduction,
            grad_output: GradOutput::Scalar(2.0),
        }
    }

    #[test]
    fn logits_match_reference_with_broadcast_weights() {
        let _g = exclusive();
        let (rows, cols) = (37, 23);
        let n = rows * cols;
        let x = values(n, 2, 40.0);
        let t: Vec<f64> = values(n, 3, 1.0)
            .iter()
            .map(|v| (v > &0.0) as u8 as f64)
            .collect();
        let pw: Vec<f64> = (0..cols).map(|c| 0.5 + c as f64 * 0.1).collect();
        let w: Vec<f64> = (0..rows).map(|r| 1.0 + (r % 3) as f64).collect();
        let (mut want, mut want_grad) = (0.0, vec![0.0; n]);
        for i in 0..n {
            let (x, t, pw, w) = (x[i], t[i], pw[i % cols], w[i / cols]);
            let softplus = (-x.abs()).exp().ln_1p() + (-x).max(0.0);
            want += w * ((1.0 - t) * x + (1.0 + (pw - 1.0) * t) * softplus);
            let sigmoid = 1.0 / (1.0 + (-x).exp());
            want_grad[i] = 2.0 / n as f64 * w * ((pw * t + 1.0 - t) * sigmoid - pw * t);
        }
        let opts = options(
            Some(Broadcast {
                values: &w,
                repeat: cols,
            }),
            Some(Broadcast {
                values: &pw,
                repeat: 1,
            }),
            Reduction::Mean,
        );
        at_every_level(|level| {
            let mut grad = vec![0.0; n];
            let io = Io::ReadWrite {
                input: &x,
                out: &mut grad,
            };
            let got = binary_cross_entropy_with_logits(io, &t, &opts, None)
                .unwrap()
                .reduce(opts.reduction);
            assert_close(got, want / n as f64, 1e-13, &format!("{level}"));
            for (g, w) in grad.iter().zip(&want_grad) {
                assert_close(*g, *w, 1e-13, &format!("{level}"));
            }
        });
    }

    #[test]
    fn logits_far_below_zero_never_give_a_negative_loss() {
        let _g = exclusive();
        // (1-t) x and (1 + (pw-1) t) softplus(-x) cancel here, exactly for pw = 0.
        let n = 257;
        let x: Vec<f64> = (0..n).map(|i| -(10f64).powf(1.0 + i as f64)).collect();
        let t: Vec<f64> = values(n, 5, 1.0).iter().map(|v| v.abs()).collect();
        for pw in [None, Some(0.0), Some(0.5)] {
            let pws = [pw.unwrap_or(1.0)];
            let opts = options(
                None,
                pw.map(|_| Broadcast {
                    values: &pws,
                    repeat: 1,
                }),
                Reduction::None,
            );
            at_every_level(|level| {
                let mut losses = vec![0.0; n];
                binary_cross_entropy_with_logits(Io::Read(&x), &t, &opts, Some(&mut losses))
                    .unwrap()
                    .reduce(opts.reduction);
                for (i, l) in losses.iter().enumerate() {
                    assert!(
                        *l >= 0.0,
                        "{level} pw {pw:?}: x {} t {} loss {l}",
                        x[i],
                        t[i]
                    );
                    // (1-t) softplus(x): zero once exp(x) underflows.
                    if pw == Some(0.0) && x[i] < -800.0 {
                        assert_eq!(*l, 0.0, "{level}: x {} t {}", x[i], t[i]);
                    }
                }
            });
        }
    }

    #[test]
    fn probabilities_match_reference_and_clamp() {
        let _g = exclusive();
        let p: Vec<f64> = values(1001, 4, 1.0)
            .iter()
            .map(|v| v.abs())
            .chain([0.0, 1.0])
            .collect();
        let n = p.len();
        let t: Vec<f64> = (0..n).map(|i| (i % 2) as f64).collect();
        let mut want = vec![0.0; n];
        let mut want_grad = vec![0.0; n];
        let eps = 1e-12f32 as f64;
        for i in 0..n {
            let (p, t) = (p[i], t[i]);
            want[i] = -(t * p.ln().max(-100.0) + (1.0 - t) * (-p).ln_1p().max(-100.0));
            want_grad[i] = 2.0 * (p - t) / (p * (1.0 - p)).max(eps);
        }
        at_every_level(|level| {
            let mut losses = vec![0.0; n];
            let mut grad = vec![0.0; n];
            let mut opts = options(None, None, Reduction::None);
            opts.grad_output = GradOutput::PerSample(&[2.0; 1003]);
            let io = Io::ReadWrite {
                input: &p,
                out: &mut grad,
            };
            binary_cross_entropy(io, &t, &[n], &opts, Some(&mut losses))
                .unwrap()
                .reduce(opts.reduction);
            for i in 0..n {
                assert_close(losses[i], want[i], 1e-13, &format!("{level} loss {i}"));
                assert_close(grad[i], want_grad[i], 1e-13, &format!("{level} grad {i}"));
            }
        });
    }

    #[test]
    fn probabilities_outside_the_unit_interval_are_refused() {
        for bad in [1.5, -0.25, f64::NAN] {
            let mut p = vec![0.5; 100];
            p[42] = bad;
            let opts = options(None, None, Reduction::Sum);
            let err = binary_cross_entropy(Io::Read(&p), &[0.0; 100], &[10, 10], &opts, None);
            match err {
                Err(XentError::Value(m)) => assert!(m.contains("(4, 2)"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
    }

    /// The float64 reference of the focal loss and its unscaled gradient for one element,
    /// written independently of the kernel: `1 - p_t` from `p` and `1 - p` each computed
    /// on its own side, the gradient by the chain rule through torch's `pow`.
    fn focal_reference(x: f64, t: f64, gamma: f64, alpha: Option<f64>) -> (f64, f64) {
        let p = if x >= 0.0 {
            1.0 / (1.0 + (-x).exp())
        } else {
            x.exp() / (1.0 + x.exp())
        };
        let not_p = if x >= 0.0 {
            (-x).exp() / (1.0 + (-x).exp())
        } else {
            1.0 / (1.0 + x.exp())
        };
        let ce = (1.0 - t) * x + (-x.abs()).exp().ln_1p() + (-x).max(0.0);
        let q = p * (1.0 - t) + not_p * t;
        let a = alpha.map_or(1.0, |a| a * t + (1.0 - a) * (1.0 - t));
        let dq = p * not_p * (1.0 - 2.0 * t);
        let slope = if gamma == 0.0 || q == 0.0 {
            0.0
        } else {
            gamma * q.powf(gamma - 1.0) * dq
        };
        (
            a * ce * q.powf(gamma),
            a * ((p - t) * q.powf(gamma) + ce * slope),
        )
    }

    #[test]
    fn focal_matches_reference_with_weights_and_every_power() {
        let _g = exclusive();
        let (rows, cols) = (41, 13);
        let n = rows * cols;
        let x = values(n, 11, 30.0);
        let soft = values(n, 12, 1.0);
        let w: Vec<f64> = (0..cols).map(|c| 0.5 + c as f64 * 0.25).collect();
        for (gamma, alpha) in [
            (2.0, Some(0.25)),
            (0.0, None),
            (1.0, Some(1.0)),
            (3.0, Some(0.6)),
            (0.5, None),
            (2.7, Some(0.0)),
        ] {
            for hard in [true, false] {
                let t: Vec<f64> = soft
                    .iter()
                    .map(|v| {
                        if hard {
                            (v > &0.0) as u8 as f64
                        } else {
                            v.abs()
                        }
                    })
                    .collect();
                let focal = FocalOptions { gamma, alpha };
                let mut opts = options(
                    Some(Broadcast {
                        values: &w,
                        repeat: 1,
                    }),
                    None,
                    Reduction::Sum,
                );
                opts.grad_output = GradOutput::Scalar(2.0);
                let mut want = 0.0;
                let mut want_grad = vec![0.0; n];
                for i in 0..n {
                    let (l, g) = focal_reference(x[i], t[i], gamma, alpha);
                    want += w[i % cols] * l;
                    want_grad[i] = 2.0 * w[i % cols] * g;
                }
                at_every_level(|level| {
                    let what = format!("{level} gamma {gamma} alpha {alpha:?} hard {hard}");
                    let mut grad = vec![0.0; n];
                    let io = Io::ReadWrite {
                        input: &x,
                        out: &mut grad,
                    };
                    let got = binary_focal_loss_with_logits(io, &t, &focal, &opts, None)
                        .unwrap()
                        .reduce(opts.reduction);
                    assert_close(got, want, 1e-12, &what);
                    for (i, (g, w)) in grad.iter().zip(&want_grad).enumerate() {
                        assert_close(*g, *w, 1e-12, &format!("{what} grad {i}"));
                    }
                });
            }
        }
    }

    #[test]
    fn focal_gradient_matches_finite_differences() {
        let _g = exclusive();
        let x = values(64, 13, 8.0);
        let t: Vec<f64> = values(64, 14, 1.0).iter().map(|v| v.abs()).collect();
        for (gamma, alpha) in [(2.0, Some(0.25)), (0.5, None), (3.0, Some(0.7))] {
            let focal = FocalOptions { gamma, alpha };
            let opts = options(None, None, Reduction::Sum);
            let loss = |x: &[f64]| {
                binary_focal_loss_with_logits(Io::Read(x), &t, &focal, &opts, None)
                    .unwrap()
                    .loss_sum
            };
            let mut grad = vec![0.0; 64];
            let io = Io::ReadWrite {
                input: &x,
                out: &mut grad,
            };
            binary_focal_loss_with_logits(io, &t, &focal, &opts, None).unwrap();
            for i in 0..64 {
                let h = 1e-6 * (1.0 + x[i].abs());
                let (mut up, mut down) = (x.clone(), x.clone());
                up[i] += h;
                down[i] -= h;
                let fd = 2.0 * (loss(&up) - loss(&down)) / (2.0 * h);
                assert_close(grad[i], fd, 1e-6, &format!("gamma {gamma} element {i}"));
            }
        }
    }

    #[test]
    fn focal_with_gamma_zero_and_no_alpha_is_bce_bit_for_bit() {
        let _g = exclusive();
        let n = 999;
        let x = values(n, 15, 50.0);
        let t: Vec<f64> = values(n, 16, 1.0).iter().map(|v| v.abs()).collect();
        let xf: Vec<f32> = x.iter().map(|v| *v as f32).collect();
        let tf: Vec<f32> = t.iter().map(|v| *v as f32).collect();
        let focal = FocalOptions {
            gamma: 0.0,
            alpha: None,
        };
        at_every_level(|level| {
            let opts = BinaryOptions {
                weight: None,
                pos_weight: None,
                reduction: Reduction::None,
                grad_output: GradOutput::Scalar(1.0),
            };
            let run = |focal_loss: bool| {
                let (mut losses, mut grad) = (vec![0f32; n], vec![0f32; n]);
                let io = Io::ReadWrite {
                    input: &xf,
                    out: &mut grad,
                };
                let p = if focal_loss {
                    binary_focal_loss_with_logits(io, &tf, &focal, &opts, Some(&mut losses))
                } else {
                    binary_cross_entropy_with_logits(io, &tf, &opts, Some(&mut losses))
                };
                (p.unwrap().loss_sum.to_bits(), losses, grad)
            };
            let (focal_run, bce_run) = (run(true), run(false));
            assert_eq!(focal_run.0, bce_run.0, "{level}");
            for i in 0..n {
                assert_eq!(focal_run.1[i].to_bits(), bce_run.1[i].to_bits(), "{level}");
                assert_eq!(focal_run.2[i].to_bits(), bce_run.2[i].to_bits(), "{level}");
            }
        });
    }

    #[test]
    fn focal_is_finite_for_extreme_logits() {
        let _g = exclusive();
        let mut x = vec![0.0f32, 1e-30, -1e-30, f32::MAX, -f32::MAX];
        for e in -3..39 {
            x.push(10f32.powi(e));
            x.push(-(10f32.powi(e)));
        }
        let n = x.len();
        for (gamma, alpha) in [(2.0, Some(0.25)), (0.3, None), (5.0, Some(0.5))] {
            for tv in [0.0f32, 1.0, 0.3] {
                let t = vec![tv; n];
                let focal = FocalOptions { gamma, alpha };
                let opts = BinaryOptions {
                    weight: None,
                    pos_weight: None,
                    reduction: Reduction::None,
                    grad_output: GradOutput::Scalar(1.0),
                };
                at_every_level(|level| {
                    let (mut losses, mut grad) = (vec![0f32; n], vec![0f32; n]);
                    let io = Io::ReadWrite {
                        input: &x,
                        out: &mut grad,
                    };
                    binary_focal_loss_with_logits(io, &t, &focal, &opts, Some(&mut losses))
                        .unwrap();
                    for i in 0..n {
                        let what = format!("{level} gamma {gamma} t {tv} x {}", x[i]);
                        assert!(losses[i].is_finite() && losses[i] >= 0.0, "{what}");
                        assert!(grad[i].is_finite(), "{what}: {}", grad[i]);
                        // A hard target on the right side of a huge logit: nothing to learn.
                        if tv != 0.3 && x[i].abs() > 200.0 && (x[i] > 0.0) == (tv == 1.0) {
                            assert_eq!((losses[i], grad[i]), (0.0, 0.0), "{what}");
                        }
                    }
                });
            }
        }
    }

    #[test]
    fn focal_options_are_checked() {
        let opts = options(None, None, Reduction::Sum);
        let x = [0.5; 4];
        for (gamma, alpha, want) in [
            (-1.0, None, "gamma must be a finite number >= 0.0, got -1.0"),
            (
                f64::NAN,
                None,
                "gamma must be a finite number >= 0.0, got NaN",
            ),
            (
                f64::INFINITY,
                None,
                "gamma must be a finite number >= 0.0, got inf",
            ),
            (
                2.0,
                Some(1.5),
                "alpha must lie in [0, 1] or be None, got 1.5",
            ),
            (
                2.0,
                Some(-0.1),
                "alpha must lie in [0, 1] or be None, got -0.1",
            ),
            (
                2.0,
                Some(f64::NAN),
                "alpha must lie in [0, 1] or be None, got NaN",
            ),
        ] {
            let focal = FocalOptions { gamma, alpha };
            match binary_focal_loss_with_logits(Io::Read(&x), &x, &focal, &opts, None) {
                Err(XentError::Value(m)) => assert_eq!(m, want),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn broadcast_chunks_follow_the_repeat_rule() {
        let values = [1.0, 2.0, 3.0];
        let mut buf = [0.0; CHUNK];
        for repeat in [1, 2, 5] {
            let b = Broadcast {
                values: &values,
                repeat,
            };
            for start in [0, 1, 7, 600] {
                let p = b.chunk(start, 20, &mut buf);
                for j in 0..20 {
                    // SAFETY: the chunk holds 20 values.
                    let got = unsafe { *p.add(j) };
                    assert_eq!(got, values[((start + j) / repeat) % 3], "repeat {repeat}");
                }
            }
        }
    }
}
