//! AArch64 SIMD kernels, parallel to `x86`: each function mirrors one in `scalar` and is
//! property-tested against it (on an AArch64 host, or under `scripts/test-aarch64.sh`, which runs
//! the tests in qemu on an x86-64 machine).
//!
//! - `neon`: Advanced SIMD (every AArch64 CPU): the one-row quantised dot products with integer
//!   lane sums from widening multiplies (`smull` + pairwise adds), the f16 / f32 dot products,
//!   attention's row products, activation quantisation, SwiGLU and softmax.
//! - `dotprod`: the same quantised dot products with `sdot` (FEAT_DotProd: Cortex-A76, Neoverse
//!   N1, Apple M1 and later), which sums four byte products into each 32-bit lane.
//! - `kquants`: Q4_K and Q6_K against Q8_K (llama.cpp's one-row, four-row and tiled orders),
//!   NEON and dotprod.
//! - `packed`: the eight-row kernels over repacked weights, NEON and dotprod.
//!
//! An 8-lane f32 accumulator of the scalar order is a pair of 4-lane registers ([`neon::F32x8`]),
//! so every kernel performs the scalar reference's floating-point operations in its order and
//! gives its bits; only the exact integer work differs between NEON and dotprod.
//!
//! f16 conversions and `sdot` are written as inline assembly: the Rust intrinsics for them are
//! not stable (`float16x4_t`, `stdarch_neon_dotprod`), and the instructions are (FCVTL is part
//! of every AArch64 CPU's Advanced SIMD).

#[cfg(target_arch = "aarch64")]
pub mod dotprod;
#[cfg(target_arch = "aarch64")]
pub mod kquants;
#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(target_arch = "aarch64")]
pub mod packed;
