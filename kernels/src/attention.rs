//! Attention of one query row over a key/value cache stored as f16, with an online softmax
//! (flash attention). The arithmetic follows llama.cpp's CPU flash-attention kernel for short
//! query batches so logits agree with it: the query is rounded to f16, each score is an f16 dot
//! product times `scale`, the running output is an f16 vector rescaled whenever a new maximum
//! appears, the running sum uses a fused multiply-add, and the output is the f16 accumulator
//! times `1 / sum`.

use crate::dispatch::Kernels;
use crate::KernelError;
use half::f16;

/// Keys or values of one KV head: row `j` is `data[j * stride + offset..][..dim]`.
#[derive(Clone, Copy)]
pub struct HeadRows<'a> {
    pub data: &'a [f16],
    pub stride: usize,
    pub offset: usize,
    pub dim: usize,
}

impl<'a> HeadRows<'a> {
    fn row(&self, j: usize) -> &'a [f16] {
        let s = j * self.stride + self.offset;
        &self.data[s..s + self.dim]
    }

    fn rows(&self) -> usize {
        if self.data.len() < self.offset + self.dim {
            0
        } else {
            (self.data.len() - self.offset - self.dim) / self.stride + 1
        }
    }
}

/// Running state of the online softmax over some key positions.
pub struct Partial {
    /// Largest score seen (`-inf` before any).
    pub max: f32,
    /// Sum of `exp(score - max)`.
    pub sum: f32,
    /// Sum of `exp(score - max) * v`, in f16 as llama.cpp keeps it.
    pub acc: Vec<f16>,
}

/// Attend `q` (already in f16) over positions `range` of `keys`/`values`.
pub fn attend_range(
    kt: &Kernels,
    q: &[f16],
    keys: HeadRows<'_>,
    values: HeadRows<'_>,
    range: std::ops::Range<usize>,
    scale: f32,
) -> Partial {
    let mut p = Partial { max: f32::NEG_INFINITY, sum: 0.0, acc: vec![f16::ZERO; values.dim] };
    for j in range {
        let s = (kt.dot_f16)(keys.row(j), q) * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > p.max {
            ms = (p.max - s).exp();
            p.max = s;
            (kt.scale_f16)(&mut p.acc, ms);
        } else {
            vs = (s - p.max).exp();
        }
        (kt.mad_f16)(&mut p.acc, values.row(j), vs);
        p.sum = p.sum.mul_add(ms, vs);
    }
    p
}

/// Causal attention of one query row over the first `n` positions; writes `values.dim` outputs.
pub fn attend(
    kt: &Kernels,
    q: &[f32],
    keys: HeadRows<'_>,
    values: HeadRows<'_>,
    n: usize,
    scale: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    if q.len() != keys.dim || out.len() != values.dim || keys.rows() < n || values.rows() < n {
        return Err(KernelError::Shape {
            op: "attend",
            what: format!(
                "query {} (key dim {}), output {} (value dim {}), {} positions of {} keys / {} values",
                q.len(),
                keys.dim,
                out.len(),
                values.dim,
                n,
                keys.rows(),
                values.rows()
            ),
        });
    }
    let q16: Vec<f16> = q.iter().map(|v| f16::from_f32(*v)).collect();
    let p = attend_range(kt, &q16, keys, values, 0..n, scale);
    let inv = if p.sum == 0.0 { 0.0 } else { 1.0 / p.sum };
    for (o, a) in out.iter_mut().zip(&p.acc) {
        *o = a.to_f32() * inv;
    }
    Ok(())
}
