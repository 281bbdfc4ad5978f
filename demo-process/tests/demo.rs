//! Runs the demo binary and checks what only the outside can see: which pids printed what,
//! bad input, and that no child outlives a killed parent.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Running, assert_all_end, descendants, pid_of, run};

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_demo-process");

fn demo() -> Command {
    let mut command = Command::new(BIN);
    command
        .env("RUST_BACKTRACE", "0")
        .env("DEMO_TIME_SCALE", "0.05");
    command
}

#[test]
fn hello_john_comes_from_a_child_under_each_start_method() {
    let out = run(&mut demo());
    assert!(out.status.success(), "{out:?}");
    let stdout = out.stdout;
    let lines: Vec<&str> = stdout.lines().collect();
    let parent = pid_of(lines[0]);
    let hellos: Vec<u32> = lines
        .iter()
        .filter(|l| l.ends_with("] hello john"))
        .map(|l| pid_of(l))
        .collect();
    assert_eq!(hellos.len(), 3, "{stdout}");
    assert!(hellos.iter().all(|&p| p != parent), "{stdout}");
    assert!(hellos[0] != hellos[1] && hellos[1] != hellos[2] && hellos[0] != hellos[2]);
    // The parent names each child's pid, and it is the one that said hello.
    for pid in hellos {
        assert!(stdout.contains(&format!("with pid {pid}\n")), "{stdout}");
    }
}

/// A spawned child never reaches `Args::parse`, where the demos install their one-line panic
/// hook, and a forkserver child is forked from a spawned server: `main` installs the hook
/// before `run_if_spawned`, so that a panic under every method is one line, from the child,
/// even with `RUST_BACKTRACE=1`.
#[test]
fn a_childs_panic_is_one_line_under_each_start_method() {
    let out = run(demo().env("RUST_BACKTRACE", "1"));
    assert!(out.status.success(), "{out:?}");
    let parent = pid_of(&out.stdout);
    let panicked: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains(" panicked: exitcode 1"))
        .collect();
    let names = ["ForkProcess-", "SpawnProcess-", "ForkServerProcess-"];
    assert_eq!(panicked.len(), 3, "{}", out.stdout);
    for (line, name) in panicked.iter().zip(names) {
        assert!(line.contains(&format!("] {name}")), "{line}");
    }
    let stderr: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(stderr.len(), 3, "one line per panic:\n{}", out.stderr);
    let mut pids = Vec::new();
    for line in stderr {
        assert!(
            line.contains("] panicked at ")
                && line.contains("src/main.rs:")
                && line.ends_with(": a target that panics"),
            "{line}"
        );
        pids.push(pid_of(line));
    }
    pids.dedup();
    assert_eq!(pids.len(), 3, "three children panicked: {pids:?}");
    assert!(!pids.contains(&parent));
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    for (env, arg) in [
        ("abc", None),
        ("0", None),
        ("-1", None),
        ("1", Some("--bogus")),
    ] {
        let out = run(demo().env("DEMO_TIME_SCALE", env).args(arg));
        assert_eq!(out.status.code(), Some(2), "{env} {arg:?}");
        assert_eq!(out.stderr.lines().count(), 1);
        assert!(out.stdout.is_empty());
    }
    // A spawned child's flag, typed by hand: refused before anything runs.
    let file = std::fs::File::open(BIN).unwrap();
    for (args, why) in [
        (vec![], "one argument"),
        (vec!["x"], "not a descriptor"),
        (vec!["0"], "not a descriptor"),
        (vec!["99"], "not open"),
        (vec!["3", "4"], "one argument"),
    ] {
        let mut command = demo();
        command.arg("--multiprocessing-fork").args(&args);
        let out = run(&mut command);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = out.stderr;
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    // Descriptor 3 open, but a file, not a socket.
    let mut command = demo();
    command.args(["--multiprocessing-fork", "3"]);
    let fd = file.as_raw_fd();
    // SAFETY: dup2 and fcntl in the forked child, before exec, are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto the same number would leave close-on-exec set.
            let r = match fd {
                3 => libc::fcntl(3, libc::F_SETFD, 0),
                _ => libc::dup2(fd, 3),
            };
            match r {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            }
        });
    }
    let out = run(&mut command);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("not a Unix socket"), "{}", out.stderr);
    // A socket whose peer is not the child's parent (the shell in between is).
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let raw = theirs.as_raw_fd();
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            &format!("\"$0\" --multiprocessing-fork {raw}; exit $?"),
        ])
        .arg(BIN);
    // SAFETY: fcntl in the forked child, before exec, is async-signal-safe.
    unsafe {
        command.pre_exec(move || match libc::fcntl(raw, libc::F_SETFD, 0) {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        });
    }
    let out = run(&mut command);
    drop((ours, theirs));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr.contains("not this process's parent"),
        "{}",
        out.stderr
    );

    let help = run(demo().arg("--help"));
    assert!(help.status.success());
    assert!(help.stdout.starts_with("Usage: demo-process"));
}

fn no_child_outlives_a_parent_killed_by(signal: Signal) {
    // Scaled up, the demo's long-sleeping child (Process-4) stays up until we act.
    let mut parent = Running::start(demo().env("DEMO_TIME_SCALE", "100"));
    let pid = parent.pid();
    // After the three methods, the demo has two children: the forkserver, which stays until
    // the demo ends, and the sleeper.
    while let Some(line) = parent.line() {
        if line.contains("joined ForkServerProcess-3") {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let left = loop {
        let found = descendants(pid);
        if found.len() >= 2 {
            break found;
        }
        assert!(Instant::now() < deadline, "the demo started no sleeper");
        std::thread::sleep(Duration::from_millis(5));
    };
    kill(Pid::from_raw(pid as i32), signal).unwrap();
    parent.wait();
    // The kernel delivers the death signal as the parent exits; a child needs a moment to go.
    assert_all_end(&left);
}

#[test]
fn no_child_outlives_a_parent_killed_by_sigkill() {
    no_child_outlives_a_parent_killed_by(Signal::SIGKILL);
}

#[test]
fn no_child_outlives_a_parent_killed_by_sigterm() {
    no_child_outlives_a_parent_killed_by(Signal::SIGTERM);
}
