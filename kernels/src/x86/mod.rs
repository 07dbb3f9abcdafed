//! x86-64 SIMD kernels. Each function mirrors one in `scalar::dot` and is property-tested
//! against it. They are `unsafe` because they require CPU features; `dispatch` only hands
//! them out after detecting those features.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "x86_64")]
pub mod packed;
