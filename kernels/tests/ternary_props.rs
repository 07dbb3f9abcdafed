//! The ternary kernels of every instruction set this CPU has against the scalar reference
//! (bit for bit: the products are exact integers), over random codes, activations of the whole
//! int8 range and row lengths from one block to past the i16 accumulation limit; the matmul
//! against a direct evaluation; the per-token activation quantisation's properties.

use proptest::prelude::*;
use ryzanstein_kernels::dispatch::Isa;
use ryzanstein_kernels::matmul::quantize_acts;
use ryzanstein_kernels::ternary::{self, codes, kernels_for, TernaryRef, BLOCK};
use ryzanstein_kernels::DType;
use ryzanstein_kernels::Pool;

fn row(blocks: usize) -> impl Strategy<Value = (Vec<i8>, Vec<i8>)> {
    let n = blocks * BLOCK;
    (
        proptest::collection::vec(-1i8..=1, n),
        proptest::collection::vec(any::<i8>(), n),
    )
}

fn encoded(values: &[i8]) -> Vec<u8> {
    let mut c = vec![0u8; values.len() / 4];
    codes::encode(values, &mut c);
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_isa_computes_the_exact_ternary_dot((w, q) in (1usize..40).prop_flat_map(row)) {
        let c = encoded(&w);
        let sum: i32 = q.iter().map(|&x| x as i32).sum();
        let want: i32 = w.iter().zip(&q).map(|(&a, &b)| a as i32 * b as i32).sum();
        for isa in Isa::available() {
            let kt = kernels_for(isa).unwrap();
            prop_assert_eq!((kt.dot)(&c, &q, sum), want, "{:?}", isa);
        }
    }

    /// The four-row kernels against the one-row scalar reference, including the extreme rows
    /// (all +1 weights, all activations -128 or 127) beside random ones.
    #[test]
    fn every_isa_computes_four_rows_at_once(
        (rows, q) in (1usize..40).prop_flat_map(|b| (
            proptest::collection::vec(proptest::collection::vec(-1i8..=1, b * BLOCK), 4),
            proptest::collection::vec(any::<i8>(), b * BLOCK),
        )),
        extreme in any::<bool>(),
    ) {
        let mut rows = rows;
        let mut q = q;
        if extreme {
            rows[2].fill(1);
            q.fill(-128);
        }
        let c: Vec<Vec<u8>> = rows.iter().map(|w| encoded(w)).collect();
        let sum: i32 = q.iter().map(|&x| x as i32).sum();
        let want: Vec<i32> = c.iter().map(|c| ternary::scalar::dot(c, &q, sum)).collect();
        for isa in Isa::available() {
            let kt = kernels_for(isa).unwrap();
            let got = (kt.dot4)(std::array::from_fn(|k| &c[k][..]), &q, sum);
            prop_assert_eq!(&got[..], &want[..], "{:?}", isa);
        }
    }

    /// The rounding without the library call is `round_ties_even` (ties included).
    #[test]
    fn the_fast_rounding_is_round_ties_even(y in -5_000_000f32..5_000_000.0, half in -300i32..300) {
        let tie = half as f32 + 0.5;
        for v in [y, y / 1000.0, tie] {
            let want = v.clamp(-4_194_304.0, 4_194_304.0).round_ties_even();
            prop_assert_eq!(ternary::round_ties_even_small(v), want, "{}", v);
        }
    }

    /// The extreme case for the i16 accumulation: every activation -128 or 127, every weight
    /// +1 (the largest magnitudes a lane can collect).
    #[test]
    fn extreme_rows_do_not_overflow(blocks in 1usize..70, neg in any::<bool>()) {
        let n = blocks * BLOCK;
        let w = vec![1i8; n];
        let q = vec![if neg { -128i8 } else { 127 }; n];
        let c = encoded(&w);
        let sum: i32 = q.iter().map(|&x| x as i32).sum();
        for isa in Isa::available() {
            let kt = kernels_for(isa).unwrap();
            prop_assert_eq!((kt.dot)(&c, &q, sum), sum, "{:?}", isa);
        }
    }

    #[test]
    fn the_matmul_is_the_scaled_integer_product(
        rows in 1usize..40,
        blocks in 1usize..5,
        tokens in 1usize..5,
        seed in any::<u64>(),
    ) {
        let cols = blocks * BLOCK;
        let mut s = seed | 1;
        let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
        let w: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
        let scales: Vec<f32> = (0..rows).map(|_| (next() % 1000) as f32 / 500.0 + 0.01).collect();
        let x: Vec<f32> = (0..tokens * cols).map(|_| (next() % 20001) as f32 / 1000.0 - 10.0).collect();
        let c = encoded(&w);
        let m = TernaryRef::new(rows, cols, &c, &scales).unwrap();
        let acts = quantize_acts(DType::I8, &x, cols).unwrap();
        let scale = |t: usize| {
            let row = &x[t * cols..(t + 1) * cols];
            127.0 / row.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-5)
        };
        for isa in Isa::available() {
            let kt = kernels_for(isa).unwrap();
            for threads in [1, 2] {
                let pool = Pool::new(threads).unwrap();
                let mut out = vec![0.0f32; tokens * rows];
                ternary::matmul(kt, &pool, m, &acts, &mut out).unwrap();
                for t in 0..tokens {
                    for r in 0..rows {
                        let isum: i32 = (0..cols)
                            .map(|i| w[r * cols + i] as i32 * acts.i8_row(t)[i] as i32)
                            .sum();
                        let want = isum as f32 * scales[r] * (1.0 / scale(t));
                        prop_assert_eq!(out[t * rows + r].to_bits(), want.to_bits(), "{:?}", isa);
                    }
                }
            }
        }
    }

    #[test]
    fn per_token_quantisation_rounds_to_the_nearest_step(x in proptest::collection::vec(-100f32..100.0, 1..300)) {
        let mut q = vec![0i8; x.len()];
        let (scale, sum) = ternary::quantize_row(&x, &mut q);
        let max = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-5);
        prop_assert_eq!(scale, 127.0 / max);
        prop_assert_eq!(sum, q.iter().map(|&v| v as i32).sum::<i32>());
        for (&v, &qi) in x.iter().zip(&q) {
            prop_assert!((-127..=127).contains(&(qi as i32)));
            prop_assert!((v * scale - qi as f32).abs() <= 0.5 + 1e-3);
        }
    }
}

#[test]
fn shapes_are_checked() {
    assert!(TernaryRef::new(2, 100, &[0; 50], &[1.0; 2]).is_err());
    assert!(TernaryRef::new(2, 128, &[0; 63], &[1.0; 2]).is_err());
    assert!(TernaryRef::new(2, 128, &[0; 64], &[1.0; 1]).is_err());
    let c = [0x55u8; 64];
    let m = TernaryRef::new(2, 128, &c, &[1.0; 2]).unwrap();
    let acts = quantize_acts(DType::I8, &[1.0; 256], 128).unwrap();
    let pool = Pool::serial();
    let mut out = vec![0.0; 3];
    assert!(ternary::matmul(ternary::kernels(), &pool, m, &acts, &mut out).is_err());
    let q8 = quantize_acts(DType::Q8_0, &[1.0; 256], 128).unwrap();
    let mut out = vec![0.0; 4];
    assert!(ternary::matmul(ternary::kernels(), &pool, m, &q8, &mut out).is_err());
}
