//! 多线程 (threads): Python's `threading.Thread`, with a target function and with a class that
//! overrides `run`; then what changes in Rust: threads run in parallel and `join` returns the
//! thread's result (`src/parallel.rs`), and a panic in the thread is reported at `join`.
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
mod parallel;

use std::io;
use std::process::ExitCode;

use demo::{Args, say};
use demo_thread::{Run, Thread};

const USAGE: &str = "\
Usage: demo-thread [--help]

Runs the note's run(n) in two named threads, then the same through a struct with a run
method, then a CPU-bound sum serially and split over the cores, and a thread that panics.
Every line starts with the pid and the thread that printed it: the pid is the same on all.
";

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

fn main() -> ExitCode {
    Args::parse(USAGE).finish();
    demo::exit_code(try_main())
}

fn try_main() -> io::Result<()> {
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

    // New: threads really run at once, and join hands back what each one returned.
    parallel::run()?;

    let mut t = Thread::new(|| {
        say!("about to divide by zero");
        1 / std::hint::black_box(0)
    });
    t.start()?;
    let e = t.join().unwrap_err();
    say!("join reports: {e} (its message is on stderr)");
    Ok(())
}
