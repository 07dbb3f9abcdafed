//! Shape-checked entry points: `out[n][m] = sum_k x[n][k] * w[m][k]` over quantised weights.

use crate::{DType, KernelError};

/// A row-major weight matrix of `rows` rows, each `cols` values in `dtype`, borrowed as bytes.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> MatRef<'a> {
    pub fn new(dtype: DType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self, KernelError> {
        let rb = dtype.row_bytes(cols).ok_or(KernelError::RaggedBlocks {
            op: "MatRef::new",
            dtype,
            cols,
            block: dtype.block_size(),
        })?;
        if rb * rows != data.len() {
            return Err(KernelError::Shape {
                op: "MatRef::new",
                what: format!("{rows}x{cols} {dtype:?} needs {} bytes, got {}", rb * rows, data.len()),
            });
        }
        Ok(MatRef { dtype, rows, cols, data })
    }
}

/// `out` (n x w.rows) = `x` (n x w.cols) times `w` transposed.
pub fn matmul(w: MatRef<'_>, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    let _ = (w, x, out);
    Err(KernelError::Unsupported { op: "matmul", dtype: DType::F32 })
}
