//! The BERT encoder's forward pass over a batch of token sequences.
//!
//! The sequences' tokens are stacked into one matrix without padding, so every dense layer is
//! one GEMM over all tokens of the batch; attention runs per sequence (each token attends to
//! the tokens of its own sequence only, which is what an attention mask over padded rows
//! computes). Layers are post-LayerNorm, as BERT: `x = LN(x + Attn(x))`, `x = LN(x + FFN(x))`.

use ryzanstein_kernels::gemm_f32::gemm_f32;
use ryzanstein_kernels::Pool;

use super::config::BertConfig;
use super::ops::{gelu, layer_norm};
use super::weights::{BertWeights, Linear, Norm};
use crate::error::{Error, Result};

/// The encoder: its configuration and weights.
#[derive(Debug)]
pub struct Encoder {
    pub cfg: BertConfig,
    pub weights: BertWeights,
}

/// `out = x W^T + b` over all rows of `x`.
fn linear(pool: &Pool, x: &[f32], l: &Linear, out: &mut Vec<f32>) -> Result<()> {
    out.resize(x.len() / l.w.cols() * l.w.rows(), 0.0);
    gemm_f32(pool, x, &l.w, Some(&l.b), out)?;
    Ok(())
}

/// `x = LN(x + y)`, rows spread over the pool.
fn add_norm(pool: &Pool, x: &mut [f32], y: &[f32], norm: &Norm, eps: f64) {
    let h = norm.gamma.len();
    let rows_per_task = 16;
    pool.chunks_mut(x, h * rows_per_task, 1, &|i, part| {
        let start = i * h * rows_per_task;
        for (v, r) in part.iter_mut().zip(&y[start..]) {
            *v += r;
        }
        layer_norm(part, norm, eps);
    });
}

/// Eight-lane dot product (vectorises without reassociation licence; plain multiply and add,
/// since `mul_add` is a library call where the build does not enable FMA).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

impl Encoder {
    /// The last hidden states of `seqs` (each a full input: [CLS] ... [SEP]), stacked: row
    /// `offset(s) + i` is token `i` of sequence `s`. Ids must be below the vocabulary size and
    /// sequences no longer than the position table.
    pub fn forward(&self, pool: &Pool, seqs: &[&[u32]]) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let w = &self.weights;
        let h = cfg.hidden_size;
        let total: usize = seqs.iter().map(|s| s.len()).sum();
        let mut x = Vec::with_capacity(total * h);
        for seq in seqs {
            if seq.len() > cfg.max_position_embeddings {
                return Err(Error::Model(format!(
                    "an input of {} tokens is longer than the model's {} positions",
                    seq.len(),
                    cfg.max_position_embeddings
                )));
            }
            for (pos, &id) in seq.iter().enumerate() {
                let id = id as usize;
                if id >= cfg.vocab_size {
                    return Err(Error::TokenOutOfRange {
                        id: id as u32,
                        vocab_size: cfg.vocab_size,
                    });
                }
                let word = &w.word[id * h..(id + 1) * h];
                let position = &w.position[pos * h..(pos + 1) * h];
                // Token type 0: one sentence per input.
                let token_type = &w.token_type[..h];
                x.extend(
                    word.iter()
                        .zip(position)
                        .zip(token_type)
                        .map(|((a, b), c)| a + b + c),
                );
            }
        }
        layer_norm(&mut x, &w.embed_norm, cfg.layer_norm_eps);

        let mut offsets = Vec::with_capacity(seqs.len());
        let mut o = 0;
        for s in seqs {
            offsets.push((o, s.len()));
            o += s.len();
        }
        let (mut qkv, mut ctx, mut tmp, mut up) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for layer in &w.layers {
            linear(pool, &x, &layer.qkv, &mut qkv)?;
            self.attention(pool, &qkv, &offsets, total, &mut ctx);
            linear(pool, &ctx, &layer.attn_out, &mut tmp)?;
            add_norm(pool, &mut x, &tmp, &layer.attn_norm, cfg.layer_norm_eps);
            linear(pool, &x, &layer.ffn_up, &mut up)?;
            pool.chunks_mut(&mut up, cfg.intermediate_size * 16, 1, &|_, part| {
                gelu(part)
            });
            linear(pool, &up, &layer.ffn_down, &mut tmp)?;
            add_norm(pool, &mut x, &tmp, &layer.ffn_norm, cfg.layer_norm_eps);
        }
        Ok(x)
    }

    /// Scaled dot-product attention of every head over each sequence's own tokens. `qkv` rows
    /// are `[q | k | v]`; `ctx` gets `total x hidden`, heads side by side.
    fn attention(
        &self,
        pool: &Pool,
        qkv: &[f32],
        offsets: &[(usize, usize)],
        total: usize,
        ctx: &mut Vec<f32>,
    ) {
        let h = self.cfg.hidden_size;
        let d = self.cfg.head_dim();
        let heads = self.cfg.num_attention_heads;
        let scale = 1.0 / (d as f32).sqrt();
        // Head-major scratch (`heads x total x d`), so each head's task writes one slice.
        let mut by_head = vec![0.0f32; heads * total * d];
        pool.chunks_mut(&mut by_head, total * d, 1, &|head, out| {
            let mut scores = Vec::new();
            for &(start, len) in offsets {
                let row = |t: usize, part: usize| {
                    let base = (start + t) * 3 * h + part * h + head * d;
                    &qkv[base..base + d]
                };
                scores.resize(len, 0.0f32);
                for i in 0..len {
                    let q = row(i, 0);
                    let mut max = f32::NEG_INFINITY;
                    for (j, s) in scores.iter_mut().enumerate() {
                        *s = dot(q, row(j, 1)) * scale;
                        max = max.max(*s);
                    }
                    let mut sum = 0.0f32;
                    for s in scores.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let o = &mut out[(start + i) * d..(start + i + 1) * d];
                    o.fill(0.0);
                    for (j, s) in scores.iter().enumerate() {
                        let p = s / sum;
                        for (acc, v) in o.iter_mut().zip(row(j, 2)) {
                            *acc += p * v;
                        }
                    }
                }
            }
        });
        ctx.resize(total * h, 0.0);
        for (t, row) in ctx.chunks_exact_mut(h).enumerate() {
            for (head, dst) in row.chunks_exact_mut(d).enumerate() {
                dst.copy_from_slice(&by_head[(head * total + t) * d..(head * total + t + 1) * d]);
            }
        }
    }
}
