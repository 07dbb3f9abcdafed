//! The pure GGUF parser over a byte slice: every read bounds-checked, never a panic.

use std::collections::HashMap;
use std::path::Path;

use super::tensor::TensorInfo;
use super::types::GgmlType;
use super::value::{Value, ValueType};
use super::GgufHeader;
use crate::error::{Error, Result};

/// `general.alignment` when the file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
/// Arrays of arrays deeper than this are rejected (no real file nests at all; this bounds the
/// parser's recursion on hostile input).
const MAX_ARRAY_NESTING: u32 = 8;
const MAGIC: &[u8; 4] = b"GGUF";

/// A bounds-checked little-endian reader that names the file and what it was reading.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: String) -> Error {
        Error::model_file(self.path, what)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated GGUF file: reading {} needs {n} bytes at offset {}, but the file has \
                 only {} bytes; the download or conversion was probably cut short, fetch the \
                 file again",
                what(),
                self.pos,
                self.bytes.len()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that must leave room for `count * min_size` more bytes; checked before anyone
    /// allocates `count` of anything.
    fn count(&mut self, min_size: usize, what: &dyn Fn() -> String) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let room = (self.remaining() / min_size.max(1)) as u64;
        if n > room {
            return Err(self.err(format!(
                "truncated or corrupt GGUF file: {} at offset {at} is {n}, but only {} of the \
                 file's {} bytes follow, room for at most {room}",
                what(),
                self.remaining(),
                self.bytes.len()
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.count(1, &|| format!("length of {}", what()))?;
        let at = self.pos;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.err(format!(
                "corrupt GGUF file: {} at offset {at} is not valid UTF-8 ({e})",
                what()
            ))),
        }
    }

    fn value_type(&mut self, what: &dyn Fn() -> String) -> Result<ValueType> {
        let at = self.pos;
        let id = self.u32(&|| format!("value type of {}", what()))?;
        ValueType::from_id(id).ok_or_else(|| {
            self.err(format!(
                "corrupt GGUF file: unknown value type {id} for {} at offset {at} (known: 0..=12)",
                what()
            ))
        })
    }

    fn value(&mut self, ty: ValueType, depth: u32, what: &dyn Fn() -> String) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => {
                let at = self.pos;
                match self.array::<1>(what)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(self.err(format!(
                            "corrupt GGUF file: {} at offset {at} is a bool stored as {b} \
                             (must be 0 or 1)",
                            what()
                        )))
                    }
                }
            }
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_NESTING {
                    return Err(self.err(format!(
                        "corrupt GGUF file: {} at offset {} nests arrays more than \
                         {MAX_ARRAY_NESTING} deep",
                        what(),
                        self.pos
                    )));
                }
                let elem = self.value_type(&|| format!("element type of {}", what()))?;
                let n = self.count(elem.min_encoded_size(), &|| {
                    format!("element count of {}", what())
                })?;
                let mut items = Vec::with_capacity(n);
                for i in 0..n {
                    items.push(self.value(elem, depth + 1, &|| format!("{}[{i}]", what()))?);
                }
                Value::Array(items)
            }
        })
    }
}

/// Parse a whole GGUF file held in memory. Errors name `path` (use [`super::parse`] for bytes
/// with no file behind them).
pub(super) fn parse_at(bytes: &[u8], path: &Path) -> Result<GgufHeader> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        path,
    };
    let magic = c.array::<4>(&|| "the magic number".into())?;
    if &magic != MAGIC {
        return Err(c.err(format!(
            "not a GGUF file: it starts with {magic:02x?}, a GGUF file starts with \"GGUF\" \
             (47 47 55 46); pass a .gguf file or a Hugging Face model directory"
        )));
    }
    let version = c.u32(&|| "the version".into())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(c.err(
                "GGUF version 1 is not supported (only 2 and 3); convert the model again with \
                 a current llama.cpp"
                    .into(),
            ))
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(c.err(format!(
                "big-endian GGUF file (version reads as {v:#x}); only little-endian GGUF files \
                 are supported"
            )))
        }
        v => return Err(c.err(format!("unsupported GGUF version {v} (supported: 2, 3)"))),
    }
    // A tensor info takes at least 24 bytes (empty name, no dims, type, offset); a kv pair at
    // least 13 (empty key, type, one byte of value).
    let tensor_count = c.count(24, &|| "the tensor count".into())?;
    let kv_count = c.count(13, &|| "the metadata key/value count".into())?;

    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(kv_count);
    let mut index: HashMap<String, usize> = HashMap::with_capacity(kv_count);
    for i in 0..kv_count {
        let at = c.pos;
        let key = c.string(&|| format!("the key of metadata entry {i}"))?;
        if index.contains_key(&key) {
            return Err(c.err(format!(
                "corrupt GGUF file: metadata key {key:?} appears twice (second time at offset \
                 {at})"
            )));
        }
        let what = || format!("metadata value {key:?}");
        let ty = c.value_type(&what)?;
        let value = c.value(ty, 0, &what)?;
        index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let alignment = match index.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(&i) => {
            let v = &metadata[i].1;
            match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= u32::MAX as u64 => a,
                _ => {
                    return Err(c.err(format!(
                        "corrupt GGUF file: general.alignment is {v:?}; it must be a power of \
                         two that fits a u32"
                    )))
                }
            }
        }
    };

    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(tensor_count);
    let mut tensor_index: HashMap<String, usize> = HashMap::with_capacity(tensor_count);
    for i in 0..tensor_count {
        let at = c.pos;
        let name = c.string(&|| format!("the name of tensor {i}"))?;
        if tensor_index.contains_key(&name) {
            return Err(c.err(format!(
                "corrupt GGUF file: tensor {name:?} appears twice (second time at offset {at})"
            )));
        }
        let what = |field: &str| format!("{field} of tensor {name:?}");
        let dims_at = c.pos;
        let n_dims = c.u32(&|| what("the dimension count"))?;
        if n_dims > MAX_DIMS {
            return Err(c.err(format!(
                "corrupt GGUF file: tensor {name:?} has {n_dims} dimensions at offset \
                 {dims_at}; ggml allows at most {MAX_DIMS}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| what(&format!("dimension {d}")))?);
        }
        let type_at = c.pos;
        let type_id = c.u32(&|| what("the ggml type"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
            c.err(format!(
                "unsupported GGUF file: tensor {name:?} has unknown ggml type {type_id} at \
                 offset {type_at}; this file may need a newer reader"
            ))
        })?;
        let offset = c.u64(&|| what("the data offset"))?;
        if offset % alignment != 0 {
            return Err(c.err(format!(
                "corrupt GGUF file: tensor {name:?} data offset {offset} is not a multiple of \
                 the alignment {alignment}"
            )));
        }
        let n_bytes = tensor_bytes(&name, &dims, ggml_type).map_err(|m| c.err(m))?;
        tensor_index.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        });
    }

    // The data section starts at the next multiple of the alignment after the tensor infos.
    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = bytes.len() as u64;
    for t in &tensors {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes as u64));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(c.err(format!(
                    "truncated or corrupt GGUF file: tensor {:?} ({} {:?}, {} bytes) lies at \
                     bytes {}..{} but the file has only {file_len} bytes; fetch the file again",
                    t.name,
                    t.ggml_type,
                    t.dims,
                    t.n_bytes,
                    data_offset as u128 + t.offset as u128,
                    data_offset as u128 + t.offset as u128 + t.n_bytes as u128,
                )))
            }
        }
    }

    Ok(GgufHeader {
        path: path.to_path_buf(),
        version,
        metadata,
        index,
        tensors,
        tensor_index,
        alignment,
        data_offset: data_offset as usize,
    })
}

/// Bytes of a tensor with `dims` (ne0 first) of type `t`, with every step checked.
fn tensor_bytes(name: &str, dims: &[u64], t: GgmlType) -> std::result::Result<usize, String> {
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            format!("corrupt GGUF file: tensor {name:?} dimensions {dims:?} overflow a u64")
        })?;
    let block = t.block_size() as u64;
    let ne0 = dims.first().copied().unwrap_or(1);
    if ne0 % block != 0 {
        return Err(format!(
            "corrupt GGUF file: tensor {name:?} of type {t} has rows of {ne0} values, not a \
             multiple of the block size {block}"
        ));
    }
    let trailer = match t {
        GgmlType::I2_S => super::types::I2_S_TRAILER as u64,
        _ => 0,
    };
    (n / block)
        .checked_mul(t.type_size() as u64)
        .and_then(|b| b.checked_add(trailer))
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| {
            format!("corrupt GGUF file: tensor {name:?} {t} {dims:?} is too large to address")
        })
}
