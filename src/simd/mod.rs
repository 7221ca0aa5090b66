//! Explicit SIMD with runtime CPU dispatch.
//!
//! Kernels are written once, generic over an instruction set [`Isa`], and run through
//! [`dispatch`], which picks the widest instruction set the CPU supports (AVX-512, then AVX2
//! with FMA, then a portable scalar fallback) and calls the kernel inside a function compiled
//! for that instruction set. Nothing here depends on `target-cpu=native`: one binary runs
//! everywhere and uses what it finds.
//!
//! A value of an [`Isa`] type is a proof that the CPU supports that instruction set: the
//! AVX2 and AVX-512 tokens can only be made after detection succeeded. Every [`Vector`] is
//! created from a token, so vector arithmetic is safe; only loads and stores through raw
//! pointers are `unsafe`.
//!
//! The vector exponential and logarithm live in [`math`]; the scalar instruction set runs the
//! very same code one lane at a time, so it is the scalar twin the vector paths are tested
//! against.

pub mod bf16;
pub mod math;
mod pair;
mod scalar;

#[cfg(target_arch = "x86_64")]
#[macro_use]
mod x86;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use std::fmt::{self, Debug};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::XentError;

pub use pair::{Pair, Paired};
pub use scalar::Scalar;

#[cfg(target_arch = "x86_64")]
pub use avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub use avx512::Avx512;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A lane element: what the vector code needs of a scalar, `f32` or `f64`. The kernels'
/// [`Float`](crate::float::Float) adds each type's vectors and vector math on top.
pub trait Lane:
    sealed::Sealed + Copy + Debug + Default + PartialOrd + Send + Sync + 'static
{
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

    /// Widens to `f64` exactly.
    fn to_f64(self) -> f64;
    /// Rounds an `f64` to this type.
    fn from_f64(v: f64) -> Self;
}

/// `Lane` for a primitive float: its constants, and the `as` casts (exact widening to `f64`,
/// rounding from it; the identity for `f64`).
macro_rules! lane {
    ($($t:ident),*) => {$(
        impl Lane for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = $t::INFINITY;
            const NEG_INFINITY: Self = $t::NEG_INFINITY;
            const NAN: Self = $t::NAN;

            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
        }
    )*};
}

lane!(f32, f64);

/// An instruction set, as a zero-sized token whose existence proves CPU support.
pub trait Isa: Copy + Send + Sync + 'static {
    /// Vector of `f32` lanes.
    type F32: Vector<Elem = f32, Isa = Self>;
    /// Vector of `f64` lanes.
    type F64: Vector<Elem = f64, Isa = Self>;

    /// Orders every earlier [`Vector::stream`] store before any later store, so that the
    /// values are visible to whoever is told, afterwards, that they were written.
    fn fence(self) {}

    /// Widens `n` bfloat16 values (their bits) at `src` to `f32` at `dst` (exact; see
    /// [`bf16`]). One value at a time unless the instruction set has a vector version.
    ///
    /// # Safety
    /// `src` must be readable and `dst` writable for `n` values.
    #[inline(always)]
    unsafe fn widen_bf16(self, src: *const u16, dst: *mut f32, n: usize) {
        // SAFETY: the caller's contract.
        unsafe { bf16::widen_each(src, dst, n) }
    }

    /// Rounds `n` `f32` values at `src` to bfloat16 bits at `dst` (see [`bf16::narrow`]).
    ///
    /// # Safety
    /// `src` must be readable and `dst` writable for `n` values.
    #[inline(always)]
    unsafe fn narrow_bf16(self, src: *const f32, dst: *mut u16, n: usize) {
        // SAFETY: the caller's contract.
        unsafe { bf16::narrow_each(src, dst, n) }
    }
}

/// A SIMD vector of `LANES` floats of type `Elem`.
///
/// Comparison and `max`/`min` follow the x86 conventions: `a.max(b)` returns `b` when either
/// operand is NaN, so `lo.max(x)` propagates a NaN `x`.
pub trait Vector: Copy + Send + Sync {
    /// The element type.
    type Elem: Lane;
    /// The instruction set this vector belongs to.
    type Isa: Isa;
    /// Accumulator of float64 lanes that holds a widened copy of this vector.
    type Wide: Copy;
    /// Lane mask produced by comparisons.
    type Mask: Copy;
    /// Number of lanes.
    const LANES: usize;

    /// A vector with every lane set to `x`.
    fn splat(isa: Self::Isa, x: Self::Elem) -> Self;
    /// The instruction-set token this vector was made with.
    fn isa(self) -> Self::Isa;
    /// Loads `LANES` values.
    ///
    /// # Safety
    /// `p` must be valid for reading `LANES` elements.
    unsafe fn load(isa: Self::Isa, p: *const Self::Elem) -> Self;
    /// Loads the first `n < LANES` values; the other lanes are `fill`.
    ///
    /// # Safety
    /// `p` must be valid for reading `n` elements.
    unsafe fn load_partial(
        isa: Self::Isa,
        p: *const Self::Elem,
        n: usize,
        fill: Self::Elem,
    ) -> Self;
    /// Stores all lanes.
    ///
    /// # Safety
    /// `p` must be valid for writing `LANES` elements.
    unsafe fn store(self, p: *mut Self::Elem);
    /// Stores the first `n < LANES` lanes.
    ///
    /// # Safety
    /// `p` must be valid for writing `n` elements.
    unsafe fn store_partial(self, p: *mut Self::Elem, n: usize);
    /// Stores all lanes without pulling the destination into the caches (a non-temporal
    /// store: no read of the old line). Call [`Isa::fence`] before other threads may read.
    ///
    /// # Safety
    /// `p` must be valid for writing `LANES` elements and aligned to `LANES` elements.
    unsafe fn stream(self, p: *mut Self::Elem);
    /// Loads `LANES` 64-bit integer labels as floats, `-1` where a label equals `ignore`.
    /// Labels outside the `i32` range come out as arbitrary numbers: callers check the labels
    /// on their own.
    ///
    /// # Safety
    /// `p` must be valid for reading `LANES` values.
    unsafe fn load_labels(isa: Self::Isa, p: *const i64, ignore: i64) -> Self;

    /// Lane-wise `self + o`.
    fn add(self, o: Self) -> Self;
    /// Lane-wise `self - o`.
    fn sub(self, o: Self) -> Self;
    /// Lane-wise `self * o`.
    fn mul(self, o: Self) -> Self;
    /// Lane-wise `self / o`.
    fn div(self, o: Self) -> Self;
    /// Lane-wise `self * b + c` (fused where the instruction set has FMA).
    fn mul_add(self, b: Self, c: Self) -> Self;
    /// Lane-wise maximum; returns `o` where either lane is NaN.
    fn max(self, o: Self) -> Self;
    /// Lane-wise minimum; returns `o` where either lane is NaN.
    fn min(self, o: Self) -> Self;
    /// Lane-wise absolute value.
    fn abs(self) -> Self;
    /// Rounds to the nearest integer, ties to even.
    fn round(self) -> Self;
    /// `self * 2^n` for integral `n`, correctly rounded into the subnormal range.
    /// `n` must lie in the range the exponential produces (see [`math`]).
    fn ldexp(self, n: Self) -> Self;
    /// Splits a positive normal `self` into `(m, e)` with `self = m * 2^e`, `m` in `[1, 2)`.
    fn frexp(self) -> (Self, Self);

    /// Transposes the `LANES x LANES` matrix whose row `j` is `rows[j]`, in place.
    ///
    /// # Panics
    /// If `rows` does not hold exactly `LANES` vectors.
    fn transpose(rows: &mut [Self]);

    /// Lanes where `self < o`.
    fn lt(self, o: Self) -> Self::Mask;
    /// Lanes where `self <= o`.
    fn le(self, o: Self) -> Self::Mask;
    /// Lanes where `self == o`.
    fn eq(self, o: Self) -> Self::Mask;
    /// Lanes that are NaN.
    fn is_nan(self) -> Self::Mask;
    /// `a` where `m` is set, else `b`.
    fn select(m: Self::Mask, a: Self, b: Self) -> Self;

    /// Largest lane (NaN lanes may or may not be ignored).
    fn reduce_max(self) -> Self::Elem;
    /// Sum of the lanes in float64.
    fn reduce_sum(self) -> f64;
    /// A zero float64 accumulator.
    fn wide_zero(isa: Self::Isa) -> Self::Wide;
    /// Adds the lanes, widened to float64, to `acc`.
    fn wide_add(self, acc: Self::Wide) -> Self::Wide;
    /// Sum of an accumulator's lanes in a fixed order.
    fn wide_sum(acc: Self::Wide) -> f64;
    /// Rounds an accumulator's lanes back to this vector's precision.
    fn narrow(acc: Self::Wide) -> Self;
}

/// A kernel body that can run on any instruction set.
///
/// [`dispatch`] calls `run` inside a function compiled for the chosen instruction set; the
/// body and everything it calls must be `#[inline(always)]` to be compiled for it.
pub trait WithIsa {
    /// The kernel's result.
    type Output;
    /// Runs the kernel with the given instruction set.
    fn run<I: Isa>(self, isa: I) -> Self::Output;
}

/// The instruction sets [`dispatch`] can choose from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Portable code, one lane at a time.
    Scalar = 1,
    /// AVX2 with FMA (x86-64-v3).
    Avx2 = 2,
    /// AVX-512 F (x86-64-v4).
    Avx512 = 3,
}

impl Level {
    /// Every level, narrowest first.
    pub const ALL: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Avx512];

    /// The level's name as `XENT_RS_SIMD` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Parses a level name.
    pub fn parse(name: &str) -> Result<Level, XentError> {
        Level::ALL
            .into_iter()
            .find(|l| l.name() == name.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                XentError::Value(format!(
                    "unknown SIMD level {name:?}; expected one of \"scalar\", \"avx2\", \"avx512\""
                ))
            })
    }

    /// Whether this CPU can run the level.
    pub fn is_supported(self) -> bool {
        match self {
            Level::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => Avx2::detect().is_some(),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => Avx512::detect().is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest level this CPU supports.
    pub fn best() -> Level {
        Level::ALL
            .into_iter()
            .rev()
            .find(|l| l.is_supported())
            .unwrap_or(Level::Scalar)
    }

    fn from_u8(v: u8) -> Option<Level> {
        Level::ALL.into_iter().find(|l| *l as u8 == v)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The level in use; 0 until first use.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// The level kernels run with: the widest supported one, or the one named by the environment
/// variable `XENT_RS_SIMD` (ignored when the CPU lacks it), or the last [`set_level`].
pub fn level() -> Level {
    if let Some(l) = Level::from_u8(ACTIVE.load(Ordering::Relaxed)) {
        return l;
    }
    let chosen = std::env::var("XENT_RS_SIMD")
        .ok()
        .and_then(|name| Level::parse(&name).ok())
        .filter(|l| l.is_supported())
        .unwrap_or_else(Level::best);
    ACTIVE.store(chosen as u8, Ordering::Relaxed);
    chosen
}

/// Forces a level, e.g. to test every path on one machine.
pub fn set_level(l: Level) -> Result<(), XentError> {
    if !l.is_supported() {
        return Err(XentError::Value(format!(
            "this CPU does not support the {l} SIMD level"
        )));
    }
    ACTIVE.store(l as u8, Ordering::Relaxed);
    Ok(())
}

/// Runs `w` with the active instruction set.
#[inline]
pub fn dispatch<W: WithIsa>(w: W) -> W::Output {
    dispatch_at(level(), w)
}

/// Runs `w` with instruction set `l`, which must be supported (else the scalar set is used).
#[inline]
pub fn dispatch_at<W: WithIsa>(l: Level, w: W) -> W::Output {
    match l {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => match Avx512::detect() {
            Some(isa) => isa.vectorize(w),
            None => w.run(Scalar),
        },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => match Avx2::detect() {
            Some(isa) => isa.vectorize(w),
            None => w.run(Scalar),
        },
        _ => w.run(Scalar),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Transposes a `LANES x LANES` matrix of `T` with the vector transpose of an instruction
    /// set and of its pairing; returns the two sizes.
    struct Transpose<'a, T> {
        m: &'a mut [T],
        paired: &'a mut [T],
    }

    /// Transposes the `lanes x lanes` matrix at the start of `m` with `V::transpose`.
    fn transpose_with<V: Vector>(isa: V::Isa, m: &mut [V::Elem]) -> usize {
        let lanes = V::LANES;
        let mut rows: Vec<V> = (0..lanes)
            // SAFETY: the matrix holds lanes * lanes values.
            .map(|j| unsafe { V::load(isa, m.as_ptr().add(j * lanes)) })
            .collect();
        V::transpose(&mut rows);
        for (j, r) in rows.iter().enumerate() {
            // SAFETY: as above.
            unsafe { r.store(m.as_mut_ptr().add(j * lanes)) };
        }
        lanes
    }

    /// Transposes with the vector type `$vec` of `$t`.
    macro_rules! transpose {
        ($t:ty, $vec:ident) => {
            impl WithIsa for Transpose<'_, $t> {
                type Output = (usize, usize);

                #[inline(always)]
                fn run<I: Isa>(self, isa: I) -> (usize, usize) {
                    (
                        transpose_with::<I::$vec>(isa, self.m),
                        transpose_with::<<Paired<I> as Isa>::$vec>(Paired::new(isa), self.paired),
                    )
                }
            }
        };
    }
    transpose!(f32, F32);
    transpose!(f64, F64);

    fn is_transposed<T: Lane>(m: &[T], lanes: usize, level: Level) {
        for i in 0..lanes {
            for j in 0..lanes {
                assert_eq!(m[i * lanes + j].to_f64(), (j * lanes + i) as f64, "{level}");
            }
        }
    }

    fn check<T: Lane>()
    where
        for<'a> Transpose<'a, T>: WithIsa<Output = (usize, usize)>,
    {
        for level in Level::ALL.into_iter().filter(|l| l.is_supported()) {
            let count = |n: usize| (0..n).map(|i| T::from_f64(i as f64)).collect::<Vec<T>>();
            let (mut m, mut paired) = (count(256), count(1024));
            let (lanes, paired_lanes) = dispatch_at(
                level,
                Transpose {
                    m: &mut m,
                    paired: &mut paired,
                },
            );
            assert_eq!(paired_lanes, 2 * lanes);
            is_transposed(&m, lanes, level);
            is_transposed(&paired, paired_lanes, level);
        }
    }

    /// Loads 32 labels with `load_labels` of an instruction set and of its pairing.
    struct Labels<'a> {
        labels: &'a [i64; 32],
        ignore: i64,
    }

    /// The labels as `V` would load them, vector by vector.
    fn labels_with<V: Vector>(isa: V::Isa, labels: &[i64; 32], ignore: i64) -> Vec<f64> {
        let mut out = vec![V::Elem::ZERO; 32];
        for at in (0..32).step_by(V::LANES) {
            // SAFETY: `at + LANES <= 32` for every lane count (1 to 32, powers of two).
            unsafe {
                let v = V::load_labels(isa, labels.as_ptr().add(at), ignore);
                v.store(out.as_mut_ptr().add(at));
            }
        }
        out.iter().map(|v| v.to_f64()).collect()
    }

    impl WithIsa for Labels<'_> {
        type Output = [Vec<f64>; 4];

        #[inline(always)]
        fn run<I: Isa>(self, isa: I) -> [Vec<f64>; 4] {
            let (l, i, p) = (self.labels, self.ignore, Paired::new(isa));
            [
                labels_with::<I::F32>(isa, l, i),
                labels_with::<I::F64>(isa, l, i),
                labels_with::<<Paired<I> as Isa>::F32>(p, l, i),
                labels_with::<<Paired<I> as Isa>::F64>(p, l, i),
            ]
        }
    }

    #[test]
    fn labels_load_as_class_numbers_with_ignored_as_minus_one() {
        let mut labels: [i64; 32] = std::array::from_fn(|j| (j * 7 % 33) as i64);
        labels[3] = -100;
        labels[17] = -100;
        labels[20] = -1;
        for level in Level::ALL.into_iter().filter(|l| l.is_supported()) {
            for (k, loaded) in dispatch_at(
                level,
                Labels {
                    labels: &labels,
                    ignore: -100,
                },
            )
            .iter()
            .enumerate()
            {
                for (j, (&got, &label)) in loaded.iter().zip(&labels).enumerate() {
                    let want = if label == -100 { -1.0 } else { label as f64 };
                    assert_eq!(got, want, "{level}, vector {k}, lane {j}");
                }
            }
        }
    }

    #[test]
    fn transposes_are_transposes() {
        check::<f32>();
        check::<f64>();
    }

    /// Widens then narrows with one instruction set, from offset 1 so that the vector loops
    /// start unaligned and end in a tail.
    struct Convert<'a> {
        bits: &'a [u16],
        floats: &'a [f32],
        widened: &'a mut [f32],
        narrowed: &'a mut [u16],
    }

    impl WithIsa for Convert<'_> {
        type Output = ();

        fn run<I: Isa>(self, isa: I) {
            let (n, m) = (self.bits.len() - 1, self.floats.len() - 1);
            // SAFETY: every buffer holds n + 1 (or m + 1) values.
            unsafe {
                isa.widen_bf16(
                    self.bits.as_ptr().add(1),
                    self.widened.as_mut_ptr().add(1),
                    n,
                );
                isa.narrow_bf16(
                    self.floats.as_ptr().add(1),
                    self.narrowed.as_mut_ptr().add(1),
                    m,
                );
            }
        }
    }

    #[test]
    fn every_bfloat16_widens_and_a_dense_sweep_narrows_as_the_reference() {
        let bits: Vec<u16> = (0..=0xffffu16).collect();
        let floats = bf16::tests::sweep();
        let want: Vec<u16> = floats.iter().map(|&x| bf16::tests::reference(x)).collect();
        for level in Level::ALL.into_iter().filter(|l| l.is_supported()) {
            let mut widened = vec![0f32; bits.len()];
            let mut narrowed = vec![0u16; floats.len()];
            // The first value is converted by the scalar twin, the rest by `level`.
            widened[0] = bf16::widen(bits[0]);
            narrowed[0] = bf16::narrow(floats[0]);
            dispatch_at(
                level,
                Convert {
                    bits: &bits,
                    floats: &floats,
                    widened: &mut widened,
                    narrowed: &mut narrowed,
                },
            );
            for (&h, w) in bits.iter().zip(&widened) {
                assert_eq!(w.to_bits(), (h as u32) << 16, "{level}: widen {h:#06x}");
            }
            for ((x, got), want) in floats.iter().zip(&narrowed).zip(&want) {
                assert_eq!(got, want, "{level}: narrow {:#010x}", x.to_bits());
            }
        }
    }

    #[test]
    fn level_names_round_trip() {
        for l in Level::ALL {
            assert_eq!(Level::parse(l.name()), Ok(l));
        }
        assert!(Level::parse("sse9").is_err());
    }
}
