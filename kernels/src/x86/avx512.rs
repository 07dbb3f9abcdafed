//! AVX-512 (F + BW + VL) dot products. They keep the operation order `scalar::dot` documents
//! (and the AVX2 kernels follow), so every instruction set gives bit-identical results: the
//! integer work of two 32-value blocks is done in one 512-bit register, then the two blocks'
//! 8-lane products are accumulated one after the other, exactly as the AVX2 kernel does.
//! Selected only on CPUs that report these features; the same property tests as the AVX2 path
//! (including bit-equality with it) run them there. An odd trailing block, and the tail of the
//! f16 / f32 dots, go through the same arithmetic.

use super::avx2::{h2f, hsum_ps as hsum8, q5_0_bytes, unpack_nibbles};
use crate::formats::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1};
use crate::scalar::dot::STEP;
use half::f16;
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Sixteen i32 lane sums (eight per block) of unsigned x times signed y, as f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_u8_i8(x: __m512i, y: __m512i) -> __m512 {
    let pairs = _mm512_maddubs_epi16(x, y);
    _mm512_cvtepi32_ps(_mm512_madd_epi16(pairs, _mm512_set1_epi16(1)))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_i8_i8(x: __m512i, y: __m512i) -> __m512 {
    let neg = _mm512_movepi8_mask(x);
    let sy = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
    dot_u8_i8(_mm512_abs_epi8(x), sy)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load32(p: &[i8; 32]) -> __m256i {
    _mm256_loadu_si256(p.as_ptr() as *const __m256i)
}

/// The upper 256 bits (AVX-512F only; `_mm512_extractf32x8_ps` would need AVX-512DQ).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn hi256(v: __m512) -> __m256 {
    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
}

/// Accumulate two blocks' lane sums (`xy`: block 0 in lanes 0..8, block 1 in 8..16) with their
/// scales, block 0 first.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn acc_two(acc: __m256, xy: __m512, d0: f32, d1: f32) -> __m256 {
    let acc = _mm256_fmadd_ps(_mm512_castps512_ps256(xy), _mm256_set1_ps(d0), acc);
    _mm256_fmadd_ps(hi256(xy), _mm256_set1_ps(d1), acc)
}

/// One block's lane sums (the odd block at the end), in the low half.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn acc_one(acc: __m256, xy: __m512, d: f32) -> __m256 {
    _mm256_fmadd_ps(_mm512_castps512_ps256(xy), _mm256_set1_ps(d), acc)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn q4_0(b: &BlockQ4_0) -> __m256i {
    _mm256_sub_epi8(unpack_nibbles(&b.qs), _mm256_set1_epi8(8))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn ld16(p: *const f16) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
}

/// # Safety
/// The CPU must support AVX-512 F, BW and VL, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 2 <= n {
        let xy = dot_i8_i8(
            join(q4_0(&x[i]), q4_0(&x[i + 1])),
            join(load32(&y[i].qs), load32(&y[i + 1].qs)),
        );
        acc = acc_two(
            acc,
            xy,
            h2f(x[i].d) * h2f(y[i].d),
            h2f(x[i + 1].d) * h2f(y[i + 1].d),
        );
        i += 2;
    }
    if i < n {
        let z = _mm256_setzero_si256();
        let xy = dot_i8_i8(join(q4_0(&x[i]), z), join(load32(&y[i].qs), z));
        acc = acc_one(acc, xy, h2f(x[i].d) * h2f(y[i].d));
    }
    hsum8(acc)
}

/// # Safety
/// The CPU must support AVX-512 F, BW and VL, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 2 <= n {
        let xy = dot_i8_i8(
            join(q5_0_bytes(&x[i]), q5_0_bytes(&x[i + 1])),
            join(load32(&y[i].qs), load32(&y[i + 1].qs)),
        );
        acc = acc_two(
            acc,
            xy,
            h2f(x[i].d) * h2f(y[i].d),
            h2f(x[i + 1].d) * h2f(y[i + 1].d),
        );
        i += 2;
    }
    if i < n {
        let z = _mm256_setzero_si256();
        let xy = dot_i8_i8(join(q5_0_bytes(&x[i]), z), join(load32(&y[i].qs), z));
        acc = acc_one(acc, xy, h2f(x[i].d) * h2f(y[i].d));
    }
    hsum8(acc)
}

/// # Safety
/// The CPU must support AVX-512 F, BW and VL, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    let mut i = 0;
    while i + 2 <= n {
        summs += h2f(x[i].m) * h2f(y[i].s);
        summs += h2f(x[i + 1].m) * h2f(y[i + 1].s);
        let xy = dot_u8_i8(
            join(unpack_nibbles(&x[i].qs), unpack_nibbles(&x[i + 1].qs)),
            join(load32(&y[i].qs), load32(&y[i + 1].qs)),
        );
        acc = acc_two(
            acc,
            xy,
            h2f(x[i].d) * h2f(y[i].d),
            h2f(x[i + 1].d) * h2f(y[i + 1].d),
        );
        i += 2;
    }
    if i < n {
        summs += h2f(x[i].m) * h2f(y[i].s);
        let z = _mm256_setzero_si256();
        let xy = dot_u8_i8(join(unpack_nibbles(&x[i].qs), z), join(load32(&y[i].qs), z));
        acc = acc_one(acc, xy, h2f(x[i].d) * h2f(y[i].d));
    }
    hsum8(acc) + summs
}

/// # Safety
/// The CPU must support AVX-512 F, BW and VL, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 2 <= n {
        let xy = dot_i8_i8(
            join(load32(&x[i].qs), load32(&x[i + 1].qs)),
            join(load32(&y[i].qs), load32(&y[i + 1].qs)),
        );
        acc = acc_two(
            acc,
            xy,
            h2f(x[i].d) * h2f(y[i].d),
            h2f(x[i + 1].d) * h2f(y[i + 1].d),
        );
        i += 2;
    }
    if i < n {
        let z = _mm256_setzero_si256();
        let xy = dot_i8_i8(join(load32(&x[i].qs), z), join(load32(&y[i].qs), z));
        acc = acc_one(acc, xy, h2f(x[i].d) * h2f(y[i].d));
    }
    hsum8(acc)
}

/// Reduce the accumulators `[acc0 | acc1]` and `[acc2 | acc3]` in `scalar::dot::reduce_4x8`'s
/// order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn reduce_2x16(a01: __m512, a23: __m512) -> f32 {
    let s = _mm512_add_ps(a01, a23); // [acc0 + acc2 | acc1 + acc3]
    let x = _mm256_add_ps(_mm512_castps512_ps256(s), hi256(s));
    let t0 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let t1 = _mm_hadd_ps(t0, t0);
    _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
}

/// # Safety
/// The CPU must support AVX-512 F, BW and VL, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn vec_dot_f16(x: &[f16], y: &[f16]) -> f32 {
    let n = x.len().min(y.len());
    let np = n - n % STEP;
    let (mut a01, mut a23) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i < np {
        a01 = _mm512_fmadd_ps(ld16(x.as_ptr().add(i)), ld16(y.as_ptr().add(i)), a01);
        a23 = _mm512_fmadd_ps(
            ld16(x.as_ptr().add(i + 16)),
            ld16(y.as_ptr().add(i + 16)),
            a23,
        );
        i += STEP;
    }
    let mut sum = reduce_2x16(a01, a23) as f64;
    for k in np..n {
        sum += (x[k].to_f32() * y[k].to_f32()) as f64;
    }
    sum as f32
}

/// # Safety
/// The CPU must support AVX-512 F, BW and VL, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let np = n - n % STEP;
    let (mut a01, mut a23) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i < np {
        a01 = _mm512_fmadd_ps(
            _mm512_loadu_ps(x.as_ptr().add(i)),
            _mm512_loadu_ps(y.as_ptr().add(i)),
            a01,
        );
        a23 = _mm512_fmadd_ps(
            _mm512_loadu_ps(x.as_ptr().add(i + 16)),
            _mm512_loadu_ps(y.as_ptr().add(i + 16)),
            a23,
        );
        i += STEP;
    }
    let mut sum = reduce_2x16(a01, a23) as f64;
    for k in np..n {
        sum += (x[k] * y[k]) as f64;
    }
    sum as f32
}

/// One Q4_1 weight row against four activation rows, each output summed exactly as
/// [`vec_dot_q4_1_q8_1`] (and the AVX2 kernels) sum it; two weight blocks are unpacked per
/// 512-bit register once for all four rows.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VL, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn vec_dot4_q4_1_q8_1(x: &[BlockQ4_1], y: [&[BlockQ8_1]; 4]) -> [f32; 4] {
    let n = x.len();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut summs = [0.0f32; 4];
    let mut i = 0;
    while i + 2 <= n {
        let qx = join(unpack_nibbles(&x[i].qs), unpack_nibbles(&x[i + 1].qs));
        let (d0, d1) = (h2f(x[i].d), h2f(x[i + 1].d));
        let (m0, m1) = (h2f(x[i].m), h2f(x[i + 1].m));
        for t in 0..4 {
            let (y0, y1) = (&y[t][i], &y[t][i + 1]);
            summs[t] += m0 * h2f(y0.s);
            summs[t] += m1 * h2f(y1.s);
            let xy = dot_u8_i8(qx, join(load32(&y0.qs), load32(&y1.qs)));
            acc[t] = acc_two(acc[t], xy, d0 * h2f(y0.d), d1 * h2f(y1.d));
        }
        i += 2;
    }
    if i < n {
        let z = _mm256_setzero_si256();
        let qx = join(unpack_nibbles(&x[i].qs), z);
        for t in 0..4 {
            let yb = &y[t][i];
            summs[t] += h2f(x[i].m) * h2f(yb.s);
            let xy = dot_u8_i8(qx, join(load32(&yb.qs), z));
            acc[t] = acc_one(acc[t], xy, h2f(x[i].d) * h2f(yb.d));
        }
    }
    std::array::from_fn(|t| hsum8(acc[t]) + summs[t])
}
