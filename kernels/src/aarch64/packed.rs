//! Eight-row kernels over repacked weights ([`BlockQ4_1x8`], [`BlockQ8_0x8`]), NEON and
//! dotprod; the AArch64 counterpart of `x86::packed`, in the same order.
//!
//! A pair of 128-bit registers holds the same lane of the 8-lane accumulator of eight weight
//! rows (rows 0..4 and 4..8): 16 bytes of a packed group are four bytes of each of four rows, so
//! one lane sum per row (`neon::quads` or `sdot`) against the activation's four bytes for that
//! lane, broadcast, gives exactly the one-row kernel's integer lane sums. The f32 work (scale
//! products, one fused multiply-add per lane and block, `hsum8`'s order lane-wise, Q4_1's
//! `m_x * s_y` added last) is the scalar reference's, so the bits are `scalar::dot`'s.

/// The two eight-row kernels for the lane sums `$quads` and the target features `$features`.
macro_rules! packed_gemms {
    ($q4_1:ident, $q8_0:ident, $features:literal, $quads:path) => {
        /// `out[t * ldo + r]` = row `r` of `w` times activation row `t`, for `t < a.n`.
        ///
        /// # Safety
        /// The CPU must have the features enabled below; `w.len() == a.nb`, `a` consistent
        /// (with `s`), and `out` valid for `(a.n - 1) * ldo + 8` writes.
        #[target_feature(enable = $features)]
        pub unsafe fn $q4_1(
            w: &[BlockQ4_1x8],
            a: &ActRows<'_, BlockQ8_1>,
            out: *mut f32,
            ldo: usize,
        ) {
            let nb = w.len();
            let mask = vdupq_n_u8(0x0f);
            for t in 0..a.n {
                let yq = a.q.as_ptr().add(t * nb);
                let yd = a.d.as_ptr().add(t * nb);
                let ys = a.s.as_ptr().add(t * nb);
                let mut acc = [F32x8::zero(); 8];
                let mut summs = F32x8::zero();
                for (b, wb) in w.iter().enumerate() {
                    let d = scales(&wb.d, *yd.add(b));
                    let m = scales(&wb.m, *ys.add(b));
                    summs.lo = vaddq_f32(summs.lo, m.lo);
                    summs.hi = vaddq_f32(summs.hi, m.hi);
                    let y4 = (*yq.add(b)).qs.as_ptr() as *const i32;
                    let q = wb.qs.as_ptr();
                    for j in 0..4 {
                        let y_lo = vreinterpretq_s8_s32(vdupq_n_s32(y4.add(j).read_unaligned()));
                        let y_hi =
                            vreinterpretq_s8_s32(vdupq_n_s32(y4.add(4 + j).read_unaligned()));
                        let r0 = vld1q_u8(q.add(32 * j));
                        let r1 = vld1q_u8(q.add(32 * j + 16));
                        let lo0 = vreinterpretq_s8_u8(vandq_u8(r0, mask));
                        let lo1 = vreinterpretq_s8_u8(vandq_u8(r1, mask));
                        let hi0 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(r0));
                        let hi1 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(r1));
                        acc[j].fma_rows($quads(lo0, y_lo), $quads(lo1, y_lo), d);
                        acc[j + 4].fma_rows($quads(hi0, y_hi), $quads(hi1, y_hi), d);
                    }
                }
                let s = hsum8_rows(&acc);
                vst1q_f32(out.add(t * ldo), vaddq_f32(s.lo, summs.lo));
                vst1q_f32(out.add(t * ldo + 4), vaddq_f32(s.hi, summs.hi));
            }
        }

        /// As the Q4_1 kernel above, for Q8_0 weights (signed bytes).
        ///
        /// # Safety
        /// As the Q4_1 kernel above (`a` needs no `s`).
        #[target_feature(enable = $features)]
        pub unsafe fn $q8_0(
            w: &[BlockQ8_0x8],
            a: &ActRows<'_, BlockQ8_0>,
            out: *mut f32,
            ldo: usize,
        ) {
            let nb = w.len();
            for t in 0..a.n {
                let yq = a.q.as_ptr().add(t * nb);
                let yd = a.d.as_ptr().add(t * nb);
                let mut acc = [F32x8::zero(); 8];
                for (b, wb) in w.iter().enumerate() {
                    let d = scales(&wb.d, *yd.add(b));
                    let y4 = (*yq.add(b)).qs.as_ptr() as *const i32;
                    let q = wb.qs.as_ptr();
                    for (j, a) in acc.iter_mut().enumerate() {
                        let y = vreinterpretq_s8_s32(vdupq_n_s32(y4.add(j).read_unaligned()));
                        let x0 = vld1q_s8(q.add(32 * j));
                        let x1 = vld1q_s8(q.add(32 * j + 16));
                        a.fma_rows($quads(x0, y), $quads(x1, y), d);
                    }
                }
                let s = hsum8_rows(&acc);
                vst1q_f32(out.add(t * ldo), s.lo);
                vst1q_f32(out.add(t * ldo + 4), s.hi);
            }
        }
    };
}

use super::neon::{f16x4, F32x8};
use crate::formats::{BlockQ4_1x8, BlockQ8_0, BlockQ8_0x8, BlockQ8_1};
use crate::scalar::packed::ActRows;
use core::arch::aarch64::*;

impl F32x8 {
    /// Eight rows' lane: `lane = fma(sum as f32, d, lane)` for each row (`d` per row).
    #[inline(always)]
    unsafe fn fma_rows(&mut self, lo: int32x4_t, hi: int32x4_t, d: F32x8) {
        self.lo = vfmaq_f32(self.lo, vcvtq_f32_s32(lo), d.lo);
        self.hi = vfmaq_f32(self.hi, vcvtq_f32_s32(hi), d.hi);
    }
}

/// The eight rows' f16 scales times the activation's `y`.
#[inline(always)]
unsafe fn scales(w: &[half::f16; 8], y: f32) -> F32x8 {
    let y = vdupq_n_f32(y);
    F32x8 {
        lo: vmulq_f32(f16x4(w.as_ptr()), y),
        hi: vmulq_f32(f16x4(w.as_ptr().add(4)), y),
    }
}

/// `hsum8` of every row, lane-wise: `((a4 + a0) + (a6 + a2)) + ((a5 + a1) + (a7 + a3))`.
#[inline(always)]
unsafe fn hsum8_rows(a: &[F32x8; 8]) -> F32x8 {
    let half = |f: fn(&F32x8) -> float32x4_t| {
        let r0 = vaddq_f32(f(&a[4]), f(&a[0]));
        let r1 = vaddq_f32(f(&a[5]), f(&a[1]));
        let r2 = vaddq_f32(f(&a[6]), f(&a[2]));
        let r3 = vaddq_f32(f(&a[7]), f(&a[3]));
        vaddq_f32(vaddq_f32(r0, r2), vaddq_f32(r1, r3))
    };
    F32x8 {
        lo: half(|v| v.lo),
        hi: half(|v| v.hi),
    }
}

packed_gemms!(
    gemm_q4_1x8_q8_1_neon,
    gemm_q8_0x8_q8_0_neon,
    "neon",
    super::neon::quads
);
packed_gemms!(
    gemm_q4_1x8_q8_1_dotprod,
    gemm_q8_0x8_q8_0_dotprod,
    "neon,dotprod",
    super::dotprod::quads
);
