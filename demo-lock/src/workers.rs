//! The 4 worker processes of the counter demos, started at the same moment.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::process::Process;
use crate::process_lock::Shared;

pub const WORKERS: usize = 4;
pub const N: u64 = 10_000;
pub const TOTAL: u64 = WORKERS as u64 * N;

/// Starts `WORKERS` children that each call `increment(args)` `N` times, all at once. Without
/// the gate each child could be done before the next one is even forked, and the counter
/// without a lock would come out right by luck.
pub fn start_workers<A: Clone + 'static>(increment: fn(&A), args: &A) -> io::Result<Vec<Process>> {
    let go = Shared::new(AtomicBool::new(false))?;
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let go = go.clone();
        let mut p = Process::new(
            move |args: A| {
                // Bounded: the parent opens the gate right after forking, or dies, and then
                // so does this child (process.rs asks for the parent's death signal).
                while !go.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                (0..N).for_each(|_| increment(&args));
            },
            args.clone(),
        );
        p.start()?;
        workers.push(p);
    }
    go.store(true, Ordering::Release);
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
