//! A pipe end given as the argument of a child started by each method (fork, spawn,
//! forkserver) works there as under fork: values cross both ways, and each side gets `Eof`
//! when the other closes its end or dies.
//!
//! This test target has `harness = false`, and its own `main`: a spawned child is this test
//! binary run again, and it must reach `run_if_spawned` first thing in `main`. libtest's own
//! `main` never calls it. So this one does, then runs each check under each method, catching
//! panics, and ends with libtest's summary line. Children report through their exit code.

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use demo_pipe::pipe::{Connection, Error, pipe, pipe_duplex};
use demo_pipe::value::Value;
use demo_pipe::{StartMethod, exit_now, get_context, run_if_spawned};

/// The note's child: sends `[42, None, 'hello']`, then answers one number with its successor.
fn f(mut conn: Connection) {
    let hello = Value::List(vec![42.into(), Value::None, "hello".into()]);
    conn.send(&hello).unwrap();
    let n: u64 = conn.recv().unwrap();
    conn.send(&(n + 1)).unwrap();
}

/// Waits for the parent's end to close: `Eof`, not a wait for ever.
fn waits_for_eof(mut conn: Connection) {
    exit_now(match conn.recv::<u8>() {
        Err(Error::Eof) => 0,
        _ => 3,
    });
}

fn sends_then_sleeps(mut conn: Connection) {
    conn.send(&"ready").unwrap();
    loop {
        std::thread::park();
    }
}

fn values_cross_both_ways(method: StartMethod) {
    let (mut parent_conn, child_conn) = pipe().unwrap();
    let mut p = get_context(method).process(f, child_conn);
    p.start().unwrap();
    let got: Value = parent_conn.recv().unwrap();
    assert_eq!(got.to_string(), "[42, None, 'hello']");
    parent_conn.send(&41u64).unwrap();
    assert_eq!(parent_conn.recv::<u64>().unwrap(), 42);
    assert_eq!(p.join().unwrap(), 0);
    // The child's end closed with it, and the parent holds no copy of it.
    assert!(matches!(parent_conn.recv::<u64>(), Err(Error::Eof)));
}

fn the_child_sees_eof_when_the_parent_closes(method: StartMethod) {
    let (parent_conn, child_conn) = pipe().unwrap();
    let mut p = get_context(method).process(waits_for_eof, child_conn);
    p.start().unwrap();
    parent_conn.close();
    assert_eq!(p.join().unwrap(), 0);
}

fn the_parent_sees_eof_when_the_child_is_killed(method: StartMethod) {
    let (mut parent_conn, child_conn) = pipe().unwrap();
    let mut p = get_context(method).process(sends_then_sleeps, child_conn);
    p.start().unwrap();
    assert_eq!(parent_conn.recv::<String>().unwrap(), "ready");
    p.kill().unwrap();
    assert!(matches!(parent_conn.recv::<u8>(), Err(Error::Eof)));
    assert_eq!(p.join().unwrap(), -9);
}

fn a_one_way_end_keeps_its_direction(method: StartMethod) {
    let (mut r, w) = pipe_duplex(false).unwrap();
    let mut p = get_context(method).process(
        |mut w: Connection| {
            let refused = w.recv::<u8>().is_err();
            w.send(&refused).unwrap();
        },
        w,
    );
    p.start().unwrap();
    assert!(
        r.recv::<bool>().unwrap(),
        "the send-only end refused to receive"
    );
    assert_eq!(p.join().unwrap(), 0);
}

/// An end that has read ahead holds bytes the child would never see: sending it is an error
/// at `start`, not a loss.
fn an_end_with_unread_bytes_does_not_cross(method: StartMethod) {
    if method == StartMethod::Fork {
        return; // A fork copies the buffer with the rest of memory.
    }
    let (mut a, mut b) = pipe().unwrap();
    b.send(&1u8).unwrap();
    b.send(&2u8).unwrap();
    assert_eq!(a.recv::<u8>().unwrap(), 1); // Both frames are now in `a`'s buffer.
    let mut p = get_context(method).process(waits_for_eof, a);
    // (postcard keeps only "custom error" of the refusal's text, so the message is generic.)
    let err = p.start().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert!(p.pid().is_none(), "no child was started");
}

type Check = fn(StartMethod);

const CHECKS: &[(&str, Check)] = &[
    ("values_cross_both_ways", values_cross_both_ways),
    (
        "the_child_sees_eof_when_the_parent_closes",
        the_child_sees_eof_when_the_parent_closes,
    ),
    (
        "the_parent_sees_eof_when_the_child_is_killed",
        the_parent_sees_eof_when_the_child_is_killed,
    ),
    (
        "a_one_way_end_keeps_its_direction",
        a_one_way_end_keeps_its_direction,
    ),
    (
        "an_end_with_unread_bytes_does_not_cross",
        an_end_with_unread_bytes_does_not_cross,
    ),
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
