//! CPU feature detection, done once, and the instruction set the kernels use.
//!
//! Each architecture has a ladder of instruction sets, lowest first: x86-64 `scalar`, `avx2`,
//! `avx512`, `avx512vnni`; aarch64 `scalar`, `neon`, `dotprod`. `RYZANSTEIN_ISA=<name>` forces
//! a lower rung of this CPU's ladder (never a higher one than the CPU has; a name from another
//! architecture's ladder is ignored), so every path can be exercised on a machine that has the
//! higher ones.

use crate::formats::{
    BlockQ4_0, BlockQ4_1, BlockQ4_1x8, BlockQ4_K, BlockQ5_0, BlockQ6_K, BlockQ8_0, BlockQ8_0x8,
    BlockQ8_1, BlockQ8_K,
};
use crate::scalar;
use crate::scalar::packed::ActRows;
use crate::seg_rows::SegRows;
use half::{bf16, f16};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    Scalar,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// AVX-512 F, BW and VL.
    Avx512,
    /// AVX-512 with VNNI (`vpdpbusd`): Zen 4, Ice Lake and later.
    Avx512Vnni,
    /// AArch64 Advanced SIMD (every AArch64 CPU).
    Neon,
    /// NEON with the dot-product extension (`sdot`): Cortex-A76, Neoverse N1, Apple M1 and later.
    NeonDotprod,
}

/// This architecture's instruction sets, lowest first.
#[cfg(target_arch = "x86_64")]
const LADDER: &[Isa] = &[Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni];
#[cfg(target_arch = "aarch64")]
const LADDER: &[Isa] = &[Isa::Scalar, Isa::Neon, Isa::NeonDotprod];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const LADDER: &[Isa] = &[Isa::Scalar];

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "dotprod",
        }
    }

    /// The instruction set called `name` ([`Isa::name`], any case).
    pub fn from_name(name: &str) -> Option<Isa> {
        let all = [
            Isa::Scalar,
            Isa::Avx2,
            Isa::Avx512,
            Isa::Avx512Vnni,
            Isa::Neon,
            Isa::NeonDotprod,
        ];
        all.into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(name))
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
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                if std::arch::is_aarch64_feature_detected!("dotprod") {
                    return Isa::NeonDotprod;
                }
                return Isa::Neon;
            }
        }
        Isa::Scalar
    }

    /// Position on this architecture's ladder (`None`: another architecture's instruction set).
    fn rung(self) -> Option<usize> {
        LADDER.iter().position(|i| *i == self)
    }

    /// Every instruction set this CPU can run, lowest first (property tests run them all).
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect().rung().unwrap_or(0);
        LADDER[..=best].to_vec()
    }

    /// Whether this CPU can run `self` (the CPU is asked once; the kernels' guards call this
    /// on every call).
    pub fn runs(self) -> bool {
        static BEST: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let best = *BEST.get_or_init(|| Isa::detect().rung().unwrap_or(0));
        self.rung().is_some_and(|r| r <= best)
    }

    /// `self` if this CPU runs it, else the best instruction set it has.
    pub fn or_best(self) -> Isa {
        if self.runs() {
            self
        } else {
            Isa::detect()
        }
    }

    /// An x86-64 instruction set with AVX2, FMA and F16C (every x86 rung above scalar).
    pub fn has_avx2_fma(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni)
    }
}

/// The instruction set in use: the detected one, lowered by `RYZANSTEIN_ISA` if set.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let forced = std::env::var("RYZANSTEIN_ISA")
            .ok()
            .and_then(|v| Isa::from_name(&v));
        forced_isa(Isa::detect(), forced)
    })
}

/// `forced` where it is on `best`'s ladder at or below it; `best` otherwise.
fn forced_isa(best: Isa, forced: Option<Isa>) -> Isa {
    match (forced.and_then(Isa::rung), best.rung()) {
        (Some(f), Some(b)) if f <= b => LADDER[f],
        _ => best,
    }
}

/// `(weights, activations, out, ldo)` of an eight-row kernel over packed weights: writes
/// `out[t * ldo + r]` for the eight rows `r` and every activation row `t`.
///
/// # Safety
/// `weights.len() == activations.nb`, the activations consistent (`ActRows::is_consistent`,
/// with `s` for Q8_1 and `c` for Q8_0), and `out` valid for writes at those offsets.
pub type GemmX8<W, A> = unsafe fn(&[W], &ActRows<'_, A>, *mut f32, usize);

/// `(rows, x, gemm, valid, out)`; see [`Kernels::dot_f16_rows`].
pub type DotRowsFn = fn(SegRows<'_>, &[f32], bool, usize, &mut [f32]);

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
    /// `(rows, x, gemm, valid, out)`: see `scalar::dot::dot_f16_rows` (attention; the rows
    /// contiguous or in the segments of a paged cache).
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

/// A safe entry point `$name` over the `unsafe` dot product `$path` (one row).
#[allow(unused_macros)]
macro_rules! guarded {
    ($name:ident, $path:path, $x:ty, $y:ty) => {
        pub(super) fn $name(x: &[$x], y: &[$y]) -> f32 {
            // SAFETY: only reachable through a table `kernels_for` returns after feature detection.
            unsafe { $path(x, y) }
        }
    };
}

/// As [`guarded`] for a four-activation-row kernel.
#[allow(unused_macros)]
macro_rules! guarded4 {
    ($name:ident, $path:path, $x:ty, $y:ty) => {
        pub(super) fn $name(x: &[$x], y: [&[$y]; 4]) -> [f32; 4] {
            // SAFETY: only reachable through a table `kernels_for` returns after feature detection.
            unsafe { $path(x, y) }
        }
    };
}

/// Safe entry points over the `unsafe` SIMD kernels. They are private and reachable only
/// through the tables below, which [`kernels_for`] hands out after detecting the features.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;
    use crate::x86::{avx2, avx2_kquants, avx512, avx512_kquants, packed};

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
        rows: SegRows<'_>,
        x: &[f32],
        gemm: bool,
        valid: usize,
        out: &mut [f32],
    ) {
        // Every row must lie inside the segments (the SIMD kernel reads through raw pointers).
        assert!(rows.covers(out.len(), x.len()), "dot_rows: rows too short");
        // SAFETY: checked above; the table is handed out after feature detection.
        unsafe { avx2::dot_f16_rows(rows, x, gemm, valid, out) }
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

/// The AArch64 tables (NEON, and NEON with dotprod), over safe entry points as in [`simd`].
/// bf16 and the f16 conversions use the scalar reference on AArch64.
#[cfg(target_arch = "aarch64")]
mod neon_tables {
    use super::*;
    use crate::aarch64::{dotprod, kquants, neon, packed};

    guarded!(neon_q4_0, neon::vec_dot_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
    guarded!(neon_q4_1, neon::vec_dot_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
    guarded!(neon_q5_0, neon::vec_dot_q5_0_q8_0, BlockQ5_0, BlockQ8_0);
    guarded!(neon_q8_0, neon::vec_dot_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
    guarded!(
        dotprod_q4_0,
        dotprod::vec_dot_q4_0_q8_0,
        BlockQ4_0,
        BlockQ8_0
    );
    guarded!(
        dotprod_q4_1,
        dotprod::vec_dot_q4_1_q8_1,
        BlockQ4_1,
        BlockQ8_1
    );
    guarded!(
        dotprod_q5_0,
        dotprod::vec_dot_q5_0_q8_0,
        BlockQ5_0,
        BlockQ8_0
    );
    guarded!(
        dotprod_q8_0,
        dotprod::vec_dot_q8_0_q8_0,
        BlockQ8_0,
        BlockQ8_0
    );
    guarded4!(
        neon_dot4_q4_0,
        neon::vec_dot4_q4_0_q8_0,
        BlockQ4_0,
        BlockQ8_0
    );
    guarded4!(
        neon_dot4_q4_1,
        neon::vec_dot4_q4_1_q8_1,
        BlockQ4_1,
        BlockQ8_1
    );
    guarded4!(
        neon_dot4_q8_0,
        neon::vec_dot4_q8_0_q8_0,
        BlockQ8_0,
        BlockQ8_0
    );
    guarded!(neon_f16, neon::vec_dot_f16, f16, f16);
    guarded!(neon_f32, neon::vec_dot_f32, f32, f32);
    guarded!(neon_f16_gemm, neon::vec_dot_f16_gemm, f16, f16);
    guarded!(
        neon_q4_k,
        kquants::neon::vec_dot_q4_k_q8_k,
        BlockQ4_K,
        BlockQ8_K
    );
    guarded!(
        neon_q6_k,
        kquants::neon::vec_dot_q6_k_q8_k,
        BlockQ6_K,
        BlockQ8_K
    );
    guarded!(
        neon_q6_k_tiled,
        kquants::neon::vec_dot_q6_k_q8_k_tiled,
        BlockQ6_K,
        BlockQ8_K
    );
    guarded4!(
        neon_dot4_q4_k,
        kquants::neon::vec_dot4_q4_k_q8_k,
        BlockQ4_K,
        BlockQ8_K
    );
    guarded!(
        dotprod_q4_k,
        kquants::dotprod::vec_dot_q4_k_q8_k,
        BlockQ4_K,
        BlockQ8_K
    );
    guarded!(
        dotprod_q6_k,
        kquants::dotprod::vec_dot_q6_k_q8_k,
        BlockQ6_K,
        BlockQ8_K
    );
    guarded!(
        dotprod_q6_k_tiled,
        kquants::dotprod::vec_dot_q6_k_q8_k_tiled,
        BlockQ6_K,
        BlockQ8_K
    );
    guarded4!(
        dotprod_dot4_q4_k,
        kquants::dotprod::vec_dot4_q4_k_q8_k,
        BlockQ4_K,
        BlockQ8_K
    );

    fn neon_dot_f16_rows(rows: SegRows<'_>, x: &[f32], gemm: bool, valid: usize, out: &mut [f32]) {
        // Every row must lie inside the segments (the kernel reads through raw pointers).
        assert!(rows.covers(out.len(), x.len()), "dot_rows: rows too short");
        // SAFETY: NEON is part of every AArch64 CPU (and the table is handed out after
        // detection); the rows were checked above.
        unsafe { neon::dot_f16_rows(rows, x, gemm, valid, out) }
    }
    fn neon_quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
        // SAFETY: as above; whole blocks are read from `x` by `chunks_exact`.
        unsafe { neon::quantize_row_q8_0(x, out) }
    }
    fn neon_quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
        // SAFETY: as above.
        unsafe { neon::quantize_row_q8_1(x, out) }
    }
    fn neon_swiglu(gate: &mut [f32], up: &[f32]) {
        // SAFETY: as above; the kernel stays inside `min(gate.len(), up.len())`.
        unsafe { neon::swiglu(gate, up) }
    }
    fn neon_softmax(x: &mut [f32]) {
        // SAFETY: as above.
        unsafe { neon::softmax(x) }
    }

    const NEON_TABLE: Kernels = Kernels {
        isa: Isa::Neon,
        dot_q4_0_q8_0: neon_q4_0,
        dot_q4_1_q8_1: neon_q4_1,
        dot_q5_0_q8_0: neon_q5_0,
        dot_q8_0_q8_0: neon_q8_0,
        dot_q4_k_q8_k: neon_q4_k,
        dot_q6_k_q8_k: neon_q6_k,
        dot_q6_k_q8_k_tiled: neon_q6_k_tiled,
        dot4_q4_0_q8_0: neon_dot4_q4_0,
        dot4_q4_1_q8_1: neon_dot4_q4_1,
        dot4_q8_0_q8_0: neon_dot4_q8_0,
        dot4_q4_k_q8_k: neon_dot4_q4_k,
        dot_f16: neon_f16,
        dot_bf16: scalar::dot::vec_dot_bf16,
        dot_f32: neon_f32,
        swiglu: neon_swiglu,
        softmax: neon_softmax,
        dot_f16_gemm: neon_f16_gemm,
        dot_f16_rows: neon_dot_f16_rows,
        f32_to_f16: scalar::quantize::quantize_row_f16,
        round_f16: scalar::quantize::round_f16,
        quantize_q8_0: neon_quantize_q8_0,
        quantize_q8_1: neon_quantize_q8_1,
        gemm_q4_1x8: packed::gemm_q4_1x8_q8_1_neon,
        gemm_q8_0x8: packed::gemm_q8_0x8_q8_0_neon,
    };

    pub(super) static NEON: Kernels = NEON_TABLE;

    pub(super) static DOTPROD: Kernels = Kernels {
        isa: Isa::NeonDotprod,
        dot_q4_0_q8_0: dotprod_q4_0,
        dot_q4_1_q8_1: dotprod_q4_1,
        dot_q5_0_q8_0: dotprod_q5_0,
        dot_q8_0_q8_0: dotprod_q8_0,
        dot_q4_k_q8_k: dotprod_q4_k,
        dot_q6_k_q8_k: dotprod_q6_k,
        dot_q6_k_q8_k_tiled: dotprod_q6_k_tiled,
        dot4_q4_k_q8_k: dotprod_dot4_q4_k,
        gemm_q4_1x8: packed::gemm_q4_1x8_q8_1_dotprod,
        gemm_q8_0x8: packed::gemm_q8_0x8_q8_0_dotprod,
        ..NEON_TABLE
    };
}

/// The kernel table for `isa`, or `None` when this CPU cannot run it.
pub fn kernels_for(isa: Isa) -> Option<&'static Kernels> {
    if !isa.runs() {
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
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => Some(&neon_tables::NEON),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDotprod => Some(&neon_tables::DOTPROD),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The kernel table in use (see [`isa`]).
pub fn kernels() -> &'static Kernels {
    kernels_for(isa()).unwrap_or(&SCALAR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in [
            Isa::Scalar,
            Isa::Avx2,
            Isa::Avx512,
            Isa::Avx512Vnni,
            Isa::Neon,
            Isa::NeonDotprod,
        ] {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
            assert_eq!(Isa::from_name(&isa.name().to_ascii_uppercase()), Some(isa));
        }
        assert_eq!(Isa::from_name("sse2"), None);
    }

    /// A script that knows the CPU says which rung it must detect (scripts/test-aarch64.sh,
    /// which runs these tests on emulated CPUs with and without dotprod).
    #[test]
    fn detects_the_expected_isa() {
        if let Ok(want) = std::env::var("RYZANSTEIN_EXPECT_ISA") {
            assert_eq!(Isa::detect().name(), want);
            assert_eq!(
                Isa::available().last().map(|i| i.name()),
                Some(want.as_str())
            );
        }
    }

    #[test]
    fn forcing_lowers_and_never_raises() {
        let best = Isa::detect();
        let ladder = Isa::available();
        assert_eq!(ladder[0], Isa::Scalar);
        assert_eq!(*ladder.last().unwrap(), best);
        for (i, isa) in ladder.iter().enumerate() {
            assert_eq!(forced_isa(best, Some(*isa)), *isa);
            assert!(kernels_for(*isa).is_some(), "{isa:?}");
            // Forcing a rung keeps everything below it available.
            assert!(ladder[..=i].iter().all(|l| l.runs()));
        }
        assert_eq!(forced_isa(best, None), best);
        // A rung above this CPU's best, or another architecture's instruction set: the best.
        for isa in LADDER.iter().chain(&[Isa::Avx2, Isa::Neon]) {
            if !isa.runs() {
                assert_eq!(forced_isa(best, Some(*isa)), best);
                assert!(kernels_for(*isa).is_none());
            }
        }
    }
}
