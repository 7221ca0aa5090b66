//! The log loss of predicted probabilities against integer labels, as
//! `sklearn.metrics.log_loss` scores it, in one pass and without a one-hot matrix.
//!
//! Each row's probability of its label is clipped to `[eps, 1 - eps]` and `-ln` of it is
//! weighted and summed in f64. The same pass gathers everything the caller needs to reproduce
//! scikit-learn's checks and messages: the smallest and largest probability, whether any is
//! NaN, whether every row sums to 1 (within `sqrt(eps)`), whether every label lies in
//! `[0, classes)`, and which classes occur.

use crate::error::XentError;
use crate::float::Float;
use crate::kernels::stats::{V, load_upto, store_upto};
use crate::kernels::{Targets, check_len};
use crate::parallel;
use crate::reduce::pairwise_sum;
use crate::simd::{self, Isa, Vector, WithIsa};

/// Rows whose clipped probabilities go through the vector logarithm together.
const CHUNK: usize = 256;

/// The probabilities: one column per class, or one column holding the positive class of a
/// binary problem (the negative class is `1 - p`).
#[derive(Clone, Copy, Debug)]
pub enum Probabilities<'a, T> {
    /// `rows × classes`, C order.
    Classes(&'a [T], usize),
    /// One probability of class 1 per row.
    Positive(&'a [T]),
}

/// Everything one pass learns.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLossSummary {
    /// `Σ sw · -ln(clip(p[y]))` over rows whose label is in range.
    pub loss: f64,
    /// `Σ sw` over all rows.
    pub weight: f64,
    /// Smallest probability (NaN ignored).
    pub min: f64,
    /// Largest probability (NaN ignored).
    pub max: f64,
    /// Whether some probability is NaN.
    pub has_nan: bool,
    /// Whether every row sums to 1 within the tolerance.
    pub normalized: bool,
    /// Whether every label lies in `[0, classes)`.
    pub labels_in_range: bool,
    /// For each class, whether some label names it.
    pub seen: Vec<bool>,
}

/// Scores `proba` against `labels`; `eps` is the clipping bound, and a row is normalised when
/// its sum is within `1e-8 + sum_rtol` of 1 (NumPy's `isclose`).
pub fn log_loss<T: Float>(
    proba: Probabilities<'_, T>,
    labels: Targets<'_>,
    sample_weight: Option<&[T]>,
    eps: f64,
    sum_rtol: f64,
) -> Result<LogLossSummary, XentError> {
    let rows = labels.len();
    let classes = match proba {
        Probabilities::Classes(p, c) => {
            check_len("the probabilities", p.len(), rows * c)?;
            c
        }
        Probabilities::Positive(p) => {
            check_len("the probabilities", p.len(), rows)?;
            2
        }
    };
    if let Some(sw) = sample_weight {
        check_len("sample_weight", sw.len(), rows)?;
    }
    let job = Job {
        proba,
        labels,
        sample_weight,
        eps,
        tolerance: 1e-8 + sum_rtol,
        classes,
    };
    let blocks = parallel::blocks(rows, classes, CHUNK);
    let parts = parallel::map_blocks(blocks, rows * classes, |range| {
        simd::dispatch(Block { job: &job, range })
    })?;
    let mut summary = LogLossSummary {
        loss: pairwise_sum(&parts.iter().map(|p| p.loss).collect::<Vec<_>>()),
        weight: pairwise_sum(&parts.iter().map(|p| p.weight).collect::<Vec<_>>()),
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        has_nan: false,
        normalized: true,
        labels_in_range: true,
        seen: vec![false; classes],
    };
    for p in &parts {
        summary.min = summary.min.min(p.min);
        summary.max = summary.max.max(p.max);
        summary.has_nan |= p.has_nan;
        summary.normalized &= p.normalized;
        summary.labels_in_range &= p.labels_in_range;
        for (s, &b) in summary.seen.iter_mut().zip(&p.seen) {
            *s |= b;
        }
    }
    Ok(summary)
}

struct Job<'a, T> {
    proba: Probabilities<'a, T>,
    labels: Targets<'a>,
    sample_weight: Option<&'a [T]>,
    eps: f64,
    tolerance: f64,
    classes: usize,
}

struct Block<'j, 'a, T> {
    job: &'j Job<'a, T>,
    range: std::ops::Range<usize>,
}

impl<T: Float> WithIsa for Block<'_, '_, T> {
    type Output = LogLossSummary;

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) -> LogLossSummary {
        let job = self.job;
        let classes = job.classes;
        let mut out = LogLossSummary {
            loss: 0.0,
            weight: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            has_nan: false,
            normalized: true,
            labels_in_range: true,
            seen: vec![false; classes],
        };
        let (lo, hi) = (T::from_f64(job.eps), T::from_f64(1.0 - job.eps));
        let mut picked = [T::ONE; CHUNK];
        let mut weights = [0.0f64; CHUNK];
        let mut start = self.range.start;
        while start < self.range.end {
            let n = CHUNK.min(self.range.end - start);
            for (j, r) in (start..start + n).enumerate() {
                let y = job.labels.get(r);
                let sw = job.sample_weight.map_or(1.0, |s| s[r].to_f64());
                out.weight += sw;
                let p_y = match job.proba {
                    Probabilities::Classes(p, c) => {
                        let row = &p[r * c..(r + 1) * c];
                        let mut sum = 0.0;
                        for &v in row {
                            let v = v.to_f64();
                            sum += v;
                            out.min = out.min.min(v);
                            out.max = out.max.max(v);
                            out.has_nan |= v.is_nan();
                        }
                        out.normalized &= (sum - 1.0).abs() <= job.tolerance;
                        (0..c as i64).contains(&y).then(|| row[y as usize])
                    }
                    Probabilities::Positive(p) => {
                        let v = p[r];
                        let f = v.to_f64();
                        out.min = out.min.min(f);
                        out.max = out.max.max(f);
                        out.has_nan |= f.is_nan();
                        match y {
                            0 => Some(T::from_f64(1.0 - f)),
                            1 => Some(v),
                            _ => None,
                        }
                    }
                };
                match p_y {
                    Some(v) => {
                        out.seen[y as usize] = true;
                        // Clip like NumPy's clip: NaN stays NaN.
                        picked[j] = if v < lo {
                            lo
                        } else if v > hi {
                            hi
                        } else {
                            v
                        };
                        weights[j] = sw;
                    }
                    None => {
                        out.labels_in_range = false;
                        picked[j] = T::ONE;
                        weights[j] = 0.0;
                    }
                }
            }
            ln_in_place::<T, I>(isa, &mut picked[..n]);
            for j in 0..n {
                out.loss -= weights[j] * picked[j].to_f64();
            }
            start += n;
        }
        out
    }
}

/// Replaces each value by its natural logarithm, a vector at a time.
#[inline(always)]
fn ln_in_place<T: Float, I: Isa>(isa: I, xs: &mut [T]) {
    let lanes = V::<T, I>::LANES;
    let n = xs.len();
    let p = xs.as_mut_ptr();
    for i in (0..n).step_by(lanes) {
        let k = lanes.min(n - i);
        // SAFETY: i + k <= n values of `xs`.
        unsafe { store_upto(T::ln(load_upto(isa, p.add(i), k, T::ONE)), p.add(i), k) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{assert_close, at_every_level, exclusive};

    #[test]
    fn matches_a_direct_computation() {
        let _g = exclusive();
        let p = [0.2, 0.7, 0.1, 0.0, 1.0, 0.0, 0.5, 0.25, 0.25];
        let labels = [1i64, 0, 2];
        let sw = [1.0, 2.0, 0.5];
        let eps = f64::EPSILON;
        let want = 1.0 * -(0.7f64).ln() + 2.0 * -(eps.ln()) + 0.5 * -(0.25f64).ln();
        at_every_level(|level| {
            let s = log_loss(
                Probabilities::Classes(&p, 3),
                Targets::I64(&labels),
                Some(&sw),
                eps,
                1e-8,
            )
            .unwrap();
            assert_close(s.loss, want, 1e-14, &format!("{level}"));
            assert_eq!(s.weight, 3.5);
            assert_eq!((s.min, s.max, s.has_nan), (0.0, 1.0, false));
            assert!(s.normalized && s.labels_in_range);
            assert_eq!(s.seen, vec![true, true, true]);
        });
    }

    #[test]
    fn positive_class_column_and_flags() {
        let _g = exclusive();
        let p = [0.9f32, 0.2, 0.5];
        let s = log_loss(
            Probabilities::Positive(&p),
            Targets::I32(&[1, 0, 3]),
            None,
            1e-7,
            1e-4,
        )
        .unwrap();
        let want = -(0.9f32.ln() as f64) - ((1.0f32 - 0.2).ln() as f64);
        assert_close(s.loss, want, 1e-6, "binary");
        assert!(!s.labels_in_range);
        assert_eq!(s.seen, vec![true, true]);
        let bad = [0.5f32, f32::NAN, 0.3, 0.3];
        let s = log_loss(
            Probabilities::Classes(&bad, 2),
            Targets::I32(&[0, 1]),
            None,
            1e-7,
            1e-4,
        )
        .unwrap();
        assert!(s.has_nan && !s.normalized);
    }
}
