//! Measures the pool against Python's `multiprocessing.Pool` (see `python/bench.py`):
//! tiny tasks through `apply_async` + `get`, items through `map`, tiny items through
//! `imap_unordered` one at a time (chunksize 1, Python's default), and `Pool(4)` create +
//! close + join under each start method, each beside the bare cost of starting four processes
//! that way.
//!
//! Its rows in the table of `cargo xtask bench`, in this order:
//!
//! | id | row |
//! |---|---|
//! | `pool.apply_async` | pool apply_async+get, tiny tasks |
//! | `pool.apply` | pool apply round trip, one task at a time |
//! | `pool.map` | pool map, tiny items |
//! | `pool.imap_unordered` | pool imap_unordered, tiny items, chunksize 1 |
//! | `pool.create_join` | Pool(4) create+close+join, fork |
//! | `pool.create_join.spawn` | Pool(4) create+close+join, spawn |
//! | `pool.create_join.forkserver` | Pool(4) create+close+join, forkserver |
//!
//! The bare costs (`limit`): fork, four forks and their reaping; spawn, four runs of this
//! executable (posix_spawn of /proc/self/exe) that exit at once, and their reaping; forkserver,
//! four requests to a server process that forks a child that exits at once and sends back its
//! pidfd (`SCM_RIGHTS`), and the wait for each child's end. For `pool.apply`, a round trip of
//! 8 bytes over a socketpair to a forked child that echoes them.
//!
//! Beside them, `procspawn`'s pool (a spawn pool whose values cross by ipc-channel): its
//! `Pool::new(4)` + `shutdown`, one `spawn(..).join()` round trip, and the `map` items sent as
//! four chunks, one `spawn` each (it has no `map`). Figures that are compared take turns,
//! repeat by repeat: ours, the bare cost and procspawn's (for `map`, with both pools started,
//! their workers idle while the other's run).
//!
//! Run with: `cargo run --release -p demo-pool --example bench_pool` (`BENCH_QUICK=1` for a short run;
//! `-- --create-join` for the `pool.create_join` rows alone)

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Instant;

use demo_pool::{Pool, StartMethod, run_if_spawned};
use nix::cmsg_space;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CpuSet, sched_getcpu, sched_setaffinity};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

/// The argument that makes this program exit at once: the bare cost of a spawn.
const EXIT: &str = "--exit-at-once";

/// The argument that measures only `Pool(4)` create+close+join: `cargo xtask bench` runs it
/// in turns with `python/bench.py --create-join`, so that both meet the machine's moods.
const CREATE_JOIN: &str = "--create-join";

fn noop(x: u64) -> u64 {
    x
}

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == EXIT) {
        return;
    }
    // A spawned worker is this program run again: it becomes a worker here, ours or
    // procspawn's (each knows its own by its command line or environment).
    procspawn::init();
    run_if_spawned();
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let repeats = if quick { 3 } else { 7 };
    let tasks = if quick { 5_000 } else { 20_000 };
    let items = if quick { 200_000 } else { 1_000_000 };

    // First, while this process is small: a later fork copies whatever the other
    // measurements left in memory. python/bench.py does the same.
    create_join(repeats * 3);
    if std::env::args_os().nth(1).is_some_and(|a| a == CREATE_JOIN) {
        return;
    }

    let pool = Pool::new(4).unwrap();
    let rate = median(repeats, || {
        let start = Instant::now();
        let results: Vec<_> = (0..tasks)
            .map(|i| pool.apply_async(noop, i).unwrap())
            .collect();
        results.iter().for_each(|r| assert!(r.get().is_ok()));
        tasks as f64 / start.elapsed().as_secs_f64()
    });
    report("pool.apply_async", "ours", rate, "tasks/s");
    let rate = median(repeats, || {
        let start = Instant::now();
        let results = pool.imap_unordered(noop, 0..tasks, 1).unwrap();
        assert_eq!(results.filter(Result::is_ok).count(), tasks as usize);
        tasks as f64 / start.elapsed().as_secs_f64()
    });
    report("pool.imap_unordered", "ours", rate, "items/s");

    // Ours and procspawn's take turns, repeat by repeat, so that they share the machine's
    // moods. procspawn has no `map`: the items go as four chunks, one `spawn` per worker,
    // each a `Vec` that crosses whole. Four, not more: a fifth chunk this large, sent while
    // every worker is busy, blocks procspawn's `spawn` for good (its send waits on a worker
    // that waits on its caller).
    let peer = procspawn::Pool::new(4).unwrap();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let start = Instant::now();
        assert_eq!(pool.map(noop, 0..items).unwrap().len(), items as usize);
        ours.push(items as f64 / start.elapsed().as_secs_f64());
        let start = Instant::now();
        let chunk = items.div_ceil(4);
        let handles: Vec<_> = (0..4)
            .map(|c| {
                let part: Vec<u64> = (c * chunk..((c + 1) * chunk).min(items)).collect();
                peer.spawn(part, |part: Vec<u64>| {
                    part.into_iter().map(noop).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut done = 0;
        for handle in handles {
            done += handle.join().unwrap().len();
        }
        assert_eq!(done, items as usize);
        theirs.push(items as f64 / start.elapsed().as_secs_f64());
    }
    peer.shutdown();
    drop(pool);
    report("pool.map", "ours", middle(ours), "items/s");
    report("pool.map", "procspawn", middle(theirs), "items/s");

    round_trips(repeats, tasks / 4);
}

/// `Pool(4)` create+close+join under each start method, and the bare cost of starting four
/// processes that way, in turns, repeat by repeat; under spawn, procspawn's
/// `Pool::new(4)` + `shutdown` takes its turn too. The bare server is forked now, while this
/// process has one thread, as a forkserver is.
fn create_join(repeats: usize) {
    let server = BareServer::start();
    for method in StartMethod::ALL {
        let (mut ours, mut limit, mut procspawn) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..repeats {
            if method == StartMethod::Spawn {
                let start = Instant::now();
                let pool = procspawn::Pool::new(4).unwrap();
                pool.shutdown();
                drop(pool);
                procspawn.push(start.elapsed().as_secs_f64() * 1e3);
            }
            let start = Instant::now();
            let mut pool = Pool::with_start_method(4, method).unwrap();
            pool.close();
            pool.join().unwrap();
            ours.push(start.elapsed().as_secs_f64() * 1e3);
            let start = Instant::now();
            match method {
                StartMethod::Fork => bare_forks(4),
                StartMethod::Spawn => bare_spawns(4),
                StartMethod::Forkserver => server.children(4),
            }
            limit.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let id = match method {
            StartMethod::Fork => "pool.create_join".to_string(),
            _ => format!("pool.create_join.{method}"),
        };
        report(&id, "ours", middle(ours), "ms");
        report(&id, "limit", middle(limit), "ms");
        if !procspawn.is_empty() {
            report(&id, "procspawn", middle(procspawn), "ms");
        }
    }
}

/// One `apply` at a time, ours, procspawn's and the bare echo's, with this process and all
/// that it starts from now on held to the CPU it runs on. A round trip is two wake-ups of
/// another process; on this kind of machine (two virtual CPUs) a wake-up across CPUs costs
/// some 75 µs and one on the same CPU 3–5 µs, and the scheduler's choice between the two
/// flips from run to run, for the bare echo as for a pool. On one CPU each figure is the cost
/// of the mechanism, and the three take turns, repeat by repeat, so that they share the
/// machine's moods.
fn round_trips(repeats: usize, round_trips: u64) {
    let mut cpu = CpuSet::new();
    cpu.set(sched_getcpu().unwrap()).unwrap();
    sched_setaffinity(Pid::from_raw(0), &cpu).unwrap();
    let pool = Pool::new(4).unwrap();
    let echo = Echo::start();
    let peer = procspawn::Pool::new(4).unwrap();
    let (mut ours, mut limit, mut procspawn) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeats {
        let start = Instant::now();
        for i in 0..round_trips {
            assert_eq!(pool.apply(noop, i), Ok(i));
        }
        ours.push(start.elapsed().as_secs_f64() * 1e6 / round_trips as f64);
        let start = Instant::now();
        for i in 0..round_trips {
            assert_eq!(echo.round_trip(i), i);
        }
        limit.push(start.elapsed().as_secs_f64() * 1e6 / round_trips as f64);
        let start = Instant::now();
        for i in 0..round_trips / 10 {
            assert_eq!(peer.spawn(i, noop).join().unwrap(), i);
        }
        procspawn.push(start.elapsed().as_secs_f64() * 1e6 / (round_trips / 10) as f64);
    }
    peer.shutdown();
    report("pool.apply", "ours", middle(ours), "us");
    report("pool.apply", "limit", middle(limit), "us");
    report("pool.apply", "procspawn", middle(procspawn), "us");
}

/// The floor under any pool of forked processes: fork `n` children that exit at once, reap
/// them.
fn bare_forks(n: usize) {
    let children: Vec<_> = (0..n).map(|_| fork_exiting()).collect();
    children.into_iter().for_each(|c| {
        waitpid(c, None).unwrap();
    });
}

fn fork_exiting() -> Pid {
    // SAFETY: the child calls only `_exit`, which is async-signal-safe.
    match unsafe { fork() }.unwrap() {
        ForkResult::Parent { child } => child,
        // SAFETY: `_exit` ends the child at once; it is always sound to call.
        ForkResult::Child => unsafe { libc::_exit(0) },
    }
}

/// The floor under a pool of spawned processes: run this executable `n` times, each exiting
/// at once, and reap them.
fn bare_spawns(n: usize) {
    let children: Vec<_> = (0..n)
        .map(|_| Command::new("/proc/self/exe").arg(EXIT).spawn().unwrap())
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
}

/// A forked child that echoes each 8 bytes it reads: the bare round trip to another process.
struct Echo {
    stream: UnixStream,
}

impl Echo {
    fn start() -> Echo {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        // SAFETY: the child only reads and writes its socket, system calls that take no lock
        // another thread of this process may hold, and ends with `_exit`.
        match unsafe { fork() }.unwrap() {
            ForkResult::Parent { .. } => Echo { stream: ours },
            ForkResult::Child => {
                drop(ours);
                let mut word = [0u8; 8];
                while theirs.read_exact(&mut word).is_ok() && theirs.write_all(&word).is_ok() {}
                // SAFETY: `_exit` ends the child at once; it is always sound to call.
                unsafe { libc::_exit(0) }
            }
        }
    }

    fn round_trip(&self, value: u64) -> u64 {
        let mut stream = &self.stream;
        stream.write_all(&value.to_le_bytes()).unwrap();
        let mut word = [0u8; 8];
        stream.read_exact(&mut word).unwrap();
        u64::from_le_bytes(word)
    }
}

/// A bare forkserver: a process forked at the start, which forks a child for each request
/// byte and sends back its pidfd.
struct BareServer {
    requests: OwnedFd,
}

impl BareServer {
    fn start() -> BareServer {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        // SAFETY: this process has a single thread here, so the child has every lock free;
        // it serves requests and ends with `_exit`.
        match unsafe { fork() }.unwrap() {
            ForkResult::Parent { .. } => BareServer { requests: ours },
            ForkResult::Child => {
                drop(ours);
                serve(theirs.as_raw_fd());
                // SAFETY: `_exit` ends the server at once; it is always sound to call.
                unsafe { libc::_exit(0) }
            }
        }
    }

    /// `n` children, each forked by the server and told of by a pidfd; waits until each ends.
    fn children(&self, n: usize) {
        let pidfds: Vec<OwnedFd> = (0..n).map(|_| self.request()).collect();
        for pidfd in &pidfds {
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::NONE).unwrap();
        }
    }

    fn request(&self) -> OwnedFd {
        let raw = self.requests.as_raw_fd();
        sendmsg::<()>(raw, &[IoSlice::new(b"f")], &[], MsgFlags::empty(), None).unwrap();
        let mut byte = [0u8; 1];
        let mut space = cmsg_space!(RawFd);
        let mut iov = [IoSliceMut::new(&mut byte)];
        let msg = recvmsg::<()>(raw, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC);
        let msg = msg.unwrap();
        for cmsg in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: the kernel has just installed this descriptor for this message.
                return unsafe { OwnedFd::from_raw_fd(fds[0]) };
            }
        }
        panic!("the bare server sent no pidfd");
    }
}

/// The bare server's loop: for each request, fork a child that exits at once, send back its
/// pidfd, and reap the children that have ended. Ends when the bench closes its end.
fn serve(requests: RawFd) {
    let mut byte = [0u8; 1];
    loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        match recvmsg::<()>(requests, &mut iov, None, MsgFlags::empty()) {
            Ok(msg) if msg.bytes == 1 => {}
            _ => return,
        }
        let child = fork_exiting();
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) } as RawFd;
        let rights = [pidfd];
        let cmsg = [ControlMessage::ScmRights(&rights)];
        let sent = sendmsg::<()>(
            requests,
            &[IoSlice::new(b"p")],
            &cmsg,
            MsgFlags::empty(),
            None,
        );
        // SAFETY: `pidfd` was opened above and is closed once, here.
        unsafe { libc::close(pidfd) };
        while let Ok(status) = waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
        if sent.is_err() {
            return;
        }
    }
}
fn median(repeats: usize, mut measure: impl FnMut() -> f64) -> f64 {
    middle((0..repeats).map(|_| measure()).collect())
}

fn middle(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(id: &str, who: &str, value: f64, unit: &str) {
    println!("bench\t{id}\t{who}\t{value:.3}\t{unit}");
}
