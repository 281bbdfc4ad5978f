//! Thread start+join: ours (`Thread`) against `std::thread::spawn` + `join` alone.
//!
//! Its rows in the table of `cargo xtask bench`, in this order:
//!
//! | id | row |
//! |---|---|
//! | `thread.start_join` | thread start+join |
//!
//! Prints `bench<TAB>id<TAB>who<TAB>median<TAB>unit` lines for `cargo xtask bench`.
//! Run with: `cargo run --release -p demo-thread --example bench_thread` (`BENCH_QUICK=1` for fewer repeats)

use std::time::Instant;

use demo_thread::Thread;

/// The median time of `f` in microseconds over `n` runs.
fn median_us(n: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

fn report(id: &str, who: &str, value: f64, unit: &str) {
    println!("bench\t{id}\t{who}\t{value:.3}\t{unit}");
}

fn main() {
    let n = if std::env::var_os("BENCH_QUICK").is_some() {
        500
    } else {
        5000
    };
    let ours = median_us(n, || {
        let mut t = Thread::new(|| ());
        t.start().unwrap();
        t.join().unwrap();
    });
    let bare = median_us(n, || std::thread::spawn(|| ()).join().unwrap());
    report("thread.start_join", "ours", ours, "us");
    report("thread.start_join", "limit", bare, "us");
}
