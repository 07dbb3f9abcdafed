//! K-quants (Q4_K, Q6_K, and their activation format Q8_K): scalar reference dot products,
//! dequantisation, and quantisation.
//!
//! The dot products fix the order of their floating-point operations to llama.cpp's on an AVX2
//! CPU (integer sums are exact, so only where the float conversions, multiplications and
//! additions happen matters), and the SIMD kernels in `x86` follow the same order:
//!
//! - Q6_K ([`vec_dot_q6_k_q8_k`], llama.cpp's `ggml_vec_dot_q6_K_q8_K`): per super-block, eight
//!   i32 lanes; lane `l` sums `scale * q * y` over values `4l..4l + 4` of each 32-value chunk
//!   (`q` unsigned, 0..63) minus `32 * (scales[2l] * bsums[2l] + scales[2l + 1] * bsums[2l + 1])`;
//!   lane `l` of an f32 accumulator takes `fma(lane, d_x * d_y)` block after block, and the
//!   lanes are reduced by [`hsum8`].
//! - Q6_K in a batch of eight or more activation rows ([`vec_dot_q6_k_q8_k_tiled`], llama.cpp's
//!   tiled K-quant GEMM, which takes over from the dot product there): per super-block the exact
//!   integer total `S` of all 256 products, then `acc = fma(d_x * S, d_y, acc)`.
//! - Q4_K: llama.cpp on AVX2 repacks every Q4_K matrix whose row count is a multiple of eight
//!   and multiplies it with `ggml_gemv_q4_K_8x8_q8_K` (one activation row) or
//!   `ggml_gemm_q4_K_8x8_q8_K` (activation rows in groups of four: a prompt's first
//!   `n - n % 4` tokens). Per super-block the one-row order ([`vec_dot_q4_k_q8_k`]) takes the
//!   whole block's exact integer sums `sum_j sc[j] * (q . y)_j` and `sum_j m[j] * bsum32_j`
//!   into two f32 accumulators with one FMA each (`d_x * d_y` and `dmin_x * d_y`); the
//!   four-row order ([`vec_dot4_q4_k_q8_k`]) does the same per 64 values (sub-blocks `2s`,
//!   `2s + 1`), four FMAs per block. The result is the first accumulator minus the second.
//!
//! Q8_K quantisation is ggml's `quantize_row_q8_K_ref` exactly (it decides the activations'
//! bits). Q4_K and Q6_K quantisation ([`quantize_row_q4_k`], [`quantize_row_q6_k`]) is a plain
//! min/max (Q4_K) and absolute-maximum (Q6_K) scheme for tests and converters, simpler than
//! llama.cpp's error-minimising search, so it does not reproduce llama.cpp's files.

use super::dot::hsum8;
use crate::formats::{BlockQ4_K, BlockQ6_K, BlockQ8_K, QK_K};
use half::f16;

/// Scale and min of sub-block `j` (0..8) of a Q4_K block (see [`BlockQ4_K`]).
pub fn q4_k_scale_min(scales: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// The 256 nibbles of a Q4_K block in value order.
pub fn q4_k_values(b: &BlockQ4_K) -> [u8; QK_K] {
    let mut v = [0u8; QK_K];
    for c in 0..4 {
        for i in 0..32 {
            let q = b.qs[32 * c + i];
            v[64 * c + i] = q & 0x0f;
            v[64 * c + 32 + i] = q >> 4;
        }
    }
    v
}

/// The 256 unsigned six-bit values (0..63, before the -32 offset) of a Q6_K block in value
/// order.
pub fn q6_k_values(b: &BlockQ6_K) -> [u8; QK_K] {
    let mut v = [0u8; QK_K];
    for h in 0..2 {
        let (ql, qh) = (&b.ql[64 * h..64 * h + 64], &b.qh[32 * h..32 * h + 32]);
        let o = &mut v[128 * h..128 * h + 128];
        for i in 0..32 {
            o[i] = (ql[i] & 0x0f) | ((qh[i] & 3) << 4);
            o[32 + i] = (ql[32 + i] & 0x0f) | (((qh[i] >> 2) & 3) << 4);
            o[64 + i] = (ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4);
            o[96 + i] = (ql[32 + i] >> 4) | (((qh[i] >> 6) & 3) << 4);
        }
    }
    v
}

/// The exact integer sums of sub-blocks `subs` of one Q4_K block against one Q8_K block:
/// `(sum_j sc[j] * sum_i q_i * y_i, sum_j m[j] * (bsums[2j] + bsums[2j + 1]))`.
fn q4_k_int_sums(x: &BlockQ4_K, q: &[u8; QK_K], y: &BlockQ8_K, subs: [usize; 2]) -> (i32, i32) {
    let (mut sumi, mut summ) = (0i32, 0i32);
    for j in subs[0]..subs[1] {
        let (sc, m) = q4_k_scale_min(&x.scales, j);
        let dot: i32 = (32 * j..32 * j + 32)
            .map(|i| q[i] as i32 * y.qs[i] as i32)
            .sum();
        sumi += sc as i32 * dot;
        summ += m as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32);
    }
    (sumi, summ)
}

/// Q4_K weights times Q8_K activations in `pieces` FMAs per super-block (1: the one-row order,
/// 4: the four-row order; see the module docs).
fn dot_q4_k(x: &[BlockQ4_K], y: &[BlockQ8_K], pieces: usize) -> f32 {
    let (mut acc, mut acc_m) = (0.0f32, 0.0f32);
    let per = 8 / pieces;
    for (bx, by) in x.iter().zip(y) {
        let q = q4_k_values(bx);
        let d = bx.d.to_f32() * by.d;
        let dmin = bx.dmin.to_f32() * by.d;
        for p in 0..pieces {
            let (sumi, summ) = q4_k_int_sums(bx, &q, by, [p * per, p * per + per]);
            acc = (sumi as f32).mul_add(d, acc);
            acc_m = (summ as f32).mul_add(dmin, acc_m);
        }
    }
    acc - acc_m
}

/// One Q4_K row times one Q8_K row, in llama.cpp's one-row (GEMV) order.
pub fn vec_dot_q4_k_q8_k(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
    dot_q4_k(x, y, 1)
}

/// One Q4_K row times four Q8_K rows, each in llama.cpp's four-row (GEMM) order, which rounds
/// differently from [`vec_dot_q4_k_q8_k`] (see the module docs).
pub fn vec_dot4_q4_k_q8_k(x: &[BlockQ4_K], y: [&[BlockQ8_K]; 4]) -> [f32; 4] {
    y.map(|y| dot_q4_k(x, y, 4))
}

/// One Q6_K row times one Q8_K row, in llama.cpp's order (see the module docs).
pub fn vec_dot_q6_k_q8_k(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (bx, by) in x.iter().zip(y) {
        let q = q6_k_values(bx);
        let d = by.d * bx.d.to_f32();
        let mut lanes = [0i32; 8];
        for (l, lane) in lanes.iter_mut().enumerate() {
            for c in 0..8 {
                let first = 32 * c + 4 * l;
                *lane += (first..first + 4)
                    .map(|v| bx.scales[v / 16] as i32 * q[v] as i32 * by.qs[v] as i32)
                    .sum::<i32>();
            }
            *lane -= 32
                * (bx.scales[2 * l] as i32 * by.bsums[2 * l] as i32
                    + bx.scales[2 * l + 1] as i32 * by.bsums[2 * l + 1] as i32);
        }
        for (a, s) in acc.iter_mut().zip(lanes) {
            *a = (s as f32).mul_add(d, *a);
        }
    }
    hsum8(&acc)
}

/// One Q6_K row times one Q8_K row in the order of llama.cpp's tiled GEMM (batches of eight or
/// more activation rows; see the module docs).
pub fn vec_dot_q6_k_q8_k_tiled(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
    let mut acc = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let q = q6_k_values(bx);
        let total: i32 = (0..QK_K)
            .map(|v| bx.scales[v / 16] as i32 * (q[v] as i32 - 32) * by.qs[v] as i32)
            .sum();
        acc = (bx.d.to_f32() * total as f32).mul_add(by.d, acc);
    }
    acc
}

/// ggml's `nearest_int`: round half to even through the 1.5 * 2^23 shift (|v| < 2^22).
fn nearest_int(v: f32) -> i32 {
    ((v + 12582912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Quantise activations to Q8_K exactly as ggml's `quantize_row_q8_K_ref`: the value of
/// largest magnitude (the first, on ties) maps to -127, `d = 1 / iscale`. An all-zero block
/// gets `d = 0` and zero quants and sums.
pub fn quantize_row_q8_k(x: &[f32], out: &mut [BlockQ8_K]) {
    debug_assert_eq!(x.len(), out.len() * QK_K);
    for (xb, ob) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let (mut max, mut amax) = (0.0f32, 0.0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            ob.d = 0.0;
            ob.qs = [0; QK_K];
            ob.bsums = [0; 16];
            continue;
        }
        let iscale = -127.0 / max;
        for (q, v) in ob.qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (k, s) in ob.bsums.iter_mut().enumerate() {
            *s = ob.qs[16 * k..16 * k + 16].iter().map(|&q| q as i16).sum();
        }
        ob.d = 1.0 / iscale;
    }
}

pub fn dequantize_row_q8_k(x: &[BlockQ8_K], out: &mut [f32]) {
    for (b, o) in x.iter().zip(out.chunks_exact_mut(QK_K)) {
        for (v, q) in o.iter_mut().zip(b.qs) {
            *v = b.d * q as f32;
        }
    }
}

/// Q4_K to f32 as ggml's `dequantize_row_q4_K`: `(d * sc) * q - (dmin * m)`.
pub fn dequantize_row_q4_k(x: &[BlockQ4_K], out: &mut [f32]) {
    for (b, o) in x.iter().zip(out.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        let q = q4_k_values(b);
        for j in 0..8 {
            let (sc, m) = q4_k_scale_min(&b.scales, j);
            let (d1, m1) = (d * sc as f32, dmin * m as f32);
            for i in 32 * j..32 * j + 32 {
                o[i] = d1 * q[i] as f32 - m1;
            }
        }
    }
}

/// Q6_K to f32 as ggml's `dequantize_row_q6_K`: `d * sc * (q - 32)`.
pub fn dequantize_row_q6_k(x: &[BlockQ6_K], out: &mut [f32]) {
    for (b, o) in x.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let q = q6_k_values(b);
        for (i, v) in o.iter_mut().enumerate() {
            *v = d * b.scales[i / 16] as f32 * (q[i] as i32 - 32) as f32;
        }
    }
}

/// Quantise f32 weights to Q4_K: each sub-block of 32 gets scale `(max - min) / 15` and
/// offset `-min` (`min` clamped to at most 0, as ggml does), both stored as six-bit multiples
/// of the block's `d = max scale / 63` and `dmin = max offset / 63`; values round to the
/// nearest nibble under the stored scale and offset. For tests and converters.
pub fn quantize_row_q4_k(x: &[f32], out: &mut [BlockQ4_K]) {
    for (xb, ob) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut scales = [0.0f32; 8];
        let mut mins = [0.0f32; 8];
        for j in 0..8 {
            let s = &xb[32 * j..32 * j + 32];
            let min = s.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
            let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            scales[j] = (max - min) / 15.0;
            mins[j] = -min;
        }
        let max_scale = scales.iter().copied().fold(0.0f32, f32::max);
        let max_min = mins.iter().copied().fold(0.0f32, f32::max);
        let d = f16::from_f32(max_scale / 63.0);
        let dmin = f16::from_f32(max_min / 63.0);
        let (df, dminf) = (d.to_f32(), dmin.to_f32());
        let mut sc = [0u8; 8];
        let mut m = [0u8; 8];
        for j in 0..8 {
            sc[j] = if df > 0.0 {
                (scales[j] / df).round().clamp(0.0, 63.0) as u8
            } else {
                0
            };
            m[j] = if dminf > 0.0 {
                (mins[j] / dminf).round().clamp(0.0, 63.0) as u8
            } else {
                0
            };
        }
        ob.d = d;
        ob.dmin = dmin;
        ob.scales = [0; 12];
        for j in 0..4 {
            ob.scales[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            ob.scales[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            ob.scales[j + 8] = (sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4);
        }
        let mut q = [0u8; QK_K];
        for j in 0..8 {
            let step = df * sc[j] as f32;
            let off = dminf * m[j] as f32;
            for i in 32 * j..32 * j + 32 {
                q[i] = if step > 0.0 {
                    ((xb[i] + off) / step).round().clamp(0.0, 15.0) as u8
                } else {
                    0
                };
            }
        }
        for c in 0..4 {
            for i in 0..32 {
                ob.qs[32 * c + i] = q[64 * c + i] | (q[64 * c + 32 + i] << 4);
            }
        }
    }
}

/// Quantise f32 weights to Q6_K: each sub-block of 16 gets the scale that maps its value of
/// largest magnitude to -32, stored as an i8 multiple of the block's `d = max |scale| / 127`;
/// values round to the nearest step, clamped to -32..=31. For tests and converters.
pub fn quantize_row_q6_k(x: &[f32], out: &mut [BlockQ6_K]) {
    for (xb, ob) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut scales = [0.0f32; 16];
        for (k, s) in scales.iter_mut().enumerate() {
            let mut max = 0.0f32;
            for &v in &xb[16 * k..16 * k + 16] {
                if v.abs() > max.abs() {
                    max = v;
                }
            }
            *s = max / -32.0;
        }
        let amax = scales.iter().fold(0.0f32, |a, s| a.max(s.abs()));
        let d = f16::from_f32(amax / 127.0);
        let df = d.to_f32();
        let mut q = [0u8; QK_K];
        for (k, (&scale, stored)) in scales.iter().zip(ob.scales.iter_mut()).enumerate() {
            let sc = if df > 0.0 {
                (scale / df).round().clamp(-127.0, 127.0) as i8
            } else {
                0
            };
            *stored = sc;
            let step = df * sc as f32;
            for i in 16 * k..16 * k + 16 {
                let v = if step != 0.0 {
                    (xb[i] / step).round().clamp(-32.0, 31.0) as i32
                } else {
                    0
                };
                q[i] = (v + 32) as u8;
            }
        }
        ob.d = d;
        for h in 0..2 {
            let q = &q[128 * h..128 * h + 128];
            for i in 0..32 {
                ob.ql[64 * h + i] = (q[i] & 0x0f) | ((q[64 + i] & 0x0f) << 4);
                ob.ql[64 * h + 32 + i] = (q[32 + i] & 0x0f) | ((q[96 + i] & 0x0f) << 4);
                ob.qh[32 * h + i] = (q[i] >> 4)
                    | ((q[32 + i] >> 4) << 2)
                    | ((q[64 + i] >> 4) << 4)
                    | ((q[96 + i] >> 4) << 6);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        for (v, want) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (126.5, 126),
        ] {
            assert_eq!(nearest_int(v), want, "{v}");
        }
    }

    #[test]
    fn q8_k_maps_the_largest_magnitude_to_minus_127() {
        let mut x = [0.0f32; QK_K];
        x[3] = 2.0;
        x[7] = -1.0;
        x[20] = 0.5;
        let mut b = [BlockQ8_K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; 16],
        }];
        quantize_row_q8_k(&x, &mut b);
        assert_eq!(b[0].qs[3], -127);
        assert_eq!(b[0].qs[7], 64); // -1 * -63.5 = 63.5 rounds to the even 64
        assert_eq!(b[0].qs[20], -32); // 0.5 * -63.5 = -31.75
        assert_eq!(b[0].bsums[0], -127 + 64);
        assert_eq!(b[0].bsums[1], -32);
        assert_eq!(b[0].d, 1.0 / (-127.0 / 2.0));
    }

    #[test]
    fn q4_k_scale_packing_round_trips() {
        // Every six-bit value in every position.
        for base in 0..64u8 {
            let sc: [u8; 8] = std::array::from_fn(|j| (base + 7 * j as u8) % 64);
            let m: [u8; 8] = std::array::from_fn(|j| (base + 11 * j as u8 + 3) % 64);
            let mut s = [0u8; 12];
            for j in 0..4 {
                s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
                s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
                s[j + 8] = (sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4);
            }
            for j in 0..8 {
                assert_eq!(q4_k_scale_min(&s, j), (sc[j], m[j]), "base {base} j {j}");
            }
        }
    }
}
