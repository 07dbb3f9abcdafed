//! How a model's weights are prepared at load: post-training quantisation
//! (`--quantize ternary`), which kernels multiply ternary weights (`--ternary-kernel`), and
//! the type of the output matrix (`--lm-head`).

/// A post-training quantisation applied to a model's projections at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Quantize {
    /// BitNet's absmean rule per tensor (`s = mean|W|`, `w = clamp(round(W / s), -1, 1)`) on
    /// every attention and feed-forward projection, with per-token int8 activations. For
    /// speed measurements: a model not trained for it loses its quality.
    Ternary,
}

/// The kernels that multiply ternary weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TernaryKernel {
    /// `lut` where it has SIMD kernels (x86 with AVX2), else `i2s` ([`TernaryKernel::resolve`]).
    #[default]
    Auto,
    /// 2-bit codes times int8 activations (`maddubs` on AVX2, `vpdpbusd` on AVX-512 VNNI).
    I2s,
    /// Lookup tables of activation-pair sums indexed by the weights (`pshufb`).
    Lut,
}

impl TernaryKernel {
    /// `Auto` made concrete for this CPU: the lookup tables where they have SIMD kernels
    /// (x86 with AVX2: they stream the weights faster, see the ternary table in
    /// docs/BENCHMARKS.md), else the I2S codes.
    pub fn resolve(self) -> TernaryKernel {
        use ryzanstein_kernels::dispatch::Isa;
        match self {
            TernaryKernel::Auto
                if ryzanstein_kernels::ternary::lut::kernels().isa != Isa::Scalar =>
            {
                TernaryKernel::Lut
            }
            TernaryKernel::Auto => TernaryKernel::I2s,
            k => k,
        }
    }
}

/// The type of the output matrix (the LM head, or the token embedding tied to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LmHead {
    /// Q8_0 when the projections are ternary and the head is stored as floats (it would
    /// otherwise read more bytes per token than all the layers), else as stored.
    #[default]
    Auto,
    /// As the file stores it.
    Stored,
    /// Quantised to Q8_0 at load (a float head only; a quantised one stays as it is).
    #[value(name = "q8_0")]
    Q8_0,
}

/// Everything about loading a model but the thread count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelOptions {
    pub quantize: Option<Quantize>,
    pub ternary_kernel: TernaryKernel,
    pub lm_head: LmHead,
}
