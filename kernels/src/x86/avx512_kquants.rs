//! AVX-512 (F + BW + VL) K-quant dot products, structured like `avx2_kquants`: the integer
//! work of two 32-value chunks is done in one 512-bit register, then folded back to the same
//! exact integer sums (Q4_K: a block's or a 64-value piece's total; Q6_K: the eight lanes of
//! values `4l..4l + 4` of every chunk), and the float steps are the AVX2 kernels' own, so the
//! results are bit-identical to `scalar::k_quants`.

use super::avx2::{h2f, hsum_ps};
use super::avx2_kquants::{hsum_epi32, q4_k_min_sums, q6_k_half, q6_k_offsets, scales_mins};
use crate::formats::{BlockQ4_K, BlockQ6_K, BlockQ8_K};
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `[lo x 16 | hi x 16]` as i16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn halves_epi16(lo: i16, hi: i16) -> __m512i {
    join(_mm256_set1_epi16(lo), _mm256_set1_epi16(hi))
}

/// Lane-wise sum of the two 256-bit halves (exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn fold(v: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
}

/// Chunk `c` of a Q4_K block (sub-block `2c` in the low half, `2c + 1` in the high half),
/// scaled: sixteen i32 lanes whose total is the chunk's scaled integer sum.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn q4_k_chunk(x: &BlockQ4_K, sc: &[i16; 8], y: &BlockQ8_K, c: usize) -> __m512i {
    let m4 = _mm256_set1_epi8(0x0f);
    let q = _mm256_loadu_si256(x.qs.as_ptr().add(32 * c) as *const __m256i);
    let lo = _mm256_and_si256(q, m4);
    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
    let yv = _mm512_loadu_si512(y.qs.as_ptr().add(64 * c) as *const _);
    let p = _mm512_maddubs_epi16(join(lo, hi), yv);
    _mm512_madd_epi16(p, halves_epi16(sc[2 * c], sc[2 * c + 1]))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_q4_k<const PIECES: usize>(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
    let (mut acc, mut acc_m) = (0.0f32, 0.0f32);
    for (bx, by) in x.iter().zip(y) {
        let (sc, m) = scales_mins(bx);
        let d = h2f(bx.d) * by.d;
        let dmin = h2f(bx.dmin) * by.d;
        let mut lanes = [0i32; 8];
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, q4_k_min_sums(&m, by));
        if PIECES == 1 {
            let mut s = _mm512_setzero_si512();
            for c in 0..4 {
                s = _mm512_add_epi32(s, q4_k_chunk(bx, &sc, by, c));
            }
            acc = (_mm512_reduce_add_epi32(s) as f32).mul_add(d, acc);
            acc_m = (lanes.iter().sum::<i32>() as f32).mul_add(dmin, acc_m);
        } else {
            for c in 0..4 {
                let s = _mm512_reduce_add_epi32(q4_k_chunk(bx, &sc, by, c));
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
/// The CPU must support AVX-512 F, BW and VL, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_k_q8_k(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
    dot_q4_k::<1>(x, y)
}

/// As `scalar::k_quants::vec_dot4_q4_k_q8_k`.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VL, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn vec_dot4_q4_k_q8_k(x: &[BlockQ4_K], y: [&[BlockQ8_K]; 4]) -> [f32; 4] {
    [
        dot_q4_k::<4>(x, y[0]),
        dot_q4_k::<4>(x, y[1]),
        dot_q4_k::<4>(x, y[2]),
        dot_q4_k::<4>(x, y[3]),
    ]
}

/// The eight lane sums of one Q6_K block against one Q8_K block (see `scalar::k_quants`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn q6_k_lanes(bx: &BlockQ6_K, by: &BlockQ8_K) -> __m256i {
    let mut sumi = _mm512_setzero_si512();
    for h in 0..2 {
        let q = q6_k_half(bx, h);
        for k in [0, 2] {
            // Chunks c and c + 1: lane l of each half covers values 4l..4l + 4 of its chunk.
            let c = 4 * h + k;
            let yv = _mm512_loadu_si512(by.qs.as_ptr().add(32 * c) as *const _);
            let s = |j: usize| _mm_set1_epi16(bx.scales[j] as i16);
            let sc = join(
                _mm256_set_m128i(s(2 * c + 1), s(2 * c)),
                _mm256_set_m128i(s(2 * c + 3), s(2 * c + 2)),
            );
            let p = _mm512_madd_epi16(_mm512_maddubs_epi16(join(q[k], q[k + 1]), yv), sc);
            sumi = _mm512_add_epi32(sumi, p);
        }
    }
    _mm256_sub_epi32(fold(sumi), q6_k_offsets(bx, by))
}

/// As `scalar::k_quants::vec_dot_q6_k_q8_k`.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VL, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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
/// The CPU must support AVX-512 F, BW and VL, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn vec_dot_q6_k_q8_k_tiled(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
    let mut acc = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let total = hsum_epi32(q6_k_lanes(bx, by));
        acc = (h2f(bx.d) * total as f32).mul_add(by.d, acc);
    }
    acc
}
