#![allow(clippy::excessive_precision)] // Constants are written as derived, to more digits than needed.
//! Vector exponential and logarithms, written once over [`Vector`] and so compiled for every
//! instruction set, the scalar one included.
//!
//! - `exp`: Cody–Waite range reduction `x = n ln2 + r` with `|r| <= ln2/2` (two-part `ln2`,
//!   fused multiply-adds), a polynomial for `e^r`, then an exact scaling by `2^n` that rounds
//!   correctly into the subnormal range. Overflows to `+inf`, underflows to `0`, `exp(-inf) =
//!   0`, NaN propagates.
//! - `ln`: `x = m 2^e` with `m` in `[sqrt(1/2), sqrt(2))`, then `ln m = 2 atanh(s)`,
//!   `s = (m-1)/(m+1)`, as an odd series in `s`. Subnormals are scaled up first; `ln 0 = -inf`,
//!   `ln(x<0) = NaN`, `ln inf = inf`, NaN propagates.
//! - `ln_1p`: `ln(1+u)` with the rounding of `1+u` corrected to first order, for `u >= -1`.
//! - `exp_m1`: `e^x - 1` from the exponential's reduction: `e^r - 1` itself where `n = 0`.
//! - `tanh` in f32: the rational `x P(x^2) / Q(x^2)` on `x` clamped to `±9`, past which
//!   `tanh` rounds to `±1`, and the result clamped to `[-1, 1]`: one division and no
//!   exponential, for the soft cap's one `tanh` per logit. In f64: below `|x| = 0.55` the odd polynomial `x + x^3 P(x^2)`; from there on
//!   `1 - 2 / (e^{2|x|} + 1)`, whose subtraction loses at most a bit at the threshold
//!   (`tanh 0.55 = 0.50`, so the term taken off is below the result). `tanh(±inf) = ±1`,
//!   `tanh(±0) = ±0`, NaN propagates.
//!
//! The f32 versions are within 2 ULP of the correctly rounded result (`tanh`: 6 at the
//! vector levels, 7 for the scalar twin, whose multiply-add is not fused; every float was
//! checked) and the f64 versions within a few ULP over their whole domain (see the tests
//! below, which compare against the float64 and libm references).

use super::{Isa, Lane, Level, Vector, WithIsa};

/// Evaluates `c[0] + x c[1] + x^2 c[2] + ...` by Horner's rule.
#[inline(always)]
fn horner<V: Vector>(x: V, c: &[V::Elem]) -> V {
    let mut acc = splat(x, c[c.len() - 1]);
    for &k in c[..c.len() - 1].iter().rev() {
        acc = acc.mul_add(x, splat(x, k));
    }
    acc
}

/// `v` in every lane of a vector like `like`.
///
/// The vector code here avoids closures: they are compiled outside the caller's instruction
/// set unless inlined, and large ones are not.
#[inline(always)]
fn splat<V: Vector>(like: V, v: V::Elem) -> V {
    V::splat(like.isa(), v)
}

/// `P` of `e^r = 1 + r + r^2 P(r)` in single precision: degree 4, fitted for the least
/// relative error of `e^r` on `[-ln2/2, ln2/2]` (3.1e-9, a fortieth of an f32 ULP).
const EXP_F32_P: [f32; 5] = [
    4.999_999_4e-1,
    1.666_652_1e-1,
    4.166_838_9e-2,
    8.368_710e-3,
    1.381_461_3e-3,
];

/// The Taylor series of `e^r` to degree 13: the remainder is below 1e-17 on
/// `[-ln2/2, ln2/2]`.
const EXP_F64_TAYLOR: [f64; 14] = [
    1.0,
    1.0,
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5_040.0,
    1.0 / 40_320.0,
    1.0 / 362_880.0,
    1.0 / 3_628_800.0,
    1.0 / 39_916_800.0,
    1.0 / 479_001_600.0,
    1.0 / 6_227_020_800.0,
];

/// The range reduction of `e^x` in single precision: `x` clamped into `[-104, 89]` (beyond
/// these the result is 0 or inf anyway; `lo.max(x)` keeps NaN), `n = round(x log2 e)` and
/// `r = x - n ln2` (ln2 in two parts), so `e^x = e^r 2^n`.
#[inline(always)]
fn exp_reduce_f32<V: Vector<Elem = f32>>(x: V) -> (V, V, V) {
    let x = splat(x, 89.0).min(splat(x, -104.0).max(x));
    let n = x.mul(splat(x, std::f32::consts::LOG2_E)).round();
    let r = n.mul_add(splat(x, -0.693_359_4), x);
    let r = n.mul_add(splat(x, 2.121_944_4e-4), r);
    (x, n, r)
}

/// The range reduction of `e^x` in double precision, as [`exp_reduce_f32`] with `x`
/// clamped into `[-746, 710]`.
#[inline(always)]
fn exp_reduce_f64<V: Vector<Elem = f64>>(x: V) -> (V, V, V) {
    let x = splat(x, 710.0).min(splat(x, -746.0).max(x));
    let n = x.mul(splat(x, std::f64::consts::LOG2_E)).round();
    let r = n.mul_add(splat(x, -6.931_471_803_691_238_164_90e-1), x);
    let r = n.mul_add(splat(x, -1.908_214_929_270_587_700_02e-10), r);
    (x, n, r)
}

/// `e^x` in single precision.
#[inline(always)]
pub fn exp_f32<V: Vector<Elem = f32>>(x: V) -> V {
    let (x, n, r) = exp_reduce_f32(x);
    let p = horner(r, &EXP_F32_P);
    let y = p.mul_add(r.mul(r), r).add(splat(x, 1.0));
    y.ldexp(n)
}

/// `e^x` in double precision.
#[inline(always)]
pub fn exp_f64<V: Vector<Elem = f64>>(x: V) -> V {
    let (_, n, r) = exp_reduce_f64(x);
    horner(r, &EXP_F64_TAYLOR).ldexp(n)
}

/// Splits positive `x` into `(f, e)` with `x = (1 + f) 2^e`, `1 + f` in
/// `[sqrt(1/2), sqrt(2))`; subnormals are first scaled up by `2^scale.1` (`scale.0`).
#[inline(always)]
fn ln_reduce<V: Vector>(x: V, min_positive: V::Elem, scale: (V::Elem, V::Elem)) -> (V, V)
where
    V::Elem: Lane,
{
    let one = splat(x, V::Elem::ONE);
    let tiny = x.lt(splat(x, min_positive));
    let xs = V::select(tiny, x.mul(splat(x, scale.0)), x);
    let (m, e) = xs.frexp();
    let e = V::select(tiny, e.sub(splat(x, scale.1)), e);
    let big = splat(x, V::Elem::from_f64(std::f64::consts::SQRT_2)).lt(m);
    let m = V::select(big, m.mul(splat(x, V::Elem::from_f64(0.5))), m);
    let e = V::select(big, e.add(one), e);
    (m.sub(one), e)
}

/// `e ln2 + ln(1 + f)` with `ln2 = hi + lo`, and the special values of `ln x`.
#[inline(always)]
fn ln_finish<V: Vector>(x: V, ln_mantissa: V, e: V, ln2: (V::Elem, V::Elem)) -> V
where
    V::Elem: Lane,
{
    let zero = splat(x, V::Elem::ZERO);
    let r = e.mul_add(splat(x, ln2.0), ln_mantissa.add(e.mul(splat(x, ln2.1))));
    let r = V::select(x.lt(zero), splat(x, V::Elem::NAN), r);
    let r = V::select(x.is_nan(), x, r);
    let r = V::select(x.eq(zero), splat(x, V::Elem::NEG_INFINITY), r);
    V::select(x.eq(splat(x, V::Elem::INFINITY)), x, r)
}

/// `ln 2` split as `hi + lo`, `hi` with trailing zero bits (so `n hi` is exact), for f32.
const LN2_F32: (f32, f32) = (0.693_359_4, -2.121_944_4e-4);

/// `ln(1 + f) = f - f^2/2 + f^3 P(f)` in single precision, `P` given by its coefficients
/// (lowest first): the leading term is exact, so errors stay small.
#[inline(always)]
fn ln_1p_series_f32<V: Vector<Elem = f32>>(f: V, p: &[f32]) -> V {
    let z = f.mul(f);
    let p = horner(f, p);
    f.add(p.mul(f).mul_add(z, z.mul(splat(f, -0.5))))
}

/// Natural logarithm in single precision.
#[inline(always)]
pub fn ln_f32<V: Vector<Elem = f32>>(x: V) -> V {
    let (f, e) = ln_reduce(x, f32::MIN_POSITIVE, (16_777_216.0, 24.0));
    let ln_m = ln_1p_series_f32(
        f,
        &[
            3.333_333_1e-1,
            -2.499_999_4e-1,
            2.000_071_4e-1,
            -1.666_805_8e-1,
            1.424_932_3e-1,
            -1.242_014_1e-1,
            1.167_699_9e-1,
            -1.151_461e-1,
            7.037_684e-2,
        ],
    );
    ln_finish(x, ln_m, e, LN2_F32)
}

/// Natural logarithm in double precision.
#[inline(always)]
pub fn ln_f64<V: Vector<Elem = f64>>(x: V) -> V {
    let (f, e) = ln_reduce(x, f64::MIN_POSITIVE, (18_014_398_509_481_984.0, 54.0));
    // ln(1+f) = 2 atanh(t), t = f / (2 + f), as an odd series in t.
    let t = f.div(f.add(splat(x, 2.0)));
    let series = horner(
        t.mul(t),
        &[
            1.0,
            1.0 / 3.0,
            1.0 / 5.0,
            1.0 / 7.0,
            1.0 / 9.0,
            1.0 / 11.0,
            1.0 / 13.0,
            1.0 / 15.0,
            1.0 / 17.0,
            1.0 / 19.0,
            1.0 / 21.0,
            1.0 / 23.0,
        ],
    );
    let ln_m = series.mul(t.add(t));
    ln_finish(
        x,
        ln_m,
        e,
        (
            6.931_471_803_691_238_164_90e-1,
            1.908_214_929_270_587_700_02e-10,
        ),
    )
}

/// `ln(1 + u)` for `u >= -1`, accurate for tiny `u`, in single precision.
#[inline(always)]
pub fn ln_1p_f32<V: Vector<Elem = f32>>(u: V) -> V {
    let w = u.add(splat(u, 1.0));
    ln_1p_corrected(u, w, ln_f32(w))
}

/// `ln(1 + u)` for `u >= -1`, accurate for tiny `u`, in double precision.
#[inline(always)]
pub fn ln_1p_f64<V: Vector<Elem = f64>>(u: V) -> V {
    let w = u.add(splat(u, 1.0));
    ln_1p_corrected(u, w, ln_f64(w))
}

/// `ln(1 + u)` from `w = 1 + u` rounded and `lw = ln w`.
#[inline(always)]
fn ln_1p_corrected<V: Vector>(u: V, w: V, lw: V) -> V
where
    V::Elem: Lane,
{
    let one = splat(u, V::Elem::ONE);
    // w = 1 + u rounded; (u - (w - 1)) / w corrects ln(w) for that rounding to first order.
    let correction = u.sub(w.sub(one)).div(w);
    // Where w is 0 or inf (or u is NaN) the correction is NaN and ln(w) is the answer.
    V::select(correction.is_nan(), lw, lw.add(correction))
}

/// `ln(1 + u)` for `u` in `[0, 1]` in single precision: the softplus of binary cross-entropy
/// on logits, `ln(1 + e^-|x|)`, without the division and special cases of [`ln_1p_f32`] (only
/// NaN is handled: it propagates). Below 1/2 the polynomial of `ln(1 + f)` takes `f = u`
/// itself; from 1/2 on, `1 + u = 2 (1 + f)` with `f = (u - 1)/2` in `[-1/4, 0]`, computed
/// exactly, so no rounding of `1 + u` needs correcting. Within 1 ULP (0.93 at worst over every
/// float32 of `[0, 1]`, checked once on every instruction set).
#[inline(always)]
pub fn ln_1p_unit_f32<V: Vector<Elem = f32>>(u: V) -> V {
    let big = splat(u, 0.5).le(u);
    let f = V::select(big, u.mul_add(splat(u, 0.5), splat(u, -0.5)), u);
    let k = V::select(big, splat(u, 1.0), splat(u, 0.0));
    // P of degree 7 fitted on [-1/4, 1/2] for the least relative error of ln(1+f).
    let ln_f = ln_1p_series_f32(
        f,
        &[
            3.333_345e-1,
            -2.500_009_5e-1,
            1.999_085_7e-1,
            -1.664_729_3e-1,
            1.447_840_6e-1,
            -1.316_138_2e-1,
            1.046_335_3e-1,
            -4.507_655e-2,
        ],
    );
    k.mul_add(splat(u, LN2_F32.0), k.mul_add(splat(u, LN2_F32.1), ln_f))
}

/// `e^x - 1` from the reduction `x = n ln2 + r` of the exponential and `e^r - 1` (`er`):
/// `er` itself where `n = 0` (`|x| <= ln2/2`, no cancellation), else `e^x - 1` (no more than a
/// bit lost: `e^x` is then at least `sqrt 2` or at most `1/sqrt 2`; within 4 ULP). `x = -0`
/// stays `-0`.
#[inline(always)]
fn exp_m1_finish<V: Vector>(x: V, n: V, er: V) -> V
where
    V::Elem: Lane,
{
    let zero = splat(x, V::Elem::ZERO);
    let one = splat(x, V::Elem::ONE);
    let big = er.add(one).ldexp(n).sub(one);
    V::select(x.eq(zero), x, V::select(n.eq(zero), er, big))
}

/// `e^x - 1` in single precision (accurate for tiny `x`).
#[inline(always)]
pub fn exp_m1_f32<V: Vector<Elem = f32>>(x: V) -> V {
    let (x, n, r) = exp_reduce_f32(x);
    let p = horner(r, &EXP_F32_P);
    exp_m1_finish(x, n, p.mul_add(r.mul(r), r))
}

/// `e^x - 1` in double precision (accurate for tiny `x`).
#[inline(always)]
pub fn exp_m1_f64<V: Vector<Elem = f64>>(x: V) -> V {
    // The series without its constant term, times `r`.
    let (x, n, r) = exp_reduce_f64(x);
    exp_m1_finish(x, n, horner(r, &EXP_F64_TAYLOR[1..]).mul(r))
}

/// Below this `|x|` [`tanh_f64`] uses its polynomial.
const TANH_SMALL: f64 = 0.55;

/// Where [`tanh_f32`] clamps its argument: its fit reaches 1 there, and `tanh x` rounds to
/// `±1` in single precision from `|x| = 9.01` on (`1 - tanh 9.01 < 2^-25`).
const TANH_F32_BOUND: f32 = 9.0;

/// `tanh x` from its polynomial part `small` (for `|x| <` [`TANH_SMALL`]) and `2 / (e^{2|x|} + 1)`
/// (`q`, for the rest): the branch-free choice between the two, with the signs of `x`.
#[inline(always)]
fn tanh_finish<V: Vector>(x: V, a: V, small: V, q: V) -> V
where
    V::Elem: Lane,
{
    let zero = splat(x, V::Elem::ZERO);
    let one = splat(x, V::Elem::ONE);
    let large = one.sub(q);
    let large = V::select(x.lt(zero), zero.sub(large), large);
    let r = V::select(a.lt(splat(x, V::Elem::from_f64(TANH_SMALL))), small, large);
    // x = -0: the polynomial's x + (-0) rounds to +0; tanh(-0) is -0.
    V::select(x.eq(zero), x, r)
}

/// `tanh x` in single precision: `x P(x^2) / Q(x^2)` on `x` clamped to
/// `±`[`TANH_F32_BOUND`], one division and no exponential.
#[inline(always)]
pub fn tanh_f32<V: Vector<Elem = f32>>(x: V) -> V {
    // The bound first, the argument second: `max` and `min` return their second operand
    // when one is NaN or both are equal, so NaN passes through, and so does `-0`.
    let x = splat(x, TANH_F32_BOUND).min(splat(x, -TANH_F32_BOUND).max(x));
    let u = x.mul(x);
    // The minimax fit of `tanh x / x` in `u = x^2` on `[0, 81]` (relative error 6.8e-8 in
    // float64, 9.1e-8 with the coefficients rounded to f32; the rest of the 6 ULP is the
    // rounding of the evaluation; see `benches/NOTES.md`). At the bound it is at least 1, so
    // `tanh(±inf) = ±1`; `-0 P(0) / Q(0) = -0`.
    let p = horner(
        u,
        &[
            9.999_999_315_265_444e-1,
            1.293_022_200_213_602_1e-1,
            2.932_173_243_257_189_3e-3,
            9.363_159_523_041_491e-6,
            -1.303_518_633_379_657_2e-8,
            1.882_503_023_960_599_7e-11,
        ],
    );
    let q = horner(
        u,
        &[
            1.0,
            4.626_353_353_705_790_5e-1,
            2.381_100_339_644_654_3e-2,
            2.296_211_639_760_421_4e-4,
        ],
    );
    // Near the bound the fit and its rounding reach a little past 1 (from x = 7.9 on): the
    // result is clamped to [-1, 1] the same way as the argument, so `1 - tanh^2 >= 0`.
    let one = splat(x, 1.0);
    one.min(splat(x, -1.0).max(x.mul(p).div(q)))
}

/// `tanh x` in double precision.
#[inline(always)]
pub fn tanh_f64<V: Vector<Elem = f64>>(x: V) -> V {
    let a = x.abs();
    let u = x.mul(x);
    // tanh x = x + x^3 P(x^2) on |x| < 0.55, P the Chebyshev fit of degree 10 (relative error
    // 2.6e-18 there).
    let p = horner(
        u,
        &[
            -3.333_333_333_333_333_256_1e-1,
            1.333_333_333_333_271_482_6e-1,
            -5.396_825_396_743_401_450_4e-2,
            2.186_948_849_366_694_190_3e-2,
            -8.863_234_397_814_354_837_8e-3,
            3.592_110_378_689_023_877_3e-3,
            -1.455_661_830_100_716_033_5e-3,
            5.889_360_520_074_057_763_9e-4,
            -2.346_347_410_887_237_127_2e-4,
            8.511_313_685_577_671_233_1e-5,
            -2.060_276_537_636_633_964_2e-5,
        ],
    );
    let small = x.mul_add(u.mul(p), x);
    let two = splat(x, 2.0);
    tanh_finish(x, a, small, two.div(exp_f64(a.add(a)).add(splat(x, 1.0))))
}

/// A vector math function, for [`evaluate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    /// `e^x`.
    Exp,
    /// `ln x`.
    Ln,
    /// `ln(1 + x)`.
    Ln1p,
    /// `ln(1 + x)` for `x` in `[0, 1]`.
    Ln1pUnit,
    /// `tanh x`.
    Tanh,
    /// `e^x - 1`.
    ExpM1,
}

/// Evaluates `func` on every element of `x` into `out` with instruction set `level`
/// (used by the tests and the kernel benches to compare the vector paths with the scalar
/// twin).
///
/// # Panics
/// If `x` and `out` differ in length.
pub fn evaluate<T: Evaluable>(level: Level, func: Func, x: &[T], out: &mut [T]) {
    assert_eq!(x.len(), out.len(), "evaluate needs equal lengths");
    T::evaluate(level, func, x, out);
}

/// The element types [`evaluate`] runs on, each with its vector functions.
pub trait Evaluable: Lane {
    /// See [`evaluate`]; `x` and `out` have equal lengths.
    fn evaluate(level: Level, func: Func, x: &[Self], out: &mut [Self]);
}

struct Evaluate<'a, T> {
    func: Func,
    x: &'a [T],
    out: &'a mut [T],
}

/// [`Evaluable`] for one element type: its vector type on an instruction set, and its
/// function for each [`Func`].
macro_rules! evaluable {
    ($t:ty, $vec:ident, $exp:ident, $ln:ident, $ln_1p:ident, $ln_1p_unit:ident, $tanh:ident,
     $exp_m1:ident) => {
        impl Evaluable for $t {
            fn evaluate(level: Level, func: Func, x: &[Self], out: &mut [Self]) {
                super::dispatch_at(level, Evaluate { func, x, out });
            }
        }

        impl WithIsa for Evaluate<'_, $t> {
            type Output = ();

            #[inline(always)]
            fn run<I: Isa>(self, isa: I) {
                #[inline(always)]
                fn apply<W: Vector<Elem = $t>>(func: Func, v: W) -> W {
                    match func {
                        Func::Exp => $exp(v),
                        Func::Ln => $ln(v),
                        Func::Ln1p => $ln_1p(v),
                        Func::Ln1pUnit => $ln_1p_unit(v),
                        Func::Tanh => $tanh(v),
                        Func::ExpM1 => $exp_m1(v),
                    }
                }
                let lanes = I::$vec::LANES;
                let n = self.x.len();
                let full = n - n % lanes;
                let (src, dst) = (self.x.as_ptr(), self.out.as_mut_ptr());
                for i in (0..full).step_by(lanes) {
                    // SAFETY: i + lanes <= full <= n for both slices.
                    unsafe { apply(self.func, I::$vec::load(isa, src.add(i))).store(dst.add(i)) }
                }
                if full < n {
                    // SAFETY: n - full < lanes values remain in both slices.
                    unsafe {
                        let v = I::$vec::load_partial(isa, src.add(full), n - full, 1.0);
                        apply(self.func, v).store_partial(dst.add(full), n - full)
                    }
                }
            }
        }
    };
}

evaluable!(
    f32,
    F32,
    exp_f32,
    ln_f32,
    ln_1p_f32,
    ln_1p_unit_f32,
    tanh_f32,
    exp_m1_f32
);
evaluable!(
    f64, F64, exp_f64, ln_f64, ln_1p_f64, ln_1p_f64, tanh_f64, exp_m1_f64
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Level;

    fn levels() -> Vec<Level> {
        Level::ALL
            .into_iter()
            .filter(|l| l.is_supported())
            .collect()
    }

    /// Distance in units in the last place between `got` and the exact `want`.
    fn ulps_f32(got: f32, want: f64) -> f64 {
        if got as f64 == want || (got.is_nan() && want.is_nan()) {
            return 0.0;
        }
        let ulp = (want.abs() as f32).max(f32::MIN_POSITIVE);
        let ulp = f32::from_bits(ulp.to_bits() + 1) - ulp;
        (got as f64 - want).abs() / ulp as f64
    }

    fn ulps_f64(got: f64, want: f64) -> f64 {
        if got == want || (got.is_nan() && want.is_nan()) {
            return 0.0;
        }
        let ulp = want.abs().max(f64::MIN_POSITIVE);
        let ulp = f64::from_bits(ulp.to_bits() + 1) - ulp;
        (got - want).abs() / ulp
    }

    /// A sweep of f32 values over `[lo, hi]` plus every special value.
    fn sweep_f32(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..=n)
            .map(|i| lo + (hi - lo) * (i as f32 / n as f32))
            .collect();
        v.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
        ]);
        v.extend([1e-45, 1e-40, f32::MAX, 1.0, 0.5, 2.0]);
        v
    }

    fn sweep_f64(lo: f64, hi: f64, n: usize) -> Vec<f64> {
        let mut v: Vec<f64> = (0..=n)
            .map(|i| lo + (hi - lo) * (i as f64 / n as f64))
            .collect();
        v.extend([
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MIN_POSITIVE,
        ]);
        v.extend([5e-324, 1e-310, f64::MAX, 1.0, 0.5, 2.0]);
        v
    }

    fn check_f32(func: Func, xs: &[f32], reference: impl Fn(f64) -> f64, max_ulps: f64) {
        for level in levels() {
            let mut out = vec![0.0f32; xs.len()];
            evaluate(level, func, xs, &mut out);
            for (&x, &y) in xs.iter().zip(&out) {
                let want = reference(x as f64);
                if want.abs() > f32::MAX as f64 {
                    // Beyond the largest float32 the rounded result is infinite.
                    assert!(y.is_infinite() || (y as f64 - want).abs() / want.abs() < 1e-7);
                    continue;
                }
                // Results that round to a subnormal carry an absolute error of one subnormal.
                let err = if want.abs() < f32::MIN_POSITIVE as f64 {
                    (y as f64 - want).abs() / 1.401_298_5e-45
                } else {
                    ulps_f32(y, want)
                };
                assert!(
                    err <= max_ulps || (want.is_infinite() && y as f64 == want),
                    "{level} {func:?}({x:e}) = {y:e}, want {want:e} ({err} ulp)"
                );
            }
        }
    }

    fn check_f64(func: Func, xs: &[f64], reference: impl Fn(f64) -> f64, max_ulps: f64) {
        for level in levels() {
            let mut out = vec![0.0f64; xs.len()];
            evaluate(level, func, xs, &mut out);
            for (&x, &y) in xs.iter().zip(&out) {
                let want = reference(x);
                let err = if want.abs() < f64::MIN_POSITIVE {
                    (y - want).abs() / 5e-324
                } else {
                    ulps_f64(y, want)
                };
                assert!(
                    err <= max_ulps,
                    "{level} {func:?}({x:e}) = {y:e}, want {want:e} ({err} ulp)"
                );
            }
        }
    }

    #[test]
    fn exp_f32_within_1_ulp() {
        check_f32(Func::Exp, &sweep_f32(-110.0, 95.0, 400_000), f64::exp, 1.0);
    }

    #[test]
    fn ln_f32_within_2_ulp() {
        let mut xs = sweep_f32(-1.0, 4.0, 200_000);
        xs.extend((0..200_000).map(|i| f32::from_bits(1 + i * 10_700)));
        check_f32(Func::Ln, &xs, f64::ln, 2.0);
    }

    #[test]
    fn ln_1p_f32_within_2_ulp() {
        let mut xs = sweep_f32(-1.0, 3.0, 200_000);
        xs.extend((0..100_000).map(|i| 1e-9 * i as f32));
        check_f32(Func::Ln1p, &xs, f64::ln_1p, 2.0);
    }

    #[test]
    fn ln_1p_unit_within_1_ulp_on_its_domain() {
        let mut xs = sweep_f32(0.0, 1.0, 400_000);
        xs.retain(|x| (0.0..=1.0).contains(x));
        xs.extend((0..100_000).map(|i| 1e-9 * i as f32));
        xs.extend((0..2_000).map(|i| f32::from_bits(0.5f32.to_bits() - 1_000 + i)));
        xs.extend((1..200_000).map(|i| f32::from_bits(i * 5_300)));
        check_f32(Func::Ln1pUnit, &xs, f64::ln_1p, 1.0);
        let mut x64 = sweep_f64(0.0, 1.0, 200_000);
        x64.retain(|x| (0.0..=1.0).contains(x));
        check_f64(Func::Ln1pUnit, &x64, f64::ln_1p, 4.0);
        for level in levels() {
            let mut out = [0.0f32; 1];
            evaluate(level, Func::Ln1pUnit, &[f32::NAN], &mut out);
            assert!(out[0].is_nan(), "{level}");
        }
    }

    #[test]
    fn exp_f64_within_2_ulp() {
        check_f64(Func::Exp, &sweep_f64(-750.0, 712.0, 400_000), f64::exp, 2.0);
    }

    #[test]
    fn ln_f64_within_2_ulp() {
        let mut xs = sweep_f64(-1.0, 4.0, 200_000);
        xs.extend((0..200_000u64).map(|i| f64::from_bits(1 + i * 46_116_860_184_273)));
        check_f64(Func::Ln, &xs, f64::ln, 2.0);
    }

    #[test]
    fn ln_1p_f64_within_4_ulp() {
        let mut xs = sweep_f64(-1.0, 3.0, 200_000);
        xs.extend((0..100_000).map(|i| 1e-17 * i as f64));
        check_f64(Func::Ln1p, &xs, f64::ln_1p, 4.0);
    }

    /// A dense sweep for `tanh`: every 256th float (with a varying low byte) from 0 up to
    /// past where the result rounds to 1 (the clamp, subnormals and tiny values included),
    /// every float around the clamp, where the result reaches 1 and around 0.55 (the f64
    /// version's threshold), huge values, and their negations.
    fn tanh_sweep_f32() -> Vec<f32> {
        let mut xs: Vec<f32> = (0..0x4120_0000u32 / 256)
            .map(|i| f32::from_bits(i * 256 + i % 256))
            .collect();
        for centre in [0.55f32, TANH_F32_BOUND, 9.01] {
            xs.extend((0..4_000).map(|i| f32::from_bits(centre.to_bits() - 2_000 + i)));
        }
        xs.extend(sweep_f32(10.0, 1e30, 10_000));
        xs.push(f32::MAX);
        let negated: Vec<f32> = xs.iter().map(|x| -x).collect();
        xs.extend(negated);
        xs
    }

    #[test]
    fn tanh_f32_within_7_ulp() {
        let xs = tanh_sweep_f32();
        check_f32(Func::Tanh, &xs, f64::tanh, 7.0);
        for level in levels() {
            let mut out = vec![0.0f32; xs.len()];
            evaluate(level, Func::Tanh, &xs, &mut out);
            assert!(
                out.iter().all(|y| y.abs() <= 1.0 || y.is_nan()),
                "{level}: |tanh| > 1"
            );
        }
        // The vector levels share the fused multiply-add and give the same bits; the scalar
        // twin's is unfused and is held to the bound alone.
        let fused: Vec<Level> = levels()
            .into_iter()
            .filter(|&l| l != Level::Scalar)
            .collect();
        let mut first = vec![0.0f32; xs.len()];
        for (i, &level) in fused.iter().enumerate() {
            let mut out = vec![0.0f32; xs.len()];
            evaluate(level, Func::Tanh, &xs, &mut out);
            if i == 0 {
                first = out;
                continue;
            }
            for ((x, y), f) in xs.iter().zip(&out).zip(&first) {
                assert_eq!(
                    y.to_bits(),
                    f.to_bits(),
                    "{level} tanh({x:e}) differs from {}",
                    fused[0]
                );
            }
        }
        for level in levels() {
            let specials = [
                0.0f32,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                1e-45,
            ];
            let mut out = [0.0f32; 6];
            evaluate(level, Func::Tanh, &specials, &mut out);
            assert_eq!(out[0].to_bits(), 0.0f32.to_bits(), "{level}");
            assert_eq!(out[1].to_bits(), (-0.0f32).to_bits(), "{level}");
            assert_eq!(out[2..4], [1.0, -1.0], "{level}");
            assert!(out[4].is_nan(), "{level}");
            assert_eq!(out[5], 1e-45, "{level}");
        }
    }

    #[test]
    fn tanh_f64_within_2_ulp() {
        let mut xs = sweep_f64(-25.0, 25.0, 400_000);
        xs.extend((0..4_000).map(|i| f64::from_bits(0.55f64.to_bits() - 2_000 + i)));
        xs.extend((1..200_000u64).map(|i| f64::from_bits(i * 46_116_860_184_273)));
        let negated: Vec<f64> = xs.iter().map(|x| -x).collect();
        xs.extend(negated);
        check_f64(Func::Tanh, &xs, f64::tanh, 2.0);
        for level in levels() {
            let specials = [-0.0f64, f64::NEG_INFINITY, f64::NAN, 5e-324];
            let mut out = [0.0f64; 4];
            evaluate(level, Func::Tanh, &specials, &mut out);
            assert_eq!(out[0].to_bits(), (-0.0f64).to_bits(), "{level}");
            assert_eq!(out[1], -1.0, "{level}");
            assert!(out[2].is_nan(), "{level}");
            assert_eq!(out[3], 5e-324, "{level}");
        }
    }

    #[test]
    fn exp_m1_within_4_ulp() {
        let mut xs = sweep_f32(-110.0, 95.0, 200_000);
        xs.extend(sweep_f32(-1.0, 1.0, 200_000));
        xs.extend((1..200_000).map(|i| f32::from_bits(i * 5_300)));
        xs.extend((1..100_000).map(|i| -f32::from_bits(i * 10_600)));
        check_f32(Func::ExpM1, &xs, f64::exp_m1, 4.0);
        let mut x64 = sweep_f64(-750.0, 712.0, 200_000);
        x64.extend(sweep_f64(-1.0, 1.0, 200_000));
        x64.extend((1..200_000u64).map(|i| f64::from_bits(i * 23_058_430_092_136)));
        x64.extend((1..100_000u64).map(|i| -f64::from_bits(i * 46_116_860_184_273)));
        check_f64(Func::ExpM1, &x64, f64::exp_m1, 4.0);
        for level in levels() {
            let mut out = [0.0f32; 4];
            let xs = [-0.0, f32::NEG_INFINITY, f32::INFINITY, f32::NAN];
            evaluate(level, Func::ExpM1, &xs, &mut out);
            assert_eq!(out[0].to_bits(), (-0.0f32).to_bits(), "{level}");
            assert_eq!(out[1..3], [-1.0, f32::INFINITY], "{level}");
            assert!(out[3].is_nan(), "{level}");
        }
    }

    #[test]
    fn specials() {
        for level in levels() {
            let xs = [
                f32::NEG_INFINITY,
                f32::INFINITY,
                f32::NAN,
                0.0,
                -1.0,
                1000.0,
            ];
            let mut e = [0.0f32; 6];
            let mut l = [0.0f32; 6];
            evaluate(level, Func::Exp, &xs, &mut e);
            evaluate(level, Func::Ln, &xs, &mut l);
            assert_eq!(e[0], 0.0, "{level}");
            assert_eq!(e[1], f32::INFINITY, "{level}");
            assert!(e[2].is_nan(), "{level}");
            assert_eq!(e[5], f32::INFINITY, "{level}");
            assert!(l[0].is_nan() && l[2].is_nan() && l[4].is_nan(), "{level}");
            assert_eq!(l[1], f32::INFINITY, "{level}");
            assert_eq!(l[3], f32::NEG_INFINITY, "{level}");
            let mut p = [0.0f32; 2];
            evaluate(level, Func::Ln1p, &[-1.0f32, f32::INFINITY], &mut p);
            assert_eq!(p, [f32::NEG_INFINITY, f32::INFINITY], "{level}");
        }
    }

    #[test]
    fn vector_paths_match_the_scalar_twin_closely() {
        let xs: Vec<f32> = (0..10_007)
            .map(|i| (i as f32 * 0.37).sin() * 60.0)
            .collect();
        let mut twin = vec![0.0; xs.len()];
        evaluate(Level::Scalar, Func::Exp, &xs, &mut twin);
        for level in levels() {
            let mut out = vec![0.0; xs.len()];
            evaluate(level, Func::Exp, &xs, &mut out);
            for (a, b) in out.iter().zip(&twin) {
                assert!(ulps_f32(*a, *b as f64) <= 2.0, "{level}: {a} vs {b}");
            }
        }
    }
}
