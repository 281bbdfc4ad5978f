//! The forkserver start method: one server per program forks every child.
//!
//! Forking a program that has threads can leave the child stuck on a lock that another thread
//! held at the fork; spawning is safe but pays a whole exec. So, as Python's forkserver does,
//! the first use spawns a server, a fresh image of this program with a single thread, and each
//! child is then forked from that server: as cheap as a fork, as clean as a spawn.
//!
//! - The server is spawned (through the bootstrap of `spawn.rs`, with `serve` as its target)
//!   from a keeper thread that lives as long as the program: the parent-death signal fires
//!   when the *thread* that started a process exits. The keeper also reaps the server.
//! - To start a child, the program sends the server a request carrying two descriptors
//!   (`SCM_RIGHTS`): the child's end of a bootstrap socket and the server's end of a status
//!   socket. The server forks; the child runs the same bootstrap as a spawned child on its
//!   socket; the server answers with the child's pid and a pidfd of it, reaps it when it ends
//!   and writes its exit status on the status socket.
//! - Children die with the server, the server with the keeper thread: no process outlives the
//!   program. At a normal exit the server is stopped and reaped before the program ends.
//!
//! This file is the same in every demo crate that starts processes, so that each crate can be
//! copied out alone; a test in the xtask checks that the copies stay identical.

#![allow(dead_code)] // Each demo uses its own part of this file.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Mutex, PoisonError, TryLockError};
use std::time::Duration;

use nix::cmsg_space;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, recvmsg, sendmsg, socketpair,
};
use nix::sys::wait::waitpid;
use nix::unistd::{Pid, getpid};
use serde::{Deserialize, Serialize};

use crate::fds::{received_fds, send_all};
use crate::process::{self, Process, Started};
use crate::spawn::{self, Bootstrap, Task};

/// Starts `task` in a child forked by this program's forkserver, which is started first if
/// need be (and again if it has died).
pub fn start(task: &Task) -> io::Result<Started> {
    let mut bootstrap = Bootstrap::new(task)?;
    let (boot, boot_child) = pair(SockType::Stream)?;
    let (status, status_server) = pair(SockType::Stream)?;
    // Written before the request, the bootstrap waits for the child: it need not wait for us.
    bootstrap.send_now(boot.as_fd())?;
    let (pid, pidfd) = request(&[boot_child.as_raw_fd(), status_server.as_raw_fd()])?;
    drop((boot_child, status_server));
    bootstrap.finish(boot.as_fd(), Started::reported(pid, pidfd, status))
}

/// Stops this program's forkserver, if it has one, and waits (5 s at most) until the keeper
/// has reaped it. Runs at exit (`atexit`), so that a program leaves no process behind.
pub fn stop() {
    let mut state = match STATE.try_lock() {
        Ok(state) => state,
        Err(TryLockError::Poisoned(state)) => state.into_inner(),
        // Another thread is starting a child at exit: the parent-death signal will do.
        Err(TryLockError::WouldBlock) => return,
    };
    let Some(state) = state.as_mut().filter(|s| s.owner == getpid()) else {
        return;
    };
    let Some(server) = state.server.take() else {
        return;
    };
    let _ = sendmsg::<()>(
        server.requests.as_raw_fd(),
        &[IoSlice::new(b"q")],
        &[],
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
    drop(server.requests);
    while let Ok(pid) = state.reaped.recv_timeout(Duration::from_secs(5)) {
        if pid == server.pid {
            break;
        }
    }
}

extern "C" fn stop_at_exit() {
    let _ = std::panic::catch_unwind(stop);
}

/// The program's side of its forkserver.
struct State {
    /// The process that made this state: a forked copy of it has no keeper thread (only the
    /// forking thread is copied) and must not share the server's socket, so it starts its own.
    owner: Pid,
    keeper: Keeper,
    /// The pids of servers the keeper has reaped.
    reaped: Receiver<i32>,
    server: Option<Server>,
}

struct Server {
    requests: OwnedFd,
    pid: i32,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Where the keeper answers a request for a server.
type Reply = SyncSender<io::Result<Server>>;
/// Where to ask the keeper for a server.
type Keeper = Sender<Reply>;

/// Asks the server to fork a child with these two descriptors; returns its pid and pidfd.
fn request(fds: &[RawFd]) -> io::Result<(i32, OwnedFd)> {
    let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    let me = getpid();
    if state.as_ref().is_none_or(|s| s.owner != me) {
        let (keeper, reaped) = start_keeper()?;
        *state = Some(State {
            owner: me,
            keeper,
            reaped,
            server: None,
        });
        // SAFETY: registers a function for `exit` to call; it cannot unwind.
        unsafe { libc::atexit(stop_at_exit) };
    }
    let state = state.as_mut().expect("set above");
    for attempt in 1..=2 {
        if state.server.is_none() {
            state.server = Some(new_server(&state.keeper)?);
        }
        let server = state.server.as_ref().expect("set above");
        match exchange(server.requests.as_fd(), fds) {
            Ok(answer) => return Ok(answer),
            // The server has died (killed, say): start another, once.
            Err(e) if is_gone(&e) => {
                state.server = None;
                if attempt == 2 {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the second attempt returns")
}

fn is_gone(e: &io::Error) -> bool {
    use io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    matches!(e.kind(), BrokenPipe | ConnectionReset | UnexpectedEof)
}

/// One request and its answer: one byte and two descriptors out, a pid (or minus an errno)
/// and a pidfd back. A dead server ends both with an error (EPIPE, EOF).
fn exchange(requests: BorrowedFd, fds: &[RawFd]) -> io::Result<(i32, OwnedFd)> {
    let rights = [ControlMessage::ScmRights(fds)];
    let (raw, flags) = (requests.as_raw_fd(), MsgFlags::MSG_NOSIGNAL);
    while let Err(e) = sendmsg::<()>(raw, &[IoSlice::new(b"f")], &rights, flags, None) {
        if e != nix::Error::EINTR {
            return Err(e.into());
        }
    }
    let mut answer = [0u8; 4];
    let mut space = cmsg_space!(RawFd);
    let (got, mut fds) = loop {
        let mut iov = [IoSliceMut::new(&mut answer)];
        let flags = MsgFlags::MSG_CMSG_CLOEXEC;
        match recvmsg::<()>(raw, &mut iov, Some(&mut space), flags) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(msg) => break (msg.bytes, received_fds(&msg)?),
        }
    };
    if got == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the forkserver has ended",
        ));
    }
    match (i32::from_le_bytes(answer), fds.pop()) {
        (pid, Some(pidfd)) if pid > 0 => Ok((pid, pidfd)),
        (errno, _) if errno < 0 => Err(io::Error::from_raw_os_error(-errno)),
        _ => Err(io::Error::other("the forkserver answered without a pidfd")),
    }
}

/// Starts the keeper thread; returns where to ask it for a server and where it tells which
/// servers it has reaped.
fn start_keeper() -> io::Result<(Keeper, Receiver<i32>)> {
    let (ask, asks) = mpsc::channel();
    let (tell, reaped) = mpsc::channel();
    std::thread::Builder::new()
        .name("forkserver-keeper".into())
        .spawn(move || keep(asks, tell))?;
    Ok((ask, reaped))
}

/// The keeper thread: starts each server and reaps it when it ends. It never returns while
/// the program runs, so the servers' parent-death signal fires only when the program ends.
fn keep(asks: Receiver<Reply>, reaped: Sender<i32>) {
    for reply in asks {
        match start_server() {
            Err(e) => drop(reply.send(Err(e))),
            Ok((server, pid)) => {
                let _ = reply.send(Ok(server));
                // Ends when the server ends: when the program stops it or drops its end of
                // the requests socket, or when someone kills it.
                while let Err(nix::Error::EINTR) = waitpid(Pid::from_raw(pid), None) {}
                let _ = reaped.send(pid);
            }
        }
    }
}

fn new_server(keeper: &Keeper) -> io::Result<Server> {
    let gone = || io::Error::other("the forkserver's keeper thread has ended");
    let (reply, answer) = mpsc::sync_channel(1);
    keeper.send(reply).map_err(|_| gone())?;
    // The keeper answers as soon as the server is spawned (or drops `reply` if it panics).
    answer.recv().map_err(|_| gone())?
}

fn start_server() -> io::Result<(Server, i32)> {
    let (ours, theirs) = pair(SockType::SeqPacket)?;
    let task = Task::new(serve, &ServerArgs { requests: theirs })?;
    let pid = spawn::spawn(&task)?.pid();
    Ok((
        Server {
            requests: ours,
            pid,
        },
        pid,
    ))
}

fn pair(kind: SockType) -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = SockFlag::SOCK_CLOEXEC;
    Ok(socketpair(AddressFamily::Unix, kind, None, flags)?)
}

/// The server's argument: its end of the requests socket.
#[derive(Serialize, Deserialize)]
struct ServerArgs {
    #[serde(with = "crate::fds")]
    requests: OwnedFd,
}

/// The server: forks a child for each request, and reports each child's end on its status
/// socket. Runs until the program asks it to stop or closes its end of the socket.
fn serve(args: ServerArgs) {
    // Ctrl-C reaches the whole process group. The program decides what it means for itself,
    // the children get it as usual (`child_main`), and the server ends with the program.
    // SAFETY: SIG_IGN installs no handler code.
    let _ = unsafe { signal(Signal::SIGINT, SigHandler::SigIgn) };
    let requests = args.requests;
    let mut children: Vec<(Process, OwnedFd)> = Vec::new();
    loop {
        // Ends when a request comes, a child ends, or the program closes its end; the server
        // dies with the program in any case (its parent-death signal).
        let mut fds = vec![PollFd::new(requests.as_fd(), PollFlags::POLLIN)];
        for (child, _) in &children {
            let sentinel = child.sentinel().expect("a started child");
            fds.push(PollFd::new(sentinel, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let request = ready(&fds[0]);
        let ended: Vec<usize> = (1..fds.len()).filter(|&i| ready(&fds[i])).collect();
        drop(fds);
        // Highest first, so that `swap_remove` moves only children already looked at.
        for i in ended.into_iter().rev() {
            let (mut child, status) = children.swap_remove(i - 1);
            if let Ok(code) = child.join() {
                // The program may have dropped its Process already: nobody to tell.
                let _ = send_all(status.as_fd(), &code.to_le_bytes());
            }
        }
        if request {
            match serve_one(requests.as_fd()) {
                Some(Some(child)) => children.push(child),
                Some(None) => {}
                // Children still running are killed and reaped as `children` drops.
                None => return,
            }
        }
    }
}

/// Reads one request and forks its child. `None` when the program has asked the server to
/// stop or has closed its end; `Some(None)` when this request failed (and was answered so).
fn serve_one(requests: BorrowedFd) -> Option<Option<(Process, OwnedFd)>> {
    let mut byte = [0u8; 1];
    let mut space = cmsg_space!([RawFd; 2]);
    let (got, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        let flags = MsgFlags::MSG_CMSG_CLOEXEC;
        match recvmsg::<()>(requests.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Err(nix::Error::EINTR) => continue,
            Err(_) => return None,
            Ok(msg) => break (msg.bytes, received_fds(&msg)),
        }
    };
    if got == 0 || byte[0] == b'q' {
        return None;
    }
    let answer = |value: i32, pidfd: Option<BorrowedFd>| {
        // No allocation: after a fork, each page the server writes is copied.
        let raw = pidfd.map(|fd| fd.as_raw_fd());
        let raw = raw.as_slice();
        let rights = [ControlMessage::ScmRights(raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
        let bytes = value.to_le_bytes();
        let iov = [IoSlice::new(&bytes)];
        let flags = MsgFlags::MSG_NOSIGNAL;
        sendmsg::<()>(requests.as_raw_fd(), &iov, cmsgs, flags, None).is_ok()
    };
    let Ok(Ok([boot, status])) = fds.map(<[OwnedFd; 2]>::try_from) else {
        answer(-libc::EINVAL, None);
        return Some(None);
    };
    let mut child = Process::launch("ForkServerChild", move || {
        process::forked(move || child_main(boot))
    });
    if let Err(e) = child.start() {
        answer(-e.raw_os_error().unwrap_or(libc::EIO), None);
        return Some(None);
    }
    // If the program cannot hear the answer, `child` drops here: killed and reaped.
    let pid = child.pid().expect("started");
    Some(answer(pid, child.sentinel()).then_some((child, status)))
}

/// In a child the server has just forked: keeps only stdio and its bootstrap socket (as
/// descriptor 3), and runs the same bootstrap as a spawned child.
fn child_main(boot: OwnedFd) -> i32 {
    // SAFETY: SIG_DFL installs no handler code.
    let _ = unsafe { signal(Signal::SIGINT, SigHandler::SigDfl) };
    let raw = boot.into_raw_fd();
    // SAFETY: dup2 and close_range change only this process's descriptor table. The server's
    // descriptors they close belong to values in the server's memory that this child, which
    // ends with `_exit`, never uses nor drops.
    let boot = unsafe {
        if raw != 3 && libc::dup2(raw, 3) < 0 {
            return 2;
        }
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
        OwnedFd::from_raw_fd(3)
    };
    spawn::run_child(boot)
}
