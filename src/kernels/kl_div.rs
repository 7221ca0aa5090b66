//! The Kullback-Leibler divergence of torch's `kl_div`, element by element, with the gradient
//! with respect to the input (log-probabilities) from the same pass.
//!
//! ```text
//! probability targets      loss = t ln t - t x      grad = -g t
//! log-probability targets  loss = e^t (t - x)       grad = -g e^t
//! ```
//!
//! A zero target probability (`t = 0`, or `e^t = 0` with log targets) contributes 0 whatever
//! the input, `-inf` included (torch's `0 · -inf` is NaN there). A negative or NaN target
//! gives a NaN loss, as torch's `xlogy(t, t)` does; the gradient stays torch's `-g t`.
//! `mean` divides by the number of elements, `batchmean` by the batch size: the caller
//! passes the denominator.

use crate::error::XentError;
use crate::float::{Float, Storage};
use crate::kernels::binary::{BinaryOptions, Terms, pointwise};
use crate::kernels::lanes::V;
use crate::kernels::{GradOutput, Io, Partial, Reduction};
use crate::simd::{Isa, Vector};

/// Options of [`kl_div`].
#[derive(Clone, Copy, Debug)]
pub struct KlOptions<'a, T> {
    /// Whether the targets are log-probabilities.
    pub log_target: bool,
    /// How losses are combined; `mean` divides by `denominator`.
    pub reduction: Reduction,
    /// What `mean` divides by: the number of elements (torch's `mean`) or the batch size
    /// (`batchmean`).
    pub denominator: f64,
    /// The upstream gradient; per element for `none`.
    pub grad_output: GradOutput<'a, T>,
}

/// KL divergence of log-probabilities `io` (gradient written unless [`Io::Read`]) from
/// `target` (same length). Per-element losses go to `losses` for [`Reduction::None`];
/// returns their sum and `opts.denominator` whatever the reduction.
pub fn kl_div<S: Storage>(
    io: Io<'_, S>,
    target: &[S],
    opts: &KlOptions<'_, S::Compute>,
    losses: Option<&mut [S]>,
) -> Result<Partial, XentError> {
    let driver = BinaryOptions {
        weight: None,
        pos_weight: None,
        reduction: opts.reduction,
        grad_output: opts.grad_output,
    };
    if opts.log_target {
        pointwise(
            io,
            target,
            &driver,
            losses,
            KlTerms::<true>,
            opts.denominator,
        )
    } else {
        pointwise(
            io,
            target,
            &driver,
            losses,
            KlTerms::<false>,
            opts.denominator,
        )
    }
}

/// The pointwise terms: targets that are probabilities, or log-probabilities with `LOG`.
struct KlTerms<const LOG: bool>;

impl<T: Float, const LOG: bool> Terms<T> for KlTerms<LOG> {
    #[inline(always)]
    fn terms<I: Isa>(&self, x: V<T, I>, t: V<T, I>, _: Option<V<T, I>>) -> (V<T, I>, V<T, I>) {
        let isa = x.isa();
        let zero = V::<T, I>::splat(isa, T::ZERO);
        let minus_one = V::<T, I>::splat(isa, T::from_f64(-1.0));
        if LOG {
            let p = T::exp(t);
            let loss = p.mul(t.sub(x));
            (V::<T, I>::select(p.eq(zero), zero, loss), minus_one.mul(p))
        } else {
            // torch's `xlogy(t, t) - t x`, each product rounded.
            let loss = t.mul(T::ln(t)).sub(t.mul(x));
            // `-1 · t` rather than `0 - t`: torch's -0 where t = 0.
            (V::<T, I>::select(t.eq(zero), zero, loss), minus_one.mul(t))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{assert_close, at_every_level, exclusive, values};

    /// The float64 reference: loss and unscaled gradient of one element.
    fn reference(x: f64, t: f64, log_target: bool) -> (f64, f64) {
        if log_target {
            let p = t.exp();
            (if p == 0.0 { 0.0 } else { p * (t - x) }, -p)
        } else if t == 0.0 {
            (0.0, -t)
        } else {
            (t * t.ln() - t * x, -t)
        }
    }

    fn inputs(n: usize, log_target: bool) -> (Vec<f64>, Vec<f64>) {
        let x: Vec<f64> = values(n, 7, 6.0).iter().map(|v| -v.abs()).collect();
        let t: Vec<f64> = values(n, 8, 1.0)
            .iter()
            .enumerate()
            .map(|(i, v)| match (log_target, i % 5) {
                (false, 0) => 0.0,
                (false, _) => v.abs(),
                (true, 0) => f64::NEG_INFINITY,
                (true, _) => -3.0 * v.abs(),
            })
            .collect();
        (x, t)
    }

    #[test]
    fn matches_reference_for_every_reduction() {
        let _g = exclusive();
        let n = 1031;
        for log_target in [false, true] {
            let (x, t) = inputs(n, log_target);
            for (reduction, denominator) in [
                (Reduction::Mean, n as f64),
                (Reduction::Mean, 7.0),
                (Reduction::Sum, n as f64),
                (Reduction::None, n as f64),
            ] {
                let go: Vec<f64> = values(n, 9, 2.0);
                let (grad_output, scale) = match reduction {
                    Reduction::None => (GradOutput::PerSample(&go[..]), None),
                    Reduction::Mean => (GradOutput::Scalar(3.0), Some(3.0 / denominator)),
                    Reduction::Sum => (GradOutput::Scalar(3.0), Some(3.0)),
                };
                let opts = KlOptions {
                    log_target,
                    reduction,
                    denominator,
                    grad_output,
                };
                at_every_level(|level| {
                    let what = format!("{level} log_target {log_target} {reduction:?}");
                    let mut grad = vec![0.0; n];
                    let mut losses = vec![0.0; n];
                    let io = Io::ReadWrite {
                        input: &x,
                        out: &mut grad,
                    };
                    let out = (reduction == Reduction::None).then_some(&mut losses[..]);
                    let p = kl_div(io, &t, &opts, out).unwrap();
                    assert_eq!(p.denominator, denominator);
                    let mut want = 0.0;
                    for i in 0..n {
                        let (l, g) = reference(x[i], t[i], log_target);
                        want += l;
                        let g = g * scale.unwrap_or(go[i]);
                        assert_close(grad[i], g, 1e-13, &format!("{what} grad {i}"));
                        if reduction == Reduction::None {
                            assert_close(losses[i], l, 1e-13, &format!("{what} loss {i}"));
                        }
                    }
                    assert_close(p.loss_sum, want, 1e-13, &what);
                });
            }
        }
    }

    #[test]
    fn zero_targets_give_zero_and_bad_targets_nan() {
        let _g = exclusive();
        let x = [f64::NEG_INFINITY, -1.0, -1.0, -1.0, f64::NEG_INFINITY];
        let t = [0.0, 0.0, -0.5, f64::NAN, 0.5];
        let opts = KlOptions {
            log_target: false,
            reduction: Reduction::None,
            denominator: 5.0,
            grad_output: GradOutput::Scalar(1.0),
        };
        at_every_level(|level| {
            let mut losses = [7.0; 5];
            let mut grad = [7.0; 5];
            let io = Io::ReadWrite {
                input: &x,
                out: &mut grad,
            };
            kl_div(io, &t, &opts, Some(&mut losses)).unwrap();
            assert_eq!(&losses[..2], &[0.0, 0.0], "{level}");
            assert!(losses[2].is_nan() && losses[3].is_nan(), "{level}");
            assert_eq!(losses[4], f64::INFINITY, "{level}");
            assert_eq!(grad[2], 0.5, "{level}");
            assert!(grad[3].is_nan(), "{level}");
            assert!(grad[0] == 0.0 && grad[0].is_sign_negative(), "{level}");
        });
    }
}
