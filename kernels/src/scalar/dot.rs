//! Scalar dot products of one weight row with one activation row (`k` values each).

use crate::formats::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
use half::{bf16, f16};

pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let lo = (bx.qs[j] & 0x0f) as i32 - 8;
            let hi = (bx.qs[j] >> 4) as i32 - 8;
            sumi += lo * by.qs[j] as i32 + hi * by.qs[j + QK / 2] as i32;
        }
        sumf += sumi as f32 * (bx.d.to_f32() * by.d.to_f32());
    }
    sumf
}

pub fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let lo = (bx.qs[j] & 0x0f) as i32;
            let hi = (bx.qs[j] >> 4) as i32;
            sumi += lo * by.qs[j] as i32 + hi * by.qs[j + QK / 2] as i32;
        }
        sumf += (bx.d.to_f32() * by.d.to_f32()) * sumi as f32 + bx.m.to_f32() * by.s.to_f32();
    }
    sumf
}

pub fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let sumi: i32 = bx
            .qs
            .iter()
            .zip(&by.qs)
            .map(|(a, b)| *a as i32 * *b as i32)
            .sum();
        sumf += sumi as f32 * (bx.d.to_f32() * by.d.to_f32());
    }
    sumf
}

pub fn vec_dot_f16(x: &[f16], y: &[f16]) -> f32 {
    let mut sum = 0.0f64;
    for (a, b) in x.iter().zip(y) {
        sum += (a.to_f32() * b.to_f32()) as f64;
    }
    sum as f32
}

pub fn vec_dot_bf16(x: &[bf16], y: &[bf16]) -> f32 {
    let mut sum = 0.0f64;
    for (a, b) in x.iter().zip(y) {
        sum += (a.to_f32() * b.to_f32()) as f64;
    }
    sum as f32
}

pub fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let mut sum = 0.0f64;
    for (a, b) in x.iter().zip(y) {
        sum += (a * b) as f64;
    }
    sum as f32
}
