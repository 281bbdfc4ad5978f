//! 多线程 (threads): Python's `threading.Thread`, with a target function and with a class that
//! overrides `run`; then what changes in Rust: threads run in parallel, `join` returns the
//! thread's result, and a panic in the thread is reported at `join`.
//!
//! The note's Python:
//!
//! ```python
//! import threading
//! def run(n):
//!     print("current task：", n)
//! t1 = threading.Thread(target=run, args=("thread 1",))
//! t2 = threading.Thread(target=run, args=("thread 2",))
//! t1.start()
//! t2.start()
//!
//! class MyThread(threading.Thread):
//!     def __init__(self, n):
//!         super().__init__()
//!         self.n = n
//!     def run(self):
//!         print("current task：", self.n)
//! t1 = MyThread("thread 1")
//! t2 = MyThread("thread 2")
//! t1.start()
//! t2.start()
//! t1.join()
//! t2.join()
//! ```
//!
//! Run with: `cargo run -p demo-thread`

mod demo;
mod thread;

use std::io;
use std::time::Instant;

use demo::{Args, say};
use thread::{Run, Thread};

const USAGE: &str = "\
Usage: demo-thread [--help]

Runs the note's run(n) in two named threads, then the same through a struct with a run
method, then a CPU-bound sum serially and split over the cores, and a thread that panics.
Every line starts with the pid and the thread that printed it: the pid is the same on all.
";

/// The CPU-bound job: the sum of `i * i % 1_000_003` for `i` below `N`.
const N: u64 = 20_000_000;

fn sum(from: u64, to: u64) -> u64 {
    (from..to).map(|i| i * i % 1_000_003).sum()
}

fn run(n: &str) {
    say!("current task: {n}");
}

/// The note's `MyThread`: the data is the struct, the overridden method is `Run::run`.
struct MyThread {
    n: &'static str,
}

impl Run for MyThread {
    type Output = ();
    fn run(self) {
        say!("current task: {}", self.n);
    }
}

fn main() -> io::Result<()> {
    Args::parse(USAGE).finish();
    say!("function threads: Thread(target=run, args=(n,)) is Thread::new(move || run(n))");
    let mut t1 = Thread::new(|| run("thread 1"));
    let mut t2 = Thread::new(|| run("thread 2"));
    t1.start()?;
    t2.start()?;
    // Python waits for its threads before it exits; Rust ends them with main, so we join.
    t1.join().unwrap();
    t2.join().unwrap();

    say!("class threads: a struct with a run method, started and joined by Thread");
    let mut t1 = Thread::new(MyThread { n: "thread 1" });
    let mut t2 = Thread::new(MyThread { n: "thread 2" });
    t1.start()?;
    t2.start()?;
    t1.join().unwrap();
    t2.join().unwrap();
    say!("joined {} and {}", t1.name(), t2.name());

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

    let mut t = Thread::new(|| {
        say!("about to divide by zero");
        1 / std::hint::black_box(0)
    });
    t.start()?;
    let e = t.join().unwrap_err();
    say!("join reports: {e} (its message is on stderr)");
    Ok(())
}
