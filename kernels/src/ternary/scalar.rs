//! The scalar reference of the ternary dot product: `sum((c - 1) * q)`, code by code.

use super::codes::code_at;

/// `sum_j (c_j - 1) * q_j` over one row (`sum` is not needed here; it is the SIMD kernels'
/// offset correction).
pub fn dot(codes: &[u8], q: &[i8], _sum: i32) -> i32 {
    super::check_dot(codes, q);
    q.iter()
        .enumerate()
        .map(|(j, &x)| (code_at(codes, j) as i32 - 1) * x as i32)
        .sum()
}

/// [`dot`] of four rows against one activation row.
pub fn dot4(codes: [&[u8]; 4], q: &[i8], sum: i32) -> [i32; 4] {
    codes.map(|c| dot(c, q, sum))
}
