//! Eight-row kernels over repacked weights ([`BlockQ4_1x8`], [`BlockQ8_0x8`]), AVX2 and
//! AVX-512-VNNI.
//!
//! One 256-bit register holds the same lane of the 8-lane accumulator of eight weight rows
//! (`acc[j]` lane `r` is row `r`'s lane `j`), so every row still accumulates exactly as the
//! one-row kernels do: lane `j` of block `b` is the exact integer sum of the products of values
//! `4j..4j+4`, converted to f32 and fused-multiply-added with `d_x * d_y` into the lane, block
//! after block; the lanes are then reduced with `hsum8`'s order (done for the eight rows at once,
//! lane-wise) and Q4_1's `m_x * s_y` sum is added last. Only the integer work differs between
//! the instruction sets (`maddubs` + `madd` on AVX2, one `vpdpbusd` with VNNI), and integer sums
//! are exact, so every path gives the bits of `scalar::dot`.
//!
//! The scale products need no lane shuffles (the eight rows' scales sit side by side), and the
//! activation's four bytes for lane `j` are one broadcast 32-bit load. Several activation rows
//! (a prompt's tokens) are multiplied in turn while the weights stay in L1.

use crate::formats::{BlockQ4_1x8, BlockQ8_0, BlockQ8_0x8, BlockQ8_1};
use crate::scalar::packed::ActRows;
use std::arch::x86_64::*;

/// Lane-wise `((a4 + a0) + (a6 + a2)) + ((a5 + a1) + (a7 + a3))`: `hsum8` of every row.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum8_rows(a: &[__m256; 8]) -> __m256 {
    let r0 = _mm256_add_ps(a[4], a[0]);
    let r1 = _mm256_add_ps(a[5], a[1]);
    let r2 = _mm256_add_ps(a[6], a[2]);
    let r3 = _mm256_add_ps(a[7], a[3]);
    _mm256_add_ps(_mm256_add_ps(r0, r2), _mm256_add_ps(r1, r3))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8h(p: &[half::f16; 8]) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.as_ptr() as *const __m128i))
}

/// Lane sums (as i32) of unsigned `x` times signed `y`, AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(x: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
}

/// Lane sums (as i32) of unsigned `x` times signed `y`, plus `init`, VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_vnni(init: __m256i, x: __m256i, y: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(init, x, y)
}

macro_rules! gemm_q4_1x8 {
    ($name:ident, $features:literal, |$x:ident, $y:ident| $dot:expr) => {
        /// `out[t * ldo + r]` = row `r` of `w` times activation row `t`, for `t < a.n`.
        ///
        /// # Safety
        /// The CPU must have the features enabled below; `w.len() == a.nb`, `a` consistent
        /// (with `s`), and `out` valid for `(a.n - 1) * ldo + 8` writes.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(
            w: &[BlockQ4_1x8],
            a: &ActRows<'_, BlockQ8_1>,
            out: *mut f32,
            ldo: usize,
        ) {
            let nb = w.len();
            let mask = _mm256_set1_epi8(0x0f);
            for t in 0..a.n {
                let yq = a.q.as_ptr().add(t * nb);
                let yd = a.d.as_ptr().add(t * nb);
                let ys = a.s.as_ptr().add(t * nb);
                let mut acc = [_mm256_setzero_ps(); 8];
                let mut summs = _mm256_setzero_ps();
                for (b, wb) in w.iter().enumerate() {
                    let d = _mm256_mul_ps(load8h(&wb.d), _mm256_set1_ps(*yd.add(b)));
                    summs = _mm256_add_ps(
                        summs,
                        _mm256_mul_ps(load8h(&wb.m), _mm256_set1_ps(*ys.add(b))),
                    );
                    let y4 = (*yq.add(b)).qs.as_ptr() as *const i32;
                    let q = wb.qs.as_ptr() as *const __m256i;
                    for j in 0..4 {
                        let r = _mm256_loadu_si256(q.add(j));
                        let lo = _mm256_and_si256(r, mask);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(r), mask);
                        let p_lo = {
                            let $x = lo;
                            let $y = _mm256_set1_epi32(y4.add(j).read_unaligned());
                            _mm256_cvtepi32_ps($dot)
                        };
                        let p_hi = {
                            let $x = hi;
                            let $y = _mm256_set1_epi32(y4.add(4 + j).read_unaligned());
                            _mm256_cvtepi32_ps($dot)
                        };
                        acc[j] = _mm256_fmadd_ps(p_lo, d, acc[j]);
                        acc[j + 4] = _mm256_fmadd_ps(p_hi, d, acc[j + 4]);
                    }
                }
                _mm256_storeu_ps(out.add(t * ldo), _mm256_add_ps(hsum8_rows(&acc), summs));
            }
        }
    };
}

gemm_q4_1x8!(gemm_q4_1x8_q8_1_avx2, "avx2,fma,f16c", |x, y| dot_avx2(
    x, y
));
gemm_q4_1x8!(
    gemm_q4_1x8_q8_1_vnni,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    |x, y| dot_vnni(_mm256_setzero_si256(), x, y)
);

/// As [`gemm_q4_1x8_q8_1_avx2`] for Q8_0 weights (signed bytes: `|x|` times `y` with `x`'s
/// sign, as the one-row kernel).
///
/// # Safety
/// As [`gemm_q4_1x8_q8_1_avx2`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_q8_0x8_q8_0_avx2(
    w: &[BlockQ8_0x8],
    a: &ActRows<'_, BlockQ8_0>,
    out: *mut f32,
    ldo: usize,
) {
    let nb = w.len();
    for t in 0..a.n {
        let yq = a.q.as_ptr().add(t * nb);
        let yd = a.d.as_ptr().add(t * nb);
        let mut acc = [_mm256_setzero_ps(); 8];
        for (b, wb) in w.iter().enumerate() {
            let d = _mm256_mul_ps(load8h(&wb.d), _mm256_set1_ps(*yd.add(b)));
            let y4 = (*yq.add(b)).qs.as_ptr() as *const i32;
            let q = wb.qs.as_ptr() as *const __m256i;
            for (j, a) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_si256(q.add(j));
                let y = _mm256_set1_epi32(y4.add(j).read_unaligned());
                let p = dot_avx2(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
                *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), d, *a);
            }
        }
        _mm256_storeu_ps(out.add(t * ldo), hsum8_rows(&acc));
    }
}

/// As [`gemm_q8_0x8_q8_0_avx2`] with VNNI: `(x + 128) * y` summed by `vpdpbusd` onto
/// `-128 * sum(y)` (the activation's `c`), which is the same exact integer.
///
/// # Safety
/// As [`gemm_q4_1x8_q8_1_avx2`], and `a` must carry `c`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn gemm_q8_0x8_q8_0_vnni(
    w: &[BlockQ8_0x8],
    a: &ActRows<'_, BlockQ8_0>,
    out: *mut f32,
    ldo: usize,
) {
    let nb = w.len();
    let flip = _mm256_set1_epi8(-128);
    for t in 0..a.n {
        let yq = a.q.as_ptr().add(t * nb);
        let yd = a.d.as_ptr().add(t * nb);
        let yc = a.c.as_ptr().add(t * nb);
        let mut acc = [_mm256_setzero_ps(); 8];
        for (b, wb) in w.iter().enumerate() {
            let d = _mm256_mul_ps(load8h(&wb.d), _mm256_set1_ps(*yd.add(b)));
            let y4 = (*yq.add(b)).qs.as_ptr() as *const i32;
            let c = &*yc.add(b);
            let q = wb.qs.as_ptr() as *const __m256i;
            for (j, a) in acc.iter_mut().enumerate() {
                let x = _mm256_xor_si256(_mm256_loadu_si256(q.add(j)), flip);
                let y = _mm256_set1_epi32(y4.add(j).read_unaligned());
                let p = dot_vnni(_mm256_set1_epi32(c[j]), x, y);
                *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), d, *a);
            }
        }
        _mm256_storeu_ps(out.add(t * ldo), hsum8_rows(&acc));
    }
}
