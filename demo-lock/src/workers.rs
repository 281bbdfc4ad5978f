//! The 4 worker processes of the counter demos, started together behind a barrier.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use demo_lock::{Process, Shared};

pub const WORKERS: usize = 4;
pub const N: u64 = 10_000;
pub const TOTAL: u64 = WORKERS as u64 * N;

/// How long a worker waits at the barrier for the others before it goes on alone.
const BARRIER_LIMIT: Duration = Duration::from_secs(10);

/// Starts `WORKERS` children that each call `increment(args)` `N` times. They wait for each
/// other at a barrier in shared memory and start counting together: without it each child
/// could be done before the next one is even forked, and the counter without a lock would
/// come out right by luck.
pub fn start_workers<A: Clone + 'static>(increment: fn(&A), args: &A) -> io::Result<Vec<Process>> {
    let arrived = Shared::new(AtomicUsize::new(0))?;
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let arrived = arrived.clone();
        let mut p = Process::new(
            move |args: A| {
                arrived.fetch_add(1, Ordering::AcqRel);
                // Bounded: a sibling that died before it arrived must not keep the others
                // here for ever. (If the parent dies, so does this child: process.rs asks
                // for the parent's death signal.)
                let limit = Instant::now() + BARRIER_LIMIT;
                while arrived.load(Ordering::Acquire) < WORKERS && Instant::now() < limit {
                    std::thread::yield_now();
                }
                (0..N).for_each(|_| increment(&args));
            },
            args.clone(),
        );
        p.start()?;
        workers.push(p);
    }
    Ok(workers)
}

/// Joins the workers; a worker that did not exit with 0 is an error.
pub fn join_all(workers: Vec<Process>) -> io::Result<()> {
    for mut p in workers {
        match p.join()? {
            0 => {}
            code => return Err(io::Error::other(format!("{} exitcode {code}", p.name()))),
        }
    }
    Ok(())
}
