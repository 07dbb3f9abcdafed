//! Ryzanstein compute kernels: pure compute, no I/O, no async.
//!
//! - [`formats`]: `#[repr(C)]` block formats (Q4_0, Q4_1, Q8_0, Q8_1, and the eight-row
//!   packed Q4_1 / Q8_0 blocks) and [`DType`].
//! - [`scalar`]: the always-built scalar reference for every kernel (the oracle).
//! - [`x86`]: AVX2 / AVX-512 / AVX-512-VNNI paths, selected at run time by [`dispatch`].
//! - [`aarch64`]: NEON and NEON-dotprod paths (the same operation order, the same bits).
//! - [`gemm_f32`]: f32 weights times f32 activations (register-tiled GEMM over repacked panels).
//! - [`matmul`]: shape-checked safe entry points (`matmul`, quantise activations).
//! - [`packed`]: weights repacked at load time in eight-row groups, and their matmul.
//! - [`pool`]: the persistent compute threads the matmuls and attention are split over.
//! - [`ops`]: element-wise and row operations (RMSNorm, RoPE, softmax, SiLU).
//! - [`ternary`]: BitNet b1.58 ternary weights (2-bit codes) times per-token int8 activations.

pub mod aarch64;
pub mod attention;
pub mod dispatch;
pub mod error;
pub mod formats;
pub mod gemm_f32;
pub mod matmul;
pub mod ops;
pub mod packed;
pub mod pool;
pub mod scalar;
pub mod seg_rows;
pub mod ternary;
pub mod x86;

pub use dispatch::{isa, Isa};
pub use error::KernelError;
pub use formats::DType;
pub use matmul::{matmul, MatRef};
pub use packed::{PackedMat, PackedRef};
pub use pool::Pool;
