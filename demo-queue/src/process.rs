//! A child process with Python's `multiprocessing.Process` API: `start`, `join`,
//! `join_timeout`, `exitcode`, `is_alive`, `terminate`, `kill`, `name`, `sentinel`.
//!
//! How a child begins is its start method. `Process::new` forks: the child is a copy of this
//! process and runs the closure it was given. `Process::command` runs another program. The
//! spawn and forkserver methods (`spawn.rs`, `forkserver.rs`) start their children their own
//! way and give `Process::launch` what they started (`Started`): a pid, a pidfd, and where the
//! exit status will come from. From there on a `Process` is the same whatever its method.
//!
//! Two promises Python does not make:
//! - a child never outlives its parent: it gets SIGKILL when the parent dies, however the
//!   parent dies (`PR_SET_PDEATHSIG`);
//! - dropping a `Process` that is still running kills and reaps it, so no zombie is left.
//!
//! This file is the same in every demo crate that starts processes, so that each crate can be
//! copied out alone; a test in the xtask checks that the copies stay identical.

#![allow(dead_code)] // Each demo uses its own part of this file.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::prctl;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};

/// Python's start methods: how a child process begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMethod {
    /// A copy of this process, made by `fork`: fast, but only the forking thread is copied.
    Fork,
    /// This program run again (`exec`), told through a socket what to run.
    Spawn,
    /// Forked by a server that was spawned while it had a single thread.
    Forkserver,
}

impl StartMethod {
    /// The three methods, in Python's order.
    pub const ALL: [StartMethod; 3] = [Self::Fork, Self::Spawn, Self::Forkserver];

    /// Python's name for the method: `fork`, `spawn` or `forkserver`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fork => "fork",
            Self::Spawn => "spawn",
            Self::Forkserver => "forkserver",
        }
    }
}

impl FromStr for StartMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown start method {s:?} (fork, spawn or forkserver)"))
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A child that has just been started, by any method: what `Process` needs to wait for it,
/// to signal it and to learn how it ended.
pub struct Started {
    pid: Pid,
    /// Becomes readable when the child ends; signals reach the child through it, never through
    /// a pid that may have been reused.
    pidfd: OwnedFd,
    /// Where the exit status comes from.
    status: Status,
}

enum Status {
    /// Our own child: `waitpid` reaps it and gives its status.
    Reap,
    /// Another process's child (a forkserver's): that process reaps it and writes how it ended
    /// (an `i32`, Python's convention) on this socket.
    Reported(UnixStream),
}

impl Started {
    /// Our own child, just started: opens its pidfd. If that fails, the child is killed and
    /// reaped, and the error returned.
    pub fn child(pid: i32) -> io::Result<Started> {
        let pid = Pid::from_raw(pid);
        match pidfd_open(pid) {
            Ok(pidfd) => Ok(Started {
                pid,
                pidfd,
                status: Status::Reap,
            }),
            Err(e) => {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                Err(e)
            }
        }
    }

    /// Another process's child: its pid, a pidfd of it, and the socket on which its exit status
    /// will arrive.
    pub fn reported(pid: i32, pidfd: OwnedFd, status: OwnedFd) -> Started {
        Started {
            pid: Pid::from_raw(pid),
            pidfd,
            status: Status::Reported(UnixStream::from(status)),
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Its pidfd, which becomes readable when the child ends (`Process::sentinel`).
    pub fn sentinel(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Kills the child and, if it is ours, reaps it: for a start that failed half-way.
    pub fn abandon(self) {
        let _ = pidfd_send_signal(self.pidfd.as_fd(), Signal::SIGKILL);
        if let Status::Reap = self.status {
            let _ = waitpid(self.pid, None);
        }
    }
}

/// How a `Process` starts its child, run once by `start`.
type Launch = Box<dyn FnOnce() -> io::Result<Started>>;

/// A child process, started by `start` and reaped by `join`, `join_timeout` or `is_alive`.
pub struct Process {
    name: String,
    launch: Option<Launch>,
    child: Option<Started>,
    exitcode: Option<i32>,
}

/// Numbers processes `Process-1`, `SpawnProcess-2`, … with one counter, as Python does.
static COUNT: AtomicUsize = AtomicUsize::new(0);

impl Process {
    /// Python's `Process(target=f, args=(x,))` with the fork start method. `args` moves into
    /// the child as it is: fork copies memory, so nothing is serialized.
    pub fn new<A, F>(target: F, args: A) -> Process
    where
        F: FnOnce(A) + 'static,
        A: 'static,
    {
        Process::launch("Process", move || {
            forked(move || {
                target(args);
                0
            })
        })
    }

    /// A child that runs another program. Its exit code is the program's.
    pub fn command(command: Command) -> Process {
        Process::launch("Process", move || start_command(command))
    }

    /// A process that `start` starts by calling `launch`; it is named `{kind}-N`, as Python
    /// names a context's processes (`SpawnProcess-2`).
    pub fn launch(kind: &str, launch: impl FnOnce() -> io::Result<Started> + 'static) -> Process {
        let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        Process {
            name: format!("{kind}-{n}"),
            launch: Some(Box::new(launch)),
            child: None,
            exitcode: None,
        }
    }

    /// Python's `name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid, once started.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(Started::pid)
    }

    /// Python's `sentinel`: a descriptor that becomes readable when the child ends, for a
    /// `poll` over many processes. After it does, `is_alive` or `join` give the exit code.
    pub fn sentinel(&self) -> Option<BorrowedFd<'_>> {
        self.child.as_ref().map(|c| c.pidfd.as_fd())
    }

    /// Starts the child. Call it from a thread that lives as long as the child should: the
    /// kernel sends the parent-death signal when the *thread* that started it exits.
    pub fn start(&mut self) -> io::Result<()> {
        let launch = self
            .launch
            .take()
            .ok_or_else(|| io::Error::other("process already started"))?;
        self.child = Some(launch()?);
        Ok(())
    }

    /// Waits until the child ends. Returns its exit code (see `exitcode`).
    pub fn join(&mut self) -> io::Result<i32> {
        let child = self.started()?;
        if let Some(code) = self.exitcode {
            return Ok(code);
        }
        let code = match &child.status {
            Status::Reap => loop {
                match waitpid(child.pid, None) {
                    Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                    Ok(status) => {
                        break code_of(status).expect("a blocking waitpid returns an ended child");
                    }
                }
            },
            // The reporter writes once the child has ended; if it dies first, the child dies
            // with it (its parent-death signal) and the read ends with EOF.
            Status::Reported(socket) => read_status(socket, child.pid)?,
        };
        self.exitcode = Some(code);
        Ok(code)
    }

    /// Waits at most `timeout` for the child to end; `None` if it is still running, as
    /// Python's `join(timeout)` returns with `exitcode` still `None`.
    pub fn join_timeout(&mut self, timeout: Duration) -> io::Result<Option<i32>> {
        let child = self.started()?;
        // The pidfd becomes readable when the process ends: the wait needs no polling loop.
        if self.exitcode.is_none() && !readable_within(child.pidfd.as_fd(), timeout)? {
            return Ok(None);
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
        let Some(child) = &self.child else {
            return Ok(false);
        };
        if self.exitcode.is_some() {
            return Ok(false);
        }
        match child.status {
            Status::Reap => {
                self.exitcode = code_of(waitpid(child.pid, Some(WaitPidFlag::WNOHANG))?);
                Ok(self.exitcode.is_none())
            }
            Status::Reported(_) => {
                if !readable_within(child.pidfd.as_fd(), Duration::ZERO)? {
                    return Ok(true);
                }
                self.join()?;
                Ok(false)
            }
        }
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
        let child = self.started()?;
        if self.exitcode.is_none() {
            pidfd_send_signal(child.pidfd.as_fd(), signal)?;
        }
        Ok(())
    }

    fn started(&self) -> io::Result<&Started> {
        self.child
            .as_ref()
            .ok_or_else(|| io::Error::other(format!("{} has not been started", self.name)))
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

/// Python's convention: the exit code, or minus the signal that ended the process; `None`
/// while it runs.
fn code_of(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(-(signal as i32)),
        _ => None,
    }
}

fn read_status(mut socket: &UnixStream, pid: Pid) -> io::Result<i32> {
    let mut code = [0u8; 4];
    match socket.read_exact(&mut code) {
        Ok(()) => Ok(i32::from_le_bytes(code)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("the forkserver ended before it reported how pid {pid} ended"),
        )),
        Err(e) => Err(e),
    }
}

/// Forks a child that runs `run` and exits with the code `run` returns, or 1 if it panics: the
/// default panic hook has printed the message on stderr (Python prints the traceback and
/// exits with 1).
pub fn forked(run: impl FnOnce() -> i32) -> io::Result<Started> {
    let parent = getpid();
    // The child has only this thread. Holding the stdout and stderr locks across the fork
    // means no other thread holds them there, so the child can print; flushing means nothing
    // buffered is printed twice, once by each process.
    let mut stdout = io::stdout().lock();
    stdout.flush()?;
    let stderr = io::stderr().lock();
    // SAFETY: the child only sets its death signal, runs `run` and calls `_exit`. If this
    // program has other threads, a lock one of them held at the fork stays locked in the
    // child; `run` must not wait on such a lock (the spawn and forkserver methods exist for
    // programs that cannot promise that). stdout and stderr are held by this thread, and
    // released in both processes.
    let forked = unsafe { fork() };
    drop((stdout, stderr));
    match forked? {
        ForkResult::Parent { child } => Started::child(child.as_raw()),
        ForkResult::Child => {
            die_with_parent(parent);
            exit_now(panic::catch_unwind(AssertUnwindSafe(run)).unwrap_or(1))
        }
    }
}

/// Starts a program, which dies with this process's thread.
pub fn start_command(mut command: Command) -> io::Result<Started> {
    let parent = getpid();
    // SAFETY: the closure runs in the forked child before exec and calls only prctl and
    // getppid, which are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            die_with_parent(parent);
            Ok(())
        });
    }
    Started::child(command.spawn()?.id() as i32)
}

/// In the child: asks for SIGKILL when the parent dies, and dies now if it already has.
fn die_with_parent(parent: Pid) {
    if prctl::set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != parent {
        exit_now(1);
    }
}

/// Ends a forked child at once, without running the parent's exit handlers or destructors,
/// which belong to the parent.
pub fn exit_now(code: i32) -> ! {
    let _ = io::stdout().flush();
    // SAFETY: `_exit` ends the process immediately; it is always sound to call.
    unsafe { libc::_exit(code) }
}

/// Whether `fd` becomes readable within `timeout`.
fn readable_within(fd: BorrowedFd, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let left = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, left) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(n) => return Ok(n > 0),
        }
    }
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

/// Signals the process behind `pidfd`; a process that has already ended is not an error.
fn pidfd_send_signal(pidfd: BorrowedFd, signal: Signal) -> io::Result<()> {
    let (fd, sig) = (pidfd.as_raw_fd(), signal as libc::c_int);
    // SAFETY: the syscall reads a descriptor, a signal number, a null siginfo and flags.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, sig, 0usize, 0) };
    match r {
        0 => Ok(()),
        _ if io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}
