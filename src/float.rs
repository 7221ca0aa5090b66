//! The float trait every kernel is generic over: `f32` and `f64` (float16 inputs are read as
//! `f32` by the binding layer).

use std::fmt::Debug;

use crate::simd::{Isa, Vector, math};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type the kernels compute in.
pub trait Float:
    sealed::Sealed + Copy + Debug + Default + PartialOrd + Send + Sync + 'static
{
    /// This type's vector for instruction set `I`.
    type Vec<I: Isa>: Vector<Elem = Self, Isa = I>;

    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// +inf.
    const INFINITY: Self;
    /// -inf.
    const NEG_INFINITY: Self;
    /// A quiet NaN.
    const NAN: Self;
    /// torch's binary cross-entropy clamp, the C++ `float` 1e-12, in this type.
    const BCE_EPSILON: Self;
    /// Name of the type as NumPy spells it.
    const NAME: &'static str;

    /// Widens to `f64` exactly.
    fn to_f64(self) -> f64;
    /// Rounds an `f64` to this type.
    fn from_f64(v: f64) -> Self;

    /// Vector `e^x`.
    fn exp<V: Vector<Elem = Self>>(x: V) -> V;
    /// Vector natural logarithm.
    fn ln<V: Vector<Elem = Self>>(x: V) -> V;
    /// Vector `ln(1 + u)`.
    fn ln_1p<V: Vector<Elem = Self>>(u: V) -> V;
    /// Vector `ln(1 + u)` for `u` in `[0, 1]` (or NaN): faster where the type has a
    /// version for that domain.
    fn ln_1p_unit<V: Vector<Elem = Self>>(u: V) -> V;
}

impl Float for f32 {
    type Vec<I: Isa> = I::F32;
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const INFINITY: Self = f32::INFINITY;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    const NAN: Self = f32::NAN;
    const BCE_EPSILON: Self = 1e-12;
    const NAME: &'static str = "float32";

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn exp<V: Vector<Elem = Self>>(x: V) -> V {
        math::exp_f32(x)
    }
    #[inline(always)]
    fn ln<V: Vector<Elem = Self>>(x: V) -> V {
        math::ln_f32(x)
    }
    #[inline(always)]
    fn ln_1p<V: Vector<Elem = Self>>(u: V) -> V {
        math::ln_1p(u)
    }
    #[inline(always)]
    fn ln_1p_unit<V: Vector<Elem = Self>>(u: V) -> V {
        math::ln_1p_unit_f32(u)
    }
}

impl Float for f64 {
    type Vec<I: Isa> = I::F64;
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const INFINITY: Self = f64::INFINITY;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    const NAN: Self = f64::NAN;
    const BCE_EPSILON: Self = 1e-12f32 as f64;
    const NAME: &'static str = "float64";

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn exp<V: Vector<Elem = Self>>(x: V) -> V {
        math::exp_f64(x)
    }
    #[inline(always)]
    fn ln<V: Vector<Elem = Self>>(x: V) -> V {
        math::ln_f64(x)
    }
    #[inline(always)]
    fn ln_1p<V: Vector<Elem = Self>>(u: V) -> V {
        math::ln_1p(u)
    }
    #[inline(always)]
    fn ln_1p_unit<V: Vector<Elem = Self>>(u: V) -> V {
        math::ln_1p(u)
    }
}
