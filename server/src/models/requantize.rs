//! Load-time requantisation of a model's weights: BitNet's absmean ternarisation of the
//! projections (`--quantize ternary`) and a Q8_0 output matrix (`--lm-head`).

use super::weights::{Store, Weight};
use crate::{Error, Result};
use ryzanstein_kernels::ternary::{self, codes};
use ryzanstein_kernels::DType;

/// Every row of `w` as f32 values (`rows x in_cols`).
fn to_f32(w: &Weight, store: &Store) -> Result<Vec<f32>> {
    let mut f = vec![0f32; w.rows * w.in_cols];
    for (r, out) in f.chunks_exact_mut(w.in_cols).enumerate() {
        w.dequantize_row(store, r, out)?;
    }
    Ok(f)
}

/// `w` ternarised with one absmean scale for the tensor ([`codes::ternarize`]), its rows
/// padded with zero weights to whole blocks. A ternary `w` is returned as it is.
pub(crate) fn ternarise(w: Weight, store: &Store) -> Result<Weight> {
    if w.dtype == DType::I2S {
        return Ok(w);
    }
    let (rows, cols) = (w.rows, w.in_cols);
    let values = to_f32(&w, store)?;
    let padded = cols.next_multiple_of(ternary::BLOCK);
    let mut code_bytes = vec![0u8; rows * padded / 4];
    let scale = codes::ternarize(&values, rows, cols, padded, &mut code_bytes);
    Weight::from_ternary_padded(rows, cols, &code_bytes, vec![scale; rows])
}

/// Whether [`to_q8_0`] applies to `w`: a float matrix whose rows are whole Q8_0 blocks.
pub(crate) fn q8_0_applies(w: &Weight) -> bool {
    matches!(w.dtype, DType::F32 | DType::F16 | DType::BF16)
        && w.cols.is_multiple_of(DType::Q8_0.block_size())
}

/// `w` (a float matrix, see [`q8_0_applies`]) quantised to Q8_0, row by row.
pub(crate) fn to_q8_0(w: &Weight, store: &Store) -> Result<Weight> {
    if !q8_0_applies(w) {
        return Err(Error::Model(format!(
            "a {:?} matrix of {} columns cannot be requantised to Q8_0 (float rows of whole \
             {}-value blocks only)",
            w.dtype,
            w.cols,
            DType::Q8_0.block_size()
        )));
    }
    let kt = ryzanstein_kernels::dispatch::kernels();
    let row_bytes = w.cols / DType::Q8_0.block_size() * DType::Q8_0.type_size();
    let mut bytes = vec![0u8; w.rows * row_bytes];
    let mut row = vec![0f32; w.cols];
    for (r, out) in bytes.chunks_exact_mut(row_bytes).enumerate() {
        w.dequantize_row(store, r, &mut row)?;
        (kt.quantize_q8_0)(&row, bytemuck::cast_slice_mut(out));
    }
    Weight::owned(DType::Q8_0, w.rows, w.cols, &bytes)
}
