//! AVX2 + FMA (x86-64-v3): 8 `f32` or 4 `f64` lanes.

use std::arch::x86_64::*;

use super::{Isa, Vector, WithIsa};

/// Token proving the CPU supports AVX2 and FMA.
#[derive(Clone, Copy, Debug)]
pub struct Avx2(());

impl Avx2 {
    /// The token, if this CPU supports AVX2 and FMA.
    pub fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2(()))
    }

    /// Runs `w` compiled for AVX2 + FMA.
    #[inline]
    pub fn vectorize<W: WithIsa>(self, w: W) -> W::Output {
        #[target_feature(enable = "avx2,fma")]
        fn inner<W: WithIsa>(isa: Avx2, w: W) -> W::Output {
            w.run(isa)
        }
        // SAFETY: the token exists only when the CPU supports AVX2 and FMA.
        unsafe { inner(self, w) }
    }
}

impl Isa for Avx2 {
    type F32 = F32x8;
    type F64 = F64x4;

    #[inline(always)]
    fn fence(self) {
        // SAFETY: SSE is part of x86-64.
        unsafe { _mm_sfence() }
    }

    /// Eight values per step: zero-extend to 32 bits, shift into the upper half.
    #[inline(always)]
    unsafe fn widen_bf16(self, src: *const u16, dst: *mut f32, n: usize) {
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: values i .. i+8 lie inside both buffers (the caller's contract); the
            // token proves the CPU has the instructions.
            unsafe {
                let h = _mm_loadu_si128(src.add(i).cast());
                let w = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
                _mm256_storeu_ps(dst.add(i), _mm256_castsi256_ps(w));
            }
            i += 8;
        }
        // SAFETY: the rest of both buffers.
        unsafe { super::bf16::widen_each(src.add(i), dst.add(i), n - i) }
    }

    /// Eight values per step: round to nearest even on the bits (NaN to the quiet NaN of its
    /// sign), then pack the lanes to 16 bits (no saturation: each is at most 0xffff).
    #[inline(always)]
    unsafe fn narrow_bf16(self, src: *const f32, dst: *mut u16, n: usize) {
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: values i .. i+8 lie inside both buffers (the caller's contract); the
            // token proves the CPU has the instructions.
            unsafe {
                let x = _mm256_loadu_ps(src.add(i));
                let b = _mm256_castps_si256(x);
                let high = _mm256_srli_epi32::<16>(b);
                let odd = _mm256_and_si256(high, _mm256_set1_epi32(1));
                let bias = _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff));
                let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(b, bias));
                let quiet = _mm256_or_si256(
                    _mm256_and_si256(high, _mm256_set1_epi32(0x8000)),
                    _mm256_set1_epi32(0x7fc0),
                );
                let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
                let r = _mm256_blendv_epi8(rounded, quiet, nan);
                // packus works within 128-bit halves: [r0..r3 r0..r3 | r4..r7 r4..r7];
                // quadwords 0 and 2 hold the eight results in order.
                let packed = _mm256_permute4x64_epi64::<0b00_00_10_00>(_mm256_packus_epi32(r, r));
                _mm_storeu_si128(dst.add(i).cast(), _mm256_castsi256_si128(packed));
            }
            i += 8;
        }
        // SAFETY: the rest of both buffers.
        unsafe { super::bf16::narrow_each(src.add(i), dst.add(i), n - i) }
    }
}

/// Eight `f32` lanes.
#[derive(Clone, Copy, Debug)]
pub struct F32x8(__m256);

/// Four `f64` lanes.
#[derive(Clone, Copy, Debug)]
pub struct F64x4(__m256d);

/// The low 32 bits of the four 64-bit lanes of `a`, then of `b`, as eight lanes.
#[inline(always)]
fn low_halves(a: __m256i, b: __m256i) -> __m256 {
    intrinsic!({
        // a0 a1 b0 b1 | a2 a3 b2 b3 (by 128-bit lane), then the 64-bit pairs put in order.
        let s = _mm256_shuffle_ps::<0b10_00_10_00>(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b));
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(s)))
    })
}

/// The methods `F32x8` and `F64x4` write alike over their own intrinsics (inside
/// `impl Vector`): partial loads and stores through the type's `lane_mask`, `abs` (the sign
/// bit cleared), `ldexp` (two exact `pow2` factors, so that `2^n` may leave the normal range
/// while the result does not) and `select` (a blend).
macro_rules! avx2_vector {
    (
        $v:ident {
            set1: $set1:ident,
            maskload: $maskload:ident,
            maskstore: $maskstore:ident,
            from_mask: $from_mask:ident,
            blendv: $blendv:ident,
            andnot: $andnot:ident,
            floor: $floor:ident,
            mul: $mul:ident,
            sub: $sub:ident $(,)?
        }
    ) => {
        #[inline(always)]
        unsafe fn load_partial(_: Avx2, p: *const Self::Elem, n: usize, fill: Self::Elem) -> Self {
            let m = Self::lane_mask(n);
            // SAFETY: masked-off lanes are not read; the caller guarantees `n` readable values.
            let v = unsafe { $maskload(p, m) };
            $v(intrinsic!($blendv($set1(fill), v, $from_mask(m))))
        }
        #[inline(always)]
        unsafe fn store_partial(self, p: *mut Self::Elem, n: usize) {
            // SAFETY: masked-off lanes are not written; the caller guarantees `n` writable
            // values.
            unsafe { $maskstore(p, Self::lane_mask(n), self.0) }
        }
        #[inline(always)]
        fn abs(self) -> Self {
            $v(intrinsic!($andnot($set1(-0.0), self.0)))
        }
        #[inline(always)]
        fn ldexp(self, n: Self) -> Self {
            let half = intrinsic!($floor($mul(n.0, $set1(0.5))));
            let rest = intrinsic!($sub(n.0, half));
            $v(intrinsic!($mul(
                $mul(self.0, Self::pow2(half)),
                Self::pow2(rest)
            )))
        }
        #[inline(always)]
        fn select(m: Self::Mask, a: Self, b: Self) -> Self {
            $v(intrinsic!($blendv(b.0, a.0, m)))
        }
    };
}

impl F32x8 {
    #[inline(always)]
    fn lane_mask(n: usize) -> __m256i {
        intrinsic!(_mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
        ))
    }

    /// `2^k` for integral `k` in the normal exponent range.
    #[inline(always)]
    fn pow2(k: __m256) -> __m256 {
        intrinsic!(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(
            _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127))
        )))
    }
}

impl Vector for F32x8 {
    type Elem = f32;
    type Isa = Avx2;
    type Wide = (__m256d, __m256d);
    type Mask = __m256;
    const LANES: usize = 8;

    x86_vector!(F32x8(Avx2) {
        set1: _mm256_set1_ps,
        loadu: _mm256_loadu_ps,
        storeu: _mm256_storeu_ps,
        stream: _mm256_stream_ps,
        fmadd: _mm256_fmadd_ps,
        round: _mm256_round_ps,
        cmp: _mm256_cmp_ps,
        add: _mm256_add_ps,
        sub: _mm256_sub_ps,
        mul: _mm256_mul_ps,
        div: _mm256_div_ps,
        max: _mm256_max_ps,
        min: _mm256_min_ps,
    });

    #[inline(always)]
    unsafe fn load_labels(_: Avx2, p: *const i64, ignore: i64) -> Self {
        // SAFETY: the caller guarantees 8 readable values.
        let (a, b) = unsafe {
            (
                _mm256_loadu_si256(p.cast()),
                _mm256_loadu_si256(p.add(4).cast()),
            )
        };
        intrinsic!({
            let ig = _mm256_set1_epi64x(ignore);
            let hit = low_halves(_mm256_cmpeq_epi64(a, ig), _mm256_cmpeq_epi64(b, ig));
            let f = _mm256_cvtepi32_ps(_mm256_castps_si256(low_halves(a, b)));
            F32x8(_mm256_blendv_ps(f, _mm256_set1_ps(-1.0), hit))
        })
    }

    #[inline(always)]
    fn frexp(self) -> (Self, Self) {
        let bits = intrinsic!(_mm256_castps_si256(self.0));
        let e = intrinsic!(_mm256_sub_epi32(
            _mm256_srli_epi32::<23>(bits),
            _mm256_set1_epi32(127)
        ));
        let m = intrinsic!(_mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
            _mm256_set1_epi32(0x3f80_0000)
        ));
        (
            F32x8(intrinsic!(_mm256_castsi256_ps(m))),
            F32x8(intrinsic!(_mm256_cvtepi32_ps(e))),
        )
    }

    #[inline(always)]
    fn transpose(rows: &mut [Self]) {
        let r: &mut [Self; 8] = rows.try_into().expect("an 8 x 8 transpose");
        let t: [__m256; 8] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1].0, r[i | 1].0);
            if i % 2 == 0 {
                intrinsic!(_mm256_unpacklo_ps(a, b))
            } else {
                intrinsic!(_mm256_unpackhi_ps(a, b))
            }
        });
        // u[4h + k] holds column (4 lane + k) of rows 4h .. 4h+3 in each 128-bit lane.
        let u: [__m256; 8] = std::array::from_fn(|i| {
            let (h, k) = (i / 4, i % 4);
            let (a, b) = (t[4 * h + k / 2], t[4 * h + k / 2 + 2]);
            if k % 2 == 0 {
                intrinsic!(_mm256_shuffle_ps::<0x44>(a, b))
            } else {
                intrinsic!(_mm256_shuffle_ps::<0xEE>(a, b))
            }
        });
        for (c, out) in r.iter_mut().enumerate() {
            let (a, b) = (u[c % 4], u[4 + c % 4]);
            out.0 = if c < 4 {
                intrinsic!(_mm256_permute2f128_ps::<0x20>(a, b))
            } else {
                intrinsic!(_mm256_permute2f128_ps::<0x31>(a, b))
            };
        }
    }

    #[inline(always)]
    fn reduce_max(self) -> f32 {
        let h = intrinsic!(_mm_max_ps(
            _mm256_castps256_ps128(self.0),
            _mm256_extractf128_ps::<1>(self.0)
        ));
        let h = intrinsic!(_mm_max_ps(h, _mm_movehl_ps(h, h)));
        let h = intrinsic!(_mm_max_ss(h, _mm_shuffle_ps::<0b01>(h, h)));
        intrinsic!(_mm_cvtss_f32(h))
    }
    #[inline(always)]
    fn wide_add(self, acc: Self::Wide) -> Self::Wide {
        let lo = intrinsic!(_mm256_cvtps_pd(_mm256_castps256_ps128(self.0)));
        let hi = intrinsic!(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(self.0)));
        intrinsic!((_mm256_add_pd(acc.0, lo), _mm256_add_pd(acc.1, hi)))
    }
    #[inline(always)]
    fn narrow(acc: Self::Wide) -> Self {
        F32x8(intrinsic!(_mm256_set_m128(
            _mm256_cvtpd_ps(acc.1),
            _mm256_cvtpd_ps(acc.0)
        )))
    }

    avx2_vector!(F32x8 {
        set1: _mm256_set1_ps,
        maskload: _mm256_maskload_ps,
        maskstore: _mm256_maskstore_ps,
        from_mask: _mm256_castsi256_ps,
        blendv: _mm256_blendv_ps,
        andnot: _mm256_andnot_ps,
        floor: _mm256_floor_ps,
        mul: _mm256_mul_ps,
        sub: _mm256_sub_ps,
    });
    x86_wide!(f32 Avx2, F64x4 { setzero: _mm256_setzero_pd, add: _mm256_add_pd });
}

impl F64x4 {
    #[inline(always)]
    fn lane_mask(n: usize) -> __m256i {
        intrinsic!(_mm256_cmpgt_epi64(
            _mm256_set1_epi64x(n as i64),
            _mm256_setr_epi64x(0, 1, 2, 3)
        ))
    }

    /// `2^k` for integral `k` in the normal exponent range.
    #[inline(always)]
    fn pow2(k: __m256d) -> __m256d {
        // Adding 2^52 puts k + 1023 in the low mantissa bits; shift it into the exponent.
        let biased = intrinsic!(_mm256_add_pd(
            k,
            _mm256_set1_pd(1023.0 + 4_503_599_627_370_496.0)
        ));
        intrinsic!(_mm256_castsi256_pd(_mm256_slli_epi64::<52>(
            _mm256_castpd_si256(biased)
        )))
    }
}

impl Vector for F64x4 {
    type Elem = f64;
    type Isa = Avx2;
    type Wide = __m256d;
    type Mask = __m256d;
    const LANES: usize = 4;

    x86_vector!(F64x4(Avx2) {
        set1: _mm256_set1_pd,
        loadu: _mm256_loadu_pd,
        storeu: _mm256_storeu_pd,
        stream: _mm256_stream_pd,
        fmadd: _mm256_fmadd_pd,
        round: _mm256_round_pd,
        cmp: _mm256_cmp_pd,
        add: _mm256_add_pd,
        sub: _mm256_sub_pd,
        mul: _mm256_mul_pd,
        div: _mm256_div_pd,
        max: _mm256_max_pd,
        min: _mm256_min_pd,
    });

    #[inline(always)]
    unsafe fn load_labels(_: Avx2, p: *const i64, ignore: i64) -> Self {
        // SAFETY: the caller guarantees 4 readable values.
        let v = unsafe { _mm256_loadu_si256(p.cast()) };
        intrinsic!({
            let hit = _mm256_castsi256_pd(_mm256_cmpeq_epi64(v, _mm256_set1_epi64x(ignore)));
            let low = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
            let f = _mm256_cvtepi32_pd(_mm256_castsi256_si128(low));
            F64x4(_mm256_blendv_pd(f, _mm256_set1_pd(-1.0), hit))
        })
    }

    #[inline(always)]
    fn frexp(self) -> (Self, Self) {
        let bits = intrinsic!(_mm256_castpd_si256(self.0));
        // The 11 exponent bits, as a double, via the 2^52 trick.
        let magic = intrinsic!(_mm256_set1_epi64x(0x4330_0000_0000_0000));
        let field = intrinsic!(_mm256_or_si256(_mm256_srli_epi64::<52>(bits), magic));
        let e = intrinsic!(_mm256_sub_pd(
            _mm256_castsi256_pd(field),
            _mm256_set1_pd(4_503_599_627_370_496.0 + 1023.0)
        ));
        let m = intrinsic!(_mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi64x(0x000f_ffff_ffff_ffff)),
            _mm256_set1_epi64x(0x3ff0_0000_0000_0000)
        ));
        (F64x4(intrinsic!(_mm256_castsi256_pd(m))), F64x4(e))
    }

    #[inline(always)]
    fn transpose(rows: &mut [Self]) {
        let r: &mut [Self; 4] = rows.try_into().expect("a 4 x 4 transpose");
        let t0 = intrinsic!(_mm256_unpacklo_pd(r[0].0, r[1].0));
        let t1 = intrinsic!(_mm256_unpackhi_pd(r[0].0, r[1].0));
        let t2 = intrinsic!(_mm256_unpacklo_pd(r[2].0, r[3].0));
        let t3 = intrinsic!(_mm256_unpackhi_pd(r[2].0, r[3].0));
        r[0].0 = intrinsic!(_mm256_permute2f128_pd::<0x20>(t0, t2));
        r[1].0 = intrinsic!(_mm256_permute2f128_pd::<0x20>(t1, t3));
        r[2].0 = intrinsic!(_mm256_permute2f128_pd::<0x31>(t0, t2));
        r[3].0 = intrinsic!(_mm256_permute2f128_pd::<0x31>(t1, t3));
    }

    #[inline(always)]
    fn reduce_max(self) -> f64 {
        let h = intrinsic!(_mm_max_pd(
            _mm256_castpd256_pd128(self.0),
            _mm256_extractf128_pd::<1>(self.0)
        ));
        let h = intrinsic!(_mm_max_sd(h, _mm_unpackhi_pd(h, h)));
        intrinsic!(_mm_cvtsd_f64(h))
    }
    #[inline(always)]
    fn wide_sum(acc: __m256d) -> f64 {
        let h = intrinsic!(_mm_add_pd(
            _mm256_castpd256_pd128(acc),
            _mm256_extractf128_pd::<1>(acc)
        ));
        intrinsic!(_mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h))))
    }

    avx2_vector!(F64x4 {
        set1: _mm256_set1_pd,
        maskload: _mm256_maskload_pd,
        maskstore: _mm256_maskstore_pd,
        from_mask: _mm256_castsi256_pd,
        blendv: _mm256_blendv_pd,
        andnot: _mm256_andnot_pd,
        floor: _mm256_floor_pd,
        mul: _mm256_mul_pd,
        sub: _mm256_sub_pd,
    });
    x86_wide!(f64 F64x4(Avx2) { setzero: _mm256_setzero_pd, add: _mm256_add_pd });
}
