//! AVX-512 (F + BW) dot products: the AVX2 kernels' structure, two 32-value blocks per 512-bit
//! register. Selected only on CPUs that report avx512f and avx512bw; the same property tests as
//! the AVX2 path run them there. An odd trailing block goes through the AVX2 kernel.

use super::avx2;
use crate::formats::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use half::f16;
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Scales for two blocks: `d0` in lanes 0..8, `d1` in lanes 8..16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn two_scales(d0: f32, d1: f32) -> __m512 {
    _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(d0), _mm512_set1_ps(d1))
}

/// 16 packed nibbles to 32 bytes, as in the AVX2 kernels.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn unpack_nibbles(qs: &[u8; 16]) -> __m256i {
    let tmp = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
    let both = _mm256_insertf128_si256::<1>(_mm256_castsi128_si256(tmp), _mm_srli_epi16::<4>(tmp));
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn dot_u8_i8(x: __m512i, y: __m512i) -> __m512 {
    let pairs = _mm512_maddubs_epi16(x, y);
    _mm512_cvtepi32_ps(_mm512_madd_epi16(pairs, _mm512_set1_epi16(1)))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn dot_i8_i8(x: __m512i, y: __m512i) -> __m512 {
    let neg = _mm512_movepi8_mask(x);
    let sy = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
    dot_u8_i8(_mm512_abs_epi8(x), sy)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn load32(p: &[i8; 32]) -> __m256i {
    _mm256_loadu_si256(p.as_ptr() as *const __m256i)
}

/// # Safety
/// The CPU must support AVX-512 F and BW, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
pub unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = _mm512_setzero_ps();
    let eight = _mm256_set1_epi8(8);
    let mut i = 0;
    while i + 2 <= n {
        let (x0, x1, y0, y1) = (&x[i], &x[i + 1], &y[i], &y[i + 1]);
        let d = two_scales(x0.d.to_f32() * y0.d.to_f32(), x1.d.to_f32() * y1.d.to_f32());
        let qx = join(
            _mm256_sub_epi8(unpack_nibbles(&x0.qs), eight),
            _mm256_sub_epi8(unpack_nibbles(&x1.qs), eight),
        );
        let qy = join(load32(&y0.qs), load32(&y1.qs));
        acc = _mm512_fmadd_ps(d, dot_i8_i8(qx, qy), acc);
        i += 2;
    }
    _mm512_reduce_add_ps(acc) + avx2::vec_dot_q4_0_q8_0(&x[i..n], &y[i..n])
}

/// # Safety
/// The CPU must support AVX-512 F and BW, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
pub unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = _mm512_setzero_ps();
    let mut summs = 0.0f32;
    let mut i = 0;
    while i + 2 <= n {
        let (x0, x1, y0, y1) = (&x[i], &x[i + 1], &y[i], &y[i + 1]);
        summs += x0.m.to_f32() * y0.s.to_f32() + x1.m.to_f32() * y1.s.to_f32();
        let d = two_scales(x0.d.to_f32() * y0.d.to_f32(), x1.d.to_f32() * y1.d.to_f32());
        let qx = join(unpack_nibbles(&x0.qs), unpack_nibbles(&x1.qs));
        let qy = join(load32(&y0.qs), load32(&y1.qs));
        acc = _mm512_fmadd_ps(d, dot_u8_i8(qx, qy), acc);
        i += 2;
    }
    _mm512_reduce_add_ps(acc) + summs + avx2::vec_dot_q4_1_q8_1(&x[i..n], &y[i..n])
}

/// # Safety
/// The CPU must support AVX-512 F and BW, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
pub unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i + 2 <= n {
        let (x0, x1, y0, y1) = (&x[i], &x[i + 1], &y[i], &y[i + 1]);
        let d = two_scales(x0.d.to_f32() * y0.d.to_f32(), x1.d.to_f32() * y1.d.to_f32());
        let qx = join(load32(&x0.qs), load32(&x1.qs));
        let qy = join(load32(&y0.qs), load32(&y1.qs));
        acc = _mm512_fmadd_ps(d, dot_i8_i8(qx, qy), acc);
        i += 2;
    }
    _mm512_reduce_add_ps(acc) + avx2::vec_dot_q8_0_q8_0(&x[i..n], &y[i..n])
}

/// # Safety
/// The CPU must support AVX-512 F, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub unsafe fn vec_dot_f16(x: &[f16], y: &[f16]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        let a = _mm512_cvtph_ps(_mm256_loadu_si256(x.as_ptr().add(i) as *const __m256i));
        let b = _mm512_cvtph_ps(_mm256_loadu_si256(y.as_ptr().add(i) as *const __m256i));
        acc = _mm512_fmadd_ps(a, b, acc);
        i += 16;
    }
    _mm512_reduce_add_ps(acc) + avx2::vec_dot_f16(&x[i..n], &y[i..n])
}

/// # Safety
/// The CPU must support AVX-512 F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub unsafe fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        acc = _mm512_fmadd_ps(
            _mm512_loadu_ps(x.as_ptr().add(i)),
            _mm512_loadu_ps(y.as_ptr().add(i)),
            acc,
        );
        i += 16;
    }
    _mm512_reduce_add_ps(acc) + avx2::vec_dot_f32(&x[i..n], &y[i..n])
}
