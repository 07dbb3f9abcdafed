//! CPU feature detection, done once, and the instruction set the kernels use.
//!
//! `RYZANSTEIN_ISA=scalar|avx2|avx512|avx512vnni` forces a lower instruction set (never a higher one than
//! the CPU has), so every path can be exercised on a machine that has the higher ones.

use crate::formats::{
    BlockQ4_0, BlockQ4_1, BlockQ4_1x8, BlockQ4_K, BlockQ5_0, BlockQ6_K, BlockQ8_0, BlockQ8_0x8,
    BlockQ8_1, BlockQ8_K,
};
use crate::scalar;
use crate::scalar::packed::ActRows;
use half::{bf16, f16};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    /// AVX-512 F, BW and VL.
    Avx512,
    /// AVX-512 with VNNI (`vpdpbusd`): Zen 4, Ice Lake and later.
    Avx512Vnni,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    /// The best instruction set this CPU has.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                if std::arch::is_x86_feature_detected!("avx512vnni") {
                    return Isa::Avx512Vnni;
                }
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every instruction set this CPU can run, lowest first (property tests run them all).
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni]
            .into_iter()
            .filter(|i| *i <= best)
            .collect()
    }
}

/// The instruction set in use: the detected one, lowered by `RYZANSTEIN_ISA` if set.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = Isa::detect();
        let forced = std::env::var("RYZANSTEIN_ISA").ok().and_then(|v| {
            match v.to_ascii_lowercase().as_str() {
                "scalar" => Some(Isa::Scalar),
                "avx2" => Some(Isa::Avx2),
                "avx512" => Some(Isa::Avx512),
                "avx512vnni" => Some(Isa::Avx512Vnni),
                _ => None,
            }
        });
        forced.map_or(best, |f| f.min(best))
    })
}

/// `(weights, activations, out, ldo)` of an eight-row kernel over packed weights: writes
/// `out[t * ldo + r]` for the eight rows `r` and every activation row `t`.
///
/// # Safety
/// `weights.len() == activations.nb`, the activations consistent (`ActRows::is_consistent`,
/// with `s` for Q8_1 and `c` for Q8_0), and `out` valid for writes at those offsets.
pub type GemmX8<W, A> = unsafe fn(&[W], &ActRows<'_, A>, *mut f32, usize);

/// `(rows, stride, x, gemm, valid, out)`; see [`Kernels::dot_f16_rows`].
pub type DotRowsFn = fn(&[f16], usize, &[f32], bool, usize, &mut [f32]);

/// The dot-product kernels of one instruction set.
pub struct Kernels {
    pub isa: Isa,
    pub dot_q4_0_q8_0: fn(&[BlockQ4_0], &[BlockQ8_0]) -> f32,
    pub dot_q4_1_q8_1: fn(&[BlockQ4_1], &[BlockQ8_1]) -> f32,
    pub dot_q5_0_q8_0: fn(&[BlockQ5_0], &[BlockQ8_0]) -> f32,
    pub dot_q8_0_q8_0: fn(&[BlockQ8_0], &[BlockQ8_0]) -> f32,
    /// Q4_K in llama.cpp's one-row order (see `scalar::k_quants`).
    pub dot_q4_k_q8_k: fn(&[BlockQ4_K], &[BlockQ8_K]) -> f32,
    pub dot_q6_k_q8_k: fn(&[BlockQ6_K], &[BlockQ8_K]) -> f32,
    /// Q6_K in llama.cpp's tiled-GEMM order (batches of `TILED_MIN_ROWS` or more rows).
    pub dot_q6_k_q8_k_tiled: fn(&[BlockQ6_K], &[BlockQ8_K]) -> f32,
    /// One weight row against four activation rows (prompt processing); each output equals
    /// the one-row kernel's, except Q4_K's, which follow llama.cpp's four-row order.
    pub dot4_q4_0_q8_0: fn(&[BlockQ4_0], [&[BlockQ8_0]; 4]) -> [f32; 4],
    pub dot4_q4_1_q8_1: fn(&[BlockQ4_1], [&[BlockQ8_1]; 4]) -> [f32; 4],
    pub dot4_q8_0_q8_0: fn(&[BlockQ8_0], [&[BlockQ8_0]; 4]) -> [f32; 4],
    pub dot4_q4_k_q8_k: fn(&[BlockQ4_K], [&[BlockQ8_K]; 4]) -> [f32; 4],
    pub dot_f16: fn(&[f16], &[f16]) -> f32,
    pub dot_bf16: fn(&[bf16], &[bf16]) -> f32,
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    /// f16 dot product in the 8-lane order of a matrix product (length a multiple of 8).
    pub dot_f16_gemm: fn(&[f16], &[f16]) -> f32,
    /// `gate = silu(gate) * up` element-wise.
    pub swiglu: fn(&mut [f32], &[f32]),
    /// In-place softmax of one row (ggml's arithmetic; see `scalar::activation::softmax`).
    pub softmax: fn(&mut [f32]),
    /// `(rows, stride, x, gemm, valid, out)`: see `scalar::dot::dot_f16_rows` (attention).
    pub dot_f16_rows: DotRowsFn,
    /// f32 to f16 (round to nearest even), and f32 rounded to f16 precision in place.
    pub f32_to_f16: fn(&[f32], &mut [f16]),
    pub round_f16: fn(&mut [f32]),
    /// Quantise activations (whole blocks) as `scalar::quantize::quantize_row_q8_0` / `_q8_1`.
    pub quantize_q8_0: fn(&[f32], &mut [BlockQ8_0]),
    pub quantize_q8_1: fn(&[f32], &mut [BlockQ8_1]),
    /// Eight packed Q4_1 rows times Q8_1 activation rows (`formats::BlockQ4_1x8`).
    pub gemm_q4_1x8: GemmX8<BlockQ4_1x8, BlockQ8_1>,
    /// Eight packed Q8_0 rows times Q8_0 activation rows (`formats::BlockQ8_0x8`).
    pub gemm_q8_0x8: GemmX8<BlockQ8_0x8, BlockQ8_0>,
}

/// The scalar reference behind the [`GemmX8`] interface.
unsafe fn scalar_q4_1x8(w: &[BlockQ4_1x8], a: &ActRows<'_, BlockQ8_1>, out: *mut f32, ldo: usize) {
    for t in 0..a.n {
        let r = scalar::packed::gemm_q4_1x8_q8_1(w, a, t);
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), out.add(t * ldo), 8) };
    }
}

unsafe fn scalar_q8_0x8(w: &[BlockQ8_0x8], a: &ActRows<'_, BlockQ8_0>, out: *mut f32, ldo: usize) {
    for t in 0..a.n {
        let r = scalar::packed::gemm_q8_0x8_q8_0(w, a, t);
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), out.add(t * ldo), 8) };
    }
}

static SCALAR: Kernels = Kernels {
    isa: Isa::Scalar,
    dot_q4_0_q8_0: scalar::dot::vec_dot_q4_0_q8_0,
    dot_q4_1_q8_1: scalar::dot::vec_dot_q4_1_q8_1,
    dot_q5_0_q8_0: scalar::dot::vec_dot_q5_0_q8_0,
    dot_q8_0_q8_0: scalar::dot::vec_dot_q8_0_q8_0,
    dot_q4_k_q8_k: scalar::k_quants::vec_dot_q4_k_q8_k,
    dot_q6_k_q8_k: scalar::k_quants::vec_dot_q6_k_q8_k,
    dot_q6_k_q8_k_tiled: scalar::k_quants::vec_dot_q6_k_q8_k_tiled,
    dot4_q4_0_q8_0: scalar::dot::vec_dot4_q4_0_q8_0,
    dot4_q4_1_q8_1: scalar::dot::vec_dot4_q4_1_q8_1,
    dot4_q8_0_q8_0: scalar::dot::vec_dot4_q8_0_q8_0,
    dot4_q4_k_q8_k: scalar::k_quants::vec_dot4_q4_k_q8_k,
    dot_f16: scalar::dot::vec_dot_f16,
    dot_bf16: scalar::dot::vec_dot_bf16,
    dot_f32: scalar::dot::vec_dot_f32,
    swiglu: scalar::activation::swiglu,
    softmax: scalar::activation::softmax,
    dot_f16_gemm: scalar::dot::vec_dot_f16_gemm,
    dot_f16_rows: scalar::dot::dot_f16_rows,
    f32_to_f16: scalar::quantize::quantize_row_f16,
    round_f16: scalar::quantize::round_f16,
    quantize_q8_0: scalar::quantize::quantize_row_q8_0,
    quantize_q8_1: scalar::quantize::quantize_row_q8_1,
    gemm_q4_1x8: scalar_q4_1x8,
    gemm_q8_0x8: scalar_q8_0x8,
};

/// Safe entry points over the `unsafe` SIMD kernels. They are private and reachable only
/// through the tables below, which [`kernels_for`] hands out after detecting the features.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;
    use crate::x86::{avx2, avx2_kquants, avx512, avx512_kquants, packed};

    macro_rules! guarded {
        ($name:ident, $path:path, $x:ty, $y:ty) => {
            pub(super) fn $name(x: &[$x], y: &[$y]) -> f32 {
                // SAFETY: only reachable through a table `kernels_for` returns after feature detection.
                unsafe { $path(x, y) }
            }
        };
    }
    guarded!(avx2_q4_0, avx2::vec_dot_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
    guarded!(avx2_q4_1, avx2::vec_dot_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
    guarded!(avx2_q5_0, avx2::vec_dot_q5_0_q8_0, BlockQ5_0, BlockQ8_0);
    guarded!(avx2_q8_0, avx2::vec_dot_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
    guarded!(
        avx2_q4_k,
        avx2_kquants::vec_dot_q4_k_q8_k,
        BlockQ4_K,
        BlockQ8_K
    );
    guarded!(
        avx2_q6_k,
        avx2_kquants::vec_dot_q6_k_q8_k,
        BlockQ6_K,
        BlockQ8_K
    );
    guarded!(
        avx2_q6_k_tiled,
        avx2_kquants::vec_dot_q6_k_q8_k_tiled,
        BlockQ6_K,
        BlockQ8_K
    );
    guarded!(
        avx512_q6_k_tiled,
        avx512_kquants::vec_dot_q6_k_q8_k_tiled,
        BlockQ6_K,
        BlockQ8_K
    );
    guarded!(avx512_q5_0, avx512::vec_dot_q5_0_q8_0, BlockQ5_0, BlockQ8_0);
    guarded!(
        avx512_q4_k,
        avx512_kquants::vec_dot_q4_k_q8_k,
        BlockQ4_K,
        BlockQ8_K
    );
    guarded!(
        avx512_q6_k,
        avx512_kquants::vec_dot_q6_k_q8_k,
        BlockQ6_K,
        BlockQ8_K
    );
    guarded!(avx2_f16, avx2::vec_dot_f16, f16, f16);
    guarded!(avx2_f32, avx2::vec_dot_f32, f32, f32);
    pub(super) fn avx2_swiglu(gate: &mut [f32], up: &[f32]) {
        // SAFETY: only reachable through a table `kernels_for` returns after feature detection.
        unsafe { avx2::swiglu(gate, up) }
    }
    guarded!(avx2_f16_gemm, avx2::vec_dot_f16_gemm, f16, f16);
    pub(super) fn avx2_dot_f16_rows(
        rows: &[f16],
        stride: usize,
        x: &[f32],
        gemm: bool,
        valid: usize,
        out: &mut [f32],
    ) {
        // Every row must lie inside `rows` (the SIMD kernel reads through raw pointers).
        if let Some(last) = out.len().checked_sub(1) {
            assert!(
                last * stride + x.len() <= rows.len(),
                "dot_rows: rows too short"
            );
        }
        // SAFETY: checked above; the table is handed out after feature detection.
        unsafe { avx2::dot_f16_rows(rows, stride, x, gemm, valid, out) }
    }
    pub(super) fn avx2_f32_to_f16(x: &[f32], out: &mut [f16]) {
        // SAFETY: only reachable through a table `kernels_for` returns after feature detection.
        unsafe { avx2::quantize_row_f16(x, out) }
    }
    pub(super) fn avx2_round_f16(x: &mut [f32]) {
        // SAFETY: as above.
        unsafe { avx2::round_f16(x) }
    }
    pub(super) fn avx2_quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
        // SAFETY: only reachable through a table `kernels_for` returns after feature detection.
        unsafe { avx2::quantize_row_q8_0(x, out) }
    }
    pub(super) fn avx2_quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
        // SAFETY: as above.
        unsafe { avx2::quantize_row_q8_1(x, out) }
    }
    macro_rules! guarded4 {
        ($name:ident, $path:path, $x:ty, $y:ty) => {
            pub(super) fn $name(x: &[$x], y: [&[$y]; 4]) -> [f32; 4] {
                // SAFETY: only reachable through a table `kernels_for` returns after feature detection.
                unsafe { $path(x, y) }
            }
        };
    }
    pub(super) fn avx2_softmax(x: &mut [f32]) {
        // SAFETY: only reachable through a table `kernels_for` returns after feature detection.
        unsafe { avx2::softmax(x) }
    }
    guarded4!(
        avx2_dot4_q4_0,
        avx2::vec_dot4_q4_0_q8_0,
        BlockQ4_0,
        BlockQ8_0
    );
    guarded4!(
        avx2_dot4_q4_1,
        avx2::vec_dot4_q4_1_q8_1,
        BlockQ4_1,
        BlockQ8_1
    );
    guarded4!(
        avx2_dot4_q8_0,
        avx2::vec_dot4_q8_0_q8_0,
        BlockQ8_0,
        BlockQ8_0
    );
    guarded4!(
        avx2_dot4_q4_k,
        avx2_kquants::vec_dot4_q4_k_q8_k,
        BlockQ4_K,
        BlockQ8_K
    );
    guarded4!(
        avx512_dot4_q4_k,
        avx512_kquants::vec_dot4_q4_k_q8_k,
        BlockQ4_K,
        BlockQ8_K
    );
    guarded4!(
        avx512_dot4_q4_1,
        avx512::vec_dot4_q4_1_q8_1,
        BlockQ4_1,
        BlockQ8_1
    );
    guarded!(avx512_q4_0, avx512::vec_dot_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
    guarded!(avx512_q4_1, avx512::vec_dot_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
    guarded!(avx512_q8_0, avx512::vec_dot_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
    guarded!(avx512_f16, avx512::vec_dot_f16, f16, f16);
    guarded!(avx512_f32, avx512::vec_dot_f32, f32, f32);

    pub(super) static AVX2: Kernels = Kernels {
        isa: Isa::Avx2,
        dot_q4_0_q8_0: avx2_q4_0,
        dot_q4_1_q8_1: avx2_q4_1,
        dot_q5_0_q8_0: avx2_q5_0,
        dot_q8_0_q8_0: avx2_q8_0,
        dot_q4_k_q8_k: avx2_q4_k,
        dot_q6_k_q8_k: avx2_q6_k,
        dot_q6_k_q8_k_tiled: avx2_q6_k_tiled,
        dot4_q4_0_q8_0: avx2_dot4_q4_0,
        dot4_q4_1_q8_1: avx2_dot4_q4_1,
        dot4_q8_0_q8_0: avx2_dot4_q8_0,
        dot4_q4_k_q8_k: avx2_dot4_q4_k,
        dot_f16: avx2_f16,
        dot_bf16: scalar::dot::vec_dot_bf16,
        dot_f32: avx2_f32,
        swiglu: avx2_swiglu,
        softmax: avx2_softmax,
        dot_f16_gemm: avx2_f16_gemm,
        dot_f16_rows: avx2_dot_f16_rows,
        f32_to_f16: avx2_f32_to_f16,
        round_f16: avx2_round_f16,
        quantize_q8_0: avx2_quantize_q8_0,
        quantize_q8_1: avx2_quantize_q8_1,
        gemm_q4_1x8: packed::gemm_q4_1x8_q8_1_avx2,
        gemm_q8_0x8: packed::gemm_q8_0x8_q8_0_avx2,
    };

    const AVX512_TABLE: Kernels = Kernels {
        isa: Isa::Avx512,
        dot_q4_0_q8_0: avx512_q4_0,
        dot_q4_1_q8_1: avx512_q4_1,
        dot_q5_0_q8_0: avx512_q5_0,
        dot_q8_0_q8_0: avx512_q8_0,
        dot_q4_k_q8_k: avx512_q4_k,
        dot_q6_k_q8_k: avx512_q6_k,
        dot_q6_k_q8_k_tiled: avx512_q6_k_tiled,
        dot4_q4_0_q8_0: avx2_dot4_q4_0,
        dot4_q4_1_q8_1: avx512_dot4_q4_1,
        dot4_q8_0_q8_0: avx2_dot4_q8_0,
        dot4_q4_k_q8_k: avx512_dot4_q4_k,
        dot_f16: avx512_f16,
        dot_bf16: scalar::dot::vec_dot_bf16,
        dot_f32: avx512_f32,
        swiglu: avx2_swiglu,
        softmax: avx2_softmax,
        dot_f16_gemm: avx2_f16_gemm,
        dot_f16_rows: avx2_dot_f16_rows,
        f32_to_f16: avx2_f32_to_f16,
        round_f16: avx2_round_f16,
        quantize_q8_0: avx2_quantize_q8_0,
        quantize_q8_1: avx2_quantize_q8_1,
        gemm_q4_1x8: packed::gemm_q4_1x8_q8_1_avx2,
        gemm_q8_0x8: packed::gemm_q8_0x8_q8_0_avx2,
    };

    pub(super) static AVX512_VNNI: Kernels = Kernels {
        isa: Isa::Avx512Vnni,
        gemm_q4_1x8: packed::gemm_q4_1x8_q8_1_vnni,
        gemm_q8_0x8: packed::gemm_q8_0x8_q8_0_vnni,
        ..AVX512_TABLE
    };

    pub(super) static AVX512: Kernels = AVX512_TABLE;
}

/// The kernel table for `isa`, or `None` when this CPU cannot run it.
pub fn kernels_for(isa: Isa) -> Option<&'static Kernels> {
    if isa > Isa::detect() {
        return None;
    }
    match isa {
        Isa::Scalar => Some(&SCALAR),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(&simd::AVX2),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(&simd::AVX512),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Some(&simd::AVX512_VNNI),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The kernel table in use (see [`isa`]).
pub fn kernels() -> &'static Kernels {
    kernels_for(isa()).unwrap_or(&SCALAR)
}
