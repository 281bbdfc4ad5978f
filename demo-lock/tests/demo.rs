//! Runs the demo-lock binary and checks its output from outside: the exact totals, which
//! process printed what, and each flag's part alone.

use std::process::Command;

use support::{line, pid_of as pid};

mod support;

/// Runs the demo with `args`, at a small time scale; it must end by a status, not a signal.
fn run(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-lock"));
    command
        .args(args)
        .env("DEMO_TIME_SCALE", "0.05")
        .env("RUST_BACKTRACE", "0");
    let out = support::run(&mut command);
    Output {
        code: out.status.code().expect("demo-lock ended by a signal"),
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The output as a whole is checked against expected-output.txt in `conventions.rs`; here,
/// who printed what.
#[test]
fn the_parent_and_its_children_print_their_own_lines() {
    let out = run(&[]);
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    // Every line of the main process comes from one pid; the lines of children from others.
    let main = pid(&out.stdout);
    assert_ne!(pid(line(&out.stdout, "acquire(False) returns")), main);
    assert_eq!(pid(line(&out.stdout, "Python would hang here")), main);
}

/// The two totals `--no-lock` prints: without the lock, then with it.
fn totals(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|l| l.split("counter = ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn without_the_lock_updates_are_lost_on_every_run_and_with_it_none() {
    for run_number in 1..=10 {
        let out = run(&["--no-lock"]);
        assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
        let totals = totals(&out.stdout);
        assert_eq!(totals.len(), 2, "stdout:\n{}", out.stdout);
        assert!(
            totals[0] < 40_000,
            "run {run_number}: no update was lost without the lock:\n{}",
            out.stdout
        );
        assert_eq!(totals[1], 40_000, "run {run_number}");
        assert!(
            !out.stdout.contains("1. the note"),
            "--no-lock runs its part alone"
        );
    }
}

#[test]
fn the_holder_dies_and_another_process_is_told_and_repairs() {
    let out = run(&["--holder-dies"]);
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    let main = pid(out.stdout.lines().next().unwrap());
    let holder = pid(line(
        &out.stdout,
        "holding the lock in the middle of an update",
    ));
    let repairer = pid(line(&out.stdout, "the lock's owner died"));
    assert!(holder != main && repairer != main && repairer != holder);
    assert!(line(&out.stdout, "exitcode").contains("exitcode -9"));
    assert_eq!(
        out.stdout.lines().last().unwrap(),
        format!("[pid {main}] counter = 40000 (expected 40000)")
    );
    assert!(
        !out.stdout.contains("threading.Lock"),
        "--holder-dies runs its part alone"
    );
}

#[test]
fn threads_count_exactly_and_a_panicking_holder_poisons_the_mutex() {
    let out = run(&["--threads"]);
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    let poisoned = line(&out.stdout, "after a holder panicked");
    assert!(poisoned.ends_with("the mutex is poisoned, counter 1; repaired to 0"));
    assert!(
        out.stderr
            .contains("a holder panics while it holds the lock")
    );
    let last = out.stdout.lines().last().unwrap();
    assert!(last.ends_with("4 threads: counter = 40000 (expected 40000)"));
    assert!(
        !out.stdout.contains("mp.Lock"),
        "--threads runs its part alone"
    );
}

#[test]
fn help_exits_0_and_a_bad_flag_exits_2() {
    let out = run(&["--help"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.starts_with("Usage: demo-lock"));
    let out = run(&["--bogus"]);
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
    assert!(out.stdout.is_empty());
}
