//! Ternary (BitNet b1.58) weights times per-token int8 activations.
//!
//! Weights are `-1`, `0` or `+1` with a scale per row (BitNet's per-tensor absmean scale is
//! the same value on every row). They are stored as 2-bit codes in bitnet.cpp's `I2_S` layout
//! ([`codes`]): code `w + 1`, four to a byte, a row of `cols` weights (a multiple of
//! [`BLOCK`]) in `cols / 4` bytes; within each block of 128 weights (32 bytes), weight
//! `32 g + p` sits in bits `6 - 2g ..= 7 - 2g` of byte `p`, so one 32-byte load and four
//! shift-and-masks give four runs of 32 consecutive codes.
//!
//! Activations are quantised per row (per token) as BitNet does ([`quantize_row`]; in a
//! [`QuantizedActs`] of [`DType::I8`]):
//! `q = round(x * 127 / max|x|)`, so the product of a weight row and an activation row is an
//! exact integer `sum((c - 1) * q)`, which every instruction set computes alike; the output is
//! that sum times the row's scale divided by the activation's. The SIMD kernels compute
//! `sum(c * q) - sum(q)` with `maddubs` (AVX2, AVX-512 BW) or `vpdpbusd` (AVX-512 VNNI) on the
//! unsigned codes; [`scalar`] is the reference they are tested against, bit for bit.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod codes;
pub mod lut;
pub mod scalar;

use crate::dispatch::Isa;
use crate::matmul::QuantizedActs;
use crate::pool::{Pool, SyncPtr};
use crate::{DType, KernelError};

/// Weights per block of the code layout.
pub const BLOCK: usize = 128;
/// Bytes per block.
pub const BLOCK_BYTES: usize = BLOCK / 4;

/// A `rows x cols` ternary matrix: its codes (`cols / 4` bytes per row) and a scale per row.
#[derive(Debug, Clone, Copy)]
pub struct TernaryRef<'a> {
    pub rows: usize,
    pub cols: usize,
    pub codes: &'a [u8],
    pub scales: &'a [f32],
}

fn shape_error(op: &'static str, what: String) -> KernelError {
    KernelError::Shape { op, what }
}

impl<'a> TernaryRef<'a> {
    pub fn new(
        rows: usize,
        cols: usize,
        codes: &'a [u8],
        scales: &'a [f32],
    ) -> Result<Self, KernelError> {
        let op = "TernaryRef::new";
        if cols == 0 || !cols.is_multiple_of(BLOCK) {
            return Err(shape_error(
                op,
                format!("rows of {cols} ternary weights are not a whole number of {BLOCK}-weight blocks"),
            ));
        }
        if codes.len() != rows * cols / 4 || scales.len() != rows {
            return Err(shape_error(
                op,
                format!(
                    "{rows}x{cols} needs {} code bytes and {rows} scales, got {} and {}",
                    rows * cols / 4,
                    codes.len(),
                    scales.len()
                ),
            ));
        }
        Ok(TernaryRef {
            rows,
            cols,
            codes,
            scales,
        })
    }

    /// The codes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.cols / 4;
        &self.codes[r * rb..(r + 1) * rb]
    }
}

/// BitNet's per-token absmax quantisation (Hugging Face `BitLinear`'s activation quant):
/// `scale = 127 / max(max|x|, 1e-5)`, `q = round_ties_even(x * scale)` clamped to
/// `-128..=127`. Returns the scale and `sum(q)`.
pub fn quantize_row(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-5);
    let scale = 127.0 / max;
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        let r = round_ties_even_small(v * scale).clamp(-128.0, 127.0) as i8;
        *o = r;
        sum += r as i32;
    }
    (scale, sum)
}

/// `y.round_ties_even()` for `|y| <= 2^22` (and NaN for NaN; larger values are clamped by
/// every caller): adding and subtracting `1.5 * 2^23` rounds to an integer in the default
/// rounding mode, ties to even, without the library call `round_ties_even` becomes on CPUs
/// the baseline target does not assume SSE4.1 on.
#[inline]
pub fn round_ties_even_small(y: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let y = y.clamp(-4_194_304.0, 4_194_304.0);
    (y + MAGIC) - MAGIC
}

/// `(codes, q, sum(q))` → `sum((c - 1) * q)` over one row (`q.len() == 4 * codes.len()`, a
/// multiple of [`BLOCK`]).
pub type DotFn = fn(&[u8], &[i8], i32) -> i32;

/// [`DotFn`] of four rows (of one length) against one activation row: the SIMD kernels load
/// each run of activations once for the four.
pub type Dot4Fn = fn([&[u8]; 4], &[i8], i32) -> [i32; 4];

/// The ternary kernels of one instruction set.
#[derive(Debug)]
pub struct TernaryKernels {
    pub isa: Isa,
    pub dot: DotFn,
    pub dot4: Dot4Fn,
}

static SCALAR: TernaryKernels = TernaryKernels {
    isa: Isa::Scalar,
    dot: scalar::dot,
    dot4: scalar::dot4,
};

#[cfg(target_arch = "x86_64")]
mod x86_tables {
    use super::*;

    fn avx2_dot(codes: &[u8], q: &[i8], sum: i32) -> i32 {
        assert!(Isa::Avx2.runs(), "AVX2 kernel on a CPU without AVX2");
        super::check_dot(codes, q);
        // SAFETY: the CPU has AVX2, FMA and F16C (Isa::Avx2, checked above) and the lengths
        // match (checked above).
        unsafe { avx2::dot(codes, q, sum) }
    }
    fn avx512_dot(codes: &[u8], q: &[i8], sum: i32) -> i32 {
        assert!(
            Isa::Avx512.runs(),
            "AVX-512 kernel on a CPU without AVX-512"
        );
        super::check_dot(codes, q);
        // SAFETY: as above, for AVX-512 F/BW.
        unsafe { avx512::dot(codes, q, sum) }
    }
    fn vnni_dot(codes: &[u8], q: &[i8], sum: i32) -> i32 {
        assert!(
            Isa::Avx512Vnni.runs(),
            "VNNI kernel on a CPU without AVX-512 VNNI"
        );
        super::check_dot(codes, q);
        // SAFETY: as above, for AVX-512 VNNI.
        unsafe { avx512::dot_vnni(codes, q, sum) }
    }

    fn avx2_dot4(codes: [&[u8]; 4], q: &[i8], sum: i32) -> [i32; 4] {
        assert!(Isa::Avx2.runs(), "AVX2 kernel on a CPU without AVX2");
        codes.iter().for_each(|c| super::check_dot4(c, codes[0], q));
        // SAFETY: as for `avx2_dot`, for each of the four rows (checked above).
        unsafe { avx2::dot4(codes, q, sum) }
    }
    fn avx512_dot4(codes: [&[u8]; 4], q: &[i8], sum: i32) -> [i32; 4] {
        assert!(
            Isa::Avx512.runs(),
            "AVX-512 kernel on a CPU without AVX-512"
        );
        codes.iter().for_each(|c| super::check_dot4(c, codes[0], q));
        // SAFETY: as for `avx512_dot`, for each of the four rows (checked above).
        unsafe { avx512::dot4(codes, q, sum) }
    }
    fn vnni_dot4(codes: [&[u8]; 4], q: &[i8], sum: i32) -> [i32; 4] {
        assert!(
            Isa::Avx512Vnni.runs(),
            "VNNI kernel on a CPU without AVX-512 VNNI"
        );
        codes.iter().for_each(|c| super::check_dot4(c, codes[0], q));
        // SAFETY: as for `vnni_dot`, for each of the four rows (checked above).
        unsafe { avx512::dot4_vnni(codes, q, sum) }
    }

    pub(super) static AVX2: TernaryKernels = TernaryKernels {
        isa: Isa::Avx2,
        dot: avx2_dot,
        dot4: avx2_dot4,
    };
    pub(super) static AVX512: TernaryKernels = TernaryKernels {
        isa: Isa::Avx512,
        dot: avx512_dot,
        dot4: avx512_dot4,
    };
    pub(super) static AVX512_VNNI: TernaryKernels = TernaryKernels {
        isa: Isa::Avx512Vnni,
        dot: vnni_dot,
        dot4: vnni_dot4,
    };
}

fn check_dot(codes: &[u8], q: &[i8]) {
    assert!(
        q.len() == codes.len() * 4 && q.len().is_multiple_of(BLOCK),
        "ternary dot: {} codes bytes against {} activations",
        codes.len(),
        q.len()
    );
}

/// [`check_dot`] for one of four rows, which must all be as long as the first.
#[cfg(target_arch = "x86_64")]
fn check_dot4(codes: &[u8], first: &[u8], q: &[i8]) {
    assert_eq!(
        codes.len(),
        first.len(),
        "ternary dot4: rows of different lengths"
    );
    check_dot(codes, q);
}

/// The kernels of `isa`, when this CPU runs it (AArch64 uses the scalar reference for now).
pub fn kernels_for(isa: Isa) -> Option<&'static TernaryKernels> {
    if !isa.runs() {
        return None;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(&x86_tables::AVX2),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(&x86_tables::AVX512),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Some(&x86_tables::AVX512_VNNI),
        _ => Some(&SCALAR),
    }
}

/// The kernels of the instruction set in use ([`crate::isa`]).
pub fn kernels() -> &'static TernaryKernels {
    kernels_for(crate::isa()).unwrap_or(&SCALAR)
}

/// Weight rows per piece of work (a multiple of four, for [`TernaryKernels::dot4`]): their
/// codes stay in L1 while every activation row passes.
const ROWS_PER_TASK: usize = 16;

/// `out[t * rows + r] = sum_i w[r][i] * x[t][i]`, with `w` ternary times its row scale and
/// `x` the quantised activations divided by their scale: `isum * scale_w[r] / scale_x[t]`.
pub fn matmul(
    kt: &TernaryKernels,
    pool: &Pool,
    w: TernaryRef<'_>,
    acts: &QuantizedActs,
    out: &mut [f32],
) -> Result<(), KernelError> {
    if acts.dtype != DType::I8 || acts.k != w.cols || out.len() != acts.n * w.rows {
        return Err(shape_error(
            "ternary::matmul",
            format!(
                "{}x{} ternary weights, {}x{} {:?} activations (I8 needed), {} outputs",
                w.rows,
                w.cols,
                acts.n,
                acts.k,
                acts.dtype,
                out.len()
            ),
        ));
    }
    let rows = w.rows;
    let inv: Vec<f32> = acts.row_scale.iter().map(|s| 1.0 / s).collect();
    let base = SyncPtr(out.as_mut_ptr());
    let groups = rows.div_ceil(ROWS_PER_TASK);
    pool.for_each_chunk(groups, pool.chunk_for(groups, 4, 1), &|range| {
        for g in range {
            let (start, end) = (g * ROWS_PER_TASK, ((g + 1) * ROWS_PER_TASK).min(rows));
            for (t, (&sum, &inv)) in acts.row_sum.iter().zip(&inv).enumerate() {
                let q = acts.i8_row(t);
                let mut r = start;
                while r < end {
                    let isums: &[i32] = &if r + 4 <= end {
                        (kt.dot4)(std::array::from_fn(|k| w.row(r + k)), q, sum)
                    } else {
                        [(kt.dot)(w.row(r), q, sum), 0, 0, 0]
                    };
                    let n = if r + 4 <= end { 4 } else { 1 };
                    for (k, &isum) in isums[..n].iter().enumerate() {
                        // SAFETY: `t * rows + r + k < out.len()` (checked above), and each
                        // row belongs to one group, handed out once, so the writes are
                        // disjoint.
                        unsafe {
                            *base.get().add(t * rows + r + k) = isum as f32 * w.scales[r + k] * inv
                        };
                    }
                    r += n;
                }
            }
        }
    });
    Ok(())
}
