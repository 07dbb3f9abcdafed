//! Scalar dot products of one weight row with one activation row (`k` values each).
//!
//! Every kernel here fixes the order of its floating-point operations, and the SIMD kernels
//! (`x86::avx2`, `x86::avx512`) follow the same order, so all instruction sets give bit-identical
//! results. The order is llama.cpp's AVX2 order, which makes our logits reproduce llama.cpp's:
//!
//! - quantised blocks (Q4_0, Q4_1, Q5_0, Q8_0): each 32-value block gives 8 integer partial sums (lane `l` sums values
//!   `4l..4l+4`); lane `l` of an 8-lane f32 accumulator takes `fma(lane sum, d_x * d_y, acc)`
//!   block after block; the lanes are then reduced by [`hsum8`]. Q4_1 adds `m_x * s_y` per block
//!   into a separate f32 sum, added last.
//! - K-quants (Q4_K, Q6_K against Q8_K): see `scalar::k_quants`.
//! - f16 / f32 rows: four 8-lane accumulators over steps of 32 values (`fma(x, y, acc)`), reduced
//!   by [`reduce_4x8`] into an f64, plus any tail of fewer than 32 values added in f64.

use crate::formats::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1, QK};
use crate::seg_rows::SegRows;
use half::{bf16, f16};

/// Values per step of the f16 / f32 dot products (4 accumulators of 8 lanes).
pub const STEP: usize = 32;

/// Horizontal sum of 8 lanes: `((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7))`.
pub fn hsum8(a: &[f32; 8]) -> f32 {
    let r = [a[4] + a[0], a[5] + a[1], a[6] + a[2], a[7] + a[3]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// Reduce four 8-lane accumulators: `(acc0 + acc2) + (acc1 + acc3)` lane-wise, then the halves
/// lane-wise, then pairwise: `(t0 + t1) + (t2 + t3)`.
pub fn reduce_4x8(acc: &[[f32; 8]; 4]) -> f32 {
    let mut x = [0.0f32; 8];
    for l in 0..8 {
        x[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let t = [x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

/// The 8 lane sums of one block: `lane[l] = sum(x[4l..4l+4] * y[4l..4l+4])`.
fn lane_sums(x: &[i32; QK], y: &[i8; QK]) -> [f32; 8] {
    let mut lanes = [0.0f32; 8];
    for (l, lane) in lanes.iter_mut().enumerate() {
        let s: i32 = (4 * l..4 * l + 4).map(|i| x[i] * y[i] as i32).sum();
        *lane = s as f32;
    }
    lanes
}

fn fma_lanes(acc: &mut [f32; 8], lanes: &[f32; 8], d: f32) {
    for (a, s) in acc.iter_mut().zip(lanes) {
        *a = s.mul_add(d, *a);
    }
}

/// Nibbles in llama.cpp's order: low nibbles are values 0..16, high nibbles 16..32.
fn nibbles(qs: &[u8; QK / 2], offset: i32) -> [i32; QK] {
    let mut v = [0i32; QK];
    for j in 0..QK / 2 {
        v[j] = (qs[j] & 0x0f) as i32 - offset;
        v[j + QK / 2] = (qs[j] >> 4) as i32 - offset;
    }
    v
}

pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (bx, by) in x.iter().zip(y) {
        let lanes = lane_sums(&nibbles(&bx.qs, 8), &by.qs);
        fma_lanes(&mut acc, &lanes, bx.d.to_f32() * by.d.to_f32());
    }
    hsum8(&acc)
}

/// Q5_0 values in llama.cpp's order, `q - 16` (elements j and j + 16 share `qs[j]`).
pub(crate) fn q5_0_values(b: &BlockQ5_0) -> [i32; QK] {
    let qh = u32::from_le_bytes(b.qh);
    let mut v = [0i32; QK];
    for j in 0..QK / 2 {
        let hi0 = ((qh >> j) & 1) << 4;
        let hi1 = ((qh >> (j + QK / 2)) & 1) << 4;
        v[j] = ((b.qs[j] & 0x0f) as u32 | hi0) as i32 - 16;
        v[j + QK / 2] = ((b.qs[j] >> 4) as u32 | hi1) as i32 - 16;
    }
    v
}

/// Q5_0 weights against Q8_0 activations: the Q4_0 order (lane sums, one FMA per block).
pub fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (bx, by) in x.iter().zip(y) {
        let lanes = lane_sums(&q5_0_values(bx), &by.qs);
        fma_lanes(&mut acc, &lanes, bx.d.to_f32() * by.d.to_f32());
    }
    hsum8(&acc)
}

pub fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        summs += bx.m.to_f32() * by.s.to_f32();
        let lanes = lane_sums(&nibbles(&bx.qs, 0), &by.qs);
        fma_lanes(&mut acc, &lanes, bx.d.to_f32() * by.d.to_f32());
    }
    hsum8(&acc) + summs
}

pub fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (bx, by) in x.iter().zip(y) {
        let xq: [i32; QK] = std::array::from_fn(|i| bx.qs[i] as i32);
        let lanes = lane_sums(&xq, &by.qs);
        fma_lanes(&mut acc, &lanes, bx.d.to_f32() * by.d.to_f32());
    }
    hsum8(&acc)
}

/// Dot product of two f32 sequences in the fixed order described in the module docs.
fn dot_steps(n: usize, x: impl Fn(usize) -> f32, y: impl Fn(usize) -> f32) -> f32 {
    let np = n - n % STEP;
    let mut acc = [[0.0f32; 8]; 4];
    for i in (0..np).step_by(STEP) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, lane) in a.iter_mut().enumerate() {
                let k = i + j * 8 + l;
                *lane = x(k).mul_add(y(k), *lane);
            }
        }
    }
    let mut sum = reduce_4x8(&acc) as f64;
    for k in np..n {
        sum += (x(k) * y(k)) as f64;
    }
    sum as f32
}

pub fn vec_dot_f16(x: &[f16], y: &[f16]) -> f32 {
    dot_steps(x.len().min(y.len()), |i| x[i].to_f32(), |i| y[i].to_f32())
}

pub fn vec_dot_bf16(x: &[bf16], y: &[bf16]) -> f32 {
    let mut sum = 0.0f64;
    for (a, b) in x.iter().zip(y) {
        sum += (a.to_f32() * b.to_f32()) as f64;
    }
    sum as f32
}

pub fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    dot_steps(x.len().min(y.len()), |i| x[i], |i| y[i])
}

/// Dot product in the 8-lane order of a matrix-matrix product (llama.cpp's f16 GEMM): lane `l`
/// takes values `l, l + 8, l + 16, ...` with one fused multiply-add each, then [`hsum8`].
/// `x.len()` must be a multiple of 8.
pub fn vec_dot_f16_gemm(x: &[f16], y: &[f16]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (xs, ys) in x.chunks_exact(8).zip(y.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = xs[l].to_f32().mul_add(ys[l].to_f32(), acc[l]);
        }
    }
    hsum8(&acc)
}

/// `out[j]` = the f16 dot product of row `j` (`x.len()` values of `rows`, contiguous or in
/// segments) with `x`, in [`vec_dot_f16_gemm`]'s order (`gemm`, with each row's values from
/// `valid` on taken as +0: the zero padding of a value column past the attended positions,
/// which a batch's later tokens occupy) or [`vec_dot_f16`]'s (`valid` ignored: every value
/// counts). `x` holds f16 values widened to f32 (exactly), as attention has them. The order
/// runs over the positions whatever the segments, so segmented rows give the bits of the same
/// rows stored contiguously.
pub fn dot_f16_rows(rows: SegRows<'_>, x: &[f32], gemm: bool, valid: usize, out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        let at = |i: usize| rows.at(j, i).to_f32();
        *o = if gemm {
            let mut acc = [0.0f32; 8];
            for (c, xs) in x.chunks_exact(8).enumerate() {
                for l in 0..8 {
                    let i = c * 8 + l;
                    let v = if i < valid { at(i) } else { 0.0 };
                    acc[l] = v.mul_add(xs[l], acc[l]);
                }
            }
            hsum8(&acc)
        } else {
            dot_steps(x.len(), at, |i| x[i])
        };
    }
}

/// Four activation rows against one weight row; each output exactly as the one-row kernel.
pub fn vec_dot4_q4_0_q8_0(x: &[BlockQ4_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
    y.map(|y| vec_dot_q4_0_q8_0(x, y))
}

/// As [`vec_dot4_q4_0_q8_0`].
pub fn vec_dot4_q4_1_q8_1(x: &[BlockQ4_1], y: [&[BlockQ8_1]; 4]) -> [f32; 4] {
    y.map(|y| vec_dot_q4_1_q8_1(x, y))
}

/// As [`vec_dot4_q4_0_q8_0`].
pub fn vec_dot4_q8_0_q8_0(x: &[BlockQ8_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
    y.map(|y| vec_dot_q8_0_q8_0(x, y))
}
