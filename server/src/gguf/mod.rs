//! Memory-mapped GGUF reader: metadata, tensor infos and zero-copy tensor views.
//!
//! Layout (all little-endian): magic `"GGUF"`, version u32 (2 or 3), tensor count u64, kv count
//! u64, the kv pairs (key string, value type u32, value), the tensor infos (name, n_dims u32,
//! dims u64 x n_dims with ne0 first, ggml type u32, offset u64 into the data section), then the
//! data section at the next multiple of `general.alignment` (default 32). A string is a u64
//! length and UTF-8 bytes.
//!
//! [`parse`] is the pure parser over bytes (driven by the fuzz target in `server/fuzz`);
//! [`GgufFile::open`] memory-maps a file and parses it. Every read is bounds-checked and every
//! count is checked against the bytes left before anything is allocated, so no input panics.
//! [`GgufFile`] dereferences to [`GgufHeader`] for the metadata accessors. [`GgufWriter`] builds
//! small valid files for tests.

mod reader;
mod tensor;
mod types;
mod value;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};

pub use reader::{DEFAULT_ALIGNMENT, MAX_DIMS};
pub use tensor::{TensorInfo, TensorView};
pub use types::GgmlType;
pub use value::{Value, ValueType};
pub use writer::GgufWriter;

/// Parse a whole GGUF file held in memory. Errors name the file as `<memory>`.
pub fn parse(bytes: &[u8]) -> Result<GgufHeader> {
    reader::parse_at(bytes, Path::new("<memory>"))
}

/// Everything in a GGUF file but the tensor data: version, metadata (in file order), tensor
/// infos and where the data section starts.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    path: PathBuf,
    version: u32,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: usize,
}

impl GgufHeader {
    /// The file the header came from (`<memory>` for [`parse`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section in the file.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// Every key/value pair, in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn missing(&self, key: &str, expected: &str) -> Error {
        Error::model_file(
            &self.path,
            format!(
                "metadata key {key:?} ({expected}) is missing; the file may be for another \
                 architecture or converted by an old tool"
            ),
        )
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value) -> Error {
        let shown = match found {
            Value::Array(a) => format!("{} with {} elements", found.type_name(), a.len()),
            Value::String(s) if s.len() > 80 => format!("string of {} bytes", s.len()),
            other => format!("{} {other:?}", other.type_name()),
        };
        Error::model_file(
            &self.path,
            format!("metadata key {key:?}: expected {expected}, found {shown}"),
        )
    }

    /// Look `key` up and convert it; `None` when absent, an error naming the key, the expected
    /// and the found type when present but not convertible.
    fn opt_with<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v)
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, expected, v)),
        }
    }

    fn req_with<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<T> {
        self.opt_with(key, expected, f)?
            .ok_or_else(|| self.missing(key, expected))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.req_with(key, "string", Value::as_str)
    }

    /// Any integer type whose value fits a u32.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.req_with(key, "integer fitting u32", as_u32)
    }

    /// Any integer type whose value is >= 0.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.req_with(key, "non-negative integer", Value::as_u64)
    }

    /// F32 or F64 (narrowed).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.req_with(key, "float", as_f32)
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.req_with(key, "bool", Value::as_bool)
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        self.req_with(key, "array", Value::as_array)
    }

    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.typed_array(key, "array of string", Value::as_str)
    }

    /// Elements F32 or F64 (narrowed).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        self.typed_array(key, "array of float", as_f32)
    }

    /// Elements of any integer type whose values fit an i32.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        self.typed_array(key, "array of integers fitting i32", |v| {
            v.as_i64().and_then(|x| i32::try_from(x).ok())
        })
    }

    fn typed_array<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        f: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Vec<T>> {
        let items = self.req_with(key, expected, Value::as_array)?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                f(v).ok_or_else(|| {
                    Error::model_file(
                        &self.path,
                        format!(
                            "metadata key {key:?}: expected {expected}, but element {i} is {} \
                             {v:?}",
                            v.type_name()
                        ),
                    )
                })
            })
            .collect()
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.opt_with(key, "string", Value::as_str)
    }

    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.opt_with(key, "integer fitting u32", as_u32)
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.opt_with(key, "non-negative integer", Value::as_u64)
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.opt_with(key, "float", as_f32)
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.opt_with(key, "bool", Value::as_bool)
    }

    /// `general.architecture` (`"llama"`, ...): the prefix of the architecture's own keys.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// Every tensor info, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensor_index.contains_key(name)
    }

    /// The view of tensor `name` over `bytes`, the same bytes the header was parsed from.
    pub fn tensor_in<'a>(&'a self, bytes: &'a [u8], name: &str) -> Result<TensorView<'a>> {
        let info = self.tensor_info(name).ok_or_else(|| {
            Error::model_file(
                &self.path,
                format!(
                    "tensor {name:?} not found ({} tensors in the file); the file may be for \
                     another architecture or incomplete",
                    self.tensors.len()
                ),
            )
        })?;
        // parse() checked the range against the file length.
        let start = self.data_offset + info.offset as usize;
        let data = bytes.get(start..start + info.n_bytes).ok_or_else(|| {
            Error::model_file(
                &self.path,
                format!(
                    "tensor {name:?} lies at bytes {start}..{} beyond the {} bytes given",
                    start + info.n_bytes,
                    bytes.len()
                ),
            )
        })?;
        Ok(TensorView { info, data })
    }
}

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|x| u32::try_from(x).ok())
}

fn as_f32(v: &Value) -> Option<f32> {
    v.as_f64().map(|x| x as f32)
}

/// A memory-mapped, parsed and validated GGUF file. Cheap to clone (the map is shared).
/// Dereferences to [`GgufHeader`] for metadata and tensor infos.
#[derive(Debug, Clone)]
pub struct GgufFile {
    header: GgufHeader,
    map: Arc<Mmap>,
}

impl GgufFile {
    /// Memory-map `path`, parse and validate it.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Err(Error::model_file(
                path,
                "the file is empty (0 bytes), not a GGUF file; fetch it again",
            ));
        }
        // SAFETY: the map is read-only. Like every memory-mapped model loader we rely on the file
        // not being truncated or rewritten while mapped; model files are written once (the
        // sources write to a temporary name and rename).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = reader::parse_at(&map, path)?;
        Ok(GgufFile {
            header,
            map: Arc::new(map),
        })
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Drops bytes `start..start + len` of the map from this process's resident set, for
    /// tensors copied elsewhere at load (repacked weights): the pages stay in the page cache and
    /// read the same bytes again if touched. Best effort; a no-op off Unix.
    pub fn release(&self, start: usize, len: usize) {
        #[cfg(unix)]
        if start
            .checked_add(len)
            .is_some_and(|end| end <= self.map.len())
        {
            // SAFETY: the map is read-only and file-backed: after MADV_DONTNEED its pages read
            // the same file bytes again, so no reference into the map sees a change.
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
            };
        }
        #[cfg(not(unix))]
        let _ = (start, len);
    }

    /// The zero-copy view of tensor `name`; an error naming the file and the tensor if absent.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        self.header.tensor_in(&self.map, name)
    }
}

impl std::ops::Deref for GgufFile {
    type Target = GgufHeader;
    fn deref(&self) -> &GgufHeader {
        &self.header
    }
}
