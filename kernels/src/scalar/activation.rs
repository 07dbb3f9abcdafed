//! Activation functions in the arithmetic llama.cpp's AVX2 build uses, so every instruction set
//! gives the same bits (and the same bits as llama.cpp).
//!
//! [`exp_approx`] is the range-reduced polynomial exponential from Arm's optimized-routines
//! (maximum error about 1.5 ulp) that ggml uses in its vector paths: `x = n ln2 + b` with
//! `n = round(x / ln2)` found with the 1.5 * 2^23 shift trick, `ln2` split into a high and a low
//! part, `exp(b) - 1` by a degree-5 polynomial evaluated as `(c4 b + c3) u + (c2 b + c1)` times
//! `u = b^2` plus `c0 b`, and `2^n` built in the exponent bits (with a two-factor scale when
//! `|n| > 126` and saturation past `|n| > 192`).

const SHIFT: f32 = 12582912.0; // 1.5 * 2^23
pub(crate) const LOG2E: u32 = 0x3fb8aa3b;
pub(crate) const LN2_HI: u32 = 0x3f317200;
pub(crate) const LN2_LO: u32 = 0x35bfbe8e;
pub(crate) const C: [u32; 5] = [0x3f7ffff6, 0x3efffedb, 0x3e2aaf33, 0x3d2b9f17, 0x3c072010];

fn f(bits: u32) -> f32 {
    f32::from_bits(bits)
}

/// `exp(x)`, as ggml's 8-lane AVX2 `ggml_v_expf` computes each lane.
pub fn exp_approx(x: f32) -> f32 {
    let z = x.mul_add(f(LOG2E), SHIFT);
    let n = z - SHIFT;
    let b = (-n).mul_add(f(LN2_LO), (-n).mul_add(f(LN2_HI), x));
    let e = z.to_bits() << 23;
    let k = f(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let p_hi = f(C[4]).mul_add(b, f(C[3]));
    let p_lo = f(C[2]).mul_add(b, f(C[1]));
    let j = p_hi.mul_add(u, p_lo).mul_add(u, f(C[0]) * b);
    if n.abs() <= 126.0 {
        return k.mul_add(j, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f(g.wrapping_add(0x7f00_0000));
    let s2 = f(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// SiLU `x / (1 + exp(-x))` with [`exp_approx`] (the vector path).
pub fn silu_approx(x: f32) -> f32 {
    x / (1.0 + exp_approx(-x))
}

/// SiLU with the C library's `expf` (ggml's scalar tail).
pub fn silu_libm(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `gate = silu(gate) * up`: whole groups of 8 with [`silu_approx`], the tail with
/// [`silu_libm`], as ggml's AVX2 `swiglu` does.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let np = n - n % 8;
    for (g, u) in gate[..np].iter_mut().zip(&up[..np]) {
        *g = silu_approx(*g) * u;
    }
    for (g, u) in gate[np..n].iter_mut().zip(&up[np..n]) {
        *g = silu_libm(*g) * u;
    }
}

/// In-place softmax of `x` as ggml's AVX2 `soft_max` computes it: `exp(x - max)` with
/// [`exp_approx`] in groups of 8 (each group summed by `hsum8` into an f64 total), any tail with
/// the C library's `expf`, then every value times `(1 / total)` rounded to f32.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut total = 0.0f64;
    let np = x.len() - x.len() % 8;
    for group in x[..np].chunks_exact_mut(8) {
        for v in group.iter_mut() {
            *v = exp_approx(*v - max);
        }
        let lanes: &[f32; 8] = (&*group).try_into().expect("groups of 8");
        total += super::dot::hsum8(lanes) as f64;
    }
    for v in x[np..].iter_mut() {
        *v = (*v - max).exp();
        total += *v as f64;
    }
    let inv = (1.0 / total) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}
