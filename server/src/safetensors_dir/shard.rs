//! One memory-mapped `.safetensors` file: an 8-byte little-endian header length, a JSON header
//! `{name: {dtype, shape, data_offsets: [start, end]}, "__metadata__": {...}}`, then the data.
//! Offsets are relative to the start of the data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Headers larger than this are rejected as corrupt (the safetensors format's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

#[derive(Debug, Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

/// A tensor's place in its shard.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The safetensors dtype name (`"F32"`, `"BF16"`, `"I64"`, ...).
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Absolute byte range in the shard's map.
    pub range: std::ops::Range<usize>,
}

#[derive(Debug)]
pub(super) struct Shard {
    pub path: PathBuf,
    pub map: Mmap,
    /// Tensors by name, sorted.
    pub entries: BTreeMap<String, Entry>,
}

/// Bytes per element of a safetensors dtype, `None` for names this reader does not know.
pub(super) fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

impl Shard {
    pub fn open(path: &Path) -> Result<Shard> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len < 8 {
            return Err(Error::model_file(
                path,
                format!(
                    "not a safetensors file: {len} bytes, shorter than the 8-byte header length; \
                     fetch the file again"
                ),
            ));
        }
        // SAFETY: read-only map of a model file that is written once and never modified in place
        // (downloads go to a temporary name and are renamed).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let entries = parse_header(&map, path)?;
        Ok(Shard {
            path: path.to_path_buf(),
            map,
            entries,
        })
    }
}

fn parse_header(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, Entry>> {
    let bad = |what: String| Error::model_file(path, what);
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[..8]);
    let n = u64::from_le_bytes(len8);
    if n > MAX_HEADER_BYTES || n > bytes.len() as u64 - 8 {
        return Err(bad(format!(
            "corrupt or truncated safetensors file: the header length is {n} bytes but the file \
             has {} bytes (and headers are at most {MAX_HEADER_BYTES}); fetch the file again",
            bytes.len()
        )));
    }
    let header_end = 8 + n as usize;
    let json: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&bytes[8..header_end])
        .map_err(|e| {
        bad(format!(
            "corrupt safetensors header (bytes 8..{header_end}): {e}"
        ))
    })?;
    let data_len = bytes.len() - header_end;
    let mut entries = BTreeMap::new();
    for (name, value) in json {
        if name == "__metadata__" {
            continue;
        }
        let raw: RawEntry = serde_json::from_value(value).map_err(|e| {
            bad(format!(
                "corrupt safetensors header: tensor {name:?}: {e} (expected {{\"dtype\", \
                 \"shape\", \"data_offsets\"}})"
            ))
        })?;
        let (start, end) = raw.data_offsets;
        if start > end || end > data_len {
            return Err(bad(format!(
                "corrupt or truncated safetensors file: tensor {name:?} has data_offsets \
                 [{start}, {end}] but the data section holds {data_len} bytes; fetch the file \
                 again"
            )));
        }
        if let Some(size) = dtype_size(&raw.dtype) {
            let need = raw
                .shape
                .iter()
                .try_fold(size, |acc, &d| acc.checked_mul(d));
            if need != Some(end - start) {
                return Err(bad(format!(
                    "corrupt safetensors header: tensor {name:?} of dtype {} and shape {:?} \
                     needs {} bytes but its data_offsets span {}",
                    raw.dtype,
                    raw.shape,
                    need.map_or("more than usize::MAX".to_string(), |n| n.to_string()),
                    end - start
                )));
            }
        }
        entries.insert(
            name,
            Entry {
                dtype: raw.dtype,
                shape: raw.shape,
                range: header_end + start..header_end + end,
            },
        );
    }
    Ok(entries)
}
