//! The lookup-table ternary kernels of every instruction set this CPU has against the `I2_S`
//! kernels, bit for bit: panel sums against `ternary::scalar::dot` over the whole int8 range
//! (-128 included, which per-token quantisation never writes), extreme rows at the u8 / u16
//! accumulation limits, and the pooled matmul against `ternary::matmul` with the scalar
//! kernels for shapes whose rows are not whole panels; the packing's refusals.

use proptest::prelude::*;
use ryzanstein_kernels::dispatch::Isa;
use ryzanstein_kernels::matmul::quantize_acts;
use ryzanstein_kernels::ternary::lut::{self, LutMatrix, LutRef, PANEL_ROWS};
use ryzanstein_kernels::ternary::{self, codes, TernaryRef, BLOCK};
use ryzanstein_kernels::{DType, Pool};

/// A xorshift stream (fast enough for the few-thousand-column shapes).
fn stream(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

fn encoded(values: &[i8]) -> Vec<u8> {
    let mut c = vec![0u8; values.len() / 4];
    codes::encode(values, &mut c);
    c
}

/// Panel sums of every ISA for `rows x cols` weights `w` against each activation row of `q`,
/// checked against the scalar `I2_S` dot product row by row.
fn check_panel_sums(
    rows: usize,
    cols: usize,
    w: &[i8],
    q: &[Vec<i8>],
) -> Result<(), TestCaseError> {
    let c = encoded(w);
    let scales = vec![1.0; rows];
    let m = TernaryRef::new(rows, cols, &c, &scales).unwrap();
    let packed = LutMatrix::from_ternary(m).unwrap();
    let data = packed.as_ref().data;
    let panels = rows.div_ceil(PANEL_ROWS);
    let mut want_tables = vec![0u8; lut::table_len(cols)];
    for q in q {
        let sum: i32 = q.iter().map(|&x| x as i32).sum();
        let want: Vec<i32> = (0..rows)
            .map(|r| ternary::scalar::dot(m.row(r), q, sum))
            .collect();
        (lut::kernels_for(Isa::Scalar).unwrap().build_tables)(q, &mut want_tables);
        for isa in Isa::available() {
            let kl = lut::kernels_for(isa).unwrap();
            let mut tables = vec![0u8; lut::table_len(cols)];
            (kl.build_tables)(q, &mut tables);
            prop_assert!(tables == want_tables, "{:?} tables", isa);
            // All panels at once, and one at a time.
            let mut sums = vec![0i32; panels * PANEL_ROWS];
            (kl.panel_sums)(data, cols, &tables, &mut sums);
            prop_assert_eq!(&sums[..rows], &want[..], "{:?}", isa);
            prop_assert!(sums[rows..].iter().all(|&s| s == 0), "{:?} padding", isa);
            let tb = lut::panel_bytes(cols);
            for t in 0..panels {
                let mut one = vec![0i32; PANEL_ROWS];
                (kl.panel_sums)(&data[t * tb..(t + 1) * tb], cols, &tables, &mut one);
                prop_assert_eq!(
                    &one[..],
                    &sums[t * PANEL_ROWS..(t + 1) * PANEL_ROWS],
                    "{:?}",
                    isa
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_isa_computes_the_exact_panel_sums(
        rows in 1usize..100,
        blocks in 1usize..24,
        tokens in 1usize..4,
        seed in any::<u64>(),
    ) {
        let cols = blocks * BLOCK;
        let mut next = stream(seed);
        let w: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
        let q: Vec<Vec<i8>> = (0..tokens)
            .map(|_| (0..cols).map(|_| next() as i8).collect())
            .collect();
        check_panel_sums(rows, cols, &w, &q)?;
    }

    /// The largest entries: every weight +1 or every weight -1 (or alternating), every
    /// activation -128 or 127, over rows long enough for many u16 widenings; the u8 sums reach
    /// their limits in each eight-step run and the u16 sums reach 32768.
    #[test]
    fn extreme_rows_do_not_overflow(
        rows in 1usize..70,
        blocks in 1usize..48,
        weight in prop_oneof![Just(1i8), Just(-1i8), Just(0i8)],
        act in prop_oneof![Just(-128i8), Just(127i8)],
    ) {
        let cols = blocks * BLOCK;
        let w: Vec<i8> = (0..rows * cols)
            .map(|i| if weight == 0 { [1, -1][i % 2] } else { weight })
            .collect();
        check_panel_sums(rows, cols, &w, &[vec![act; cols]])?;
    }

    #[test]
    fn the_matmul_equals_the_i2s_matmul_bit_for_bit(
        rows in 1usize..100,
        blocks in 1usize..24,
        tokens in 1usize..12,
        seed in any::<u64>(),
    ) {
        let cols = blocks * BLOCK;
        let mut next = stream(seed);
        let w: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
        let scales: Vec<f32> = (0..rows).map(|_| (next() % 1000) as f32 / 500.0 + 0.01).collect();
        let x: Vec<f32> = (0..tokens * cols)
            .map(|_| (next() % 20001) as f32 / 1000.0 - 10.0)
            .collect();
        let c = encoded(&w);
        let m = TernaryRef::new(rows, cols, &c, &scales).unwrap();
        let acts = quantize_acts(DType::I8, &x, cols).unwrap();
        let serial = Pool::serial();
        let mut want = vec![0.0f32; tokens * rows];
        let scalar = ternary::kernels_for(Isa::Scalar).unwrap();
        ternary::matmul(scalar, &serial, m, &acts, &mut want).unwrap();
        let mut packed = vec![0u8; lut::packed_len(rows, cols)];
        lut::pack_into(m, &mut packed).unwrap();
        let lm = LutRef::new(rows, cols, &packed, &scales).unwrap();
        for isa in Isa::available() {
            let kl = lut::kernels_for(isa).unwrap();
            for threads in [1, 2] {
                let pool = Pool::new(threads).unwrap();
                let mut out = vec![f32::NAN; tokens * rows];
                lut::matmul(kl, &pool, lm, &acts, &mut out).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&out), bits(&want), "{:?}, {} threads", isa, threads);
            }
        }
    }
}

#[test]
fn the_packing_refuses_bad_shapes_and_codes() {
    let c = vec![0x55u8; 3 * 32];
    let scales = [1.0f32; 3];
    let m = TernaryRef::new(3, 128, &c, &scales).unwrap();
    assert_eq!(lut::packed_len(3, 128), 2048);
    let mut out = vec![0u8; 2048];
    lut::pack_into(m, &mut out).unwrap();
    // The buffer too short or too long.
    assert!(lut::pack_into(m, &mut vec![0u8; 2047]).is_err());
    assert!(lut::pack_into(m, &mut vec![0u8; 2049]).is_err());
    // Shapes that `TernaryRef::new` would have refused (its fields are public).
    let bad = |rows, cols, codes: &[u8], scales: &[f32]| {
        let r = TernaryRef {
            rows,
            cols,
            codes,
            scales,
        };
        lut::pack_into(r, &mut vec![0u8; lut::packed_len(rows, cols)]).is_err()
    };
    assert!(bad(3, 100, &c[..75], &scales));
    assert!(bad(3, 0, &[], &scales));
    assert!(bad(3, 128, &c[..95], &scales));
    assert!(bad(3, 128, &c, &scales[..2]));
    // A code 3 has no ternary value.
    let mut c3 = c.clone();
    c3[40] = 0xff;
    let m3 = TernaryRef::new(3, 128, &c3, &scales).unwrap();
    assert!(lut::pack_into(m3, &mut out).is_err());
    assert!(LutMatrix::from_ternary(m3).is_err());
}

#[test]
fn packed_refs_and_the_matmul_check_shapes() {
    assert!(LutRef::new(3, 128, &[0; 2048], &[1.0; 3]).is_ok());
    assert!(LutRef::new(3, 128, &[0; 2047], &[1.0; 3]).is_err());
    assert!(LutRef::new(3, 128, &[0; 2048], &[1.0; 2]).is_err());
    assert!(LutRef::new(3, 100, &[0; 1600], &[1.0; 3]).is_err());
    assert!(LutRef::new(0, 128, &[], &[]).is_ok());

    let c = vec![0x55u8; 64];
    let m = LutMatrix::from_ternary(TernaryRef::new(2, 128, &c, &[1.0; 2]).unwrap()).unwrap();
    let pool = Pool::serial();
    let kl = lut::kernels();
    let acts = quantize_acts(DType::I8, &[1.0; 256], 128).unwrap();
    assert!(lut::matmul(kl, &pool, m.as_ref(), &acts, &mut [0.0; 3]).is_err());
    let q8 = quantize_acts(DType::Q8_0, &[1.0; 256], 128).unwrap();
    assert!(lut::matmul(kl, &pool, m.as_ref(), &q8, &mut [0.0; 4]).is_err());
    let wide = quantize_acts(DType::I8, &[1.0; 512], 256).unwrap();
    assert!(lut::matmul(kl, &pool, m.as_ref(), &wide, &mut [0.0; 4]).is_err());
    // A hand-made reference whose bytes do not match its shape.
    let short = LutRef {
        rows: 2,
        cols: 128,
        data: &[0; 512],
        scales: &[1.0; 2],
    };
    assert!(lut::matmul(kl, &pool, short, &acts, &mut [0.0; 4]).is_err());
    // Zero weights give zeros.
    let mut out = [f32::NAN; 4];
    lut::matmul(kl, &pool, m.as_ref(), &acts, &mut out).unwrap();
    assert_eq!(out, [0.0; 4]);
}

/// On x86-64 every rung has its own table (AArch64 runs the scalar reference for now).
#[cfg(target_arch = "x86_64")]
#[test]
fn the_selected_kernels_are_this_cpus_best() {
    assert_eq!(lut::kernels().isa, ryzanstein_kernels::isa());
    for isa in Isa::available() {
        assert_eq!(lut::kernels_for(isa).unwrap().isa, isa);
    }
}
