//! f32 weights times f32 activations: `out[t][r] = bias[r] + sum_p a[t][p] * w[r][p]`, the dense
//! layers of an encoder kept in full precision (the BERT of `/v1/embeddings`).
//!
//! Weights `[rows][cols]` (PyTorch `[out_features, in_features]`) are repacked once, at load
//! time, into panels of [`NR`] output rows stored step by step (`panel[p * NR + c]` is
//! `w[NR * j + c][p]`, zero past the last row), so the kernel reads each panel as one
//! contiguous stream. The AVX2 + FMA kernel keeps an [`MR`] x [`NR`] tile of outputs
//! in registers. Every output is one chain of fused multiply-adds over `p` in order, then the
//! bias added: the order of the scalar reference [`gemm_f32_ref`], so every instruction set
//! gives bit-identical results. Tiles are spread over a [`Pool`]'s threads.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod scalar;

pub use scalar::gemm_f32_ref;

use crate::dispatch::{isa, Isa};
use crate::pool::{Pool, SyncPtr};
use crate::KernelError;

/// Output columns (weight rows) of one panel: two eight-lane vectors.
pub const NR: usize = 16;
/// Activation rows of one register tile.
pub const MR: usize = 6;
/// Register tiles of activation rows per task: the rows a thread keeps in cache while it
/// walks the panels of its task.
const TILES_PER_TASK: usize = 8;

/// A weight matrix repacked for [`gemm_f32`]; see the module documentation.
#[derive(Debug, Clone)]
pub struct PackedF32 {
    rows: usize,
    cols: usize,
    panels: Vec<f32>,
}

impl PackedF32 {
    /// Repacks row-major `w` of `rows x cols` values.
    pub fn pack(w: &[f32], rows: usize, cols: usize) -> Result<PackedF32, KernelError> {
        if rows == 0 || cols == 0 || rows.checked_mul(cols) != Some(w.len()) {
            return Err(KernelError::Shape {
                op: "PackedF32::pack",
                what: format!(
                    "{} values are not a non-empty {rows}x{cols} matrix",
                    w.len()
                ),
            });
        }
        let n_panels = rows.div_ceil(NR);
        let mut panels = vec![0.0f32; n_panels * cols * NR];
        for (r, wr) in w.chunks_exact(cols).enumerate() {
            let (j, c) = (r / NR, r % NR);
            let panel = &mut panels[j * cols * NR..(j + 1) * cols * NR];
            for (p, v) in wr.iter().enumerate() {
                panel[p * NR + c] = *v;
            }
        }
        Ok(PackedF32 { rows, cols, panels })
    }

    /// Output features (rows of the original matrix).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features (columns of the original matrix).
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn panel(&self, j: usize) -> &[f32] {
        let len = self.cols * NR;
        &self.panels[j * len..(j + 1) * len]
    }
}

/// `out` (`n x w.rows()`) = `a` (`n x w.cols()`, row-major) times `w` transposed, plus `bias`
/// (`w.rows()` values) when given, with the instruction set in use ([`isa`]).
pub fn gemm_f32(
    pool: &Pool,
    a: &[f32],
    w: &PackedF32,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    gemm_f32_with(isa(), pool, a, w, bias, out)
}

/// [`gemm_f32`] with the instruction set given (lowered to what this CPU has).
pub fn gemm_f32_with(
    isa: Isa,
    pool: &Pool,
    a: &[f32],
    w: &PackedF32,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let (m, k) = (w.rows, w.cols);
    let n = a.len() / k;
    if !a.len().is_multiple_of(k) || out.len() != n * m || bias.is_some_and(|b| b.len() != m) {
        return Err(KernelError::Shape {
            op: "gemm_f32",
            what: format!(
                "weights {m}x{k}, activations of {} values, output of {} values (need {}), \
                 bias of {} values",
                a.len(),
                out.len(),
                n * m,
                bias.map_or(0, <[f32]>::len)
            ),
        });
    }
    let simd = isa.or_best().has_avx2_fma();
    let n_panels = m.div_ceil(NR);
    let rows_per_task = MR * TILES_PER_TASK;
    let tasks = n.div_ceil(rows_per_task) * n_panels;
    let dst = SyncPtr(out.as_mut_ptr());
    pool.for_each_chunk(tasks, 1, &|range| {
        for task in range {
            let (group, j) = (task / n_panels, task % n_panels);
            let col0 = j * NR;
            let nc = NR.min(m - col0);
            let mut b = [0.0f32; NR];
            if let Some(bias) = bias {
                b[..nc].copy_from_slice(&bias[col0..col0 + nc]);
            }
            let panel = w.panel(j);
            let end = ((group + 1) * rows_per_task).min(n);
            let mut t = group * rows_per_task;
            while t < end {
                let mr = MR.min(end - t);
                let a_tile = &a[t * k..(t + mr) * k];
                // SAFETY: rows `t..t + mr` and columns `col0..col0 + nc` of `out` (n x m,
                // checked above) belong to this task alone: tasks are disjoint (row group,
                // panel) pairs, each handed out once.
                let out_tile = unsafe { dst.get().add(t * m + col0) };
                tile(simd, a_tile, k, mr, panel, &b, out_tile, m, nc);
                t += mr;
            }
        }
    });
    Ok(())
}

/// One tile: rows `0..mr` of `a` times `panel`, into `out` (stride `ldo`, `nc` columns).
#[allow(clippy::too_many_arguments)]
fn tile(
    simd: bool,
    a: &[f32],
    k: usize,
    mr: usize,
    panel: &[f32],
    bias: &[f32; NR],
    out: *mut f32,
    ldo: usize,
    nc: usize,
) {
    debug_assert!(a.len() == mr * k && panel.len() == k * NR && nc <= NR);
    #[cfg(target_arch = "x86_64")]
    if simd {
        let (a, p) = (a.as_ptr(), panel.as_ptr());
        // SAFETY: `simd` is only true when the CPU has AVX2 and FMA (`Isa::detect`); `a` holds
        // `mr` rows of `k`, the panel `k * NR` values, and the caller owns the `mr x nc`
        // block of `out` at stride `ldo`.
        unsafe {
            match mr {
                1 => avx2::tile::<1>(a, k, p, k, bias, out, ldo, nc),
                2 => avx2::tile::<2>(a, k, p, k, bias, out, ldo, nc),
                3 => avx2::tile::<3>(a, k, p, k, bias, out, ldo, nc),
                4 => avx2::tile::<4>(a, k, p, k, bias, out, ldo, nc),
                5 => avx2::tile::<5>(a, k, p, k, bias, out, ldo, nc),
                _ => avx2::tile::<MR>(a, k, p, k, bias, out, ldo, nc),
            }
        }
        return;
    }
    let _ = simd; // only read on x86-64
                  // SAFETY: the caller owns the `mr x nc` block of `out` at stride `ldo`.
    unsafe { scalar::tile(a, k, mr, panel, k, bias, out, ldo, nc) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    static POOL3: std::sync::LazyLock<Pool> = std::sync::LazyLock::new(|| Pool::new(3).unwrap());

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every instruction set, serial and on three threads, gives the reference's bits
        /// (ragged rows, columns and tiles included).
        #[test]
        fn packed_paths_match_the_reference(
            n in 1usize..70, m in 1usize..50, k in 1usize..80, seed in any::<u64>(),
            with_bias in any::<bool>(),
        ) {
            let a = values(n * k, seed);
            let w = values(m * k, seed ^ 0x5555);
            let bias = values(m, seed ^ 0xaaaa);
            let bias = with_bias.then_some(bias.as_slice());
            let mut want = vec![0.0; n * m];
            gemm_f32_ref(&a, &w, m, k, bias, &mut want);
            let packed = PackedF32::pack(&w, m, k).unwrap();
            for isa in Isa::available() {
                for pool in [&Pool::serial(), &*POOL3] {
                    let mut got = vec![f32::NAN; n * m];
                    gemm_f32_with(isa, pool, &a, &packed, bias, &mut got).unwrap();
                    let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
                    prop_assert!(same, "{isa:?} {n}x{m}x{k}: {got:?} vs {want:?}");
                }
            }
        }
    }

    /// The reference itself against a sum in f64 (its error stays at f32 rounding).
    #[test]
    fn reference_is_a_matrix_product() {
        let (n, m, k) = (5, 7, 300);
        let a = values(n * k, 1);
        let w = values(m * k, 2);
        let bias = values(m, 3);
        let mut out = vec![0.0; n * m];
        gemm_f32_ref(&a, &w, m, k, Some(&bias), &mut out);
        for t in 0..n {
            for r in 0..m {
                let exact: f64 = (0..k)
                    .map(|p| a[t * k + p] as f64 * w[r * k + p] as f64)
                    .sum::<f64>()
                    + bias[r] as f64;
                assert!((out[t * m + r] as f64 - exact).abs() < 1e-3, "{t},{r}");
            }
        }
    }

    #[test]
    fn shapes_are_checked() {
        assert!(PackedF32::pack(&[1.0; 6], 2, 4).is_err());
        assert!(PackedF32::pack(&[], 0, 4).is_err());
        let w = PackedF32::pack(&[1.0; 8], 2, 4).unwrap();
        let pool = Pool::serial();
        let mut out = vec![0.0; 2];
        assert!(gemm_f32(&pool, &[1.0; 5], &w, None, &mut out).is_err());
        assert!(gemm_f32(&pool, &[1.0; 4], &w, Some(&[0.0; 3]), &mut out).is_err());
        assert!(gemm_f32(&pool, &[1.0; 8], &w, None, &mut out).is_err());
        gemm_f32(&pool, &[1.0; 4], &w, Some(&[0.5, -0.5]), &mut out).unwrap();
        assert_eq!(out, [4.5, 3.5]);
    }
}
