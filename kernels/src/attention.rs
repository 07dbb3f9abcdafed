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

impl HeadRows<'_> {
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
    /// Per-thread scratch: the query and the scores / probabilities (f16 values, widened).
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Hint the CPU to bring `data` into L1 (no effect without SSE).
#[inline]
fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = std::mem::size_of_val(data);
        let p = data.as_ptr() as *const i8;
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch never faults, and the address is inside `data`.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.add(off))
            };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
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
    if !batched {
        // A decode step's cache rows come from far away (the weights stream through every
        // cache level between two tokens): ask for all of them at once, so that the misses
        // overlap instead of queueing behind the dot products one row at a time.
        for j in 0..n {
            prefetch(&keys.data[keys.offset + j * keys.stride..][..keys.dim]);
        }
        for d in 0..values.dim {
            prefetch(&values.data[d * values.stride..][..padded]);
        }
    }
    let dot_rows = kt.dot_f16_rows;
    SCRATCH.with_borrow_mut(|(qx, p)| {
        // The query rounded to f16 (kept widened: the conversion back is exact).
        qx.clear();
        qx.extend_from_slice(q);
        (kt.round_f16)(qx);
        // The GEMM order needs whole groups of 8 (llama.cpp falls back to dot products otherwise).
        let gemm = batched && keys.dim.is_multiple_of(8);
        p.clear();
        p.resize(padded, f32::NEG_INFINITY);
        let key_rows = &keys.data[keys.offset..];
        dot_rows(key_rows, keys.stride, qx, gemm, keys.dim, &mut p[..n]);
        for s in p[..n].iter_mut() {
            *s *= scale;
        }
        (kt.softmax)(p);
        // The probabilities rounded to f16 (widened again).
        (kt.round_f16)(p);
        if batched && !gemm {
            // Dot-product order for a batch (head sizes that are not a multiple of 8): the
            // positions past `n` must read as zeros, so copy each column's first `n`.
            for (d, o) in out.iter_mut().enumerate() {
                let mut col = values.data[d * values.stride..][..n].to_vec();
                col.resize(padded, f16::ZERO);
                dot_rows(&col, padded, p, false, padded, std::slice::from_mut(o));
            }
        } else {
            // A batch's columns hold its later tokens past `n`: `valid` reads them as zeros
            // (gemm order); a single query's columns hold zeros there already.
            dot_rows(values.data, values.stride, p, gemm, n, out);
        }
    });
    Ok(())
}
