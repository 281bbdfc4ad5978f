//! What changes in Rust: threads run in parallel. A CPU-bound sum, serially and then split
//! over the cores, each part in a `Thread` whose `join` hands back what it returned (Python's
//! `join` returns `None`, and its threads take turns under the GIL).

use std::io;
use std::time::Instant;

use demo_thread::Thread;

use crate::demo::say;

/// The CPU-bound job: the sum of `i * i % 1_000_003` for `i` below `N`.
const N: u64 = 20_000_000;

fn sum(from: u64, to: u64) -> u64 {
    (from..to).map(|i| i * i % 1_000_003).sum()
}

pub fn run() -> io::Result<()> {
    let start = Instant::now();
    let total = sum(0, N);
    let serial = start.elapsed().as_secs_f64() * 1e3;
    say!("sum of i*i % 1000003 for i below {N}, serially: {total} in {serial:.0} ms");

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let start = Instant::now();
    let mut parts: Vec<_> = (0..cores)
        .map(|k| Thread::new(move || sum(N * k / cores, N * (k + 1) / cores)))
        .collect();
    for t in &mut parts {
        t.start()?;
    }
    // New: join hands back what the thread returned; Python's join returns None.
    let total: u64 = parts.iter_mut().map(|t| t.join().unwrap()).sum();
    let parallel = start.elapsed().as_secs_f64() * 1e3;
    say!("split over {cores} threads, join returning each part: {total} in {parallel:.0} ms");
    let speedup = serial / parallel;
    say!("{speedup:.1}x as fast: Rust threads run in parallel; Python's take turns (the GIL)");
    Ok(())
}
