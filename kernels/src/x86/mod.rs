//! x86-64 SIMD kernels. Each function mirrors one in `scalar` and is property-tested against
//! it: `avx2` and `avx512` (one-row kernels, attention, activations), `avx2_kquants` and
//! `avx512_kquants` (Q4_K and Q6_K), `packed` (the eight-row kernels over repacked weights,
//! AVX2 and AVX-512-VNNI). They are `unsafe` because they
//! require CPU features; `dispatch` only hands them out after detecting those features.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx2_kquants;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "x86_64")]
pub mod avx512_kquants;
#[cfg(target_arch = "x86_64")]
pub mod packed;
