//! Weights repacked at load time for the eight-row kernels, and the matrix products over them.
//!
//! [`pack_into`] (or [`PackedMat::pack`]) copies a Q4_1 or Q8_0 matrix whose row count is a multiple of eight into
//! row groups of eight, block by block ([`BlockQ4_1x8`], [`BlockQ8_0x8`]): group `g` is the
//! `cols / 32` packed blocks of rows `8g..8g+8`, contiguous, so one pass over a group streams
//! one contiguous range. The bytes per weight are the GGUF's; the original stays untouched
//! (the caller decides what happens to its pages).
//!
//! [`matmul_packed_with`] gives exactly the results of [`crate::matmul::matmul_quantized_with`]
//! on the original matrix (each output is summed in the same order; see `x86::packed`).
//! Rows are split over the pool's threads by groups; for several activation rows (a prompt)
//! each group multiplies a tile of activation rows while its weights sit in L1.

use crate::dispatch::Kernels;
use crate::formats::{AlignedBytes, BlockQ4_1, BlockQ4_1x8, BlockQ8_0, BlockQ8_0x8, PACK_ROWS, QK};
use crate::matmul::{check_shapes, MatRef, QuantizedActs};
use crate::pool::{Pool, SyncPtr};
use crate::{scalar, DType, KernelError};

/// Activation rows multiplied per pass over a group's weights (their quantised blocks stay in
/// L2: 64 rows of 1536 values are 110 KB).
const TOKEN_TILE: usize = 64;

/// Bytes of the packed form of a `rows x cols` matrix of `dtype` (as many as the original),
/// or `None` when [`PackedRef::supports`] says no.
pub fn packed_len(dtype: DType, rows: usize, cols: usize) -> Option<usize> {
    if PackedRef::supports(dtype, rows, cols) {
        dtype.row_bytes(cols).map(|rb| rb * rows)
    } else {
        None
    }
}

/// Write the packed form of `m` into `out` (`packed_len` bytes, 2-byte aligned).
pub fn pack_into(m: MatRef<'_>, out: &mut [u8]) -> Result<(), KernelError> {
    let op = "pack";
    let Some(len) = packed_len(m.dtype, m.rows, m.cols) else {
        return Err(KernelError::Unsupported { op, dtype: m.dtype });
    };
    if out.len() != len || !(out.as_ptr() as usize).is_multiple_of(2) {
        return Err(KernelError::Shape {
            op,
            what: format!("{len} bytes at an even address needed, got {}", out.len()),
        });
    }
    let nb = m.cols / QK;
    match m.dtype {
        DType::Q4_1 => {
            let out: &mut [BlockQ4_1x8] = bytemuck::cast_slice_mut(out);
            for (g, group) in out.chunks_exact_mut(nb).enumerate() {
                let rows: [&[BlockQ4_1]; 8] =
                    std::array::from_fn(|r| bytemuck::cast_slice(m.row(g * PACK_ROWS + r)));
                for (b, o) in group.iter_mut().enumerate() {
                    *o = BlockQ4_1x8::pack(rows.map(|r| &r[b]));
                }
            }
        }
        DType::Q8_0 => {
            let out: &mut [BlockQ8_0x8] = bytemuck::cast_slice_mut(out);
            for (g, group) in out.chunks_exact_mut(nb).enumerate() {
                let rows: [&[BlockQ8_0]; 8] =
                    std::array::from_fn(|r| bytemuck::cast_slice(m.row(g * PACK_ROWS + r)));
                for (b, o) in group.iter_mut().enumerate() {
                    *o = BlockQ8_0x8::pack(rows.map(|r| &r[b]));
                }
            }
        }
        _ => unreachable!("checked by packed_len"),
    }
    Ok(())
}

/// A packed weight matrix, borrowed (from a [`PackedMat`] or a caller's arena).
#[derive(Debug, Clone, Copy)]
pub struct PackedRef<'a> {
    dtype: DType,
    rows: usize,
    cols: usize,
    data: &'a [u8],
}

impl<'a> PackedRef<'a> {
    /// Whether a `rows x cols` matrix of `dtype` has a packed form (Q4_1 and Q8_0, rows a
    /// multiple of eight).
    pub fn supports(dtype: DType, rows: usize, cols: usize) -> bool {
        matches!(dtype, DType::Q4_1 | DType::Q8_0)
            && rows > 0
            && rows.is_multiple_of(PACK_ROWS)
            && cols > 0
            && cols.is_multiple_of(QK)
    }

    /// `data` as the packed form (written by [`pack_into`]) of a `rows x cols` matrix.
    pub fn new(
        dtype: DType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, KernelError> {
        if packed_len(dtype, rows, cols) != Some(data.len())
            || !(data.as_ptr() as usize).is_multiple_of(2)
        {
            return Err(KernelError::Shape {
                op: "PackedRef::new",
                what: format!(
                    "{rows}x{cols} {dtype:?} packed needs {:?} bytes at an even address, got {}",
                    packed_len(dtype, rows, cols),
                    data.len()
                ),
            });
        }
        Ok(PackedRef {
            dtype,
            rows,
            cols,
            data,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / QK
    }

    fn groups_q4_1(&self) -> &'a [BlockQ4_1x8] {
        bytemuck::cast_slice(self.data)
    }

    fn groups_q8_0(&self) -> &'a [BlockQ8_0x8] {
        bytemuck::cast_slice(self.data)
    }

    /// Row `r` as f32 values (an embedding lookup), as `MatRef::dequantize_row` of the original.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<(), KernelError> {
        crate::matmul::check_dequantize_row(r, self.rows, self.cols, out.len())?;
        let nb = self.blocks_per_row();
        let (g, i) = (r / PACK_ROWS, r % PACK_ROWS);
        let range = g * nb..(g + 1) * nb;
        match self.dtype {
            DType::Q4_1 => {
                let row: Vec<BlockQ4_1> =
                    self.groups_q4_1()[range].iter().map(|b| b.row(i)).collect();
                scalar::quantize::dequantize_row_q4_1(&row, out);
            }
            DType::Q8_0 => {
                let row: Vec<BlockQ8_0> =
                    self.groups_q8_0()[range].iter().map(|b| b.row(i)).collect();
                scalar::quantize::dequantize_row_q8_0(&row, out);
            }
            _ => unreachable!("only packable types are packed"),
        }
        Ok(())
    }
}

/// A packed weight matrix that owns its bytes.
#[derive(Debug)]
pub struct PackedMat {
    dtype: DType,
    rows: usize,
    cols: usize,
    data: AlignedBytes,
}

impl PackedMat {
    /// The packed copy of `m`, or `None` when its type or shape has no eight-row kernel.
    pub fn pack(m: MatRef<'_>) -> Option<PackedMat> {
        let len = packed_len(m.dtype, m.rows, m.cols)?;
        let mut data = AlignedBytes::zeroed(len);
        pack_into(m, data.as_bytes_mut()).ok()?;
        Some(PackedMat {
            dtype: m.dtype,
            rows: m.rows,
            cols: m.cols,
            data,
        })
    }

    /// The borrowed view the matmul takes.
    pub fn as_ref(&self) -> PackedRef<'_> {
        PackedRef {
            dtype: self.dtype,
            rows: self.rows,
            cols: self.cols,
            data: self.data.as_bytes(),
        }
    }
}

/// `out` (`acts.n x w.rows`) = activations times `w` transposed, with the given kernel table;
/// row groups split over `pool`'s threads.
pub fn matmul_packed_with(
    kt: &Kernels,
    pool: &Pool,
    w: PackedRef<'_>,
    acts: &QuantizedActs,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_shapes(w.dtype, w.rows, w.cols, acts, out)?;
    let (n, m, nb) = (acts.n, w.rows, w.blocks_per_row());
    let groups = m / PACK_ROWS;
    let dst = SyncPtr(out.as_mut_ptr());
    // Decode: several pieces per thread, so a thread slowed down by the machine's other work
    // hands its share to the others. Prefill: fewer, larger pieces.
    let chunk = if n == 1 {
        pool.chunk_for(groups, 4, 1)
    } else {
        pool.chunk_for(groups, 2, 1)
    };
    pool.for_each_chunk(groups, chunk, &|gs| {
        let mut t0 = 0;
        while t0 < n {
            let t1 = (t0 + TOKEN_TILE).min(n);
            // SAFETY (both arms): `out` holds `n * m` values (checked); group `g` writes columns
            // `8g..8g+8` of rows `t0..t1` only, and each group is in one chunk. The kernel table
            // was handed out for this CPU; the activations were built for this format by
            // `quantize_acts` (consistent, with `s` / `c`), and their `nb` blocks per row match
            // the weights (`check_shapes`).
            match w.dtype {
                DType::Q4_1 => {
                    let (a, ws) = (acts.act_rows(t0..t1), w.groups_q4_1());
                    for g in gs.clone() {
                        let o = dst.get().wrapping_add(t0 * m + g * PACK_ROWS);
                        unsafe { (kt.gemm_q4_1x8)(&ws[g * nb..(g + 1) * nb], &a, o, m) };
                    }
                }
                DType::Q8_0 => {
                    let (a, ws) = (acts.act_rows(t0..t1), w.groups_q8_0());
                    for g in gs.clone() {
                        let o = dst.get().wrapping_add(t0 * m + g * PACK_ROWS);
                        unsafe { (kt.gemm_q8_0x8)(&ws[g * nb..(g + 1) * nb], &a, o, m) };
                    }
                }
                _ => unreachable!("only packable types are packed"),
            }
            t0 = t1;
        }
    });
    Ok(())
}
