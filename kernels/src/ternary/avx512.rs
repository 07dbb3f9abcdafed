//! AVX-512 ternary dot products, structurally parallel to `avx2`: two 128-weight blocks per
//! 64-byte load of codes, the four runs of codes by shift-and-mask, then `maddubs` summed in
//! i16 (AVX-512 BW) or `vpdpbusd` straight into i32 (VNNI). An odd last block goes through the
//! AVX2 block routine. Exact, like the scalar reference.

use super::avx2::{block_products, hsum_epi32, I16_BLOCKS};
use super::{BLOCK, BLOCK_BYTES};
use std::arch::x86_64::*;

/// Two blocks' four runs of codes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn codes_x2(codes: *const u8) -> [__m512i; 4] {
    let mask = _mm512_set1_epi8(3);
    let v = _mm512_loadu_si512(codes as *const __m512i);
    [
        _mm512_and_si512(_mm512_srli_epi16::<6>(v), mask),
        _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask),
        _mm512_and_si512(_mm512_srli_epi16::<2>(v), mask),
        _mm512_and_si512(v, mask),
    ]
}

/// Run `g` of the activations of two consecutive blocks (the first block's in the low half).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn acts_x2(q: *const i8, g: usize) -> __m512i {
    let lo = _mm256_loadu_si256(q.add(32 * g) as *const __m256i);
    let hi = _mm256_loadu_si256(q.add(BLOCK + 32 * g) as *const __m256i);
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// The last, odd block's `sum(c * q)` in i32 (through the AVX2 routine).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tail(codes: &[u8], q: &[i8], nb: usize) -> i32 {
    if nb.is_multiple_of(2) {
        return 0;
    }
    let blk = nb - 1;
    let p = block_products(
        codes.as_ptr().add(blk * BLOCK_BYTES),
        q.as_ptr().add(blk * BLOCK),
    );
    hsum_epi32(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

/// `sum((c - 1) * q)` over one row, with `maddubs`.
///
/// # Safety
/// The CPU must have AVX-512 F and BW (and AVX2); `q.len() == 4 * codes.len()`, a multiple
/// of [`BLOCK`].
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub unsafe fn dot(codes: &[u8], q: &[i8], sum: i32) -> i32 {
    let nb = codes.len() / BLOCK_BYTES;
    let pairs = nb / 2;
    let ones = _mm512_set1_epi16(1);
    let mut acc = _mm512_setzero_si512();
    let mut p = 0;
    while p < pairs {
        let end = (p + I16_BLOCKS).min(pairs);
        let mut acc16 = _mm512_setzero_si512();
        for i in p..end {
            let c = codes_x2(codes.as_ptr().add(2 * i * BLOCK_BYTES));
            let x = q.as_ptr().add(2 * i * BLOCK);
            let s01 = _mm512_add_epi16(
                _mm512_maddubs_epi16(c[0], acts_x2(x, 0)),
                _mm512_maddubs_epi16(c[1], acts_x2(x, 1)),
            );
            let s23 = _mm512_add_epi16(
                _mm512_maddubs_epi16(c[2], acts_x2(x, 2)),
                _mm512_maddubs_epi16(c[3], acts_x2(x, 3)),
            );
            acc16 = _mm512_add_epi16(acc16, _mm512_add_epi16(s01, s23));
        }
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(acc16, ones));
        p = end;
    }
    _mm512_reduce_add_epi32(acc) + tail(codes, q, nb) - sum
}

/// `sum((c - 1) * q)` of four rows (`codes[k]`) against one activation row, with `maddubs`:
/// [`dot`] with each activation load shared by the four rows.
///
/// # Safety
/// As for [`dot`], for each row.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub unsafe fn dot4(codes: [&[u8]; 4], q: &[i8], sum: i32) -> [i32; 4] {
    let nb = codes[0].len() / BLOCK_BYTES;
    let pairs = nb / 2;
    let ones = _mm512_set1_epi16(1);
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut p = 0;
    while p < pairs {
        let end = (p + I16_BLOCKS).min(pairs);
        let mut acc16 = [_mm512_setzero_si512(); 4];
        for i in p..end {
            let x = q.as_ptr().add(2 * i * BLOCK);
            let a = [acts_x2(x, 0), acts_x2(x, 1), acts_x2(x, 2), acts_x2(x, 3)];
            for (acc16, row) in acc16.iter_mut().zip(codes) {
                let c = codes_x2(row.as_ptr().add(2 * i * BLOCK_BYTES));
                let s01 = _mm512_add_epi16(
                    _mm512_maddubs_epi16(c[0], a[0]),
                    _mm512_maddubs_epi16(c[1], a[1]),
                );
                let s23 = _mm512_add_epi16(
                    _mm512_maddubs_epi16(c[2], a[2]),
                    _mm512_maddubs_epi16(c[3], a[3]),
                );
                *acc16 = _mm512_add_epi16(*acc16, _mm512_add_epi16(s01, s23));
            }
        }
        for (acc, acc16) in acc.iter_mut().zip(acc16) {
            *acc = _mm512_add_epi32(*acc, _mm512_madd_epi16(acc16, ones));
        }
        p = end;
    }
    std::array::from_fn(|k| _mm512_reduce_add_epi32(acc[k]) + tail(codes[k], q, nb) - sum)
}

/// `sum((c - 1) * q)` of four rows, with `vpdpbusd`: [`dot_vnni`] with each activation load
/// shared by the four rows.
///
/// # Safety
/// As for [`dot_vnni`], for each row.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot4_vnni(codes: [&[u8]; 4], q: &[i8], sum: i32) -> [i32; 4] {
    let nb = codes[0].len() / BLOCK_BYTES;
    let mut acc = [_mm512_setzero_si512(); 4];
    for i in 0..nb / 2 {
        let x = q.as_ptr().add(2 * i * BLOCK);
        let a = [acts_x2(x, 0), acts_x2(x, 1), acts_x2(x, 2), acts_x2(x, 3)];
        for (acc, row) in acc.iter_mut().zip(codes) {
            let c = codes_x2(row.as_ptr().add(2 * i * BLOCK_BYTES));
            *acc = _mm512_dpbusd_epi32(*acc, c[0], a[0]);
            *acc = _mm512_dpbusd_epi32(*acc, c[1], a[1]);
            *acc = _mm512_dpbusd_epi32(*acc, c[2], a[2]);
            *acc = _mm512_dpbusd_epi32(*acc, c[3], a[3]);
        }
    }
    std::array::from_fn(|k| _mm512_reduce_add_epi32(acc[k]) + tail(codes[k], q, nb) - sum)
}

/// `sum((c - 1) * q)` over one row, with `vpdpbusd`.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI (and AVX2); lengths as for [`dot`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_vnni(codes: &[u8], q: &[i8], sum: i32) -> i32 {
    let nb = codes.len() / BLOCK_BYTES;
    let mut acc = _mm512_setzero_si512();
    for i in 0..nb / 2 {
        let c = codes_x2(codes.as_ptr().add(2 * i * BLOCK_BYTES));
        let x = q.as_ptr().add(2 * i * BLOCK);
        acc = _mm512_dpbusd_epi32(acc, c[0], acts_x2(x, 0));
        acc = _mm512_dpbusd_epi32(acc, c[1], acts_x2(x, 1));
        acc = _mm512_dpbusd_epi32(acc, c[2], acts_x2(x, 2));
        acc = _mm512_dpbusd_epi32(acc, c[3], acts_x2(x, 3));
    }
    _mm512_reduce_add_epi32(acc) + tail(codes, q, nb) - sum
}
