//! The quantised dot products of `neon` with the dot-product extension: `sdot` sums four
//! signed byte products into each 32-bit lane, which is exactly the scalar order's lane sum
//! (lane `l` takes products `4l..4l+4`), in one instruction instead of a widening multiply and
//! two pairwise adds. Integer sums are exact, so the results are the NEON (and scalar) bits.

use core::arch::aarch64::{int32x4_t, int8x16_t, vdupq_n_s32};
use core::arch::asm;

/// Four lane sums of 16 signed byte products (`sdot`), as `neon::quads`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn quads(x: int8x16_t, y: int8x16_t) -> int32x4_t {
    let mut acc = vdupq_n_s32(0);
    asm!("sdot {a:v}.4s, {x:v}.16b, {y:v}.16b", a = inout(vreg) acc, x = in(vreg) x, y = in(vreg) y,
         options(pure, nomem, nostack, preserves_flags));
    acc
}

/// The one-row kernels with `sdot` lane sums.
pub mod dots {
    crate::aarch64::neon::quantised_dots!("neon,dotprod", crate::aarch64::dotprod::quads);
}
pub use dots::{vec_dot_q4_0_q8_0, vec_dot_q4_1_q8_1, vec_dot_q5_0_q8_0, vec_dot_q8_0_q8_0};
