//! The holder dies: a child takes the lock and is killed with SIGKILL while it holds it.
//!
//! Python's `multiprocessing.Lock` is a semaphore: nothing releases it when its holder dies,
//! and every later `acquire()` waits for ever (python/cpython gh-88304). Our lock is a robust
//! mutex: the kernel notices the death, and the next acquirer gets the lock together with
//! the news (`Err(OwnerDied)`), so it can repair what the dead owner left half done.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use demo_lock::{Process, ProcessMutex};

use crate::demo::say;
use crate::workers::{TOTAL, WORKERS, join_all, start_workers};

/// A counter and its last committed value, so that an update whose owner died half way
/// through can be rolled back.
type Committed = ProcessMutex<(u64, u64)>;

pub fn run() -> io::Result<()> {
    say!("3. a child takes the lock and is killed while it holds it");
    let counter = Committed::new((0, 0))?;
    let (mut holding, tell) = UnixStream::pair()?;
    let mut holder = Process::new(hold_until_killed, (counter.clone(), tell));
    holder.start()?;
    holding.read_exact(&mut [0])?; // The child holds the lock now, or has died.
    let workers = start_workers(add_or_repair, &counter)?;
    let name = holder.name().to_owned();
    say!("killing {name} with SIGKILL while it holds the lock");
    say!("Python would hang here: a Lock whose holder died stays taken for ever");
    holder.kill()?;
    join_all(workers)?;
    let code = holder.join()?;
    say!("{name} exitcode {code}; the {WORKERS} workers went on");
    let total = counter.acquire().unwrap().0;
    say!("counter = {total} (expected {TOTAL})");
    assert_eq!(total, TOTAL);
    Ok(())
}

fn hold_until_killed((counter, mut tell): (Committed, UnixStream)) {
    let mut guard = counter.acquire().unwrap();
    guard.0 += 5; // Half an update, not committed.
    let (value, committed) = *guard;
    say!("holding the lock in the middle of an update: counter {value}, committed {committed}");
    tell.write_all(b"!").unwrap();
    loop {
        std::thread::park(); // Until SIGKILL.
    }
}

/// One increment, committed; whoever is told the owner died rolls its half update back.
fn add_or_repair(counter: &Committed) {
    let mut guard = counter.acquire().unwrap_or_else(|died| {
        let mut guard = died.into_guard();
        let (value, committed) = *guard;
        say!("the lock's owner died in the middle: counter {value} rolled back to {committed}");
        guard.0 = committed;
        guard
    });
    guard.0 += 1;
    guard.1 = guard.0;
}
