//! Process start+join under each start method, ours against the bare OS mechanism.
//!
//! Its rows in the table of `cargo xtask bench`, in this order:
//!
//! | id | row |
//! |---|---|
//! | `process.fork` | process start+join, fork |
//! | `process.spawn` | process start+join, spawn |
//! | `process.forkserver` | process start+join, forkserver |
//!
//! Prints `bench<TAB>id<TAB>who<TAB>median<TAB>unit` lines for `cargo xtask bench`.
//! Run with: `cargo run --release -p demo-process --example bench_process` (`BENCH_QUICK=1` for fewer repeats)
//!
//! The bare costs: fork + waitpid; an exec of this binary that exits at once; and for the
//! forkserver, a server that gets a request with a descriptor, forks a child that exits at
//! once, and sends back a pidfd of it (one fork in a server plus the descriptor passing). That
//! server is this binary run again, as ours is: a fresh image forks at its own cost (its page
//! tables), which a copy forked from this process early would not show.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Instant;

use demo_process::{StartMethod, get_context, run_if_spawned};
use nix::cmsg_space;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, Shutdown, SockFlag, SockType,
    recvmsg, sendmsg, shutdown, socketpair,
};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};

fn noop(_: ()) {}

/// The median times of `f` and of `g` in microseconds over `n` runs each, taken in turns, so
/// that the machine's drift (it is shared) weighs on both alike.
fn medians_us(n: usize, mut f: impl FnMut(), mut g: impl FnMut()) -> (f64, f64) {
    let time = |h: &mut dyn FnMut()| {
        let start = Instant::now();
        h();
        start.elapsed().as_secs_f64() * 1e6
    };
    let (mut fs, mut gs): (Vec<f64>, Vec<f64>) =
        (0..n).map(|_| (time(&mut f), time(&mut g))).unzip();
    fs.sort_by(f64::total_cmp);
    gs.sort_by(f64::total_cmp);
    (fs[n / 2], gs[n / 2])
}

fn report(id: &str, who: &str, value: f64, unit: &str) {
    println!("bench\t{id}\t{who}\t{value:.3}\t{unit}");
}

fn main() {
    run_if_spawned();
    match std::env::args_os().nth(1).as_ref().and_then(|a| a.to_str()) {
        Some("--exit-now") => return,
        Some("--bare-server") => {
            // SAFETY: fcntl(F_GETFD) only asks whether descriptor 3 is open.
            if unsafe { libc::fcntl(3, libc::F_GETFD) } < 0 {
                eprintln!("bench_process: --bare-server is only for the server this bench starts");
                std::process::exit(2);
            }
            // SAFETY: descriptor 3 is open, and at the start of main nothing in this program
            // owns a descriptor above 2: `BareServer::start` put the server's socket there.
            return serve(unsafe { OwnedFd::from_raw_fd(3) });
        }
        _ => {}
    }
    let n = if std::env::var_os("BENCH_QUICK").is_some() {
        100
    } else {
        1000
    };
    let bare_server = BareServer::start();

    let ours = |method| {
        move || {
            let mut p = get_context(method).process(noop, ());
            p.start().unwrap();
            assert_eq!(p.join().unwrap(), 0);
        }
    };
    let (fork_ours, fork_bare) = medians_us(n, ours(StartMethod::Fork), || {
        // SAFETY: the child calls only `_exit`, which is async-signal-safe.
        match unsafe { fork() }.unwrap() {
            ForkResult::Parent { child } => drop(waitpid(child, None).unwrap()),
            // SAFETY: `_exit` ends the child at once; it is always sound to call.
            ForkResult::Child => unsafe { libc::_exit(0) },
        }
    });
    report("process.fork", "ours", fork_ours, "us");
    report("process.fork", "limit", fork_bare, "us");

    let exe = std::env::current_exe().unwrap();
    let (spawn_ours, spawn_bare) = medians_us(n / 5, ours(StartMethod::Spawn), || {
        Command::new(&exe).arg("--exit-now").status().unwrap();
    });
    report("process.spawn", "ours", spawn_ours / 1000.0, "ms");
    report("process.spawn", "limit", spawn_bare / 1000.0, "ms");

    // The first start also starts our server: measured apart from the rest.
    ours(StartMethod::Forkserver)();
    let (forkserver_ours, forkserver_bare) = medians_us(n, ours(StartMethod::Forkserver), || {
        bare_server.start_join()
    });
    report("process.forkserver", "ours", forkserver_ours, "us");
    report("process.forkserver", "limit", forkserver_bare, "us");
}

/// The bare mechanism of a forkserver: one request with a descriptor, one fork in the server,
/// one pidfd back, and a wait on it.
struct BareServer {
    socket: OwnedFd,
    server: Child,
}

impl Drop for BareServer {
    /// Ends the server (EOF on its socket) and reaps it.
    fn drop(&mut self) {
        let _ = shutdown(self.socket.as_raw_fd(), Shutdown::Both);
        let _ = self.server.wait();
    }
}

impl BareServer {
    fn start() -> BareServer {
        let flags = SockFlag::SOCK_CLOEXEC;
        let (ours, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags).unwrap();
        let mut server = Command::new(std::env::current_exe().unwrap());
        server.arg("--bare-server");
        let fd = theirs.as_raw_fd();
        // SAFETY: dup2 and fcntl in the forked child, before exec, are async-signal-safe.
        unsafe {
            server.pre_exec(move || {
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
        BareServer {
            socket: ours,
            server: server.spawn().unwrap(),
        }
    }

    fn start_join(&self) {
        // A descriptor travels with the request, as ours sends the child's sockets.
        let raw = [self.socket.as_raw_fd()];
        let rights = [ControlMessage::ScmRights(&raw)];
        let fd = self.socket.as_raw_fd();
        sendmsg::<()>(fd, &[IoSlice::new(b"f")], &rights, MsgFlags::empty(), None).unwrap();
        let pidfd = receive_fd(fd);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(60_000u16)).unwrap();
    }
}

fn serve(socket: OwnedFd) {
    let fd = socket.as_raw_fd();
    loop {
        let Some(request) = receive(fd) else { return };
        drop(request);
        // SAFETY: the server has a single thread; the child calls only `_exit`.
        let child = match unsafe { fork() }.unwrap() {
            ForkResult::Parent { child } => child,
            // SAFETY: `_exit` ends the child at once; it is always sound to call.
            ForkResult::Child => unsafe { libc::_exit(0) },
        };
        // SAFETY: pidfd_open takes a pid and flags; the child is not reaped yet.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) } as RawFd;
        let rights = [ControlMessage::ScmRights(std::slice::from_ref(&pidfd))];
        sendmsg::<()>(fd, &[IoSlice::new(b"p")], &rights, MsgFlags::empty(), None).unwrap();
        // SAFETY: `pidfd` was opened above and is closed once.
        drop(unsafe { OwnedFd::from_raw_fd(pidfd) });
        waitpid(child, None).unwrap();
    }
}

fn receive(fd: RawFd) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut space = cmsg_space!(RawFd);
    let mut iov = [IoSliceMut::new(&mut byte)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).ok()?;
    let mut fds = msg.cmsgs().unwrap().filter_map(|c| match c {
        ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
        _ => None,
    });
    // SAFETY: the kernel has just installed this descriptor for us.
    fds.next().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The server's answer; its death ends the wait (EOF).
fn receive_fd(fd: RawFd) -> OwnedFd {
    receive(fd).expect("the bare server answers")
}
