//! The AVX2 + FMA tile of the f32 GEMM: `R` rows by [`NR`] (two eight-lane vectors) output
//! columns held in registers; for each step of the shared dimension, one broadcast activation
//! per row times the panel's two vectors. Each lane is one output's chain of fused
//! multiply-adds in order, as in the scalar reference.

use std::arch::x86_64::*;

use super::NR;

/// Rows `0..R` of `a` (stride `lda`) times a packed panel of `k` steps, plus `bias`, into
/// `out` (stride `ldo`), of which only the first `nc` columns are written.
///
/// # Safety
/// The CPU has AVX2 and FMA; `a` is readable for `(R - 1) * lda + k` values, `panel` for
/// `k * NR`, and `out` writable at `r * ldo + c` for `r < R`, `c < nc <= NR`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile<const R: usize>(
    a: *const f32,
    lda: usize,
    panel: *const f32,
    k: usize,
    bias: &[f32; NR],
    out: *mut f32,
    ldo: usize,
    nc: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for p in 0..k {
        let w0 = _mm256_loadu_ps(panel.add(p * NR));
        let w1 = _mm256_loadu_ps(panel.add(p * NR + 8));
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_broadcast_ss(&*a.add(r * lda + p));
            acc[0] = _mm256_fmadd_ps(x, w0, acc[0]);
            acc[1] = _mm256_fmadd_ps(x, w1, acc[1]);
        }
    }
    let b0 = _mm256_loadu_ps(bias.as_ptr());
    let b1 = _mm256_loadu_ps(bias.as_ptr().add(8));
    for (r, acc) in acc.iter().enumerate() {
        let v0 = _mm256_add_ps(acc[0], b0);
        let v1 = _mm256_add_ps(acc[1], b1);
        let dst = out.add(r * ldo);
        if nc == NR {
            _mm256_storeu_ps(dst, v0);
            _mm256_storeu_ps(dst.add(8), v1);
        } else {
            let mut tmp = [0.0f32; NR];
            _mm256_storeu_ps(tmp.as_mut_ptr(), v0);
            _mm256_storeu_ps(tmp.as_mut_ptr().add(8), v1);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, nc);
        }
    }
}
