//! AVX-512 F (x86-64-v4): 16 `f32` or 8 `f64` lanes, masked loads and stores, and the
//! `scalef`/`getexp`/`getmant` instructions for exact scaling by powers of two.

use std::arch::x86_64::*;

use super::{Isa, Vector, WithIsa};

/// Token proving the CPU supports AVX-512 F (with AVX2 and FMA).
#[derive(Clone, Copy, Debug)]
pub struct Avx512(());

impl Avx512 {
    /// The token, if this CPU supports AVX-512 F, AVX2 and FMA.
    pub fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma"))
        .then_some(Avx512(()))
    }

    /// Runs `w` compiled for AVX-512 F.
    #[inline]
    pub fn vectorize<W: WithIsa>(self, w: W) -> W::Output {
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn inner<W: WithIsa>(isa: Avx512, w: W) -> W::Output {
            w.run(isa)
        }
        // SAFETY: the token exists only when the CPU supports AVX-512 F, AVX2 and FMA.
        unsafe { inner(self, w) }
    }
}

impl Isa for Avx512 {
    type F32 = F32x16;
    type F64 = F64x8;

    #[inline(always)]
    fn fence(self) {
        // SAFETY: SSE is part of x86-64.
        unsafe { _mm_sfence() }
    }

    /// Sixteen values per step: zero-extend to 32 bits, shift into the upper half.
    #[inline(always)]
    unsafe fn widen_bf16(self, src: *const u16, dst: *mut f32, n: usize) {
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: values i .. i+16 lie inside both buffers (the caller's contract); the
            // token proves the CPU has the instructions.
            unsafe {
                let h = _mm256_loadu_si256(src.add(i).cast());
                let w = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
                _mm512_storeu_ps(dst.add(i), _mm512_castsi512_ps(w));
            }
            i += 16;
        }
        // SAFETY: the rest of both buffers.
        unsafe { super::bf16::widen_each(src.add(i), dst.add(i), n - i) }
    }

    /// Sixteen values per step: round to nearest even on the bits (NaN to the quiet NaN of
    /// its sign), then `vpmovdw` keeps the lower halves of the shifted lanes.
    #[inline(always)]
    unsafe fn narrow_bf16(self, src: *const f32, dst: *mut u16, n: usize) {
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: values i .. i+16 lie inside both buffers (the caller's contract); the
            // token proves the CPU has the instructions.
            unsafe {
                let x = _mm512_loadu_ps(src.add(i));
                let b = _mm512_castps_si512(x);
                let high = _mm512_srli_epi32::<16>(b);
                let odd = _mm512_and_si512(high, _mm512_set1_epi32(1));
                let bias = _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff));
                let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(b, bias));
                let quiet = _mm512_or_si512(
                    _mm512_and_si512(high, _mm512_set1_epi32(0x8000)),
                    _mm512_set1_epi32(0x7fc0),
                );
                let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
                let r = _mm512_mask_blend_epi32(nan, rounded, quiet);
                _mm256_storeu_si256(dst.add(i).cast(), _mm512_cvtepi32_epi16(r));
            }
            i += 16;
        }
        // SAFETY: the rest of both buffers.
        unsafe { super::bf16::narrow_each(src.add(i), dst.add(i), n - i) }
    }
}

/// Sixteen `f32` lanes.
#[derive(Clone, Copy, Debug)]
pub struct F32x16(__m512);

/// Eight `f64` lanes.
#[derive(Clone, Copy, Debug)]
pub struct F64x8(__m512d);

/// Runs an AVX-512 intrinsic.
///
/// Every use sits in a method of a vector type that can only exist once `Avx512::detect`
/// succeeded, so the CPU supports the instruction.
macro_rules! avx512 {
    ($e:expr) => {{
        // SAFETY: an AVX-512 vector exists only after `Avx512::detect` succeeded.
        #[allow(unused_unsafe)]
        unsafe {
            $e
        }
    }};
}

/// Rounding mode immediate: to nearest, no exceptions.
const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

impl Vector for F32x16 {
    type Elem = f32;
    type Isa = Avx512;
    type Wide = (__m512d, __m512d);
    type Mask = __mmask16;
    const LANES: usize = 16;

    #[inline(always)]
    fn splat(_: Avx512, x: f32) -> Self {
        F32x16(avx512!(_mm512_set1_ps(x)))
    }
    #[inline(always)]
    fn isa(self) -> Avx512 {
        Avx512(())
    }
    #[inline(always)]
    unsafe fn load(_: Avx512, p: *const f32) -> Self {
        // SAFETY: the caller guarantees 16 readable values.
        F32x16(unsafe { _mm512_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn load_labels(_: Avx512, p: *const i64, ignore: i64) -> Self {
        // SAFETY: the caller guarantees 16 readable values.
        let (lo, hi) = unsafe {
            (
                _mm512_loadu_si512(p.cast()),
                _mm512_loadu_si512(p.add(8).cast()),
            )
        };
        avx512!({
            let ig = _mm512_set1_epi64(ignore);
            let hit = _mm512_cmpeq_epi64_mask(lo, ig) as u16
                | ((_mm512_cmpeq_epi64_mask(hi, ig) as u16) << 8);
            let v = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm512_cvtepi64_epi32(lo)),
                _mm512_cvtepi64_epi32(hi),
            );
            F32x16(_mm512_mask_blend_ps(
                hit,
                _mm512_cvtepi32_ps(v),
                _mm512_set1_ps(-1.0),
            ))
        })
    }
    #[inline(always)]
    unsafe fn load_partial(_: Avx512, p: *const f32, n: usize, fill: f32) -> Self {
        let m: __mmask16 = ((1u32 << n) - 1) as __mmask16;
        // SAFETY: masked-off lanes are not read; the caller guarantees `n` readable values.
        F32x16(unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), m, p) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable values.
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize) {
        let m: __mmask16 = ((1u32 << n) - 1) as __mmask16;
        // SAFETY: masked-off lanes are not written; the caller guarantees `n` writable values.
        unsafe { _mm512_mask_storeu_ps(p, m, self.0) }
    }
    #[inline(always)]
    unsafe fn stream(self, p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable values aligned to 64 bytes.
        unsafe { _mm512_stream_ps(p, self.0) }
    }

    #[inline(always)]
    fn add(self, o: Self) -> Self {
        F32x16(avx512!(_mm512_add_ps(self.0, o.0)))
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        F32x16(avx512!(_mm512_sub_ps(self.0, o.0)))
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        F32x16(avx512!(_mm512_mul_ps(self.0, o.0)))
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        F32x16(avx512!(_mm512_div_ps(self.0, o.0)))
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        F32x16(avx512!(_mm512_fmadd_ps(self.0, b.0, c.0)))
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        F32x16(avx512!(_mm512_max_ps(self.0, o.0)))
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        F32x16(avx512!(_mm512_min_ps(self.0, o.0)))
    }
    #[inline(always)]
    fn abs(self) -> Self {
        F32x16(avx512!(_mm512_abs_ps(self.0)))
    }
    #[inline(always)]
    fn round(self) -> Self {
        F32x16(avx512!(_mm512_roundscale_ps::<NEAREST>(self.0)))
    }
    #[inline(always)]
    fn ldexp(self, n: Self) -> Self {
        F32x16(avx512!(_mm512_scalef_ps(self.0, n.0)))
    }
    #[inline(always)]
    fn frexp(self) -> (Self, Self) {
        let m = avx512!(_mm512_getmant_ps::<_MM_MANT_NORM_1_2, _MM_MANT_SIGN_ZERO>(
            self.0
        ));
        (F32x16(m), F32x16(avx512!(_mm512_getexp_ps(self.0))))
    }

    #[inline(always)]
    fn transpose(rows: &mut [Self]) {
        let r: &mut [Self; 16] = rows.try_into().expect("a 16 x 16 transpose");
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1].0, r[i | 1].0);
            if i % 2 == 0 {
                avx512!(_mm512_unpacklo_ps(a, b))
            } else {
                avx512!(_mm512_unpackhi_ps(a, b))
            }
        });
        // u[4g + k] holds column (4 lane + k) of rows 4g .. 4g+3 in each 128-bit lane.
        let u: [__m512; 16] = std::array::from_fn(|i| {
            let (g, k) = (i / 4, i % 4);
            let a = avx512!(_mm512_castps_pd(t[4 * g + k / 2]));
            let b = avx512!(_mm512_castps_pd(t[4 * g + k / 2 + 2]));
            if k % 2 == 0 {
                avx512!(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)))
            } else {
                avx512!(_mm512_castpd_ps(_mm512_unpackhi_pd(a, b)))
            }
        });
        // v[k], v[k + 4]: columns {k, k+8} and {k+4, k+12} of rows 0..8; v[k + 8], v[k + 12]: of
        // rows 8..16.
        let v: [__m512; 16] = std::array::from_fn(|i| {
            let (half, odd, k) = (i / 8, (i / 4) % 2, i % 4);
            let (a, b) = (u[8 * half + k], u[8 * half + k + 4]);
            if odd == 0 {
                avx512!(_mm512_shuffle_f32x4::<0x88>(a, b))
            } else {
                avx512!(_mm512_shuffle_f32x4::<0xdd>(a, b))
            }
        });
        for (c, out) in r.iter_mut().enumerate() {
            let k = c % 8;
            let (a, b) = (v[k], v[k + 8]);
            out.0 = if c < 8 {
                avx512!(_mm512_shuffle_f32x4::<0x88>(a, b))
            } else {
                avx512!(_mm512_shuffle_f32x4::<0xdd>(a, b))
            };
        }
    }

    #[inline(always)]
    fn lt(self, o: Self) -> __mmask16 {
        avx512!(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, o.0))
    }
    #[inline(always)]
    fn le(self, o: Self) -> __mmask16 {
        avx512!(_mm512_cmp_ps_mask::<_CMP_LE_OQ>(self.0, o.0))
    }
    #[inline(always)]
    fn eq(self, o: Self) -> __mmask16 {
        avx512!(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(self.0, o.0))
    }
    #[inline(always)]
    fn is_nan(self) -> __mmask16 {
        avx512!(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(self.0, self.0))
    }
    #[inline(always)]
    fn select(m: __mmask16, a: Self, b: Self) -> Self {
        F32x16(avx512!(_mm512_mask_blend_ps(m, b.0, a.0)))
    }

    #[inline(always)]
    fn reduce_max(self) -> f32 {
        avx512!(_mm512_reduce_max_ps(self.0))
    }
    #[inline(always)]
    fn reduce_sum(self) -> f64 {
        Self::wide_sum(self.wide_add(Self::wide_zero(Avx512(()))))
    }
    #[inline(always)]
    fn wide_zero(_: Avx512) -> Self::Wide {
        avx512!((_mm512_setzero_pd(), _mm512_setzero_pd()))
    }
    #[inline(always)]
    fn wide_add(self, acc: Self::Wide) -> Self::Wide {
        let lo = avx512!(_mm512_cvtps_pd(_mm512_castps512_ps256(self.0)));
        let hi = avx512!(_mm512_cvtps_pd(_mm256_castpd_ps(
            _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0))
        )));
        avx512!((_mm512_add_pd(acc.0, lo), _mm512_add_pd(acc.1, hi)))
    }
    #[inline(always)]
    fn wide_sum(acc: Self::Wide) -> f64 {
        F64x8::wide_sum(avx512!(_mm512_add_pd(acc.0, acc.1)))
    }
    #[inline(always)]
    fn narrow(acc: Self::Wide) -> Self {
        let lo = avx512!(_mm512_castps256_ps512(_mm512_cvtpd_ps(acc.0)));
        let hi = avx512!(_mm256_castps_pd(_mm512_cvtpd_ps(acc.1)));
        F32x16(avx512!(_mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castps_pd(lo),
            hi
        ))))
    }
}

impl Vector for F64x8 {
    type Elem = f64;
    type Isa = Avx512;
    type Wide = __m512d;
    type Mask = __mmask8;
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(_: Avx512, x: f64) -> Self {
        F64x8(avx512!(_mm512_set1_pd(x)))
    }
    #[inline(always)]
    fn isa(self) -> Avx512 {
        Avx512(())
    }
    #[inline(always)]
    unsafe fn load(_: Avx512, p: *const f64) -> Self {
        // SAFETY: the caller guarantees 8 readable values.
        F64x8(unsafe { _mm512_loadu_pd(p) })
    }
    #[inline(always)]
    unsafe fn load_labels(_: Avx512, p: *const i64, ignore: i64) -> Self {
        // SAFETY: the caller guarantees 8 readable values.
        let v = unsafe { _mm512_loadu_si512(p.cast()) };
        avx512!({
            let hit = _mm512_cmpeq_epi64_mask(v, _mm512_set1_epi64(ignore));
            let f = _mm512_cvtepi32_pd(_mm512_cvtepi64_epi32(v));
            F64x8(_mm512_mask_blend_pd(hit, f, _mm512_set1_pd(-1.0)))
        })
    }
    #[inline(always)]
    unsafe fn load_partial(_: Avx512, p: *const f64, n: usize, fill: f64) -> Self {
        let m: __mmask8 = ((1u32 << n) - 1) as __mmask8;
        // SAFETY: masked-off lanes are not read; the caller guarantees `n` readable values.
        F64x8(unsafe { _mm512_mask_loadu_pd(_mm512_set1_pd(fill), m, p) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f64) {
        // SAFETY: the caller guarantees 8 writable values.
        unsafe { _mm512_storeu_pd(p, self.0) }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f64, n: usize) {
        let m: __mmask8 = ((1u32 << n) - 1) as __mmask8;
        // SAFETY: masked-off lanes are not written; the caller guarantees `n` writable values.
        unsafe { _mm512_mask_storeu_pd(p, m, self.0) }
    }
    #[inline(always)]
    unsafe fn stream(self, p: *mut f64) {
        // SAFETY: the caller guarantees 8 writable values aligned to 64 bytes.
        unsafe { _mm512_stream_pd(p, self.0) }
    }

    #[inline(always)]
    fn add(self, o: Self) -> Self {
        F64x8(avx512!(_mm512_add_pd(self.0, o.0)))
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        F64x8(avx512!(_mm512_sub_pd(self.0, o.0)))
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        F64x8(avx512!(_mm512_mul_pd(self.0, o.0)))
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        F64x8(avx512!(_mm512_div_pd(self.0, o.0)))
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        F64x8(avx512!(_mm512_fmadd_pd(self.0, b.0, c.0)))
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        F64x8(avx512!(_mm512_max_pd(self.0, o.0)))
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        F64x8(avx512!(_mm512_min_pd(self.0, o.0)))
    }
    #[inline(always)]
    fn abs(self) -> Self {
        F64x8(avx512!(_mm512_abs_pd(self.0)))
    }
    #[inline(always)]
    fn round(self) -> Self {
        F64x8(avx512!(_mm512_roundscale_pd::<NEAREST>(self.0)))
    }
    #[inline(always)]
    fn ldexp(self, n: Self) -> Self {
        F64x8(avx512!(_mm512_scalef_pd(self.0, n.0)))
    }
    #[inline(always)]
    fn frexp(self) -> (Self, Self) {
        let m = avx512!(_mm512_getmant_pd::<_MM_MANT_NORM_1_2, _MM_MANT_SIGN_ZERO>(
            self.0
        ));
        (F64x8(m), F64x8(avx512!(_mm512_getexp_pd(self.0))))
    }

    #[inline(always)]
    fn transpose(rows: &mut [Self]) {
        let r: &mut [Self; 8] = rows.try_into().expect("an 8 x 8 transpose");
        let t: [__m512d; 8] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1].0, r[i | 1].0);
            if i % 2 == 0 {
                avx512!(_mm512_unpacklo_pd(a, b))
            } else {
                avx512!(_mm512_unpackhi_pd(a, b))
            }
        });
        // u[4h + k]: columns k and k + 4 of rows 4h .. 4h+3.
        let u: [__m512d; 8] = std::array::from_fn(|i| {
            let (h, k) = (i / 4, i % 4);
            let (a, b) = (t[4 * h + k % 2], t[4 * h + k % 2 + 2]);
            if k < 2 {
                avx512!(_mm512_shuffle_f64x2::<0x88>(a, b))
            } else {
                avx512!(_mm512_shuffle_f64x2::<0xdd>(a, b))
            }
        });
        for (c, out) in r.iter_mut().enumerate() {
            let k = c % 4;
            let (a, b) = (u[k], u[k + 4]);
            out.0 = if c < 4 {
                avx512!(_mm512_shuffle_f64x2::<0x88>(a, b))
            } else {
                avx512!(_mm512_shuffle_f64x2::<0xdd>(a, b))
            };
        }
    }

    #[inline(always)]
    fn lt(self, o: Self) -> __mmask8 {
        avx512!(_mm512_cmp_pd_mask::<_CMP_LT_OQ>(self.0, o.0))
    }
    #[inline(always)]
    fn le(self, o: Self) -> __mmask8 {
        avx512!(_mm512_cmp_pd_mask::<_CMP_LE_OQ>(self.0, o.0))
    }
    #[inline(always)]
    fn eq(self, o: Self) -> __mmask8 {
        avx512!(_mm512_cmp_pd_mask::<_CMP_EQ_OQ>(self.0, o.0))
    }
    #[inline(always)]
    fn is_nan(self) -> __mmask8 {
        avx512!(_mm512_cmp_pd_mask::<_CMP_UNORD_Q>(self.0, self.0))
    }
    #[inline(always)]
    fn select(m: __mmask8, a: Self, b: Self) -> Self {
        F64x8(avx512!(_mm512_mask_blend_pd(m, b.0, a.0)))
    }

    #[inline(always)]
    fn reduce_max(self) -> f64 {
        avx512!(_mm512_reduce_max_pd(self.0))
    }
    #[inline(always)]
    fn reduce_sum(self) -> f64 {
        Self::wide_sum(self.0)
    }
    #[inline(always)]
    fn wide_zero(_: Avx512) -> __m512d {
        avx512!(_mm512_setzero_pd())
    }
    #[inline(always)]
    fn wide_add(self, acc: __m512d) -> __m512d {
        avx512!(_mm512_add_pd(acc, self.0))
    }
    #[inline(always)]
    fn wide_sum(acc: __m512d) -> f64 {
        // A fixed pairwise tree: 8 -> 4 -> 2 -> 1.
        let h = avx512!(_mm256_add_pd(
            _mm512_castpd512_pd256(acc),
            _mm512_extractf64x4_pd::<1>(acc)
        ));
        let h = avx512!(_mm_add_pd(
            _mm256_castpd256_pd128(h),
            _mm256_extractf128_pd::<1>(h)
        ));
        avx512!(_mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h))))
    }
    #[inline(always)]
    fn narrow(acc: __m512d) -> Self {
        F64x8(acc)
    }
}
