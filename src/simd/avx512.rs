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

/// The methods `F32x16` and `F64x8` write alike over their own intrinsics (inside
/// `impl Vector`): masked partial loads and stores, and `abs`, `ldexp` (`scalef`), `frexp`
/// (`getmant`/`getexp`), `select` (a mask blend) and `reduce_max` one instruction each.
macro_rules! avx512_vector {
    (
        $v:ident {
            mask: $mask:ident,
            set1: $set1:ident,
            mask_loadu: $mask_loadu:ident,
            mask_storeu: $mask_storeu:ident,
            abs: $abs:ident,
            scalef: $scalef:ident,
            getmant: $getmant:ident,
            getexp: $getexp:ident,
            mask_blend: $mask_blend:ident,
            reduce_max: $reduce_max:ident $(,)?
        }
    ) => {
        #[inline(always)]
        unsafe fn load_partial(
            _: Avx512,
            p: *const Self::Elem,
            n: usize,
            fill: Self::Elem,
        ) -> Self {
            let m: $mask = ((1u32 << n) - 1) as $mask;
            // SAFETY: masked-off lanes are not read; the caller guarantees `n` readable values.
            $v(unsafe { $mask_loadu($set1(fill), m, p) })
        }
        #[inline(always)]
        unsafe fn store_partial(self, p: *mut Self::Elem, n: usize) {
            let m: $mask = ((1u32 << n) - 1) as $mask;
            // SAFETY: masked-off lanes are not written; the caller guarantees `n` writable
            // values.
            unsafe { $mask_storeu(p, m, self.0) }
        }
        #[inline(always)]
        fn abs(self) -> Self {
            $v(intrinsic!($abs(self.0)))
        }
        #[inline(always)]
        fn ldexp(self, n: Self) -> Self {
            $v(intrinsic!($scalef(self.0, n.0)))
        }
        #[inline(always)]
        fn frexp(self) -> (Self, Self) {
            let m = intrinsic!($getmant::<_MM_MANT_NORM_1_2, _MM_MANT_SIGN_ZERO>(self.0));
            ($v(m), $v(intrinsic!($getexp(self.0))))
        }
        #[inline(always)]
        fn select(m: $mask, a: Self, b: Self) -> Self {
            $v(intrinsic!($mask_blend(m, b.0, a.0)))
        }
        #[inline(always)]
        fn reduce_max(self) -> Self::Elem {
            intrinsic!($reduce_max(self.0))
        }
    };
}

impl Vector for F32x16 {
    type Elem = f32;
    type Isa = Avx512;
    type Wide = (__m512d, __m512d);
    type Mask = __mmask16;
    const LANES: usize = 16;

    x86_vector!(F32x16(Avx512) {
        set1: _mm512_set1_ps,
        loadu: _mm512_loadu_ps,
        storeu: _mm512_storeu_ps,
        stream: _mm512_stream_ps,
        fmadd: _mm512_fmadd_ps,
        round: _mm512_roundscale_ps,
        cmp: _mm512_cmp_ps_mask,
        add: _mm512_add_ps,
        sub: _mm512_sub_ps,
        mul: _mm512_mul_ps,
        div: _mm512_div_ps,
        max: _mm512_max_ps,
        min: _mm512_min_ps,
    });

    #[inline(always)]
    unsafe fn load_labels(_: Avx512, p: *const i64, ignore: i64) -> Self {
        // SAFETY: the caller guarantees 16 readable values.
        let (lo, hi) = unsafe {
            (
                _mm512_loadu_si512(p.cast()),
                _mm512_loadu_si512(p.add(8).cast()),
            )
        };
        intrinsic!({
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
    fn transpose(rows: &mut [Self]) {
        let r: &mut [Self; 16] = rows.try_into().expect("a 16 x 16 transpose");
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1].0, r[i | 1].0);
            if i % 2 == 0 {
                intrinsic!(_mm512_unpacklo_ps(a, b))
            } else {
                intrinsic!(_mm512_unpackhi_ps(a, b))
            }
        });
        // u[4g + k] holds column (4 lane + k) of rows 4g .. 4g+3 in each 128-bit lane.
        let u: [__m512; 16] = std::array::from_fn(|i| {
            let (g, k) = (i / 4, i % 4);
            let a = intrinsic!(_mm512_castps_pd(t[4 * g + k / 2]));
            let b = intrinsic!(_mm512_castps_pd(t[4 * g + k / 2 + 2]));
            if k % 2 == 0 {
                intrinsic!(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)))
            } else {
                intrinsic!(_mm512_castpd_ps(_mm512_unpackhi_pd(a, b)))
            }
        });
        // v[k], v[k + 4]: columns {k, k+8} and {k+4, k+12} of rows 0..8; v[k + 8], v[k + 12]: of
        // rows 8..16.
        let v: [__m512; 16] = std::array::from_fn(|i| {
            let (half, odd, k) = (i / 8, (i / 4) % 2, i % 4);
            let (a, b) = (u[8 * half + k], u[8 * half + k + 4]);
            if odd == 0 {
                intrinsic!(_mm512_shuffle_f32x4::<0x88>(a, b))
            } else {
                intrinsic!(_mm512_shuffle_f32x4::<0xdd>(a, b))
            }
        });
        for (c, out) in r.iter_mut().enumerate() {
            let k = c % 8;
            let (a, b) = (v[k], v[k + 8]);
            out.0 = if c < 8 {
                intrinsic!(_mm512_shuffle_f32x4::<0x88>(a, b))
            } else {
                intrinsic!(_mm512_shuffle_f32x4::<0xdd>(a, b))
            };
        }
    }

    #[inline(always)]
    fn wide_add(self, acc: Self::Wide) -> Self::Wide {
        let lo = intrinsic!(_mm512_cvtps_pd(_mm512_castps512_ps256(self.0)));
        let hi = intrinsic!(_mm512_cvtps_pd(_mm256_castpd_ps(
            _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0))
        )));
        intrinsic!((_mm512_add_pd(acc.0, lo), _mm512_add_pd(acc.1, hi)))
    }
    #[inline(always)]
    fn narrow(acc: Self::Wide) -> Self {
        let lo = intrinsic!(_mm512_castps256_ps512(_mm512_cvtpd_ps(acc.0)));
        let hi = intrinsic!(_mm256_castps_pd(_mm512_cvtpd_ps(acc.1)));
        F32x16(intrinsic!(_mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castps_pd(lo),
            hi
        ))))
    }

    avx512_vector!(F32x16 {
        mask: __mmask16,
        set1: _mm512_set1_ps,
        mask_loadu: _mm512_mask_loadu_ps,
        mask_storeu: _mm512_mask_storeu_ps,
        abs: _mm512_abs_ps,
        scalef: _mm512_scalef_ps,
        getmant: _mm512_getmant_ps,
        getexp: _mm512_getexp_ps,
        mask_blend: _mm512_mask_blend_ps,
        reduce_max: _mm512_reduce_max_ps,
    });
    x86_wide!(f32 Avx512, F64x8 { setzero: _mm512_setzero_pd, add: _mm512_add_pd });
}

impl Vector for F64x8 {
    type Elem = f64;
    type Isa = Avx512;
    type Wide = __m512d;
    type Mask = __mmask8;
    const LANES: usize = 8;

    x86_vector!(F64x8(Avx512) {
        set1: _mm512_set1_pd,
        loadu: _mm512_loadu_pd,
        storeu: _mm512_storeu_pd,
        stream: _mm512_stream_pd,
        fmadd: _mm512_fmadd_pd,
        round: _mm512_roundscale_pd,
        cmp: _mm512_cmp_pd_mask,
        add: _mm512_add_pd,
        sub: _mm512_sub_pd,
        mul: _mm512_mul_pd,
        div: _mm512_div_pd,
        max: _mm512_max_pd,
        min: _mm512_min_pd,
    });

    #[inline(always)]
    unsafe fn load_labels(_: Avx512, p: *const i64, ignore: i64) -> Self {
        // SAFETY: the caller guarantees 8 readable values.
        let v = unsafe { _mm512_loadu_si512(p.cast()) };
        intrinsic!({
            let hit = _mm512_cmpeq_epi64_mask(v, _mm512_set1_epi64(ignore));
            let f = _mm512_cvtepi32_pd(_mm512_cvtepi64_epi32(v));
            F64x8(_mm512_mask_blend_pd(hit, f, _mm512_set1_pd(-1.0)))
        })
    }

    #[inline(always)]
    fn transpose(rows: &mut [Self]) {
        let r: &mut [Self; 8] = rows.try_into().expect("an 8 x 8 transpose");
        let t: [__m512d; 8] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1].0, r[i | 1].0);
            if i % 2 == 0 {
                intrinsic!(_mm512_unpacklo_pd(a, b))
            } else {
                intrinsic!(_mm512_unpackhi_pd(a, b))
            }
        });
        // u[4h + k]: columns k and k + 4 of rows 4h .. 4h+3.
        let u: [__m512d; 8] = std::array::from_fn(|i| {
            let (h, k) = (i / 4, i % 4);
            let (a, b) = (t[4 * h + k % 2], t[4 * h + k % 2 + 2]);
            if k < 2 {
                intrinsic!(_mm512_shuffle_f64x2::<0x88>(a, b))
            } else {
                intrinsic!(_mm512_shuffle_f64x2::<0xdd>(a, b))
            }
        });
        for (c, out) in r.iter_mut().enumerate() {
            let k = c % 4;
            let (a, b) = (u[k], u[k + 4]);
            out.0 = if c < 4 {
                intrinsic!(_mm512_shuffle_f64x2::<0x88>(a, b))
            } else {
                intrinsic!(_mm512_shuffle_f64x2::<0xdd>(a, b))
            };
        }
    }

    #[inline(always)]
    fn wide_sum(acc: __m512d) -> f64 {
        // A fixed pairwise tree: 8 -> 4 -> 2 -> 1.
        let h = intrinsic!(_mm256_add_pd(
            _mm512_castpd512_pd256(acc),
            _mm512_extractf64x4_pd::<1>(acc)
        ));
        let h = intrinsic!(_mm_add_pd(
            _mm256_castpd256_pd128(h),
            _mm256_extractf128_pd::<1>(h)
        ));
        intrinsic!(_mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h))))
    }

    avx512_vector!(F64x8 {
        mask: __mmask8,
        set1: _mm512_set1_pd,
        mask_loadu: _mm512_mask_loadu_pd,
        mask_storeu: _mm512_mask_storeu_pd,
        abs: _mm512_abs_pd,
        scalef: _mm512_scalef_pd,
        getmant: _mm512_getmant_pd,
        getexp: _mm512_getexp_pd,
        mask_blend: _mm512_mask_blend_pd,
        reduce_max: _mm512_reduce_max_pd,
    });
    x86_wide!(f64 F64x8(Avx512) { setzero: _mm512_setzero_pd, add: _mm512_add_pd });
}
