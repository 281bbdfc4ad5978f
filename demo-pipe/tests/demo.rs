//! Runs the demo binary and checks what only the outside can see: the value the parent
//! prints came from a child, which pid printed each line, and bad input.

use std::process::Command;

use support::{pid_of, run};

mod support;

fn demo() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-pipe"));
    command
        .env("RUST_BACKTRACE", "0")
        .env("DEMO_TIME_SCALE", "0.05");
    command
}

/// The one line that ends with `text`.
fn line<'a>(stdout: &'a str, text: &str) -> &'a str {
    let found: Vec<&str> = stdout.lines().filter(|l| l.ends_with(text)).collect();
    assert_eq!(found.len(), 1, "{text:?} in\n{stdout}");
    found[0]
}

#[test]
fn the_parent_prints_the_list_a_child_sent() {
    let out = run(&mut demo());
    assert!(out.status.success(), "{out:?}");
    let stdout = out.stdout;
    let parent = pid_of(stdout.lines().next().unwrap());
    // Exactly Python's print of the list, by the parent.
    let hello = line(&stdout, "] [42, None, 'hello']");
    assert_eq!(hello, format!("[pid {parent}] [42, None, 'hello']"));
    // The sender was another process: the parent named its pid.
    let started = stdout
        .lines()
        .find(|l| l.starts_with(&format!("[pid {parent}] started Process-1 with pid ")))
        .unwrap();
    let child: u32 = started.rsplit(' ').next().unwrap().parse().unwrap();
    assert_ne!(child, parent);
}

#[test]
fn duplex_goes_both_ways_between_two_processes() {
    let out = run(&mut demo());
    assert!(out.status.success(), "{out:?}");
    let stdout = out.stdout;
    let lines: Vec<&str> = stdout.lines().collect();
    let parent = pid_of(lines[0]);
    let sends = line(&stdout, "child sends [42, None, 'hello']");
    let got = line(&stdout, "parent got [42, None, 'hello'] and answers");
    let reply = line(&stdout, "child got the reply 'thanks, 3 items'");
    assert_ne!(pid_of(sends), parent);
    assert_eq!(pid_of(sends), pid_of(reply));
    assert_eq!(pid_of(got), parent);
    // The reply is printed after the parent received and answered: it crossed back.
    let at = |l: &str| lines.iter().position(|x| *x == l).unwrap();
    assert!(at(sends) < at(got) && at(got) < at(reply), "{stdout}");
}

#[test]
fn the_end_of_the_pipe_and_a_one_way_pipe() {
    let out = run(&mut demo());
    let stdout = out.stdout;
    line(&stdout, "recv() again: EOFError, the child closed its end");
    line(&stdout, "poll(0.1) with nothing sent: False");
    line(&stdout, "poll(0.1) after a send: True, recv() gives 7");
    line(&stdout, "reader.send(8): error: connection is read-only");
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
    assert!(help.stdout.starts_with("Usage: demo-pipe"));
}
