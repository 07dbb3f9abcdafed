//! The scalar reference of the lookup-table kernels, and the definition of both layouts
//! (see the module above): where a row's pair index lives in a panel ([`index_at`]), where a
//! pair's two 16-byte tables live in a token's tables ([`table_offsets`]), what a table entry
//! holds ([`entry`]), and the panel sums computed from them entry by entry.

use super::{panel_bytes, BIAS, PANEL_ROWS};

/// Byte offsets of pair `p`'s `L` and `H` tables in one token's tables: pairs go in groups
/// of four (eight activations, 128 bytes): the four `L` tables, then the four `H` tables.
#[inline]
pub fn table_offsets(p: usize) -> (usize, usize) {
    let (g, lane) = (p / 4, p % 4);
    (g * 128 + lane * 16, g * 128 + 64 + lane * 16)
}

/// The ternary pair `(w0, w1)` of index `idx` (`3 * (w0 + 1) + (w1 + 1)`, `0..9`); indices
/// `9..16` are never packed and read as zero weights.
#[inline]
pub fn pair_of(idx: u8) -> (i32, i32) {
    if idx < 9 {
        (idx as i32 / 3 - 1, idx as i32 % 3 - 1)
    } else {
        (0, 0)
    }
}

/// The index of the pair of codes `(c0, c1)` (each 0, 1 or 2: weight `c - 1`).
#[inline]
pub fn index_of(c0: u8, c1: u8) -> u8 {
    3 * c0 + c1
}

/// Entry `idx` of the tables of activations `(a0, a1)`: `e = w0 * a0 + w1 * a1 + BIAS`
/// (`0..=512`), as `(L, H) = (e & 31, e >> 5)` (`0..=31`, `0..=16`).
#[inline]
pub fn entry(idx: u8, a0: i8, a1: i8) -> (u8, u8) {
    let (w0, w1) = pair_of(idx);
    let e = w0 * a0 as i32 + w1 * a1 as i32 + BIAS;
    ((e & 31) as u8, (e >> 5) as u8)
}

/// Byte and shift of row `r`'s (`0..64`) pair index for pair `p` in a panel: pairs go in
/// groups of four (128 bytes): rows `0..32` of the four pairs (16 bytes each), then rows
/// `32..64`; of a pair's 16 bytes, byte `j` holds row `j` in its low nibble and row `16 + j`
/// in its high nibble.
#[inline]
pub fn index_position(p: usize, r: usize) -> (usize, u32) {
    let (g, k) = (p / 4, p % 4);
    let (half, rr) = (r / 32, r % 32);
    (g * 128 + half * 64 + k * 16 + rr % 16, 4 * (rr / 16) as u32)
}

/// The pair index of row `r` of a panel for pair `p`.
#[inline]
pub fn index_at(panel: &[u8], p: usize, r: usize) -> u8 {
    let (byte, shift) = index_position(p, r);
    (panel[byte] >> shift) & 15
}

/// Writes pair index `idx` of row `r` for pair `p` into a panel (the nibble must be clear).
#[inline]
pub fn set_index(panel: &mut [u8], p: usize, r: usize, idx: u8) {
    let (byte, shift) = index_position(p, r);
    panel[byte] |= idx << shift;
}

/// One token's tables: `q` (a multiple of [`crate::ternary::BLOCK`] activations) into
/// `16 * q.len()` bytes.
pub fn build_tables(q: &[i8], tables: &mut [u8]) {
    super::check_tables(q, tables);
    for (p, a) in q.chunks_exact(2).enumerate() {
        let (lo, hi) = table_offsets(p);
        for idx in 0..16u8 {
            let (l, h) = entry(idx, a[0], a[1]);
            tables[lo + idx as usize] = l;
            tables[hi + idx as usize] = h;
        }
    }
}

/// `sums[64 i + r] = sum((c - 1) * q)` for row `r` of panel `i` of `w` (whole panels of
/// `cols`-weight rows), from one token's `tables`: the sum of the rows' entries `L + 32 H`
/// over every pair, less the bias.
pub fn panel_sums(w: &[u8], cols: usize, tables: &[u8], sums: &mut [i32]) {
    super::check_panels(w, cols, tables, sums);
    let bias = BIAS * (cols / 2) as i32;
    for (panel, sums) in w
        .chunks_exact(panel_bytes(cols))
        .zip(sums.chunks_exact_mut(PANEL_ROWS))
    {
        for (r, sum) in sums.iter_mut().enumerate() {
            let mut acc = 0i32;
            for p in 0..cols / 2 {
                let idx = index_at(panel, p, r) as usize;
                let (lo, hi) = table_offsets(p);
                acc += tables[lo + idx] as i32 + 32 * tables[hi + idx] as i32;
            }
            *sum = acc - bias;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_the_biased_pair_products() {
        for a0 in [-128i8, -1, 0, 1, 127] {
            for a1 in [-128i8, -7, 0, 127] {
                for idx in 0..16u8 {
                    let (l, h) = entry(idx, a0, a1);
                    let (w0, w1) = pair_of(idx);
                    assert!(l < 32 && h <= 16);
                    assert_eq!(
                        l as i32 + 32 * h as i32 - BIAS,
                        w0 * a0 as i32 + w1 * a1 as i32
                    );
                }
            }
        }
        for c0 in 0..3u8 {
            for c1 in 0..3u8 {
                assert_eq!(pair_of(index_of(c0, c1)), (c0 as i32 - 1, c1 as i32 - 1));
            }
        }
    }

    #[test]
    fn indices_round_trip_through_a_panel() {
        let mut panel = vec![0u8; panel_bytes(128)];
        let mut seen = vec![0u8; panel.len() * 2];
        for p in 0..64 {
            for r in 0..PANEL_ROWS {
                set_index(&mut panel, p, r, ((p * 7 + r) % 9) as u8);
                let (byte, shift) = index_position(p, r);
                seen[2 * byte + shift as usize / 4] += 1;
            }
        }
        // Every nibble of the panel is used once.
        assert!(seen.iter().all(|&n| n == 1));
        for p in 0..64 {
            for r in 0..PANEL_ROWS {
                assert_eq!(index_at(&panel, p, r), ((p * 7 + r) % 9) as u8);
            }
        }
    }
}
