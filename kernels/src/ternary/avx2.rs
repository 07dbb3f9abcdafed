//! AVX2 ternary dot product: per 128-weight block, one 32-byte load of codes, four
//! shift-and-masks to the four runs of 32 codes, four `maddubs` against the activations
//! (`sum(c * q)`, exact in i16), summed in i16 for up to 16 blocks and widened to i32; the
//! offset `sum(q)` is subtracted at the end. Exact, like the scalar reference.

use super::{BLOCK, BLOCK_BYTES};
pub(super) use crate::x86::avx2_kquants::hsum_epi32;
use std::arch::x86_64::*;

/// Blocks summed in i16 before widening: a block adds at most 4 * 2 * 2 * 128 = 2048 in
/// magnitude to a lane, and 16 * 2048 = 32768 fits (-32768 only for q = -128 throughout).
pub(super) const I16_BLOCKS: usize = 16;

/// `sum(c * q)` of one block as 16 i16 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn block_products(codes: *const u8, q: *const i8) -> __m256i {
    let mask = _mm256_set1_epi8(3);
    let v = _mm256_loadu_si256(codes as *const __m256i);
    let c0 = _mm256_and_si256(_mm256_srli_epi16::<6>(v), mask);
    let c1 = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
    let c2 = _mm256_and_si256(_mm256_srli_epi16::<2>(v), mask);
    let c3 = _mm256_and_si256(v, mask);
    let load = |g: usize| _mm256_loadu_si256(q.add(32 * g) as *const __m256i);
    let p0 = _mm256_maddubs_epi16(c0, load(0));
    let p1 = _mm256_maddubs_epi16(c1, load(1));
    let p2 = _mm256_maddubs_epi16(c2, load(2));
    let p3 = _mm256_maddubs_epi16(c3, load(3));
    _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3))
}

/// `sum((c - 1) * q)` over one row.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C (every x86 rung above scalar); `q.len() == 4 * codes.len()`, a multiple of [`BLOCK`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot(codes: &[u8], q: &[i8], sum: i32) -> i32 {
    let nb = codes.len() / BLOCK_BYTES;
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    let mut b = 0;
    while b < nb {
        let end = (b + I16_BLOCKS).min(nb);
        let mut acc16 = _mm256_setzero_si256();
        for blk in b..end {
            let p = block_products(
                codes.as_ptr().add(blk * BLOCK_BYTES),
                q.as_ptr().add(blk * BLOCK),
            );
            acc16 = _mm256_add_epi16(acc16, p);
        }
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(acc16, ones));
        b = end;
    }
    hsum_epi32(acc) - sum
}

/// `sum((c - 1) * q)` of four rows (`codes[k]`) against one activation row: [`dot`] with each
/// activation load shared by the four rows.
///
/// # Safety
/// As for [`dot`], for each row.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot4(codes: [&[u8]; 4], q: &[i8], sum: i32) -> [i32; 4] {
    let nb = codes[0].len() / BLOCK_BYTES;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut b = 0;
    while b < nb {
        let end = (b + I16_BLOCKS).min(nb);
        let mut acc16 = [_mm256_setzero_si256(); 4];
        for blk in b..end {
            let x = q.as_ptr().add(blk * BLOCK);
            for (acc16, row) in acc16.iter_mut().zip(codes) {
                let p = block_products(row.as_ptr().add(blk * BLOCK_BYTES), x);
                *acc16 = _mm256_add_epi16(*acc16, p);
            }
        }
        for (acc, acc16) in acc.iter_mut().zip(acc16) {
            *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(acc16, ones));
        }
        b = end;
    }
    std::array::from_fn(|k| hsum_epi32(acc[k]) - sum)
}
