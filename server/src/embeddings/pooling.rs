//! Token states to one vector per input (sentence-transformers' `Pooling` module), and the
//! `Normalize` module's scaling to unit length.

use super::config::Pooling;

/// Pool the `len x h` states of one input (every token is a real token: inputs are not
/// padded) into `pooling.modes() * h` values, modes in sentence-transformers' order.
pub fn pool(states: &[f32], h: usize, pooling: Pooling) -> Vec<f32> {
    let len = states.len() / h;
    let mut out = Vec::with_capacity(pooling.modes() * h);
    if pooling.cls {
        out.extend_from_slice(&states[..h]);
    }
    if pooling.max {
        let mut m = vec![f32::NEG_INFINITY; h];
        for row in states.chunks_exact(h) {
            for (a, v) in m.iter_mut().zip(row) {
                *a = a.max(*v);
            }
        }
        out.extend(m);
    }
    if pooling.mean || pooling.mean_sqrt_len {
        let mut sum = vec![0.0f64; h];
        for row in states.chunks_exact(h) {
            for (a, v) in sum.iter_mut().zip(row) {
                *a += *v as f64;
            }
        }
        let n = len.max(1) as f64;
        if pooling.mean {
            out.extend(sum.iter().map(|s| (s / n) as f32));
        }
        if pooling.mean_sqrt_len {
            out.extend(sum.iter().map(|s| (s / n.sqrt()) as f32));
        }
    }
    out
}

/// Scale `v` to unit L2 norm (a zero vector stays zero), as `torch.nn.functional.normalize`.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let inv = 1.0 / norm.max(1e-12);
    for x in v {
        *x = (*x as f64 * inv) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Pooling = Pooling {
        cls: true,
        max: true,
        mean: true,
        mean_sqrt_len: true,
    };

    #[test]
    fn modes_in_order() {
        // Three tokens of two values.
        let states = [1.0, -2.0, 3.0, 0.0, 5.0, 2.0];
        let got = pool(&states, 2, ALL);
        let r3 = 3f32.sqrt();
        assert_eq!(got.len(), 8);
        assert_eq!(&got[..6], &[1.0, -2.0, 5.0, 2.0, 3.0, 0.0]);
        assert!((got[6] - 9.0 / r3).abs() < 1e-6 && got[7].abs() < 1e-6);
        let mean_only = Pooling {
            cls: false,
            max: false,
            mean: true,
            mean_sqrt_len: false,
        };
        assert_eq!(pool(&states, 2, mean_only), vec![3.0, 0.0]);
    }

    #[test]
    fn normalize() {
        let mut v = [3.0f32, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = [0.0f32; 3];
        l2_normalize(&mut z);
        assert_eq!(z, [0.0; 3]);
    }
}
