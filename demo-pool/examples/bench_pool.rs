//! Measures the pool against Python's `multiprocessing.Pool` (see `python/bench.py`):
//! tiny tasks through `apply_async` + `get`, items through `map`, tiny items through
//! `imap_unordered` one at a time (chunksize 1, Python's default), and `Pool(4)` create +
//! close + join.
//!
//! Its rows in the table of `cargo xtask bench`, in this order:
//!
//! | id | row |
//! |---|---|
//! | `pool.apply_async` | pool apply_async+get, tiny tasks |
//! | `pool.map` | pool map, tiny items |
//! | `pool.imap_unordered` | pool imap_unordered, tiny items, chunksize 1 |
//! | `pool.create_join` | Pool(4) create+close+join |
//!
//! Run with: `cargo run --release -p demo-pool --example bench_pool` (`BENCH_QUICK=1` for a short run)

use std::time::Instant;

use demo_pool::Pool;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};

fn noop(x: u64) -> u64 {
    x
}

fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let repeats = if quick { 3 } else { 7 };
    let tasks = if quick { 5_000 } else { 20_000 };
    let items = if quick { 200_000 } else { 1_000_000 };

    // First, while this process is small: a later fork copies whatever the other
    // measurements left in memory. python/bench.py does the same.
    let ms = median(repeats * 3, || {
        let start = Instant::now();
        let mut pool = Pool::new(4).unwrap();
        pool.close();
        pool.join().unwrap();
        start.elapsed().as_secs_f64() * 1e3
    });
    report("pool.create_join", "ours", ms, "ms");
    // The floor under any pool of processes: fork 4 children that exit at once, reap them.
    let ms = median(repeats * 3, || {
        let start = Instant::now();
        let children: Vec<_> = (0..4)
            .map(|_| {
                // SAFETY: the child calls only `_exit`, which is async-signal-safe.
                match unsafe { fork() }.unwrap() {
                    ForkResult::Parent { child } => child,
                    // SAFETY: `_exit` ends the child at once; it is always sound to call.
                    ForkResult::Child => unsafe { libc::_exit(0) },
                }
            })
            .collect();
        children.into_iter().for_each(|c| {
            waitpid(c, None).unwrap();
        });
        start.elapsed().as_secs_f64() * 1e3
    });
    report("pool.create_join", "limit", ms, "ms");

    let pool = Pool::new(4).unwrap();
    let rate = median(repeats, || {
        let start = Instant::now();
        let results: Vec<_> = (0..tasks)
            .map(|i| pool.apply_async(noop, i).unwrap())
            .collect();
        results.iter().for_each(|r| assert!(r.get().is_ok()));
        tasks as f64 / start.elapsed().as_secs_f64()
    });
    report("pool.apply_async", "ours", rate, "tasks/s");
    let rate = median(repeats, || {
        let start = Instant::now();
        assert_eq!(pool.map(noop, 0..items).unwrap().len(), items as usize);
        items as f64 / start.elapsed().as_secs_f64()
    });
    report("pool.map", "ours", rate, "items/s");
    let rate = median(repeats, || {
        let start = Instant::now();
        let results = pool.imap_unordered(noop, 0..tasks, 1).unwrap();
        assert_eq!(results.filter(Result::is_ok).count(), tasks as usize);
        tasks as f64 / start.elapsed().as_secs_f64()
    });
    report("pool.imap_unordered", "ours", rate, "items/s");
}

fn median(repeats: usize, mut measure: impl FnMut() -> f64) -> f64 {
    let mut values: Vec<f64> = (0..repeats).map(|_| measure()).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(id: &str, who: &str, value: f64, unit: &str) {
    println!("bench\t{id}\t{who}\t{value:.3}\t{unit}");
}
