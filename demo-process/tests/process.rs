//! `Process` under the fork method, through the library as a user sees it: exit codes, names,
//! misuse, and a child that runs another program. A forked child's output is lost inside the
//! test harness, so these tests check exit codes and states, never printed lines. Every
//! guarantee under every start method is checked in `start_methods.rs`.
//!
//! These tests live here, not in the shared `process.rs`, so that the other crates that carry
//! that file do not run them again.

use std::process::Command;

use demo_process::{Process, StartMethod, exit_now};

#[test]
fn join_returns_exit_code_and_names_count_up() {
    let mut p = Process::new(|code: i32| exit_now(code), 7);
    let q = Process::new(|_: ()| {}, ());
    let (a, b): (usize, usize) = (
        p.name().trim_start_matches("Process-").parse().unwrap(),
        q.name().trim_start_matches("Process-").parse().unwrap(),
    );
    assert!(b > a);
    assert_eq!(p.exitcode(), None);
    p.start().unwrap();
    assert_ne!(p.pid(), Some(std::process::id() as i32));
    assert_eq!(p.join().unwrap(), 7);
    assert_eq!(p.exitcode(), Some(7));
    assert!(!p.is_alive().unwrap());
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let mut p = Process::new(|_: ()| {}, ());
    assert!(p.join().is_err());
    assert!(p.terminate().is_err());
    p.start().unwrap();
    assert!(p.start().is_err());
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn command_child_reports_the_program_exit_code() {
    let mut sh = Command::new("sh");
    sh.args(["-c", "exit 3"]);
    let mut p = Process::command(sh);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 3);
}

#[test]
fn start_methods_parse_by_python_name() {
    for method in StartMethod::ALL {
        assert_eq!(method.name().parse(), Ok(method));
    }
    assert!("Fork".parse::<StartMethod>().is_err());
}
