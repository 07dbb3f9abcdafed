//! Weight and activation storage formats: GGUF's block layouts (ggml's `block_q4_0` and
//! friends, K-quants included), and the eight-row packed blocks.

/// Element/block type of a tensor, as the kernels see it (ggml's names).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q8_1,
    Q4_K,
    Q6_K,
    Q8_K,
    /// Ternary weights as 2-bit codes in bitnet.cpp's I2_S layout (see [`crate::ternary`]);
    /// their scales live beside the matrix, one per row.
    I2S,
    /// Activations quantised per row to int8 (BitNet's per-token absmax), with each row's
    /// scale and sum beside them: the activation format of [`DType::I2S`].
    I8,
}

impl DType {
    /// Values per block (1 for plain floats).
    pub const fn block_size(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 | DType::I8 => 1,
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q8_0 | DType::Q8_1 => QK,
            DType::Q4_K | DType::Q6_K | DType::Q8_K => QK_K,
            DType::I2S => crate::ternary::BLOCK,
        }
    }
    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q8_0 => 34,
            DType::Q8_1 => 36,
            DType::Q4_K => 144,
            DType::Q6_K => 210,
            DType::Q8_K => 292,
            DType::I2S => crate::ternary::BLOCK_BYTES,
            DType::I8 => 1,
        }
    }
    /// Bytes of one row of `cols` values, or `None` when `cols` is not a whole number of blocks.
    pub const fn row_bytes(self, cols: usize) -> Option<usize> {
        if !cols.is_multiple_of(self.block_size()) {
            return None;
        }
        Some(cols / self.block_size() * self.type_size())
    }
}

impl DType {
    /// The activation format this weight type's dot product consumes (llama.cpp's `vec_dot_type`):
    /// activations are quantised to it before the product, exactly as llama.cpp does.
    pub const fn vec_dot_type(self) -> DType {
        match self {
            DType::F32 => DType::F32,
            DType::F16 => DType::F16,
            DType::BF16 => DType::BF16,
            DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => DType::Q8_0,
            DType::Q4_1 | DType::Q8_1 => DType::Q8_1,
            DType::Q4_K | DType::Q6_K | DType::Q8_K => DType::Q8_K,
            DType::I2S | DType::I8 => DType::I8,
        }
    }
}

use half::f16;

/// 32 weights: `w = d * (q - 8)`, q a nibble; element j in the low nibble of `qs[j]`, element
/// j + 16 in its high nibble.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}

/// 32 weights: `w = d * q + m`, q a nibble laid out as in [`BlockQ4_0`].
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; 16],
}

/// 32 weights: `w = d * (q - 16)`, q five bits: the low four as in [`BlockQ4_0`], the fifth
/// bit of element j in bit j of the little-endian `qh`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// 32 values: `x = d * q`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}

/// 32 values: `x = d * q`, with `s = d * sum(q)` kept for the Q4_1 offset term.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; 32],
}

/// Values per quantised block.
pub const QK: usize = 32;

/// Values per K-quant super-block ([`BlockQ4_K`], [`BlockQ6_K`], [`BlockQ8_K`]).
pub const QK_K: usize = 256;

/// 256 weights in eight sub-blocks of 32: `w = d * sc[j] * q - dmin * m[j]` for sub-block `j`,
/// q a nibble, `sc` and `m` six-bit unsigned (ggml's `block_q4_K`).
///
/// `scales` packs the 16 six-bit numbers in 12 bytes: for `j < 4`, `sc[j]` and `m[j]` are the
/// low six bits of `scales[j]` and `scales[j + 4]`; for `j >= 4`, the low nibble of
/// `scales[j + 4]` topped by the two high bits of `scales[j - 4]` (sc), and the high nibble of
/// `scales[j + 4]` topped by the two high bits of `scales[j]` (m).
///
/// `qs` holds the nibbles in four 32-byte chunks: value `64c + i` (`i < 32`) is the low nibble
/// of `qs[32c + i]` (sub-block `2c`), value `64c + 32 + i` its high nibble (sub-block `2c + 1`).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

/// 256 weights in sixteen sub-blocks of 16: `w = d * scales[v / 16] * (q - 32)`, q six bits
/// (ggml's `block_q6_K`).
///
/// Each half `h` (values `128h..128h + 128`) uses `ql[64h..64h + 64]` and `qh[32h..32h + 32]`:
/// for `i < 32`, values `i`, `32 + i`, `64 + i`, `96 + i` of the half take their low four bits
/// from the low nibble of `ql[i]`, the low nibble of `ql[32 + i]`, the high nibble of `ql[i]`,
/// the high nibble of `ql[32 + i]`, and their top two bits from bits 0-1, 2-3, 4-5, 6-7 of
/// `qh[i]`.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6_K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: f16,
}

/// 256 activations: `x = d * q`, with `bsums[k]` the sum of `q[16k..16k + 16]` (the K-quants'
/// activation format, ggml's `block_q8_K`).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_K {
    pub d: f32,
    pub qs: [i8; 256],
    pub bsums: [i16; 16],
}

/// Rows interleaved in one packed block ([`BlockQ4_1x8`], [`BlockQ8_0x8`]).
pub const PACK_ROWS: usize = 8;

/// Block `b` of eight Q4_1 rows, repacked at load time for the eight-row kernels: the scales
/// and minimums of the eight rows side by side, and the quants in groups of four bytes:
/// `qs[32 * j + 4 * r + i]` is byte `4 * j + i` of row `r`'s `qs`. One 32-byte load then
/// holds, for all eight rows, the values `4j..4j+4` (low nibbles) and `16+4j..16+4j+4` (high
/// nibbles): one lane of each row's 8-lane accumulator.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1x8 {
    pub d: [f16; 8],
    pub m: [f16; 8],
    pub qs: [u8; 128],
}

/// Block `b` of eight Q8_0 rows, repacked like [`BlockQ4_1x8`]: `qs[32 * j + 4 * r + i]` is
/// value `4 * j + i` of row `r`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0x8 {
    pub d: [f16; 8],
    pub qs: [i8; 256],
}

impl BlockQ4_1x8 {
    /// Interleave block `b` of eight rows.
    pub fn pack(rows: [&BlockQ4_1; 8]) -> Self {
        let mut out = BlockQ4_1x8 {
            d: rows.map(|r| r.d),
            m: rows.map(|r| r.m),
            qs: [0; 128],
        };
        for (r, row) in rows.iter().enumerate() {
            for j in 0..4 {
                out.qs[32 * j + 4 * r..32 * j + 4 * r + 4]
                    .copy_from_slice(&row.qs[4 * j..4 * j + 4]);
            }
        }
        out
    }
    /// Row `r`'s block back in the GGUF layout.
    pub fn row(&self, r: usize) -> BlockQ4_1 {
        let mut qs = [0u8; 16];
        for j in 0..4 {
            qs[4 * j..4 * j + 4].copy_from_slice(&self.qs[32 * j + 4 * r..32 * j + 4 * r + 4]);
        }
        BlockQ4_1 {
            d: self.d[r],
            m: self.m[r],
            qs,
        }
    }
}

impl BlockQ8_0x8 {
    /// Interleave block `b` of eight rows.
    pub fn pack(rows: [&BlockQ8_0; 8]) -> Self {
        let mut out = BlockQ8_0x8 {
            d: rows.map(|r| r.d),
            qs: [0; 256],
        };
        for (r, row) in rows.iter().enumerate() {
            for j in 0..8 {
                out.qs[32 * j + 4 * r..32 * j + 4 * r + 4]
                    .copy_from_slice(&row.qs[4 * j..4 * j + 4]);
            }
        }
        out
    }
    /// Row `r`'s block back in the GGUF layout.
    pub fn row(&self, r: usize) -> BlockQ8_0 {
        let mut qs = [0i8; 32];
        for j in 0..8 {
            qs[4 * j..4 * j + 4].copy_from_slice(&self.qs[32 * j + 4 * r..32 * j + 4 * r + 4]);
        }
        BlockQ8_0 { d: self.d[r], qs }
    }
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1x8>() == 8 * 20);
const _: () = assert!(std::mem::size_of::<BlockQ8_0x8>() == 8 * 34);

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::size_of::<BlockQ4_K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ6_K>() == 210);
const _: () = assert!(std::mem::size_of::<BlockQ8_K>() == 292);
const _: () = assert!(DType::Q4_0.type_size() == std::mem::size_of::<BlockQ4_0>());
const _: () = assert!(DType::Q4_1.type_size() == std::mem::size_of::<BlockQ4_1>());
const _: () = assert!(DType::Q8_0.type_size() == std::mem::size_of::<BlockQ8_0>());
const _: () = assert!(DType::Q8_1.type_size() == std::mem::size_of::<BlockQ8_1>());
const _: () = assert!(DType::Q5_0.type_size() == std::mem::size_of::<BlockQ5_0>());
const _: () = assert!(DType::Q4_K.type_size() == std::mem::size_of::<BlockQ4_K>());
const _: () = assert!(DType::Q6_K.type_size() == std::mem::size_of::<BlockQ6_K>());
const _: () = assert!(DType::Q8_K.type_size() == std::mem::size_of::<BlockQ8_K>());

/// A byte buffer aligned for every block and float type, for quantised activations.
#[derive(Debug, Clone, Default)]
pub struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    pub fn zeroed(len: usize) -> Self {
        AlignedBytes {
            words: vec![0; len.div_ceil(8)],
            len,
        }
    }
    /// Make it `len` bytes long, keeping the allocation when it is large enough (new bytes,
    /// if any, are zero; kept bytes keep their values).
    pub fn resize(&mut self, len: usize) {
        self.words.resize(len.div_ceil(8), 0);
        self.len = len;
    }
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}
