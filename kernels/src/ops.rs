//! Row operations of a transformer layer, with llama.cpp's arithmetic (f64 accumulation where
//! ggml uses `ggml_float`, the same order of multiplications), so results match to rounding.

use crate::KernelError;

/// `out = x / sqrt(mean(x^2) + eps) * w`, one row of `w.len()` values at a time.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) -> Result<(), KernelError> {
    let k = w.len();
    if k == 0 || !x.len().is_multiple_of(k) || out.len() != x.len() {
        return Err(KernelError::Shape {
            op: "rms_norm",
            what: format!("input {} values, weight {k}, output {}", x.len(), out.len()),
        });
    }
    for (xr, or) in x.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
        let sum: f64 = xr.iter().map(|v| (v * v) as f64).sum();
        let mean = (sum / k as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, v), g) in or.iter_mut().zip(xr).zip(w) {
            *o = (v * scale) * g;
        }
    }
    Ok(())
}

/// How rotary pairs are laid out within a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: GGUF llama weights (Q/K rows permuted at conversion).
    Normal,
    /// Halves `(i, i + d/2)`: Hugging Face checkpoints, GPT-NeoX.
    Neox,
}

/// Rotary position embedding parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub style: RopeStyle,
    /// Rotated dimensions per head (the first `n_dims` of each head).
    pub n_dims: usize,
    pub freq_base: f32,
    /// Linear position scaling (`1 / factor`); 1.0 for none.
    pub freq_scale: f32,
    /// Per-pair frequency divisors (Llama 3 style scaling), `n_dims / 2` of them, or empty.
    pub freq_factors: Vec<f32>,
}

impl Rope {
    /// `(cos, sin)` for each rotary pair at position `pos`, computed as ggml does.
    pub fn cache(&self, pos: usize) -> Vec<(f32, f32)> {
        let theta_scale = self.freq_base.powf(-2.0 / self.n_dims as f32);
        let mut theta = pos as f32;
        (0..self.n_dims / 2)
            .map(|i| {
                let ff = self.freq_factors.get(i).copied().unwrap_or(1.0);
                let t = self.freq_scale * (theta / ff);
                theta *= theta_scale;
                (t.cos(), t.sin())
            })
            .collect()
    }

    /// Rotate every head (`head_dim` values each) of one position's vector `x` in place.
    pub fn apply(
        &self,
        x: &mut [f32],
        head_dim: usize,
        cs: &[(f32, f32)],
    ) -> Result<(), KernelError> {
        if head_dim == 0
            || !x.len().is_multiple_of(head_dim)
            || self.n_dims > head_dim
            || cs.len() != self.n_dims / 2
        {
            return Err(KernelError::Shape {
                op: "rope",
                what: format!(
                    "{} values, head_dim {head_dim}, rotary dims {}",
                    x.len(),
                    self.n_dims
                ),
            });
        }
        #[cfg(target_arch = "x86_64")]
        if crate::dispatch::isa().has_avx2_fma() {
            // SAFETY: the CPU has FMA (every instruction set from AVX2 up requires it).
            unsafe { rotate_fma(self.style, self.n_dims, x, head_dim, cs) };
            return Ok(());
        }
        rotate(self.style, self.n_dims, x, head_dim, cs);
        Ok(())
    }
}

/// The rotation of [`Rope::apply`]. `mul_add` is a single rounding either way; compiled with
/// FMA enabled it is one instruction instead of a library call.
#[inline(always)]
fn rotate(style: RopeStyle, n_dims: usize, x: &mut [f32], head_dim: usize, cs: &[(f32, f32)]) {
    let half = n_dims / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(c, s)) in cs.iter().enumerate() {
            let (a, b) = match style {
                RopeStyle::Normal => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + half),
            };
            let (x0, x1) = (head[a], head[b]);
            // ggml's rounding: one fused multiply-add per output.
            head[a] = x0.mul_add(c, -(x1 * s));
            head[b] = x0.mul_add(s, x1 * c);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn rotate_fma(
    style: RopeStyle,
    n_dims: usize,
    x: &mut [f32],
    head_dim: usize,
    cs: &[(f32, f32)],
) {
    rotate(style, n_dims, x, head_dim, cs)
}

/// `gate = silu(gate) * up` (SwiGLU) of one row, in place, with ggml's vector arithmetic (see
/// `scalar::activation`); apply it row by row, since the tail of a row is computed differently.
pub fn swiglu(gate: &mut [f32], up: &[f32]) -> Result<(), KernelError> {
    if gate.len() != up.len() {
        return Err(KernelError::Shape {
            op: "swiglu",
            what: format!("gate {} vs up {}", gate.len(), up.len()),
        });
    }
    (crate::dispatch::kernels().swiglu)(gate, up);
    Ok(())
}

/// `gate = relu(gate)^2 * up`, element-wise (BitNet's gated MLP).
pub fn relu2_mul(gate: &mut [f32], up: &[f32]) -> Result<(), KernelError> {
    if gate.len() != up.len() {
        return Err(KernelError::Shape {
            op: "relu2_mul",
            what: format!("gate {} vs up {}", gate.len(), up.len()),
        });
    }
    for (g, u) in gate.iter_mut().zip(up) {
        let r = g.max(0.0);
        *g = r * r * u;
    }
    Ok(())
}

/// `acc += x`, element-wise.
pub fn add_assign(acc: &mut [f32], x: &[f32]) -> Result<(), KernelError> {
    if acc.len() != x.len() {
        return Err(KernelError::Shape {
            op: "add",
            what: format!("{} vs {}", acc.len(), x.len()),
        });
    }
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_rows() {
        let x = [3.0f32, 4.0, 0.0, 0.0];
        let w = [1.0f32, 1.0, 2.0, 2.0];
        let mut out = [0.0f32; 4];
        rms_norm(&x, &w, 0.0, &mut out).unwrap();
        // mean(x^2) = 25/4, scale = 2/5
        assert!((out[0] - 1.2).abs() < 1e-6 && (out[1] - 1.6).abs() < 1e-6);
        assert!(rms_norm(&x, &w[..3], 0.0, &mut out).is_err());
    }

    #[test]
    fn rope_position_zero_is_identity_and_preserves_norm() {
        let rope = Rope {
            style: RopeStyle::Normal,
            n_dims: 8,
            freq_base: 10000.0,
            freq_scale: 1.0,
            freq_factors: vec![],
        };
        let orig: Vec<f32> = (0..16).map(|i| i as f32 * 0.1 - 0.7).collect();
        let mut x = orig.clone();
        rope.apply(&mut x, 8, &rope.cache(0)).unwrap();
        assert_eq!(x, orig);
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let rope = Rope {
                style,
                ..rope.clone()
            };
            let mut x = orig.clone();
            rope.apply(&mut x, 8, &rope.cache(17)).unwrap();
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = x.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-4, "{n0} vs {n1}");
            assert_ne!(x, orig);
        }
    }

    #[test]
    fn rope_relative_property() {
        // <rot(q, m), rot(k, n)> depends only on m - n.
        let rope = Rope {
            style: RopeStyle::Neox,
            n_dims: 4,
            freq_base: 10000.0,
            freq_scale: 1.0,
            freq_factors: vec![],
        };
        let q = [0.3f32, -0.2, 0.5, 0.1];
        let k = [0.7f32, 0.4, -0.3, 0.2];
        let dot_at = |m: usize, n: usize| {
            let (mut a, mut b) = (q, k);
            rope.apply(&mut a, 4, &rope.cache(m)).unwrap();
            rope.apply(&mut b, 4, &rope.cache(n)).unwrap();
            a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
        };
        assert!((dot_at(5, 2) - dot_at(13, 10)).abs() < 1e-4);
    }

    #[test]
    fn swiglu_values() {
        let mut g = [0.0f32, 1.0, -2.0];
        swiglu(&mut g, &[5.0, 2.0, 1.0]).unwrap();
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 * 0.7310586).abs() < 1e-6);
        assert!((g[2] - (-2.0 * 0.11920292)).abs() < 1e-6);
        assert!(swiglu(&mut g, &[1.0]).is_err());
    }
}
