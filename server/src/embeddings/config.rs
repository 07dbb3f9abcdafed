//! What a sentence-transformers directory says about its model: the BERT `config.json`, and
//! the pipeline around it (`modules.json`, `sentence_bert_config.json`, the pooling module's
//! `config.json`).

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The fields of a BERT `config.json` the encoder needs (names as Hugging Face writes them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_hidden_act() -> String {
    "gelu".to_owned()
}
fn default_position_embedding_type() -> String {
    "absolute".to_owned()
}

impl BertConfig {
    /// Parse and check `config.json` (`path` names the file in errors).
    pub fn from_json(path: &Path, v: &serde_json::Value) -> Result<BertConfig> {
        let cfg: BertConfig = serde_json::from_value(v.clone())
            .map_err(|e| Error::model_file(path, format!("not a BERT config: {e}")))?;
        let bad = |what: String| Err(Error::model_file(path, what));
        if let Some(t) = &cfg.model_type {
            if t != "bert" {
                return bad(format!(
                    "model_type is {t:?}; --embedding-model serves BERT encoders (model_type \
                     \"bert\") such as all-MiniLM-L6-v2"
                ));
            }
        }
        if cfg.hidden_act != "gelu" {
            return bad(format!(
                "hidden_act is {:?}; only \"gelu\" (the exact, erf-based GELU) is supported",
                cfg.hidden_act
            ));
        }
        if cfg.position_embedding_type != "absolute" {
            return bad(format!(
                "position_embedding_type is {:?}; only \"absolute\" is supported",
                cfg.position_embedding_type
            ));
        }
        if cfg.num_attention_heads == 0
            || cfg.hidden_size == 0
            || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            ));
        }
        if cfg.vocab_size == 0
            || cfg.intermediate_size == 0
            || cfg.max_position_embeddings == 0
            || cfg.type_vocab_size == 0
        {
            return bad(
                "vocab_size, intermediate_size, max_position_embeddings and \
                        type_vocab_size must be at least 1"
                    .to_owned(),
            );
        }
        Ok(cfg)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// How token states become one vector (sentence-transformers' `Pooling` module). When several
/// modes are on, their vectors are concatenated in sentence-transformers' order: CLS, max,
/// mean, mean divided by the square root of the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pooling {
    pub cls: bool,
    pub max: bool,
    pub mean: bool,
    pub mean_sqrt_len: bool,
}

impl Pooling {
    /// How many vectors of `hidden_size` the output holds.
    pub fn modes(&self) -> usize {
        [self.cls, self.max, self.mean, self.mean_sqrt_len]
            .iter()
            .filter(|m| **m)
            .count()
    }
}

/// The sentence-transformers pipeline around the encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    pub pooling: Pooling,
    /// A `Normalize` module follows pooling: vectors are scaled to unit length.
    pub normalize: bool,
    /// Longer inputs are truncated to this many tokens ([CLS] and [SEP] included).
    pub max_seq_length: usize,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::model_file(path, format!("invalid JSON: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::model_file(path, e.to_string()))
}

impl Pipeline {
    /// Read the pipeline of the sentence-transformers directory `dir`: `modules.json` must
    /// list a Transformer, then a Pooling module (whose `config.json` gives the modes), then
    /// optionally Normalize. `max_seq_length` comes from `sentence_bert_config.json`, capped
    /// at `max_positions`.
    pub fn read(dir: &Path, max_positions: usize) -> Result<Pipeline> {
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Err(Error::model_file(
                dir,
                "no modules.json: not a sentence-transformers model directory (an embedding \
                 model needs config.json, model.safetensors, tokenizer.json, modules.json and \
                 the pooling module's config)",
            ));
        }
        let modules: Vec<ModuleEntry> = parse(&modules_path, read_json(&modules_path)?)?;
        let short = |m: &ModuleEntry| m.kind.rsplit('.').next().unwrap_or("").to_owned();
        let kinds: Vec<String> = modules.iter().map(short).collect();
        let shape_ok = matches!(
            kinds
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice(),
            ["Transformer", "Pooling"] | ["Transformer", "Pooling", "Normalize"]
        );
        if !shape_ok {
            return Err(Error::model_file(
                &modules_path,
                format!(
                    "the modules are {kinds:?}; supported pipelines are Transformer, Pooling \
                     and an optional Normalize"
                ),
            ));
        }
        let pooling_path = dir.join(&modules[1].path).join("config.json");
        let pooling = read_pooling(&pooling_path)?;

        let st_path = dir.join("sentence_bert_config.json");
        let configured = if st_path.is_file() {
            parse::<SentenceBertConfig>(&st_path, read_json(&st_path)?)?.max_seq_length
        } else {
            None
        };
        let max_seq_length = configured.unwrap_or(max_positions).min(max_positions);
        if max_seq_length < 2 {
            return Err(Error::model_file(
                &st_path,
                format!("max_seq_length {max_seq_length} leaves no room for [CLS] and [SEP]"),
            ));
        }
        Ok(Pipeline {
            pooling,
            normalize: kinds.len() == 3,
            max_seq_length,
        })
    }
}

/// The pooling module's `config.json`: the four modes this engine computes; any other mode
/// switched on is refused rather than silently ignored.
fn read_pooling(path: &Path) -> Result<Pooling> {
    let v = read_json(path)?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::model_file(path, "not a JSON object"))?;
    let flag = |k: &str| obj.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    for (k, val) in obj {
        let known = matches!(
            k.as_str(),
            "pooling_mode_cls_token"
                | "pooling_mode_max_tokens"
                | "pooling_mode_mean_tokens"
                | "pooling_mode_mean_sqrt_len_tokens"
        );
        if k.starts_with("pooling_mode_") && !known && val.as_bool() == Some(true) {
            return Err(Error::model_file(
                path,
                format!("{k} is not supported; supported: cls_token, max_tokens, mean_tokens, mean_sqrt_len_tokens"),
            ));
        }
    }
    let pooling = Pooling {
        cls: flag("pooling_mode_cls_token"),
        max: flag("pooling_mode_max_tokens"),
        mean: flag("pooling_mode_mean_tokens"),
        mean_sqrt_len: flag("pooling_mode_mean_sqrt_len_tokens"),
    };
    if pooling.modes() == 0 {
        return Err(Error::model_file(path, "no pooling mode is switched on"));
    }
    Ok(pooling)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, rel: &str, v: serde_json::Value) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v.to_string()).unwrap();
    }

    fn modules(normalize: bool) -> serde_json::Value {
        let mut m = vec![
            json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
            json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
        ];
        if normalize {
            m.push(json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
        }
        json!(m)
    }

    #[test]
    fn minilm_pipeline() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "modules.json", modules(true));
        write(
            d.path(),
            "1_Pooling/config.json",
            json!({"word_embedding_dimension": 384, "pooling_mode_cls_token": false,
                   "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
                   "pooling_mode_mean_sqrt_len_tokens": false}),
        );
        write(
            d.path(),
            "sentence_bert_config.json",
            json!({"max_seq_length": 256, "do_lower_case": false}),
        );
        let p = Pipeline::read(d.path(), 512).unwrap();
        assert_eq!(
            p,
            Pipeline {
                pooling: Pooling {
                    cls: false,
                    max: false,
                    mean: true,
                    mean_sqrt_len: false
                },
                normalize: true,
                max_seq_length: 256
            }
        );
        // Capped at the position table; without Normalize, vectors are left as pooled.
        write(d.path(), "modules.json", modules(false));
        let p = Pipeline::read(d.path(), 128).unwrap();
        assert_eq!((p.normalize, p.max_seq_length), (false, 128));
    }

    #[test]
    fn unsupported_pipelines_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = Pipeline::read(d.path(), 512).unwrap_err().to_string();
        assert!(e.contains("no modules.json"), "{e}");
        write(
            d.path(),
            "modules.json",
            json!([{"path": "", "type": "sentence_transformers.models.Transformer"},
                   {"path": "1_Dense", "type": "sentence_transformers.models.Dense"}]),
        );
        let e = Pipeline::read(d.path(), 512).unwrap_err().to_string();
        assert!(e.contains("\"Dense\""), "{e}");
        write(d.path(), "modules.json", modules(true));
        write(
            d.path(),
            "1_Pooling/config.json",
            json!({"pooling_mode_weightedmean_tokens": true}),
        );
        let e = Pipeline::read(d.path(), 512).unwrap_err().to_string();
        assert!(e.contains("weightedmean"), "{e}");
        write(
            d.path(),
            "1_Pooling/config.json",
            json!({"pooling_mode_mean_tokens": false}),
        );
        let e = Pipeline::read(d.path(), 512).unwrap_err().to_string();
        assert!(e.contains("no pooling mode"), "{e}");
    }

    #[test]
    fn bert_config_checks() {
        let p = Path::new("config.json");
        let base = json!({"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
            "num_attention_heads": 12, "intermediate_size": 1536,
            "max_position_embeddings": 512, "model_type": "bert"});
        let c = BertConfig::from_json(p, &base).unwrap();
        assert_eq!(
            (c.head_dim(), c.type_vocab_size, c.layer_norm_eps),
            (32, 2, 1e-12)
        );
        let mut v = base.clone();
        v["model_type"] = json!("llama");
        let e = BertConfig::from_json(p, &v).unwrap_err().to_string();
        assert!(e.contains("\"llama\""), "{e}");
        let mut v = base.clone();
        v["hidden_act"] = json!("relu");
        assert!(BertConfig::from_json(p, &v).is_err());
        let mut v = base;
        v["num_attention_heads"] = json!(5);
        let e = BertConfig::from_json(p, &v).unwrap_err().to_string();
        assert!(e.contains("not a multiple"), "{e}");
    }
}
