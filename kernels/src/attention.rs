//! Causal attention of one query row over a key/value cache stored as f16, in the arithmetic of
//! llama.cpp's default CPU attention (no flash attention), so logits agree with it bit for bit:
//!
//! - the query is rounded to f16 and each score is an f16 dot product times `scale`;
//! - the softmax is ggml's (`Kernels::softmax`, see `scalar::activation::softmax`), over the
//!   positions padded with masked (`-inf`) entries to a multiple of 32, as llama.cpp pads its KV
//!   view;
//! - the probabilities are rounded to f16 and output `d` is the f16 dot product of them with
//!   column `d` of the values. Like llama.cpp without flash attention, the values are cached
//!   transposed ([`ValueCols`]: one row of positions per value dimension), so that product is
//!   one contiguous dot product over the padded positions.
//!
//! llama.cpp computes the products with a GEMM when a batch has several query rows and with
//! vector dot products for a single row; the two sum in different orders, so [`attend`] takes
//! `batched` to choose the same order.

use crate::dispatch::Kernels;
use crate::KernelError;
use half::f16;
use std::cell::RefCell;

/// Positions are padded to a multiple of this (with zero weights).
pub const PAD: usize = 32;

/// Keys of one KV head: row `j` is `data[j * stride + offset..][..dim]`.
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

/// Values of one KV head, transposed: dimension `d`'s values at positions `0..` are
/// `data[d * stride..][..stride]`. For a single (not `batched`) query, the positions from the
/// attended count up to the next multiple of [`PAD`] must hold zeros (the padding llama.cpp
/// multiplies by zero weights); a batched query reads them as zeros whatever they hold.
#[derive(Clone, Copy)]
pub struct ValueCols<'a> {
    pub data: &'a [f16],
    pub stride: usize,
    pub dim: usize,
}

thread_local! {
    /// Per-thread scratch: the query and the probabilities in f32 and f16.
    static SCRATCH: RefCell<(Vec<f16>, Vec<f32>, Vec<f16>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Attention of `q` over the first `n` positions; writes `values.dim` outputs. `batched`: the
/// query is one of several rows computed together (a prompt), which changes the summation order.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    kt: &Kernels,
    q: &[f32],
    keys: HeadRows<'_>,
    values: ValueCols<'_>,
    n: usize,
    scale: f32,
    batched: bool,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let padded = n.div_ceil(PAD) * PAD;
    if n == 0
        || q.len() != keys.dim
        || out.len() != values.dim
        || keys.rows() < n
        || values.stride < padded
        || values.data.len() < values.dim * values.stride
    {
        return Err(KernelError::Shape {
            op: "attend",
            what: format!(
                "query {} (key dim {}), output {} (value dim {}), {} positions of {} keys / {} value slots",
                q.len(),
                keys.dim,
                out.len(),
                values.dim,
                n,
                keys.rows(),
                values.stride
            ),
        });
    }
    SCRATCH.with_borrow_mut(|(q16, p, p16)| {
        q16.clear();
        q16.extend(q.iter().map(|v| f16::from_f32(*v)));
        // The GEMM order needs whole groups of 8 (llama.cpp falls back to dot products otherwise).
        let gemm = batched && keys.dim.is_multiple_of(8);
        let dot = if gemm { kt.dot_f16_gemm } else { kt.dot_f16 };
        p.clear();
        p.resize(padded, f32::NEG_INFINITY);
        for (j, s) in p[..n].iter_mut().enumerate() {
            *s = dot(keys.row(j), q16) * scale;
        }
        (kt.softmax)(p);
        p16.clear();
        p16.extend(p.iter().map(|v| f16::from_f32(*v)));
        for (d, o) in out.iter_mut().enumerate() {
            let col = &values.data[d * values.stride..d * values.stride + padded];
            *o = if gemm {
                // Positions n.. of a batch's columns hold its later tokens: multiply zeros.
                (kt.dot_f16_gemm_prefix)(col, p16, n)
            } else if batched {
                // The same in dot-product order (head sizes that are not a multiple of 8).
                let mut padded_col = col[..n].to_vec();
                padded_col.resize(padded, f16::ZERO);
                dot(&padded_col, p16)
            } else {
                dot(col, p16)
            };
        }
    });
    Ok(())
}
