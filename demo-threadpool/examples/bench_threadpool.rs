//! `map` over no-op items through a pool of 4 threads, in items per second.
//!
//! Its rows in the table of `cargo xtask bench`, in this order:
//!
//! | id | row |
//! |---|---|
//! | `threadpool.map` | thread pool map, no-op items |
//!
//! Prints `bench<TAB>id<TAB>who<TAB>median<TAB>unit` lines for `cargo xtask bench`.
//! Run with: `cargo run --release -p demo-threadpool --example bench_threadpool` (`BENCH_QUICK=1` for fewer repeats)

use std::hint::black_box;
use std::time::Instant;

use demo_threadpool::Pool;

/// The median of `f`'s rate in items per second over `n` runs of `items` items.
fn median_rate(n: usize, items: usize, mut f: impl FnMut()) -> f64 {
    let mut rates: Vec<f64> = (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            items as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[n / 2]
}

fn main() {
    let (repeats, items) = if std::env::var_os("BENCH_QUICK").is_some() {
        (5, 100_000)
    } else {
        (21, 1_000_000)
    };
    let pool = Pool::new(4).unwrap();
    let ours = median_rate(repeats, items, || {
        let results = pool.map(|i: u64| black_box(i), (0..items as u64).collect());
        assert_eq!(results.len(), items);
    });
    pool.join();
    println!("bench\tthreadpool.map\tours\t{ours:.0}\titems/s");
}
