//! bfloat16 storage: widening to `f32` and narrowing back, the scalar twin of the vector
//! conversions of each instruction set ([`Isa::widen_bf16`], [`Isa::narrow_bf16`]).
//!
//! A bfloat16 is the upper half of an `f32`'s bits, so widening is exact (a 16-bit shift).
//! Narrowing rounds to nearest, ties to even, on the bits, which keeps subnormals (AVX-512
//! BF16's `vcvtneps2bf16` flushes them to zero, so it is not used); a NaN becomes the quiet
//! NaN `0x7fc0` with its sign, as `ml_dtypes` (and Eigen, which it uses) casts it.
//!
//! [`Isa::widen_bf16`]: super::Isa::widen_bf16
//! [`Isa::narrow_bf16`]: super::Isa::narrow_bf16

/// The `f32` whose upper half is the bfloat16 `bits` (exact).
#[inline(always)]
pub fn widen(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// `x` rounded to bfloat16 (to nearest, ties to even; NaN to a quiet NaN of the same sign).
#[inline(always)]
pub fn narrow(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        ((b >> 16) as u16 & 0x8000) | 0x7fc0
    } else {
        // No overflow: the largest non-NaN pattern, 0xff800000 (-inf), has room for the bias.
        ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
    }
}

/// Widens `n` values one at a time.
///
/// # Safety
/// `src` must be readable and `dst` writable for `n` values.
#[inline(always)]
pub(crate) unsafe fn widen_each(src: *const u16, dst: *mut f32, n: usize) {
    for i in 0..n {
        // SAFETY: i < n, see the function's contract.
        unsafe { dst.add(i).write(widen(src.add(i).read())) };
    }
}

/// Narrows `n` values one at a time.
///
/// # Safety
/// `src` must be readable and `dst` writable for `n` values.
#[inline(always)]
pub(crate) unsafe fn narrow_each(src: *const f32, dst: *mut u16, n: usize) {
    for i in 0..n {
        // SAFETY: i < n, see the function's contract.
        unsafe { dst.add(i).write(narrow(src.add(i).read())) };
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Rounds `x` to bfloat16 by comparing it with its two neighbours in f64: the reference
    /// the bit arithmetic of every instruction set is checked against.
    pub(crate) fn reference(x: f32) -> u16 {
        let b = x.to_bits();
        if x.is_nan() {
            return ((b >> 16) as u16 & 0x8000) | 0x7fc0;
        }
        let low = (b >> 16) as u16;
        let high = low.wrapping_add(1);
        // The magnitude of bfloat16 `h` in f64; 0x7f80 (the step past the largest finite
        // value) stands for 2^128, where rounding to infinity starts.
        let magnitude = |h: u16| {
            if h & 0x7fff == 0x7f80 {
                2f64.powi(128)
            } else {
                (widen(h & 0x7fff) as f64).abs()
            }
        };
        let v = (x as f64).abs();
        let (dl, dh) = (v - magnitude(low), magnitude(high) - v);
        if (low & 0x7fff) == 0x7f80 || dl < dh || (dl == dh && low & 1 == 0) {
            low
        } else {
            high
        }
    }

    #[test]
    fn narrowing_keeps_subnormals_rounds_ties_to_even_and_overflows_to_infinity() {
        for (x, want) in [
            (0x0000_8000u32, 0x0000u16),
            (0x0001_8000, 0x0002),
            (0x0000_8001, 0x0001),
            (0x7f7f_ffff, 0x7f80),
            (0xff7f_ffff, 0xff80),
            (0x7f80_0000, 0x7f80),
            (0x7f80_0001, 0x7fc0),
            (0xffc1_2345, 0xffc0),
            (0x3f80_8000, 0x3f80),
            (0x3f81_8000, 0x3f82),
        ] {
            assert_eq!(narrow(f32::from_bits(x)), want, "{x:#010x}");
            assert_eq!(reference(f32::from_bits(x)), want, "{x:#010x}");
        }
    }

    /// Every upper half with lower halves at and around the tie, and a stride over all the
    /// rest of the patterns.
    pub(crate) fn sweep() -> Vec<f32> {
        let lows = [
            0u32, 1, 0x3fff, 0x7ffe, 0x7fff, 0x8000, 0x8001, 0xc000, 0xfffe, 0xffff,
        ];
        let mut v: Vec<f32> = (0..=0xffffu32)
            .flat_map(|h| lows.iter().map(move |l| f32::from_bits(h << 16 | l)))
            .collect();
        v.extend((0..=u32::MAX).step_by(4099).map(f32::from_bits));
        v
    }
}
