//! `log_softmax`, `softmax`, `logsumexp` and the vector-Jacobian products of the first two.
//!
//! Each row is max-shifted: with `m = max x` and `s = Σ exp(x - m)` (summed in f64),
//! `log_softmax = (x - m) - ln s`, `softmax = exp(x - m) / s` and `logsumexp = m + ln s`.
//! Special rows follow torch: a row holding `+inf` or NaN, or made only of `-inf`, gives NaN
//! for `log_softmax`/`softmax` (the shifted values are NaN there); `logsumexp` gives `-inf`
//! for a row of `-inf`, `+inf` for a row holding `+inf`, NaN for a row holding NaN.

use crate::error::XentError;
use crate::float::{Float, Storage};
use crate::interrupt;
use crate::kernels::lanes::{Columns, MAX_LANES, V, from_f64_lanes, to_f64_lanes};
use crate::kernels::rows::{Ptrs, RowBuffers, RowKernel, RowResults, run_rows};
use crate::kernels::stats::{
    ColumnSum, col_max, col_sum_exp, load_upto, map_row, row_max, row_sum_exp, store_upto,
};
use crate::kernels::{Io, Layout, RawIn, RawOut, check_len};
use crate::simd::{Isa, Vector};

/// Writes `log_softmax(x)` along the class axis of `layout`.
pub fn log_softmax<S: Storage>(io: Io<'_, S>, layout: Layout) -> Result<(), XentError> {
    normalize(io, layout, &Normalize { log: true })
}

/// Writes `softmax(x)` along the class axis of `layout`.
pub fn softmax<S: Storage>(io: Io<'_, S>, layout: Layout) -> Result<(), XentError> {
    normalize(io, layout, &Normalize { log: false })
}

fn normalize<S: Storage>(
    mut io: Io<'_, S>,
    layout: Layout,
    k: &Normalize,
) -> Result<(), XentError> {
    check_len("the input", io.len(), layout.len())?;
    if !io.writes() {
        return Err(XentError::Value(
            "log_softmax/softmax need an output buffer".into(),
        ));
    }
    let (x, out) = io.raw()?;
    run_rows(
        layout,
        k,
        RowBuffers { x, x2: None, out },
        RowResults::Discard,
    )?;
    Ok(())
}

/// Writes `logsumexp(x)` along the class axis of `layout`, one value per row, into `out`.
pub fn logsumexp<S: Storage>(x: &[S], layout: Layout, out: &mut [S]) -> Result<(), XentError> {
    check_len("the input", x.len(), layout.len())?;
    check_len("the output", out.len(), layout.rows())?;
    let buffers = RowBuffers {
        x: RawIn::new(x),
        x2: None,
        out: None,
    };
    run_rows(
        layout,
        &LogSumExp,
        buffers,
        RowResults::Store(RawOut::new(out)),
    )?;
    Ok(())
}

/// Writes the vector-Jacobian product of `log_softmax`: `g - exp(y) Σ g`, where
/// `y = log_softmax(x)` is `output` and `g` is `grad`.
pub fn log_softmax_backward<S: Storage>(
    grad: &[S],
    output: &[S],
    layout: Layout,
    out: &mut [S],
) -> Result<(), XentError> {
    backward(grad, output, layout, out, Backward { log: true })
}

/// Writes the vector-Jacobian product of `softmax`: `y (g - Σ g y)`, where `y = softmax(x)`
/// is `output` and `g` is `grad`.
pub fn softmax_backward<S: Storage>(
    grad: &[S],
    output: &[S],
    layout: Layout,
    out: &mut [S],
) -> Result<(), XentError> {
    backward(grad, output, layout, out, Backward { log: false })
}

fn backward<S: Storage>(
    grad: &[S],
    output: &[S],
    layout: Layout,
    out: &mut [S],
    k: Backward,
) -> Result<(), XentError> {
    check_len("grad_output", grad.len(), layout.len())?;
    check_len("output", output.len(), layout.len())?;
    check_len("the result", out.len(), layout.len())?;
    let buffers = RowBuffers {
        x: RawIn::new(grad),
        x2: Some(RawIn::new(output)),
        out: Some(RawOut::new(out)),
    };
    run_rows(layout, &k, buffers, RowResults::Discard)?;
    Ok(())
}

/// `log_softmax` (`log`) or `softmax`.
struct Normalize {
    log: bool,
}

impl<T: Float> RowKernel<T> for Normalize {
    #[inline(always)]
    fn row<I: Isa>(&self, isa: I, _r: usize, p: Ptrs<T>, n: usize) -> f64 {
        let lanes = V::<T, I>::LANES;
        // SAFETY: the driver hands over `n` readable values at p.x and writable at p.out.
        unsafe {
            let m = row_max(isa, p.x, n);
            let mv = V::<T, I>::splat(isa, m);
            if self.log {
                let s = row_sum_exp(isa, p.x, n, m, std::ptr::null_mut(), p.ahead);
                let ln_s = V::<T, I>::splat(isa, T::from_f64(s.ln()));
                map_row(isa, p.x, p.out, n, p.stream, |x| x.sub(mv).sub(ln_s));
            } else {
                let s = row_sum_exp(isa, p.x, n, m, p.out, p.ahead);
                let inv = V::<T, I>::splat(isa, T::from_f64(1.0 / s));
                for seg in (0..n).step_by(interrupt::ROW_CHECK) {
                    if interrupt::stopped_at(seg) {
                        return 0.0;
                    }
                    for i in (seg..n.min(seg + interrupt::ROW_CHECK)).step_by(lanes) {
                        let k = lanes.min(n - i);
                        let e = load_upto(isa, p.out.add(i), k, T::ZERO);
                        store_upto(e.mul(inv), p.out.add(i), k);
                    }
                }
            }
        }
        0.0
    }

    #[inline(always)]
    fn lanes<I: Isa>(
        &self,
        isa: I,
        _r0: usize,
        _valid: usize,
        cols: Columns<T>,
        classes: usize,
    ) -> V<T, I> {
        // SAFETY: the driver hands over `classes` columns with an output.
        unsafe {
            let m = col_max(isa, &cols, classes);
            if self.log {
                let ln_s = T::ln(col_sum_exp(isa, &cols, classes, m, false));
                for c in 0..classes {
                    cols.x(isa, c).sub(m).sub(ln_s).store(cols.out(c));
                }
            } else {
                let s = col_sum_exp(isa, &cols, classes, m, true);
                let inv = V::<T, I>::splat(isa, T::ONE).div(s);
                for c in 0..classes {
                    V::<T, I>::load(isa, cols.out(c))
                        .mul(inv)
                        .store(cols.out(c));
                }
            }
        }
        V::<T, I>::splat(isa, T::ZERO)
    }
}

/// `logsumexp`, one result per row.
struct LogSumExp;

/// torch's `logsumexp` of a row whose maximum is not finite: NaN if the row holds a NaN,
/// else that maximum (`+inf`, or `-inf` for a row of `-inf` or an empty row).
fn special_logsumexp(values: impl Iterator<Item = f64>) -> f64 {
    let mut m = f64::NEG_INFINITY;
    for v in values {
        if v.is_nan() {
            return f64::NAN;
        }
        m = m.max(v);
    }
    m
}

impl<T: Float> RowKernel<T> for LogSumExp {
    #[inline(always)]
    fn row<I: Isa>(&self, isa: I, _r: usize, p: Ptrs<T>, n: usize) -> f64 {
        // SAFETY: the driver hands over `n` readable values at p.x.
        let m = unsafe { row_max(isa, p.x, n) }.to_f64();
        if !m.is_finite() {
            // SAFETY: as above.
            return special_logsumexp((0..n).map(|i| unsafe { *p.x.add(i) }.to_f64()));
        }
        // SAFETY: as above.
        let s = unsafe { row_sum_exp(isa, p.x, n, T::from_f64(m), std::ptr::null_mut(), p.ahead) };
        m + s.ln()
    }

    #[inline(always)]
    fn lanes<I: Isa>(
        &self,
        isa: I,
        _r0: usize,
        valid: usize,
        cols: Columns<T>,
        classes: usize,
    ) -> V<T, I> {
        // SAFETY: the driver hands over `classes` columns.
        let (m, s) = unsafe {
            let m = col_max(isa, &cols, classes);
            (m, col_sum_exp(isa, &cols, classes, m, false))
        };
        let lse = m.add(T::ln(s));
        // m - m is 0 where m is finite and NaN where it is not (padding lanes hold finite 0).
        if !m.sub(m).reduce_sum().is_nan() {
            return lse;
        }
        let mut ms = [0.0; MAX_LANES];
        to_f64_lanes::<T, I>(m, &mut ms);
        let mut out = [0.0; MAX_LANES];
        to_f64_lanes::<T, I>(lse, &mut out);
        for j in 0..valid {
            if !ms[j].is_finite() {
                // SAFETY: lane j < valid of every column is readable.
                out[j] =
                    special_logsumexp((0..classes).map(|c| unsafe { cols.x_at(c, j) }.to_f64()));
            }
        }
        from_f64_lanes::<T, I>(isa, &out)
    }
}

/// The vector-Jacobian product of `log_softmax` (`log`) or `softmax`; `x` is the incoming
/// gradient, `x2` the forward output.
#[derive(Clone, Copy)]
struct Backward {
    log: bool,
}

impl<T: Float> RowKernel<T> for Backward {
    #[inline(always)]
    fn row<I: Isa>(&self, isa: I, _r: usize, p: Ptrs<T>, n: usize) -> f64 {
        let lanes = V::<T, I>::LANES;
        // SAFETY: the driver hands over `n` values at p.x, p.x2 (read) and p.out (written).
        unsafe {
            let mut acc = V::<T, I>::wide_zero(isa);
            for seg in (0..n).step_by(interrupt::ROW_CHECK) {
                if interrupt::stopped_at(seg) {
                    return 0.0;
                }
                for i in (seg..n.min(seg + interrupt::ROW_CHECK)).step_by(lanes) {
                    let k = lanes.min(n - i);
                    let g = load_upto(isa, p.x.add(i), k, T::ZERO);
                    let term = if self.log {
                        g
                    } else {
                        g.mul(load_upto(isa, p.x2.add(i), k, T::ZERO))
                    };
                    acc = term.wide_add(acc);
                }
            }
            let total = V::<T, I>::splat(isa, T::from_f64(V::<T, I>::wide_sum(acc)));
            for seg in (0..n).step_by(interrupt::ROW_CHECK) {
                if interrupt::stopped_at(seg) {
                    return 0.0;
                }
                for i in (seg..n.min(seg + interrupt::ROW_CHECK)).step_by(lanes) {
                    let k = lanes.min(n - i);
                    let g = load_upto(isa, p.x.add(i), k, T::ZERO);
                    let y = load_upto(isa, p.x2.add(i), k, T::ZERO);
                    let r = if self.log {
                        g.sub(T::exp(y).mul(total))
                    } else {
                        y.mul(g.sub(total))
                    };
                    store_upto(r, p.out.add(i), k);
                }
            }
        }
        0.0
    }

    #[inline(always)]
    fn lanes<I: Isa>(
        &self,
        isa: I,
        _r0: usize,
        _valid: usize,
        cols: Columns<T>,
        classes: usize,
    ) -> V<T, I> {
        // SAFETY: the driver hands over `classes` columns of both inputs and an output.
        unsafe {
            let mut sum = ColumnSum::<T, I>::new(isa);
            for c in 0..classes {
                let g = cols.x(isa, c);
                sum.add(if self.log { g } else { g.mul(cols.x2(isa, c)) });
            }
            let total = sum.total();
            for c in 0..classes {
                let (g, y) = (cols.x(isa, c), cols.x2(isa, c));
                let r = if self.log {
                    g.sub(T::exp(y).mul(total))
                } else {
                    y.mul(g.sub(total))
                };
                r.store(cols.out(c));
            }
        }
        V::<T, I>::splat(isa, T::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{
        assert_close, at, at_every_level, exclusive, layouts, lse, row, values,
    };

    fn check_forward<T: Float>(tol: f64) {
        for layout in layouts() {
            let x64 = values(layout.len(), 7, 30.0);
            let x: Vec<T> = x64.iter().map(|&v| T::from_f64(v)).collect();
            let xr: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
            at_every_level(|level| {
                let mut ls = vec![T::ZERO; layout.len()];
                let mut sm = vec![T::ZERO; layout.len()];
                let mut l = vec![T::ZERO; layout.rows()];
                log_softmax(
                    Io::ReadWrite {
                        input: &x,
                        out: &mut ls,
                    },
                    layout,
                )
                .unwrap();
                softmax(
                    Io::ReadWrite {
                        input: &x,
                        out: &mut sm,
                    },
                    layout,
                )
                .unwrap();
                logsumexp(&x, layout, &mut l).unwrap();
                for (r, lse_r) in l.iter().enumerate() {
                    let values = row(&xr, layout, r);
                    let want = lse(&values);
                    assert_close(
                        lse_r.to_f64(),
                        want,
                        tol,
                        &format!("{level} {layout:?} lse"),
                    );
                    for (c, v) in values.iter().enumerate() {
                        let i = at(layout, r, c);
                        let what = format!("{level} {layout:?} r{r} c{c}");
                        assert_close(ls[i].to_f64(), v - want, tol * 30.0, &what);
                        assert_close(sm[i].to_f64(), (v - want).exp(), tol, &what);
                    }
                }
            });
        }
    }

    #[test]
    fn forward_matches_float64_reference_f32() {
        let _g = exclusive();
        check_forward::<f32>(2e-6);
    }

    #[test]
    fn forward_matches_float64_reference_f64() {
        let _g = exclusive();
        check_forward::<f64>(1e-13);
    }

    #[test]
    fn in_place_equals_separate_output() {
        let _g = exclusive();
        for layout in layouts() {
            let x: Vec<f32> = values(layout.len(), 3, 5.0)
                .iter()
                .map(|&v| v as f32)
                .collect();
            at_every_level(|_| {
                let mut sep = vec![0.0f32; layout.len()];
                softmax(
                    Io::ReadWrite {
                        input: &x,
                        out: &mut sep,
                    },
                    layout,
                )
                .unwrap();
                let mut buf = x.clone();
                softmax(Io::InPlace(&mut buf), layout).unwrap();
                assert_eq!(sep, buf);
            });
        }
    }

    #[test]
    fn special_rows_follow_torch() {
        let _g = exclusive();
        let inf = f64::INFINITY;
        let rows = [
            [f64::NEG_INFINITY; 4],
            [1.0, inf, 2.0, 3.0],
            [1.0, f64::NAN, 2.0, 3.0],
            [f64::NEG_INFINITY, 0.0, f64::NEG_INFINITY, 0.0],
        ];
        // Four classes run through the transposed tile, forty (padded with -inf) by rows.
        for classes in [4, 40] {
            let layout = Layout {
                outer: 4,
                classes,
                inner: 1,
            };
            let mut x = vec![f64::NEG_INFINITY; 4 * classes];
            for (r, values) in rows.iter().enumerate() {
                x[r * classes..r * classes + 4].copy_from_slice(values);
            }
            at_every_level(|level| {
                let mut l = vec![0.0; 4];
                logsumexp(&x, layout, &mut l).unwrap();
                assert_eq!(l[0], f64::NEG_INFINITY, "{level}");
                assert_eq!(l[1], inf, "{level}");
                assert!(l[2].is_nan(), "{level}");
                assert_close(l[3], 2f64.ln(), 1e-15, "masked row");
                let mut ls = vec![0.0; 4 * classes];
                log_softmax(
                    Io::ReadWrite {
                        input: &x,
                        out: &mut ls,
                    },
                    layout,
                )
                .unwrap();
                assert!(
                    ls[..3 * classes].iter().all(|v| v.is_nan()),
                    "{level}: {ls:?}"
                );
                assert_eq!(ls[3 * classes], f64::NEG_INFINITY);
                assert_close(ls[3 * classes + 1], -(2f64.ln()), 1e-15, "masked row");
            });
        }
    }

    #[test]
    fn backward_matches_reference() {
        let _g = exclusive();
        for layout in layouts() {
            let x = values(layout.len(), 11, 4.0);
            let g = values(layout.len(), 12, 1.0);
            at_every_level(|level| {
                let mut y = vec![0.0; layout.len()];
                let mut p = vec![0.0; layout.len()];
                log_softmax(
                    Io::ReadWrite {
                        input: &x,
                        out: &mut y,
                    },
                    layout,
                )
                .unwrap();
                softmax(
                    Io::ReadWrite {
                        input: &x,
                        out: &mut p,
                    },
                    layout,
                )
                .unwrap();
                let mut dl = vec![0.0; layout.len()];
                let mut ds = vec![0.0; layout.len()];
                log_softmax_backward(&g, &y, layout, &mut dl).unwrap();
                softmax_backward(&g, &p, layout, &mut ds).unwrap();
                for r in 0..layout.rows() {
                    let (gr, pr) = (row(&g, layout, r), row(&p, layout, r));
                    let sum_g: f64 = gr.iter().sum();
                    let dot: f64 = gr.iter().zip(&pr).map(|(a, b)| a * b).sum();
                    for c in 0..layout.classes {
                        let i = at(layout, r, c);
                        let what = format!("{level} {layout:?}");
                        assert_close(dl[i], gr[c] - pr[c] * sum_g, 1e-12, &what);
                        assert_close(ds[i], pr[c] * (gr[c] - dot), 1e-12, &what);
                    }
                }
            });
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let layout = Layout {
            outer: 2,
            classes: 3,
            inner: 1,
        };
        let mut out = vec![0.0f32; 5];
        assert!(
            log_softmax(
                Io::ReadWrite {
                    input: &[0.0; 6],
                    out: &mut out
                },
                layout
            )
            .is_err()
        );
        assert!(logsumexp(&[0.0f32; 6], layout, &mut [0.0; 3]).is_err());
    }
}
