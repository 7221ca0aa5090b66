//! Lane groups: as many rows as a vector has lanes, laid out by columns, and the helpers
//! that move values between a group's vectors and plain arrays. The row driver
//! ([`rows`](crate::kernels::rows)) builds the groups and the building blocks
//! ([`stats`](crate::kernels::stats)) and kernels compute on them; both depend on this
//! module, neither on the other's lane vocabulary.

use crate::float::Float;
use crate::simd::{Isa, Vector};

/// This element type's vector for instruction set `I`.
pub(crate) type V<T, I> = <T as Float>::Vec<I>;

/// The most lanes of a lane group: a pair of AVX-512 vectors of `f32` (see [`Paired`](crate::simd::Paired)).
pub(crate) const MAX_LANES: usize = 32;

/// A group of `LANES` rows laid out by columns: class `c` of lane `j` of the inputs sits at
/// `c * class_stride + j`, of the output at `c * out_stride + j`. `x2` and `out` are null
/// when unused; `out` may equal `x` (same contract as [`Ptrs`](crate::kernels::rows::Ptrs)).
#[derive(Clone, Copy)]
pub(crate) struct Columns<T> {
    x: *const T,
    x2: *const T,
    out: *mut T,
    class_stride: usize,
    out_stride: usize,
}

impl<T: Float> Columns<T> {
    /// The lane group whose inputs are at `x` and `x2` (class `c` of lane `j` at
    /// `c * class_stride + j`) and whose output is at `out` (at `c * out_stride + j`); `x2`
    /// and `out` null when unused. The accessors below read and write through these
    /// pointers: whoever builds one makes them valid for the lane group's classes.
    #[inline(always)]
    pub(crate) fn new(
        x: *const T,
        x2: *const T,
        out: *mut T,
        class_stride: usize,
        out_stride: usize,
    ) -> Self {
        Columns {
            x,
            x2,
            out,
            class_stride,
            out_stride,
        }
    }

    #[inline(always)]
    unsafe fn load<I: Isa>(&self, isa: I, base: *const T, c: usize) -> V<T, I> {
        // SAFETY: the driver built these strides for `classes` columns of LANES lanes.
        unsafe { V::<T, I>::load(isa, base.add(c * self.class_stride)) }
    }

    /// Column `c` of the input.
    ///
    /// # Safety
    /// `c` must be below the number of classes.
    #[inline(always)]
    pub(crate) unsafe fn x<I: Isa>(&self, isa: I, c: usize) -> V<T, I> {
        // SAFETY: see the function's contract.
        unsafe { self.load(isa, self.x, c) }
    }

    /// Column `c` of the second input, which must be present.
    ///
    /// # Safety
    /// `c` must be below the number of classes.
    #[inline(always)]
    pub(crate) unsafe fn x2<I: Isa>(&self, isa: I, c: usize) -> V<T, I> {
        // SAFETY: see the function's contract.
        unsafe { self.load(isa, self.x2, c) }
    }

    /// Whether an output is written.
    #[inline(always)]
    pub(crate) fn writes(&self) -> bool {
        !self.out.is_null()
    }

    /// Where column `c` of the output starts (LANES contiguous values).
    ///
    /// # Safety
    /// `c` must be below the number of classes and the output present.
    #[inline(always)]
    pub(crate) unsafe fn out(&self, c: usize) -> *mut T {
        // SAFETY: see the function's contract.
        unsafe { self.out.add(c * self.out_stride) }
    }

    /// Class `c` of lane `j` of the input.
    ///
    /// # Safety
    /// `c` below the number of classes, `j` below LANES.
    #[inline(always)]
    pub(crate) unsafe fn x_at(&self, c: usize, j: usize) -> T {
        // SAFETY: see the function's contract.
        unsafe { *self.x.add(c * self.class_stride + j) }
    }
}

/// Copies the lanes of `v` into an array of f64.
#[inline(always)]
pub(crate) fn to_f64_lanes<T: Float, I: Isa>(v: V<T, I>, out: &mut [f64; MAX_LANES]) {
    let mut tmp = [T::ZERO; MAX_LANES];
    // SAFETY: `tmp` holds MAX_LANES >= LANES values.
    unsafe { v.store(tmp.as_mut_ptr()) };
    for (o, t) in out.iter_mut().zip(&tmp[..V::<T, I>::LANES]) {
        *o = t.to_f64();
    }
}

/// A vector holding `values[j]` (rounded to `T`) in lane `j`.
#[inline(always)]
pub(crate) fn from_f64_lanes<T: Float, I: Isa>(isa: I, values: &[f64; MAX_LANES]) -> V<T, I> {
    let mut tmp = [T::ZERO; MAX_LANES];
    for (t, &v) in tmp.iter_mut().zip(values) {
        *t = T::from_f64(v);
    }
    // SAFETY: `tmp` holds MAX_LANES >= LANES values.
    unsafe { V::<T, I>::load(isa, tmp.as_ptr()) }
}

/// A vector of ones in the first `k` lanes and zeros after.
#[inline(always)]
pub(crate) fn live_lanes<T: Float, I: Isa>(isa: I, k: usize) -> V<T, I> {
    if k >= V::<T, I>::LANES {
        return V::<T, I>::splat(isa, T::ONE);
    }
    let mut tmp = [T::ZERO; MAX_LANES];
    tmp[..k].fill(T::ONE);
    // SAFETY: `tmp` holds MAX_LANES >= LANES values.
    unsafe { V::<T, I>::load(isa, tmp.as_ptr()) }
}
