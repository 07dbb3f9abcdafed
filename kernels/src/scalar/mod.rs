//! Scalar reference kernels: the oracle every SIMD path is tested against.
//!
//! Activation quantisation follows llama.cpp's x86 arithmetic exactly (`id = 127 / amax`,
//! round half to even, scales stored as f16), so logits match llama.cpp's bit for bit where the
//! integer work is exact and to float rounding elsewhere.

pub mod activation;
pub mod dot;
pub mod k_quants;
pub mod packed;
pub mod quantize;
