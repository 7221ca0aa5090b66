//! The portable instruction set: one lane, plain Rust arithmetic.
//!
//! It runs the same generic kernels and vector math as the SIMD paths, so it doubles as
//! their scalar twin in tests.

use super::{Isa, Vector};

/// The portable, always-available instruction set.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scalar;

/// One `f32` or `f64` lane.
#[derive(Clone, Copy, Debug)]
pub struct Lane<T>(T);

impl Isa for Scalar {
    type F32 = Lane<f32>;
    type F64 = Lane<f64>;
}

macro_rules! scalar_vector {
    ($t:ty, $bits:ty, $mant_bits:expr, $bias:expr) => {
        impl Vector for Lane<$t> {
            type Elem = $t;
            type Isa = Scalar;
            type Wide = f64;
            type Mask = bool;
            const LANES: usize = 1;

            #[inline(always)]
            fn splat(_: Scalar, x: $t) -> Self {
                Lane(x)
            }
            #[inline(always)]
            fn isa(self) -> Scalar {
                Scalar
            }
            #[inline(always)]
            unsafe fn load(_: Scalar, p: *const $t) -> Self {
                // SAFETY: the caller guarantees `p` is valid for one read.
                Lane(unsafe { p.read() })
            }
            #[inline(always)]
            unsafe fn load_partial(_: Scalar, _p: *const $t, _n: usize, fill: $t) -> Self {
                // With one lane, a partial load reads nothing (n == 0).
                Lane(fill)
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut $t) {
                // SAFETY: the caller guarantees `p` is valid for one write.
                unsafe { p.write(self.0) }
            }
            #[inline(always)]
            unsafe fn store_partial(self, _p: *mut $t, _n: usize) {}
            #[inline(always)]
            unsafe fn load_labels(_: Scalar, p: *const i64, ignore: i64) -> Self {
                // SAFETY: the caller guarantees `p` is valid for one read.
                let v = unsafe { p.read() };
                // Truncated to i32 like the vector instruction sets.
                Lane(if v == ignore { -1.0 } else { v as i32 as $t })
            }
            #[inline(always)]
            unsafe fn stream(self, p: *mut $t) {
                // SAFETY: the caller guarantees `p` is valid for one write.
                unsafe { p.write(self.0) }
            }

            #[inline(always)]
            fn add(self, o: Self) -> Self {
                Lane(self.0 + o.0)
            }
            #[inline(always)]
            fn sub(self, o: Self) -> Self {
                Lane(self.0 - o.0)
            }
            #[inline(always)]
            fn mul(self, o: Self) -> Self {
                Lane(self.0 * o.0)
            }
            #[inline(always)]
            fn div(self, o: Self) -> Self {
                Lane(self.0 / o.0)
            }
            #[inline(always)]
            fn mul_add(self, b: Self, c: Self) -> Self {
                // Unfused: a software fma would be far slower than the rounding it saves.
                Lane(self.0 * b.0 + c.0)
            }
            #[inline(always)]
            fn max(self, o: Self) -> Self {
                if self.0 > o.0 { self } else { o }
            }
            #[inline(always)]
            fn min(self, o: Self) -> Self {
                if self.0 < o.0 { self } else { o }
            }
            #[inline(always)]
            fn abs(self) -> Self {
                Lane(self.0.abs())
            }
            #[inline(always)]
            fn round(self) -> Self {
                Lane(self.0.round_ties_even())
            }
            #[inline(always)]
            fn ldexp(self, n: Self) -> Self {
                if n.0.is_nan() {
                    return Lane(n.0);
                }
                // Two steps keep each power of two normal, so the product rounds once.
                let n = n.0 as i64;
                let half = n.div_euclid(2);
                let pow = |k: i64| <$t>::from_bits(((k + $bias) as $bits) << $mant_bits);
                Lane(self.0 * pow(half) * pow(n - half))
            }
            #[inline(always)]
            fn frexp(self) -> (Self, Self) {
                let bits = self.0.to_bits();
                let exp_field =
                    (bits >> $mant_bits) & ((1 << (<$bits>::BITS - 1 - $mant_bits)) - 1);
                let mant = (bits & ((1 << $mant_bits) - 1)) | (($bias as $bits) << $mant_bits);
                (
                    Lane(<$t>::from_bits(mant)),
                    Lane((exp_field as i64 - $bias) as $t),
                )
            }

            #[inline(always)]
            fn transpose(rows: &mut [Self]) {
                assert_eq!(rows.len(), 1, "a 1 x 1 transpose");
            }

            #[inline(always)]
            fn lt(self, o: Self) -> bool {
                self.0 < o.0
            }
            #[inline(always)]
            fn le(self, o: Self) -> bool {
                self.0 <= o.0
            }
            #[inline(always)]
            fn eq(self, o: Self) -> bool {
                self.0 == o.0
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                self.0.is_nan()
            }
            #[inline(always)]
            fn select(m: bool, a: Self, b: Self) -> Self {
                if m { a } else { b }
            }

            #[inline(always)]
            fn reduce_max(self) -> $t {
                self.0
            }
            #[inline(always)]
            fn reduce_sum(self) -> f64 {
                self.0 as f64
            }
            #[inline(always)]
            fn wide_zero(_: Scalar) -> f64 {
                0.0
            }
            #[inline(always)]
            fn wide_add(self, acc: f64) -> f64 {
                acc + self.0 as f64
            }
            #[inline(always)]
            fn wide_sum(acc: f64) -> f64 {
                acc
            }
            #[inline(always)]
            fn narrow(acc: f64) -> Self {
                Lane(acc as $t)
            }
        }
    };
}

scalar_vector!(f32, u32, 23, 127);
scalar_vector!(f64, u64, 52, 1023);
