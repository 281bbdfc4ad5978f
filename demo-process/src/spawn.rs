//! The spawn start method, the child bootstrap, and `get_context`.
//!
//! A spawned child is this program run again: `/proc/self/exe --multiprocessing-fork 3`
//! (Python's flag), which finds on descriptor 3, a Unix socket, what to run. Nothing else is
//! inherited but stdio, and nothing of the task is on the command line, where every user could
//! read it (`/proc/PID/cmdline`) and its size would be limited. On the socket the parent
//! writes:
//!
//! 1. a header: magic and version;
//! 2. its identity of the executable: device, inode, size, mtime and ctime of /proc/self/exe;
//! 3. a `Task`: the target's offset from `anchor` (a fixed function of this file), the offset
//!    of `trampoline::<A, R>`, which decodes the arguments and calls the target, the arguments
//!    (postcard) and their descriptors (`SCM_RIGHTS`, see `fds.rs`).
//!
//! A function's address means nothing in another image of the program (another ASLR base), but
//! its distance from `anchor` is the same in every image of the same file. The child checks
//! that its executable is that same file before it turns an offset back into a function; a
//! forkserver child runs the same bootstrap (`run_child`) on the socket its server gives it.
//!
//! This file is the same in every demo crate that starts processes, so that each crate can be
//! copied out alone; a test in the xtask checks that the copies stay identical.

#![allow(dead_code)] // Each demo uses its own part of this file.

use std::ffi::{CString, OsStr, OsString, c_char};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::OnceLock;

use nix::sys::prctl;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, getsockopt, socketpair, sockopt};
use nix::unistd::{Pid, getpid, getppid};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fds::{self, Message, Outgoing};
use crate::forkserver;
use crate::process::{self, Process, StartMethod, Started};

/// The first argument of a spawned child, as in Python.
pub const FLAG: &str = "--multiprocessing-fork";
/// The descriptor on which a spawned child finds its socket.
const SOCKET_FD: RawFd = 3;
const MAGIC: [u8; 8] = *b"mp-start";
const VERSION: u32 = 1;
const NAME: &str = env!("CARGO_PKG_NAME");

/// Python's `multiprocessing.get_context(method)`: it makes processes that start by `method`.
pub fn get_context(method: StartMethod) -> Context {
    Context { method }
}

/// A start method, as Python's context objects are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

impl Context {
    /// The method this context's processes start by.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// Python's `ctx.Process(target=f, args=(x,))`. The target is a plain function, so that a
    /// spawned or forkserver child can find it in its own image; its arguments are serde values
    /// (descriptor fields with `#[serde(with = "fds")]`), encoded at `start`. Under fork they
    /// move into the child as they are, so one program can switch methods by a flag. Processes
    /// are named as Python names them: `ForkProcess-1`, `SpawnProcess-2`, `ForkServerProcess-3`.
    pub fn process<A>(&self, target: fn(A), args: A) -> Process
    where
        A: Serialize + DeserializeOwned + 'static,
    {
        match self.method {
            StartMethod::Fork => Process::launch("ForkProcess", move || {
                process::forked(move || {
                    target(args);
                    0
                })
            }),
            StartMethod::Spawn => {
                Process::launch("SpawnProcess", move || spawn(&Task::new(target, &args)?))
            }
            StartMethod::Forkserver => Process::launch("ForkServerProcess", move || {
                forkserver::start(&Task::new(target, &args)?)
            }),
        }
    }
}

/// The executable's identity: which file (device, inode), and which contents of it (size,
/// mtime and ctime, seconds and nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity([u64; 7]);

impl Identity {
    fn of_this_executable() -> io::Result<Identity> {
        let m = std::fs::metadata("/proc/self/exe")?;
        let (mtime, ctime) = (m.mtime() as u64, m.ctime() as u64);
        let (mtime_ns, ctime_ns) = (m.mtime_nsec() as u64, m.ctime_nsec() as u64);
        Ok(Identity([
            m.dev(),
            m.ino(),
            m.size(),
            mtime,
            mtime_ns,
            ctime,
            ctime_ns,
        ]))
    }
}

/// This image's identity, taken once by `run_if_spawned`.
static IDENTITY: OnceLock<Result<Identity, String>> = OnceLock::new();

fn identity() -> io::Result<Identity> {
    match IDENTITY.get() {
        Some(Ok(identity)) => Ok(*identity),
        Some(Err(e)) => Err(io::Error::other(e.clone())),
        None => Err(io::Error::other(
            "the spawn and forkserver start methods need spawn::run_if_spawned() to be called \
             first thing in main",
        )),
    }
}

/// Call first thing in `main`: Python's `if __name__ == "__main__":` guard. In a spawned child
/// it runs the target it was sent and exits (0; 1 if the target panicked; 2 if the bootstrap
/// failed, with one line on stderr); in any other run it notes this executable's identity and
/// returns at once. A hand-typed `--multiprocessing-fork` is refused: one line, exit code 2.
pub fn run_if_spawned() {
    IDENTITY.get_or_init(|| {
        Identity::of_this_executable().map_err(|e| format!("cannot stat /proc/self/exe: {e}"))
    });
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(FLAG)) {
        return;
    }
    let socket = inherited_socket(args).unwrap_or_else(|why| {
        eprintln!("{NAME}: {FLAG} is only for a child that this program starts itself ({why})");
        // `exit`, not `_exit`: this is a fresh image at the start of `main`, not a fork, so no
        // other thread exists whose lock `exit` could find held.
        std::process::exit(2)
    });
    let code = run_child(socket);
    process::exit_now(code)
}

/// The socket a spawned child was given, once it is sure that its parent gave it: a Unix
/// socket whose peer is the parent. Then the child dies with its parent, as a forked one does.
fn inherited_socket(mut args: impl Iterator<Item = OsString>) -> Result<OwnedFd, String> {
    let (Some(arg), None) = (args.next(), args.next()) else {
        return Err("it takes one argument, a descriptor".into());
    };
    let fd = arg
        .to_str()
        .and_then(|s| s.parse::<RawFd>().ok())
        .filter(|&fd| fd > 2)
        .ok_or_else(|| format!("{arg:?} is not a descriptor number"))?;
    // SAFETY: fcntl(F_GETFD) only asks whether `fd` is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!("descriptor {fd} is not open"));
    }
    // SAFETY: `fd` is open, and at the start of main nothing in this program owns a
    // descriptor above 2 yet: the parent put it there for us.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let peer = getsockopt(&socket, sockopt::PeerCredentials)
        .map_err(|e| format!("descriptor {fd} is not a Unix socket: {e}"))?;
    // Set before the check, so that no moment is left where the parent could die unnoticed.
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| e.to_string())?;
    if peer.pid() != getppid().as_raw() {
        // The parent died while this child was starting: die as its death signal would have.
        if kill(Pid::from_raw(peer.pid()), None) == Err(nix::Error::ESRCH) {
            let _ = kill(getpid(), Signal::SIGKILL);
        }
        return Err(format!(
            "the socket's peer is not this process's parent, {}",
            getppid()
        ));
    }
    // Named after the program, not after /proc/self/exe, in `ps` and `top`.
    if let Some(name) = std::env::args_os().next() {
        let name = Path::new(&name).file_name().unwrap_or_default().as_bytes();
        if let Ok(name) = CString::new(name) {
            let _ = prctl::set_name(&name);
        }
    }
    Ok(socket)
}

/// The bootstrap of a spawned or forkserver child: reads the task from `socket`, checks it
/// comes from an image of this same file, runs it. Returns the exit code. Not public: whoever
/// can hand it a socket can make it follow any offset whose identity check passes, and only the
/// bootstrap knows where its socket comes from.
pub(crate) fn run_child(socket: OwnedFd) -> i32 {
    let task = match receive(socket.as_fd()) {
        Ok(task) => task,
        Err(e) => {
            eprintln!("{NAME}: a child process could not start its target: {e}");
            return 2;
        }
    };
    drop(socket);
    match panic::catch_unwind(AssertUnwindSafe(|| task.run())) {
        Ok(Ok(_)) => 0,
        Ok(Err(e)) => {
            eprintln!("{NAME}: a child process could not read its target's arguments: {e}");
            2
        }
        // The panic hook has printed the message on stderr, as under fork.
        Err(_) => 1,
    }
}

/// Starts `task` in a new image of this executable: Python's spawn.
pub fn spawn(task: &Task) -> io::Result<Started> {
    // Before anything starts: without `run_if_spawned` in main, the child would run main.
    let mut bootstrap = Bootstrap::new(task)?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    bootstrap.send_now(ours.as_fd())?;
    let started = Started::child(spawn_this_program(theirs.as_fd())?)?;
    drop(theirs);
    bootstrap.finish(ours.as_fd(), started)
}

/// What a child's socket carries, on its way out: header, identity and task.
pub(crate) struct Bootstrap<'a> {
    out: Outgoing<'a>,
}

impl<'a> Bootstrap<'a> {
    /// The bootstrap of `task`. An error if `run_if_spawned` has not run.
    pub fn new(task: &'a Task) -> io::Result<Bootstrap<'a>> {
        let mut header = Vec::with_capacity(HEADER + 16);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        identity()?
            .0
            .iter()
            .for_each(|n| header.extend(n.to_le_bytes()));
        header.extend_from_slice(&task.trampoline.to_le_bytes());
        header.extend_from_slice(&task.target.to_le_bytes());
        Ok(Bootstrap {
            out: Outgoing::new(&header, &task.args),
        })
    }

    /// Writes what the socket takes now, before the child exists: most bootstraps fit in a
    /// socket's buffer, and are then there as soon as the child looks.
    pub fn send_now(&mut self, socket: BorrowedFd) -> io::Result<bool> {
        self.out.send_now(socket)
    }

    /// Writes the rest for the child just `started`; if that fails, kills it.
    pub fn finish(mut self, socket: BorrowedFd, started: Started) -> io::Result<Started> {
        match self.out.send_rest(socket) {
            Ok(()) => Ok(started),
            // The child ended before it read everything: how it ended (its exit code, its
            // line on stderr) says why.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(started)
            }
            Err(e) => {
                started.abandon();
                Err(e)
            }
        }
    }
}

/// Magic, version and identity.
const HEADER: usize = 8 + 4 + 7 * 8;

fn receive(socket: BorrowedFd) -> io::Result<Task> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut header = [0u8; HEADER + 16];
    // Nothing of the message is read (nor its length believed) before the checks.
    let incoming = fds::recv_head(socket, &mut header)?;
    if header[..8] != MAGIC || header[8..12] != VERSION.to_le_bytes() {
        return Err(bad(
            "its socket did not start with this program's bootstrap".into(),
        ));
    }
    let mut theirs = [0u64; 7];
    for (n, bytes) in theirs.iter_mut().zip(header[12..HEADER].chunks(8)) {
        *n = u64::from_le_bytes(bytes.try_into().unwrap());
    }
    let ours = identity()?;
    if Identity(theirs) != ours {
        return Err(bad(format!(
            "its parent runs another executable file, or another build of it ({theirs:?}, \
             here {:?}): no function of the parent can be found here",
            ours.0
        )));
    }
    // The parent runs this very file (identities equal): its offsets are sound to follow.
    Ok(Task::from_parts(
        &header[HEADER..],
        incoming.recv_body(socket)?,
    ))
}

/// Starts `/proc/self/exe --multiprocessing-fork 3` with `socket` as its descriptor 3 and no
/// other descriptor but stdio. `posix_spawn` (a vfork) is much cheaper than fork for a large
/// parent, and the child sets its own parent-death signal (`inherited_socket`).
fn spawn_this_program(socket: BorrowedFd) -> io::Result<i32> {
    // dup2 onto the same number would leave close-on-exec set.
    let moved;
    let socket = if socket.as_raw_fd() == SOCKET_FD {
        moved = socket.try_clone_to_owned()?;
        moved.as_fd()
    } else {
        socket
    };
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| "/proc/self/exe".into());
    let argv0 = CString::new(argv0.as_bytes()).map_err(io::Error::other)?;
    let fd = CString::new(SOCKET_FD.to_string()).map_err(io::Error::other)?;
    let flag = CString::new(FLAG).map_err(io::Error::other)?;
    let argv = [argv0.as_ptr(), flag.as_ptr(), fd.as_ptr(), std::ptr::null()];
    unsafe extern "C" {
        static environ: *const *const c_char;
    }
    let (mut actions, mut attr) = (MaybeUninit::uninit(), MaybeUninit::uninit());
    let mut empty = MaybeUninit::uninit();
    let mut pid = 0;
    // SAFETY: the file actions and attributes are initialised before use and destroyed after;
    // every pointer handed to posix_spawn (path, argv, the environment) stays valid during the
    // call, and the child it makes only applies the actions and execs. Each call returns 0 or
    // an errno, and the first error skips the rest.
    let errno = unsafe {
        let (a, at) = (actions.as_mut_ptr(), attr.as_mut_ptr());
        let init = [
            libc::posix_spawn_file_actions_init(a),
            libc::posix_spawnattr_init(at),
        ];
        libc::sigemptyset(empty.as_mut_ptr());
        let mut e = init[0].max(init[1]);
        if e == 0 {
            e = libc::posix_spawn_file_actions_adddup2(a, socket.as_raw_fd(), SOCKET_FD);
        }
        if e == 0 {
            e = libc::posix_spawn_file_actions_addclosefrom_np(a, SOCKET_FD + 1);
        }
        if e == 0 {
            // The child's signal mask starts empty, whatever this thread blocks.
            e = libc::posix_spawnattr_setsigmask(at, empty.as_ptr());
        }
        if e == 0 {
            e = libc::posix_spawnattr_setflags(at, libc::POSIX_SPAWN_SETSIGMASK as _);
        }
        if e == 0 {
            let (path, argv) = (c"/proc/self/exe".as_ptr(), argv.as_ptr().cast());
            e = libc::posix_spawn(&mut pid, path, a, at, argv, environ.cast());
        }
        if init[0] == 0 {
            libc::posix_spawn_file_actions_destroy(a);
        }
        if init[1] == 0 {
            libc::posix_spawnattr_destroy(at);
        }
        e
    };
    match errno {
        0 => Ok(pid),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// The fixed point of this file that function offsets are measured from.
#[inline(never)]
fn anchor() {}

/// The distance of a function of this executable from `anchor`, the same in every image of
/// the file. A function of a shared library (a Rust dylib, with `-C prefer-dynamic`) lies in a
/// mapping placed apart from the executable's: its distance would mean nothing in another
/// image, and is refused.
fn offset_of(address: usize) -> io::Result<u64> {
    if !in_this_file(address) {
        let why = "a spawned call must be a function of the executable itself, not of a shared \
                   library: another image finds it by its distance from a function of the file";
        return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    }
    Ok(address.wrapping_sub(anchor as fn() as usize) as u64)
}

/// Whether `address` lies in a mapping of the executable's own file (the file that holds
/// `anchor`), as `/proc/self/maps` lists them, read once.
pub(crate) fn in_this_file(address: usize) -> bool {
    static RANGES: OnceLock<Vec<(usize, usize)>> = OnceLock::new();
    let ranges = RANGES.get_or_init(|| {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        // start-end perms offset dev inode path
        let mappings: Vec<(usize, usize, &str)> = maps
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (start, end) = fields.next()?.split_once('-')?;
                let path = fields.nth(4).unwrap_or("");
                let hex = |s| usize::from_str_radix(s, 16).ok();
                Some((hex(start)?, hex(end)?, path))
            })
            .collect();
        let anchor = anchor as fn() as usize;
        let file = mappings
            .iter()
            .find(|(start, end, _)| (*start..*end).contains(&anchor))
            .map(|m| m.2)
            .filter(|path| !path.is_empty());
        mappings
            .iter()
            .filter(|m| Some(m.2) == file)
            .map(|m| (m.0, m.1))
            .collect()
    });
    ranges
        .iter()
        .any(|(start, end)| (*start..*end).contains(&address))
}

/// The function `offset` bytes from `anchor` in this image, as an `F` (a `fn` pointer type).
/// Only for a `Task`'s offsets.
fn function_at<F: Copy>(offset: u64) -> F {
    const { assert!(size_of::<F>() == size_of::<usize>()) };
    let address = (anchor as fn() as usize).wrapping_add(offset as usize);
    // SAFETY: a Task's offsets were taken by `Task::new` from a `target: fn(A) -> R` and from
    // `trampoline::<A, R>` (whose type is `Trampoline`), in an image of this executable: this
    // process, a fork of it, or a process running the very same file, which `receive` checks
    // by the identity of /proc/self/exe (the child is started from /proc/self/exe, never from
    // a path that may have been replaced) before `Task::recv` is called. The same file has
    // the same code at the same distance from `anchor`, so `address` is that function here,
    // and `F` is its type: `Trampoline` for the trampoline, `fn(A) -> R` for the target, with
    // the same `A, R` that the trampoline was monomorphised for.
    unsafe { std::mem::transmute_copy::<usize, F>(&address) }
}

type Trampoline = fn(u64, Message) -> io::Result<Message>;

/// Decodes the arguments, calls the target and encodes what it returns.
fn trampoline<A: DeserializeOwned, R: Serialize>(
    target: u64,
    args: Message,
) -> io::Result<Message> {
    let target: fn(A) -> R = function_at(target);
    let args: A = fds::decode(args)?;
    fds::encode(&target(args))
}

/// A call of a function of this executable on its arguments, that any image of the same file
/// can make: the child bootstrap's target, or a process pool's task. Only `new` and the
/// `unsafe` `recv` make one, so its offsets are always sound to follow.
#[derive(Debug)]
pub struct Task {
    trampoline: u64,
    target: u64,
    args: Message,
}

impl Task {
    /// The call `target(args)`, with `args` encoded now (their descriptors duplicated).
    pub fn new<A, R>(target: fn(A) -> R, args: &A) -> io::Result<Task>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize,
    {
        Ok(Task {
            trampoline: offset_of(trampoline::<A, R> as Trampoline as usize)?,
            target: offset_of(target as usize)?,
            args: fds::encode(args)?,
        })
    }

    /// Writes the task on a stream socket (descriptors by `SCM_RIGHTS`).
    pub fn send(&self, socket: BorrowedFd) -> io::Result<()> {
        let mut offsets = [0u8; 16];
        offsets[..8].copy_from_slice(&self.trampoline.to_le_bytes());
        offsets[8..].copy_from_slice(&self.target.to_le_bytes());
        Outgoing::new(&offsets, &self.args).send_rest(socket)
    }

    /// Reads a task that `send` wrote.
    ///
    /// # Safety
    ///
    /// The writer must run this same executable file: this process, a process forked from it,
    /// or one whose identity was checked (as the child bootstrap does). `run` follows the
    /// task's offsets as functions of this file.
    pub unsafe fn recv(socket: BorrowedFd) -> io::Result<Task> {
        let mut offsets = [0u8; 16];
        let args = fds::recv_message_after(socket, &mut offsets)?;
        Ok(Task::from_parts(&offsets, args))
    }

    /// Only for offsets from an image of this same file (see `function_at`).
    fn from_parts(offsets: &[u8], args: Message) -> Task {
        Task {
            trampoline: u64::from_le_bytes(offsets[..8].try_into().unwrap()),
            target: u64::from_le_bytes(offsets[8..16].try_into().unwrap()),
            args,
        }
    }

    /// Makes the call; returns what the target returned, encoded. A panic of the target goes
    /// on up.
    pub fn run(self) -> io::Result<Message> {
        let trampoline: Trampoline = function_at(self.trampoline);
        trampoline(self.target, self.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(n: u64) -> u64 {
        n * 2
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        let flags = SockFlag::SOCK_CLOEXEC;
        socketpair(AddressFamily::Unix, SockType::Stream, None, flags).unwrap()
    }

    #[test]
    fn a_task_crosses_a_socket_and_runs() {
        let (a, b) = pair();
        Task::new(double, &21).unwrap().send(a.as_fd()).unwrap();
        // SAFETY: this process wrote it.
        let task = unsafe { Task::recv(b.as_fd()) }.unwrap();
        let result: u64 = fds::decode(task.run().unwrap()).unwrap();
        assert_eq!(result, 42);
    }

    /// The exact check a child makes before it follows any offset: a bootstrap from another
    /// executable (here, another identity) is refused.
    #[test]
    fn a_bootstrap_from_another_executable_is_refused() {
        IDENTITY.get_or_init(|| Ok(Identity::of_this_executable().unwrap()));
        for tamper in [12, 20, 28, 36, 60] {
            let (a, b) = pair();
            let task = Task::new(double, &1).unwrap();
            let mut bootstrap = Bootstrap::new(&task).unwrap();
            bootstrap.out.head[tamper] ^= 1;
            assert!(bootstrap.send_now(a.as_fd()).unwrap());
            let err = receive(b.as_fd()).unwrap_err();
            assert!(err.to_string().contains("another executable"), "{err}");
        }
        let (a, b) = pair();
        fds::send_all(a.as_fd(), &[0; HEADER + 16 + 12]).unwrap();
        let err = receive(b.as_fd()).unwrap_err();
        assert!(err.to_string().contains("bootstrap"), "{err}");
    }
    /// Only the executable's own functions have a distance from `anchor` that another image
    /// shares: one of the C library (a shared library) is not taken for one of them.
    #[test]
    fn only_functions_of_the_executable_are_followed() {
        assert!(in_this_file(double as fn(u64) -> u64 as usize));
        assert!(!in_this_file(
            libc::getpid as unsafe extern "C" fn() -> libc::pid_t as usize
        ));
        assert!(offset_of(libc::abort as unsafe extern "C" fn() -> ! as usize).is_err());
    }
}
