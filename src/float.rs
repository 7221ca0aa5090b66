//! The float trait every kernel is generic over: `f32` and `f64` (float16 inputs are read as
//! `f32` by the binding layer).
//!
//! It sits on top of [`simd`](crate::simd): a SIMD lane [`Lane`] (its constants and
//! conversions) together with its vector on every instruction set and the vector math the
//! kernels call. Nothing in `simd` depends on it.

use crate::simd::{Isa, Lane, Vector, math};

/// A floating-point element type the kernels compute in.
pub trait Float: Lane {
    /// This type's vector for instruction set `I`.
    type Vec<I: Isa>: Vector<Elem = Self, Isa = I>;

    /// Vector `e^x`.
    fn exp<V: Vector<Elem = Self>>(x: V) -> V;
    /// Vector natural logarithm.
    fn ln<V: Vector<Elem = Self>>(x: V) -> V;
    /// Vector `ln(1 + u)`.
    fn ln_1p<V: Vector<Elem = Self>>(u: V) -> V;
    /// Vector `ln(1 + u)` for `u` in `[0, 1]` (or NaN): faster where the type has a
    /// version for that domain.
    fn ln_1p_unit<V: Vector<Elem = Self>>(u: V) -> V;
    /// Vector `tanh x`.
    fn tanh<V: Vector<Elem = Self>>(x: V) -> V;
}

impl Float for f32 {
    type Vec<I: Isa> = I::F32;

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
        math::ln_1p_f32(u)
    }
    #[inline(always)]
    fn ln_1p_unit<V: Vector<Elem = Self>>(u: V) -> V {
        math::ln_1p_unit_f32(u)
    }
    #[inline(always)]
    fn tanh<V: Vector<Elem = Self>>(x: V) -> V {
        math::tanh_f32(x)
    }
}

impl Float for f64 {
    type Vec<I: Isa> = I::F64;

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
        math::ln_1p_f64(u)
    }
    #[inline(always)]
    fn ln_1p_unit<V: Vector<Elem = Self>>(u: V) -> V {
        math::ln_1p_f64(u)
    }
    #[inline(always)]
    fn tanh<V: Vector<Elem = Self>>(x: V) -> V {
        math::tanh_f64(x)
    }
}
