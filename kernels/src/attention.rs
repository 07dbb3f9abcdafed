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
use crate::seg_rows::SegRows;
use crate::KernelError;
use half::f16;
use std::cell::RefCell;

/// Positions are padded to a multiple of this (with zero weights).
pub const PAD: usize = 32;

/// Keys of one KV head, in blocks of `block_rows` positions (a paged cache; one block of
/// unbounded size for a contiguous one): position `j`'s key is
/// `blocks[j / block_rows][offset + (j % block_rows) * stride..][..dim]`.
#[derive(Clone, Copy)]
pub struct HeadRows<'a> {
    pub blocks: &'a [&'a [f16]],
    pub block_rows: usize,
    pub stride: usize,
    pub offset: usize,
    pub dim: usize,
}

impl<'a> HeadRows<'a> {
    /// Keys `data[offset + j * stride..][..dim]` of one buffer.
    pub fn contiguous(data: &'a &'a [f16], stride: usize, offset: usize, dim: usize) -> Self {
        HeadRows {
            blocks: std::slice::from_ref(data),
            block_rows: usize::MAX,
            stride,
            offset,
            dim,
        }
    }

    /// Whether the blocks hold the keys of positions `0..n`.
    fn holds(&self, n: usize) -> bool {
        let rows_in = |block: &[f16]| {
            if block.len() < self.offset + self.dim || self.stride == 0 {
                0
            } else {
                (block.len() - self.offset - self.dim) / self.stride + 1
            }
        };
        self.block_rows > 0
            && self.blocks.iter().enumerate().all(|(b, block)| {
                let lo = b.saturating_mul(self.block_rows);
                lo >= n || rows_in(block) >= (n - lo).min(self.block_rows)
            })
            && self.blocks.len().saturating_mul(self.block_rows) >= n
    }

    /// The blocks covering positions `0..n`, as `(first position, end, rows)`.
    fn runs(&self, n: usize) -> impl Iterator<Item = (usize, usize, SegRows<'a>)> + '_ {
        self.blocks
            .iter()
            .enumerate()
            .map(move |(b, block)| {
                let lo = b.saturating_mul(self.block_rows);
                let rows = SegRows {
                    segs: std::slice::from_ref(block),
                    seg_len: usize::MAX,
                    stride: self.stride,
                    offset: self.offset,
                };
                (lo, lo.saturating_add(self.block_rows).min(n), rows)
            })
            .take_while(move |&(lo, _, _)| lo < n)
    }
}

/// Values of one KV head, transposed: dimension `d`'s values are row `d` of `cols` (contiguous,
/// or in the blocks of a paged cache). For a single (not `batched`) query, the positions from
/// the attended count up to the next multiple of [`PAD`] must hold zeros (the padding
/// llama.cpp multiplies by zero weights); a batched query reads them as zeros whatever they
/// hold.
#[derive(Clone, Copy)]
pub struct ValueCols<'a> {
    pub cols: SegRows<'a>,
    pub dim: usize,
}

impl<'a> ValueCols<'a> {
    /// Dimension `d`'s values at `data[d * stride..]`.
    pub fn contiguous(data: &'a &'a [f16], stride: usize, dim: usize) -> Self {
        ValueCols {
            cols: SegRows::contiguous(data, stride, 0),
            dim,
        }
    }
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
        || !keys.holds(n)
        || !values.cols.covers(values.dim, padded)
    {
        return Err(KernelError::Shape {
            op: "attend",
            what: format!(
                "query {} (key dim {}), output {} (value dim {}), {} positions: the keys or \
                 the values (padded to {padded}) do not hold them",
                q.len(),
                keys.dim,
                out.len(),
                values.dim,
                n,
            ),
        });
    }
    if !batched {
        // A decode step's cache rows come from far away (the weights stream through every
        // cache level between two tokens): ask for all of them at once, so that the misses
        // overlap instead of queueing behind the dot products one row at a time.
        for (lo, hi, rows) in keys.runs(n) {
            let block = &rows.segs[0][rows.offset..];
            for j in 0..hi - lo {
                prefetch(&block[j * rows.stride..][..keys.dim]);
            }
        }
        let cols = values.cols;
        for d in 0..values.dim {
            for (lo, hi, seg) in cols.runs(padded) {
                prefetch(&seg[d * cols.stride..][..hi - lo]);
            }
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
        for (lo, hi, rows) in keys.runs(n) {
            dot_rows(rows, qx, gemm, keys.dim, &mut p[lo..hi]);
        }
        for s in p[..n].iter_mut() {
            *s *= scale;
        }
        (kt.softmax)(p);
        // The probabilities rounded to f16 (widened again).
        (kt.round_f16)(p);
        let cols = values.cols;
        if batched && !gemm {
            // Dot-product order for a batch (head sizes that are not a multiple of 8): the
            // positions past `n` must read as zeros, so copy each column's first `n`.
            let mut col = vec![f16::ZERO; padded];
            for (d, o) in out.iter_mut().enumerate() {
                for (i, c) in col[..n].iter_mut().enumerate() {
                    *c = cols.at(d, i);
                }
                let one: &[f16] = &col;
                dot_rows(
                    SegRows::contiguous(&one, padded, 0),
                    p,
                    false,
                    padded,
                    std::slice::from_mut(o),
                );
            }
        } else {
            // A batch's columns hold its later tokens past `n`: `valid` reads them as zeros
            // (gemm order); a single query's columns hold zeros there already.
            dot_rows(cols, p, gemm, n, out);
        }
    });
    Ok(())
}
