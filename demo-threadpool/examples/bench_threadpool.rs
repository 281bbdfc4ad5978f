//! `map` over no-op items through a pool of 4 threads, in items per second, beside rayon (what a
//! Rust user would otherwise take) on the same items: `into_par_iter().map().collect()`, which
//! takes the items by value as our `map` does, bare and with each item under `catch_unwind`;
//! and `par_iter()` over the items borrowed, one list read again round after round.
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
use std::panic;
use std::time::Instant;

use demo_threadpool::{Panicked, Pool};
use rayon::prelude::*;

/// The median figure of each contender over at least `repeats` rounds. Each round runs every
/// contender once, in turn, so that the machine's drift (it is shared) falls on all alike.
/// The rounds go through the contenders' orders evenly: each rotation forwards and backwards,
/// so that each contender runs first, last, and right after each other one (after its
/// processes and memory went) equally often; a run's place in its round moves its figure by
/// up to 15% here.
fn medians<const N: usize>(repeats: usize, contenders: [&mut dyn FnMut() -> f64; N]) -> [f64; N] {
    let rounds = repeats.div_ceil(2 * N) * 2 * N;
    let mut figures = [(); N].map(|_| Vec::with_capacity(rounds));
    for round in 0..rounds {
        for k in 0..N {
            let k = if (round / N) % 2 == 0 { k } else { N - 1 - k };
            let i = (round + k) % N;
            figures[i].push(contenders[i]());
        }
    }
    figures.map(|mut v| {
        v.sort_by(f64::total_cmp);
        (v[rounds / 2 - 1] + v[rounds / 2]) / 2.0
    })
}

/// Items per second of one call of `f` on `items` items. What `f` returns is dropped after
/// the clock stops: both contenders hand back a vector, and freeing it is the caller's cost.
fn rate<R>(items: usize, f: impl FnOnce() -> R) -> f64 {
    let start = Instant::now();
    let results = f();
    let rate = items as f64 / start.elapsed().as_secs_f64();
    drop(results);
    rate
}

fn main() {
    let (repeats, n) = if std::env::var_os("BENCH_QUICK").is_some() {
        (5, 100_000)
    } else {
        (21, 1_000_000)
    };
    let items: Vec<u64> = (0..n as u64).collect();
    let pool = Pool::new(4).unwrap();
    let [ours, rayon, rayon_caught, rayon_borrowed] = medians(
        repeats,
        [
            // `map` takes its items by value, as Python's does: each round gets its own copy,
            // made before the clock starts, which `map` moves into its threads and frees.
            &mut || {
                let items = items.clone();
                rate(n, || {
                    let results = pool.map(|i: u64| black_box(i), items);
                    assert_eq!(results.len(), n);
                    results
                })
            },
            // rayon's global pool (one thread per core), given its own copy as `map` is. A
            // panic in one item ends its `collect` with that panic and every other result lost,
            // so its results are bare.
            &mut || {
                let items = items.clone();
                rate(n, || {
                    let results: Vec<u64> = items.into_par_iter().map(black_box).collect();
                    assert_eq!(results.len(), n);
                    results
                })
            },
            // rayon asked for what `map` promises: each item's panic caught as its `Err`, the
            // other results kept. The results are the same type as ours, 16 bytes each.
            &mut || {
                let items = items.clone();
                rate(n, || {
                    let results: Vec<Result<u64, Panicked>> = items
                        .into_par_iter()
                        .map(|i| {
                            panic::catch_unwind(|| black_box(i))
                                .map_err(|_| Panicked("a panic".into()))
                        })
                        .collect();
                    assert_eq!(results.len(), n);
                    results
                })
            },
            // rayon over the items borrowed: the same list every round, read and never freed,
            // and no copy made for it.
            &mut || {
                rate(n, || {
                    let results: Vec<u64> = items.par_iter().map(|&i| black_box(i)).collect();
                    assert_eq!(results.len(), n);
                    results
                })
            },
        ],
    );
    pool.join();
    println!("bench\tthreadpool.map\tours\t{ours:.0}\titems/s");
    println!("bench\tthreadpool.map\trayon\t{rayon:.0}\titems/s");
    println!("bench\tthreadpool.map\trayon, catch_unwind per item\t{rayon_caught:.0}\titems/s");
    println!(
        "bench\tthreadpool.map\trayon, par_iter over borrowed items\t{rayon_borrowed:.0}\titems/s"
    );
}
