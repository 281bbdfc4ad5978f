//! Every guarantee of `Process`, under each start method (fork, spawn, forkserver): exit codes,
//! a panicking target, `join_timeout`, `terminate` and `kill`, the sentinel, drop, descriptors
//! inside arguments, arguments of several MiB, no process left when the parent is killed
//! (SIGKILL, SIGTERM, Ctrl-C to its group) or exits, and a forkserver that dies.
//!
//! This test target has `harness = false`, and its own `main`: a spawned child is this test
//! binary run again, and it must reach `run_if_spawned` first thing in `main`, as a program's
//! children do. libtest's own `main` never calls it. So this one does, then runs each check
//! under each method, catching panics, and ends with libtest's summary line. Scenarios that
//! need a parent to kill run this binary again as that parent (`--as-parent`).

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, ExitCode};
use std::time::Duration;

use demo_process::{Process, StartMethod, exit_now, fds, get_context, run_if_spawned};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{Pid, pipe};
use serde::{Deserialize, Serialize};
use support::{Running, assert_all_end, descendants, ended, parent_of, run};

mod support;

/// Long enough for any start on a loaded machine; only reached if something is broken.
const BOUND: Duration = Duration::from_secs(60);

/// Ends the child with `_exit`: a forked child must not run `exit`, which takes locks that
/// another thread of the parent may have held at the fork (see `exit_now`).
fn exit_with(code: i32) {
    exit_now(code);
}

fn panics(_: ()) {
    panic!("this panic is expected");
}

fn sleeps(_: ()) {
    loop {
        std::thread::park();
    }
}

fn noop(_: ()) {}

#[derive(Serialize, Deserialize)]
struct Writes {
    #[serde(with = "fds")]
    pipe: OwnedFd,
    text: String,
}

fn writes(args: Writes) {
    let line = format!("{} from {}", args.text, std::process::id());
    std::fs::File::from(args.pipe)
        .write_all(line.as_bytes())
        .unwrap();
}

#[derive(Serialize, Deserialize)]
struct Big {
    data: String,
    sum: u64,
}

fn checks_big(args: Big) {
    let sum: u64 = args.data.bytes().map(u64::from).sum();
    exit_now(if sum == args.sum { 0 } else { 3 });
}

/// A shape postcard cannot decode (untagged: the type does not say which variant).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Untagged {
    Number(u32),
}

fn takes_untagged(_: Untagged) {}

static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn takes_the_lock(_: ()) {
    drop(LOCK.lock());
}

/// Waits for the end with a bound; a child that does not end fails the check.
fn finish(p: &mut Process) -> i32 {
    p.join_timeout(BOUND).unwrap().expect("the child ended")
}

fn exit_code_is_the_targets(method: StartMethod) {
    let mut p = get_context(method).process(exit_with, 7);
    let kind = match method {
        StartMethod::Fork => "ForkProcess-",
        StartMethod::Spawn => "SpawnProcess-",
        StartMethod::Forkserver => "ForkServerProcess-",
    };
    assert!(p.name().starts_with(kind), "{}", p.name());
    assert_eq!(p.pid(), None);
    p.start().unwrap();
    assert_ne!(p.pid(), Some(std::process::id() as i32));
    assert_eq!(finish(&mut p), 7);
    assert_eq!(p.exitcode(), Some(7));
    assert!(!p.is_alive().unwrap());
    assert!(p.start().is_err(), "a second start is an error");
}

fn terminate_and_kill_give_minus_the_signal(method: StartMethod) {
    for (signal, code) in [(Signal::SIGTERM, -15), (Signal::SIGKILL, -9)] {
        let mut p = get_context(method).process(sleeps, ());
        p.start().unwrap();
        assert!(p.is_alive().unwrap());
        match signal {
            Signal::SIGTERM => p.terminate().unwrap(),
            _ => p.kill().unwrap(),
        }
        assert_eq!(finish(&mut p), code);
        // Signalling an ended child does nothing: its pid may be someone else's by now.
        p.kill().unwrap();
    }
}

fn join_timeout_returns_while_the_child_runs(method: StartMethod) {
    let mut p = get_context(method).process(sleeps, ());
    p.start().unwrap();
    assert_eq!(p.join_timeout(Duration::from_millis(50)).unwrap(), None);
    assert_eq!(p.exitcode(), None);
    p.kill().unwrap();
    assert_eq!(finish(&mut p), -9);
}

fn the_sentinel_becomes_readable_when_the_child_ends(method: StartMethod) {
    let mut p = get_context(method).process(sleeps, ());
    p.start().unwrap();
    let sentinel = p.sentinel().unwrap().try_clone_to_owned().unwrap();
    assert!(!readable(&sentinel, Duration::ZERO));
    assert!(p.is_alive().unwrap());
    p.kill().unwrap();
    assert!(readable(&sentinel, BOUND));
    assert!(!p.is_alive().unwrap());
    assert_eq!(p.exitcode(), Some(-9));
}

fn drop_kills_and_reaps(method: StartMethod) {
    let mut p = get_context(method).process(sleeps, ());
    p.start().unwrap();
    let pid = Pid::from_raw(p.pid().unwrap());
    let sentinel = p.sentinel().unwrap().try_clone_to_owned().unwrap();
    drop(p);
    // Ended once the drop returns: no wait needed.
    assert!(readable(&sentinel, Duration::ZERO));
    // And reaped, by us or by the forkserver: the pid is no longer our child.
    assert_eq!(
        waitpid(pid, Some(WaitPidFlag::WNOHANG)),
        Err(nix::Error::ECHILD)
    );
}

fn a_descriptor_in_the_arguments_reaches_the_child(method: StartMethod) {
    let (read, write) = pipe().unwrap();
    let args = Writes {
        pipe: write,
        text: "hello".into(),
    };
    let mut p = get_context(method).process(writes, args);
    p.start().unwrap();
    // EOF comes when the child has written and exited: the parent's copy went with `args`.
    let mut got = String::new();
    std::fs::File::from(read).read_to_string(&mut got).unwrap();
    assert_eq!(got, format!("hello from {}", p.pid().unwrap()));
    assert_eq!(finish(&mut p), 0);
}

fn arguments_of_several_mib_arrive_whole(method: StartMethod) {
    let data: String = (0..6 << 20)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let sum = data.bytes().map(u64::from).sum();
    let mut p = get_context(method).process(checks_big, Big { data, sum });
    p.start().unwrap();
    assert_eq!(finish(&mut p), 0);
}

fn a_panicking_target_exits_1_with_its_message_on_stderr(method: StartMethod) {
    let out = run(&mut as_parent("panic", method));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("exitcode 1"), "{out:?}");
    assert!(out.stderr.contains("this panic is expected"), "{out:?}");
}

fn arguments_postcard_cannot_carry_are_a_clear_error(method: StartMethod) {
    if method == StartMethod::Fork {
        return; // Under fork the argument moves into the child as it is.
    }
    let out = run(&mut as_parent("untagged", method));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("exitcode 2"), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr.contains("could not read its target's arguments"),
        "{out:?}"
    );
    assert!(out.stderr.contains("untagged"), "{out:?}");
}

/// The hazard the spawn and forkserver methods exist for: a lock that another thread holds
/// while a child starts. A forked child has a copy of the lock, held by a thread it does not
/// have: it can never take it. A spawned or forkserver child starts from a fresh image.
fn a_lock_held_by_another_thread_does_not_reach_the_child(method: StartMethod) {
    let (held, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            let _guard = LOCK.lock();
            held.wait();
            release.wait();
        });
        held.wait();
        let mut p = get_context(method).process(takes_the_lock, ());
        p.start().unwrap();
        if method == StartMethod::Fork {
            // Never done, however long we wait: the bound only says when we stop looking.
            assert_eq!(p.join_timeout(Duration::from_millis(200)).unwrap(), None);
            p.kill().unwrap();
            assert_eq!(finish(&mut p), -9);
        } else {
            assert_eq!(finish(&mut p), 0);
        }
        release.wait();
    });
}

fn nothing_is_left_after_a_normal_exit(method: StartMethod) {
    let out = run(&mut as_parent("exit", method));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let left: Vec<u32> = out
        .stdout
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    if method == StartMethod::Forkserver {
        assert_eq!(left.len(), 1, "the forkserver was running: {out:?}");
    }
    // The program stopped and reaped its forkserver before it exited: gone already.
    for pid in left {
        assert!(ended(pid), "process {pid} outlived a program that exited");
    }
}

fn nothing_outlives_a_parent_killed_by(method: StartMethod, signal: Signal, group: bool) {
    let mut parent = Running::start(&mut as_parent("sleep", method));
    let pid = parent.pid();
    assert_eq!(parent.line().as_deref(), Some("ready\n"));
    let left = descendants(pid);
    let expected = if method == StartMethod::Forkserver {
        2
    } else {
        1
    };
    assert_eq!(left.len(), expected, "{left:?}");
    if group {
        parent.signal_group(signal);
    } else {
        kill(Pid::from_raw(pid as i32), signal).unwrap();
    }
    parent.wait();
    // The kernel delivers the death signals as the parent exits; they need a moment to act.
    assert_all_end(&left);
}

fn nothing_outlives_a_parent_killed_by_sigkill(method: StartMethod) {
    nothing_outlives_a_parent_killed_by(method, Signal::SIGKILL, false);
}

fn nothing_outlives_a_parent_killed_by_sigterm(method: StartMethod) {
    nothing_outlives_a_parent_killed_by(method, Signal::SIGTERM, false);
}

fn nothing_outlives_ctrl_c_to_the_group(method: StartMethod) {
    nothing_outlives_a_parent_killed_by(method, Signal::SIGINT, true);
}

/// Forkserver only: its death is reported to the children's handles, and the next start
/// starts another server.
fn a_dead_forkserver_is_reported_and_replaced(method: StartMethod) {
    if method != StartMethod::Forkserver {
        return;
    }
    let mut p = get_context(method).process(sleeps, ());
    p.start().unwrap();
    let server = parent_of(p.pid().unwrap() as u32);
    assert!(descendants(std::process::id()).contains(&server));
    kill(Pid::from_raw(server as i32), Signal::SIGKILL).unwrap();
    // The child dies with its server (its parent-death signal), and nobody can say how.
    let err = p.join().unwrap_err();
    assert!(err.to_string().contains("forkserver ended"), "{err}");
    let mut q = get_context(method).process(sleeps, ());
    q.start().unwrap();
    assert_ne!(parent_of(q.pid().unwrap() as u32), server);
    q.kill().unwrap();
    assert_eq!(finish(&mut q), -9);
}

/// The scenarios that need a parent of their own: this binary run again as that parent.
fn as_parent(scenario: &str, method: StartMethod) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--as-parent", scenario, method.name()])
        .env("RUST_BACKTRACE", "0");
    command
}

fn run_as_parent(scenario: &str, method: StartMethod) -> ExitCode {
    let ctx = get_context(method);
    match scenario {
        "panic" => {
            let mut p = ctx.process(panics, ());
            p.start().unwrap();
            println!("exitcode {}", finish(&mut p));
        }
        "untagged" => {
            let mut p = ctx.process(takes_untagged, Untagged::Number(1));
            p.start().unwrap();
            println!("exitcode {}", finish(&mut p));
        }
        "exit" => {
            let mut p = ctx.process(noop, ());
            p.start().unwrap();
            assert_eq!(finish(&mut p), 0);
            // What is left running now (the forkserver, if any) must be gone at exit.
            let left = descendants(std::process::id());
            println!(
                "{}",
                left.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        "sleep" => {
            let mut p = ctx.process(sleeps, ());
            p.start().unwrap();
            println!("ready");
            // Killed by the test; the bound only keeps a broken test from running for ever.
            p.join_timeout(BOUND).unwrap();
        }
        _ => return ExitCode::from(2),
    }
    ExitCode::SUCCESS
}

fn readable(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(timeout).unwrap();
    poll(&mut fds, timeout).unwrap() > 0
}

type Check = fn(StartMethod);

const CHECKS: &[(&str, Check)] = &[
    ("exit_code_is_the_targets", exit_code_is_the_targets),
    (
        "terminate_and_kill_give_minus_the_signal",
        terminate_and_kill_give_minus_the_signal,
    ),
    (
        "join_timeout_returns_while_the_child_runs",
        join_timeout_returns_while_the_child_runs,
    ),
    (
        "the_sentinel_becomes_readable_when_the_child_ends",
        the_sentinel_becomes_readable_when_the_child_ends,
    ),
    ("drop_kills_and_reaps", drop_kills_and_reaps),
    (
        "a_descriptor_in_the_arguments_reaches_the_child",
        a_descriptor_in_the_arguments_reaches_the_child,
    ),
    (
        "arguments_of_several_mib_arrive_whole",
        arguments_of_several_mib_arrive_whole,
    ),
    (
        "a_panicking_target_exits_1_with_its_message_on_stderr",
        a_panicking_target_exits_1_with_its_message_on_stderr,
    ),
    (
        "arguments_postcard_cannot_carry_are_a_clear_error",
        arguments_postcard_cannot_carry_are_a_clear_error,
    ),
    (
        "a_lock_held_by_another_thread_does_not_reach_the_child",
        a_lock_held_by_another_thread_does_not_reach_the_child,
    ),
    (
        "nothing_is_left_after_a_normal_exit",
        nothing_is_left_after_a_normal_exit,
    ),
    (
        "nothing_outlives_a_parent_killed_by_sigkill",
        nothing_outlives_a_parent_killed_by_sigkill,
    ),
    (
        "nothing_outlives_a_parent_killed_by_sigterm",
        nothing_outlives_a_parent_killed_by_sigterm,
    ),
    (
        "nothing_outlives_ctrl_c_to_the_group",
        nothing_outlives_ctrl_c_to_the_group,
    ),
    (
        "a_dead_forkserver_is_reported_and_replaced",
        a_dead_forkserver_is_reported_and_replaced,
    ),
];

fn main() -> ExitCode {
    // A spawned child is this binary run again: here it runs its target and exits.
    run_if_spawned();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, scenario, method] = args.as_slice() {
        if flag == "--as-parent" {
            return run_as_parent(scenario, method.parse().unwrap());
        }
    }
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
