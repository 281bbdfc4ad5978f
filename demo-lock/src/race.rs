//! Why a lock matters: 4 processes add 1 to a counter in shared memory, without the lock and
//! then with it. Without it the total comes out short on every run: the workers start
//! together (`workers.rs`) and each increment gives up the CPU between its read and its
//! write, so another process writes in between.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use demo_lock::{ProcessMutex, Shared};

use crate::demo::say;
use crate::workers::{N, TOTAL, WORKERS, join_all, start_workers};

pub fn run() -> io::Result<()> {
    say!("2. {WORKERS} processes add 1 to a counter in shared memory {N} times each, no lock");
    let counter = Shared::new(AtomicU64::new(0))?;
    join_all(start_workers(add_unlocked, &counter)?)?;
    say!("counter = {} (expected {TOTAL})", counter.load(Relaxed));

    say!("the same with each increment under the lock");
    let counter = ProcessMutex::new(0u64)?;
    join_all(start_workers(add_locked, &counter)?)?;
    let total = *counter.acquire().unwrap();
    say!("counter = {total} (expected {TOTAL})");
    assert_eq!(total, TOTAL);
    Ok(())
}

/// Python's `counter.value += 1` is a read then a write, and so is this: another process may
/// write in between, and its write is lost. (Atomics make it a lost update, not UB.)
fn add_unlocked(counter: &Shared<AtomicU64>) {
    let value = counter.load(Relaxed);
    // New: giving up the CPU here widens the window, so updates are lost on every run.
    std::thread::yield_now();
    counter.store(value + 1, Relaxed);
}

/// The same read, yield and write, under the lock (released when the guard drops).
fn add_locked(counter: &ProcessMutex<u64>) {
    let mut guard = counter.acquire().unwrap();
    let value = *guard;
    std::thread::yield_now();
    *guard = value + 1;
}
