//! Runs the demo binary and checks from outside: one pid on every line, each task printed by
//! the thread it ran on, the same sum serially and in parallel, a panic reported at join.

use std::process::Command;

use support::run;

mod support;

fn demo() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-thread"));
    command
        .env("RUST_BACKTRACE", "0")
        .env("DEMO_TIME_SCALE", "0.05");
    command
}

/// `[pid 42 thread-1] text` as `(42, Some("thread-1"), "text")`.
fn who(line: &str) -> (u32, Option<&str>, &str) {
    let (prefix, text) = line
        .strip_prefix("[pid ")
        .unwrap()
        .split_once("] ")
        .unwrap();
    let mut words = prefix.split(' ');
    let pid = words.next().unwrap().parse().unwrap();
    (pid, words.next(), text)
}

#[test]
fn threads_share_the_pid_and_print_from_their_own_thread() {
    let out = run(&mut demo());
    assert!(out.status.success(), "{out:?}");
    let stdout = out.stdout;
    let lines: Vec<_> = stdout.lines().map(who).collect();
    // Threads are not processes: one pid on every line, and it is the demo's own.
    assert!(
        lines.iter().all(|(pid, _, _)| *pid == lines[0].0),
        "{stdout}"
    );
    let tasks: Vec<(Option<&str>, &str)> = lines
        .iter()
        .filter(|(_, _, text)| text.starts_with("current task: "))
        .map(|(_, thread, text)| (*thread, *text))
        .collect();
    assert_eq!(tasks.len(), 4, "{stdout}");
    for (thread, text) in tasks {
        let thread = thread.expect("a task line from the main thread");
        assert!(thread.starts_with("thread-"), "{thread}");
        assert!(text == "current task: thread 1" || text == "current task: thread 2");
    }
}

#[test]
fn the_parallel_sum_equals_the_serial_one() {
    let out = run(&mut demo());
    let stdout = out.stdout;
    let expected: u64 = (0..20_000_000u64).map(|i| i * i % 1_000_003).sum();
    let sums: Vec<u64> = stdout
        .lines()
        .filter(|l| l.contains(" in ") && l.ends_with(" ms"))
        .map(|l| {
            let after = l.rsplit(": ").next().unwrap();
            after.split(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(sums, [expected, expected], "{stdout}");
}

#[test]
fn a_panicking_thread_is_reported_at_join() {
    let out = run(&mut demo());
    assert!(
        out.status.success(),
        "a panic in a thread does not end the demo"
    );
    let (stdout, stderr) = (out.stdout, out.stderr);
    let (_, thread, _) = stdout
        .lines()
        .map(who)
        .find(|(_, _, text)| *text == "about to divide by zero")
        .unwrap();
    let thread = thread.unwrap();
    let report = format!("join reports: {thread} panicked: attempt to divide by zero");
    assert!(stdout.contains(&report), "{stdout}");
    assert!(
        stderr.contains(&format!(" {thread}] panicked at ")),
        "{stderr}"
    );
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    for (env, arg) in [("abc", None), ("0", None), ("1", Some("--bogus"))] {
        let out = run(demo().env("DEMO_TIME_SCALE", env).args(arg));
        assert_eq!(out.status.code(), Some(2), "{env} {arg:?}");
        assert_eq!(out.stderr.lines().count(), 1);
        assert!(out.stdout.is_empty());
    }
    let help = run(demo().arg("--help"));
    assert!(help.status.success());
    assert!(help.stdout.starts_with("Usage: demo-thread"));
}
