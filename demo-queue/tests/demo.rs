//! Runs the demo binary and checks, from outside, what the note's scenario promises: every
//! Get after its Put, gets in put order, writer and reader in two processes other than the
//! parent. (`conventions.rs` checks the output against expected-output.txt.)

use std::process::Command;

use support::Output;

mod support;

fn run(args: &[&str], scale: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-queue"));
    command
        .args(args)
        .env("DEMO_TIME_SCALE", scale)
        .env("RUST_BACKTRACE", "0");
    support::run(&mut command)
}

/// `[pid 42] rest` or `[pid 42 name] rest` → (42, rest).
fn split(line: &str) -> (u32, &str) {
    let (who, rest) = line
        .strip_prefix("[pid ")
        .unwrap()
        .split_once("] ")
        .unwrap();
    (who.split(' ').next().unwrap().parse().unwrap(), rest)
}

/// The lines of one part: after the line starting with `from`, up to the next numbered part.
fn part<'a>(lines: &[&'a str], from: &str) -> Vec<&'a str> {
    let start = lines
        .iter()
        .position(|l| split(l).1.starts_with(from))
        .unwrap()
        + 1;
    lines[start..]
        .iter()
        .take_while(|l| !split(l).1.starts_with(char::is_numeric))
        .copied()
        .collect()
}

/// Checks one writer/reader run; returns how many values the reader printed.
fn check_processes(lines: &[&str], parent: u32) -> usize {
    let find = |prefix: &str| lines.iter().position(|l| split(l).1.starts_with(prefix));
    let writer = split(lines[find("Process to write").unwrap()]).0;
    let mut gets = 0;
    for value in ["A", "B", "C"] {
        let put = find(&format!("Put {value} to queue")).unwrap();
        assert_eq!(split(lines[put]).0, writer);
        if let Some(get) = find(&format!("Get {value} from queue.")) {
            assert!(get > put, "Get {value} came before its Put");
            let reader = split(lines[get]).0;
            assert!(reader != writer && reader != parent && writer != parent);
            assert_eq!(
                gets,
                ["A", "B", "C"].iter().position(|v| *v == value).unwrap()
            );
            gets += 1;
        }
    }
    gets
}

#[test]
fn writer_and_reader_are_two_processes_and_gets_follow_puts_in_order() {
    let out = run(&[], "0.05");
    assert!(out.status.success(), "{}", out.stderr);
    let stdout = out.stdout;
    let lines: Vec<&str> = stdout.lines().collect();
    let parent = split(lines[0]).0;

    // Python's way may lose what the reader had not taken when it was terminated.
    let terminated = part(&lines, "1.");
    let got = check_processes(&terminated, parent);
    let (_, last) = split(terminated.last().unwrap());
    let left: usize = last
        .split("unread: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(got + left <= 3);

    // The clean way loses nothing.
    let clean = part(&lines, "2.");
    assert_eq!(check_processes(&clean, parent), 3);
    assert!(clean.last().unwrap().ends_with("nothing is lost"));

    let threads = part(&lines, "3.");
    for item in 0..5 {
        let put = threads
            .iter()
            .position(|l| *l == format!("[pid {parent} producer] Put {item} to queue..."));
        let get = threads
            .iter()
            .position(|l| *l == format!("[pid {parent} consumer] Get {item} from queue."));
        assert!(put.unwrap() < get.unwrap(), "item {item}: Get before Put");
    }
}

#[test]
fn help_and_bad_input() {
    let help = run(&["--help"], "1");
    assert!(help.status.success());
    assert!(help.stdout.starts_with("Usage: demo-queue"));
    for (args, scale) in [(&["--bogus"][..], "1"), (&[][..], "fast")] {
        let bad = run(args, scale);
        assert_eq!(bad.status.code(), Some(2));
        assert!(bad.stdout.is_empty());
        assert_eq!(bad.stderr.lines().count(), 1);
    }
}
