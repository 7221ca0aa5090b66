//! Binary cross entropy on probabilities and on logits, element by element, with the
//! gradient from the same pass.
//!
//! torch's formulas, with `w` the weight and `pw` the positive-class weight:
//!
//! ```text
//! probabilities  loss = -w [ t max(ln p, -100) + (1-t) max(ln(1-p), -100) ]
//!                grad = g w (p - t) / max(p (1-p), 1e-12f)
//! logits         loss = w [ (1-t) x + (1 + (pw-1) t) (ln(1 + e^-|x|) + max(-x, 0)) ]
//!                grad = g w [ (pw t + 1 - t) sigmoid(x) - pw t ]
//! ```
//!
//! `mean` divides by the number of elements. Weights broadcast against the input as a
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
    if opts.pos_weight.is_some() {
        return Err(XentError::Value(
            "binary_cross_entropy has no pos_weight".into(),
        ));
    }
    check_probabilities(&io, shape)?;
    run(io, target, opts, losses, false)
}

/// Binary cross entropy of logits `io`; see [`binary_cross_entropy`].
pub fn binary_cross_entropy_with_logits<S: Storage>(
    io: Io<'_, S>,
    target: &[S],
    opts: &BinaryOptions<'_, S::Compute>,
    losses: Option<&mut [S]>,
) -> Result<Partial, XentError> {
    run(io, target, opts, losses, true)
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

fn run<S: Storage>(
    mut io: Io<'_, S>,
    target: &[S],
    opts: &BinaryOptions<'_, S::Compute>,
    losses: Option<&mut [S]>,
    logits: bool,
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
        (GradOutput::Scalar(_), Reduction::Mean) if n == 0 => Some(0.0),
        (GradOutput::Scalar(g), Reduction::Mean) => Some(g / n as f64),
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
        logits,
    };
    let blocks = parallel::blocks(n, 1, CHUNK);
    let sums = parallel::map_blocks(blocks, n, |range| {
        simd::dispatch(JobBlock { job: &job, range })
    })?;
    Ok(Partial {
        loss_sum: pairwise_sum(&sums),
        denominator: n as f64,
    })
}

/// One call's buffers and options.
struct Job<'a, S: Storage> {
    x: RawIn<S>,
    target: RawIn<S>,
    grad: Option<RawOut<S>>,
    losses: Option<RawOut<S>>,
    opts: BinaryOptions<'a, S::Compute>,
    /// The uniform upstream gradient factor, or `None` when it is per element.
    grad_scale: Option<f64>,
    logits: bool,
}

struct JobBlock<'j, 'a, S: Storage> {
    job: &'j Job<'a, S>,
    range: std::ops::Range<usize>,
}

impl<S: Storage> WithIsa for JobBlock<'_, '_, S> {
    type Output = f64;

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) -> f64 {
        job_block::<S::Compute, S, I>(isa, self.job, self.range)
    }
}

/// [`JobBlock`], with the compute type named. Staged storage is widened a chunk at a time
/// (input and target) into stack buffers, and the chunk's losses and gradient narrowed
/// from them.
#[inline(always)]
fn job_block<T: Float, S: Storage<Compute = T>, I: Isa>(
    isa: I,
    job: &Job<'_, S>,
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
                let (mut loss, mut grad) = if job.logits {
                    if pw.is_null() {
                        logit_terms::<T, I>(x, t, zero, one)
                    } else {
                        let pw = load_upto(isa, pw.add(i), k, T::ONE);
                        weighted_logit_terms::<T, I>(x, t, pw, zero, one)
                    }
                } else {
                    probability_terms::<T, I>(x, t, zero, one)
                };
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
fn probability_terms<T: Float, I: Isa>(
    p: V<T, I>,
    t: V<T, I>,
    zero: V<T, I>,
    one: V<T, I>,
) -> (V<T, I>, V<T, I>) {
    let isa = p.isa();
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
fn logit_terms<T: Float, I: Isa>(
    x: V<T, I>,
    t: V<T, I>,
    zero: V<T, I>,
    one: V<T, I>,
) -> (V<T, I>, V<T, I>) {
    let e = T::exp(zero.sub(x.abs()));
    let softplus_neg = T::ln_1p_unit(e).add(zero.max(zero.sub(x)));
    let sigmoid = V::<T, I>::select(x.lt(zero), e, one).div(one.add(e));
    (one.sub(t).mul(x).add(softplus_neg), sigmoid.sub(t))
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
    zero: V<T, I>,
    one: V<T, I>,
) -> (V<T, I>, V<T, I>) {
    let e = T::exp(zero.sub(x.abs()));
    let softplus_neg = T::ln_1p_unit(e).add(zero.max(zero.sub(x)));
    let sigmoid = V::<T, I>::select(x.lt(zero), e, one).div(one.add(e));
    let pt = pw.mul(t);
    let coef = pw.sub(one).mul(t).add(one);
    (
        one.sub(t).mul(x).add(coef.mul(softplus_neg)),
        pt.add(one).sub(t).mul(sigmoid).sub(pt),
    )
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
