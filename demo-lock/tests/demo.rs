//! Runs the demo-lock binary and checks its output from outside: the exact totals, which
//! process printed what, and the command-line conventions.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A running demo, killed (with its process group's children dying by their death signal)
/// if the test ends before it does.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the demo with `args`, at a small time scale, for at most 60 s.
fn run(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_demo-lock"))
        .args(args)
        .env("DEMO_TIME_SCALE", "0.05")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start demo-lock");
    let mut demo = Demo(child);
    let read = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).map(|_| text)
        })
    };
    let stdout = read(Box::new(demo.0.stdout.take().unwrap()));
    let stderr = read(Box::new(demo.0.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "demo-lock {args:?} did not end within 60 s"
        );
        thread::sleep(Duration::from_millis(10)); // A poll interval, not a synchronisation.
    };
    Output {
        code: status.code().expect("demo-lock ended by a signal"),
        stdout: stdout.join().unwrap().unwrap(),
        stderr: stderr.join().unwrap().unwrap(),
    }
}

/// The pid a line starts with: `[pid 4242] …` or `[pid 4242 thread-1] …`.
fn pid(line: &str) -> u32 {
    let rest = line
        .strip_prefix("[pid ")
        .expect("a line starts with who printed it");
    let end = rest.find([' ', ']']).unwrap();
    rest[..end].parse().unwrap()
}

/// The only line containing `text`.
fn line<'a>(stdout: &'a str, text: &str) -> &'a str {
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains(text)).collect();
    assert_eq!(lines.len(), 1, "one line with {text:?} in:\n{stdout}");
    lines[0]
}

/// Whether `line` matches `pattern`, where `[..]` stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap();
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[test]
fn the_whole_demo_prints_its_expected_output() {
    let out = run(&[]);
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    let expected = include_str!("../expected-output.txt");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let patterns: Vec<&str> = expected.lines().collect();
    assert_eq!(lines.len(), patterns.len(), "stdout:\n{}", out.stdout);
    for (pattern, line) in patterns.iter().zip(&lines) {
        assert!(
            matches(pattern, line),
            "{line:?} does not match {pattern:?}"
        );
    }
    // Every line of the main process comes from one pid; the lines of children from others.
    let main = pid(lines[0]);
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
