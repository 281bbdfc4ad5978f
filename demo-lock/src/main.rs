//! 进程锁 (process lock): Python's `multiprocessing.Lock` as a robust process-shared mutex.
//! Then `race.rs`: why a lock matters; `holder_dies.rs`: what Python's Lock cannot survive;
//! and 线程锁 (thread lock, `thread_lock.rs`): `threading.Lock` as `std::sync::Mutex`.
//!
//! The note's Python:
//!
//! ```python
//! import multiprocessing as mp
//! l = mp.Lock() # 定义一个进程锁
//! l.acquire() # 锁住
//! l.release() # 释放
//! ```
//!
//! Run with: `cargo run -p demo-lock`

mod demo;
mod holder_dies;
mod race;
mod thread_lock;
mod workers;

use std::io;
use std::process::ExitCode;

use demo::{Args, say};
use demo_lock::{Lock, StartMethod, get_context, run_if_spawned};

const USAGE: &str = "\
Usage: demo-lock [--no-lock] [--holder-dies] [--threads] [--help]

Runs the note's lock lines; 4 processes adding to a shared counter, without and with the lock
(--no-lock); a holder killed while it holds the lock (--holder-dies); the thread lock
(--threads). Each flag runs its part alone.

Environment: DEMO_TIME_SCALE multiplies every sleep (default 1).
";

fn main() -> ExitCode {
    // Python's `if __name__ == "__main__":`. A child started by spawn or forkserver is this
    // program run again: here it runs its target instead of the rest of main.
    run_if_spawned();
    let mut args = Args::parse(USAGE);
    let only = [
        args.flag("--no-lock"),
        args.flag("--holder-dies"),
        args.flag("--threads"),
    ];
    args.finish();
    demo::exit_code(try_main(only))
}

/// Runs the parts asked for: the flags' parts alone, or every part when none is given.
fn try_main(only: [bool; 3]) -> io::Result<()> {
    let all = only == [false; 3];
    let parts = [
        (all, note_lines as fn() -> io::Result<()>),
        (all || only[0], race::run),
        (all || only[1], holder_dies::run),
        (all || only[2], thread_lock::run),
    ];
    for (_, part) in parts.into_iter().filter(|(on, _)| *on) {
        part()?;
    }
    Ok(())
}

fn note_lines() -> io::Result<()> {
    say!("1. the note: l = mp.Lock(); l.acquire(); l.release()");
    let l = Lock::new(())?;
    let guard = l.acquire().unwrap(); // Err would mean a holder died: none has yet.
    say!("acquire(): the lock is taken");
    // Started by spawn, Python's default on macOS: the child is sent the lock (its memfd) and
    // maps it. `Process::new` (fork) works the same.
    let mut p = get_context(StartMethod::Spawn).process(try_to_acquire, l.clone());
    p.start()?;
    p.join()?;
    drop(guard); // l.release(): the guard's drop, which also runs if this code panics.
    say!("release(): the lock is free");
    Ok(())
}

/// Python's acquire(False) and acquire(timeout=0.2): both give up while the parent holds it.
fn try_to_acquire(l: Lock) {
    let got = |taken: bool| if taken { "True" } else { "False, busy" };
    say!("acquire(False) returns {}", got(l.try_acquire().is_ok()));
    let timeout = demo::scaled(0.2);
    say!(
        "acquire(timeout=0.2) returns {}",
        got(l.acquire_timeout(timeout).is_ok())
    );
}
