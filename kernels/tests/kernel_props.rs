//! Every instruction set's kernels against the scalar reference (random sizes, ragged tails),
//! and error budgets of the quantised formats against f32. Runs every ISA this CPU has, so on
//! an AVX-512 machine the AVX-512 path is held to the same properties. All instruction sets
//! follow one operation order (see `scalar::dot`), so their results must be bit-identical.

use half::f16;
use proptest::prelude::*;
use ryzanstein_kernels::dispatch::{kernels_for, Isa};
use ryzanstein_kernels::formats::*;
use ryzanstein_kernels::matmul::{matmul_quantized_with, quantize_acts};
use ryzanstein_kernels::packed::{matmul_packed_with, PackedRef};
use ryzanstein_kernels::scalar::k_quants::*;
use ryzanstein_kernels::scalar::quantize::*;
use ryzanstein_kernels::seg_rows::SegRows;
use ryzanstein_kernels::{DType, MatRef, PackedMat, Pool};

fn vec_f32(n: usize, seed: u64) -> Vec<f32> {
    // xorshift: reproducible values in [-2, 2) with some outliers.
    let mut s = seed | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = (s >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0;
            if i % 97 == 13 {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

fn quantize_weights(dtype: DType, x: &[f32]) -> AlignedBytes {
    let mut buf = AlignedBytes::zeroed(dtype.row_bytes(x.len()).unwrap());
    let b = buf.as_bytes_mut();
    match dtype {
        DType::Q4_0 => quantize_row_q4_0(x, bytemuck::cast_slice_mut(b)),
        DType::Q4_1 => quantize_row_q4_1(x, bytemuck::cast_slice_mut(b)),
        DType::Q5_0 => quantize_row_q5_0(x, bytemuck::cast_slice_mut(b)),
        DType::Q8_0 => quantize_row_q8_0_ref(x, bytemuck::cast_slice_mut(b)),
        DType::Q4_K => quantize_row_q4_k(x, bytemuck::cast_slice_mut(b)),
        DType::Q6_K => quantize_row_q6_k(x, bytemuck::cast_slice_mut(b)),
        DType::F16 => quantize_row_f16(x, bytemuck::cast_slice_mut(b)),
        DType::BF16 => quantize_row_bf16(x, bytemuck::cast_slice_mut(b)),
        DType::F32 => b.copy_from_slice(bytemuck::cast_slice(x)),
        DType::Q8_1 | DType::Q8_K | DType::I8 => unreachable!("activation formats"),
        DType::I2S => unreachable!("ternary weights have their own tests (ternary_props)"),
    }
    buf
}

const WEIGHT_TYPES: [DType; 9] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
    DType::Q5_0,
    DType::Q4_K,
    DType::Q6_K,
];

/// A pool of three threads shared by the tests (more threads than this machine may have, so
/// chunks land on threads in every order).
static POOL3: std::sync::LazyLock<Pool> = std::sync::LazyLock::new(|| Pool::new(3).unwrap());

fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: [{i}] {g} vs scalar {w}");
    }
}

/// `rows x (blocks * block size)` weights of `dtype` times `n` activation rows: every ISA (one
/// thread and three) gives the scalar bits, plain and packed.
fn check_matmul_matches_scalar(dtype: DType, rows: usize, blocks: usize, n: usize, seed: u64) {
    let k = blocks * dtype.block_size().max(32);
    let w = vec_f32(rows * k, seed);
    let x = vec_f32(n * k, seed.wrapping_mul(31) + 7);
    let wq = quantize_weights(dtype, &w);
    let wm = MatRef::new(dtype, rows, k, wq.as_bytes()).unwrap();
    let acts = quantize_acts(dtype.vec_dot_type(), &x, k).unwrap();
    let scalar = kernels_for(Isa::Scalar).unwrap();
    let serial = Pool::serial();
    let mut want = vec![0.0; n * rows];
    matmul_quantized_with(scalar, &serial, wm, &acts, &mut want).unwrap();
    let packed = PackedMat::pack(wm);
    assert_eq!(
        packed.is_some(),
        PackedRef::supports(dtype, rows, k),
        "{dtype:?} {rows}x{k}"
    );
    for isa in Isa::available() {
        let kt = kernels_for(isa).unwrap();
        for pool in [&serial, &*POOL3] {
            let mut got = vec![0.0; n * rows];
            matmul_quantized_with(kt, pool, wm, &acts, &mut got).unwrap();
            assert_bits_eq(&got, &want, &format!("{dtype:?} {isa:?} k={k}"));
            if let Some(p) = &packed {
                let mut got = vec![0.0; n * rows];
                matmul_packed_with(kt, pool, p.as_ref(), &acts, &mut got).unwrap();
                assert_bits_eq(&got, &want, &format!("packed {dtype:?} {isa:?} k={k}"));
            }
        }
    }
    if let Some(p) = &packed {
        for r in [0, rows / 2, rows - 1] {
            let (mut a, mut b) = (vec![0.0; k], vec![0.0; k]);
            wm.dequantize_row(r, &mut a).unwrap();
            p.as_ref().dequantize_row(r, &mut b).unwrap();
            assert_bits_eq(&b, &a, &format!("packed {dtype:?} row {r}"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn simd_matches_scalar(rows in 1usize..40, blocks in 1usize..13, n in 1usize..10, seed in any::<u64>(), t in 0usize..9) {
        check_matmul_matches_scalar(WEIGHT_TYPES[t], rows, blocks, n, seed);
    }

    /// K-quants (and Q5_0, their 32-value fallback) on several super-blocks, with activation
    /// row counts that exercise Q4_K's four-row order and its one-row remainder.
    #[test]
    fn k_quants_match_scalar(rows in 1usize..24, blocks in 1usize..7, n in 1usize..11, seed in any::<u64>(), t in 0usize..3) {
        let dtype = [DType::Q4_K, DType::Q6_K, DType::Q5_0][t];
        let blocks = if dtype == DType::Q5_0 { blocks * 8 } else { blocks };
        check_matmul_matches_scalar(dtype, rows, blocks, n, seed);
    }

    /// Q8_K activation quantisation: the largest magnitude maps to -127 (or 127 for a negative
    /// one), every value is within half a step, and `bsums` are the sums of the quants.
    #[test]
    fn q8_k_quantisation_rules(blocks in 1usize..5, seed in any::<u64>(), scale in prop_oneof![Just(1e-3f32), Just(1.0f32), Just(1e3f32)]) {
        let x: Vec<f32> = vec_f32(blocks * 256, seed).iter().map(|v| v * scale).collect();
        let mut q = vec![BlockQ8_K { d: 0.0, qs: [0; 256], bsums: [0; 16] }; blocks];
        quantize_row_q8_k(&x, &mut q);
        for (b, xb) in q.iter().zip(x.chunks_exact(256)) {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            prop_assert!((b.d.abs() - amax / 127.0).abs() <= amax / 127.0 * 1e-6);
            prop_assert!(b.qs.iter().any(|&v| v == -127 || v == 127));
            for (v, &qv) in xb.iter().zip(&b.qs) {
                prop_assert!((qv as f32 * b.d - v).abs() <= b.d.abs() * 0.5001 + amax * 1e-6, "{} vs {}", qv as f32 * b.d, v);
            }
            for k in 0..16 {
                prop_assert_eq!(b.bsums[k] as i32, b.qs[16 * k..16 * k + 16].iter().map(|&v| v as i32).sum::<i32>());
            }
        }
    }

    /// Activation quantisation: every ISA writes the scalar bytes (ties included: with
    /// amax 127 the values below are exact halves).
    #[test]
    fn quantize_matches_scalar(blocks in 1usize..20, seed in any::<u64>(), ties in any::<bool>()) {
        let mut x = vec_f32(blocks * 32, seed);
        if ties {
            for (i, v) in x.iter_mut().enumerate() {
                *v = if i % 32 == 0 { 127.0 } else { ((i * 7 % 254) as f32 - 127.0) + 0.5 };
            }
        }
        let mut want0 = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }; blocks];
        let mut want1 = vec![BlockQ8_1 { d: f16::ZERO, s: f16::ZERO, qs: [0; 32] }; blocks];
        quantize_row_q8_0(&x, &mut want0);
        quantize_row_q8_1(&x, &mut want1);
        for isa in Isa::available() {
            let kt = kernels_for(isa).unwrap();
            let mut got0 = want0.clone();
            let mut got1 = want1.clone();
            got0.iter_mut().for_each(|b| b.qs = [9; 32]);
            got1.iter_mut().for_each(|b| b.qs = [9; 32]);
            (kt.quantize_q8_0)(&x, &mut got0);
            (kt.quantize_q8_1)(&x, &mut got1);
            prop_assert_eq!(bytemuck::cast_slice::<_, u8>(&got0), bytemuck::cast_slice::<_, u8>(&want0), "{:?} q8_0", isa);
            prop_assert_eq!(bytemuck::cast_slice::<_, u8>(&got1), bytemuck::cast_slice::<_, u8>(&want1), "{:?} q8_1", isa);
        }
    }

    /// Packed eight-row groups (row counts that are multiples of eight) against the one-row
    /// scalar kernels, with more activation rows than one token tile.
    #[test]
    fn packed_matches_scalar(groups in 1usize..6, blocks in 1usize..20, n in prop_oneof![1usize..6, 60usize..70], seed in any::<u64>(), q8 in any::<bool>()) {
        let dtype = if q8 { DType::Q8_0 } else { DType::Q4_1 };
        check_matmul_matches_scalar(dtype, groups * 8, blocks, n, seed);
    }

    #[test]
    fn f32_tail_lengths(len in 1usize..100, seed in any::<u64>()) {
        let x = vec_f32(len, seed);
        let y = vec_f32(len, seed ^ 0xabc);
        let want = (kernels_for(Isa::Scalar).unwrap().dot_f32)(&x, &y);
        for isa in Isa::available() {
            let got = (kernels_for(isa).unwrap().dot_f32)(&x, &y);
            prop_assert_eq!(got.to_bits(), want.to_bits(), "{:?} {} vs {}", isa, got, want);
            let xh: Vec<f16> = x.iter().map(|v| f16::from_f32(*v)).collect();
            let yh: Vec<f16> = y.iter().map(|v| f16::from_f32(*v)).collect();
            let wh = (kernels_for(Isa::Scalar).unwrap().dot_f16)(&xh, &yh);
            let gh = (kernels_for(isa).unwrap().dot_f16)(&xh, &yh);
            prop_assert_eq!(gh.to_bits(), wh.to_bits(), "{:?} f16 {} vs {}", isa, gh, wh);
            if len % 8 == 0 {
                let wg = (kernels_for(Isa::Scalar).unwrap().dot_f16_gemm)(&xh, &yh);
                let gg = (kernels_for(isa).unwrap().dot_f16_gemm)(&xh, &yh);
                prop_assert_eq!(gg.to_bits(), wg.to_bits(), "{:?} f16 gemm order {} vs {}", isa, gg, wg);
                // Several rows at once (attention), in both orders.
                let stride = len + 5;
                let rows: Vec<f16> = vec_f32(stride * 7, seed ^ 0x1234).iter().map(|v| f16::from_f32(*v)).collect();
                let xw: Vec<f32> = yh.iter().map(|v| v.to_f32()).collect();
                let scalar = kernels_for(Isa::Scalar).unwrap();
                for (gemm, valid) in [(false, len), (true, len), (true, len / 2 + 3), (true, 1), (true, 0)] {
                    let mut want = vec![0.0f32; 7];
                    let mut got = vec![0.0f32; 7];
                    let whole: &[f16] = &rows;
                    let contiguous = SegRows::contiguous(&whole, stride, 0);
                    (scalar.dot_f16_rows)(contiguous, &xw, gemm, valid, &mut want);
                    (kernels_for(isa).unwrap().dot_f16_rows)(contiguous, &xw, gemm, valid, &mut got);
                    prop_assert_eq!(bytemuck::cast_slice::<_, u32>(&got), bytemuck::cast_slice::<_, u32>(&want), "{:?} rows gemm={} valid={}", isa, gemm, valid);
                    // The same rows in the blocks of a paged cache: segments of 32 or 64
                    // positions (7 rows of `seg` values each, at an offset), the same bits.
                    for seg in [32usize, 64] {
                        let blocks: Vec<Vec<f16>> = (0..len.div_ceil(seg))
                            .map(|b| {
                                let mut block = vec![f16::from_f32(9.0); 3 + 7 * seg];
                                for j in 0..7 {
                                    for i in 0..seg.min(len - b * seg) {
                                        block[3 + j * seg + i] = rows[j * stride + b * seg + i];
                                    }
                                }
                                block
                            })
                            .collect();
                        let segs: Vec<&[f16]> = blocks.iter().map(|b| b.as_slice()).collect();
                        let paged = SegRows { segs: &segs, seg_len: seg, stride: seg, offset: 3 };
                        let mut got_paged = vec![0.0f32; 7];
                        (kernels_for(isa).unwrap().dot_f16_rows)(paged, &xw, gemm, valid, &mut got_paged);
                        prop_assert_eq!(bytemuck::cast_slice::<_, u32>(&got_paged), bytemuck::cast_slice::<_, u32>(&want), "{:?} paged rows seg={} gemm={} valid={}", isa, seg, gemm, valid);
                    }
                    // The same as the one-row products (of the zero-padded prefix, for gemm).
                    for (j, w) in want.iter().enumerate() {
                        let mut row = rows[j * stride..j * stride + len].to_vec();
                        let one = if gemm {
                            row[valid.min(len)..].fill(f16::ZERO);
                            (scalar.dot_f16_gemm)(&row, &yh)
                        } else {
                            (scalar.dot_f16)(&row, &yh)
                        };
                        prop_assert_eq!(one.to_bits(), w.to_bits(), "row {} gemm={} valid={}", j, gemm, valid);
                    }
                }
            }
            // f16 rounding, with values past f16's range and below its normal range.
            let mut wide = x.clone();
            for (i, v) in wide.iter_mut().enumerate() {
                match i % 5 {
                    1 => *v *= 1e5,
                    2 => *v *= 1e-6,
                    _ => {}
                }
            }
            let mut want_r = wide.clone();
            (kernels_for(Isa::Scalar).unwrap().round_f16)(&mut want_r);
            let mut got_r = wide.clone();
            (kernels_for(isa).unwrap().round_f16)(&mut got_r);
            prop_assert_eq!(bytemuck::cast_slice::<_, u32>(&got_r), bytemuck::cast_slice::<_, u32>(&want_r), "{:?} round_f16", isa);
            let mut want_h = vec![f16::ZERO; len];
            (kernels_for(Isa::Scalar).unwrap().f32_to_f16)(&wide, &mut want_h);
            let mut got_h = vec![f16::ZERO; len];
            (kernels_for(isa).unwrap().f32_to_f16)(&wide, &mut got_h);
            let bits = |h: &[f16]| h.iter().map(|v| v.to_bits()).collect::<Vec<_>>();

            prop_assert_eq!(bits(&got_h), bits(&want_h), "{:?} f32_to_f16", isa);
            let want_swiglu = { let mut g = x.clone(); (kernels_for(Isa::Scalar).unwrap().swiglu)(&mut g, &y); g };
            let got_swiglu = { let mut g = x.clone(); (kernels_for(isa).unwrap().swiglu)(&mut g, &y); g };
            prop_assert_eq!(&got_swiglu, &want_swiglu, "{:?} swiglu", isa);
            // Softmax with masked (-inf) entries, as attention feeds it.
            let mut masked = x.clone();
            for v in masked.iter_mut().skip(len / 2 + 1) {
                *v = f32::NEG_INFINITY;
            }
            let want_sm = { let mut r = masked.clone(); (kernels_for(Isa::Scalar).unwrap().softmax)(&mut r); r };
            let got_sm = { let mut r = masked.clone(); (kernels_for(isa).unwrap().softmax)(&mut r); r };
            prop_assert_eq!(&got_sm, &want_sm, "{:?} softmax", isa);
            prop_assert!((want_sm.iter().map(|v| *v as f64).sum::<f64>() - 1.0).abs() < 1e-5);
        }
    }

    /// Attention equals a plain f64 softmax attention within f16 rounding, in both summation
    /// orders, and every ISA gives the same bits.
    #[test]
    fn attention_matches_softmax(n in 1usize..80, dim_steps in 1usize..4, seed in any::<u64>(), batched in any::<bool>()) {
        use ryzanstein_kernels::attention::{attend, HeadRows, ValueCols, PAD};
        let dim = dim_steps * 32;
        let q = vec_f32(dim, seed);
        let kv: Vec<f16> = vec_f32(n * dim * 2, seed ^ 0x55).iter().map(|v| f16::from_f32(*v)).collect();
        let (k, v) = kv.split_at(n * dim);
        let k_all: &[f16] = k;
        let keys = HeadRows::contiguous(&k_all, dim, 0, dim);
        // Values transposed, with room past the padding. A batched query's columns hold later
        // tokens past `n` (here: noise); a single query's hold zeros up to the padding.
        let stride = n.div_ceil(PAD) * PAD + 8;
        let noise: Vec<f16> = vec_f32(dim * stride, seed ^ 0x77).iter().map(|v| f16::from_f32(*v)).collect();
        let mut vt = vec![f16::ZERO; dim * stride];
        for d in 0..dim {
            for j in 0..stride {
                vt[d * stride + j] = if j < n {
                    v[j * dim + d]
                } else if batched || j >= n.div_ceil(PAD) * PAD {
                    noise[d * stride + j]
                } else {
                    f16::ZERO
                };
            }
        }
        let vt_all: &[f16] = &vt;
        let cols = ValueCols::contiguous(&vt_all, stride, dim);
        // The same cache in blocks of 32 positions (a paged cache): keys position-major, values
        // transposed per block, each block at an offset inside a larger buffer (two KV heads,
        // this one second).
        let blocks = stride.div_ceil(PAD);
        let kb: Vec<Vec<f16>> = (0..blocks)
            .map(|b| {
                let mut block = vec![f16::from_f32(7.0); PAD * 2 * dim];
                for r in 0..PAD.min(n.saturating_sub(b * PAD)) {
                    block[r * 2 * dim + dim..][..dim].copy_from_slice(&k[(b * PAD + r) * dim..][..dim]);
                }
                block
            })
            .collect();
        let vb: Vec<Vec<f16>> = (0..blocks)
            .map(|b| {
                let mut block = vec![f16::from_f32(7.0); 2 * dim * PAD];
                for d in 0..dim {
                    for i in 0..PAD.min(stride - b * PAD) {
                        block[(dim + d) * PAD + i] = vt[d * stride + b * PAD + i];
                    }
                }
                block
            })
            .collect();
        let kseg: Vec<&[f16]> = kb.iter().map(|b| b.as_slice()).collect();
        let vseg: Vec<&[f16]> = vb.iter().map(|b| b.as_slice()).collect();
        let paged_keys = HeadRows { blocks: &kseg, block_rows: PAD, stride: 2 * dim, offset: dim, dim };
        let paged_cols = ValueCols { cols: SegRows { segs: &vseg, seg_len: PAD, stride: PAD, offset: dim * PAD }, dim };
        let scale = 1.0 / (dim as f32).sqrt();
        // Reference in f64 from the same f16-rounded inputs.
        let qr: Vec<f64> = q.iter().map(|x| f16::from_f32(*x).to_f64()).collect();
        let scores: Vec<f64> = (0..n)
            .map(|j| (0..dim).map(|d| qr[d] * k[j * dim + d].to_f64()).sum::<f64>() * scale as f64)
            .collect();
        let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
        let total: f64 = w.iter().sum();
        let want: Vec<f64> = (0..dim).map(|d| (0..n).map(|j| w[j] * v[j * dim + d].to_f64()).sum::<f64>() / total).collect();
        let mut first: Option<Vec<f32>> = None;
        for isa in Isa::available() {
            let mut out = vec![0.0f32; dim];
            attend(kernels_for(isa).unwrap(), &q, keys, cols, n, scale, batched, &mut out).unwrap();
            let mut paged = vec![0.0f32; dim];
            attend(kernels_for(isa).unwrap(), &q, paged_keys, paged_cols, n, scale, batched, &mut paged).unwrap();
            prop_assert_eq!(bytemuck::cast_slice::<_, u32>(&paged), bytemuck::cast_slice::<_, u32>(&out), "{:?}: the paged cache gives other bits", isa);
            for (o, w) in out.iter().zip(&want) {
                // Probabilities are rounded to f16: a few f16 ulps of the largest |v|.
                prop_assert!((*o as f64 - w).abs() <= 2e-2, "{:?}: {} vs {}", isa, o, w);
            }
            match &first {
                None => first = Some(out),
                Some(f) => prop_assert_eq!(f, &out, "{:?} differs from the scalar path", isa),
            }
        }
    }
}

/// The quantised product stays within each format's error budget of the exact f32 product.
#[test]
fn error_budget_against_f32() {
    let (rows, k) = (16, 512);
    let w = vec_f32(rows * k, 3);
    let x = vec_f32(k, 5);
    let exact: Vec<f64> = (0..rows)
        .map(|r| {
            w[r * k..(r + 1) * k]
                .iter()
                .zip(&x)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum()
        })
        .collect();
    let scale: f64 = (exact.iter().map(|v| v * v).sum::<f64>() / rows as f64).sqrt();
    for (dtype, budget) in [
        (DType::F32, 1e-6),
        (DType::F16, 2e-3),
        (DType::BF16, 2e-2),
        (DType::Q8_0, 2e-2),
        (DType::Q4_1, 0.15),
        (DType::Q4_0, 0.2),
        (DType::Q5_0, 0.1),
        (DType::Q4_K, 0.15),
        (DType::Q6_K, 0.04),
    ] {
        let wq = quantize_weights(dtype, &w);
        let wm = MatRef::new(dtype, rows, k, wq.as_bytes()).unwrap();
        let mut out = vec![0.0; rows];
        ryzanstein_kernels::matmul(wm, &x, &mut out).unwrap();
        let rms_err = (out
            .iter()
            .zip(&exact)
            .map(|(a, b)| (*a as f64 - b).powi(2))
            .sum::<f64>()
            / rows as f64)
            .sqrt();
        assert!(
            rms_err / scale < budget,
            "{dtype:?}: relative rms error {} over budget {budget}",
            rms_err / scale
        );
    }
}

#[test]
fn q8_activation_quantisation_matches_llama_cpp_rules() {
    // amax 127 -> d = 1, values round half to even.
    let mut x = vec![0.0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -3.5;
    x[3] = 1.5;
    let mut b = [BlockQ8_1 {
        d: f16::ZERO,
        s: f16::ZERO,
        qs: [0; 32],
    }];
    quantize_row_q8_1(&x, &mut b);
    assert_eq!(b[0].d.to_f32(), 1.0);
    assert_eq!(&b[0].qs[..4], &[127, 2, -4, 2]);
    assert_eq!(b[0].s.to_f32(), 127.0);
    let mut z = [BlockQ8_0 {
        d: f16::ONE,
        qs: [1; 32],
    }];
    quantize_row_q8_0(&[0.0; 32], &mut z);
    assert_eq!(z[0].d.to_f32(), 0.0);
    assert_eq!(z[0].qs, [0; 32]);
}

#[test]
fn shape_errors_are_reported() {
    let buf = AlignedBytes::zeroed(40);
    assert!(MatRef::new(DType::Q4_1, 2, 32, &buf.as_bytes()[..39]).is_err());
    assert!(MatRef::new(DType::Q4_1, 1, 33, buf.as_bytes()).is_err());
    let w = MatRef::new(DType::Q4_1, 2, 32, buf.as_bytes()).unwrap();
    let mut out = vec![0.0; 3];
    let err = ryzanstein_kernels::matmul(w, &[0.0; 32], &mut out).unwrap_err();
    assert!(err.to_string().contains("output of 3 values"), "{err}");
}

#[test]
fn dequantize_matches_blocks() {
    let x = vec_f32(256, 9);
    for dtype in WEIGHT_TYPES {
        let wq = quantize_weights(dtype, &x);
        let wm = MatRef::new(dtype, 1, 256, wq.as_bytes()).unwrap();
        let mut out = vec![0.0; 256];
        wm.dequantize_row(0, &mut out).unwrap();
        let max_err = out
            .iter()
            .zip(&x)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(max_err <= amax * 0.1, "{dtype:?}: {max_err}");
    }
}

/// The quantised dot products equal the product of the dequantised weights and activations,
/// summed exactly, to float rounding: the integer work (scales, mins, offsets, lanes) is the
/// format's arithmetic, not just correlated with it. Q4_K in both of its orders (four rows, and
/// the one-row remainder), Q6_K in both of its (below and from eight rows).
#[test]
fn quantized_dot_equals_dequantized_product() {
    let k = 1024;
    for (dtype, seed) in [
        (DType::Q4_K, 1),
        (DType::Q6_K, 2),
        (DType::Q5_0, 3),
        (DType::Q4_K, 4),
    ] {
        let w = vec_f32(k, seed);
        let wq = quantize_weights(dtype, &w);
        let wm = MatRef::new(dtype, 1, k, wq.as_bytes()).unwrap();
        let mut wd = vec![0.0f32; k];
        wm.dequantize_row(0, &mut wd).unwrap();
        for n in [4, 5, 8] {
            let x = vec_f32(n * k, seed + 100);
            let acts = quantize_acts(dtype.vec_dot_type(), &x, k).unwrap();
            for isa in Isa::available() {
                let kt = kernels_for(isa).unwrap();
                let mut got = vec![0.0f32; n];
                matmul_quantized_with(kt, &Pool::serial(), wm, &acts, &mut got).unwrap();
                for (t, g) in got.iter().enumerate() {
                    let am = MatRef::new(acts.dtype, 1, k, acts.row(t)).unwrap();
                    let mut ad = vec![0.0f32; k];
                    am.dequantize_row(0, &mut ad).unwrap();
                    let exact: f64 = wd.iter().zip(&ad).map(|(a, b)| *a as f64 * *b as f64).sum();
                    let mag: f64 = wd
                        .iter()
                        .zip(&ad)
                        .map(|(a, b)| (*a as f64 * *b as f64).abs())
                        .sum();
                    assert!(
                        (*g as f64 - exact).abs() <= mag * 1e-5,
                        "{dtype:?} {isa:?} n={n} row {t}: {g} vs {exact} (sum of |products| {mag})"
                    );
                }
            }
        }
    }
}
