//! Causal attention of one query row over a key/value cache stored as f16, in the arithmetic of
//! llama.cpp's default CPU attention (no flash attention), so logits agree with it bit for bit:
//!
//! - the query is rounded to f16 and each score is an f16 dot product times `scale`;
//! - the softmax is ggml's (`Kernels::softmax`, see `scalar::activation::softmax`), over the
//!   positions padded with masked (`-inf`) entries to a multiple of 32, as llama.cpp pads its KV
//!   view;
//! - the probabilities are rounded to f16 and each output is `sum_j p[j] * v[j][d]`.
//!
//! llama.cpp computes the products with a GEMM when a batch has several query rows and with
//! vector dot products for a single row; the two sum in different orders, so [`attend`] takes
//! `batched` to choose the same order.

use crate::dispatch::Kernels;
use crate::KernelError;
use half::f16;

/// Positions are padded to a multiple of this (with zero weights).
const PAD: usize = 32;

/// Keys or values of one KV head: row `j` is `data[j * stride + offset..][..dim]`.
#[derive(Clone, Copy)]
pub struct HeadRows<'a> {
    pub data: &'a [f16],
    pub stride: usize,
    pub offset: usize,
    pub dim: usize,
}

impl<'a> HeadRows<'a> {
    fn row(&self, j: usize) -> &'a [f16] {
        let s = j * self.stride + self.offset;
        &self.data[s..s + self.dim]
    }

    fn rows(&self) -> usize {
        if self.data.len() < self.offset + self.dim {
            0
        } else {
            (self.data.len() - self.offset - self.dim) / self.stride + 1
        }
    }
}

/// Attention of `q` over the first `n` positions; writes `values.dim` outputs. `batched`: the
/// query is one of several rows computed together (a prompt), which changes the summation order.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    kt: &Kernels,
    q: &[f32],
    keys: HeadRows<'_>,
    values: HeadRows<'_>,
    n: usize,
    scale: f32,
    batched: bool,
    out: &mut [f32],
) -> Result<(), KernelError> {
    if n == 0
        || q.len() != keys.dim
        || out.len() != values.dim
        || keys.rows() < n
        || values.rows() < n
    {
        return Err(KernelError::Shape {
            op: "attend",
            what: format!(
                "query {} (key dim {}), output {} (value dim {}), {} positions of {} keys / {} values",
                q.len(),
                keys.dim,
                out.len(),
                values.dim,
                n,
                keys.rows(),
                values.rows()
            ),
        });
    }
    let q16: Vec<f16> = q.iter().map(|v| f16::from_f32(*v)).collect();
    // The GEMM order needs whole groups of 8 (llama.cpp falls back to dot products otherwise).
    let gemm = batched && keys.dim.is_multiple_of(8);
    let dot = if gemm { kt.dot_f16_gemm } else { kt.dot_f16 };
    let padded = n.div_ceil(PAD) * PAD;
    let mut p = vec![f32::NEG_INFINITY; padded];
    for (j, s) in p[..n].iter_mut().enumerate() {
        *s = dot(keys.row(j), &q16) * scale;
    }
    (kt.softmax)(&mut p);
    let p16: Vec<f16> = p.iter().map(|v| f16::from_f32(*v)).collect();
    let zeros = vec![f16::ZERO; values.dim];
    let rows = |j: usize| if j < n { values.row(j) } else { &zeros[..] };
    (kt.weighted_rows_f16)(&p16, &rows, gemm, out);
    Ok(())
}
