//! AVX2 + FMA + F16C dot products (the tested path on this project's CI machines), in the
//! operation order `scalar::dot` documents, so results are bit-identical to the scalar reference.

use crate::formats::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use crate::scalar;
use crate::scalar::dot::STEP;
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

/// Reduce four 8-lane accumulators in `scalar::dot::reduce_4x8`'s order.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn reduce_4x8(acc: [__m256; 4]) -> f32 {
    let x = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
    let t0 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let t1 = _mm_hadd_ps(t0, t0);
    _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f16x8(p: *const f16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_f16x8(p: *mut f16, v: __m256) {
    _mm_storeu_si128(p as *mut __m128i, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_f16(x: &[f16], y: &[f16]) -> f32 {
    let n = x.len().min(y.len());
    let np = n - n % STEP;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < np {
        for (j, a) in acc.iter_mut().enumerate() {
            let k = i + 8 * j;
            *a = _mm256_fmadd_ps(load_f16x8(x.as_ptr().add(k)), load_f16x8(y.as_ptr().add(k)), *a);
        }
        i += STEP;
    }
    let mut sum = reduce_4x8(acc) as f64;
    for k in np..n {
        sum += (x[k].to_f32() * y[k].to_f32()) as f64;
    }
    sum as f32
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let np = n - n % STEP;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < np {
        for (j, a) in acc.iter_mut().enumerate() {
            let k = i + 8 * j;
            *a = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(k)), _mm256_loadu_ps(y.as_ptr().add(k)), *a);
        }
        i += STEP;
    }
    let mut sum = reduce_4x8(acc) as f64;
    for k in np..n {
        sum += (x[k] * y[k]) as f64;
    }
    sum as f32
}

/// `y = f16(x * v + y)`, as `scalar::dot::mad_f16`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn mad_f16(y: &mut [f16], x: &[f16], v: f32) {
    let n = x.len().min(y.len());
    let vv = _mm256_set1_ps(v);
    let mut i = 0;
    while i + 8 <= n {
        let r = _mm256_fmadd_ps(load_f16x8(x.as_ptr().add(i)), vv, load_f16x8(y.as_ptr().add(i)));
        store_f16x8(y.as_mut_ptr().add(i), r);
        i += 8;
    }
    scalar::dot::mad_f16(&mut y[i..n], &x[i..n], v);
}

/// `y = f16(y * v)`, as `scalar::dot::scale_f16`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scale_f16(y: &mut [f16], v: f32) {
    let n = y.len();
    let vv = _mm256_set1_ps(v);
    let mut i = 0;
    while i + 8 <= n {
        let r = _mm256_mul_ps(load_f16x8(y.as_ptr().add(i)), vv);
        store_f16x8(y.as_mut_ptr().add(i), r);
        i += 8;
    }
    scalar::dot::scale_f16(&mut y[i..n], v);
}
