//! Hugging Face model directories: `config.json`, weights in `model.safetensors` or sharded
//! behind `model.safetensors.index.json`, and the tokenizer files beside them.
//!
//! Every shard is memory-mapped; [`HfDir::tensor`] hands out zero-copy views. Shapes are
//! row-major in PyTorch order (`[out_features, in_features]` for a Linear weight), the reverse
//! of GGUF's ne0-first dims.

mod shard;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ryzanstein_kernels::DType;

use crate::error::{Error, Result};
use shard::Shard;

/// The single-file weights name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The sharded weights index name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A Hugging Face model directory with its weights mapped.
#[derive(Debug)]
pub struct HfDir {
    dir: PathBuf,
    config: serde_json::Value,
    shards: Vec<Shard>,
    /// Tensor name -> index into `shards`.
    index: HashMap<String, usize>,
    names: Vec<String>,
}

/// A zero-copy view of one tensor.
#[derive(Debug, Clone)]
pub struct HfTensor<'a> {
    pub name: &'a str,
    pub dtype: DType,
    /// Row-major, PyTorch order: `[out_features, in_features]` for a Linear weight.
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl HfTensor<'_> {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32 (every supported dtype converts).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let d = self.data;
        match self.dtype {
            DType::F16 => d
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::BF16 => d
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            // HfDir::tensor only builds F32, F16 and BF16 views.
            _ => d
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        }
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::model_file(path, format!("invalid JSON: {e}")))
}

fn read_json_opt(path: &Path) -> Result<Option<serde_json::Value>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// A shard name from an index must be a plain file name inside the directory.
fn check_shard_name(index_path: &Path, name: &str) -> Result<()> {
    let p = Path::new(name);
    let plain = p.components().count() == 1
        && matches!(p.components().next(), Some(std::path::Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(Error::model_file(
            index_path,
            format!("weight_map names shard {name:?}, which is not a file name in this directory"),
        ))
    }
}

/// A parsed `model.safetensors.index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIndex {
    /// Shard file names, in first-mention order.
    pub shards: Vec<String>,
    /// (tensor name, shard file name) pairs.
    pub weight_map: Vec<(String, String)>,
}

/// Read an index file; shard names are checked to be plain file names.
pub fn read_index(index_path: &Path) -> Result<ShardIndex> {
    let index = read_json(index_path)?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            Error::model_file(
                index_path,
                "no \"weight_map\" object (tensor name -> shard file) in the index",
            )
        })?;
    let mut files: Vec<String> = Vec::new();
    let mut pairs = Vec::with_capacity(map.len());
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::model_file(
                index_path,
                format!("weight_map[{tensor:?}] is {file}, expected a shard file name"),
            )
        })?;
        check_shard_name(index_path, file)?;
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
        pairs.push((tensor.clone(), file.to_string()));
    }
    Ok(ShardIndex {
        shards: files,
        weight_map: pairs,
    })
}

impl HfDir {
    /// Read `config.json`, find and map the weights. Errors name the file at fault.
    pub fn open(dir: impl AsRef<Path>) -> Result<HfDir> {
        let dir = dir.as_ref().to_path_buf();
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::model_file(
                &dir,
                "no config.json: not a Hugging Face model directory (pass a directory with \
                 config.json and *.safetensors, or a .gguf file)",
            ));
        }
        let config = read_json(&config_path)?;
        if !config.is_object() {
            return Err(Error::model_file(
                &config_path,
                "config.json is not a JSON object",
            ));
        }

        let single = dir.join(SINGLE_FILE);
        let index_path = dir.join(INDEX_FILE);
        let mut shards = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        if single.is_file() {
            let shard = Shard::open(&single)?;
            for name in shard.entries.keys() {
                index.insert(name.clone(), 0);
            }
            shards.push(shard);
        } else if index_path.is_file() {
            let ShardIndex {
                shards: files,
                weight_map: pairs,
            } = read_index(&index_path)?;
            for file in &files {
                let path = dir.join(file);
                if !path.is_file() {
                    return Err(Error::model_file(
                        &index_path,
                        format!(
                            "names shard {file:?}, which is missing from {}; download the \
                             complete model",
                            dir.display()
                        ),
                    ));
                }
                let shard = Shard::open(&path)?;
                let i = shards.len();
                for name in shard.entries.keys() {
                    if let Some(&j) = index.get(name) {
                        return Err(Error::model_file(
                            &path,
                            format!(
                                "tensor {name:?} is also in {}; a tensor must be in one shard",
                                shards[j].path.display()
                            ),
                        ));
                    }
                    index.insert(name.clone(), i);
                }
                shards.push(shard);
            }
            for (tensor, file) in &pairs {
                let found = index.get(tensor).map(|&i| &shards[i].path);
                if found != Some(&dir.join(file)) {
                    return Err(Error::model_file(
                        &index_path,
                        format!(
                            "weight_map puts tensor {tensor:?} in {file:?}, but that shard does \
                             not contain it; the index and the shards are from different \
                             revisions, download the model again"
                        ),
                    ));
                }
            }
        } else {
            let bins = dir.join("pytorch_model.bin").is_file()
                || dir.join("pytorch_model.bin.index.json").is_file();
            let hint = if bins {
                "; this directory has only PyTorch .bin weights, convert them to safetensors"
            } else {
                ""
            };
            return Err(Error::model_file(
                &dir,
                format!("no {SINGLE_FILE} and no {INDEX_FILE}{hint}"),
            ));
        }

        let mut names: Vec<String> = index.keys().cloned().collect();
        names.sort();
        Ok(HfDir {
            dir,
            config,
            shards,
            index,
            names,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config.json` as JSON.
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// Every tensor name, sorted.
    pub fn tensor_names(&self) -> &[String] {
        &self.names
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The safetensors dtype name and shape of `name` (any dtype, including ones
    /// [`HfDir::tensor`] refuses), or `None` when absent.
    pub fn tensor_meta(&self, name: &str) -> Option<(&str, &[usize])> {
        let e = self.shards[*self.index.get(name)?].entries.get(name)?;
        Some((&e.dtype, &e.shape))
    }

    /// The zero-copy view of tensor `name`: F32, F16 or BF16; other dtypes are an error naming
    /// the tensor and its dtype.
    pub fn tensor(&self, name: &str) -> Result<HfTensor<'_>> {
        let (stored_name, dtype, shape, data) = self.raw_tensor(name)?;
        let dtype = match dtype {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            other => {
                return Err(Error::model_file(
                    &self.dir,
                    format!(
                        "tensor {name:?} has dtype {other}; only F32, F16 and BF16 weights are \
                         supported"
                    ),
                ))
            }
        };
        Ok(HfTensor {
            name: stored_name,
            dtype,
            shape: shape.to_vec(),
            data,
        })
    }

    /// Tensor `name` as stored, whatever its dtype: its name, safetensors dtype (`"U8"`,
    /// `"F32"`, ...), shape and bytes.
    pub fn raw_tensor(&self, name: &str) -> Result<(&str, &str, &[usize], &[u8])> {
        let not_found = || {
            Error::model_file(
                &self.dir,
                format!(
                    "tensor {name:?} not found among the {} tensors of this model; the \
                     checkpoint may be for another architecture",
                    self.names.len()
                ),
            )
        };
        let shard = &self.shards[*self.index.get(name).ok_or_else(not_found)?];
        let (stored_name, entry) = shard.entries.get_key_value(name).ok_or_else(not_found)?;
        // Shard::open checked the range against the map length.
        let data = shard.map.get(entry.range.clone()).ok_or_else(|| {
            Error::model_file(
                &shard.path,
                format!("tensor {name:?} lies beyond the end of the file"),
            )
        })?;
        Ok((stored_name, &entry.dtype, &entry.shape, data))
    }

    /// `tokenizer.json`, if the directory has one.
    pub fn tokenizer_json(&self) -> Option<PathBuf> {
        let p = self.dir.join("tokenizer.json");
        p.is_file().then_some(p)
    }

    /// `tokenizer_config.json` (chat template, special tokens), if present.
    pub fn tokenizer_config(&self) -> Result<Option<serde_json::Value>> {
        read_json_opt(&self.dir.join("tokenizer_config.json"))
    }

    /// `generation_config.json` (default sampling, eos ids), if present.
    pub fn generation_config(&self) -> Result<Option<serde_json::Value>> {
        read_json_opt(&self.dir.join("generation_config.json"))
    }
}

#[cfg(test)]
mod tests;
