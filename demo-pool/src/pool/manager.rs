//! The manager thread, one per pool. It starts each replacement worker, and the first ones
//! unless the pool was made on the program's main thread (`start.rs`), because the
//! parent-death signal fires when the *thread* that started a process exits: that thread must
//! live exactly as long as the pool. (A forkserver worker is the server's child; it dies with
//! the server, and the server with the program.) It reads every result that no waiting thread
//! reads itself (see `state.rs`), and watches each worker through a pidfd; when one dies it
//! fails the task that worker was running, puts the tasks behind it back in the queue, and
//! starts a replacement. At the end it stops, reaps and settles everything.

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollTimeout};
use nix::sys::signal::{Signal, kill};

use super::state::{Shared, State, Status, Token, Worker};
use super::{Error, Outcome, Slot, lock, start, worker};
use crate::process::{Process, StartMethod};

/// What the manager works with from start to end: the shared state, its end of the wake
/// socket, and how to start a worker.
struct Manager<'a> {
    shared: &'a Shared,
    woken: &'a UnixStream,
    method: StartMethod,
    start: &'a worker::Start,
}

/// The manager thread: manages the pool whose first workers are `first` until it ends, and
/// ends it.
pub(super) fn run(
    shared: &Shared,
    woken: UnixStream,
    first: start::First,
    method: StartMethod,
    start: &worker::Start,
) {
    // The workers' processes, in the order of `state.workers`: the manager alone holds them,
    // to reap and replace.
    let mut processes = first.into_processes();
    let ended = panic::catch_unwind(AssertUnwindSafe(|| {
        let manager = Manager {
            shared,
            woken: &woken,
            method,
            start,
        };
        manager.manage(&mut processes)
    }));
    let mut state = lock(&shared.state);
    let broken = match ended {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the pool's manager thread panicked".to_string()),
    };
    let reason = match broken {
        Some(why) => {
            state.broken = Some(why.clone());
            state.status = Status::Terminated;
            Error::Broken(why)
        }
        None => Error::Terminated,
    };
    // A closed pool whose work is done lets its workers leave; anything else kills them.
    let gently = state.status == Status::Closed && state.idle();
    shutdown(shared, &mut state, processes, !gently, reason);
}

impl Manager<'_> {
    /// Runs until the pool is terminated, or closed with all its work done. Every result that
    /// no waiting thread reads is read here; every dead worker is reaped and replaced here.
    fn manage(&self, processes: &mut Vec<Process>) -> io::Result<()> {
        let (shared, woken) = (self.shared, self.woken);
        // Results are read through this buffer: 1 KiB at first, 64 KiB from the first read that
        // fills it. Each page of a buffer this thread zeroes while forked workers still share
        // the heap with it is a page fault and a copy; a pool that reads little pays for none.
        let mut scratch = vec![0; 1024];
        let mut settled = Vec::new();
        let mut buffer = vec![EpollEvent::empty(); 64];
        let mut due = None;
        loop {
            let events = wait_for_events(shared, &mut buffer, due)?;
            if events.contains(&Token::Wake) {
                drain(woken);
            }
            let mut state = lock(&shared.state);
            let step = self.step(processes, &mut state, &events, &mut scratch, &mut settled);
            due = kill_overdue(&mut state);
            drop(state);
            // Settled with the lock released: the thread woken by a result goes on at once, to
            // submit its next task say, without waiting for this thread to let go of the lock.
            settled
                .drain(..)
                .for_each(|(slot, outcome)| slot.settle(outcome));
            if let Some(ended) = step {
                return ended;
            }
        }
    }

    /// One round of the manager, after `events`: reads results, replaces the workers that
    /// ended, hands out queued tasks. `Some` when the pool is to end, and how.
    fn step(
        &self,
        processes: &mut Vec<Process>,
        state: &mut State,
        events: &[Token],
        scratch: &mut Vec<u8>,
        settled: &mut Vec<(Arc<Slot>, Outcome)>,
    ) -> Option<io::Result<()>> {
        let (shared, method, start) = (self.shared, self.method, self.start);
        let mut ended = Vec::new();
        for &event in events {
            match event {
                Token::Wake => {}
                Token::Ended(id) => ended.extend(state.index_of(id)),
                // Claimed since the event came: then the claiming thread reads them.
                Token::Results(id) => match state.index_of(id) {
                    Some(i) if !state.workers[i].claimed => {
                        let filled = state.workers[i].read_results(false, scratch, settled);
                        grow(scratch, filled);
                    }
                    _ => {}
                },
            }
        }
        // A dead worker's last results are read here, claimed or not: they say which task it
        // was running.
        ended.sort_unstable();
        ended.dedup();
        for &i in &ended {
            let filled = state.workers[i].read_results(true, scratch, settled);
            grow(scratch, filled);
        }
        // An initializer that fails would fail in every replacement too: the pool stops rather
        // than fork workers for ever, and every task says why.
        if let Some(why) = state.workers.iter().find_map(|w| w.init_failed.as_ref()) {
            let why = format!("the initializer panicked: {why}");
            return Some(Err(io::Error::other(why)));
        }
        // From the highest index down, so that removing a worker keeps the others' indexes.
        for &i in ended.iter().rev() {
            let pid = state.workers[i].pid;
            let how = reap(&mut processes[i]);
            state.workers[i].unwatch(&shared.epoll);
            if !state.workers[i].ready && how != "killed by SIGKILL" {
                // Reaped: its pid may soon be another process's, so forget it. Its tasks had not
                // started; the pool's end settles them.
                let worker = state.workers.remove(i);
                processes.remove(i);
                state.pending.extend(worker.sent);
                let why = format!("the initializer ended its worker: {how}");
                return Some(Err(io::Error::other(why)));
            }
            // Its oldest task is the one it was running; the ones behind it had not started, so
            // they go back to the front of the queue for another worker.
            let mut sent = std::mem::take(&mut state.workers[i].sent);
            state.workers[i].sent_bytes = 0;
            if let Some(job) = sent.pop_front() {
                let pid = pid.as_raw();
                let error = match job.deadline {
                    Some(deadline) if state.workers[i].overdue => Error::TimedOut { pid, deadline },
                    _ => Error::WorkerDied { pid, how },
                };
                settled.push((job.slot, Err(error)));
            }
            while let Some(job) = sent.pop_back() {
                state.pending.push_front(job);
            }
            if state.status == Status::Running || !state.pending.is_empty() {
                let sentinels = processes.iter().filter_map(Process::sentinel);
                let inherited = start::pool_fds(shared, self.woken, state, sentinels);
                match start::start_worker(shared, method, inherited, start) {
                    Ok((worker, started)) => {
                        state.workers[i] = worker;
                        processes[i] = start::process_of(method, started);
                    }
                    Err(e) => {
                        // Reaped: its pid may soon be another process's, so forget it.
                        state.workers.remove(i);
                        processes.remove(i);
                        return Some(Err(e));
                    }
                }
            } else {
                state.workers.remove(i);
                processes.remove(i);
            }
        }
        match state.status {
            Status::Terminated => return Some(Ok(())),
            Status::Closed if state.idle() => return Some(Ok(())),
            _ => state.dispatch(),
        }
        state.sync_arms(&shared.epoll);
        None
    }
}

/// Grows the manager's read buffer to 64 KiB once a read has `filled` it.
fn grow(scratch: &mut Vec<u8>, filled: bool) {
    if filled {
        scratch.resize(scratch.len().max(64 * 1024), 0);
    }
}

/// Kills each worker whose task has run past its deadline (its death, seen through its
/// pidfd, then settles the task); returns when the next deadline falls.
fn kill_overdue(state: &mut State) -> Option<Instant> {
    let now = Instant::now();
    for worker in &mut state.workers {
        if worker.due().is_some_and(|due| due <= now) {
            worker.overdue = true;
            worker.gone = true;
            let _ = kill(worker.pid, Signal::SIGKILL);
        }
    }
    state.workers.iter().filter_map(Worker::due).min()
}

/// Waits until a worker sends results or ends, the pool wakes the manager, or `due` comes,
/// and says which.
fn wait_for_events(
    shared: &Shared,
    buffer: &mut [EpollEvent],
    due: Option<Instant>,
) -> io::Result<Vec<Token>> {
    loop {
        // Rounded up, so that the wait does not end just before the deadline.
        let timeout = due.map_or(EpollTimeout::NONE, |due| {
            let left = due.saturating_duration_since(Instant::now()) + Duration::from_millis(1);
            EpollTimeout::try_from(left).unwrap_or(EpollTimeout::MAX)
        });
        match shared.epoll.wait(buffer, timeout) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(n) => {
                return Ok(buffer[..n]
                    .iter()
                    .map(|e| Token::decode(e.data()))
                    .collect());
            }
        }
    }
}

fn drain(woken: &UnixStream) {
    let mut buf = [0; 64];
    while matches!((&*woken).read(&mut buf), Ok(n) if n > 0) {}
}

/// Reaps an ended worker and says how it ended.
fn reap(process: &mut Process) -> String {
    match process.join() {
        Ok(code) if code >= 0 => format!("exited with code {code}"),
        Ok(code) => match Signal::try_from(-code) {
            Ok(signal) => format!("killed by {signal}"),
            Err(_) => "ended".to_string(),
        },
        Err(_) => "ended".to_string(),
    }
}

/// Stops every worker: `kill` with SIGKILL, otherwise by ending its task stream, after which
/// an idle worker exits by itself. Reaps them all and settles every unfinished task.
pub(super) fn shutdown(
    shared: &Shared,
    state: &mut State,
    mut processes: Vec<Process>,
    kill_them: bool,
    reason: Error,
) {
    let mut workers = std::mem::take(&mut state.workers);
    workers.iter_mut().for_each(|w| w.unwatch(&shared.epoll));
    for (worker, process) in workers.iter().zip(&mut processes) {
        if kill_them {
            // Through its pidfd: a forkserver worker is not our child, and its pid could
            // name another process once the server has reaped it.
            let _ = process.kill();
        } else {
            // `shutdown` reaches the worker even if another process holds a copy of this
            // socket, which closing it would not.
            let _ = worker.tasks.shutdown(Shutdown::Both);
        }
    }
    // Waiting for a worker to end is bounded: it was killed, or it is idle, reading its
    // task stream, and leaves when that ends.
    debug_assert_eq!(workers.len(), processes.len());
    for (worker, mut process) in workers.into_iter().zip(processes) {
        reap(&mut process);
        for job in worker.sent {
            job.slot.settle(Err(reason.clone()));
        }
    }
    for job in state.pending.drain(..) {
        job.slot.settle(Err(reason.clone()));
    }
}
