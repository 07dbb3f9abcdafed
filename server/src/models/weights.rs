//! Where a model's weight bytes live: zero-copy ranges of a memory-mapped GGUF file, or owned
//! buffers (converted or realigned tensors, Hugging Face checkpoints), and the copy repacked at
//! load time for the eight-row kernels where the type and shape have them.

use crate::gguf::GgufFile;
use crate::{Error, Result};
use ryzanstein_kernels::formats::AlignedBytes;
use ryzanstein_kernels::{DType, MatRef, PackedMat};

/// The backing store every [`Weight`] of a model points into.
pub(crate) struct Store {
    gguf: Option<GgufFile>,
}

impl Store {
    pub fn gguf(file: GgufFile) -> Store {
        Store { gguf: Some(file) }
    }
    pub fn owned() -> Store {
        Store { gguf: None }
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
    /// The repacked copy the matmuls use, once [`Weight::pack`] made one.
    packed: Option<PackedMat>,
}

impl Weight {
    /// Borrow tensor `name` of a GGUF file as a `rows x cols` matrix (ggml dims `[cols, rows...]`).
    pub fn from_gguf(file: &GgufFile, name: &str) -> Result<Weight> {
        let view = file.tensor(name)?;
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
        };
        // Validate shape and alignment once, at load.
        MatRef::new(dtype, rows, cols, view.data)
            .map_err(|e| Error::model_file(file.path(), format!("tensor {name:?}: {e}")))?;
        Ok(w)
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
        })
    }

    /// Repack for the eight-row kernels where they exist for this type and shape. Owned
    /// originals are dropped (the packed copy holds the same values); mapped ones stay mapped
    /// and untouched, their pages released from the resident set. Returns whether a packed
    /// copy was made.
    pub fn pack(&mut self, store: &Store) -> bool {
        if self.packed.is_some() || !PackedMat::supports(self.dtype, self.rows, self.cols) {
            return self.packed.is_some();
        }
        self.packed = PackedMat::pack(self.mat(store));
        if self.packed.is_some() {
            match &self.bytes {
                Bytes::Owned(_) => self.bytes = Bytes::Owned(AlignedBytes::zeroed(0)),
                // The kernels read the packed copy only: let the mapped pages go.
                Bytes::Mapped { start, len } => {
                    if let Some(file) = &store.gguf {
                        file.release(*start, *len);
                    }
                }
            }
        }
        self.packed.is_some()
    }

    /// The repacked copy, if [`Weight::pack`] made one.
    pub fn packed(&self) -> Option<&PackedMat> {
        self.packed.as_ref()
    }

    /// Row `r` as f32 values (an embedding lookup).
    pub fn dequantize_row(&self, store: &Store, r: usize, out: &mut [f32]) -> Result<()> {
        match &self.packed {
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
