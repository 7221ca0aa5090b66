//! The log loss of predicted probabilities against integer labels, as
//! `sklearn.metrics.log_loss` scores it, without a one-hot matrix.
//!
//! Each row's probability of its label is clipped to `[eps, 1 - eps]` and `-ln` of it is
//! weighted and summed in f64. Alongside, the passes gather what the caller needs to reproduce
//! scikit-learn's checks and messages: whether any probability lies outside `[0, 1]` or is NaN,
//! whether every row sums to 1 (within `1e-8 + sum_rtol`), whether every label lies in
//! `[0, classes)`, and which classes occur.
//!
//! The probabilities and labels are read once, by the row driver (vectorised along long rows,
//! across rows for few classes) or, for a single positive-class column, element by element.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::XentError;
use crate::float::Float;
use crate::interrupt;
use crate::kernels::lanes::{Columns, MAX_LANES, V, live_lanes};
use crate::kernels::rows::{Ptrs, RowBuffers, RowKernel, RowResults, run_rows};
use crate::kernels::stats::{ColumnSum, load_upto};
use crate::kernels::{Layout, RawIn, Targets, check_len};
use crate::parallel;
use crate::reduce::{self, pairwise_sum};
use crate::simd::{self, Isa, Vector, WithIsa};

/// The probabilities: one column per class, or one column holding the positive class of a
/// binary problem (the negative class is `1 - p`).
#[derive(Clone, Copy, Debug)]
pub enum Probabilities<'a, T> {
    /// `rows × classes`, C order.
    Classes(&'a [T], usize),
    /// One probability of class 1 per row.
    Positive(&'a [T]),
}

/// Everything the passes learn.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLossSummary {
    /// `Σ sw · -ln(clip(p[y]))` over rows whose label is in range.
    pub loss: f64,
    /// `Σ sw` over all rows.
    pub weight: f64,
    /// Whether some probability lies outside `[0, 1]` or is NaN.
    pub out_of_range: bool,
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
    let weight = match sample_weight {
        Some(sw) => reduce::sum(sw)?,
        None => rows as f64,
    };
    let flags = Flags::new(classes);
    let loss = match proba {
        Probabilities::Classes(p, c) => {
            let kernel = Rows {
                labels,
                sample_weight,
                eps,
                tolerance: 1e-8 + sum_rtol,
                flags: &flags,
            };
            let layout = Layout {
                outer: rows,
                classes: c,
                inner: 1,
            };
            let buffers = RowBuffers {
                x: RawIn::new(p),
                x2: None,
                out: None,
            };
            run_rows(layout, &kernel, buffers, RowResults::Sum)?
        }
        Probabilities::Positive(p) => {
            let blocks = parallel::blocks(rows, 1, MAX_LANES);
            let job = Positive {
                p,
                labels,
                sample_weight,
                eps,
                flags: &flags,
            };
            let sums = parallel::map_blocks(blocks, rows, |range| {
                simd::dispatch(PositiveBlock { job: &job, range })
            })?;
            pairwise_sum(&sums)
        }
    };
    Ok(LogLossSummary {
        loss,
        weight,
        out_of_range: flags.out_of_range.load(Ordering::Relaxed),
        normalized: !flags.unnormalized.load(Ordering::Relaxed),
        labels_in_range: !flags.label_outside.load(Ordering::Relaxed),
        seen: flags
            .seen
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect(),
    })
}

/// Conditions any block may raise; only ever set, so the outcome does not depend on the order
/// blocks run in.
struct Flags {
    out_of_range: AtomicBool,
    unnormalized: AtomicBool,
    label_outside: AtomicBool,
    seen: Vec<AtomicBool>,
}

impl Flags {
    fn new(classes: usize) -> Self {
        Flags {
            out_of_range: AtomicBool::new(false),
            unnormalized: AtomicBool::new(false),
            label_outside: AtomicBool::new(false),
            seen: (0..classes).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Records label `y`; returns whether it names a class.
    #[inline(always)]
    fn label(&self, y: i64) -> bool {
        match usize::try_from(y).ok().and_then(|c| self.seen.get(c)) {
            Some(seen) => {
                // Read first: after the first sighting of a class this is a plain load.
                if !seen.load(Ordering::Relaxed) {
                    seen.store(true, Ordering::Relaxed);
                }
                true
            }
            None => {
                self.label_outside.store(true, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Raises `flag` when any lane of `bad` (a 0/1 vector) is set.
#[inline(always)]
fn raise_if<T: Float, I: Isa>(bad: V<T, I>, flag: &AtomicBool) {
    if bad.reduce_max() > T::ZERO {
        flag.store(true, Ordering::Relaxed);
    }
}

/// The running minimum and maximum of the probabilities seen, ignoring NaN (NaN is caught
/// through the sums it poisons).
#[derive(Clone, Copy)]
struct Range<T: Float, I: Isa> {
    lo: V<T, I>,
    hi: V<T, I>,
}

impl<T: Float, I: Isa> Range<T, I> {
    #[inline(always)]
    fn new(isa: I) -> Self {
        let half = V::<T, I>::splat(isa, T::from_f64(0.5));
        Range { lo: half, hi: half }
    }

    /// Takes in `v`; `a.min(b)` returns `b` when `a` is NaN, so NaN lanes change nothing.
    #[inline(always)]
    fn add(&mut self, v: V<T, I>) {
        self.lo = v.min(self.lo);
        self.hi = v.max(self.hi);
    }

    /// Raises `flag` when a value lay outside `[0, 1]`, or `sum` (any vector the values
    /// were added into) is NaN.
    #[inline(always)]
    fn raise(self, sum: V<T, I>, flag: &AtomicBool) {
        let isa = sum.isa();
        let (zero, one) = (
            V::<T, I>::splat(isa, T::ZERO),
            V::<T, I>::splat(isa, T::ONE),
        );
        let nan = V::<T, I>::select(sum.is_nan(), one, zero);
        if zero.sub(self.lo).reduce_max() > T::ZERO
            || self.hi.reduce_max() > T::ONE
            || nan.reduce_max() > T::ZERO
        {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// Clips to `[lo, hi]` keeping NaN (the bounds are the first operands).
#[inline(always)]
fn clip<T: Float, I: Isa>(v: V<T, I>, lo: T, hi: T) -> V<T, I> {
    let isa = v.isa();
    V::<T, I>::splat(isa, hi).min(V::<T, I>::splat(isa, lo).max(v))
}

/// The multiclass pass, one row per sample.
struct Rows<'a, T> {
    labels: Targets<'a>,
    sample_weight: Option<&'a [T]>,
    eps: f64,
    tolerance: f64,
    flags: &'a Flags,
}

impl<T: Float> RowKernel<T> for Rows<'_, T> {
    #[inline(always)]
    fn row<I: Isa>(&self, isa: I, r: usize, p: Ptrs<T>, n: usize) -> f64 {
        let lanes = V::<T, I>::LANES;
        let mut sum = V::<T, I>::wide_zero(isa);
        let mut range = Range::<T, I>::new(isa);
        for seg in (0..n).step_by(interrupt::ROW_CHECK) {
            if interrupt::stopped_at(seg) {
                return 0.0;
            }
            for i in (seg..n.min(seg + interrupt::ROW_CHECK)).step_by(lanes) {
                let k = lanes.min(n - i);
                // SAFETY: the driver hands over n readable values; padding lanes read 0.
                let v = unsafe { load_upto(isa, p.x.add(i), k, T::ZERO) };
                sum = v.wide_add(sum);
                range.add(v);
            }
        }
        let total = V::<T, I>::wide_sum(sum);
        range.raise(
            V::<T, I>::splat(isa, T::from_f64(total)),
            &self.flags.out_of_range,
        );
        // A NaN sum is caught as out of range above; here it must not count as normalised.
        if (total - 1.0).abs() > self.tolerance || total.is_nan() {
            self.flags.unnormalized.store(true, Ordering::Relaxed);
        }
        let y = self.labels.get(r);
        if !self.flags.label(y) {
            return 0.0;
        }
        // SAFETY: y < n.
        let v = unsafe { *p.x.add(y as usize) }.to_f64();
        let clipped = v.clamp(self.eps, 1.0 - self.eps);
        let clipped = if v.is_nan() { v } else { clipped };
        -self.sample_weight.map_or(1.0, |s| s[r].to_f64()) * clipped.ln()
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
        // Per lane: the label (-1 when out of range or padding) and the sample weight.
        let (mut y, mut sw) = ([T::from_f64(-1.0); MAX_LANES], [T::ZERO; MAX_LANES]);
        for j in 0..valid {
            let t = self.labels.get(r0 + j);
            if self.flags.label(t) {
                y[j] = T::from_f64(t as f64);
                sw[j] = self.sample_weight.map_or(T::ONE, |s| s[r0 + j]);
            }
        }
        // SAFETY: both arrays hold MAX_LANES >= LANES values.
        let (y, sw) = unsafe {
            (
                V::<T, I>::load(isa, y.as_ptr()),
                V::<T, I>::load(isa, sw.as_ptr()),
            )
        };
        let mut sum = ColumnSum::<T, I>::new(isa);
        let mut range = Range::<T, I>::new(isa);
        let mut p_y = one;
        let mut class = zero;
        for c in 0..classes {
            // SAFETY: the driver hands over `classes` columns; padding lanes hold 0.
            let v = unsafe { cols.x(isa, c) };
            sum.add(v);
            range.add(v);
            p_y = V::<T, I>::select(y.eq(class), v, p_y);
            class = class.add(one);
        }
        let total = sum.total();
        range.raise(total, &self.flags.out_of_range);
        let live = live_lanes::<T, I>(isa, valid);
        let off = total.sub(one).abs();
        let tolerance = V::<T, I>::splat(isa, T::from_f64(self.tolerance));
        raise_if::<T, I>(
            V::<T, I>::select(tolerance.lt(off), live, zero),
            &self.flags.unnormalized,
        );
        let lo = T::from_f64(self.eps);
        let hi = T::from_f64(1.0 - self.eps);
        zero.sub(sw.mul(T::ln(clip::<T, I>(p_y, lo, hi))))
    }
}

/// The binary pass over one positive-class probability per row.
struct Positive<'a, T> {
    p: &'a [T],
    labels: Targets<'a>,
    sample_weight: Option<&'a [T]>,
    eps: f64,
    flags: &'a Flags,
}

struct PositiveBlock<'j, 'a, T> {
    job: &'j Positive<'a, T>,
    range: std::ops::Range<usize>,
}

impl<T: Float> WithIsa for PositiveBlock<'_, '_, T> {
    type Output = f64;

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) -> f64 {
        let job = self.job;
        let lanes = V::<T, I>::LANES;
        let (zero, one) = (
            V::<T, I>::splat(isa, T::ZERO),
            V::<T, I>::splat(isa, T::ONE),
        );
        let (lo, hi) = (T::from_f64(job.eps), T::from_f64(1.0 - job.eps));
        let mut acc = V::<T, I>::wide_zero(isa);
        let mut range = Range::<T, I>::new(isa);
        let mut poison = zero;
        for i in self.range.clone().step_by(lanes) {
            let k = lanes.min(self.range.end - i);
            // Per lane: 1 for label 1, 0 for label 0, and the weight (0 for other labels).
            let (mut y, mut sw) = ([T::ZERO; MAX_LANES], [T::ZERO; MAX_LANES]);
            for j in 0..k {
                let t = job.labels.get(i + j);
                if job.flags.label(t) {
                    y[j] = T::from_f64(t as f64);
                    sw[j] = job.sample_weight.map_or(T::ONE, |s| s[i + j]);
                }
            }
            // SAFETY: both arrays hold MAX_LANES >= LANES values; i + k <= the block's end.
            let (y, sw, p) = unsafe {
                (
                    V::<T, I>::load(isa, y.as_ptr()),
                    V::<T, I>::load(isa, sw.as_ptr()),
                    load_upto(isa, job.p.as_ptr().add(i), k, T::ZERO),
                )
            };
            range.add(p);
            poison = p.mul_add(zero, poison);
            let p_y = V::<T, I>::select(y.eq(one), p, one.sub(p));
            acc = zero
                .sub(sw.mul(T::ln(clip::<T, I>(p_y, lo, hi))))
                .wide_add(acc);
        }
        range.raise(poison, &job.flags.out_of_range);
        V::<T, I>::wide_sum(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{assert_close, at_every_level, exclusive};

    #[test]
    fn matches_a_direct_computation_on_every_path() {
        let _g = exclusive();
        let eps = f64::EPSILON;
        for classes in [3usize, 40] {
            let rows = 37;
            let mut p = vec![0.0; rows * classes];
            let mut want = 0.0;
            let labels: Vec<i64> = (0..rows).map(|r| ((r * 5) % classes) as i64).collect();
            let sw: Vec<f64> = (0..rows).map(|r| 0.5 + (r % 3) as f64).collect();
            for r in 0..rows {
                let row = &mut p[r * classes..(r + 1) * classes];
                row.fill(0.5 / (classes - 1) as f64);
                let y = labels[r] as usize;
                row[y] = if r == 4 { 0.0 } else { 0.5 };
                if r == 4 {
                    row[(y + 1) % classes] += 0.5;
                }
                want += sw[r] * -row[y].clamp(eps, 1.0 - eps).ln();
            }
            at_every_level(|level| {
                let s = log_loss(
                    Probabilities::Classes(&p, classes),
                    Targets::I64(&labels),
                    Some(&sw),
                    eps,
                    1e-8,
                )
                .unwrap();
                assert_close(s.loss, want, 1e-13, &format!("{level} C={classes}"));
                assert_eq!(s.weight, sw.iter().sum::<f64>());
                assert!(
                    !s.out_of_range && s.normalized && s.labels_in_range,
                    "{level}"
                );
                let distinct: std::collections::BTreeSet<i64> = labels.iter().copied().collect();
                assert_eq!(s.seen.iter().filter(|&&b| b).count(), distinct.len());
            });
        }
    }

    #[test]
    fn positive_class_column_and_flags() {
        let _g = exclusive();
        at_every_level(|level| {
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
            assert_close(s.loss, want, 1e-6, &format!("{level}"));
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
            assert!(s.out_of_range && !s.normalized, "{level}");
        });
    }
}
