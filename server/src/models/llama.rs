//! The Llama family (Llama 2/3, SmolLM, Mistral-style GQA): RMSNorm, RoPE, grouped-query
//! attention, SwiGLU, tied or separate output embeddings.
//!
//! The forward pass follows llama.cpp's graph and arithmetic so logits agree with it bit for bit
//! (tests/llama_reference.rs): weights multiply activations quantised to the weight's
//! `vec_dot_type`, norms accumulate in f64, RoPE and SwiGLU round as ggml does, the KV cache is
//! f16, and attention is `ryzanstein_kernels::attention` (llama.cpp's default, non-flash path,
//! with its batch-dependent summation order). The kernels behind it give the same bits on every
//! instruction set.

use super::options::{LmHead, ModelOptions, Quantize, TernaryKernel};
use super::requantize;
use super::weights::{Store, Weight};
use super::{BatchItem, CausalLm, KvShape, KvStore, BLOCK};
use crate::gguf::GgufFile;
use crate::{Error, Result};
use half::f16;
use ryzanstein_kernels::attention::{self, HeadRows, ValueCols};
use ryzanstein_kernels::matmul::{matmul_quantized_with, quantize_acts_into, QuantizedActs};
use ryzanstein_kernels::ops::{self, Rope, RopeStyle};
use ryzanstein_kernels::packed::matmul_packed_with;
use ryzanstein_kernels::seg_rows::SegRows;
use ryzanstein_kernels::ternary;
use ryzanstein_kernels::{DType, Pool};
use std::sync::Mutex;

/// Hyper-parameters, from GGUF metadata (`{arch}.*` keys) or a Hugging Face config.json.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub architecture: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope: Rope,
    pub context_length: usize,
    pub vocab_size: usize,
    /// The gated MLP's activation: SiLU (Llama) or squared ReLU (BitNet).
    pub ffn_act: FfnAct,
}

/// The activation of the gate in `down(act(gate(x)) * up(x))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfnAct {
    Silu,
    /// `relu(x)^2` (BitNet b1.58).
    Relu2,
}

impl LlamaConfig {
    fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: String| {
            Err(Error::Model(format!(
                "{} config: {what}",
                self.architecture
            )))
        };
        if self.n_layer == 0
            || self.n_embd == 0
            || self.n_head == 0
            || self.n_head_kv == 0
            || self.head_dim == 0
        {
            return bad(format!("zero-sized dimension in {self:?}"));
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!(
                "{} query heads do not group evenly over {} KV heads",
                self.n_head, self.n_head_kv
            ));
        }
        if self.rope.n_dims > self.head_dim || !self.rope.n_dims.is_multiple_of(2) {
            return bad(format!(
                "rotary dims {} for head dim {}",
                self.rope.n_dims, self.head_dim
            ));
        }
        Ok(())
    }

    /// Read the `{arch}.*` hyper-parameters of a GGUF file.
    pub fn from_gguf(g: &GgufFile) -> Result<LlamaConfig> {
        let arch = g.architecture()?.to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let n_embd = g.get_u32(&key("embedding_length"))? as usize;
        let n_head = g.get_u32(&key("attention.head_count"))? as usize;
        let n_head_kv = g
            .opt_u32(&key("attention.head_count_kv"))?
            .map_or(n_head, |v| v as usize);
        let head_dim = g
            .opt_u32(&key("attention.key_length"))?
            .map_or(n_embd / n_head.max(1), |v| v as usize);
        let vocab_size = g.tensor("token_embd.weight")?.info.n_rows();
        let freq_scale = match g.opt_str(&key("rope.scaling.type"))? {
            None | Some("none") => 1.0,
            Some("linear") => 1.0 / g.get_f32(&key("rope.scaling.factor"))?,
            Some(other) => {
                return Err(Error::model_file(
                    g.path(),
                    format!("rope scaling type {other:?} is not supported yet (supported: none, linear, llama3 freq factors)"),
                ))
            }
        };
        let freq_factors = if g.has_tensor("rope_freqs.weight") {
            g.tensor("rope_freqs.weight")?.to_f32_vec()?
        } else {
            vec![]
        };
        let cfg = LlamaConfig {
            n_layer: g.get_u32(&key("block_count"))? as usize,
            n_embd,
            n_ff: g.get_u32(&key("feed_forward_length"))? as usize,
            n_head,
            n_head_kv,
            head_dim,
            rms_eps: g
                .opt_f32(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5),
            rope: Rope {
                style: RopeStyle::Normal,
                n_dims: g
                    .opt_u32(&key("rope.dimension_count"))?
                    .map_or(head_dim, |v| v as usize),
                freq_base: g.opt_f32(&key("rope.freq_base"))?.unwrap_or(10000.0),
                freq_scale,
                freq_factors,
            },
            context_length: g
                .opt_u32(&key("context_length"))?
                .map_or(2048, |v| v as usize),
            vocab_size,
            architecture: arch,
            ffn_act: FfnAct::Silu,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    wo: Weight,
    ffn_norm: Vec<f32>,
    w_gate: Weight,
    w_up: Weight,
    w_down: Weight,
    /// BitNet: RMSNorm of the attention output before `wo`, and of `act(gate) * up` before
    /// `w_down`.
    attn_sub_norm: Option<Vec<f32>>,
    ffn_sub_norm: Option<Vec<f32>>,
}

/// A layer's norm weights.
pub(crate) struct LayerNorms {
    pub attn: Vec<f32>,
    pub ffn: Vec<f32>,
    pub attn_sub: Option<Vec<f32>>,
    pub ffn_sub: Option<Vec<f32>>,
}

/// A loaded Llama-family model.
pub struct Llama {
    cfg: LlamaConfig,
    store: Store,
    tok_embd: Weight,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// `None` when tied to `tok_embd`.
    output: Option<Weight>,
    pool: Pool,
    /// Buffers of the forward pass, kept between calls (no allocation per call once a
    /// sequence's longest batch has been seen).
    scratch: Mutex<Scratch>,
}

/// The activations of one forward pass.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// The sub-norms' outputs (BitNet).
    sub_q: Vec<f32>,
    sub_ff: Vec<f32>,
    kv16: Vec<f16>,
    v16: Vec<f16>,
    acts: ActsBuf,
    acts2: ActsBuf,
}

/// Quantised activations kept between matmuls, and the zero-padded copy of their rows that
/// ternary matrices with padded rows quantise from.
#[derive(Default)]
struct ActsBuf {
    acts: Option<QuantizedActs>,
    padded: Vec<f32>,
}

/// Whether `acts`, quantised for another matrix, serve `w` as they are.
fn fits(w: &Weight, acts: &QuantizedActs) -> bool {
    w.dtype.vec_dot_type() == acts.dtype && w.cols == acts.k
}

/// `v` holding `n` values (their contents are about to be overwritten).
fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    v
}

/// Architectures that share llama's tensor layout in GGUF.
pub const GGUF_ARCHITECTURES: &[&str] = &["llama", "mistral", "granite"];

fn pool(threads: usize) -> Result<Pool> {
    Pool::new(threads)
        .map_err(|e| Error::Model(format!("cannot start {threads} compute threads: {e}")))
}

impl Layer {
    fn weights_mut(&mut self) -> [&mut Weight; 7] {
        [
            &mut self.wq,
            &mut self.wk,
            &mut self.wv,
            &mut self.wo,
            &mut self.w_gate,
            &mut self.w_up,
            &mut self.w_down,
        ]
    }
}

impl Llama {
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Load from a GGUF file; weights stay in the memory map.
    pub fn from_gguf(g: &GgufFile, threads: usize, opts: &ModelOptions) -> Result<Llama> {
        let cfg = LlamaConfig::from_gguf(g)?;
        let norm = |name: &str| -> Result<Vec<f32>> {
            let v = g.tensor(name)?.to_f32_vec()?;
            if v.len() != cfg.n_embd {
                return Err(Error::model_file(
                    g.path(),
                    format!("{name} has {} values, expected {}", v.len(), cfg.n_embd),
                ));
            }
            Ok(v)
        };
        let mat = |name: &str, rows: usize, cols: usize| -> Result<Weight> {
            let w = Weight::from_gguf(g, name)?;
            if (w.rows, w.cols) != (rows, cols) {
                return Err(Error::model_file(
                    g.path(),
                    format!(
                        "tensor {name:?} is {}x{}, expected {rows}x{cols} for this config",
                        w.rows, w.cols
                    ),
                ));
            }
            Ok(w)
        };
        let (d, q, kv, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        let layers = (0..cfg.n_layer)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}.weight");
                Ok(Layer {
                    attn_norm: norm(&n("attn_norm"))?,
                    wq: mat(&n("attn_q"), q, d)?,
                    wk: mat(&n("attn_k"), kv, d)?,
                    wv: mat(&n("attn_v"), kv, d)?,
                    wo: mat(&n("attn_output"), d, q)?,
                    ffn_norm: norm(&n("ffn_norm"))?,
                    w_gate: mat(&n("ffn_gate"), ff, d)?,
                    w_up: mat(&n("ffn_up"), ff, d)?,
                    w_down: mat(&n("ffn_down"), d, ff)?,
                    attn_sub_norm: None,
                    ffn_sub_norm: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let tok_embd = mat("token_embd.weight", cfg.vocab_size, d)?;
        let output = if g.has_tensor("output.weight") {
            Some(mat("output.weight", cfg.vocab_size, d)?)
        } else {
            None
        };
        let mut model = Llama {
            output_norm: norm("output_norm.weight")?,
            tok_embd,
            layers,
            output,
            pool: pool(threads)?,
            store: Store::gguf(g.clone()),
            cfg,
            scratch: Mutex::default(),
        };
        model.prepare(opts)?;
        model.pack_weights(opts)?;
        Ok(model)
    }

    /// Apply the load options: ternarise the projections (`--quantize ternary`), then requantise
    /// a float output matrix to Q8_0 (`--lm-head`; by default when the projections are ternary).
    fn prepare(&mut self, opts: &ModelOptions) -> Result<()> {
        if opts.quantize == Some(Quantize::Ternary) {
            for layer in &mut self.layers {
                for w in layer.weights_mut() {
                    let dense = std::mem::replace(w, Weight::empty());
                    *w = requantize::ternarise(dense, &self.store)?;
                }
            }
        }
        let ternary = self
            .layers
            .iter_mut()
            .any(|l| l.weights_mut().iter().any(|w| w.dtype == DType::I2S));
        let head = self.output.as_mut().unwrap_or(&mut self.tok_embd);
        let requantise = match opts.lm_head {
            LmHead::Stored => false,
            LmHead::Q8_0 => true,
            LmHead::Auto => ternary,
        };
        if requantise && requantize::q8_0_applies(head) {
            *head = requantize::to_q8_0(head, &self.store)?;
        }
        Ok(())
    }

    /// Repack every matrix that has an eight-row kernel (see `ryzanstein_kernels::packed`),
    /// in the order a forward pass reads them.
    fn pack_weights(&mut self, opts: &ModelOptions) -> Result<()> {
        let mut ws: Vec<&mut Weight> = Vec::new();
        for layer in &mut self.layers {
            ws.extend(layer.weights_mut());
        }
        if let Some(w) = &mut self.output {
            ws.push(w);
        }
        ws.push(&mut self.tok_embd);
        let lut = opts.ternary_kernel.resolve() == TernaryKernel::Lut;
        self.store.pack(&mut ws, lut)
    }

    /// Assemble a model from already-built parts (Hugging Face checkpoints, tests).
    pub(crate) fn from_parts(
        cfg: LlamaConfig,
        tok_embd: Weight,
        layers: Vec<([Weight; 7], LayerNorms)>,
        output_norm: Vec<f32>,
        output: Option<Weight>,
        threads: usize,
        opts: &ModelOptions,
    ) -> Result<Llama> {
        cfg.validate()?;
        let layers = layers
            .into_iter()
            .map(|([wq, wk, wv, wo, w_gate, w_up, w_down], n)| Layer {
                attn_norm: n.attn,
                wq,
                wk,
                wv,
                wo,
                ffn_norm: n.ffn,
                w_gate,
                w_up,
                w_down,
                attn_sub_norm: n.attn_sub,
                ffn_sub_norm: n.ffn_sub,
            })
            .collect();
        let mut model = Llama {
            cfg,
            store: Store::owned(),
            tok_embd,
            layers,
            output_norm,
            output,
            pool: pool(threads)?,
            scratch: Mutex::default(),
        };
        model.prepare(opts)?;
        model.pack_weights(opts)?;
        Ok(model)
    }

    fn matmul(&self, w: &Weight, acts: &QuantizedActs, out: &mut [f32]) -> Result<()> {
        if let Some(t) = w.ternary(&self.store) {
            ternary::matmul(ternary::kernels(), &self.pool, t, acts, out)?;
            return Ok(());
        }
        if let Some(t) = w.lut(&self.store) {
            ternary::lut::matmul(ternary::lut::kernels(), &self.pool, t, acts, out)?;
            return Ok(());
        }
        let kt = ryzanstein_kernels::dispatch::kernels();
        match w.packed(&self.store) {
            Some(p) => matmul_packed_with(kt, &self.pool, p, acts, out)?,
            None => matmul_quantized_with(kt, &self.pool, w.mat(&self.store), acts, out)?,
        }
        Ok(())
    }

    /// Quantise `x` for `w` into `buf` (reusing its buffers).
    fn quantize_for<'a>(
        &self,
        w: &Weight,
        x: &[f32],
        buf: &'a mut ActsBuf,
    ) -> Result<&'a QuantizedActs> {
        let kt = ryzanstein_kernels::dispatch::kernels();
        let a = buf.acts.get_or_insert_with(QuantizedActs::empty);
        if w.in_cols == w.cols {
            quantize_acts_into(kt, a, w.dtype.vec_dot_type(), x, w.cols)?;
        } else {
            // Ternary rows padded to whole blocks: pad each activation row with zeros (which
            // change neither its int8 scale nor any product).
            let padded = &mut buf.padded;
            padded.clear();
            padded.resize(x.len() / w.in_cols * w.cols, 0.0);
            for (p, r) in padded
                .chunks_exact_mut(w.cols)
                .zip(x.chunks_exact(w.in_cols))
            {
                p[..w.in_cols].copy_from_slice(r);
            }
            quantize_acts_into(kt, a, w.dtype.vec_dot_type(), padded, w.cols)?;
        }
        Ok(a)
    }

    /// Causal attention of `t` new positions (queries `q`, `t x q_dim`) over one layer of a
    /// sequence's cache (its blocks' keys and values, in position order), which already holds
    /// the new keys and values, summed in a prompt batch's order (`batched`) or a decode
    /// step's; writes `t x q_dim` into `out`. (In a decode step's order, a row's padding holds
    /// the later rows' values: their probabilities are exactly 0, and a product of 0 added to
    /// an accumulator that starts at +0 never changes its bits.)
    fn attention(
        &self,
        q: &[f32],
        keys: &[&[f16]],
        values: &[&[f16]],
        start: usize,
        batched: bool,
        out: &mut [f32],
    ) -> Result<()> {
        let cfg = &self.cfg;
        let (hd, kv_dim, q_dim) = (cfg.head_dim, cfg.kv_dim(), cfg.q_dim());
        let group = cfg.n_head / cfg.n_head_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        let kt = ryzanstein_kernels::dispatch::kernels();
        // One task per (position, head).
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let tasks = self.pool.chunk_for(out.len() / hd, 4, 1);
        self.pool.chunks_mut(out, hd, tasks, &|idx, o| {
            let (t, h) = (idx / cfg.n_head, idx % cfg.n_head);
            let kvh = h / group;
            let qh = &q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
            let key_rows = HeadRows {
                blocks: keys,
                block_rows: BLOCK,
                stride: kv_dim,
                offset: kvh * hd,
                dim: hd,
            };
            let cols = ValueCols {
                cols: SegRows {
                    segs: values,
                    seg_len: BLOCK,
                    stride: BLOCK,
                    offset: kvh * hd * BLOCK,
                },
                dim: hd,
            };
            if let Err(e) =
                attention::attend(kt, qh, key_rows, cols, start + t + 1, scale, batched, o)
            {
                failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e.into());
            }
        });
        match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One forward pass over every item's new tokens: the weights are read once for all rows
    /// (one GEMM per matrix), each item's keys and values go to its own state, and each item
    /// attends over its own cache. Returns the last position's logits of the items that ask
    /// for them. A row's result does not depend on the other rows in the batch.
    fn forward_batch_inner(
        &self,
        kv: &mut KvStore,
        items: &[BatchItem<'_>],
    ) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.cfg;
        let (d, q_dim, kv_dim, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        if kv.shape() != self.kv_shape() {
            return Err(Error::Model(format!(
                "the KV store is shaped {:?}, this model needs {:?}",
                kv.shape(),
                self.kv_shape()
            )));
        }
        // Row ranges of the items in the batch.
        let mut spans = Vec::with_capacity(items.len());
        let mut total = 0;
        for item in items.iter() {
            let (t, start) = (item.tokens.len(), item.start);
            if t == 0 {
                return Err(Error::Model("forward called with no tokens".into()));
            }
            if start + t > cfg.context_length {
                return Err(Error::Model(format!(
                    "sequence of {} positions exceeds the model's context length of {}",
                    start + t,
                    cfg.context_length
                )));
            }
            if item.table.len() * BLOCK < start + t
                || item.table.iter().any(|&b| b as usize >= kv.blocks())
            {
                return Err(Error::Model(format!(
                    "block table {:?} does not cover {} positions in a store of {} blocks",
                    item.table,
                    start + t,
                    kv.blocks()
                )));
            }
            if item.logits > t {
                return Err(Error::Model(format!(
                    "logits of {} positions asked of an item of {t} new tokens",
                    item.logits
                )));
            }
            spans.push(total..total + t);
            total += t;
        }
        if total == 0 {
            return Err(Error::Model("forward called with no sequences".into()));
        }
        let t = total;
        let kt = ryzanstein_kernels::dispatch::kernels();
        let mut guard = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let sc = &mut *guard;
        // Embedding lookup.
        let x = sized(&mut sc.x, t * d);
        let all_tokens = items.iter().flat_map(|i| i.tokens.iter());
        for (row, &tok) in x.chunks_exact_mut(d).zip(all_tokens) {
            if tok as usize >= cfg.vocab_size {
                return Err(Error::Model(format!(
                    "token id {tok} is outside the vocabulary of {}",
                    cfg.vocab_size
                )));
            }
            self.tok_embd
                .dequantize_row(&self.store, tok as usize, row)?;
        }
        let mut rope_cache: Vec<Vec<(f32, f32)>> = Vec::with_capacity(t);
        for item in items.iter() {
            let start = item.start;
            rope_cache.extend((start..start + item.tokens.len()).map(|p| cfg.rope.cache(p)));
        }

        sized(&mut sc.h, t * d);
        sized(&mut sc.q, t * q_dim);
        sized(&mut sc.k, t * kv_dim);
        sized(&mut sc.v, t * kv_dim);
        sized(&mut sc.attn, t * q_dim);
        sized(&mut sc.proj, t * d);
        sized(&mut sc.gate, t * ff);
        sized(&mut sc.up, t * ff);
        sized(&mut sc.sub_q, t * q_dim);
        sized(&mut sc.sub_ff, t * ff);
        sc.kv16.resize(t * kv_dim, f16::ZERO);
        sc.v16.resize(t * kv_dim, f16::ZERO);
        let Scratch {
            x,
            h,
            q,
            k,
            v,
            attn,
            proj,
            gate,
            up,
            sub_q,
            sub_ff,
            kv16,
            v16,
            acts: acts_a,
            acts2: acts_b,
        } = sc;

        for (li, layer) in self.layers.iter().enumerate() {
            ops::rms_norm(x, &layer.attn_norm, cfg.rms_eps, h)?;
            let acts = self.quantize_for(&layer.wq, h, acts_a)?;
            self.matmul(&layer.wq, acts, q)?;
            let acts_kv = if fits(&layer.wk, acts) {
                acts
            } else {
                self.quantize_for(&layer.wk, h, acts_b)?
            };
            self.matmul(&layer.wk, acts_kv, k)?;
            self.matmul(&layer.wv, acts_kv, v)?;
            for (i, rope) in rope_cache.iter().enumerate() {
                cfg.rope
                    .apply(&mut q[i * q_dim..(i + 1) * q_dim], cfg.head_dim, rope)?;
                cfg.rope
                    .apply(&mut k[i * kv_dim..(i + 1) * kv_dim], cfg.head_dim, rope)?;
            }
            (kt.f32_to_f16)(k, kv16);
            (kt.f32_to_f16)(v, v16);
            for (item, span) in items.iter().zip(&spans) {
                let rows = span.start * kv_dim..span.end * kv_dim;
                kv.write(li, item.table, item.start, &kv16[rows.clone()], &v16[rows]);
            }
            for (item, span) in items.iter().zip(&spans) {
                let used = &item.table[..(item.start + span.len()).div_ceil(BLOCK)];
                let keys: Vec<&[f16]> = used.iter().map(|&b| kv.keys(li, b)).collect();
                let values: Vec<&[f16]> = used.iter().map(|&b| kv.values(li, b)).collect();
                self.attention(
                    &q[span.start * q_dim..span.end * q_dim],
                    &keys,
                    &values,
                    item.start,
                    item.batched,
                    &mut attn[span.start * q_dim..span.end * q_dim],
                )?;
            }

            let attn_out: &[f32] = match &layer.attn_sub_norm {
                Some(w) => {
                    ops::rms_norm(attn, w, cfg.rms_eps, sub_q)?;
                    sub_q
                }
                None => attn,
            };
            let acts = self.quantize_for(&layer.wo, attn_out, acts_a)?;
            self.matmul(&layer.wo, acts, proj)?;
            ops::add_assign(x, proj)?;

            ops::rms_norm(x, &layer.ffn_norm, cfg.rms_eps, h)?;
            let acts = self.quantize_for(&layer.w_gate, h, acts_a)?;
            self.matmul(&layer.w_gate, acts, gate)?;
            let acts = if fits(&layer.w_up, acts) {
                acts
            } else {
                self.quantize_for(&layer.w_up, h, acts_b)?
            };
            self.matmul(&layer.w_up, acts, up)?;
            for (g, u) in gate.chunks_exact_mut(ff).zip(up.chunks_exact(ff)) {
                match cfg.ffn_act {
                    FfnAct::Silu => ops::swiglu(g, u)?,
                    FfnAct::Relu2 => ops::relu2_mul(g, u)?,
                }
            }
            let hidden: &[f32] = match &layer.ffn_sub_norm {
                Some(w) => {
                    ops::rms_norm(gate, w, cfg.rms_eps, sub_ff)?;
                    sub_ff
                }
                None => gate,
            };
            let acts = self.quantize_for(&layer.w_down, hidden, acts_a)?;
            self.matmul(&layer.w_down, acts, proj)?;
            ops::add_assign(x, proj)?;
        }
        // Logits of each item's last wanted positions, in one pass over the output matrix.
        let wanted: Vec<usize> = items
            .iter()
            .zip(&spans)
            .flat_map(|(item, span)| span.end - item.logits..span.end)
            .collect();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); items.len()];
        if wanted.is_empty() {
            return Ok(out);
        }
        let normed = &mut h[..wanted.len() * d];
        for (row, &r) in normed.chunks_exact_mut(d).zip(&wanted) {
            ops::rms_norm(&x[r * d..(r + 1) * d], &self.output_norm, cfg.rms_eps, row)?;
        }
        let out_w = self.output.as_ref().unwrap_or(&self.tok_embd);
        let acts = self.quantize_for(out_w, normed, acts_a)?;
        let vocab = cfg.vocab_size;
        let mut logits = vec![0.0f32; wanted.len() * vocab];
        self.matmul(out_w, acts, &mut logits)?;
        let mut rows = logits.chunks_exact(vocab);
        for (o, item) in out.iter_mut().zip(items) {
            for row in rows.by_ref().take(item.logits) {
                o.extend_from_slice(row);
            }
        }
        Ok(out)
    }
}

impl CausalLm for Llama {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn context_length(&self) -> usize {
        self.cfg.context_length
    }
    fn architecture(&self) -> &str {
        &self.cfg.architecture
    }
    fn kv_shape(&self) -> KvShape {
        KvShape {
            layers: self.cfg.n_layer,
            kv_dim: self.cfg.kv_dim(),
        }
    }
    fn forward_batch(&self, kv: &mut KvStore, items: &[BatchItem<'_>]) -> Result<Vec<Vec<f32>>> {
        self.forward_batch_inner(kv, items)
    }
}
