//! The 2-bit code layout (see the module above) and conversions into it: from ternary values,
//! from float weights (absmean ternarisation), from GGUF `TQ2_0` and `TQ1_0` blocks, and from
//! Hugging Face's packed BitNet checkpoints.

use super::{BLOCK, BLOCK_BYTES};
use half::f16;

/// Where weight `j` of a row lives: (byte index, bit shift).
#[inline]
pub fn position(j: usize) -> (usize, u32) {
    let (b, within) = (j / BLOCK, j % BLOCK);
    let (g, p) = (within / 32, within % 32);
    (b * BLOCK_BYTES + p, (6 - 2 * g) as u32)
}

/// The code (0, 1 or 2: weight -1, 0, +1) of weight `j` of a row.
#[inline]
pub fn code_at(codes: &[u8], j: usize) -> u8 {
    let (byte, shift) = position(j);
    (codes[byte] >> shift) & 3
}

/// Writes ternary `values` (each -1, 0 or 1; a multiple of [`BLOCK`] of them) as codes.
pub fn encode(values: &[i8], codes: &mut [u8]) {
    assert_eq!(values.len(), codes.len() * 4, "ternary encode: lengths");
    codes.fill(0);
    for (j, &v) in values.iter().enumerate() {
        debug_assert!((-1..=1).contains(&v), "ternary value {v}");
        let (byte, shift) = position(j);
        codes[byte] |= ((v.clamp(-1, 1) + 1) as u8) << shift;
    }
}

/// The ternary values of a row of codes (a code 3, which no encoder writes, reads as +1).
pub fn decode(codes: &[u8], values: &mut [i8]) {
    assert_eq!(values.len(), codes.len() * 4, "ternary decode: lengths");
    for (j, v) in values.iter_mut().enumerate() {
        *v = code_at(codes, j).min(2) as i8 - 1;
    }
}

/// Whether every code of `codes` is 0, 1 or 2.
pub fn valid(codes: &[u8]) -> bool {
    codes
        .iter()
        .all(|&b| (0..4).all(|f| (b >> (2 * f)) & 3 != 3))
}

/// BitNet's absmean ternarisation of a `rows x cols` tensor `w` (row-major): one scale for
/// the whole tensor, `s = mean|W|` (at least 1e-5), `v = round_ties_even(W / s)` clamped to
/// -1..=1. Each row's codes are padded with zero weights to `padded_cols` (a multiple of
/// [`BLOCK`], at least `cols`), so `codes` holds `rows * padded_cols / 4` bytes. Returns `s`
/// (the weights are then `v * s`).
pub fn ternarize(w: &[f32], rows: usize, cols: usize, padded_cols: usize, codes: &mut [u8]) -> f32 {
    assert!(
        w.len() == rows * cols
            && padded_cols >= cols
            && padded_cols.is_multiple_of(BLOCK)
            && codes.len() == rows * padded_cols / 4,
        "ternarize: {} values as {rows}x{cols} padded to {padded_cols} into {} bytes",
        w.len(),
        codes.len()
    );
    let mean = (w.iter().map(|v| v.abs() as f64).sum::<f64>() / w.len().max(1) as f64) as f32;
    let s = mean.max(1e-5);
    let mut values = vec![0i8; padded_cols];
    for (row, out) in w
        .chunks_exact(cols.max(1))
        .zip(codes.chunks_exact_mut(padded_cols / 4))
    {
        for (v, x) in values.iter_mut().zip(row) {
            *v = super::round_ties_even_small(x / s).clamp(-1.0, 1.0) as i8;
        }
        encode(&values, out);
    }
    s
}

/// GGUF `TQ2_0`: 256 weights in 66 bytes, `qs[64]` then an f16 scale `d`; within each 32
/// bytes, weight `32 l + m` is bits `2l..2l+1` of byte `m`, code `w + 1`.
pub const TQ2_0_BLOCK: usize = 256;
pub const TQ2_0_BYTES: usize = 66;

/// GGUF `TQ1_0`: 256 weights in 54 bytes: `qs[48]` (five base-3 digits per byte, for weights
/// 0..240), `qh[4]` (four per byte, weights 240..256), then an f16 `d`.
pub const TQ1_0_BLOCK: usize = 256;
pub const TQ1_0_BYTES: usize = 54;

/// A row of GGUF ternary blocks as codes and the row's one scale. Blocks whose scale is 0
/// contribute nothing and are written as zeros; the other blocks must share one scale (as
/// BitNet's per-tensor scale gives), else the row cannot be represented with one scale and
/// `Err` says which blocks differ.
fn row_from_blocks(
    blocks: &[u8],
    block_bytes: usize,
    codes: &mut [u8],
    values_of: impl Fn(&[u8], &mut [i8; 256]),
) -> Result<f32, String> {
    let nb = blocks.len() / block_bytes;
    assert_eq!(nb * block_bytes, blocks.len(), "whole blocks");
    assert_eq!(codes.len(), nb * 64, "codes for the row");
    let mut scale: Option<(usize, f32)> = None;
    let mut values = [0i8; 256];
    for (i, block) in blocks.chunks_exact(block_bytes).enumerate() {
        let d = f16::from_le_bytes([block[block_bytes - 2], block[block_bytes - 1]]).to_f32();
        let out = &mut codes[i * 64..(i + 1) * 64];
        if d == 0.0 {
            encode(&[0; 256], out);
            continue;
        }
        match scale {
            Some((first, s)) if s != d => {
                return Err(format!(
                    "block {i} has scale {d}, block {first} has {s}: the row's blocks must \
                     share one scale (a BitNet model's tensors do)"
                ))
            }
            None => scale = Some((i, d)),
            _ => {}
        }
        values_of(block, &mut values);
        encode(&values, out);
    }
    Ok(scale.map_or(0.0, |(_, s)| s))
}

/// A row of `TQ2_0` blocks as codes; returns the row's scale (see [`row_from_blocks`]).
pub fn from_tq2_0(blocks: &[u8], codes: &mut [u8]) -> Result<f32, String> {
    row_from_blocks(blocks, TQ2_0_BYTES, codes, |b, v| {
        for (j, out) in v.iter_mut().enumerate() {
            let (chunk, l, m) = (j / 128, (j % 128) / 32, j % 32);
            let c = (b[chunk * 32 + m] >> (2 * l)) & 3;
            *out = c.min(2) as i8 - 1;
        }
    })
}

/// A row of `TQ1_0` blocks as codes; returns the row's scale (see [`row_from_blocks`]).
pub fn from_tq1_0(blocks: &[u8], codes: &mut [u8]) -> Result<f32, String> {
    row_from_blocks(blocks, TQ1_0_BYTES, codes, |b, v| {
        let (qs, qh) = (&b[..48], &b[48..52]);
        // A byte holds digits as a fraction: the n-th digit is `(byte * 3^n) * 3 >> 8`.
        let digit = |byte: u8, n: u32| -> i8 {
            let q = byte.wrapping_mul(3u8.pow(n));
            (((q as u16) * 3) >> 8) as i8 - 1
        };
        let mut j = 0;
        // qs[0..32]: five digits each, weights 32n + m; qs[32..48]: weights 160 + 16n + m.
        for n in 0..5 {
            for m in 0..32 {
                v[n * 32 + m] = digit(qs[m], n as u32);
            }
        }
        j += 160;
        for n in 0..5 {
            for m in 0..16 {
                v[j + n * 16 + m] = digit(qs[32 + m], n as u32);
            }
        }
        j += 80;
        for n in 0..4 {
            for m in 0..4 {
                v[j + n * 4 + m] = digit(qh[m], n as u32);
            }
        }
    })
}

/// A row of ternary `values` (a multiple of 256) as GGUF `TQ2_0` blocks with scale `d`
/// (ggml's layout; for writing test and benchmark files).
pub fn to_tq2_0(values: &[i8], d: f16) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / TQ2_0_BLOCK * TQ2_0_BYTES);
    for block in values.chunks_exact(TQ2_0_BLOCK) {
        let mut qs = [0u8; 64];
        for (j, &v) in block.iter().enumerate() {
            let (chunk, l, m) = (j / 128, (j % 128) / 32, j % 32);
            qs[chunk * 32 + m] |= ((v.clamp(-1, 1) + 1) as u8) << (2 * l);
        }
        out.extend_from_slice(&qs);
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// A row of ternary `values` (a multiple of 256) as GGUF `TQ1_0` blocks with scale `d`:
/// ggml packs five (or four) digits `w + 1` as `ceil(sum d_n 3^(4-n) * 256 / 243)`.
pub fn to_tq1_0(values: &[i8], d: f16) -> Vec<u8> {
    let pack = |digits: &mut dyn Iterator<Item = i8>, n: usize| -> u8 {
        let mut q: u16 = 0;
        for v in digits {
            q = q * 3 + (v.clamp(-1, 1) + 1) as u16;
        }
        for _ in n..5 {
            q *= 3;
        }
        (q * 256).div_ceil(243) as u8
    };
    let mut out = Vec::with_capacity(values.len() / TQ1_0_BLOCK * TQ1_0_BYTES);
    for v in values.chunks_exact(TQ1_0_BLOCK) {
        for m in 0..32 {
            out.push(pack(&mut (0..5).map(|n| v[n * 32 + m]), 5));
        }
        for m in 0..16 {
            out.push(pack(&mut (0..5).map(|n| v[160 + n * 16 + m]), 5));
        }
        for m in 0..4 {
            out.push(pack(&mut (0..4).map(|n| v[240 + n * 4 + m]), 4));
        }
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// Hugging Face's packed BitNet weight (`uint8`, shape `[rows / 4, cols]`): weight `(r, c)`
/// with `r = i * rows / 4 + k` is bits `2i..2i+1` of byte `(k, c)`, code `w + 1`. Writes the
/// codes of every row.
pub fn from_hf_packed(packed: &[u8], rows: usize, cols: usize, codes: &mut [u8]) {
    assert!(rows.is_multiple_of(4) && packed.len() == rows / 4 * cols);
    assert_eq!(codes.len(), rows * cols / 4);
    let quarter = rows / 4;
    let mut values = vec![0i8; cols];
    for r in 0..rows {
        let (i, k) = (r / quarter, r % quarter);
        for (c, v) in values.iter_mut().enumerate() {
            let code = (packed[k * cols + c] >> (2 * i)) & 3;
            *v = code.min(2) as i8 - 1;
        }
        encode(&values, &mut codes[r * cols / 4..(r + 1) * cols / 4]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_and_decode_are_inverse_and_place_codes_as_bitnet_cpp_does() {
        let values: Vec<i8> = (0..256).map(|j| ((j * 7 + j / 3) % 3) as i8 - 1).collect();
        let mut codes = vec![0u8; 64];
        encode(&values, &mut codes);
        assert!(valid(&codes));
        let mut back = vec![0i8; 256];
        decode(&codes, &mut back);
        assert_eq!(back, values);
        // Weight 32g + p of block 0 is in bits 6-2g of byte p.
        let mut one = vec![0i8; 128];
        one[32 + 5] = 1; // g = 1, p = 5: code 2 at bits 4..5; the others are code 1.
        let mut c = vec![0u8; 32];
        encode(&one, &mut c);
        assert_eq!(c[5], (2 << 4) | (1 << 6) | (1 << 2) | 1);
        assert_eq!(c[6], 0b0101_0101);
        assert!(!valid(&[0b11]));
    }

    #[test]
    fn absmean_ternarisation_scales_by_the_mean_magnitude() {
        // Two rows of 100 weights, padded to 128: one scale for the tensor, zero padding.
        let w: Vec<f32> = (0..200).map(|j| (j as f32 - 64.0) / 64.0).collect();
        let mut codes = vec![0u8; 64];
        let s = ternarize(&w, 2, 100, 128, &mut codes);
        let mean = w.iter().map(|v| v.abs()).sum::<f32>() / 200.0;
        assert!((s - mean).abs() < 1e-5);
        let mut v = vec![0i8; 128];
        for r in 0..2 {
            decode(&codes[r * 32..(r + 1) * 32], &mut v);
            for (x, q) in w[r * 100..(r + 1) * 100].iter().zip(&v) {
                assert_eq!(*q as f32, (x / s).round_ties_even().clamp(-1.0, 1.0));
            }
            assert!(v[100..].iter().all(|&q| q == 0), "padding is zero weights");
        }
    }

    #[test]
    fn tq2_0_blocks_convert_when_they_share_a_scale() {
        let values: Vec<i8> = (0..512).map(|j| ((j * 5 + 1) % 3) as i8 - 1).collect();
        let mut blocks = to_tq2_0(&values, f16::from_f32(0.25));
        // ggml's layout: weight 32 l + m of each 128 is in bits 2l of byte m.
        assert_eq!(blocks[3] & 3, (values[3] + 1) as u8);
        assert_eq!((blocks[3] >> 2) & 3, (values[32 + 3] + 1) as u8);
        assert_eq!((blocks[32] >> 6) & 3, (values[128 + 96] + 1) as u8);
        let mut codes = vec![0u8; 128];
        assert_eq!(from_tq2_0(&blocks, &mut codes), Ok(0.25));
        let mut back = vec![0i8; 512];
        decode(&codes, &mut back);
        assert_eq!(back, values);
        // A second scale is refused, naming the blocks.
        let n = blocks.len();
        blocks[n - 2..].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        let e = from_tq2_0(&blocks, &mut codes).unwrap_err();
        assert!(e.contains("block 1") && e.contains("block 0"), "{e}");
    }

    #[test]
    fn tq1_0_digits_decode_as_ggml_packs_them() {
        let values: Vec<i8> = (0..256).map(|j| ((j * 11 + j / 7) % 3) as i8 - 1).collect();
        let b = to_tq1_0(&values, f16::from_f32(1.5));
        assert_eq!(b.len(), TQ1_0_BYTES);
        // Digits 1, 0, 2, 1, 1 (most significant first) are 3^4 + 2*9 + 3 + 1 = 103, stored as
        // ceil(103 * 256 / 243) = 109 (ggml's example arithmetic).
        let one = to_tq1_0(
            &std::iter::once([0i8, -1, 1, 0, 0])
                .flat_map(|d| (0..5).flat_map(move |n| std::iter::repeat_n(d[n], 32)))
                .chain(std::iter::repeat_n(0, 96))
                .collect::<Vec<_>>(),
            f16::ONE,
        );
        assert_eq!(one[0], 109);
        let mut codes = vec![0u8; 64];
        assert_eq!(from_tq1_0(&b, &mut codes), Ok(1.5));
        let mut back = vec![0i8; 256];
        decode(&codes, &mut back);
        assert_eq!(back, values);
    }

    #[test]
    fn hf_packed_weights_unpack_by_quarters_of_the_rows() {
        let (rows, cols) = (8, 128);
        let values: Vec<i8> = (0..rows * cols)
            .map(|j| ((j * 13 + 2) % 3) as i8 - 1)
            .collect();
        let mut packed = vec![0u8; rows / 4 * cols];
        for r in 0..rows {
            let (i, k) = (r / (rows / 4), r % (rows / 4));
            for c in 0..cols {
                packed[k * cols + c] |= ((values[r * cols + c] + 1) as u8) << (2 * i);
            }
        }
        let mut codes = vec![0u8; rows * cols / 4];
        from_hf_packed(&packed, rows, cols, &mut codes);
        let mut back = vec![0i8; rows * cols];
        for r in 0..rows {
            decode(
                &codes[r * cols / 4..(r + 1) * cols / 4],
                &mut back[r * cols..(r + 1) * cols],
            );
        }
        assert_eq!(back, values);
    }
}
