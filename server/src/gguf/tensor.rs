//! Tensor descriptions and zero-copy views into a GGUF file's data section.

use ryzanstein_kernels::DType;

use super::types::GgmlType;
use crate::error::{Error, Result};

/// One tensor as described in the file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` (ne0) is the innermost dimension, the length of a row. A Linear
    /// weight with `out` outputs and `inp` inputs is `[inp, out]`.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
    /// Bytes of data (validated against the dimensions and the type at parse time).
    pub n_bytes: usize,
}

impl TensorInfo {
    /// Number of values (the product of the dimensions; 1 for a scalar).
    pub fn n_elements(&self) -> usize {
        // The parser checked that the byte size fits; the element count is at most
        // n_bytes / type_size * block_size, which cannot overflow a u64 product check it passed.
        self.dims.iter().product::<u64>() as usize
    }

    /// Length of a row (ne0), 1 for a scalar.
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }

    /// Number of rows (product of every dimension but the first).
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
}

/// A tensor's description and its bytes, borrowed from the memory map.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    pub fn name(&self) -> &'a str {
        &self.info.name
    }

    pub fn dims(&self) -> &'a [u64] {
        &self.info.dims
    }

    pub fn n_elements(&self) -> usize {
        self.info.n_elements()
    }

    /// The kernels' dtype; an error naming the tensor and its type when the kernels do not
    /// compute with that type.
    pub fn dtype(&self) -> Result<DType> {
        self.info.ggml_type.to_dtype().ok_or_else(|| {
            Error::Model(format!(
                "tensor {:?} has ggml type {}, which this engine cannot compute with \
                 (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q8_1); use a model quantised \
                 to one of those",
                self.info.name, self.info.ggml_type
            ))
        })
    }

    /// The values as f32, for F32, F16 and BF16 tensors (norm weights, small tables).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let d = self.data;
        Ok(match self.info.ggml_type {
            GgmlType::F32 => d
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            GgmlType::F16 => d
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            GgmlType::BF16 => d
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::Model(format!(
                    "tensor {:?} has ggml type {other}; only F32, F16 and BF16 tensors convert \
                     to f32 directly (dequantise quantised tensors with the kernels)",
                    self.info.name
                )))
            }
        })
    }
}
