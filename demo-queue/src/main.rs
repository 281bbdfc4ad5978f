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
//! Run with: `cargo run -p demo-queue`

mod demo;
mod process;
#[allow(dead_code)] // The tests and the bench use the rest of its API.
mod queue;
mod robust;

use std::io;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use demo::{Args, say};
use process::Process;
use queue::{Queue, Reader, Writer};
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

/// Puts 0..5 on a queue that holds 2; returns how many times it found the queue full.
fn producer(q: Sender<i32>) -> usize {
    let mut waits = 0;
    for item in 0..5 {
        say!("Put {item} to queue...");
        if let Err(TrySendError::Full(item)) = q.try_send(item) {
            waits += 1;
            q.send(item).unwrap(); // Blocks until the consumer takes one.
        }
    }
    waits // Dropping the last Sender closes the channel: the consumer's loop ends.
}

fn consumer(q: Receiver<i32>) {
    for item in q {
        say!("Get {item} from queue.");
        demo::sleep(0.2);
    }
}

fn main() -> ExitCode {
    Args::parse(USAGE).finish();
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-queue: {e}");
            ExitCode::FAILURE
        }
    }
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

    say!("3. Threads: queue.Queue(maxsize=2) is a bounded crossbeam channel");
    let (tx, rx) = crossbeam_channel::bounded(2);
    let named = |name: &str| thread::Builder::new().name(name.into());
    let producer = named("producer").spawn(move || producer(tx))?;
    let consumer = named("consumer").spawn(move || consumer(rx))?;
    let waits = producer.join().unwrap();
    consumer.join().unwrap();
    say!("The producer waited {waits} times for room; the items moved, nothing was serialized");
    Ok(())
}
