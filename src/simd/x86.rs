//! What the x86 vectors (`avx2`, `avx512`; `f32` and `f64` lanes) write alike: running an
//! intrinsic, the [`Vector`](super::Vector) methods that are one intrinsic each and the
//! wide-accumulator methods, over the intrinsics each caller names.

use std::arch::x86_64::{_MM_FROUND_NO_EXC, _MM_FROUND_TO_NEAREST_INT};

/// Rounding mode immediate: to nearest, no exceptions.
pub(super) const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// Runs an intrinsic of the instruction set of the vector type whose method it sits in.
///
/// A vector of `avx2` or `avx512` can only exist once its token's `detect` succeeded, so the
/// CPU supports the instruction.
macro_rules! intrinsic {
    ($e:expr) => {{
        // SAFETY: a vector of this instruction set exists only after its `detect` succeeded.
        #[allow(unused_unsafe)]
        unsafe {
            $e
        }
    }};
}

/// The [`Vector`](super::Vector) methods of an x86 vector type that are one intrinsic each,
/// inside `impl Vector for $v`.
///
/// `round` takes the rounding immediate [`NEAREST`]; the comparisons are ordered and quiet,
/// `is_nan` unordered.
macro_rules! x86_vector {
    (
        $v:ident($isa:ident) {
            set1: $set1:ident,
            loadu: $loadu:ident,
            storeu: $storeu:ident,
            stream: $stream:ident,
            fmadd: $fmadd:ident,
            round: $round:ident,
            cmp: $cmp:ident,
            $($op:ident: $intr:ident),* $(,)?
        }
    ) => {
        #[inline(always)]
        fn splat(_: $isa, x: Self::Elem) -> Self {
            $v(intrinsic!($set1(x)))
        }
        #[inline(always)]
        fn isa(self) -> $isa {
            $isa(())
        }
        #[inline(always)]
        unsafe fn load(_: $isa, p: *const Self::Elem) -> Self {
            // SAFETY: the caller guarantees `LANES` readable values; the instruction set as
            // in the module docs.
            $v(unsafe { $loadu(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut Self::Elem) {
            // SAFETY: the caller guarantees `LANES` writable values.
            unsafe { $storeu(p, self.0) }
        }
        #[inline(always)]
        unsafe fn stream(self, p: *mut Self::Elem) {
            // SAFETY: the caller guarantees `LANES` writable values aligned to the vector's
            // size.
            unsafe { $stream(p, self.0) }
        }
        $(
            #[inline(always)]
            fn $op(self, o: Self) -> Self {
                $v(intrinsic!($intr(self.0, o.0)))
            }
        )*
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            $v(intrinsic!($fmadd(self.0, b.0, c.0)))
        }
        #[inline(always)]
        fn round(self) -> Self {
            $v(intrinsic!($round::<{ $crate::simd::x86::NEAREST }>(self.0)))
        }
        #[inline(always)]
        fn lt(self, o: Self) -> Self::Mask {
            intrinsic!($cmp::<_CMP_LT_OQ>(self.0, o.0))
        }
        #[inline(always)]
        fn le(self, o: Self) -> Self::Mask {
            intrinsic!($cmp::<_CMP_LE_OQ>(self.0, o.0))
        }
        #[inline(always)]
        fn eq(self, o: Self) -> Self::Mask {
            intrinsic!($cmp::<_CMP_EQ_OQ>(self.0, o.0))
        }
        #[inline(always)]
        fn is_nan(self) -> Self::Mask {
            intrinsic!($cmp::<_CMP_UNORD_Q>(self.0, self.0))
        }
    };
}

/// The wide-accumulator methods of an x86 vector type, inside `impl Vector for $v`: `f64`
/// lanes are their own accumulator; `f32` lanes widen into two `f64` vectors (`$wide`),
/// summed lane by lane before `$wide`'s own sum.
macro_rules! x86_wide {
    (f64 $v:ident($isa:ident) { setzero: $setzero:ident, add: $add:ident $(,)? }) => {
        #[inline(always)]
        fn reduce_sum(self) -> f64 {
            Self::wide_sum(self.0)
        }
        #[inline(always)]
        fn wide_zero(_: $isa) -> Self::Wide {
            intrinsic!($setzero())
        }
        #[inline(always)]
        fn wide_add(self, acc: Self::Wide) -> Self::Wide {
            intrinsic!($add(acc, self.0))
        }
        #[inline(always)]
        fn narrow(acc: Self::Wide) -> Self {
            $v(acc)
        }
    };
    (f32 $isa:ident, $wide:ident { setzero: $setzero:ident, add: $add:ident $(,)? }) => {
        #[inline(always)]
        fn reduce_sum(self) -> f64 {
            Self::wide_sum(self.wide_add(Self::wide_zero($isa(()))))
        }
        #[inline(always)]
        fn wide_zero(_: $isa) -> Self::Wide {
            intrinsic!(($setzero(), $setzero()))
        }
        #[inline(always)]
        fn wide_sum(acc: Self::Wide) -> f64 {
            $wide::wide_sum(intrinsic!($add(acc.0, acc.1)))
        }
    };
}
