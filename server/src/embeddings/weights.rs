//! The BERT encoder's weights, read from a Hugging Face directory into f32 (F16 and BF16
//! checkpoints are widened) and the dense layers repacked for [`gemm_f32`].
//!
//! [`gemm_f32`]: ryzanstein_kernels::gemm_f32::gemm_f32

use ryzanstein_kernels::gemm_f32::PackedF32;

use super::config::BertConfig;
use crate::error::{Error, Result};
use crate::safetensors_dir::HfDir;

/// A dense layer `y = x W^T + b`.
#[derive(Debug)]
pub struct Linear {
    pub w: PackedF32,
    pub b: Vec<f32>,
}

/// LayerNorm's scale and shift.
#[derive(Debug)]
pub struct Norm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// One encoder layer (post-LayerNorm, as BERT).
#[derive(Debug)]
pub struct Layer {
    /// Query, key and value projections fused: `3 * hidden` outputs, in that order.
    pub qkv: Linear,
    pub attn_out: Linear,
    pub attn_norm: Norm,
    pub ffn_up: Linear,
    pub ffn_down: Linear,
    pub ffn_norm: Norm,
}

#[derive(Debug)]
pub struct BertWeights {
    /// `vocab_size x hidden`.
    pub word: Vec<f32>,
    /// `max_position_embeddings x hidden`.
    pub position: Vec<f32>,
    /// `type_vocab_size x hidden`.
    pub token_type: Vec<f32>,
    pub embed_norm: Norm,
    pub layers: Vec<Layer>,
}

struct Reader<'a> {
    hf: &'a HfDir,
    /// `""` or `"bert."` (checkpoints saved from `BertForX` keep the base model under it).
    prefix: &'static str,
}

impl Reader<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let t = self.hf.tensor(&full)?;
        if t.shape != shape {
            return Err(Error::model_file(
                self.hf.dir(),
                format!(
                    "tensor {full:?} has shape {:?}, but config.json implies {shape:?}",
                    t.shape
                ),
            ));
        }
        Ok(t.to_f32_vec())
    }

    fn linear(&self, name: &str, out: usize, inp: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((
            self.tensor(&format!("{name}.weight"), &[out, inp])?,
            self.tensor(&format!("{name}.bias"), &[out])?,
        ))
    }

    fn packed(&self, name: &str, out: usize, inp: usize) -> Result<Linear> {
        let (w, b) = self.linear(name, out, inp)?;
        Ok(Linear {
            w: PackedF32::pack(&w, out, inp)?,
            b,
        })
    }

    fn norm(&self, name: &str, n: usize) -> Result<Norm> {
        Ok(Norm {
            gamma: self.tensor(&format!("{name}.weight"), &[n])?,
            beta: self.tensor(&format!("{name}.bias"), &[n])?,
        })
    }
}

impl BertWeights {
    /// Read every weight `cfg` implies, checking each shape.
    pub fn load(hf: &HfDir, cfg: &BertConfig) -> Result<BertWeights> {
        let word_name = "embeddings.word_embeddings.weight";
        let prefix = if hf.has_tensor(word_name) {
            ""
        } else if hf.has_tensor(&format!("bert.{word_name}")) {
            "bert."
        } else {
            return Err(Error::model_file(
                hf.dir(),
                format!("no tensor {word_name:?}: not a BERT checkpoint"),
            ));
        };
        let r = Reader { hf, prefix };
        let h = cfg.hidden_size;
        let ff = cfg.intermediate_size;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = format!("encoder.layer.{i}");
            let (qw, qb) = r.linear(&format!("{l}.attention.self.query"), h, h)?;
            let (kw, kb) = r.linear(&format!("{l}.attention.self.key"), h, h)?;
            let (vw, vb) = r.linear(&format!("{l}.attention.self.value"), h, h)?;
            let qkv_w = [qw, kw, vw].concat();
            layers.push(Layer {
                qkv: Linear {
                    w: PackedF32::pack(&qkv_w, 3 * h, h)?,
                    b: [qb, kb, vb].concat(),
                },
                attn_out: r.packed(&format!("{l}.attention.output.dense"), h, h)?,
                attn_norm: r.norm(&format!("{l}.attention.output.LayerNorm"), h)?,
                ffn_up: r.packed(&format!("{l}.intermediate.dense"), ff, h)?,
                ffn_down: r.packed(&format!("{l}.output.dense"), h, ff)?,
                ffn_norm: r.norm(&format!("{l}.output.LayerNorm"), h)?,
            });
        }
        Ok(BertWeights {
            word: r.tensor(word_name, &[cfg.vocab_size, h])?,
            position: r.tensor(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
            )?,
            token_type: r.tensor(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab_size, h],
            )?,
            embed_norm: r.norm("embeddings.LayerNorm", h)?,
            layers,
        })
    }
}
