//! Rows of f16 values whose positions are split into segments: the blocks of a paged KV cache.
//!
//! Attention multiplies the probabilities with each value dimension's row of positions. In a
//! paged cache a sequence's positions live in fixed-size blocks scattered over the cache, so a
//! row is a list of segments, one per block. [`SegRows`] describes such rows; a contiguous
//! buffer is the special case of a single segment ([`SegRows::contiguous`]). The dot-product
//! kernels carry their accumulators from one segment to the next, so a segmented row gives
//! exactly the bits of the same values stored contiguously.

use half::f16;

/// Value `i` of row `j` is `segs[i / seg_len][offset + j * stride + i % seg_len]`.
///
/// With more than one segment, `seg_len` is a multiple of [`SEG_ALIGN`] (the kernels' widest
/// step never straddles two segments).
#[derive(Clone, Copy, Debug)]
pub struct SegRows<'a> {
    pub segs: &'a [&'a [f16]],
    pub seg_len: usize,
    pub stride: usize,
    pub offset: usize,
}

/// Segment lengths (of segmented rows) are multiples of this: the dot products' 32-value step.
pub const SEG_ALIGN: usize = 32;

impl<'a> SegRows<'a> {
    /// Rows `offset + j * stride..` of one buffer.
    pub fn contiguous(rows: &'a &'a [f16], stride: usize, offset: usize) -> SegRows<'a> {
        SegRows {
            segs: std::slice::from_ref(rows),
            seg_len: usize::MAX,
            stride,
            offset,
        }
    }

    /// Value `i` of row `j` (bounds-checked).
    #[inline]
    pub fn at(&self, j: usize, i: usize) -> f16 {
        self.segs[i / self.seg_len][self.offset + j * self.stride + i % self.seg_len]
    }

    /// The segments covering positions `0..n`: `(first position, end position, segment)`, the
    /// segment starting at [`offset`](Self::offset).
    #[inline]
    pub fn runs(&self, n: usize) -> impl Iterator<Item = (usize, usize, &'a [f16])> + '_ {
        let (seg_len, offset) = (self.seg_len, self.offset);
        self.segs
            .iter()
            .enumerate()
            .map(move |(s, seg)| {
                let lo = s.saturating_mul(seg_len);
                (lo, lo.saturating_add(seg_len).min(n), *seg)
            })
            .take_while(move |&(lo, _, _)| lo < n)
            .map(move |(lo, hi, seg)| (lo, hi, seg.get(offset..).unwrap_or(&[])))
    }

    /// Whether `rows` rows of `n` values each lie inside the segments, with segment lengths
    /// the kernels accept. The SIMD kernels read through raw pointers and rely on this.
    pub fn covers(&self, rows: usize, n: usize) -> bool {
        if rows == 0 || n == 0 {
            return true;
        }
        if self.seg_len == 0 || (self.segs.len() > 1 && !self.seg_len.is_multiple_of(SEG_ALIGN)) {
            return false;
        }
        let needed = n.div_ceil(self.seg_len);
        needed <= self.segs.len()
            && self
                .runs(n)
                .all(|(lo, hi, seg)| (rows - 1) * self.stride + (hi - lo) <= seg.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_the_positions_once() {
        let a = vec![f16::ZERO; 100];
        let b = vec![f16::ZERO; 100];
        let segs: [&[f16]; 2] = [&a, &b];
        let r = SegRows {
            segs: &segs,
            seg_len: 32,
            stride: 32,
            offset: 0,
        };
        let runs: Vec<(usize, usize)> = r.runs(40).map(|(lo, hi, _)| (lo, hi)).collect();
        assert_eq!(runs, [(0, 32), (32, 40)]);
        assert_eq!(r.runs(32).count(), 1);
        assert!(r.covers(3, 64));
        assert!(!r.covers(3, 65), "a third segment is needed");
        assert!(!r.covers(4, 64), "row 3 ends past the segment");
        let odd = SegRows { seg_len: 24, ..r };
        assert!(!odd.covers(1, 30), "segments must be multiples of 32");
        let one: &[f16] = &a;
        let c = SegRows::contiguous(&one, 10, 0);
        assert_eq!(
            c.runs(95).map(|(lo, hi, _)| (lo, hi)).collect::<Vec<_>>(),
            [(0, 95)]
        );
        assert!(c.covers(1, 100) && c.covers(2, 90) && !c.covers(2, 91));
        let shifted = SegRows { offset: 5, ..c };
        assert!(shifted.covers(2, 85) && !shifted.covers(2, 86));
        assert!(SegRows { offset: 200, ..c }
            .runs(10)
            .all(|(_, _, seg)| seg.is_empty()));
    }
}
