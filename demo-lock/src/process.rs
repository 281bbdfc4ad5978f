//! A child process with Python's `multiprocessing.Process` API: `start`, `join`,
//! `join_timeout`, `exitcode`, `is_alive`, `terminate`, `kill`, `name`.
//!
//! `Process::new` uses the fork start method: the child is a copy of this process and runs
//! the target on the value it was given. `Process::command` starts a program instead (the
//! spawn start method, in `spawn.rs`, is built on it).
//!
//! Two promises Python does not make:
//! - a child never outlives its parent: it gets SIGKILL when the parent dies, however the
//!   parent dies (`PR_SET_PDEATHSIG`);
//! - dropping a `Process` that is still running kills and reaps it, so no zombie is left.
//!
//! This file is the same in every demo crate that starts processes, so that each crate can be
//! copied out alone; a test in the xtask checks that the copies stay identical.

#![allow(dead_code)] // Each demo uses its own part of this file.

use std::io::{self, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::prctl;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};

/// How the child starts: a copy of this process running a closure, or another program.
enum Start {
    Fork(Box<dyn FnOnce() -> i32>),
    Command(Command),
}

/// A child process, started by `start` and reaped by `join`, `join_timeout` or `is_alive`.
pub struct Process {
    name: String,
    start: Option<Start>,
    pid: Option<Pid>,
    exitcode: Option<i32>,
}

/// Numbers processes `Process-1`, `Process-2`, … as Python does.
static COUNT: AtomicUsize = AtomicUsize::new(0);

impl Process {
    /// Python's `Process(target=f, args=(x,))` with the fork start method. `args` moves into
    /// the child as it is: fork copies memory, so nothing is serialized.
    pub fn new<A, F>(target: F, args: A) -> Process
    where
        F: FnOnce(A) + 'static,
        A: 'static,
    {
        Process::with_start(Start::Fork(Box::new(move || {
            run_target(move || target(args))
        })))
    }

    /// A child that runs another program. Its exit code is the program's.
    pub fn command(command: Command) -> Process {
        Process::with_start(Start::Command(command))
    }

    fn with_start(start: Start) -> Process {
        let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        Process {
            name: format!("Process-{n}"),
            start: Some(start),
            pid: None,
            exitcode: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid, once started.
    pub fn pid(&self) -> Option<i32> {
        self.pid.map(Pid::as_raw)
    }

    /// Starts the child. Call it from the main thread: the kernel sends the parent-death
    /// signal when the *thread* that forked exits, not only when the process does.
    pub fn start(&mut self) -> io::Result<()> {
        let start = self
            .start
            .take()
            .ok_or_else(|| io::Error::other("process already started"))?;
        let parent = getpid();
        let pid = match start {
            Start::Fork(run) => {
                // Anything buffered now would be printed twice, once by each process.
                io::stdout().flush()?;
                // SAFETY: the child only sets its death signal, runs the target and calls
                // `_exit`. If this program has other threads, a lock one of them held at the
                // fork stays locked in the child; the target must not wait on such a lock.
                match unsafe { fork() }? {
                    ForkResult::Parent { child } => child,
                    ForkResult::Child => {
                        die_with_parent(parent);
                        exit_now(run())
                    }
                }
            }
            Start::Command(mut command) => {
                // SAFETY: the closure runs in the forked child before exec and calls only
                // prctl and getppid, which are async-signal-safe.
                unsafe {
                    command.pre_exec(move || {
                        die_with_parent(parent);
                        Ok(())
                    });
                }
                Pid::from_raw(command.spawn()?.id() as i32)
            }
        };
        self.pid = Some(pid);
        Ok(())
    }

    /// Waits until the child ends. Returns its exit code (see `exitcode`).
    pub fn join(&mut self) -> io::Result<i32> {
        let pid = self.started()?;
        if let Some(code) = self.exitcode {
            return Ok(code);
        }
        let status = loop {
            match waitpid(pid, None) {
                Err(nix::Error::EINTR) => continue,
                other => break other?,
            }
        };
        Ok(self
            .record(status)
            .expect("a blocking waitpid returns an ended child"))
    }

    /// Waits at most `timeout` for the child to end; `None` if it is still running, as
    /// Python's `join(timeout)` returns with `exitcode` still `None`.
    pub fn join_timeout(&mut self, timeout: Duration) -> io::Result<Option<i32>> {
        let pid = self.started()?;
        if self.is_alive()? {
            // A pidfd becomes readable when the process ends: the wait needs no polling loop.
            let pidfd = pidfd_open(pid)?;
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let left = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
                let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, left) {
                    Err(nix::Error::EINTR) => continue,
                    Ok(0) => return Ok(None),
                    Ok(_) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.join().map(Some)
    }

    /// Python's `exitcode`: `None` while running, then the exit code, or minus the number of
    /// the signal that ended the child (`-15` after `terminate`). It is the state seen by the
    /// last `join`, `join_timeout` or `is_alive`.
    pub fn exitcode(&self) -> Option<i32> {
        self.exitcode
    }

    /// Whether the child has started and not yet ended. Reaps it if it has ended.
    pub fn is_alive(&mut self) -> io::Result<bool> {
        let Some(pid) = self.pid else {
            return Ok(false);
        };
        if self.exitcode.is_some() {
            return Ok(false);
        }
        let status = waitpid(pid, Some(WaitPidFlag::WNOHANG))?;
        Ok(self.record(status).is_none())
    }

    /// Sends SIGTERM, as Python's `terminate()`. Follow it with `join`.
    pub fn terminate(&mut self) -> io::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends SIGKILL, as Python's `kill()`. Follow it with `join`.
    pub fn kill(&mut self) -> io::Result<()> {
        self.signal(Signal::SIGKILL)
    }

    fn signal(&mut self, signal: Signal) -> io::Result<()> {
        let pid = self.started()?;
        // A reaped pid may already belong to another process: never signal it.
        if self.exitcode.is_none() {
            kill(pid, signal)?;
        }
        Ok(())
    }

    fn started(&self) -> io::Result<Pid> {
        self.pid
            .ok_or_else(|| io::Error::other(format!("{} has not been started", self.name)))
    }

    fn record(&mut self, status: WaitStatus) -> Option<i32> {
        self.exitcode = match status {
            WaitStatus::Exited(_, code) => Some(code),
            WaitStatus::Signaled(_, signal, _) => Some(-(signal as i32)),
            _ => None,
        };
        self.exitcode
    }
}

impl Drop for Process {
    /// A child that was never joined is killed and reaped: it cannot outlive its handle.
    fn drop(&mut self) {
        if let Ok(true) = self.is_alive() {
            let _ = self.kill();
            let _ = self.join();
        }
    }
}

/// Runs a target in the child and turns its end into an exit code: 0, or 1 after a panic,
/// whose message the default panic hook has already printed to stderr (Python prints the
/// traceback and exits with 1).
fn run_target(target: impl FnOnce()) -> i32 {
    match panic::catch_unwind(AssertUnwindSafe(target)) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// In the child: asks for SIGKILL when the parent dies, and dies now if it already has.
fn die_with_parent(parent: Pid) {
    if prctl::set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != parent {
        exit_now(1);
    }
}

/// Ends a forked child at once, without running the parent's exit handlers or destructors,
/// which belong to the parent.
fn exit_now(code: i32) -> ! {
    let _ = io::stdout().flush();
    // SAFETY: `_exit` ends the process immediately; it is always sound to call.
    unsafe { libc::_exit(code) }
}

fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a file descriptor that was just opened and that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A forked child's output is lost inside the test harness, so these tests check exit
    // codes and states, never printed lines.

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
    fn a_panicking_target_exits_with_one() {
        let mut p = Process::new(|_: ()| panic!("boom (this panic is expected)"), ());
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 1);
    }

    #[test]
    fn terminate_gives_minus_sigterm() {
        let mut p = Process::new(
            |_: ()| loop {
                std::thread::park()
            },
            (),
        );
        p.start().unwrap();
        assert!(p.is_alive().unwrap());
        p.terminate().unwrap();
        assert_eq!(p.join().unwrap(), -15);
        // Signalling a reaped child does nothing: its pid may be someone else's by now.
        p.kill().unwrap();
    }

    #[test]
    fn join_timeout_returns_while_the_child_runs() {
        let mut p = Process::new(
            |_: ()| loop {
                std::thread::park()
            },
            (),
        );
        p.start().unwrap();
        assert_eq!(p.join_timeout(Duration::from_millis(50)).unwrap(), None);
        assert_eq!(p.exitcode(), None);
        p.kill().unwrap();
        assert_eq!(p.join_timeout(Duration::from_secs(60)).unwrap(), Some(-9));
    }

    #[test]
    fn drop_kills_and_reaps_a_running_child() {
        let mut p = Process::new(
            |_: ()| loop {
                std::thread::park()
            },
            (),
        );
        p.start().unwrap();
        let pid = Pid::from_raw(p.pid().unwrap());
        drop(p);
        // Reaped: the pid is no longer our child.
        assert_eq!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG)),
            Err(nix::Error::ECHILD)
        );
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
}
