//! AVX-512 lookup-table panel sums, structurally parallel to `avx2`: `vpshufb zmm` (AVX-512
//! BW) on four pairs per step (one per 128-bit lane; per half of the panel one 64-byte load of
//! weights, and one load of each table for both), the same u8 / u16 / i32 accumulation and
//! prefetch, and the four lanes' sums added at the end.
//! The tables are the AVX2 builder's (the layout is the same). Exact, like the scalar
//! reference.

use super::avx2::{PREFETCH, U16_STEPS, U8_STEPS};
use super::{panel_bytes, BIAS, PANEL_ROWS};
use std::arch::x86_64::*;

/// The u16 lanes of each 256-bit half summed into sixteen i32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn widen_u16(v: __m512i) -> __m512i {
    _mm512_add_epi32(
        _mm512_cvtepu16_epi32(_mm512_castsi512_si256(v)),
        _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64::<1>(v)),
    )
}

/// One panel at `w` against one token's `tables`; its 64 sums to `sums`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
unsafe fn panel(w: *const u8, cols: usize, tables: *const u8, sums: *mut i32) {
    // A group: four pairs, 128 bytes of weights (two halves) and of tables, one step here.
    let groups = cols / 8; // a multiple of 16
    let nib = _mm512_set1_epi8(0x0f);
    let join = _mm512_set1_epi16(0x2001); // bytes (1, 32): L + 32 H
    let zero = _mm512_setzero_si512();
    // [half][rows 0..8, 8..16, 16..24, 24..32 of the half], two halves of lanes each
    let mut acc32 = [[zero; 4]; 2];
    let mut g = 0;
    while g < groups {
        let end = (g + U16_STEPS).min(groups);
        let mut acc16 = [[zero; 4]; 2];
        while g < end {
            // [half][L rows 0..16, H rows 0..16, L rows 16..32, H rows 16..32]
            let mut acc8 = [[zero; 4]; 2];
            for _ in 0..U8_STEPS {
                let (wg, tg) = (w.add(g * 128), tables.add(g * 128));
                _mm_prefetch::<_MM_HINT_T1>(wg.wrapping_add(PREFETCH) as *const i8);
                _mm_prefetch::<_MM_HINT_T1>(wg.wrapping_add(PREFETCH + 64) as *const i8);
                let tl = _mm512_loadu_si512(tg as *const __m512i);
                let th = _mm512_loadu_si512(tg.add(64) as *const __m512i);
                for (half, a) in acc8.iter_mut().enumerate() {
                    let v = _mm512_loadu_si512(wg.add(64 * half) as *const __m512i);
                    let lo = _mm512_and_si512(v, nib);
                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nib);
                    a[0] = _mm512_add_epi8(a[0], _mm512_shuffle_epi8(tl, lo));
                    a[1] = _mm512_add_epi8(a[1], _mm512_shuffle_epi8(th, lo));
                    a[2] = _mm512_add_epi8(a[2], _mm512_shuffle_epi8(tl, hi));
                    a[3] = _mm512_add_epi8(a[3], _mm512_shuffle_epi8(th, hi));
                }
                g += 1;
            }
            for (a16, a8) in acc16.iter_mut().zip(&acc8) {
                for half in 0..2 {
                    let (l, h) = (a8[2 * half], a8[2 * half + 1]);
                    let x0 = _mm512_maddubs_epi16(_mm512_unpacklo_epi8(l, h), join);
                    let x1 = _mm512_maddubs_epi16(_mm512_unpackhi_epi8(l, h), join);
                    a16[2 * half] = _mm512_add_epi16(a16[2 * half], x0);
                    a16[2 * half + 1] = _mm512_add_epi16(a16[2 * half + 1], x1);
                }
            }
        }
        for (a32, a16) in acc32.iter_mut().zip(&acc16) {
            for (a, &v) in a32.iter_mut().zip(a16) {
                *a = _mm512_add_epi32(*a, widen_u16(v));
            }
        }
    }
    let bias = _mm256_set1_epi32(BIAS * (cols / 2) as i32);
    for (half, a32) in acc32.iter().enumerate() {
        for (q, &a) in a32.iter().enumerate() {
            let rows =
                _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64::<1>(a));
            let p = sums.add(32 * half + 8 * q) as *mut __m256i;
            _mm256_storeu_si256(p, _mm256_sub_epi32(rows, bias));
        }
    }
}

/// As `scalar::panel_sums`.
///
/// # Safety
/// The CPU must have AVX-512 F and BW (and AVX2); the lengths as `check_panels` checks them.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
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
