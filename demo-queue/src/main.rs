//! 进程间通信 Queue, then 线程通信 队列: a queue between processes, like Python's
//! `multiprocessing.Queue`, and a queue between threads, like `queue.Queue`.
//!
//! The note's scenario in Python (one process writes, another reads):
//!
//! ```python
//! from multiprocessing import Process, Queue
//! import os, time, random
//!
//! def write(q):
//!     print('Process to write: %s' % os.getpid())
//!     for value in ['A', 'B', 'C']:
//!         print('Put %s to queue...' % value)
//!         q.put(value)
//!         time.sleep(random.random())
//!
//! def read(q):
//!     print('Process to read: %s' % os.getpid())
//!     while True:
//!         value = q.get(True)
//!         print('Get %s from queue.' % value)
//!
//! if __name__ == '__main__':
//!     q = Queue()
//!     pw = Process(target=write, args=(q,))
//!     pr = Process(target=read, args=(q,))
//!     pw.start()
//!     pr.start()
//!     pw.join()
//!     pr.terminate()
//! ```
//!
//! Run with: `cargo run -p demo-queue` (the queue between threads is in `src/thread_queue.rs`)

mod demo;
mod thread_queue;

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use demo::{Args, say};
use demo_queue::{Process, Queue, Reader, Writer, run_if_spawned};
use rand::rngs::{StdRng, SysRng};
use rand::{RngExt, SeedableRng};

const USAGE: &str = "\
Usage: demo-queue [--help]

A writer process puts A, B, C on a queue and a reader process gets them, ended first as
Python usually does (terminate), then cleanly; then a producer and a consumer thread.
Environment: DEMO_TIME_SCALE multiplies every sleep (default 1).
";

fn write(q: Writer<String>) {
    say!("Process to write: {}", std::process::id());
    // New: a forked child starts with a copy of its parent's generator; seed a fresh one.
    let mut rng = StdRng::try_from_rng(&mut SysRng).expect("the OS gives random bytes");
    for value in ["A", "B", "C"] {
        say!("Put {value} to queue...");
        q.put(value.to_string()).unwrap();
        demo::sleep(rng.random::<f64>());
    }
}

fn read(q: Reader<String>) {
    say!("Process to read: {}", std::process::id());
    // Python's reader loops for ever; this one stops once no writer is left.
    while let Ok(value) = q.get() {
        say!("Get {value} from queue.");
    }
    say!("The queue is closed and drained: the reader ends.");
}

fn main() -> ExitCode {
    // Python's `if __name__ == "__main__":`. A child started by spawn or forkserver is this
    // program run again: here it runs its target instead of the rest of main.
    run_if_spawned();
    Args::parse(USAGE).finish();
    demo::exit_code(try_main())
}

fn try_main() -> io::Result<()> {
    say!("1. Python's way: join the writer, then terminate the reader");
    let q = Queue::new()?;
    let mut pw = Process::new(write, q.writer());
    let mut pr = Process::new(read, q.reader());
    pw.start()?;
    pr.start()?;
    pw.join()?;
    // The parent still holds `q`, so the reader's get() would wait for ever: a signal ends
    // it, whether or not it has taken every value.
    pr.terminate()?;
    let code = pr.join()?;
    let left = std::iter::from_fn(|| q.get_timeout(Duration::ZERO).ok()).count();
    say!("Reader terminated, exitcode {code}; left unread: {left} (terminate may lose some)");

    say!("2. The clean way: the queue closes when its last writer ends");
    let q = Queue::new()?;
    let mut pw = Process::new(write, q.writer());
    let mut pr = Process::new(read, q.reader());
    // New: the parent neither puts nor gets, so it lets go of both ends, and it starts the
    // writer first: a forked child holds every end its parent held at the fork.
    drop(q);
    pw.start()?;
    pr.start()?;
    pw.join()?;
    let code = pr.join()?;
    say!("Reader ended by itself, exitcode {code}: it got every value, nothing is lost");

    thread_queue::run()
}
