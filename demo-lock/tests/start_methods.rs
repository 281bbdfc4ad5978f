//! A `Lock`, a `ProcessMutex` and a `Shared` given as the argument of a child started by each
//! method (fork, spawn, forkserver) work there as under fork: the child holds the lock and the
//! parent waits, the parent holds it and the child waits, and a child that dies holding it is
//! an owner that died: the parent is told and repairs.
//!
//! This test target has `harness = false`, and its own `main`: a spawned child is this test
//! binary run again, and it must reach `run_if_spawned` first thing in `main`. libtest's own
//! `main` never calls it. So this one does, then runs each check under each method, catching
//! panics, and ends with libtest's summary line. Children report through their exit code, and
//! say where they are through a socket, so that nothing waits on a sleep.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use demo_lock::{Lock, ProcessMutex, Shared, StartMethod, TryAcquireError, exit_now, fds};
use demo_lock::{get_context, run_if_spawned};
use serde::{Deserialize, Serialize};

/// Long enough for any start on a loaded machine; only reached if something is broken.
const BOUND: Duration = Duration::from_secs(60);

/// A lock and a socket to the parent, for a child.
#[derive(Serialize, Deserialize)]
struct With<L> {
    lock: L,
    #[serde(with = "fds")]
    parent: UnixStream,
}

/// Holds the lock until the parent says `r`.
fn holds(mut args: With<Lock>) {
    let guard = args.lock.acquire().unwrap();
    args.parent.write_all(b"h").unwrap();
    args.parent.read_exact(&mut [0]).unwrap();
    drop(guard);
}

/// Finds the lock taken, says so, and waits for it; the parent wrote 7 before it let go.
fn waits(mut args: With<ProcessMutex<u64>>) {
    let taken = matches!(args.lock.try_acquire(), Err(TryAcquireError::WouldBlock));
    args.parent.write_all(b"w").unwrap();
    let got = args.lock.acquire_timeout(BOUND);
    exit_now(match got {
        Ok(guard) if taken && *guard == 7 => 0,
        _ => 3,
    });
}

/// Takes the lock, half updates the data, and waits to be killed.
fn dies_holding(mut args: With<ProcessMutex<u64>>) {
    let mut guard = args.lock.acquire().unwrap();
    *guard = 99;
    args.parent.write_all(b"h").unwrap();
    loop {
        std::thread::park();
    }
}

fn the_child_holds_and_the_parent_waits(method: StartMethod) {
    let lock = Lock::new(()).unwrap();
    let (mut child, parent) = UnixStream::pair().unwrap();
    let args = With {
        lock: lock.clone(),
        parent,
    };
    let mut p = get_context(method).process(holds, args);
    p.start().unwrap();
    child.read_exact(&mut [0]).unwrap();
    assert!(matches!(
        lock.try_acquire(),
        Err(TryAcquireError::WouldBlock)
    ));
    let timed = lock.acquire_timeout(Duration::from_millis(20));
    assert!(matches!(timed, Err(TryAcquireError::WouldBlock)));
    child.write_all(b"r").unwrap();
    assert!(lock.acquire_timeout(BOUND).is_ok(), "released by the child");
    assert_eq!(p.join().unwrap(), 0);
}

fn the_parent_holds_and_the_child_waits(method: StartMethod) {
    let mutex = ProcessMutex::new(0u64).unwrap();
    let mut guard = mutex.acquire().unwrap();
    *guard = 7;
    let (mut child, parent) = UnixStream::pair().unwrap();
    let args = With {
        lock: mutex.clone(),
        parent,
    };
    let mut p = get_context(method).process(waits, args);
    p.start().unwrap();
    child.read_exact(&mut [0]).unwrap();
    drop(guard);
    assert_eq!(p.join().unwrap(), 0, "the child waited, then saw 7");
}

fn a_child_that_dies_holding_it_is_an_owner_that_died(method: StartMethod) {
    let mutex = ProcessMutex::new(0u64).unwrap();
    let (mut child, parent) = UnixStream::pair().unwrap();
    let args = With {
        lock: mutex.clone(),
        parent,
    };
    let mut p = get_context(method).process(dies_holding, args);
    p.start().unwrap();
    child.read_exact(&mut [0]).unwrap();
    p.kill().unwrap();
    assert_eq!(p.join().unwrap(), -9);
    let Err(TryAcquireError::OwnerDied(died)) = mutex.acquire_timeout(BOUND) else {
        panic!("not told that the owner died")
    };
    let mut guard = died.into_guard();
    assert_eq!(*guard, 99, "the dead owner's write is visible");
    *guard = 0; // The repair.
    drop(guard);
    assert_eq!(*mutex.try_acquire().unwrap(), 0);
}

fn shared_memory_is_seen_by_parent_and_child(method: StartMethod) {
    let shared = Shared::new(AtomicU64::new(0)).unwrap();
    let mut p = get_context(method).process(
        |c: Shared<AtomicU64>| {
            c.fetch_add(42, Ordering::Relaxed);
        },
        shared.clone(),
    );
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
    assert_eq!(shared.load(Ordering::Relaxed), 42);
}

fn four_children_count_exactly(method: StartMethod) {
    let counter = ProcessMutex::new(0u64).unwrap();
    let add = |c: ProcessMutex<u64>| (0..1000).for_each(|_| *c.acquire().unwrap() += 1);
    let mut children: Vec<_> = (0..4)
        .map(|_| get_context(method).process(add, counter.clone()))
        .collect();
    children.iter_mut().for_each(|p| p.start().unwrap());
    for p in &mut children {
        assert_eq!(p.join().unwrap(), 0);
    }
    assert_eq!(*counter.acquire().unwrap(), 4000);
}

/// A lock is a descriptor field: outside a child's start (here, JSON) it is an error.
fn a_lock_is_not_json(_: StartMethod) {
    let err = serde_json::to_string(&Lock::new(()).unwrap()).unwrap_err();
    assert!(err.to_string().contains("descriptor"), "{err}");
}

type Check = fn(StartMethod);

const CHECKS: &[(&str, Check)] = &[
    (
        "the_child_holds_and_the_parent_waits",
        the_child_holds_and_the_parent_waits,
    ),
    (
        "the_parent_holds_and_the_child_waits",
        the_parent_holds_and_the_child_waits,
    ),
    (
        "a_child_that_dies_holding_it_is_an_owner_that_died",
        a_child_that_dies_holding_it_is_an_owner_that_died,
    ),
    (
        "shared_memory_is_seen_by_parent_and_child",
        shared_memory_is_seen_by_parent_and_child,
    ),
    ("four_children_count_exactly", four_children_count_exactly),
    ("a_lock_is_not_json", a_lock_is_not_json),
];

fn main() -> ExitCode {
    // A spawned child is this binary run again: here it runs its target and exits.
    run_if_spawned();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Flags (`--nocapture`, ...) mean nothing here; a word filters the checks, as in libtest.
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let (mut passed, mut failed) = (0, 0);
    for method in StartMethod::ALL {
        for (name, check) in CHECKS {
            let name = format!("{name}::{method}");
            if filter.is_some_and(|f| !name.contains(f.as_str())) {
                continue;
            }
            let ok = panic::catch_unwind(AssertUnwindSafe(|| check(method))).is_ok();
            println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
            if ok { passed += 1 } else { failed += 1 }
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!("\ntest result: {verdict}. {passed} passed; {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}
