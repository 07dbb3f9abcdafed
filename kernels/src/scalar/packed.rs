//! Scalar reference of the eight-row kernels over repacked weights ([`BlockQ4_1x8`],
//! [`BlockQ8_0x8`]): each of the eight rows is unpacked back to its GGUF blocks and multiplied
//! by the one-row reference kernel, so the packed SIMD kernels are held to exactly the results
//! (and the operation order) of `scalar::dot`.

use super::dot::{vec_dot_q4_1_q8_1, vec_dot_q8_0_q8_0};
use crate::formats::{BlockQ4_1x8, BlockQ8_0, BlockQ8_0x8, BlockQ8_1};

/// Activation rows for the packed kernels: `n` rows of `nb` blocks (`q`, row-major), each
/// block's scale `d` (and, for Q8_1, its `s`) as f32, and for Q8_0 rows `c[b][j] = -128 *
/// (q[4j] + q[4j+1] + q[4j+2] + q[4j+3])` of each block (`s` and `c` may be empty where the
/// kernel does not use them).
#[derive(Debug, Clone, Copy)]
pub struct ActRows<'a, B> {
    pub q: &'a [B],
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub c: &'a [[i32; 8]],
    pub nb: usize,
    pub n: usize,
}

impl<B> ActRows<'_, B> {
    /// Whether the slices hold `n` rows of `nb` blocks (`with_s`, `with_c`: those too).
    pub fn is_consistent(&self, with_s: bool, with_c: bool) -> bool {
        let len = self.n * self.nb;
        self.q.len() == len
            && self.d.len() == len
            && (!with_s || self.s.len() == len)
            && (!with_c || self.c.len() == len)
    }
}

/// Row `r` of `w` (`nb` packed blocks) times activation row `t`, for the eight rows.
pub fn gemm_q4_1x8_q8_1(w: &[BlockQ4_1x8], a: &ActRows<'_, BlockQ8_1>, t: usize) -> [f32; 8] {
    let y = &a.q[t * a.nb..(t + 1) * a.nb];
    std::array::from_fn(|r| {
        let row: Vec<_> = w.iter().map(|b| b.row(r)).collect();
        vec_dot_q4_1_q8_1(&row, y)
    })
}

/// As [`gemm_q4_1x8_q8_1`] for Q8_0 weights.
pub fn gemm_q8_0x8_q8_0(w: &[BlockQ8_0x8], a: &ActRows<'_, BlockQ8_0>, t: usize) -> [f32; 8] {
    let y = &a.q[t * a.nb..(t + 1) * a.nb];
    std::array::from_fn(|r| {
        let row: Vec<_> = w.iter().map(|b| b.row(r)).collect();
        vec_dot_q8_0_q8_0(&row, y)
    })
}
