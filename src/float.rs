//! The float trait every kernel is generic over: `f32` and `f64` (float16 inputs are read as
//! `f32` by the binding layer), and the [`Storage`] of the buffers they read and write:
//! a [`Float`] itself, or [`Bf16`], read as `f32`.
//!
//! It sits on top of [`simd`](crate::simd): a SIMD lane [`Lane`] (its constants and
//! conversions) together with its vector on every instruction set and the vector math the
//! kernels call. Nothing in `simd` depends on it.

use crate::simd::{Isa, Lane, Vector, bf16, math};

/// A floating-point element type the kernels compute in. It is its own [`Storage`], read in
/// place.
pub trait Float: Lane + Storage<Compute = Self> {
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
    /// Vector `e^x - 1`.
    fn exp_m1<V: Vector<Elem = Self>>(x: V) -> V;
}

/// `Float` for a lane type: its vector per instruction set and the `math` function behind
/// each vector operation.
macro_rules! float {
    ($t:ty, $vec:ident, $($op:ident($arg:ident) => $f:ident),* $(,)?) => {
        impl Float for $t {
            type Vec<I: Isa> = I::$vec;
            $(
                #[inline(always)]
                fn $op<V: Vector<Elem = Self>>($arg: V) -> V {
                    math::$f($arg)
                }
            )*
        }
    };
}

float!(
    f32,
    F32,
    exp(x) => exp_f32,
    ln(x) => ln_f32,
    ln_1p(u) => ln_1p_f32,
    ln_1p_unit(u) => ln_1p_unit_f32,
    tanh(x) => tanh_f32,
    exp_m1(x) => exp_m1_f32,
);
// No faster `f64` version for the unit domain: `ln_1p_unit` is `ln_1p`.
float!(
    f64,
    F64,
    exp(x) => exp_f64,
    ln(x) => ln_f64,
    ln_1p(u) => ln_1p_f64,
    ln_1p_unit(u) => ln_1p_f64,
    tanh(x) => tanh_f64,
    exp_m1(x) => exp_m1_f64,
);

/// What the per-element buffers of a kernel call hold: values of a [`Float`] (the kernels
/// read and write them in place) or a narrower format that the row driver and the
/// element-wise kernels widen into small blocks of [`Storage::Compute`] and narrow back
/// (no copy of a whole buffer).
pub trait Storage: Copy + Send + Sync + 'static {
    /// The type the kernels compute in.
    type Compute: Float;
    /// Whether values are read and written in place (`Self` is `Compute`).
    const IN_PLACE: bool;

    /// `p` itself when values are read in place, else `None`.
    fn in_place(p: *const Self) -> Option<*const Self::Compute>;
    /// `p` itself when values are written in place, else `None`.
    fn in_place_mut(p: *mut Self) -> Option<*mut Self::Compute>;
    /// One value, widened (exactly).
    fn widen(self) -> Self::Compute;
    /// One value, rounded to this storage.
    fn narrow(v: Self::Compute) -> Self;
    /// Widens `n` values at `src` into `dst`, with the vector conversions of `isa`.
    ///
    /// # Safety
    /// `src` must be readable and `dst` writable for `n` values, not overlapping.
    unsafe fn widen_n<I: Isa>(isa: I, src: *const Self, dst: *mut Self::Compute, n: usize);
    /// Narrows `n` values at `src` into `dst`, with the vector conversions of `isa`.
    ///
    /// # Safety
    /// `src` must be readable and `dst` writable for `n` values, not overlapping.
    unsafe fn narrow_n<I: Isa>(isa: I, src: *const Self::Compute, dst: *mut Self, n: usize);
}

macro_rules! in_place_storage {
    ($t:ty) => {
        impl Storage for $t {
            type Compute = $t;
            const IN_PLACE: bool = true;

            #[inline(always)]
            fn in_place(p: *const Self) -> Option<*const Self> {
                Some(p)
            }
            #[inline(always)]
            fn in_place_mut(p: *mut Self) -> Option<*mut Self> {
                Some(p)
            }
            #[inline(always)]
            fn widen(self) -> Self {
                self
            }
            #[inline(always)]
            fn narrow(v: Self) -> Self {
                v
            }
            #[inline(always)]
            unsafe fn widen_n<I: Isa>(_: I, src: *const Self, dst: *mut Self, n: usize) {
                // SAFETY: the caller's contract.
                unsafe { std::ptr::copy_nonoverlapping(src, dst, n) }
            }
            #[inline(always)]
            unsafe fn narrow_n<I: Isa>(_: I, src: *const Self, dst: *mut Self, n: usize) {
                // SAFETY: the caller's contract.
                unsafe { std::ptr::copy_nonoverlapping(src, dst, n) }
            }
        }
    };
}
in_place_storage!(f32);
in_place_storage!(f64);

/// A bfloat16 value (JAX's and PyTorch's brain float), as its bits: the upper half of an
/// `f32`'s. Computed in `f32`; results are rounded to nearest, ties to even (see
/// [`bf16`]).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bf16(pub u16);

impl Bf16 {
    /// The value as `f32` (exact).
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        bf16::widen(self.0)
    }
    /// `x` rounded to bfloat16.
    #[inline(always)]
    pub fn from_f32(x: f32) -> Self {
        Bf16(bf16::narrow(x))
    }
}

impl Storage for Bf16 {
    type Compute = f32;
    const IN_PLACE: bool = false;

    #[inline(always)]
    fn in_place(_: *const Self) -> Option<*const f32> {
        None
    }
    #[inline(always)]
    fn in_place_mut(_: *mut Self) -> Option<*mut f32> {
        None
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn narrow(v: f32) -> Self {
        Bf16::from_f32(v)
    }
    #[inline(always)]
    unsafe fn widen_n<I: Isa>(isa: I, src: *const Self, dst: *mut f32, n: usize) {
        // SAFETY: the caller's contract; `Bf16` is a transparent `u16`.
        unsafe { isa.widen_bf16(src.cast(), dst, n) }
    }
    #[inline(always)]
    unsafe fn narrow_n<I: Isa>(isa: I, src: *const f32, dst: *mut Self, n: usize) {
        // SAFETY: the caller's contract; `Bf16` is a transparent `u16`.
        unsafe { isa.narrow_bf16(src, dst.cast(), n) }
    }
}
