//! AVX2 + FMA + F16C dot products (the tested path on this project's CI machines).

use crate::formats::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use half::f16;
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 packed nibbles to 32 bytes: low nibbles (elements 0..16) then high nibbles (16..32).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn unpack_nibbles(qs: &[u8; 16]) -> __m256i {
    let tmp = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
    let both = _mm256_insertf128_si256::<1>(_mm256_castsi128_si256(tmp), _mm_srli_epi16::<4>(tmp));
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// Eight i32 partial sums of `x[i] * y[i]`, x unsigned bytes (< 128), y signed bytes.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_u8_i8(x: __m256i, y: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(x, y);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// Eight i32 partial sums of `x[i] * y[i]` for signed bytes (x != -128).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_i8_i8(x: __m256i, y: __m256i) -> __m256 {
    dot_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (bx, by) in x.iter().zip(y) {
        let d = _mm256_set1_ps(bx.d.to_f32() * by.d.to_f32());
        let qx = _mm256_sub_epi8(unpack_nibbles(&bx.qs), _mm256_set1_epi8(8));
        let qy = _mm256_loadu_si256(by.qs.as_ptr() as *const __m256i);
        acc = _mm256_fmadd_ps(d, dot_i8_i8(qx, qy), acc);
    }
    hsum_ps(acc)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        summs += bx.m.to_f32() * by.s.to_f32();
        let d = _mm256_set1_ps(bx.d.to_f32() * by.d.to_f32());
        let qx = unpack_nibbles(&bx.qs);
        let qy = _mm256_loadu_si256(by.qs.as_ptr() as *const __m256i);
        acc = _mm256_fmadd_ps(d, dot_u8_i8(qx, qy), acc);
    }
    hsum_ps(acc) + summs
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (bx, by) in x.iter().zip(y) {
        let d = _mm256_set1_ps(bx.d.to_f32() * by.d.to_f32());
        let qx = _mm256_loadu_si256(bx.qs.as_ptr() as *const __m256i);
        let qy = _mm256_loadu_si256(by.qs.as_ptr() as *const __m256i);
        acc = _mm256_fmadd_ps(d, dot_i8_i8(qx, qy), acc);
    }
    hsum_ps(acc)
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_f16(x: &[f16], y: &[f16]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        let a0 = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i) as *const __m128i));
        let b0 = _mm256_cvtph_ps(_mm_loadu_si128(y.as_ptr().add(i) as *const __m128i));
        let a1 = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i + 8) as *const __m128i));
        let b1 = _mm256_cvtph_ps(_mm_loadu_si128(y.as_ptr().add(i + 8) as *const __m128i));
        acc0 = _mm256_fmadd_ps(a0, b0, acc0);
        acc1 = _mm256_fmadd_ps(a1, b1, acc1);
        i += 16;
    }
    let mut sum = hsum_ps(_mm256_add_ps(acc0, acc1));
    while i < n {
        sum += x[i].to_f32() * y[i].to_f32();
        i += 1;
    }
    sum
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        acc0 = _mm256_fmadd_ps(
            _mm256_loadu_ps(x.as_ptr().add(i)),
            _mm256_loadu_ps(y.as_ptr().add(i)),
            acc0,
        );
        acc1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(x.as_ptr().add(i + 8)),
            _mm256_loadu_ps(y.as_ptr().add(i + 8)),
            acc1,
        );
        i += 16;
    }
    let mut sum = hsum_ps(_mm256_add_ps(acc0, acc1));
    while i < n {
        sum += x[i] * y[i];
        i += 1;
    }
    sum
}
