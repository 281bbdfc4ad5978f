//! Runs the demo binary and checks what only the outside can see: the value the parent
//! prints came from a child, which pid printed each line, and bad input.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn demo() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-pipe"));
    command
        .env("RUST_BACKTRACE", "0")
        .env("DEMO_TIME_SCALE", "0.05")
        .stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> Output {
    let mut child = Guard(
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The demo's output is small: it cannot fill the pipes while we wait for it to end.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the demo did not end within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let stdout = std::io::read_to_string(child.0.stdout.take().unwrap()).unwrap();
    let stderr = std::io::read_to_string(child.0.stderr.take().unwrap()).unwrap();
    Output {
        status: child.0.wait().unwrap(),
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

/// Kills the demo if a test fails before it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pid_of(line: &str) -> u32 {
    line.strip_prefix("[pid ")
        .unwrap()
        .split(']')
        .next()
        .unwrap()
        .parse()
        .unwrap()
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
    let stdout = String::from_utf8(out.stdout).unwrap();
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
    let stdout = String::from_utf8(out.stdout).unwrap();
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
    let stdout = String::from_utf8(out.stdout).unwrap();
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
        assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);
        assert!(out.stdout.is_empty());
    }
    let help = run(demo().arg("--help"));
    assert!(help.status.success());
    assert!(
        String::from_utf8(help.stdout)
            .unwrap()
            .starts_with("Usage: demo-pipe")
    );
}
