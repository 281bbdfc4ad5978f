//! Runs the demo binary and checks the conventions of `src/demo.rs` from outside: bad input
//! is one line on stderr and exit code 2, a closed stdout ends the demo quietly and leaves no
//! process, a panic is one line whatever `RUST_BACKTRACE` says, and the output is what
//! `expected-output.txt` says.
//!
//! This file is the same in every demo crate, as `src/demo.rs` is; a test in the xtask checks
//! that the copies stay identical.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use support::{Running, run};

mod support;

const NAME: &str = env!("CARGO_PKG_NAME");
const BIN: &str = env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME")));

/// The demos that panic on purpose, to show where a panic ends up.
const PANICS_ON_PURPOSE: &[&str] = &["demo-lock", "demo-pool", "demo-process", "demo-thread"];

fn demo(scale: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .env("DEMO_TIME_SCALE", scale)
        .env("RUST_BACKTRACE", "0");
    command
}

/// Bad input: nothing on stdout, one line on stderr that names the demo, exit code 2.
fn assert_refused(command: &mut Command, why: &str) {
    let out = run(command);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(out.status.code(), Some(2), "{why}: {}", out.stderr);
    assert_eq!(out.stdout, "", "{why}");
    assert_eq!(lines.len(), 1, "{why}: {}", out.stderr);
    assert!(
        lines[0].starts_with(&format!("{NAME}: ")),
        "{why}: {}",
        lines[0]
    );
}

#[test]
fn an_argument_that_is_not_utf8_is_refused() {
    assert_refused(
        demo("0.05").arg(OsStr::from_bytes(b"\xff")),
        "the argument \\xff",
    );
}

#[test]
fn a_stray_argument_is_refused() {
    assert_refused(demo("0.05").arg("stray"), "stray");
    // Not a URL for the demos that take none; a malformed one for demo-threadpool.
    assert_refused(demo("0.05").arg("http://127.0.0.1:99999/"), "port 99999");
}

#[test]
fn a_flag_is_not_taken_as_a_flags_value() {
    let dir = std::env::temp_dir().join(format!("{NAME}-flag-value-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert_refused(
        demo("0.05")
            .current_dir(&dir)
            .args(["--timeline", "--bogus"]),
        "--timeline --bogus",
    );
    assert!(
        !dir.join("--bogus").exists(),
        "a file named --bogus was written"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_time_scale_out_of_its_range_is_refused() {
    for scale in [
        "1e9", "1e20", "1e300", "101", "inf", "NaN", "0", "-1", "", "fast",
    ] {
        assert_refused(&mut demo(scale), &format!("DEMO_TIME_SCALE={scale:?}"));
    }
    assert_refused(
        demo("0.05").env("DEMO_TIME_SCALE", OsStr::from_bytes(b"0.\xff")),
        "DEMO_TIME_SCALE=0.\\xff",
    );
}

#[test]
fn a_closed_stdout_ends_the_demo_quietly_and_leaves_no_process() {
    // The reader takes one line and goes away, as `demo | head -1` does.
    let (mut demo, stdout) = Running::start_with_stdout(&mut demo("0.2"));
    let mut stdout = BufReader::new(stdout);
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("[pid "), "{first}");
    drop(stdout);
    let status = demo.wait();
    assert!(!demo.left_behind(), "processes were left running");
    let stderr = demo.finish().stderr;
    assert_eq!(stderr, "", "stderr is not quiet");
    assert!(status.success(), "{status}");
}

#[test]
fn a_panic_is_one_line_whatever_rust_backtrace_says() {
    for backtrace in ["1", "full"] {
        let out = run(demo("0.05").env("RUST_BACKTRACE", backtrace));
        assert!(out.status.success(), "{}", out.stderr);
        let panics = out.stderr.lines().filter(|l| l.contains("] panicked at "));
        assert_eq!(
            panics.count() > 0,
            PANICS_ON_PURPOSE.contains(&NAME),
            "{}",
            out.stderr
        );
        for line in out.stderr.lines() {
            assert!(
                line.starts_with("[pid ") && line.contains("] panicked at "),
                "RUST_BACKTRACE={backtrace}: not a one-line panic: {line}\n{}",
                out.stderr
            );
        }
    }
}

/// What `cargo xtask run-all` checks, here too, so that a crate copied out alone still
/// checks it: the demo ends by itself and prints what `expected-output.txt` says.
#[test]
fn the_output_matches_expected_output_txt() {
    let out = run(&mut demo("0.05"));
    assert!(out.status.success(), "{}: {}", out.status, out.stderr);
    support::assert_expected_output(&out.stdout);
}
