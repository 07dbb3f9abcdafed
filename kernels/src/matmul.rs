//! Shape-checked entry points: `out[t][r] = sum_i x[t][i] * w[r][i]` over quantised weights.
//!
//! Activations are first quantised to the weight type's `vec_dot_type` (Q8_0 for
//! Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1, Q8_K for Q4_K/Q6_K, f16 for F16, bf16 for BF16), as llama.cpp
//! does, then every output row is a dot
//! product computed by the kernel table of the selected instruction set. Rows are split across
//! the threads of a [`Pool`]. Weights repacked at load time go through [`crate::packed`].

use crate::dispatch::{kernels, Kernels};
use crate::formats::{AlignedBytes, BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
use crate::pool::{Pool, SyncPtr};
use crate::scalar::k_quants;
use crate::scalar::packed::ActRows;
use crate::{scalar, DType, KernelError};
use half::{bf16, f16};

/// A row-major weight matrix of `rows` rows, each `cols` values in `dtype`, borrowed as bytes.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

fn align_of(dtype: DType) -> usize {
    match dtype {
        DType::F32 | DType::Q8_K => 4,
        _ => 2,
    }
}

impl<'a> MatRef<'a> {
    /// Checks that `data` holds exactly `rows` rows of `cols` values and is aligned for `dtype`.
    pub fn new(
        dtype: DType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, KernelError> {
        let rb = dtype.row_bytes(cols).ok_or(KernelError::RaggedBlocks {
            op: "MatRef::new",
            dtype,
            cols,
            block: dtype.block_size(),
        })?;
        if rb.checked_mul(rows) != Some(data.len()) {
            return Err(KernelError::Shape {
                op: "MatRef::new",
                what: format!(
                    "{rows}x{cols} {dtype:?} needs {} bytes, got {}",
                    rb * rows,
                    data.len()
                ),
            });
        }
        if !(data.as_ptr() as usize).is_multiple_of(align_of(dtype)) {
            return Err(KernelError::Shape {
                op: "MatRef::new",
                what: format!("{dtype:?} data is not {}-byte aligned", align_of(dtype)),
            });
        }
        Ok(MatRef {
            dtype,
            rows,
            cols,
            data,
        })
    }

    fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Row `r` as f32 values (an embedding lookup, llama.cpp's `get_rows`).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<(), KernelError> {
        check_dequantize_row(r, self.rows, self.cols, out.len())?;
        let b = self.row(r);
        match self.dtype {
            DType::F32 => out.copy_from_slice(bytemuck::cast_slice(b)),
            DType::F16 => {
                for (o, v) in out.iter_mut().zip(bytemuck::cast_slice::<u8, f16>(b)) {
                    *o = v.to_f32();
                }
            }
            DType::BF16 => {
                for (o, v) in out.iter_mut().zip(bytemuck::cast_slice::<u8, bf16>(b)) {
                    *o = v.to_f32();
                }
            }
            DType::Q4_0 => scalar::quantize::dequantize_row_q4_0(bytemuck::cast_slice(b), out),
            DType::Q4_1 => scalar::quantize::dequantize_row_q4_1(bytemuck::cast_slice(b), out),
            DType::Q5_0 => scalar::quantize::dequantize_row_q5_0(bytemuck::cast_slice(b), out),
            DType::Q8_0 => scalar::quantize::dequantize_row_q8_0(bytemuck::cast_slice(b), out),
            DType::Q8_1 => scalar::quantize::dequantize_row_q8_1(bytemuck::cast_slice(b), out),
            DType::Q4_K => k_quants::dequantize_row_q4_k(bytemuck::cast_slice(b), out),
            DType::Q6_K => k_quants::dequantize_row_q6_k(bytemuck::cast_slice(b), out),
            DType::Q8_K => k_quants::dequantize_row_q8_k(bytemuck::cast_slice(b), out),
            // Without the scales that live beside the matrix: the ternary values themselves.
            DType::I2S => {
                let mut v = vec![0i8; out.len()];
                crate::ternary::codes::decode(b, &mut v);
                out.iter_mut().zip(v).for_each(|(o, v)| *o = v as f32);
            }
            DType::I8 => {
                for (o, v) in out.iter_mut().zip(bytemuck::cast_slice::<u8, i8>(b)) {
                    *o = *v as f32;
                }
            }
        }
        Ok(())
    }
}

/// `n` rows of `k` activations, quantised to one activation format.
#[derive(Debug, Clone)]
pub struct QuantizedActs {
    pub dtype: DType,
    pub k: usize,
    pub n: usize,
    row_bytes: usize,
    buf: AlignedBytes,
    /// Q8_0 / Q8_1: each block's `d` as f32.
    d: Vec<f32>,
    /// Q8_1: each block's `s` as f32.
    s: Vec<f32>,
    /// Q8_0: `-128 *` the sum of each group of four values, per block (see `ActRows`).
    c: Vec<[i32; 8]>,
    /// I8: each row's scale (`q ≈ x * scale`) and `sum(q)`.
    pub(crate) row_scale: Vec<f32>,
    pub(crate) row_sum: Vec<i32>,
}

impl QuantizedActs {
    pub fn row(&self, t: usize) -> &[u8] {
        &self.buf.as_bytes()[t * self.row_bytes..(t + 1) * self.row_bytes]
    }

    /// Rows `rows` as blocks of type `B` (which must be this activation format's block).
    pub(crate) fn act_rows<B: bytemuck::Pod>(
        &self,
        rows: std::ops::Range<usize>,
    ) -> ActRows<'_, B> {
        let nb = self.k / QK;
        let blocks = rows.start * nb..rows.end * nb;
        let bytes = &self.buf.as_bytes()[rows.start * self.row_bytes..rows.end * self.row_bytes];
        fn pick<'a, T>(v: &'a [T], r: &std::ops::Range<usize>) -> &'a [T] {
            if v.is_empty() {
                &[]
            } else {
                &v[r.clone()]
            }
        }
        ActRows {
            q: bytemuck::cast_slice(bytes),
            d: pick(&self.d, &blocks),
            s: pick(&self.s, &blocks),
            c: pick(&self.c, &blocks),
            nb,
            n: rows.len(),
        }
    }
}

/// Quantise `x` (`n x k`, row-major) to `dtype` (an activation format).
pub fn quantize_acts(dtype: DType, x: &[f32], k: usize) -> Result<QuantizedActs, KernelError> {
    quantize_acts_with(kernels(), dtype, x, k)
}

/// [`quantize_acts`] with the given kernel table.
pub fn quantize_acts_with(
    kt: &Kernels,
    dtype: DType,
    x: &[f32],
    k: usize,
) -> Result<QuantizedActs, KernelError> {
    let mut acts = QuantizedActs::empty();
    quantize_acts_into(kt, &mut acts, dtype, x, k)?;
    Ok(acts)
}

impl QuantizedActs {
    /// No rows yet: a buffer for [`quantize_acts_into`] to fill and refill.
    pub fn empty() -> QuantizedActs {
        QuantizedActs {
            dtype: DType::F32,
            k: 0,
            n: 0,
            row_bytes: 0,
            buf: AlignedBytes::default(),
            d: Vec::new(),
            s: Vec::new(),
            c: Vec::new(),
            row_scale: Vec::new(),
            row_sum: Vec::new(),
        }
    }

    /// I8 rows: row `t`'s values.
    pub fn i8_row(&self, t: usize) -> &[i8] {
        bytemuck::cast_slice(self.row(t))
    }
}

/// [`quantize_acts`] into `acts`, reusing its buffers (no allocation once they are large
/// enough).
pub fn quantize_acts_into(
    kt: &Kernels,
    acts: &mut QuantizedActs,
    dtype: DType,
    x: &[f32],
    k: usize,
) -> Result<(), KernelError> {
    let op = "quantize_acts";
    let row_bytes = dtype.row_bytes(k).ok_or(KernelError::RaggedBlocks {
        op,
        dtype,
        cols: k,
        block: dtype.block_size(),
    })?;
    if k == 0 || !x.len().is_multiple_of(k) {
        return Err(KernelError::Shape {
            op,
            what: format!("{} values are not rows of {k}", x.len()),
        });
    }
    if !matches!(
        dtype,
        DType::F32 | DType::F16 | DType::BF16 | DType::Q8_0 | DType::Q8_1 | DType::Q8_K | DType::I8
    ) {
        return Err(KernelError::Unsupported { op, dtype });
    }
    let n = x.len() / k;
    acts.buf.resize(row_bytes * n);
    acts.row_scale.clear();
    acts.row_sum.clear();
    for (xr, br) in x
        .chunks_exact(k)
        .zip(acts.buf.as_bytes_mut().chunks_exact_mut(row_bytes))
    {
        match dtype {
            DType::F32 => bytemuck::cast_slice_mut::<u8, f32>(br).copy_from_slice(xr),
            DType::F16 => (kt.f32_to_f16)(xr, bytemuck::cast_slice_mut(br)),
            DType::BF16 => scalar::quantize::quantize_row_bf16(xr, bytemuck::cast_slice_mut(br)),
            DType::Q8_0 => (kt.quantize_q8_0)(xr, bytemuck::cast_slice_mut(br)),
            DType::Q8_1 => (kt.quantize_q8_1)(xr, bytemuck::cast_slice_mut(br)),
            DType::Q8_K => k_quants::quantize_row_q8_k(xr, bytemuck::cast_slice_mut(br)),
            DType::I8 => {
                let (scale, sum) = crate::ternary::quantize_row(xr, bytemuck::cast_slice_mut(br));
                acts.row_scale.push(scale);
                acts.row_sum.push(sum);
            }
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q4_K | DType::Q6_K | DType::I2S => {
                unreachable!("refused above")
            }
        }
    }
    acts.d.clear();
    acts.s.clear();
    acts.c.clear();
    match dtype {
        DType::Q8_0 => {
            let blocks: &[BlockQ8_0] = bytemuck::cast_slice(acts.buf.as_bytes());
            acts.d.extend(blocks.iter().map(|b| b.d.to_f32()));
            acts.c.extend(blocks.iter().map(|b| {
                std::array::from_fn(|j| {
                    -128 * b.qs[4 * j..4 * j + 4]
                        .iter()
                        .map(|&q| q as i32)
                        .sum::<i32>()
                })
            }));
        }
        DType::Q8_1 => {
            let blocks: &[BlockQ8_1] = bytemuck::cast_slice(acts.buf.as_bytes());
            acts.d.extend(blocks.iter().map(|b| b.d.to_f32()));
            acts.s.extend(blocks.iter().map(|b| b.s.to_f32()));
        }
        _ => {}
    }
    acts.dtype = dtype;
    acts.k = k;
    acts.n = n;
    acts.row_bytes = row_bytes;
    Ok(())
}

/// Activation rows from which llama.cpp multiplies K-quant weights (not repacked: Q6_K here)
/// with its tiled GEMM instead of dot products; [`row_dot`] follows it (`tiled`).
pub const TILED_MIN_ROWS: usize = 8;

/// One weight row times one activation row (`tiled`: in a batch of at least
/// [`TILED_MIN_ROWS`] rows, where Q6_K follows llama.cpp's tiled GEMM order).
fn row_dot(kt: &Kernels, wtype: DType, w: &[u8], a: &[u8], tiled: bool) -> f32 {
    use bytemuck::cast_slice as c;
    match wtype {
        DType::Q6_K if tiled => (kt.dot_q6_k_q8_k_tiled)(c(w), c(a)),
        DType::Q4_0 => (kt.dot_q4_0_q8_0)(c::<u8, BlockQ4_0>(w), c::<u8, BlockQ8_0>(a)),
        DType::Q4_1 => (kt.dot_q4_1_q8_1)(c::<u8, BlockQ4_1>(w), c::<u8, BlockQ8_1>(a)),
        DType::Q5_0 => (kt.dot_q5_0_q8_0)(c(w), c::<u8, BlockQ8_0>(a)),
        DType::Q8_0 => (kt.dot_q8_0_q8_0)(c::<u8, BlockQ8_0>(w), c::<u8, BlockQ8_0>(a)),
        DType::Q4_K => (kt.dot_q4_k_q8_k)(c(w), c(a)),
        DType::Q6_K => (kt.dot_q6_k_q8_k)(c(w), c(a)),
        DType::Q8_1 | DType::Q8_K | DType::I8 | DType::I2S => {
            unreachable!(
                "matmul rejects activation-format and ternary weights before any dot product"
            )
        }
        DType::F16 => (kt.dot_f16)(c::<u8, f16>(w), c::<u8, f16>(a)),
        DType::BF16 => (kt.dot_bf16)(c::<u8, bf16>(w), c::<u8, bf16>(a)),
        DType::F32 => (kt.dot_f32)(c::<u8, f32>(w), c::<u8, f32>(a)),
    }
}

/// One weight row times four activation rows, for the types with a four-row kernel (Q4_K's
/// rounds as llama.cpp's four-row GEMM does, the others as their one-row kernels).
fn row_dot4(kt: &Kernels, wtype: DType, w: &[u8], a: [&[u8]; 4]) -> Option<[f32; 4]> {
    use bytemuck::cast_slice as c;
    Some(match wtype {
        DType::Q4_0 => (kt.dot4_q4_0_q8_0)(c(w), a.map(c::<u8, BlockQ8_0>)),
        DType::Q4_1 => (kt.dot4_q4_1_q8_1)(c(w), a.map(c::<u8, BlockQ8_1>)),
        DType::Q8_0 => (kt.dot4_q8_0_q8_0)(c(w), a.map(c::<u8, BlockQ8_0>)),
        DType::Q4_K => (kt.dot4_q4_k_q8_k)(c(w), a.map(c)),
        _ => return None,
    })
}

/// Checks that `acts` and `out` fit `w` (weights `rows x cols` of `wtype`).
pub(crate) fn check_shapes(
    wtype: DType,
    rows: usize,
    cols: usize,
    acts: &QuantizedActs,
    out: &[f32],
) -> Result<(), KernelError> {
    let op = "matmul";
    // Ternary weights need their row scales: `ternary::matmul`.
    if matches!(wtype, DType::Q8_1 | DType::Q8_K | DType::I8 | DType::I2S) {
        return Err(KernelError::Unsupported { op, dtype: wtype });
    }
    if acts.dtype != wtype.vec_dot_type() {
        return Err(KernelError::Shape {
            op,
            what: format!(
                "{:?} weights need {:?} activations, got {:?}",
                wtype,
                wtype.vec_dot_type(),
                acts.dtype
            ),
        });
    }
    if acts.k != cols || out.len() != acts.n * rows {
        return Err(KernelError::Shape {
            op,
            what: format!(
                "weights {}x{}, activations {}x{}, output of {} values (need {})",
                rows,
                cols,
                acts.n,
                acts.k,
                out.len(),
                acts.n * rows
            ),
        });
    }
    Ok(())
}

/// `out` (`acts.n x w.rows`) = activations times `w` transposed, with the given kernel table,
/// rows split over `pool`'s threads.
pub fn matmul_quantized_with(
    kt: &Kernels,
    pool: &Pool,
    w: MatRef<'_>,
    acts: &QuantizedActs,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_shapes(w.dtype, w.rows, w.cols, acts, out)?;
    let (n, m) = (acts.n, w.rows);
    let chunk = pool.chunk_for(m, 8, 4);
    let tiled = n >= TILED_MIN_ROWS;
    let dst = SyncPtr(out.as_mut_ptr());
    pool.for_each_chunk(m, chunk, &|rows| {
        for r in rows {
            let wr = w.row(r);
            let put = |t: usize, v: f32| {
                // SAFETY: `out` has `n * m` values (checked above) and each weight row `r`
                // belongs to exactly one chunk, so threads write disjoint elements.
                unsafe { *dst.get().add(t * m + r) = v }
            };
            // Four tokens at a time where a four-row kernel exists: the same results, except
            // for Q4_K, whose first `n - n % 4` rows round as llama.cpp's four-row GEMM does
            // (and the rest as its GEMV), as llama.cpp splits a batch; and for Q6_K in batches
            // of `TILED_MIN_ROWS` or more, which round as llama.cpp's tiled GEMM does.
            let mut t = 0;
            while t + 4 <= n {
                let rows = [
                    acts.row(t),
                    acts.row(t + 1),
                    acts.row(t + 2),
                    acts.row(t + 3),
                ];
                match row_dot4(kt, w.dtype, wr, rows) {
                    Some(v) => v.iter().enumerate().for_each(|(k, v)| put(t + k, *v)),
                    None => {
                        for (k, a) in rows.iter().enumerate() {
                            put(t + k, row_dot(kt, w.dtype, wr, a, tiled));
                        }
                    }
                }
                t += 4;
            }
            for k in t..n {
                put(k, row_dot(kt, w.dtype, wr, acts.row(k), tiled));
            }
        }
    });
    Ok(())
}

/// `out` (`n x w.rows`) = pre-quantised activations times `w` transposed.
pub fn matmul_quantized(
    pool: &Pool,
    w: MatRef<'_>,
    acts: &QuantizedActs,
    out: &mut [f32],
) -> Result<(), KernelError> {
    matmul_quantized_with(kernels(), pool, w, acts, out)
}

/// `out` (`n x w.rows`) = `x` (`n x w.cols`) times `w` transposed, on the calling thread.
pub fn matmul(w: MatRef<'_>, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    let acts = quantize_acts(w.dtype.vec_dot_type(), x, w.cols)?;
    matmul_quantized(&Pool::serial(), w, &acts, out)
}

/// The shape check of `dequantize_row` (plain and packed matrices): row `r` of `rows` into an
/// output of `out_len` values, which must be `cols`.
pub(crate) fn check_dequantize_row(
    r: usize,
    rows: usize,
    cols: usize,
    out_len: usize,
) -> Result<(), KernelError> {
    if r >= rows || out_len != cols {
        return Err(KernelError::Shape {
            op: "dequantize_row",
            what: format!("row {r} of {rows} into {out_len} values (need {cols})"),
        });
    }
    Ok(())
}
