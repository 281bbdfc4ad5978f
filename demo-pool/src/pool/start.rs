//! Starting workers, by the pool's start method: the first ones, from the thread that creates
//! the pool when it is the program's main thread and otherwise from the manager thread, and
//! each replacement, from the manager thread (`manager.rs`). Either thread lives as long as
//! the pool, as the parent-death signal needs: it fires when the *thread* that started a
//! process ends.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nix::sys::epoll::{EpollEvent, EpollFlags};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::unistd::Pid;

use super::manager::shutdown;
use super::state::{Shared, State, Token, Worker};
use super::{Error, lock, worker};
use crate::forkserver;
use crate::process::{self, Process, StartMethod, Started};
use crate::spawn::{self, Task};

/// The first workers of a pool, started and not yet in the manager's hands. Unlike a
/// `Process`, they may move to the manager thread; if they never reach it (the thread could not
/// start), each is killed and reaped here.
pub(super) struct First {
    started: Vec<Started>,
    method: StartMethod,
}

impl First {
    pub(super) fn into_processes(mut self) -> Vec<Process> {
        let method = self.method;
        self.started
            .drain(..)
            .map(|started| process_of(method, started))
            .collect()
    }
}

impl Drop for First {
    fn drop(&mut self) {
        self.started.drain(..).for_each(Started::abandon);
    }
}

/// Starts the first `n` workers from this thread, which must live as long as the pool: the
/// manager thread, or the program's main thread (see `start_worker`). If one cannot start,
/// those that did are stopped and reaped, and the error returned.
pub(super) fn start_first(
    shared: &Shared,
    woken: &UnixStream,
    n: usize,
    method: StartMethod,
    start: &worker::Start,
) -> io::Result<First> {
    let mut first = First {
        started: Vec::new(),
        method,
    };
    let mut state = lock(&shared.state);
    let all = (0..n).try_for_each(|_| {
        let inherited = pool_fds(
            shared,
            woken,
            &state,
            first.started.iter().map(Started::sentinel),
        );
        let (worker, started) = start_worker(shared, method, inherited, start)?;
        state.workers.push(worker);
        first.started.push(started);
        state.sync_arms(&shared.epoll);
        Ok(())
    });
    if let Err(e) = all {
        shutdown(
            shared,
            &mut state,
            first.into_processes(),
            true,
            Error::Terminated,
        );
        return Err(e);
    }
    Ok(first)
}

/// The pool's own descriptors, which a new worker closes: it must hold no copy of another
/// worker's socket or of the manager's.
pub(super) fn pool_fds<'a>(
    shared: &Shared,
    woken: &UnixStream,
    state: &State,
    sentinels: impl Iterator<Item = BorrowedFd<'a>>,
) -> Vec<RawFd> {
    let mut fds = vec![
        shared.wake.as_raw_fd(),
        woken.as_raw_fd(),
        shared.epoll.0.as_raw_fd(),
    ];
    for worker in &state.workers {
        fds.extend([worker.tasks.as_raw_fd(), worker.results.as_raw_fd()]);
        fds.push(worker.sentinel.as_raw_fd());
    }
    // And the descriptors that tasks carry: a worker holds only those of its own tasks.
    let jobs = state
        .pending
        .iter()
        .chain(state.workers.iter().flat_map(|w| &w.sent));
    fds.extend(jobs.flat_map(|job| &job.fds).map(|fd| fd.as_raw_fd()));
    fds.extend(sentinels.map(|s| s.as_raw_fd()));
    fds
}

/// The number of the next worker started, in any pool of this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Starts a worker by `method`. Runs on a thread that lives as long as the pool, the manager
/// thread or the program's main thread: a forked or spawned worker gets SIGKILL when the
/// thread that started it ends (`process.rs`, `spawn.rs`), a forkserver worker when the
/// server ends, which it does with the program (`forkserver.rs`).
pub(super) fn start_worker(
    shared: &Shared,
    method: StartMethod,
    mut inherited: Vec<RawFd>,
    start: &worker::Start,
) -> io::Result<(Worker, Started)> {
    let (ours, theirs) = UnixStream::pair()?;
    let tasks = ours.try_clone()?;
    // Ask for a 256 KiB buffer; the kernel may give less. Queued tasks may use a quarter.
    let _ = setsockopt(&ours, sockopt::SndBuf, &(256 << 10));
    let budget = getsockopt(&ours, sockopt::SndBuf)? / 4;
    inherited.extend([ours.as_raw_fd(), tasks.as_raw_fd()]);
    let (base, base_ns) = (Instant::now(), worker::monotonic_ns());
    let (ready, left, start) = (start.init.is_none(), start.max_tasks, start.clone());
    let started = match method {
        // The child has only this thread. Locks that other threads held at the fork stay
        // locked in it: the pool's state is one, and the worker never touches it (stdout and
        // stderr are held across the fork, so a task can print). A task that waits on a lock
        // another thread of the parent held at the fork waits for ever (see the README).
        StartMethod::Fork => {
            process::forked(move || worker::run(&theirs, &inherited, base_ns, &start))?
        }
        // A new image of this file: it holds only what it is given, its end of the socket.
        StartMethod::Spawn | StartMethod::Forkserver => {
            let boot = worker::Boot {
                sock: theirs,
                base: base_ns,
                start,
            };
            let task = Task::new(worker::spawned, &boot)?;
            drop(boot);
            if method == StartMethod::Spawn {
                spawn::spawn(&task)?
            } else {
                forkserver::start(&task)?
            }
        }
    };
    let pid = Pid::from_raw(started.pid());
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let watched = started
        .sentinel()
        .try_clone_to_owned()
        .and_then(|sentinel| {
            let event = EpollEvent::new(EpollFlags::EPOLLIN, Token::Ended(id).encode());
            shared.epoll.add(sentinel.as_fd(), event)?;
            Ok(Arc::new(sentinel))
        });
    let sentinel = match watched {
        Ok(sentinel) => sentinel,
        Err(e) => {
            started.abandon();
            return Err(e);
        }
    };
    let worker = Worker {
        id,
        pid,
        tasks,
        results: Arc::new(ours),
        sentinel,
        received: Vec::new(),
        eof: false,
        init_failed: None,
        claimed: false,
        armed: false,
        sent: VecDeque::new(),
        quick: false,
        since: Instant::now(),
        gone: false,
        sent_bytes: 0,
        budget,
        base,
        ready,
        left,
        overdue: false,
    };
    Ok((worker, started))
}

/// The `Process` of a started worker, named as Python names a pool's workers.
pub(super) fn process_of(method: StartMethod, started: Started) -> Process {
    let kind = match method {
        StartMethod::Fork => "ForkPoolWorker",
        StartMethod::Spawn => "SpawnPoolWorker",
        StartMethod::Forkserver => "ForkServerPoolWorker",
    };
    let mut process = Process::launch(kind, move || Ok(started));
    // Its launch hands over the child started already: it cannot fail.
    let _ = process.start();
    process
}
