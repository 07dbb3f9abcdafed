//! AVX2 lookup-table kernels (see the module above for the layouts and the instruction
//! sequence): the table builder, shared by the AVX-512 kernels, and the panel sums with
//! `pshufb` on two pairs per `ymm` (one per 128-bit lane), both halves of a panel against one
//! load of each table. Exact, like the scalar reference.

use super::{panel_bytes, BIAS, PANEL_ROWS};
use std::arch::x86_64::*;

/// Steps (one lookup per byte lane each) summed in the u8 accumulators: `8 * 31` and
/// `8 * 16` fit a byte.
pub(super) const U8_STEPS: usize = 8;
/// Steps summed in u16 before widening: eight flushes of at most `8 * 512`, 32768.
pub(super) const U16_STEPS: usize = 64;

/// How far ahead of the panel's stream the weights are prefetched (to L2: the hardware
/// prefetchers alone left the cold-weights case at about half the DRAM bandwidth).
pub(super) const PREFETCH: usize = 4096;

/// `(w0, w1)` of entries `idx[0..8]` as i16 pairs, the `madd` operand giving those entries.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn pair_weights(idx: [u8; 8]) -> __m256i {
    let mut w = [0i16; 16];
    for (j, &i) in idx.iter().enumerate() {
        let (w0, w1) = super::scalar::pair_of(i);
        w[2 * j] = w0 as i16;
        w[2 * j + 1] = w1 as i16;
    }
    _mm256_loadu_si256(w.as_ptr() as *const __m256i)
}

/// One token's tables: per pair, `vpermd` broadcasts `(a0, a1)` (as two i16), two `madd`s
/// give the sixteen entries as i32 (in an order that `packs` + `packus` + `vpermq` bring back
/// to index order), then `L = e & 31`, `H = e >> 5` as bytes, one lane each.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `q.len()` a multiple of 16 and
/// `tables.len() == 16 * q.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn build_tables(q: &[i8], tables: &mut [u8]) {
    // `packs_epi32(a, b)` then puts a's dwords 0..4, b's 0..4, a's 4..8, b's 4..8 in order.
    let wa = pair_weights([0, 1, 2, 3, 8, 9, 10, 11]);
    let wb = pair_weights([4, 5, 6, 7, 12, 13, 14, 15]);
    let bias = _mm256_set1_epi16(BIAS as i16);
    let low5 = _mm256_set1_epi16(31);
    let out = tables.as_mut_ptr();
    for (g, a) in q.chunks_exact(16).enumerate() {
        // Eight pairs as eight dwords of two i16.
        let v = _mm256_cvtepi8_epi16(_mm_loadu_si128(a.as_ptr() as *const __m128i));
        for k in 0..8 {
            let b = _mm256_permutevar8x32_epi32(v, _mm256_set1_epi32(k as i32));
            let e = _mm256_packs_epi32(_mm256_madd_epi16(b, wa), _mm256_madd_epi16(b, wb));
            let e = _mm256_add_epi16(e, bias);
            let lh = _mm256_packus_epi16(_mm256_and_si256(e, low5), _mm256_srli_epi16::<5>(e));
            // Lane 0: L of entries 0..8, H of 0..8; lane 1: the same of 8..16.
            let lh = _mm256_permute4x64_epi64::<0b11_01_10_00>(lh);
            let (lo, hi) = super::scalar::table_offsets(8 * g + k);
            _mm_storeu_si128(out.add(lo) as *mut __m128i, _mm256_castsi256_si128(lh));
            _mm_storeu_si128(
                out.add(hi) as *mut __m128i,
                _mm256_extracti128_si256::<1>(lh),
            );
        }
    }
}

/// Eight u16 lanes of each 128-bit half summed into eight i32 (rows `8 q ..`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn widen_u16(v: __m256i) -> __m256i {
    _mm256_add_epi32(
        _mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)),
        _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(v)),
    )
}

/// One panel at `w` against one token's `tables`; its 64 sums to `sums`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn panel(w: *const u8, cols: usize, tables: *const u8, sums: *mut i32) {
    // A group: four pairs, 128 bytes of weights (two halves) and of tables, two steps here.
    let groups = cols / 8; // a multiple of 16
    let nib = _mm256_set1_epi8(0x0f);
    let join = _mm256_set1_epi16(0x2001); // bytes (1, 32): L + 32 H
    let zero = _mm256_setzero_si256();
    // [half][rows 0..8, 8..16, 16..24, 24..32 of the half]
    let mut acc32 = [[zero; 4]; 2];
    let mut g = 0;
    while g < groups {
        let end = (g + U16_STEPS / 2).min(groups);
        let mut acc16 = [[zero; 4]; 2];
        while g < end {
            // [half][L rows 0..16, H rows 0..16, L rows 16..32, H rows 16..32]
            let mut acc8 = [[zero; 4]; 2];
            for _ in 0..U8_STEPS / 2 {
                let (wg, tg) = (w.add(g * 128), tables.add(g * 128));
                _mm_prefetch::<_MM_HINT_T1>(wg.wrapping_add(PREFETCH) as *const i8);
                _mm_prefetch::<_MM_HINT_T1>(wg.wrapping_add(PREFETCH + 64) as *const i8);
                for step in 0..2 {
                    let tl = _mm256_loadu_si256(tg.add(32 * step) as *const __m256i);
                    let th = _mm256_loadu_si256(tg.add(64 + 32 * step) as *const __m256i);
                    for (half, a) in acc8.iter_mut().enumerate() {
                        let at = wg.add(64 * half + 32 * step);
                        let v = _mm256_loadu_si256(at as *const __m256i);
                        let lo = _mm256_and_si256(v, nib);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nib);
                        a[0] = _mm256_add_epi8(a[0], _mm256_shuffle_epi8(tl, lo));
                        a[1] = _mm256_add_epi8(a[1], _mm256_shuffle_epi8(th, lo));
                        a[2] = _mm256_add_epi8(a[2], _mm256_shuffle_epi8(tl, hi));
                        a[3] = _mm256_add_epi8(a[3], _mm256_shuffle_epi8(th, hi));
                    }
                }
                g += 1;
            }
            for (a16, a8) in acc16.iter_mut().zip(&acc8) {
                for half in 0..2 {
                    let (l, h) = (a8[2 * half], a8[2 * half + 1]);
                    let x0 = _mm256_maddubs_epi16(_mm256_unpacklo_epi8(l, h), join);
                    let x1 = _mm256_maddubs_epi16(_mm256_unpackhi_epi8(l, h), join);
                    a16[2 * half] = _mm256_add_epi16(a16[2 * half], x0);
                    a16[2 * half + 1] = _mm256_add_epi16(a16[2 * half + 1], x1);
                }
            }
        }
        for (a32, a16) in acc32.iter_mut().zip(&acc16) {
            for (a, &v) in a32.iter_mut().zip(a16) {
                *a = _mm256_add_epi32(*a, widen_u16(v));
            }
        }
    }
    let bias = _mm256_set1_epi32(BIAS * (cols / 2) as i32);
    for (half, a32) in acc32.iter().enumerate() {
        for (q, &a) in a32.iter().enumerate() {
            let p = sums.add(32 * half + 8 * q) as *mut __m256i;
            _mm256_storeu_si256(p, _mm256_sub_epi32(a, bias));
        }
    }
}

/// As `scalar::panel_sums`.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; the lengths as `check_panels` checks them.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn panel_sums(w: &[u8], cols: usize, tables: &[u8], sums: &mut [i32]) {
    let pb = panel_bytes(cols);
    for i in 0..w.len() / pb {
        panel(
            w.as_ptr().add(i * pb),
            cols,
            tables.as_ptr(),
            sums.as_mut_ptr().add(i * PANEL_ROWS),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_adds_both_halves_unsigned() {
        if !crate::Isa::Avx2.runs() {
            return;
        }
        let mut out = [0i32; 8];
        // SAFETY: the CPU has AVX2 (checked above); `out` holds eight i32.
        unsafe {
            let v = _mm256_set1_epi16(-32768i16); // 32768 as u16
            _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, widen_u16(v));
        }
        assert_eq!(out, [65536; 8]);
    }
}
