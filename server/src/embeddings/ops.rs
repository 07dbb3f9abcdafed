//! The encoder's element-wise and row operations: LayerNorm and the exact (erf-based) GELU.

use super::weights::Norm;

/// LayerNorm of each row of `x` (rows of `norm.gamma.len()` values), in place: `(x - mean) /
/// sqrt(var + eps) * gamma + beta` with the biased variance, as PyTorch computes it. Sums are
/// taken in f64.
pub fn layer_norm(x: &mut [f32], norm: &Norm, eps: f64) {
    let n = norm.gamma.len();
    for row in x.chunks_exact_mut(n) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = row
            .iter()
            .map(|&v| {
                let d = v as f64 - mean;
                d * d
            })
            .sum::<f64>()
            / n as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
            *v = ((*v as f64 - mean) * inv) as f32 * g + b;
        }
    }
}

/// `erfc(x)` to about 1.2e-7 relative error everywhere in exact arithmetic (the Chebyshev fit
/// of Numerical Recipes, `erfcc`), evaluated in f32 (about 1e-6 relative).
fn erfc(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_24 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// GELU, `x * Phi(x) = 0.5 * x * erfc(-x / sqrt(2))` (BERT's `hidden_act: "gelu"`), in place.
pub fn gelu(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * erfc(-*v * std::f32::consts::FRAC_1_SQRT_2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_values() {
        // x * Phi(x) from the normal distribution's table.
        let cases = [
            (0.0f32, 0.0f32),
            (1.0, 0.841_344_7),
            (-1.0, -0.158_655_25),
            (2.0, 1.954_5),
            (-3.0, -0.004_049_69),
            (0.5, 0.345_731_1),
        ];
        for (x, want) in cases {
            let mut v = [x];
            gelu(&mut v);
            assert!(
                (v[0] - want).abs() < 1e-6,
                "gelu({x}) = {} not {want}",
                v[0]
            );
        }
        let mut big = [30.0f32, -30.0];
        gelu(&mut big);
        assert_eq!(big, [30.0, -0.0]);
    }

    #[test]
    fn layer_norm_normalises_rows() {
        let norm = Norm {
            gamma: vec![1.0, 2.0, 1.0, 1.0],
            beta: vec![0.0, 0.0, 0.5, 0.0],
        };
        let mut x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0];
        layer_norm(&mut x, &norm, 1e-12);
        // Row 1: mean 2.5, variance 1.25.
        let s = 1.25f32.sqrt();
        let want = [-1.5 / s, 2.0 * -0.5 / s, 0.5 / s + 0.5, 1.5 / s];
        for (g, w) in x[..4].iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{x:?}");
        }
        // A constant row becomes beta.
        assert_eq!(&x[4..], &[0.0, 0.0, 0.5, 0.0]);
    }
}
