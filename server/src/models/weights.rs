//! Where a model's weight bytes live: zero-copy ranges of a memory-mapped GGUF file, or owned
//! buffers (converted or realigned tensors, Hugging Face checkpoints), and the copies repacked
//! at load time for the eight-row kernels where the type and shape have them.
//!
//! The packed copies of a model share one arena ([`Store::pack`]), in the order the forward
//! pass reads them, so a decode step streams one contiguous range; the arena is an anonymous
//! mapping that asks for transparent huge pages (fewer TLB misses over ~100 MB per token).

use crate::gguf::GgmlType;
use crate::gguf::GgufFile;
use crate::{Error, Result};
use ryzanstein_kernels::formats::AlignedBytes;
use ryzanstein_kernels::packed::{pack_into, packed_len};
use ryzanstein_kernels::ternary::lut::LutRef;
use ryzanstein_kernels::ternary::{self, codes, TernaryRef};
use ryzanstein_kernels::{DType, MatRef, PackedRef};

/// The backing store every [`Weight`] of a model points into.
pub(crate) struct Store {
    gguf: Option<GgufFile>,
    arena: Arena,
}

/// The packed weights' bytes.
enum Arena {
    None,
    Map(memmap2::Mmap),
    Heap(AlignedBytes),
}

impl Arena {
    fn bytes(&self) -> &[u8] {
        match self {
            Arena::None => &[],
            Arena::Map(m) => m,
            Arena::Heap(b) => b.as_bytes(),
        }
    }
}

/// Packed matrices start at multiples of this many bytes in the arena (a cache line).
const ARENA_ALIGN: usize = 64;

impl Store {
    pub fn gguf(file: GgufFile) -> Store {
        Store {
            gguf: Some(file),
            arena: Arena::None,
        }
    }
    pub fn owned() -> Store {
        Store {
            gguf: None,
            arena: Arena::None,
        }
    }

    /// Repack `weights` (in this order) into one arena where the eight-row kernels exist for
    /// their type and shape, and (`lut`) ternary matrices into the lookup-table kernels'
    /// tiles; see [`Weight::release_original`] for what happens to the originals.
    pub fn pack(&mut self, weights: &mut [&mut Weight], lut: bool) -> Result<()> {
        let mut total = 0usize;
        let mut ranges = Vec::with_capacity(weights.len());
        for w in weights.iter() {
            let len = match w.dtype {
                DType::I2S if lut => Some(ternary::lut::packed_len(w.rows, w.cols)),
                _ => packed_len(w.dtype, w.rows, w.cols),
            };
            let range = match len {
                Some(len) if w.packed.is_none() => {
                    let start = total.next_multiple_of(ARENA_ALIGN);
                    total = start + len;
                    Some(start..start + len)
                }
                _ => None,
            };
            ranges.push(range);
        }
        if total == 0 {
            return Ok(());
        }
        let mut map = memmap2::MmapMut::map_anon(total).ok();
        if let Some(m) = &map {
            // Best effort: without transparent huge pages the arena still works.
            let _ = m.advise(memmap2::Advice::HugePage);
        }
        let mut heap = if map.is_none() {
            Some(AlignedBytes::zeroed(total))
        } else {
            None
        };
        let buf: &mut [u8] = match (&mut map, &mut heap) {
            (Some(m), _) => &mut m[..],
            (None, Some(h)) => h.as_bytes_mut(),
            (None, None) => unreachable!("one of the two is allocated"),
        };
        for (w, range) in weights.iter_mut().zip(&ranges) {
            if let Some(r) = range {
                match w.ternary(self) {
                    Some(t) => ternary::lut::pack_into(t, &mut buf[r.clone()]),
                    None => pack_into(w.mat(self), &mut buf[r.clone()]),
                }
                .map_err(Error::Kernel)?;
                // Let the original go at once, so the peak resident set holds one of each.
                w.release_original(self);
            }
        }
        self.arena = match (map, heap) {
            (Some(m), _) => Arena::Map(
                m.make_read_only()
                    .map_err(|e| Error::Model(format!("packed weights: {e}")))?,
            ),
            (None, Some(h)) => Arena::Heap(h),
            (None, None) => unreachable!("one of the two is allocated"),
        };
        for (w, range) in weights.iter_mut().zip(ranges) {
            if range.is_some() {
                w.packed = range;
            }
        }
        Ok(())
    }
}

enum Bytes {
    /// `start..start + len` of the GGUF file's bytes.
    Mapped {
        start: usize,
        len: usize,
    },
    Owned(AlignedBytes),
}

/// A 2-D weight (`rows` x `cols`, row-major) in some [`DType`].
pub(crate) struct Weight {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    bytes: Bytes,
    /// Where the repacked copy the matmuls use lies in the store's arena, once
    /// [`Store::pack`] made one.
    packed: Option<std::ops::Range<usize>>,
    /// [`DType::I2S`]: each row's scale (the weights are the ternary codes times it).
    row_scales: Vec<f32>,
    /// The activations' width: `cols`, or fewer for ternary rows padded with zero weights to
    /// whole blocks ([`Weight::from_ternary_padded`]); the activations are padded to match.
    pub in_cols: usize,
}

impl Weight {
    /// Borrow tensor `name` of a GGUF file as a `rows x cols` matrix (ggml dims `[cols, rows...]`).
    pub fn from_gguf(file: &GgufFile, name: &str) -> Result<Weight> {
        let view = file.tensor(name)?;
        if view.info.ggml_type.is_ternary() {
            return Self::ternary_from_gguf(file, name);
        }
        let dtype = view.dtype()?;
        let cols = view.info.row_len();
        let rows = view.info.n_rows();
        let start = view.data.as_ptr() as usize - file.bytes().as_ptr() as usize;
        let w = Weight {
            dtype,
            rows,
            cols,
            bytes: Bytes::Mapped {
                start,
                len: view.data.len(),
            },
            packed: None,
            row_scales: Vec::new(),
            in_cols: cols,
        };
        // Validate shape and alignment once, at load.
        MatRef::new(dtype, rows, cols, view.data)
            .map_err(|e| Error::model_file(file.path(), format!("tensor {name:?}: {e}")))?;
        Ok(w)
    }

    /// A ternary GGUF tensor as codes and row scales: bitnet.cpp's I2_S is the codes' own
    /// layout and stays mapped (its one scale follows the codes); TQ2_0 and TQ1_0 rows are
    /// converted, and each row's blocks must share one scale (a BitNet model's do).
    fn ternary_from_gguf(file: &GgufFile, name: &str) -> Result<Weight> {
        let view = file.tensor(name)?;
        let (cols, rows) = (view.info.row_len(), view.info.n_rows());
        let bad = |what: String| Error::model_file(file.path(), format!("tensor {name:?}: {what}"));
        if !cols.is_multiple_of(ternary::BLOCK) {
            return Err(bad(format!(
                "ternary rows of {cols} weights are not a whole number of {}-weight blocks",
                ternary::BLOCK
            )));
        }
        let code_len = rows * cols / 4;
        match view.info.ggml_type {
            GgmlType::I2_S => {
                let codes = &view.data[..code_len];
                let s = &view.data[code_len..code_len + 4];
                let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                if !(scale.is_finite() && scale >= 0.0) {
                    return Err(bad(format!(
                        "the I2_S scale is {scale}; the file is corrupt"
                    )));
                }
                if !codes::valid(codes) {
                    return Err(bad(
                        "an I2_S code is 3, which stands for no ternary value; the file is corrupt"
                            .into(),
                    ));
                }
                let start = codes.as_ptr() as usize - file.bytes().as_ptr() as usize;
                Ok(Weight {
                    dtype: DType::I2S,
                    rows,
                    cols,
                    bytes: Bytes::Mapped {
                        start,
                        len: code_len,
                    },
                    packed: None,
                    row_scales: vec![scale; rows],
                    in_cols: cols,
                })
            }
            t => {
                let row_bytes = view.data.len() / rows.max(1);
                let mut out = vec![0u8; code_len];
                let mut scales = Vec::with_capacity(rows);
                for (r, (src, dst)) in view
                    .data
                    .chunks_exact(row_bytes)
                    .zip(out.chunks_exact_mut(cols / 4))
                    .enumerate()
                {
                    let scale = match t {
                        GgmlType::TQ2_0 => codes::from_tq2_0(src, dst),
                        _ => codes::from_tq1_0(src, dst),
                    }
                    .map_err(|e| bad(format!("row {r}: {e}")))?;
                    scales.push(scale);
                }
                Weight::from_ternary(rows, cols, &out, scales)
            }
        }
    }

    /// A 0 x 0 placeholder (while a matrix is being replaced).
    pub fn empty() -> Weight {
        Weight {
            dtype: DType::F32,
            rows: 0,
            cols: 0,
            bytes: Bytes::Owned(AlignedBytes::zeroed(0)),
            packed: None,
            row_scales: Vec::new(),
            in_cols: 0,
        }
    }

    /// An owned matrix from raw bytes in `dtype` (copied into an aligned buffer).
    pub fn owned(dtype: DType, rows: usize, cols: usize, data: &[u8]) -> Result<Weight> {
        let mut buf = AlignedBytes::zeroed(data.len());
        buf.as_bytes_mut().copy_from_slice(data);
        MatRef::new(dtype, rows, cols, buf.as_bytes()).map_err(Error::Kernel)?;
        Ok(Weight {
            dtype,
            rows,
            cols,
            bytes: Bytes::Owned(buf),
            packed: None,
            row_scales: Vec::new(),
            in_cols: cols,
        })
    }

    /// An owned ternary matrix: its codes ([`DType::I2S`], `cols / 4` bytes per row) and a
    /// scale per row.
    pub fn from_ternary(
        rows: usize,
        cols: usize,
        codes: &[u8],
        scales: Vec<f32>,
    ) -> Result<Weight> {
        TernaryRef::new(rows, cols, codes, &scales).map_err(Error::Kernel)?;
        let mut w = Weight::owned(DType::I2S, rows, cols, codes)?;
        w.row_scales = scales;
        Ok(w)
    }

    /// An owned ternary matrix for `in_cols`-wide activations whose rows are padded with zero
    /// weights to whole blocks: `cols = in_cols` rounded up to [`ternary::BLOCK`], and `codes`
    /// holds `cols / 4` bytes per row.
    pub fn from_ternary_padded(
        rows: usize,
        in_cols: usize,
        codes: &[u8],
        scales: Vec<f32>,
    ) -> Result<Weight> {
        let mut w = Weight::from_ternary(
            rows,
            in_cols.next_multiple_of(ternary::BLOCK),
            codes,
            scales,
        )?;
        w.in_cols = in_cols;
        Ok(w)
    }

    /// The ternary view of a [`DType::I2S`] matrix (`None` for other types, and once packed
    /// for the lookup-table kernels: see [`Weight::lut`]).
    pub fn ternary<'a>(&'a self, store: &'a Store) -> Option<TernaryRef<'a>> {
        (self.dtype == DType::I2S && self.packed.is_none()).then(|| TernaryRef {
            rows: self.rows,
            cols: self.cols,
            codes: self.mat(store).data,
            scales: &self.row_scales,
        })
    }

    /// After packing: owned originals are dropped (the packed copy holds the same values);
    /// mapped ones stay mapped and untouched, their pages released from the resident set.
    fn release_original(&mut self, store: &Store) {
        match &self.bytes {
            Bytes::Owned(_) => self.bytes = Bytes::Owned(AlignedBytes::zeroed(0)),
            Bytes::Mapped { start, len } => {
                if let Some(file) = &store.gguf {
                    file.release(*start, *len);
                }
            }
        }
    }

    /// A ternary matrix's lookup-table tiles, if [`Store::pack`] made them.
    pub fn lut<'a>(&'a self, store: &'a Store) -> Option<LutRef<'a>> {
        let r = self.packed.clone().filter(|_| self.dtype == DType::I2S)?;
        Some(
            LutRef::new(
                self.rows,
                self.cols,
                &store.arena.bytes()[r],
                &self.row_scales,
            )
            .expect("packed ranges are laid out for their matrix"),
        )
    }

    /// The repacked copy, if [`Store::pack`] made one.
    pub fn packed<'a>(&self, store: &'a Store) -> Option<PackedRef<'a>> {
        let r = self.packed.clone().filter(|_| self.dtype != DType::I2S)?;
        Some(
            PackedRef::new(self.dtype, self.rows, self.cols, &store.arena.bytes()[r])
                .expect("packed ranges are laid out for their matrix"),
        )
    }

    /// Row `r` as f32 values (an embedding lookup).
    pub fn dequantize_row(&self, store: &Store, r: usize, out: &mut [f32]) -> Result<()> {
        match self.packed(store) {
            Some(p) => p.dequantize_row(r, out)?,
            None => self.mat(store).dequantize_row(r, out)?,
        }
        Ok(())
    }

    /// The original matrix (empty for an owned weight that was packed).
    pub fn mat<'a>(&'a self, store: &'a Store) -> MatRef<'a> {
        let data = match &self.bytes {
            Bytes::Mapped { start, len } => {
                let file = store
                    .gguf
                    .as_ref()
                    .expect("mapped weights come with their GGUF file");
                &file.bytes()[*start..*start + *len]
            }
            Bytes::Owned(b) => b.as_bytes(),
        };
        MatRef {
            dtype: self.dtype,
            rows: self.rows,
            cols: self.cols,
            data,
        }
    }
}
