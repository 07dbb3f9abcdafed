//! Decode-step speed of the two ternary matmuls: `ternary::matmul` (`I2_S` codes, `maddubs` /
//! `vpdpbusd`) against `ternary::lut::matmul` (table lookups), each with the best kernels for
//! this CPU, one token, on one and two threads.
//!
//! `cargo run --release -p ryzanstein-kernels --example ternary_speed -- [--ms 400]
//! [--shape 2048x2048] [--threads 1]` (by default every shape, on two threads then one)
//!
//! For each shape (BitNet-2B-like projections, and 1536x576 padded to 1536x640) it prints the
//! median microseconds per call (the two matmuls measured in alternating rounds) and the weight bytes per second (`rows * cols / 4` bytes, the
//! same for both layouts), twice: `hot`, the same matrix every call (it stays in L2/L3), and
//! `cold`, a rotation over copies of the matrix that together exceed the L3 (64 MiB of each
//! layout), as a decode step's stream of layers sees it. `tables` is the LUT call's share
//! spent building the token's tables (measured alone). Timings only: nothing is asserted.

use ryzanstein_kernels::matmul::{quantize_acts, QuantizedActs};
use ryzanstein_kernels::ternary::lut::{self, LutMatrix};
use ryzanstein_kernels::ternary::{self, codes, TernaryRef};
use ryzanstein_kernels::{DType, Pool};
use std::time::{Duration, Instant};

const SHAPES: [(usize, usize); 4] = [(2048, 2048), (5632, 2048), (2048, 5632), (1536, 640)];
const COLD_BYTES: usize = 64 << 20;

/// Rounds in which the two matmuls take turns (this machine is shared: a slow spell then
/// falls on both).
const ROUNDS: usize = 8;

/// Per-call times of `f` for `budget` (at least 5 calls), after 3 untimed ones.
fn times(budget: Duration, f: &mut dyn FnMut(), out: &mut Vec<Duration>) {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut n = 0;
    while n < 5 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        out.push(t.elapsed());
        n += 1;
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median call times of `a` and `b`, measured in alternating rounds over `budget` each.
fn race(budget: Duration, a: &mut dyn FnMut(), b: &mut dyn FnMut()) -> (Duration, Duration) {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        times(budget / ROUNDS as u32, a, &mut ta);
        times(budget / ROUNDS as u32, b, &mut tb);
    }
    (median(ta), median(tb))
}

struct Copies {
    codes: Vec<Vec<u8>>,
    lut: Vec<LutMatrix>,
    scales: Vec<f32>,
}

fn copies(rows: usize, cols: usize, n: usize, seed: u64) -> Copies {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let scales: Vec<f32> = (0..rows)
        .map(|_| 0.01 + (next() % 100) as f32 / 1e4)
        .collect();
    let mut all_codes = Vec::new();
    let mut all_lut = Vec::new();
    for _ in 0..n {
        let values: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
        let mut c = vec![0u8; rows * cols / 4];
        codes::encode(&values, &mut c);
        let m = TernaryRef::new(rows, cols, &c, &scales).expect("shape");
        all_lut.push(LutMatrix::from_ternary(m).expect("pack"));
        all_codes.push(c);
    }
    Copies {
        codes: all_codes,
        lut: all_lut,
        scales,
    }
}

fn acts(cols: usize) -> QuantizedActs {
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 7919) % 2001) as f32 / 100.0 - 10.0)
        .collect();
    quantize_acts(DType::I8, &x, cols).expect("activations")
}

fn main() {
    let mut budget = Duration::from_millis(400);
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--ms") {
        let ms = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .expect("--ms N");
        budget = Duration::from_millis(ms);
    }
    let arg = |name: &str| {
        let i = args.iter().position(|a| a == name)?;
        Some(
            args.get(i + 1)
                .unwrap_or_else(|| panic!("{name} needs a value"))
                .clone(),
        )
    };
    let only_shape = arg("--shape");
    let threads_list: Vec<usize> = match arg("--threads") {
        Some(t) => vec![t.parse().expect("--threads N")],
        None => vec![2, 1],
    };
    let (kt, kl) = (ternary::kernels(), lut::kernels());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "i2s kernels {:?}, lut kernels {:?}, 1 token, the median call of {} ms per kernel in {ROUNDS} alternating rounds; load average {}",
        kt.isa,
        kl.isa,
        budget.as_millis(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:>10} {:>3} {:>5} | {:>9} {:>7} | {:>9} {:>7} {:>7} | {:>6}",
        "shape", "thr", "cache", "i2s µs", "GB/s", "lut µs", "GB/s", "tables", "lut/i2s"
    );
    for &(rows, cols) in &SHAPES {
        if only_shape
            .as_ref()
            .is_some_and(|s| *s != format!("{rows}x{cols}"))
        {
            continue;
        }
        let bytes = rows * cols / 4;
        let cold_n = COLD_BYTES.div_ceil(bytes);
        let m = copies(rows, cols, cold_n, (rows * 31 + cols) as u64);
        let a = acts(cols);
        let (mut out_i2s, mut out_lut) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        let mut tables = vec![0u8; lut::table_len(cols)];
        let mut build = Vec::new();
        times(
            budget / 4,
            &mut || (kl.build_tables)(a.i8_row(0), &mut tables),
            &mut build,
        );
        let build = median(build);
        for &threads in &threads_list {
            let pool = Pool::new(threads).expect("threads");
            for (cache, n) in [("hot", 1), ("cold", cold_n)] {
                let (mut i, mut j) = (0, 0);
                let (i2s, tl) = race(
                    budget,
                    &mut || {
                        let w = TernaryRef::new(rows, cols, &m.codes[i % n], &m.scales).unwrap();
                        ternary::matmul(kt, &pool, w, &a, &mut out_i2s).unwrap();
                        i += 1;
                    },
                    &mut || {
                        lut::matmul(kl, &pool, m.lut[j % n].as_ref(), &a, &mut out_lut).unwrap();
                        j += 1;
                    },
                );
                let us = |d: Duration| d.as_secs_f64() * 1e6;
                let gbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
                println!(
                    "{:>10} {:>3} {:>5} | {:>9.1} {:>7.1} | {:>9.1} {:>7.1} {:>6.0}% | {:>6.2}",
                    format!("{rows}x{cols}"),
                    threads,
                    cache,
                    us(i2s),
                    gbs(i2s),
                    us(tl),
                    gbs(tl),
                    100.0 * build.as_secs_f64() / tl.as_secs_f64(),
                    tl.as_secs_f64() / i2s.as_secs_f64()
                );
            }
        }
    }
}
