//! Memory bandwidth of this machine, measured the way STREAM measures it, for `scripts/bench.py`'s
//! bandwidth ceiling.
//!
//! `cargo run --release -p ryzanstein-kernels --example membw -- [--threads 1,2] [--mib 256]
//! [--repeats 10]` prints one JSON line per thread count:
//! `{"threads", "triad_gbs", "read_gbs", "array_mib"}`.
//!
//! - **triad**: `a[i] = b[i] + s * c[i]` over three f64 arrays of `--mib` MiB each (default 256,
//!   eight times a 32 MiB L3), split into one contiguous slice per thread. Bytes counted as
//!   STREAM counts them, 24 per element (two reads, one write). The stores are ordinary stores,
//!   as a compiler emits them for the loop; the write-allocate read they cause is not counted
//!   (STREAM's convention), so the figure is the bandwidth a program sees, not the bus traffic.
//! - **read**: the sum of one array (8 bytes per element, reads only), the access pattern of a
//!   decode step's weight stream, for reference.
//!
//! Each figure is the best of `--repeats` timed passes after one untimed pass that faults the
//! pages in (STREAM reports the best too). Threads are started once and meet at a barrier
//! before each pass; a pass's time runs from the first thread's start to the last thread's
//! end, each read by the thread itself.

use std::sync::{Barrier, Mutex};
use std::time::Instant;

fn triad(a: &mut [f64], b: &[f64], c: &[f64], s: f64) {
    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
        *a = b + s * c;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn triad_avx2(a: &mut [f64], b: &[f64], c: &[f64], s: f64) {
    triad(a, b, c, s)
}

fn sum(b: &[f64]) -> f64 {
    // Eight independent partial sums, so the adds keep up with the loads.
    let mut acc = [0.0f64; 8];
    for chunk in b.chunks_exact(8) {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum::<f64>() + b.chunks_exact(8).remainder().iter().sum::<f64>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(b: &[f64]) -> f64 {
    sum(b)
}

fn run_triad(a: &mut [f64], b: &[f64], c: &[f64], s: f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { triad_avx2(a, b, c, s) };
    }
    triad(a, b, c, s)
}

fn run_sum(b: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { sum_avx2(b) };
    }
    sum(b)
}

/// Best (triad, read) bandwidth in GB/s (10^9 bytes) with `threads` threads.
fn measure(threads: usize, elems: usize, repeats: usize) -> (f64, f64) {
    let per = elems / threads;
    let start = Barrier::new(threads);
    // Each pass's time runs from the earliest start to the latest end among the threads, as
    // the threads see them (a coordinating thread might not be scheduled at the right moment
    // when the threads fill every core).
    let spans: Mutex<Vec<(usize, Instant, Instant)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (start, spans) = (&start, &spans);
            scope.spawn(move || {
                // Each thread allocates and first-touches its own slices, with distinct values
                // on every page (identical pages could be merged by a host).
                let mut a = vec![0.0f64; per];
                let b: Vec<f64> = (0..per).map(|i| i as f64).collect();
                let c: Vec<f64> = (0..per).map(|i| (i ^ 0x5555) as f64).collect();
                let mut sink = 0.0;
                for pass in 0..=repeats {
                    start.wait();
                    let t0 = Instant::now();
                    run_triad(&mut a, &b, &c, 3.0);
                    let t1 = Instant::now();
                    start.wait();
                    let t2 = Instant::now();
                    sink += run_sum(&b);
                    let t3 = Instant::now();
                    let mut s = spans.lock().unwrap();
                    s.push((2 * pass, t0, t1));
                    s.push((2 * pass + 1, t2, t3));
                }
                std::hint::black_box(sink);
            });
        }
    });
    let spans = spans.into_inner().unwrap();
    let mut best = (f64::MAX, f64::MAX);
    for pass in 1..=repeats {
        for (which, best) in [(2 * pass, &mut best.0), (2 * pass + 1, &mut best.1)] {
            let mine = spans.iter().filter(|s| s.0 == which);
            let first = mine.clone().map(|s| s.1).min().unwrap();
            let last = mine.map(|s| s.2).max().unwrap();
            *best = best.min((last - first).as_secs_f64());
        }
    }
    let n = (per * threads) as f64;
    (24.0 * n / best.0 / 1e9, 8.0 * n / best.1 / 1e9)
}

fn main() {
    let mut threads = vec![1usize, 2];
    let mut mib = 256usize;
    let mut repeats = 10usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).map(String::as_str).unwrap_or("");
        match args[i].as_str() {
            "--threads" => {
                threads = value
                    .split(',')
                    .map(|t| {
                        t.trim()
                            .parse()
                            .expect("--threads: comma-separated integers")
                    })
                    .collect()
            }
            "--mib" => mib = value.parse().expect("--mib: an integer"),
            "--repeats" => repeats = value.parse().expect("--repeats: an integer"),
            other => {
                eprintln!(
                    "membw: unknown argument {other:?} (expected --threads, --mib, --repeats)"
                );
                std::process::exit(2);
            }
        }
        i += 2;
    }
    let elems = mib * (1 << 20) / 8;
    for t in threads {
        let (triad_gbs, read_gbs) = measure(t.max(1), elems, repeats.max(1));
        println!(
            "{{\"threads\": {t}, \"triad_gbs\": {triad_gbs:.2}, \"read_gbs\": {read_gbs:.2}, \"array_mib\": {mib}}}"
        );
    }
}
