//! K-quant dot products (Q4_K and Q6_K weights against Q8_K activations), NEON and dotprod;
//! the AArch64 counterpart of `x86::avx2_kquants`, in `scalar::k_quants`' order.
//!
//! Only the integer work is vectorised: the values are unpacked sixteen at a time and their
//! lane sums come from `neon::quads` or `sdot`; every sum that the scalar order keeps as an
//! integer is the same exact integer here, and the few f32 operations per super-block (the
//! scale products, the fused multiply-adds, Q6_K's 8-lane `hsum8`) are the scalar ones.

/// The K-quant kernels for the lane sums `$quads` and the target features `$features`.
macro_rules! kquant_dots {
    ($features:literal, $quads:path) => {
        use core::arch::aarch64::*;
        use $crate::aarch64::neon::{h2f, F32x8};
        use $crate::formats::{BlockQ4_K, BlockQ6_K, BlockQ8_K};
        use $crate::scalar::k_quants::q4_k_scale_min;

        /// Q4_K in `PIECES` fused multiply-adds per super-block (`scalar::k_quants::dot_q4_k`).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dot_q4_k<const PIECES: usize>(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
            let (mut acc, mut acc_m) = (0.0f32, 0.0f32);
            let mask = vdupq_n_u8(0x0f);
            for (bx, by) in x.iter().zip(y) {
                let d = h2f(bx.d) * by.d;
                let dmin = h2f(bx.dmin) * by.d;
                // The exact dot product of each 32-value sub-block.
                let mut dots = [0i32; 8];
                for c in 0..4 {
                    let q = bx.qs.as_ptr().add(32 * c);
                    let (v0, v1) = (vld1q_u8(q), vld1q_u8(q.add(16)));
                    let yq = by.qs.as_ptr().add(64 * c);
                    let y: [int8x16_t; 4] = std::array::from_fn(|k| vld1q_s8(yq.add(16 * k)));
                    let lo0 = vreinterpretq_s8_u8(vandq_u8(v0, mask));
                    let lo1 = vreinterpretq_s8_u8(vandq_u8(v1, mask));
                    let hi0 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v0));
                    let hi1 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v1));
                    dots[2 * c] = vaddvq_s32(vaddq_s32($quads(lo0, y[0]), $quads(lo1, y[1])));
                    dots[2 * c + 1] = vaddvq_s32(vaddq_s32($quads(hi0, y[2]), $quads(hi1, y[3])));
                }
                let per = 8 / PIECES;
                for p in 0..PIECES {
                    let (mut sumi, mut summ) = (0i32, 0i32);
                    for j in p * per..p * per + per {
                        let (sc, m) = q4_k_scale_min(&bx.scales, j);
                        sumi += sc as i32 * dots[j];
                        summ += m as i32 * (by.bsums[2 * j] as i32 + by.bsums[2 * j + 1] as i32);
                    }
                    acc = (sumi as f32).mul_add(d, acc);
                    acc_m = (summ as f32).mul_add(dmin, acc_m);
                }
            }
            acc - acc_m
        }

        /// One Q4_K row times one Q8_K row, in llama.cpp's one-row order.
        ///
        /// # Safety
        /// The CPU must have the features enabled below.
        #[target_feature(enable = $features)]
        pub unsafe fn vec_dot_q4_k_q8_k(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
            dot_q4_k::<1>(x, y)
        }

        /// One Q4_K row times four Q8_K rows, each in llama.cpp's four-row order.
        ///
        /// # Safety
        /// As [`vec_dot_q4_k_q8_k`].
        #[target_feature(enable = $features)]
        pub unsafe fn vec_dot4_q4_k_q8_k(x: &[BlockQ4_K], y: [&[BlockQ8_K]; 4]) -> [f32; 4] {
            y.map(|y| dot_q4_k::<4>(x, y))
        }

        /// The sixteen groups of sixteen Q6_K values (0..63) of one block, in value order.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn q6_k_groups(b: &BlockQ6_K) -> [uint8x16_t; 16] {
            let (m4, m3) = (vdupq_n_u8(0x0f), vdupq_n_u8(3));
            let mut g = [vdupq_n_u8(0); 16];
            for h in 0..2 {
                for half in 0..2 {
                    let i0 = 16 * half;
                    let qh = vld1q_u8(b.qh.as_ptr().add(32 * h + i0));
                    let ql_a = vld1q_u8(b.ql.as_ptr().add(64 * h + i0));
                    let ql_b = vld1q_u8(b.ql.as_ptr().add(64 * h + 32 + i0));
                    let bits = |s: u8| match s {
                        0 => vshlq_n_u8::<4>(vandq_u8(qh, m3)),
                        2 => vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(qh), m3)),
                        4 => vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(qh), m3)),
                        _ => vshlq_n_u8::<4>(vshrq_n_u8::<6>(qh)),
                    };
                    // Values 128h + 32m + i0 .. +16 for m = 0..4.
                    let base = 8 * h + half;
                    g[base] = vorrq_u8(vandq_u8(ql_a, m4), bits(0));
                    g[base + 2] = vorrq_u8(vandq_u8(ql_b, m4), bits(2));
                    g[base + 4] = vorrq_u8(vshrq_n_u8::<4>(ql_a), bits(4));
                    g[base + 6] = vorrq_u8(vshrq_n_u8::<4>(ql_b), bits(6));
                }
            }
            g
        }

        /// One Q6_K row times one Q8_K row, in llama.cpp's order.
        ///
        /// # Safety
        /// As [`vec_dot_q4_k_q8_k`].
        #[target_feature(enable = $features)]
        pub unsafe fn vec_dot_q6_k_q8_k(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
            let mut acc = F32x8::zero();
            for (bx, by) in x.iter().zip(y) {
                let d = by.d * h2f(bx.d);
                let g = q6_k_groups(bx);
                // Group k (values 16k..16k+16) feeds lanes 0..4 (k even) or 4..8 (k odd).
                let (mut lo, mut hi) = (vdupq_n_s32(0), vdupq_n_s32(0));
                for (k, gk) in g.iter().enumerate() {
                    let yk = vld1q_s8(by.qs.as_ptr().add(16 * k));
                    let s = $quads(vreinterpretq_s8_u8(*gk), yk);
                    let scale = bx.scales[k] as i32;
                    if k % 2 == 0 {
                        lo = vmlaq_n_s32(lo, s, scale);
                    } else {
                        hi = vmlaq_n_s32(hi, s, scale);
                    }
                }
                let offs: [i32; 8] = std::array::from_fn(|l| {
                    32 * (bx.scales[2 * l] as i32 * by.bsums[2 * l] as i32
                        + bx.scales[2 * l + 1] as i32 * by.bsums[2 * l + 1] as i32)
                });
                lo = vsubq_s32(lo, vld1q_s32(offs.as_ptr()));
                hi = vsubq_s32(hi, vld1q_s32(offs.as_ptr().add(4)));
                acc.fma_lanes(lo, hi, vdupq_n_f32(d));
            }
            acc.hsum()
        }

        /// One Q6_K row times one Q8_K row in the order of llama.cpp's tiled GEMM.
        ///
        /// # Safety
        /// As [`vec_dot_q4_k_q8_k`].
        #[target_feature(enable = $features)]
        pub unsafe fn vec_dot_q6_k_q8_k_tiled(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
            let mut acc = 0.0f32;
            let offset = vdupq_n_s8(32);
            for (bx, by) in x.iter().zip(y) {
                let g = q6_k_groups(bx);
                let mut total = 0i32;
                for (k, gk) in g.iter().enumerate() {
                    let yk = vld1q_s8(by.qs.as_ptr().add(16 * k));
                    let q = vsubq_s8(vreinterpretq_s8_u8(*gk), offset);
                    total += bx.scales[k] as i32 * vaddvq_s32($quads(q, yk));
                }
                acc = (h2f(bx.d) * total as f32).mul_add(by.d, acc);
            }
            acc
        }
    };
}

/// With NEON lane sums.
pub mod neon {
    kquant_dots!("neon", crate::aarch64::neon::quads);
}

/// With `sdot` lane sums.
pub mod dotprod {
    kquant_dots!("neon,dotprod", crate::aarch64::dotprod::quads);
}
