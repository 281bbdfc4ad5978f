//! A queue handle given as the argument of a child started by each method (fork, spawn,
//! forkserver) works there as under fork: the child puts and the parent gets, the parent puts
//! and the child gets, and the ends tell each side when the other is gone.
//!
//! This test target has `harness = false`, and its own `main`: a spawned child is this test
//! binary run again, and it must reach `run_if_spawned` first thing in `main`. libtest's own
//! `main` never calls it. So this one does, then runs each check under each method, catching
//! panics, and ends with libtest's summary line. Children report through their exit code.

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::Duration;

use demo_queue::{GetError, Queue, Reader, StartMethod, Writer, exit_now, get_context};
use demo_queue::{fds, run_if_spawned};

/// Long enough for any start on a loaded machine; only reached if something is broken.
const BOUND: Duration = Duration::from_secs(60);
const VALUES: [&str; 3] = ["A", "B", "C"];

fn puts(w: Writer<String>) {
    for v in VALUES {
        w.put(v.to_string()).unwrap();
    }
}

/// Gets the three values; then, unless `forked`, `Disconnected`: a spawned reader holds no
/// write end, so it sees the last writer go. (A forked one holds the copy of the parent's
/// write end that the fork made, as `Queue`'s documentation warns.)
fn gets((r, forked): (Reader<String>, bool)) {
    for v in VALUES {
        match r.get_timeout(BOUND) {
            Ok(got) if got == v => {}
            _ => exit_now(3),
        }
    }
    if !forked && !matches!(r.get_timeout(BOUND), Err(GetError::Disconnected)) {
        exit_now(4);
    }
}

/// Takes one value from a whole `Queue` and puts back its double.
fn doubles(q: Queue<u64>) {
    let n = q.get_timeout(BOUND).unwrap();
    q.put(n * 2).unwrap();
}

fn the_child_puts_and_the_parent_gets(method: StartMethod) {
    let q = Queue::<String>::bounded(1).unwrap();
    let (w, r) = (q.writer(), q.reader());
    drop(q);
    let mut p = get_context(method).process(puts, w);
    p.start().unwrap();
    // Bounded(1): the child waits for room twice, so the parent's gets wake it.
    for v in VALUES {
        assert_eq!(r.get_timeout(BOUND).unwrap(), v);
    }
    assert_eq!(p.join().unwrap(), 0);
    let end = r.get_timeout(BOUND);
    assert!(matches!(end, Err(GetError::Disconnected)), "{end:?}");
}

fn the_parent_puts_and_the_child_gets(method: StartMethod) {
    let q = Queue::<String>::new().unwrap();
    let (w, r) = (q.writer(), q.reader());
    drop(q);
    let mut p = get_context(method).process(gets, (r, method == StartMethod::Fork));
    p.start().unwrap();
    for v in VALUES {
        w.put(v.to_string()).unwrap();
    }
    drop(w);
    assert_eq!(p.join().unwrap(), 0);
}

fn a_whole_queue_crosses_and_comes_back(method: StartMethod) {
    let q = Queue::<u64>::new().unwrap();
    q.put(21).unwrap();
    let mut p = get_context(method).process(doubles, q.clone());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
    assert_eq!(q.get_timeout(BOUND).unwrap(), 42);
}

fn a_writer_that_is_killed_disconnects_the_readers(method: StartMethod) {
    let q = Queue::<u64>::new().unwrap();
    let (w, r) = (q.writer(), q.reader());
    drop(q);
    let mut p = get_context(method).process(
        |w: Writer<u64>| {
            w.put(1).unwrap();
            loop {
                std::thread::park();
            }
        },
        w,
    );
    p.start().unwrap();
    assert_eq!(r.get_timeout(BOUND).unwrap(), 1);
    p.kill().unwrap();
    assert_eq!(p.join().unwrap(), -9);
    let end = r.get_timeout(BOUND);
    assert!(matches!(end, Err(GetError::Disconnected)), "{end:?}");
}

/// A handle is a descriptor field: outside a child's start (here, JSON) it is an error.
fn a_handle_is_not_json(_: StartMethod) {
    let q = Queue::<u64>::new().unwrap();
    let err = serde_json::to_string(&q.writer()).unwrap_err();
    assert!(err.to_string().contains("descriptor"), "{err}");
    // Inside `fds::encode` it is a message with two descriptors: the memfd and the end.
    assert_eq!(fds::encode(&q.reader()).unwrap().fds.len(), 2);
}

type Check = fn(StartMethod);

const CHECKS: &[(&str, Check)] = &[
    (
        "the_child_puts_and_the_parent_gets",
        the_child_puts_and_the_parent_gets,
    ),
    (
        "the_parent_puts_and_the_child_gets",
        the_parent_puts_and_the_child_gets,
    ),
    (
        "a_whole_queue_crosses_and_comes_back",
        a_whole_queue_crosses_and_comes_back,
    ),
    (
        "a_writer_that_is_killed_disconnects_the_readers",
        a_writer_that_is_killed_disconnects_the_readers,
    ),
    ("a_handle_is_not_json", a_handle_is_not_json),
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
