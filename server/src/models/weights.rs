//! Where a model's weight bytes live: zero-copy ranges of a memory-mapped GGUF file, or owned
//! buffers (converted or realigned tensors, Hugging Face checkpoints).

use crate::gguf::GgufFile;
use crate::{Error, Result};
use ryzanstein_kernels::formats::AlignedBytes;
use ryzanstein_kernels::{DType, MatRef};

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
        })
    }

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
