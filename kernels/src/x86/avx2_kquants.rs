//! AVX2 + FMA K-quant dot products (Q4_K and Q6_K against Q8_K), in the operation order
//! `scalar::k_quants` documents: the integer work is exact, and the float steps (conversion of
//! each integer sum, the FMAs, the final reduction) happen in the reference's order, so the
//! results are bit-identical to the scalar kernels.

use super::avx2::{h2f, hsum_ps};
use crate::formats::{BlockQ4_K, BlockQ6_K, BlockQ8_K};
use crate::scalar::k_quants::q4_k_scale_min;
use std::arch::x86_64::*;

/// Sum of the eight i32 lanes (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// One Q4_K block's scales and mins, unpacked.
#[inline]
pub(super) fn scales_mins(b: &BlockQ4_K) -> ([i16; 8], [i16; 8]) {
    let mut sc = [0i16; 8];
    let mut m = [0i16; 8];
    for j in 0..8 {
        let (s, mm) = q4_k_scale_min(&b.scales, j);
        sc[j] = s as i16;
        m[j] = mm as i16;
    }
    (sc, m)
}

/// Lane `j`: `m[j] * (bsums[2j] + bsums[2j + 1])`, sub-block `j`'s min times the sum of its 32
/// activations (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_k_min_sums(m: &[i16; 8], y: &BlockQ8_K) -> __m256i {
    let mins = _mm256_setr_epi16(
        m[0], m[0], m[1], m[1], m[2], m[2], m[3], m[3], m[4], m[4], m[5], m[5], m[6], m[6], m[7],
        m[7],
    );
    let bsums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
    _mm256_madd_epi16(bsums, mins)
}

/// The scaled integer sums of the 64 values of chunk `c` (sub-blocks `2c`, `2c + 1`), as eight
/// i32 lanes whose total is `sc[2c] * (q . y)_{2c} + sc[2c + 1] * (q . y)_{2c + 1}`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_chunk(x: &BlockQ4_K, sc: &[i16; 8], y: &BlockQ8_K, c: usize) -> __m256i {
    let m4 = _mm256_set1_epi8(0x0f);
    let q = _mm256_loadu_si256(x.qs.as_ptr().add(32 * c) as *const __m256i);
    let lo = _mm256_and_si256(q, m4);
    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
    let ylo = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c) as *const __m256i);
    let yhi = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c + 32) as *const __m256i);
    let plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_set1_epi16(sc[2 * c]));
    let phi = _mm256_madd_epi16(
        _mm256_maddubs_epi16(hi, yhi),
        _mm256_set1_epi16(sc[2 * c + 1]),
    );
    _mm256_add_epi32(plo, phi)
}

/// One Q4_K row times one Q8_K row in `PIECES` FMAs per block (1: one-row order, 4: four-row
/// order), as `scalar::k_quants`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_k<const PIECES: usize>(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
    let (mut acc, mut acc_m) = (0.0f32, 0.0f32);
    for (bx, by) in x.iter().zip(y) {
        let (sc, m) = scales_mins(bx);
        let d = h2f(bx.d) * by.d;
        let dmin = h2f(bx.dmin) * by.d;
        let mins = q4_k_min_sums(&m, by);
        let mut lanes = [0i32; 8];
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, mins);
        if PIECES == 1 {
            let mut s = _mm256_setzero_si256();
            for c in 0..4 {
                s = _mm256_add_epi32(s, q4_k_chunk(bx, &sc, by, c));
            }
            acc = (hsum_epi32(s) as f32).mul_add(d, acc);
            acc_m = (hsum_epi32(mins) as f32).mul_add(dmin, acc_m);
        } else {
            for c in 0..4 {
                let s = hsum_epi32(q4_k_chunk(bx, &sc, by, c));
                acc = (s as f32).mul_add(d, acc);
                acc_m = ((lanes[2 * c] + lanes[2 * c + 1]) as f32).mul_add(dmin, acc_m);
            }
        }
    }
    acc - acc_m
}

/// As `scalar::k_quants::vec_dot_q4_k_q8_k`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_k_q8_k(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
    dot_q4_k::<1>(x, y)
}

/// As `scalar::k_quants::vec_dot4_q4_k_q8_k`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot4_q4_k_q8_k(x: &[BlockQ4_K], y: [&[BlockQ8_K]; 4]) -> [f32; 4] {
    [
        dot_q4_k::<4>(x, y[0]),
        dot_q4_k::<4>(x, y[1]),
        dot_q4_k::<4>(x, y[2]),
        dot_q4_k::<4>(x, y[3]),
    ]
}

/// The four 32-value chunks of half `h` of a Q6_K block as unsigned bytes (0..63): values
/// `128h + 32k .. 128h + 32k + 32` in chunk `k`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6_k_half(x: &BlockQ6_K, h: usize) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    let ql0 = _mm256_loadu_si256(x.ql.as_ptr().add(64 * h) as *const __m256i);
    let ql1 = _mm256_loadu_si256(x.ql.as_ptr().add(64 * h + 32) as *const __m256i);
    let qh = _mm256_loadu_si256(x.qh.as_ptr().add(32 * h) as *const __m256i);
    // The two high bits of each chunk, moved to bits 4-5 (masked before shifting, so no bit
    // crosses into the neighbouring byte of the 16-bit lane).
    let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m2));
    let h1 = _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0x0c)));
    let h2 = _mm256_and_si256(qh, _mm256_set1_epi8(0x30));
    let h3 = _mm256_srli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0xc0u8 as i8)));
    [
        _mm256_or_si256(_mm256_and_si256(ql0, m4), h0),
        _mm256_or_si256(_mm256_and_si256(ql1, m4), h1),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4), h2),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4), h3),
    ]
}

/// `32 * (scales[2l] * bsums[2l] + scales[2l + 1] * bsums[2l + 1])` in lane `l`: the -32 offset
/// of every value, taken out of the integer sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6_k_offsets(x: &BlockQ6_K, y: &BlockQ8_K) -> __m256i {
    let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.scales.as_ptr() as *const __m128i));
    let bsums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
    _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, sc16))
}

/// The eight lane sums of one Q6_K block against one Q8_K block (see `scalar::k_quants`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_lanes(bx: &BlockQ6_K, by: &BlockQ8_K) -> __m256i {
    let mut sumi = _mm256_setzero_si256();
    for h in 0..2 {
        let q = q6_k_half(bx, h);
        for (k, qk) in q.iter().enumerate() {
            let c = 4 * h + k;
            let yk = _mm256_loadu_si256(by.qs.as_ptr().add(32 * c) as *const __m256i);
            // Values 0..16 of the chunk use scale 2c, values 16..32 scale 2c + 1.
            let sc = _mm256_set_m128i(
                _mm_set1_epi16(bx.scales[2 * c + 1] as i16),
                _mm_set1_epi16(bx.scales[2 * c] as i16),
            );
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*qk, yk), sc);
            sumi = _mm256_add_epi32(sumi, p);
        }
    }
    _mm256_sub_epi32(sumi, q6_k_offsets(bx, by))
}

/// As `scalar::k_quants::vec_dot_q6_k_q8_k`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q6_k_q8_k(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (bx, by) in x.iter().zip(y) {
        let d = _mm256_set1_ps(by.d * h2f(bx.d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q6_k_lanes(bx, by)), acc);
    }
    hsum_ps(acc)
}

/// As `scalar::k_quants::vec_dot_q6_k_q8_k_tiled`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q6_k_q8_k_tiled(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
    let mut acc = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let total = hsum_epi32(q6_k_lanes(bx, by));
        acc = (h2f(bx.d) * total as f32).mul_add(by.d, acc);
    }
    acc
}
