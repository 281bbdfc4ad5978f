//! Process start+join under each start method, ours against the bare OS mechanism.
//!
//! Prints `bench<TAB>id<TAB>who<TAB>median<TAB>unit` lines for `cargo xtask bench`.
//! Run with: `cargo run --release -p demo-process --example bench` (`BENCH_QUICK=1` for fewer repeats)
//!
//! The bare costs: fork + waitpid; an exec of this binary that exits at once; and for the
//! forkserver, a server that gets a request with a descriptor, forks a child that exits at
//! once, and sends back a pidfd of it (one fork in a server plus the descriptor passing).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::time::Instant;

use demo_process::process::StartMethod;
use demo_process::spawn::{get_context, run_if_spawned};
use nix::cmsg_space;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};

fn noop(_: ()) {}

/// The median time of `f` in microseconds over `n` runs.
fn median_us(n: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

fn report(id: &str, who: &str, value: f64, unit: &str) {
    println!("bench\t{id}\t{who}\t{value:.3}\t{unit}");
}

fn main() {
    run_if_spawned();
    if std::env::args().nth(1).as_deref() == Some("--exit-now") {
        return;
    }
    let n = if std::env::var_os("BENCH_QUICK").is_some() {
        100
    } else {
        1000
    };
    // The bare forkserver is forked first, while this program has a single thread.
    let bare_server = BareServer::start();

    let ours = |method| {
        move || {
            let mut p = get_context(method).process(noop, ());
            p.start().unwrap();
            assert_eq!(p.join().unwrap(), 0);
        }
    };
    let fork_ours = median_us(n, ours(StartMethod::Fork));
    let fork_bare = median_us(n, || {
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
    let spawn_ours = median_us(n / 5, ours(StartMethod::Spawn));
    let spawn_bare = median_us(n / 5, || {
        Command::new(&exe).arg("--exit-now").status().unwrap();
    });
    report("process.spawn", "ours", spawn_ours / 1000.0, "ms");
    report("process.spawn", "limit", spawn_bare / 1000.0, "ms");

    // The first start also starts our server: measured apart from the rest.
    ours(StartMethod::Forkserver)();
    let forkserver_ours = median_us(n, ours(StartMethod::Forkserver));
    let forkserver_bare = median_us(n, || bare_server.start_join());
    report("process.forkserver", "ours", forkserver_ours, "us");
    report("process.forkserver", "limit", forkserver_bare, "us");
}

/// The bare mechanism of a forkserver: one request with a descriptor, one fork in the server,
/// one pidfd back, and a wait on it.
struct BareServer {
    socket: OwnedFd,
}

impl BareServer {
    fn start() -> BareServer {
        let flags = SockFlag::SOCK_CLOEXEC;
        let (ours, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags).unwrap();
        // SAFETY: this program has a single thread here; the child serves and `_exit`s.
        match unsafe { fork() }.unwrap() {
            ForkResult::Parent { .. } => BareServer { socket: ours },
            ForkResult::Child => {
                drop(ours);
                serve(theirs);
                // SAFETY: `_exit` ends the server at once; it is always sound to call.
                unsafe { libc::_exit(0) }
            }
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
