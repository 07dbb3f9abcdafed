//! Quantise f32 rows into activation formats, and dequantise weight rows back to f32.

use crate::formats::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1, QK};
use half::{bf16, f16};

fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// `(d, 1/d)` as llama.cpp's x86 quantiser computes them.
fn q8_scales(x: &[f32]) -> (f32, f32) {
    let max = amax(x);
    let d = max / 127.0;
    let id = if max != 0.0 { 127.0 / max } else { 0.0 };
    (d, id)
}

fn q8_round(v: f32) -> i8 {
    // |v| <= 127 by construction. Rounding half to even (as _mm256_round_ps with
    // _MM_ROUND_NEAREST does) by the 1.5 * 2^23 shift: exact for |v| < 2^22, and inline, where
    // `round_ties_even` becomes a C library call without SSE4.1 enabled at compile time.
    const SHIFT: f32 = 12582912.0;
    ((v + SHIFT) - SHIFT) as i8
}

pub fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (d, id) = q8_scales(xb);
        ob.d = f16::from_f32(d);
        for (q, v) in ob.qs.iter_mut().zip(xb) {
            *q = q8_round(v * id);
        }
    }
}

pub fn quantize_row_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (d, id) = q8_scales(xb);
        ob.d = f16::from_f32(d);
        let mut sum = 0i32;
        for (q, v) in ob.qs.iter_mut().zip(xb) {
            *q = q8_round(v * id);
            sum += *q as i32;
        }
        ob.s = f16::from_f32(d * sum as f32);
    }
}

pub fn quantize_row_f16(x: &[f32], out: &mut [f16]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o = f16::from_f32(*v);
    }
}

/// `x[i]` rounded to f16 precision (kept as f32: the widening is exact).
pub fn round_f16(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = f16::from_f32(*v).to_f32();
    }
}

pub fn quantize_row_bf16(x: &[f32], out: &mut [bf16]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o = bf16::from_f32(*v);
    }
}

pub fn dequantize_row_q4_0(x: &[BlockQ4_0], out: &mut [f32]) {
    for (b, o) in x.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for j in 0..QK / 2 {
            o[j] = ((b.qs[j] & 0x0f) as i32 - 8) as f32 * d;
            o[j + QK / 2] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub fn dequantize_row_q4_1(x: &[BlockQ4_1], out: &mut [f32]) {
    for (b, o) in x.iter().zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for j in 0..QK / 2 {
            o[j] = (b.qs[j] & 0x0f) as f32 * d + m;
            o[j + QK / 2] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

pub fn dequantize_row_q5_0(x: &[BlockQ5_0], out: &mut [f32]) {
    for (b, o) in x.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (v, q) in o.iter_mut().zip(super::dot::q5_0_values(b)) {
            *v = q as f32 * d;
        }
    }
}

pub fn dequantize_row_q8_0(x: &[BlockQ8_0], out: &mut [f32]) {
    for (b, o) in x.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (v, q) in o.iter_mut().zip(b.qs) {
            *v = q as f32 * d;
        }
    }
}

pub fn dequantize_row_q8_1(x: &[BlockQ8_1], out: &mut [f32]) {
    for (b, o) in x.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (v, q) in o.iter_mut().zip(b.qs) {
            *v = q as f32 * d;
        }
    }
}

/// Quantise f32 weights to Q4_0 (llama.cpp's reference rounding), for tests and converters.
pub fn quantize_row_q4_0(x: &[f32], out: &mut [BlockQ4_0]) {
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        // The value of largest magnitude maps to -8.
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        ob.d = f16::from_f32(d);
        for j in 0..QK / 2 {
            let q0 = ((xb[j] * id + 8.5) as i32).min(15) as u8;
            let q1 = ((xb[j + QK / 2] * id + 8.5) as i32).min(15) as u8;
            ob.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// Quantise f32 weights to Q4_1 (llama.cpp's reference rounding), for tests and converters.
pub fn quantize_row_q4_1(x: &[f32], out: &mut [BlockQ4_1]) {
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let min = xb.iter().copied().fold(f32::INFINITY, f32::min);
        let max = xb.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        ob.d = f16::from_f32(d);
        ob.m = f16::from_f32(min);
        for j in 0..QK / 2 {
            let q0 = (((xb[j] - min) * id + 0.5) as i32).min(15) as u8;
            let q1 = (((xb[j + QK / 2] - min) * id + 0.5) as i32).min(15) as u8;
            ob.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// Quantise f32 weights to Q5_0 (llama.cpp's reference rounding: the value of largest
/// magnitude maps to -16), for tests and converters.
pub fn quantize_row_q5_0(x: &[f32], out: &mut [BlockQ5_0]) {
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        ob.d = f16::from_f32(d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let q0 = ((xb[j] * id + 16.5) as i32).min(31) as u32;
            let q1 = ((xb[j + QK / 2] * id + 16.5) as i32).min(31) as u32;
            ob.qs[j] = (q0 & 0x0f) as u8 | (((q1 & 0x0f) as u8) << 4);
            qh |= ((q0 >> 4) & 1) << j;
            qh |= ((q1 >> 4) & 1) << (j + QK / 2);
        }
        ob.qh = qh.to_le_bytes();
    }
}

/// Quantise f32 weights to Q8_0 with llama.cpp's reference rounding (`roundf`, `id = 1/d`).
pub fn quantize_row_q8_0_ref(x: &[f32], out: &mut [BlockQ8_0]) {
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let d = amax(xb) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        ob.d = f16::from_f32(d);
        for (q, v) in ob.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn q8_round_is_round_half_to_even() {
        for i in -127_000..=127_000 {
            let v = i as f32 / 1000.0;
            assert_eq!(super::q8_round(v), v.round_ties_even() as i8, "{v}");
        }
        for v in [
            0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 127.0, -127.0,
        ] {
            assert_eq!(super::q8_round(v), v.round_ties_even() as i8, "{v}");
        }
    }
}
