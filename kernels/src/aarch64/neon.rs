//! Advanced SIMD (NEON) kernels, in the operation order `scalar::dot` and
//! `scalar::activation` document, so results are bit-identical to the scalar reference (and to
//! the x86 paths). Structurally parallel to `x86::avx2`: where AVX2 holds an 8-lane accumulator
//! in one 256-bit register, NEON holds it in a pair of 128-bit ones ([`F32x8`]).

use crate::formats::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1, QK};
use crate::scalar::activation::{silu_libm, C, LN2_HI, LN2_LO, LOG2E};
use crate::scalar::dot::STEP;
use crate::seg_rows::SegRows;
use core::arch::aarch64::*;
use core::arch::asm;
use half::f16;

/// Four f16 values widened to f32 (FCVTL, exact).
#[inline(always)]
pub(super) unsafe fn f16x4(p: *const f16) -> float32x4_t {
    let h = vld1_u16(p as *const u16);
    let out: float32x4_t;
    asm!("fcvtl {o:v}.4s, {i:v}.4h", o = lateout(vreg) out, i = in(vreg) h,
         options(pure, nomem, nostack, preserves_flags));
    out
}

/// One f16 widened to f32 (FCVT, exact).
#[inline(always)]
pub(super) unsafe fn h2f(h: f16) -> f32 {
    let out: f32;
    asm!("fcvt {o:s}, {i:h}", o = lateout(vreg) out, i = in(vreg) f32::from_bits(h.to_bits() as u32),
         options(pure, nomem, nostack, preserves_flags));
    out
}

/// An 8-lane f32 accumulator of the scalar order: lanes 0..4 in `lo`, 4..8 in `hi`.
#[derive(Clone, Copy)]
pub struct F32x8 {
    pub lo: float32x4_t,
    pub hi: float32x4_t,
}

impl F32x8 {
    #[inline(always)]
    pub unsafe fn zero() -> Self {
        F32x8 {
            lo: vdupq_n_f32(0.0),
            hi: vdupq_n_f32(0.0),
        }
    }

    /// `lane = fma(sum as f32, d, lane)` for the eight integer lane sums of one block.
    #[inline(always)]
    pub unsafe fn fma_lanes(&mut self, lo: int32x4_t, hi: int32x4_t, d: float32x4_t) {
        self.lo = vfmaq_f32(self.lo, vcvtq_f32_s32(lo), d);
        self.hi = vfmaq_f32(self.hi, vcvtq_f32_s32(hi), d);
    }

    /// `scalar::dot::hsum8`: `((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7))`.
    #[inline(always)]
    pub unsafe fn hsum(self) -> f32 {
        let r = vaddq_f32(self.hi, self.lo);
        let t = vadd_f32(vget_low_f32(r), vget_high_f32(r));
        vget_lane_f32::<0>(t) + vget_lane_f32::<1>(t)
    }
}

/// `scalar::dot::reduce_4x8` of four accumulators.
#[inline(always)]
unsafe fn reduce_4x8(acc: &[F32x8; 4]) -> f32 {
    let lo = vaddq_f32(
        vaddq_f32(acc[0].lo, acc[2].lo),
        vaddq_f32(acc[1].lo, acc[3].lo),
    );
    let hi = vaddq_f32(
        vaddq_f32(acc[0].hi, acc[2].hi),
        vaddq_f32(acc[1].hi, acc[3].hi),
    );
    let t = vaddq_f32(lo, hi);
    let p = vpaddq_f32(t, t);
    vgetq_lane_f32::<0>(p) + vgetq_lane_f32::<1>(p)
}

/// Four lane sums of 16 signed byte products: lane `l` sums products `4l..4l+4` (exact:
/// `smull` widens to i16, two pairwise adds to i32).
#[inline(always)]
pub unsafe fn quads(x: int8x16_t, y: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(x), vget_low_s8(y));
    let hi = vmull_high_s8(x, y);
    vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi))
}

/// 16 packed nibbles: the low nibbles (values 0..16) and the high nibbles (16..32).
#[inline(always)]
pub unsafe fn nibbles(qs: &[u8; QK / 2]) -> (uint8x16_t, uint8x16_t) {
    let v = vld1q_u8(qs.as_ptr());
    (vandq_u8(v, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(v))
}

/// The 32 signed bytes of a block's `qs` (values 0..16, 16..32).
#[inline(always)]
pub unsafe fn load32(qs: &[i8; QK]) -> (int8x16_t, int8x16_t) {
    (vld1q_s8(qs.as_ptr()), vld1q_s8(qs.as_ptr().add(16)))
}

/// A Q5_0 block's values minus 16 (`scalar::dot::q5_0_values`): bit `j` of `qh` is the fifth
/// bit of value `j`.
#[inline(always)]
pub unsafe fn q5_0_values(b: &BlockQ5_0) -> (int8x16_t, int8x16_t) {
    const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bits = vld1q_u8(BITS.as_ptr());
    let (lo, hi) = nibbles(&b.qs);
    let set0 = vtstq_u8(vcombine_u8(vdup_n_u8(b.qh[0]), vdup_n_u8(b.qh[1])), bits);
    let set1 = vtstq_u8(vcombine_u8(vdup_n_u8(b.qh[2]), vdup_n_u8(b.qh[3])), bits);
    let sixteen = vdupq_n_u8(16);
    let v0 = vorrq_u8(lo, vandq_u8(set0, sixteen));
    let v1 = vorrq_u8(hi, vandq_u8(set1, sixteen));
    let s16 = vdupq_n_s8(16);
    (
        vsubq_s8(vreinterpretq_s8_u8(v0), s16),
        vsubq_s8(vreinterpretq_s8_u8(v1), s16),
    )
}

/// The one-row quantised dot products (Q4_0, Q4_1, Q5_0, Q8_0 weights), for the integer lane
/// sums `$quads` (exact for either instruction set) and the target features `$features`.
macro_rules! quantised_dots {
    ($features:literal, $quads:path) => {
        use core::arch::aarch64::*;
        use $crate::aarch64::neon::{h2f, load32, nibbles, q5_0_values, F32x8};
        use $crate::formats::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1};

        /// # Safety
        /// The CPU must have the features enabled below.
        #[target_feature(enable = $features)]
        pub unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = F32x8::zero();
            let eight = vdupq_n_s8(8);
            for (bx, by) in x.iter().zip(y) {
                let (lo, hi) = nibbles(&bx.qs);
                let x0 = vsubq_s8(vreinterpretq_s8_u8(lo), eight);
                let x1 = vsubq_s8(vreinterpretq_s8_u8(hi), eight);
                let (y0, y1) = load32(&by.qs);
                let d = vdupq_n_f32(h2f(bx.d) * h2f(by.d));
                acc.fma_lanes($quads(x0, y0), $quads(x1, y1), d);
            }
            acc.hsum()
        }

        /// # Safety
        /// As [`vec_dot_q4_0_q8_0`].
        #[target_feature(enable = $features)]
        pub unsafe fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = F32x8::zero();
            for (bx, by) in x.iter().zip(y) {
                let (x0, x1) = q5_0_values(bx);
                let (y0, y1) = load32(&by.qs);
                let d = vdupq_n_f32(h2f(bx.d) * h2f(by.d));
                acc.fma_lanes($quads(x0, y0), $quads(x1, y1), d);
            }
            acc.hsum()
        }

        /// # Safety
        /// As [`vec_dot_q4_0_q8_0`].
        #[target_feature(enable = $features)]
        pub unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
            let mut acc = F32x8::zero();
            let mut summs = 0.0f32;
            for (bx, by) in x.iter().zip(y) {
                summs += h2f(bx.m) * h2f(by.s);
                let (lo, hi) = nibbles(&bx.qs);
                let (y0, y1) = load32(&by.qs);
                let d = vdupq_n_f32(h2f(bx.d) * h2f(by.d));
                acc.fma_lanes(
                    $quads(vreinterpretq_s8_u8(lo), y0),
                    $quads(vreinterpretq_s8_u8(hi), y1),
                    d,
                );
            }
            acc.hsum() + summs
        }

        /// # Safety
        /// As [`vec_dot_q4_0_q8_0`].
        #[target_feature(enable = $features)]
        pub unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = F32x8::zero();
            for (bx, by) in x.iter().zip(y) {
                let (x0, x1) = load32(&bx.qs);
                let (y0, y1) = load32(&by.qs);
                let d = vdupq_n_f32(h2f(bx.d) * h2f(by.d));
                acc.fma_lanes($quads(x0, y0), $quads(x1, y1), d);
            }
            acc.hsum()
        }
    };
}
pub(crate) use quantised_dots;

/// The quantised dot products with NEON lane sums ([`quads`]).
pub mod dots {
    super::quantised_dots!("neon", crate::aarch64::neon::quads);
}
pub use dots::{vec_dot_q4_0_q8_0, vec_dot_q4_1_q8_1, vec_dot_q5_0_q8_0, vec_dot_q8_0_q8_0};

/// Values the f16 / f32 dot products load four at a time.
trait Lanes: Copy {
    unsafe fn load4(p: *const Self) -> float32x4_t;
    fn widen(self) -> f32;
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn load4(p: *const f32) -> float32x4_t {
        vld1q_f32(p)
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Lanes for f16 {
    #[inline(always)]
    unsafe fn load4(p: *const f16) -> float32x4_t {
        f16x4(p)
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// `scalar::dot::dot_steps` over the first `n` values of `x` and `y` (both at least `n` long).
#[inline(always)]
unsafe fn dot_steps<X: Lanes, Y: Lanes>(x: &[X], y: &[Y], n: usize) -> f32 {
    let np = n - n % STEP;
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut acc = [F32x8::zero(); 4];
    let mut i = 0;
    while i < np {
        for (j, a) in acc.iter_mut().enumerate() {
            let k = i + 8 * j;
            a.lo = vfmaq_f32(a.lo, X::load4(px.add(k)), Y::load4(py.add(k)));
            a.hi = vfmaq_f32(a.hi, X::load4(px.add(k + 4)), Y::load4(py.add(k + 4)));
        }
        i += STEP;
    }
    let mut sum = reduce_4x8(&acc) as f64;
    for k in np..n {
        sum += (x[k].widen() * y[k].widen()) as f64;
    }
    sum as f32
}

/// # Safety
/// The CPU must support NEON (every AArch64 CPU does).
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_f16(x: &[f16], y: &[f16]) -> f32 {
    dot_steps(x, y, x.len().min(y.len()))
}

/// # Safety
/// As [`vec_dot_f16`].
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    dot_steps(x, y, x.len().min(y.len()))
}

/// `scalar::dot::vec_dot_f16_gemm` (`x.len()` a multiple of 8).
///
/// # Safety
/// As [`vec_dot_f16`].
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_f16_gemm(x: &[f16], y: &[f16]) -> f32 {
    let mut acc = F32x8::zero();
    for (xs, ys) in x.chunks_exact(8).zip(y.chunks_exact(8)) {
        let (px, py) = (xs.as_ptr(), ys.as_ptr());
        acc.lo = vfmaq_f32(acc.lo, f16x4(px), f16x4(py));
        acc.hi = vfmaq_f32(acc.hi, f16x4(px.add(4)), f16x4(py.add(4)));
    }
    acc.hsum()
}

/// `scalar::dot::dot_f16_rows`, one row at a time; the accumulators run on from one segment
/// of the rows to the next.
///
/// # Safety
/// As [`vec_dot_f16`]; the rows must hold `out.len()` rows of `x.len()` values
/// (`rows.covers(out.len(), x.len())`).
#[target_feature(enable = "neon")]
pub unsafe fn dot_f16_rows(
    rows: SegRows<'_>,
    x: &[f32],
    gemm: bool,
    valid: usize,
    out: &mut [f32],
) {
    let stride = rows.stride;
    let px = x.as_ptr();
    for (j, o) in out.iter_mut().enumerate() {
        *o = if gemm {
            let len = x.len() - x.len() % 8;
            let valid = valid.min(len);
            let full = valid - valid % 8;
            let mut acc = F32x8::zero();
            for (lo, hi, seg) in rows.runs(full) {
                let p = seg.as_ptr().wrapping_add(j * stride).wrapping_sub(lo);
                let mut i = lo;
                while i < hi {
                    let w = p.wrapping_add(i);
                    acc.lo = vfmaq_f32(acc.lo, f16x4(w), vld1q_f32(px.add(i)));
                    acc.hi = vfmaq_f32(acc.hi, f16x4(w.wrapping_add(4)), vld1q_f32(px.add(i + 4)));
                    i += 8;
                }
            }
            // The value column past `valid` is taken as +0, as in the reference.
            let mut i = full;
            while i < len {
                let v: [f32; 8] = std::array::from_fn(|l| {
                    if i + l < valid {
                        rows.at(j, i + l).to_f32()
                    } else {
                        0.0
                    }
                });
                acc.lo = vfmaq_f32(acc.lo, vld1q_f32(v.as_ptr()), vld1q_f32(px.add(i)));
                acc.hi = vfmaq_f32(
                    acc.hi,
                    vld1q_f32(v.as_ptr().add(4)),
                    vld1q_f32(px.add(i + 4)),
                );
                i += 8;
            }
            acc.hsum()
        } else {
            // `dot_steps`, over the segments.
            let n = x.len();
            let np = n - n % STEP;
            let mut acc = [F32x8::zero(); 4];
            for (lo, hi, seg) in rows.runs(np) {
                let p = seg.as_ptr().wrapping_add(j * stride).wrapping_sub(lo);
                let mut i = lo;
                while i < hi {
                    for (q, a) in acc.iter_mut().enumerate() {
                        let k = i + 8 * q;
                        a.lo = vfmaq_f32(a.lo, f16x4(p.wrapping_add(k)), vld1q_f32(px.add(k)));
                        a.hi =
                            vfmaq_f32(a.hi, f16x4(p.wrapping_add(k + 4)), vld1q_f32(px.add(k + 4)));
                    }
                    i += STEP;
                }
            }
            let mut sum = reduce_4x8(&acc) as f64;
            for (k, xk) in x.iter().enumerate().skip(np) {
                sum += (rows.at(j, k).to_f32() * xk) as f64;
            }
            sum as f32
        };
    }
}

/// Four activation rows against one weight row, each exactly as the one-row kernel.
///
/// # Safety
/// As [`vec_dot_f16`].
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot4_q4_0_q8_0(x: &[BlockQ4_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
    y.map(|y| vec_dot_q4_0_q8_0(x, y))
}

/// As [`vec_dot4_q4_0_q8_0`].
///
/// # Safety
/// As [`vec_dot_f16`].
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot4_q4_1_q8_1(x: &[BlockQ4_1], y: [&[BlockQ8_1]; 4]) -> [f32; 4] {
    y.map(|y| vec_dot_q4_1_q8_1(x, y))
}

/// As [`vec_dot4_q4_0_q8_0`].
///
/// # Safety
/// As [`vec_dot_f16`].
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot4_q8_0_q8_0(x: &[BlockQ8_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
    y.map(|y| vec_dot_q8_0_q8_0(x, y))
}

/// One block's 32 values, the largest magnitude (`scalar::quantize`'s fold: FMAXNM ignores NaN
/// as `f32::max` does, and a maximum does not depend on the order), and the quants
/// `round_half_even(v * id)` saturated to i8 (FCVTNS then saturating narrows: infinities give
/// ±127 / -128 and NaN 0, as the scalar `as i8` casts do).
#[inline(always)]
unsafe fn quantize_block(xb: &[f32], qs: *mut i8) -> (f32, i32) {
    let v: [float32x4_t; 8] = std::array::from_fn(|i| vld1q_f32(xb.as_ptr().add(4 * i)));
    let mut m = vabsq_f32(v[0]);
    for vi in &v[1..] {
        m = vmaxnmq_f32(m, vabsq_f32(*vi));
    }
    let max = vmaxnmvq_f32(m);
    let d = max / 127.0;
    let id = vdupq_n_f32(if max != 0.0 { 127.0 / max } else { 0.0 });
    let q: [int32x4_t; 8] = std::array::from_fn(|i| vcvtnq_s32_f32(vmulq_f32(v[i], id)));
    let mut sum = vdupq_n_s32(0);
    for k in 0..2 {
        let h0 = vcombine_s16(vqmovn_s32(q[4 * k]), vqmovn_s32(q[4 * k + 1]));
        let h1 = vcombine_s16(vqmovn_s32(q[4 * k + 2]), vqmovn_s32(q[4 * k + 3]));
        let b = vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1));
        vst1q_s8(qs.add(16 * k), b);
        // The sum of the stored (saturated) quants.
        sum = vaddq_s32(sum, vpaddlq_s16(vpaddlq_s8(b)));
    }
    (d, vaddvq_s32(sum))
}

/// `scalar::quantize::quantize_row_q8_0` (whole blocks).
///
/// # Safety
/// As [`vec_dot_f16`].
#[target_feature(enable = "neon")]
pub unsafe fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (d, _) = quantize_block(xb, ob.qs.as_mut_ptr());
        ob.d = f16::from_f32(d);
    }
}

/// `scalar::quantize::quantize_row_q8_1` (whole blocks).
///
/// # Safety
/// As [`vec_dot_f16`].
#[target_feature(enable = "neon")]
pub unsafe fn quantize_row_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (d, sum) = quantize_block(xb, ob.qs.as_mut_ptr());
        ob.d = f16::from_f32(d);
        ob.s = f16::from_f32(d * sum as f32);
    }
}

/// `scalar::activation::exp_approx` on four lanes, every branch computed and selected.
#[inline(always)]
unsafe fn exp4(x: float32x4_t) -> float32x4_t {
    let c = |bits: u32| vdupq_n_f32(f32::from_bits(bits));
    let shift = vdupq_n_f32(12582912.0);
    let z = vfmaq_f32(shift, x, c(LOG2E));
    let n = vsubq_f32(z, shift);
    // (-n) * hi + x and (-n) * lo + b, each one rounding.
    let b = vfmsq_f32(vfmsq_f32(x, n, c(LN2_HI)), n, c(LN2_LO));
    let e = vshlq_n_u32::<23>(vreinterpretq_u32_f32(z));
    let k = vreinterpretq_f32_u32(vaddq_u32(e, vdupq_n_u32(1.0f32.to_bits())));
    let u = vmulq_f32(b, b);
    let p_hi = vfmaq_f32(c(C[3]), c(C[4]), b);
    let p_lo = vfmaq_f32(c(C[1]), c(C[2]), b);
    let j = vfmaq_f32(vmulq_f32(c(C[0]), b), vfmaq_f32(p_lo, p_hi, u), u);
    let normal = vfmaq_f32(k, k, j);
    // |n| > 126 (or NaN): scale in two factors; |n| > 192: saturate.
    let g = vandq_u32(vclezq_f32(n), vdupq_n_u32(0x8200_0000));
    let s1 = vreinterpretq_f32_u32(vaddq_u32(g, vdupq_n_u32(0x7f00_0000)));
    let s2 = vreinterpretq_f32_u32(vsubq_u32(e, g));
    let scaled = vmulq_f32(vfmaq_f32(s2, s2, j), s1);
    let saturated = vmulq_f32(s1, s1);
    let big = vbslq_f32(vcagtq_f32(n, vdupq_n_f32(192.0)), saturated, scaled);
    vbslq_f32(vcaleq_f32(n, vdupq_n_f32(126.0)), normal, big)
}

/// `scalar::activation::swiglu`: whole groups of 8 with the polynomial, the tail with libm.
///
/// # Safety
/// As [`vec_dot_f16`].
#[target_feature(enable = "neon")]
pub unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let np = n - n % 8;
    let one = vdupq_n_f32(1.0);
    let (pg, pu) = (gate.as_mut_ptr(), up.as_ptr());
    let mut i = 0;
    while i < np {
        let g = vld1q_f32(pg.add(i));
        let silu = vdivq_f32(g, vaddq_f32(one, exp4(vnegq_f32(g))));
        vst1q_f32(pg.add(i), vmulq_f32(silu, vld1q_f32(pu.add(i))));
        i += 4;
    }
    for (g, u) in gate[np..n].iter_mut().zip(&up[np..n]) {
        *g = silu_libm(*g) * u;
    }
}

/// `scalar::activation::softmax`: groups of 8 with the polynomial (each summed in `hsum8`'s
/// order into an f64 total), the tail with libm, then every value times `1 / total`.
///
/// # Safety
/// As [`vec_dot_f16`].
#[target_feature(enable = "neon")]
pub unsafe fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let vmax = vdupq_n_f32(max);
    let mut total = 0.0f64;
    let np = x.len() - x.len() % 8;
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i < np {
        let lo = exp4(vsubq_f32(vld1q_f32(p.add(i)), vmax));
        let hi = exp4(vsubq_f32(vld1q_f32(p.add(i + 4)), vmax));
        vst1q_f32(p.add(i), lo);
        vst1q_f32(p.add(i + 4), hi);
        total += F32x8 { lo, hi }.hsum() as f64;
        i += 8;
    }
    for v in x[np..].iter_mut() {
        *v = (*v - max).exp();
        total += *v as f64;
    }
    let inv = vdupq_n_f32((1.0 / total) as f32);
    let mut i = 0;
    while i + 4 <= x.len() {
        vst1q_f32(p.add(i), vmulq_f32(vld1q_f32(p.add(i)), inv));
        i += 4;
    }
    let inv = (1.0 / total) as f32;
    for v in x[i..].iter_mut() {
        *v *= inv;
    }
}
