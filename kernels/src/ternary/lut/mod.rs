//! Lookup-table ternary kernels (T-MAC / bitnet.cpp `TL1`-style): the same product as
//! [`crate::ternary::matmul`], bit for bit, computed by table lookups instead of multiplies.
//!
//! **Weights** are repacked once, at load ([`pack_into`]), from the `I2_S` codes: each row's
//! weights go in pairs `(w0, w1)` (weights `2p`, `2p + 1`), and the nine ternary pairs are a
//! 4-bit index `3 (w0 + 1) + (w1 + 1)` (code `3`, which no encoder writes, is refused). Rows go
//! in panels of [`PANEL_ROWS`] = 64 (the last panel padded with zero weights, index 4, whose
//! outputs are never written). A panel is two halves of 32 rows; for one pair, a half's 32
//! indices are 16 bytes (byte `j`: row `j` in the low nibble, row `16 + j` in the high one),
//! and a panel stores, for each group of four pairs, the first half's 64 bytes then the
//! second half's ([`scalar::index_position`]): `16 * cols` bytes per panel, 2 bits per weight
//! as `I2_S`. So the 32 indices a `pshufb` lane needs are contiguous, one step of a kernel
//! reads one contiguous run for both halves, and a panel (and the whole matrix) is read as a
//! single forward stream, which the prefetchers follow (two separate 32-row tiles, tried
//! first, left the cold-weights case well below the DRAM bandwidth). The layout is the same
//! for every instruction set, so the server packs once whichever kernels it runs.
//!
//! **Tables** are built per token, once per call: for each pair of activations `(a0, a1)`
//! and each index, the exact entry `e = w0 a0 + w1 a1 + 256` (`0..=512`), stored as two
//! 16-byte tables `L = e & 31` and `H = e >> 5` (`e = L + 32 H`). Pairs go in groups of four:
//! four `L` tables, then four `H` tables ([`scalar::table_offsets`]), so one 32-byte (AVX2)
//! or 64-byte (AVX-512) load gives the tables of two or four pairs, one per 128-bit lane, which
//! is exactly what `pshufb` wants: 16 bytes of weights times 16 table bytes per lane.
//!
//! **The kernel** (AVX2; AVX-512 is the same with four pairs per `zmm`): per step, one load
//! of 32 weight bytes (32 rows, two pairs), `and` / `srli + and` to the low and high nibbles,
//! four `pshufb` (`L` and `H` of rows 0..16 and 16..32) and four byte `add`s into u8
//! accumulators. Every eight steps the u8 sums (at most `8 * 31` and `8 * 16`) are joined by
//! `unpacklo/hi_epi8(L, H)` and `maddubs` with bytes `(1, 32)` into `sum(e)` per row as u16
//! (at most 4096, summed for up to 64 steps); those are widened to i32 every 64 steps. The
//! row's sum less `256 * cols / 2` is `sum((c - 1) * q)`. The output is formed as
//! `ternary::matmul` forms it.
//!
//! Why `L`/`H` instead of the obvious low and high bytes of an i16 entry: with i16 entries,
//! every lookup needs an `unpack` to rejoin the two bytes before it can be summed (eight
//! shuffles per 32 rows and two pairs, on the ports `pshufb` also needs). Splitting at bit 5 of
//! a non-negative entry keeps both halves small enough to sum as bytes for eight steps, so the
//! rejoining `unpack` + `maddubs` runs once per eight lookups: about 4.5 shuffles per step
//! instead of 8.
//!
//! Work items are panels; each kernel keeps one step's tables in registers for both halves,
//! and prefetches the weights [`avx2::PREFETCH`] bytes ahead into L2. Tokens are taken
//! [`TOKENS_PER_PASS`] at a time; every thread that takes panels of a pass builds that pass's
//! tables in its own buffer (tables built once and shared would move between the cores' caches
//! on every call), then runs its panels against each of them.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod scalar;

use super::{codes, shape_error, TernaryRef, BLOCK};
use crate::dispatch::Isa;
use crate::matmul::QuantizedActs;
use crate::pool::{Pool, SyncPtr};
use crate::{DType, KernelError};
use std::cell::Cell;

/// Rows per panel of the packed layout.
pub const PANEL_ROWS: usize = 64;
/// The bias added to every table entry, so that entries are `0..=512`.
pub const BIAS: i32 = 256;
/// Tokens whose tables are built at once (their tables stay in L2: `16 * cols` bytes each).
pub const TOKENS_PER_PASS: usize = 8;

/// Bytes of one packed panel of `cols`-weight rows.
pub fn panel_bytes(cols: usize) -> usize {
    PANEL_ROWS * cols / 4
}

/// Bytes of one token's tables for `cols` activations.
pub fn table_len(cols: usize) -> usize {
    16 * cols
}

/// Bytes [`pack_into`] writes for a `rows x cols` matrix (rows padded to whole panels).
pub fn packed_len(rows: usize, cols: usize) -> usize {
    rows.div_ceil(PANEL_ROWS) * panel_bytes(cols)
}

/// Checks a whole-block shape (`cols` a positive multiple of [`BLOCK`]).
fn check_cols(op: &'static str, cols: usize) -> Result<(), KernelError> {
    if cols == 0 || !cols.is_multiple_of(BLOCK) {
        return Err(shape_error(
            op,
            format!(
                "rows of {cols} ternary weights are not a whole number of {BLOCK}-weight blocks"
            ),
        ));
    }
    Ok(())
}

/// Repacks `w` into the panel layout (see the module documentation); `out` must be
/// [`packed_len`] bytes. Codes `3` are refused (they have no ternary value).
pub fn pack_into(w: TernaryRef<'_>, out: &mut [u8]) -> Result<(), KernelError> {
    let op = "lut::pack_into";
    check_cols(op, w.cols)?;
    let (rows, cols) = (w.rows, w.cols);
    if w.codes.len() != rows * cols / 4 || w.scales.len() != rows {
        return Err(shape_error(
            op,
            format!(
                "{rows}x{cols} needs {} code bytes and {rows} scales, got {} and {}",
                rows * cols / 4,
                w.codes.len(),
                w.scales.len()
            ),
        ));
    }
    if out.len() != packed_len(rows, cols) {
        return Err(shape_error(
            op,
            format!(
                "{rows}x{cols} packs into {} bytes, the buffer has {}",
                packed_len(rows, cols),
                out.len()
            ),
        ));
    }
    if let Some(r) = (0..rows).find(|&r| !codes::valid(w.row(r))) {
        return Err(shape_error(
            op,
            format!("row {r} holds the code 3, which is no ternary weight"),
        ));
    }
    out.fill(0);
    let mut values = vec![0i8; cols];
    for (t, panel) in out.chunks_exact_mut(panel_bytes(cols)).enumerate() {
        for r in 0..PANEL_ROWS {
            let row = t * PANEL_ROWS + r;
            if row < rows {
                codes::decode(w.row(row), &mut values);
            } else {
                values.fill(0);
            }
            for (p, v) in values.chunks_exact(2).enumerate() {
                let idx = scalar::index_of((v[0] + 1) as u8, (v[1] + 1) as u8);
                scalar::set_index(panel, p, r, idx);
            }
        }
    }
    Ok(())
}

/// A packed `rows x cols` ternary matrix: [`packed_len`] bytes of panels and a scale per row.
#[derive(Debug, Clone, Copy)]
pub struct LutRef<'a> {
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    pub scales: &'a [f32],
}

impl<'a> LutRef<'a> {
    pub fn new(
        rows: usize,
        cols: usize,
        data: &'a [u8],
        scales: &'a [f32],
    ) -> Result<Self, KernelError> {
        let op = "LutRef::new";
        check_cols(op, cols)?;
        if data.len() != packed_len(rows, cols) || scales.len() != rows {
            return Err(shape_error(
                op,
                format!(
                    "{rows}x{cols} needs {} packed bytes and {rows} scales, got {} and {}",
                    packed_len(rows, cols),
                    data.len(),
                    scales.len()
                ),
            ));
        }
        Ok(LutRef {
            rows,
            cols,
            data,
            scales,
        })
    }
}

/// 64 bytes, 64-aligned: the storage unit of [`LutMatrix`] (a panel is a whole number of them).
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// An owned packed matrix (its panels cache-line aligned).
#[derive(Debug, Clone)]
pub struct LutMatrix {
    rows: usize,
    cols: usize,
    data: Vec<Line>,
    scales: Vec<f32>,
}

impl LutMatrix {
    /// Packs `w` ([`pack_into`]).
    pub fn from_ternary(w: TernaryRef<'_>) -> Result<LutMatrix, KernelError> {
        check_cols("LutMatrix::from_ternary", w.cols)?;
        let mut data = vec![Line([0; 64]); packed_len(w.rows, w.cols) / 64];
        pack_into(w, bytemuck::cast_slice_mut(&mut data))?;
        Ok(LutMatrix {
            rows: w.rows,
            cols: w.cols,
            data,
            scales: w.scales.to_vec(),
        })
    }

    pub fn as_ref(&self) -> LutRef<'_> {
        LutRef {
            rows: self.rows,
            cols: self.cols,
            data: bytemuck::cast_slice(&self.data),
            scales: &self.scales,
        }
    }
}

/// `(q, tables)`: one token's tables ([`table_len`] bytes) from its activations.
pub type BuildFn = fn(&[i8], &mut [u8]);
/// `(w, cols, tables, sums)`: `sums[64 i + r] = sum((c - 1) * q)` for row `r` of panel `i`
/// of `w` (whole panels), from one token's tables.
pub type PanelSumsFn = fn(&[u8], usize, &[u8], &mut [i32]);

/// The lookup-table kernels of one instruction set.
#[derive(Debug)]
pub struct LutKernels {
    pub isa: Isa,
    pub build_tables: BuildFn,
    pub panel_sums: PanelSumsFn,
}

fn check_tables(q: &[i8], tables: &[u8]) {
    assert!(
        q.len().is_multiple_of(BLOCK) && tables.len() == table_len(q.len()),
        "lut tables: {} activations into {} bytes",
        q.len(),
        tables.len()
    );
}

fn check_panels(w: &[u8], cols: usize, tables: &[u8], sums: &[i32]) {
    assert!(
        cols > 0
            && cols.is_multiple_of(BLOCK)
            && w.len().is_multiple_of(panel_bytes(cols))
            && sums.len() == w.len() / panel_bytes(cols) * PANEL_ROWS
            && tables.len() == table_len(cols),
        "lut panel sums: {} weight bytes of {cols}-weight rows, {} table bytes, {} sums",
        w.len(),
        tables.len(),
        sums.len()
    );
}

static SCALAR: LutKernels = LutKernels {
    isa: Isa::Scalar,
    build_tables: scalar::build_tables,
    panel_sums: scalar::panel_sums,
};

#[cfg(target_arch = "x86_64")]
mod x86_tables {
    use super::*;

    fn avx2_build(q: &[i8], tables: &mut [u8]) {
        assert!(Isa::Avx2.runs(), "AVX2 kernel on a CPU without AVX2");
        check_tables(q, tables);
        // SAFETY: the CPU has AVX2, FMA and F16C (Isa::Avx2, checked above) and the lengths
        // match (checked above).
        unsafe { avx2::build_tables(q, tables) }
    }
    fn avx2_panels(w: &[u8], cols: usize, tables: &[u8], sums: &mut [i32]) {
        assert!(Isa::Avx2.runs(), "AVX2 kernel on a CPU without AVX2");
        check_panels(w, cols, tables, sums);
        // SAFETY: as above.
        unsafe { avx2::panel_sums(w, cols, tables, sums) }
    }
    fn avx512_panels(w: &[u8], cols: usize, tables: &[u8], sums: &mut [i32]) {
        assert!(
            Isa::Avx512.runs(),
            "AVX-512 kernel on a CPU without AVX-512"
        );
        check_panels(w, cols, tables, sums);
        // SAFETY: the CPU has AVX-512 F/BW and AVX2 (Isa::Avx512, checked above); the
        // lengths match (checked above).
        unsafe { avx512::panel_sums(w, cols, tables, sums) }
    }

    pub(super) static AVX2: LutKernels = LutKernels {
        isa: Isa::Avx2,
        build_tables: avx2_build,
        panel_sums: avx2_panels,
    };
    pub(super) static AVX512: LutKernels = LutKernels {
        isa: Isa::Avx512,
        build_tables: avx2_build,
        panel_sums: avx512_panels,
    };
    /// VNNI adds nothing to table lookups: the AVX-512 kernels.
    pub(super) static AVX512_VNNI: LutKernels = LutKernels {
        isa: Isa::Avx512Vnni,
        build_tables: avx2_build,
        panel_sums: avx512_panels,
    };
}

/// The kernels of `isa`, when this CPU runs it (AArch64 uses the scalar reference for now).
pub fn kernels_for(isa: Isa) -> Option<&'static LutKernels> {
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
pub fn kernels() -> &'static LutKernels {
    kernels_for(crate::isa()).unwrap_or(&SCALAR)
}

thread_local! {
    /// This thread's table buffer, kept between calls (at most
    /// `TOKENS_PER_PASS * 16 * cols` bytes plus alignment).
    static TABLES: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// One thread's tables for a pass: its buffer, taken from [`TABLES`] (and given back on
/// drop), 64-byte aligned.
struct Tables {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl Tables {
    fn take(len: usize) -> Tables {
        let mut buf = TABLES.with(Cell::take);
        if buf.len() < len + 63 {
            buf.resize(len + 63, 0);
        }
        let off = buf.as_ptr().align_offset(64);
        Tables { buf, off, len }
    }
    fn get(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }
    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl Drop for Tables {
    fn drop(&mut self) {
        TABLES.with(|c| c.set(std::mem::take(&mut self.buf)));
    }
}

/// `out[t * rows + r] = isum * scale_w[r] / scale_x[t]`, exactly as
/// [`crate::ternary::matmul`] computes it, from the packed weights.
pub fn matmul(
    kl: &LutKernels,
    pool: &Pool,
    w: LutRef<'_>,
    acts: &QuantizedActs,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let (rows, cols) = (w.rows, w.cols);
    if acts.dtype != DType::I8
        || acts.k != cols
        || out.len() != acts.n * rows
        || w.data.len() != packed_len(rows, cols)
        || w.scales.len() != rows
        || !cols.is_multiple_of(BLOCK)
    {
        return Err(shape_error(
            "lut::matmul",
            format!(
                "{rows}x{cols} packed ternary weights ({} bytes, {} scales), {}x{} {:?} \
                 activations (I8 needed), {} outputs",
                w.data.len(),
                w.scales.len(),
                acts.n,
                acts.k,
                acts.dtype,
                out.len()
            ),
        ));
    }
    if rows == 0 || acts.n == 0 {
        return Ok(());
    }
    let inv: Vec<f32> = acts.row_scale.iter().map(|s| 1.0 / s).collect();
    let (pb, tl) = (panel_bytes(cols), table_len(cols));
    let panels = rows.div_ceil(PANEL_ROWS);
    let base = SyncPtr(out.as_mut_ptr());
    let n = acts.n;
    for t0 in (0..n).step_by(TOKENS_PER_PASS) {
        let nt = TOKENS_PER_PASS.min(n - t0);
        // Every thread that takes panels builds the pass's tables itself, in its own cache:
        // tables built once by one thread would move (16 * cols bytes per token) to the other
        // cores on every call, and be invalidated there again by the next call's build.
        let build = || {
            let mut tables = Tables::take(nt * tl);
            for (i, tab) in tables.get_mut().chunks_exact_mut(tl).enumerate() {
                (kl.build_tables)(acts.i8_row(t0 + i), tab);
            }
            tables
        };
        let chunk = pool.chunk_for(panels, 4, 1);
        pool.for_each_chunk_with(panels, chunk, &build, &|tables, range| {
            let mut sums = [0i32; PANEL_ROWS];
            for p in range {
                let r0 = p * PANEL_ROWS;
                let live = (rows - r0).min(PANEL_ROWS);
                let panel = &w.data[p * pb..(p + 1) * pb];
                for (i, tab) in tables.get().chunks_exact(tl).enumerate() {
                    (kl.panel_sums)(panel, cols, tab, &mut sums);
                    let t = t0 + i;
                    for (j, &isum) in sums[..live].iter().enumerate() {
                        let r = r0 + j;
                        // SAFETY: `t * rows + r < out.len()` (`r < rows`, `t < n`, checked
                        // above), and each panel is handed out once, so the writes are
                        // disjoint.
                        unsafe {
                            *base.get().add(t * rows + r) = isum as f32 * w.scales[r] * inv[t]
                        };
                    }
                }
            }
        });
    }
    Ok(())
}
