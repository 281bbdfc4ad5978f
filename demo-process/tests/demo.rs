//! Runs the demo binary and checks what only the outside can see: which pids printed what,
//! bad input, and that no child outlives a killed parent.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{descendants, ended};

mod support;

fn demo() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-process"));
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
    // `wait_with_output` needs the child by value; the guard's kill covers a panic before it.
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

#[test]
fn hello_john_comes_from_a_child_under_each_start_method() {
    let out = run(&mut demo());
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
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
    // The panicking child's message reaches stderr.
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("a target that panics")
    );
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
        assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);
        assert!(out.stdout.is_empty());
    }
    // A spawned child's flag, typed by hand: refused before anything runs.
    let file = std::fs::File::open(env!("CARGO_BIN_EXE_demo-process")).unwrap();
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
        let stderr = String::from_utf8(out.stderr).unwrap();
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
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("not a Unix socket"), "{stderr}");
    // A socket whose peer is not the child's parent (the shell in between is).
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let raw = theirs.as_raw_fd();
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            &format!("\"$0\" --multiprocessing-fork {raw}; exit $?"),
        ])
        .arg(env!("CARGO_BIN_EXE_demo-process"))
        .stdin(Stdio::null());
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
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("not this process's parent"), "{stderr}");

    let help = run(demo().arg("--help"));
    assert!(help.status.success());
    assert!(
        String::from_utf8(help.stdout)
            .unwrap()
            .starts_with("Usage: demo-process")
    );
}

fn no_child_outlives_a_parent_killed_by(signal: Signal) {
    // Scaled up, the demo's long-sleeping child (Process-4) stays up until we act.
    let mut command = demo();
    command.env("DEMO_TIME_SCALE", "100").stdout(Stdio::piped());
    let mut parent = Guard(command.spawn().unwrap());
    let pid = parent.0.id();
    let mut lines = BufReader::new(parent.0.stdout.take().unwrap()).lines();
    // After the three methods, the demo has two children: the forkserver, which stays until
    // the demo ends, and the sleeper.
    for line in lines.by_ref() {
        if line.unwrap().contains("joined ForkServerProcess-3") {
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
    parent.0.wait().unwrap();
    // The kernel delivers the death signal as the parent exits; a child needs a moment to go.
    let deadline = Instant::now() + Duration::from_secs(30);
    for child in left {
        while !ended(child) {
            assert!(
                Instant::now() < deadline,
                "process {child} outlived its parent"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn no_child_outlives_a_parent_killed_by_sigkill() {
    no_child_outlives_a_parent_killed_by(Signal::SIGKILL);
}

#[test]
fn no_child_outlives_a_parent_killed_by_sigterm() {
    no_child_outlives_a_parent_killed_by(Signal::SIGTERM);
}
