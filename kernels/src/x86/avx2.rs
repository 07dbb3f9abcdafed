//! AVX2 + FMA + F16C dot products (the tested path on this project's CI machines), in the
//! operation order `scalar::dot` documents, so results are bit-identical to the scalar reference.

use crate::formats::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1};
use crate::scalar;
use crate::scalar::dot::STEP;
use crate::seg_rows::SegRows;
use half::f16;
use std::arch::x86_64::*;

/// f16 to f32 with the F16C instruction, inline (the `half` crate's conversion is an out-of-line
/// call on this hot path). Exact, like every f16 to f32 conversion.
#[inline]
#[target_feature(enable = "f16c")]
pub(super) unsafe fn h2f(h: f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_ps(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 packed nibbles to 32 bytes: low nibbles (elements 0..16) then high nibbles (16..32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_nibbles(qs: &[u8; 16]) -> __m256i {
    let tmp = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
    let both = _mm256_insertf128_si256::<1>(_mm256_castsi128_si256(tmp), _mm_srli_epi16::<4>(tmp));
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// Eight i32 partial sums of `x[i] * y[i]`, x unsigned bytes (< 128), y signed bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_u8_i8(x: __m256i, y: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(x, y);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// Eight i32 partial sums of `x[i] * y[i]` for signed bytes (x != -128).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8_i8(x: __m256i, y: __m256i) -> __m256 {
    dot_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (bx, by) in x.iter().zip(y) {
        let d = _mm256_set1_ps(h2f(bx.d) * h2f(by.d));
        let qx = _mm256_sub_epi8(unpack_nibbles(&bx.qs), _mm256_set1_epi8(8));
        let qy = _mm256_loadu_si256(by.qs.as_ptr() as *const __m256i);
        acc = _mm256_fmadd_ps(d, dot_i8_i8(qx, qy), acc);
    }
    hsum_ps(acc)
}

/// The 32 values of a Q5_0 block minus 16, as signed bytes in llama.cpp's order: the nibbles
/// as in [`unpack_nibbles`], and where bit j of `qh` is clear, byte j gets 0xF0 or'ed in
/// (`q - 16` in two's complement; a set bit leaves `q + 16 - 16`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_0_bytes(b: &BlockQ5_0) -> __m256i {
    let qh = _mm256_set1_epi32(i32::from_le_bytes(b.qh));
    // Byte j holds byte j / 8 of qh, then only its bit j % 8.
    let spread = _mm256_shuffle_epi8(
        qh,
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    let high = _mm256_andnot_si256(set, _mm256_set1_epi8(0xF0u8 as i8));
    _mm256_or_si256(unpack_nibbles(&b.qs), high)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (bx, by) in x.iter().zip(y) {
        let d = _mm256_set1_ps(h2f(bx.d) * h2f(by.d));
        let qy = _mm256_loadu_si256(by.qs.as_ptr() as *const __m256i);
        acc = _mm256_fmadd_ps(d, dot_i8_i8(q5_0_bytes(bx), qy), acc);
    }
    hsum_ps(acc)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        summs += h2f(bx.m) * h2f(by.s);
        let d = _mm256_set1_ps(h2f(bx.d) * h2f(by.d));
        let qx = unpack_nibbles(&bx.qs);
        let qy = _mm256_loadu_si256(by.qs.as_ptr() as *const __m256i);
        acc = _mm256_fmadd_ps(d, dot_u8_i8(qx, qy), acc);
    }
    hsum_ps(acc) + summs
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (bx, by) in x.iter().zip(y) {
        let d = _mm256_set1_ps(h2f(bx.d) * h2f(by.d));
        let qx = _mm256_loadu_si256(bx.qs.as_ptr() as *const __m256i);
        let qy = _mm256_loadu_si256(by.qs.as_ptr() as *const __m256i);
        acc = _mm256_fmadd_ps(d, dot_i8_i8(qx, qy), acc);
    }
    hsum_ps(acc)
}

/// Four activation rows against one weight row (a prompt's tokens): each output is summed in
/// exactly the order of the one-row kernel, the weight block is unpacked once for all four.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot4_q4_1_q8_1(x: &[BlockQ4_1], y: [&[BlockQ8_1]; 4]) -> [f32; 4] {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut summs = [0.0f32; 4];
    for (b, bx) in x.iter().enumerate() {
        let qx = unpack_nibbles(&bx.qs);
        let (dx, mx) = (h2f(bx.d), h2f(bx.m));
        for t in 0..4 {
            let by = &y[t][b];
            summs[t] += mx * h2f(by.s);
            let qy = _mm256_loadu_si256(by.qs.as_ptr() as *const __m256i);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * h2f(by.d)), dot_u8_i8(qx, qy), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]) + summs[t])
}

/// As [`vec_dot4_q4_1_q8_1`] for Q4_0 weights.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot4_q4_0_q8_0(x: &[BlockQ4_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
    let mut acc = [_mm256_setzero_ps(); 4];
    for (b, bx) in x.iter().enumerate() {
        let qx = _mm256_sub_epi8(unpack_nibbles(&bx.qs), _mm256_set1_epi8(8));
        let dx = h2f(bx.d);
        for t in 0..4 {
            let by = &y[t][b];
            let qy = _mm256_loadu_si256(by.qs.as_ptr() as *const __m256i);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * h2f(by.d)), dot_i8_i8(qx, qy), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]))
}

/// As [`vec_dot4_q4_1_q8_1`] for Q8_0 weights.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot4_q8_0_q8_0(x: &[BlockQ8_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
    let mut acc = [_mm256_setzero_ps(); 4];
    for (b, bx) in x.iter().enumerate() {
        let qx = _mm256_loadu_si256(bx.qs.as_ptr() as *const __m256i);
        let dx = h2f(bx.d);
        for t in 0..4 {
            let by = &y[t][b];
            let qy = _mm256_loadu_si256(by.qs.as_ptr() as *const __m256i);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * h2f(by.d)), dot_i8_i8(qx, qy), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]))
}

/// Reduce four 8-lane accumulators in `scalar::dot::reduce_4x8`'s order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
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
            *a = _mm256_fmadd_ps(
                load_f16x8(x.as_ptr().add(k)),
                load_f16x8(y.as_ptr().add(k)),
                *a,
            );
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
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let np = n - n % STEP;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < np {
        for (j, a) in acc.iter_mut().enumerate() {
            let k = i + 8 * j;
            *a = _mm256_fmadd_ps(
                _mm256_loadu_ps(x.as_ptr().add(k)),
                _mm256_loadu_ps(y.as_ptr().add(k)),
                *a,
            );
        }
        i += STEP;
    }
    let mut sum = reduce_4x8(acc) as f64;
    for k in np..n {
        sum += (x[k] * y[k]) as f64;
    }
    sum as f32
}

/// Eight lanes of `scalar::activation::exp_approx`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp_approx(x: __m256) -> __m256 {
    use scalar::activation::{C, LN2_HI, LN2_LO, LOG2E};
    let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
    let shift = _mm256_set1_ps(12582912.0);
    let z = _mm256_fmadd_ps(x, c(LOG2E), shift);
    let n = _mm256_sub_ps(z, shift);
    let b = _mm256_fnmadd_ps(n, c(LN2_LO), _mm256_fnmadd_ps(n, c(LN2_HI), x));
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(
        e,
        _mm256_castps_si256(_mm256_set1_ps(1.0)),
    ));
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(c(C[4]), b, c(C[3])),
            u,
            _mm256_fmadd_ps(c(C[2]), b, c(C[1])),
        ),
        u,
        _mm256_mul_ps(c(C[0]), b),
    );
    let normal = _mm256_fmadd_ps(k, j, k);
    if _mm256_movemask_ps(big) == 0 {
        return normal;
    }
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let huge = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    let scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    let r = _mm256_blendv_ps(normal, scaled, big);
    _mm256_blendv_ps(r, _mm256_mul_ps(s1, s1), huge)
}

/// `gate = silu(gate) * up`, as `scalar::activation::swiglu`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= n {
        let x = _mm256_loadu_ps(gate.as_ptr().add(i));
        let e = exp_approx(_mm256_sub_ps(_mm256_setzero_ps(), x));
        let silu = _mm256_div_ps(x, _mm256_add_ps(one, e));
        _mm256_storeu_ps(
            gate.as_mut_ptr().add(i),
            _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr().add(i))),
        );
        i += 8;
    }
    scalar::activation::swiglu(&mut gate[i..n], &up[i..n]);
}

/// As `scalar::dot::vec_dot_f16_gemm`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_f16_gemm(x: &[f16], y: &[f16]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        acc = _mm256_fmadd_ps(
            load_f16x8(x.as_ptr().add(i)),
            load_f16x8(y.as_ptr().add(i)),
            acc,
        );
        i += 8;
    }
    hsum_ps(acc)
}

/// As `scalar::dot::dot_f16_rows`: rows two (or four, or eight) at a time for independent
/// accumulator chains, and the final horizontal sums of eight rows at once ([`reduce8`]).
/// The accumulators run on from one segment of the rows to the next.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; the rows must hold `out.len()` rows of `x.len()`
/// values (`rows.covers(out.len(), x.len())`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16_rows(
    rows: SegRows<'_>,
    x: &[f32],
    gemm: bool,
    valid: usize,
    out: &mut [f32],
) {
    let n = out.len();
    let mut lanes = [_mm256_setzero_ps(); 8];
    let mut j = 0;
    while j < n {
        let m = (n - j).min(8);
        // `lanes[r]`: row `j + r`'s accumulator, reduced to 8 lanes.
        let mut r = 0;
        if gemm {
            if m == 8 {
                lanes = rows_gemm::<8>(rows, j, x, valid);
                r = 8;
            }
            while r + 4 <= m {
                let a = rows_gemm::<4>(rows, j + r, x, valid);
                lanes[r..r + 4].copy_from_slice(&a);
                r += 4;
            }
            while r < m {
                lanes[r] = rows_gemm::<1>(rows, j + r, x, valid)[0];
                r += 1;
            }
        } else {
            while r + 2 <= m {
                let a = rows_steps::<2>(rows, j + r, x);
                lanes[r..r + 2].copy_from_slice(&a);
                r += 2;
            }
            if r < m {
                lanes[r] = rows_steps::<1>(rows, j + r, x)[0];
            }
        }
        let mut sums = [0.0f32; 8];
        _mm256_storeu_ps(sums.as_mut_ptr(), reduce8(&lanes, gemm));
        out[j..j + m].copy_from_slice(&sums[..m]);
        if !gemm {
            // `vec_dot_f16` adds a tail of fewer than 32 values in f64.
            let np = x.len() - x.len() % STEP;
            if np < x.len() {
                for (r, o) in out[j..j + m].iter_mut().enumerate() {
                    let mut sum = *o as f64;
                    for (k, xk) in x.iter().enumerate().skip(np) {
                        sum += (rows.at(j + r, k).to_f32() * xk) as f64;
                    }
                    *o = sum as f32;
                }
            }
        }
        j += m;
    }
}

/// The horizontal sums of eight rows' 8-lane accumulators, lane `r` for row `r`: with
/// `h = lanes 0..4 + lanes 4..8`, `(h0 + h2) + (h1 + h3)` (`gemm`: `hsum8`'s order) or
/// `(h0 + h1) + (h2 + h3)` (`reduce_4x8`'s last steps), computed for all eight rows at once by
/// a 4x4 transpose in each 128-bit half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn reduce8(x: &[__m256; 8], gemm: bool) -> __m256 {
    // r_k = [h of row k | h of row k + 4]
    let r: [__m256; 4] = std::array::from_fn(|k| {
        let lo = _mm256_permute2f128_ps::<0x20>(x[k], x[k + 4]);
        let hi = _mm256_permute2f128_ps::<0x31>(x[k], x[k + 4]);
        _mm256_add_ps(lo, hi)
    });
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpacklo_ps(r[2], r[3]);
    let t2 = _mm256_unpackhi_ps(r[0], r[1]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    // c_i = element i of h, rows 0..4 | rows 4..8
    let c0 = _mm256_shuffle_ps::<0x44>(t0, t1);
    let c1 = _mm256_shuffle_ps::<0xEE>(t0, t1);
    let c2 = _mm256_shuffle_ps::<0x44>(t2, t3);
    let c3 = _mm256_shuffle_ps::<0xEE>(t2, t3);
    if gemm {
        _mm256_add_ps(_mm256_add_ps(c0, c2), _mm256_add_ps(c1, c3))
    } else {
        _mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3))
    }
}

/// `R` rows in `vec_dot_f16`'s order up to the last whole step of 32: four 8-lane
/// accumulators, combined lane-wise as `reduce_4x8` begins, `(a0 + a2) + (a1 + a3)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_steps<const R: usize>(rows: SegRows<'_>, j: usize, x: &[f32]) -> [__m256; R] {
    let len = x.len();
    let np = len - len % STEP;
    let stride = rows.stride;
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    for (lo, hi, seg) in rows.runs(np) {
        let p = seg.as_ptr().wrapping_add(j * stride).wrapping_sub(lo);
        let mut i = lo;
        while i < hi {
            for a in 0..4 {
                let xv = _mm256_loadu_ps(x.as_ptr().add(i + 8 * a));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let v = load_f16x8(p.wrapping_add(r * stride + i + 8 * a));
                    acc[a] = _mm256_fmadd_ps(v, xv, acc[a]);
                }
            }
            i += STEP;
        }
    }
    acc.map(|a| _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3])))
}

/// `R` rows in `vec_dot_f16_gemm`'s order, values from `valid` on read as +0, before the
/// horizontal sum.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_gemm<const R: usize>(
    rows: SegRows<'_>,
    j: usize,
    x: &[f32],
    valid: usize,
) -> [__m256; R] {
    let len = x.len() - x.len() % 8;
    let valid = valid.min(len);
    let full = valid - valid % 8;
    let stride = rows.stride;
    let mut acc = [_mm256_setzero_ps(); R];
    for (lo, hi, seg) in rows.runs(full) {
        let p = seg.as_ptr().wrapping_add(j * stride).wrapping_sub(lo);
        let mut i = lo;
        while i < hi {
            let xv = _mm256_loadu_ps(x.as_ptr().add(i));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(load_f16x8(p.wrapping_add(r * stride + i)), xv, *a);
            }
            i += 8;
        }
    }
    let mut i = full;
    if i < valid {
        let xv = _mm256_loadu_ps(x.as_ptr().add(i));
        for (r, a) in acc.iter_mut().enumerate() {
            let part: [f16; 8] = std::array::from_fn(|l| {
                if i + l < valid {
                    rows.at(j + r, i + l)
                } else {
                    f16::ZERO
                }
            });
            *a = _mm256_fmadd_ps(load_f16x8(part.as_ptr()), xv, *a);
        }
        i += 8;
    }
    if i < len {
        // Every further product is +0 (a zero value times a probability): `acc + 0`, which only
        // turns a -0 lane into +0, and doing it once is doing it for every group.
        for a in acc.iter_mut() {
            *a = _mm256_add_ps(*a, _mm256_setzero_ps());
        }
    }
    acc
}

/// `(d, 32 rounded values)` of one block, as `scalar::quantize` computes them: `amax / 127`,
/// values times `127 / amax` rounded half to even (exact integers in -127..=127).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_block(x: &[f32]) -> (f32, __m256i) {
    let p = x.as_ptr();
    let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(p.add(8 * i)));
    let sign = _mm256_set1_ps(-0.0);
    let abs = v.map(|v| _mm256_andnot_ps(sign, v));
    let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    let max = _mm_cvtss_f32(m);
    let d = max / 127.0;
    let id = _mm256_set1_ps(if max != 0.0 { 127.0 / max } else { 0.0 });
    let q = v.map(|v| {
        _mm256_cvtps_epi32(_mm256_round_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(_mm256_mul_ps(v, id)))
    });
    // Pack to bytes in order: packs interleave 128-bit lanes, the permute undoes it.
    let q16a = _mm256_packs_epi32(q[0], q[1]);
    let q16b = _mm256_packs_epi32(q[2], q[3]);
    let q8 = _mm256_packs_epi16(q16a, q16b);
    let q8 = _mm256_permutevar8x32_epi32(q8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    (d, q8)
}

/// As `scalar::quantize::quantize_row_q8_0`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.iter_mut()) {
        let (d, q) = q8_block(xb);
        ob.d = f16::from_f32(d);
        _mm256_storeu_si256(ob.qs.as_mut_ptr() as *mut __m256i, q);
    }
}

/// As `scalar::quantize::quantize_row_q8_1`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.iter_mut()) {
        let (d, q) = q8_block(xb);
        ob.d = f16::from_f32(d);
        _mm256_storeu_si256(ob.qs.as_mut_ptr() as *mut __m256i, q);
        // Sum of the values: bytes to i16 pairs to i32 lanes (exact).
        let s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
        let s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(s32),
            _mm256_extracti128_si256::<1>(s32),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        ob.s = f16::from_f32(d * _mm_cvtsi128_si32(s) as f32);
    }
}

/// As `scalar::quantize::quantize_row_f16` (F16C, round to nearest even, as `half` does).
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_f16(x: &[f32], out: &mut [f16]) {
    let n = x.len().min(out.len());
    let mut i = 0;
    while i + 8 <= n {
        let h =
            _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm256_loadu_ps(x.as_ptr().add(i)));
        _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, h);
        i += 8;
    }
    scalar::quantize::quantize_row_f16(&x[i..n], &mut out[i..n]);
}

/// As `scalar::quantize::round_f16`.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn round_f16(x: &mut [f32]) {
    let n = x.len();
    let mut i = 0;
    while i + 8 <= n {
        let p = x.as_mut_ptr().add(i);
        let h = _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm256_loadu_ps(p));
        _mm256_storeu_ps(p, _mm256_cvtph_ps(h));
        i += 8;
    }
    scalar::quantize::round_f16(&mut x[i..]);
}

/// As `scalar::activation::softmax`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let n = x.len();
    let np = n - n % 8;
    let vmax = _mm256_set1_ps(max);
    let mut total = 0.0f64;
    let mut i = 0;
    while i < np {
        let p = x.as_mut_ptr().add(i);
        let e = exp_approx(_mm256_sub_ps(_mm256_loadu_ps(p), vmax));
        _mm256_storeu_ps(p, e);
        total += hsum_ps(e) as f64;
        i += 8;
    }
    for v in x[np..].iter_mut() {
        *v = (*v - max).exp();
        total += *v as f64;
    }
    let inv = _mm256_set1_ps((1.0 / total) as f32);
    let mut i = 0;
    while i < np {
        let p = x.as_mut_ptr().add(i);
        _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(p), inv));
        i += 8;
    }
    let inv = (1.0 / total) as f32;
    for v in x[np..].iter_mut() {
        *v *= inv;
    }
}
