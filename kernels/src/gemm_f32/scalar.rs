//! The scalar reference of the f32 GEMM: each output is one chain of fused multiply-adds over
//! the shared dimension in order, starting from 0, then the bias added. The SIMD kernel keeps
//! exactly this order, so its results are bit-identical.

use super::NR;

/// `out[t * rows + r] = bias[r] + sum_p a[t * cols + p] * w[r * cols + p]` over plain
/// (unpacked) row-major weights: the oracle the packed paths are tested against. Shapes are
/// the caller's to check.
pub fn gemm_f32_ref(
    a: &[f32],
    w: &[f32],
    rows: usize,
    cols: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    for (at, ot) in a.chunks_exact(cols).zip(out.chunks_exact_mut(rows)) {
        for (r, o) in ot.iter_mut().enumerate() {
            let wr = &w[r * cols..(r + 1) * cols];
            let mut acc = 0.0f32;
            for (x, y) in at.iter().zip(wr) {
                acc = x.mul_add(*y, acc);
            }
            *o = acc + bias.map_or(0.0, |b| b[r]);
        }
    }
}

/// One tile over a packed panel, in the reference's order: rows `0..mr` of `a` (stride `lda`)
/// times the panel's first `nc` columns, written to `out` (stride `ldo`).
///
/// # Safety
/// `out` is writable at `r * ldo + c` for `r < mr`, `c < nc`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile(
    a: &[f32],
    lda: usize,
    mr: usize,
    panel: &[f32],
    k: usize,
    bias: &[f32; NR],
    out: *mut f32,
    ldo: usize,
    nc: usize,
) {
    for r in 0..mr {
        let ar = &a[r * lda..r * lda + k];
        for c in 0..nc {
            let mut acc = 0.0f32;
            for (p, x) in ar.iter().enumerate() {
                acc = x.mul_add(panel[p * NR + c], acc);
            }
            *out.add(r * ldo + c) = acc + bias[c];
        }
    }
}
