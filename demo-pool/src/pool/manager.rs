//! The manager thread, one per pool. It starts every worker, the first ones and each
//! replacement, by the pool's start method, because the parent-death signal fires when the
//! *thread* that started a process exits: that thread must live exactly as long as the pool.
//! (A forkserver worker is the server's child; it dies with the server, and the server with
//! the program.) It reads every result, and
//! watches each worker through a pidfd; when one dies it fails the task that worker was
//! running, puts the tasks behind it back in the queue, and starts a replacement. At the end
//! it stops, reaps and settles everything.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{MsgFlags, getsockopt, recv, setsockopt, sockopt};
use nix::unistd::Pid;

use super::state::{Shared, State, Status, Worker};
use super::worker::Report;
use super::{Error, Outcome, Slot, lock, worker};
use crate::forkserver;
use crate::process::{self, Process, StartMethod};
use crate::spawn::{self, Task};

/// A worker as the manager watches it: results come in on `results`, its end on its
/// process's sentinel (a pidfd).
struct Link {
    results: UnixStream,
    process: Process,
    received: Vec<u8>,
    eof: bool,
    /// What its initializer's panic said, if it panicked.
    init_failed: Option<String>,
}

/// The manager thread: starts the first `n` workers, says on `started` whether it could, then
/// manages the pool until it ends, and ends it.
pub(super) fn run(
    shared: &Shared,
    woken: UnixStream,
    n: usize,
    method: StartMethod,
    start: &worker::Start,
    started: mpsc::Sender<io::Result<()>>,
) {
    let mut links = Vec::new();
    let first = {
        let mut state = lock(&shared.state);
        (0..n).try_for_each(|_| {
            let inherited = pool_fds(shared, &woken, &state, &links);
            let (worker, link) = start_worker(method, inherited, start)?;
            state.workers.push(worker);
            links.push(link);
            Ok(())
        })
    };
    if let Err(e) = first {
        shutdown(&mut lock(&shared.state), links, true, Error::Terminated);
        let _ = started.send(Err(e));
        return;
    }
    let _ = started.send(Ok(()));

    let ended = panic::catch_unwind(AssertUnwindSafe(|| {
        manage(shared, &woken, method, &mut links, start)
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
    shutdown(&mut state, links, !gently, reason);
}

/// Runs until the pool is terminated, or closed with all its work done. Every result is read
/// here, every dead worker is reaped and replaced here.
fn manage(
    shared: &Shared,
    woken: &UnixStream,
    method: StartMethod,
    links: &mut Vec<Link>,
    start: &worker::Start,
) -> io::Result<()> {
    let mut scratch = vec![0; 64 * 1024];
    let mut settled = Vec::new();
    let mut due = None;
    loop {
        let (results, ended, wake) = wait_for_events(woken, links, due)?;
        if wake {
            drain(woken);
        }
        let mut state = lock(&shared.state);
        let step = 'step: {
            for &i in results.iter().chain(&ended) {
                let ended = ended.contains(&i);
                read_results(
                    &mut links[i],
                    &mut state.workers[i],
                    ended,
                    &mut scratch,
                    &mut settled,
                );
            }
            // An initializer that fails would fail in every replacement too: the pool stops
            // rather than fork workers for ever, and every task says why.
            if let Some(why) = links.iter().find_map(|link| link.init_failed.as_ref()) {
                break 'step Some(Err(io::Error::other(format!(
                    "the initializer panicked: {why}"
                ))));
            }
            // From the highest index down, so that removing a worker keeps the others' indexes.
            for &i in ended.iter().rev() {
                let pid = state.workers[i].pid;
                let how = reap(&mut links[i].process);
                if !state.workers[i].ready && how != "killed by SIGKILL" {
                    // Reaped: its pid may soon be another process's, so forget it. Its tasks
                    // had not started; the pool's end settles them.
                    let worker = state.workers.remove(i);
                    links.remove(i);
                    state.pending.extend(worker.sent);
                    break 'step Some(Err(io::Error::other(format!(
                        "the initializer ended its worker: {how}"
                    ))));
                }
                // Its oldest task is the one it was running; the ones behind it had not started,
                // so they go back to the front of the queue for another worker.
                let mut sent = std::mem::take(&mut state.workers[i].sent);
                state.workers[i].sent_bytes = 0;
                if let Some(job) = sent.pop_front() {
                    let pid = pid.as_raw();
                    job.slot.settle(Err(match job.deadline {
                        Some(deadline) if state.workers[i].overdue => {
                            Error::TimedOut { pid, deadline }
                        }
                        _ => Error::WorkerDied { pid, how },
                    }));
                }
                while let Some(job) = sent.pop_back() {
                    state.pending.push_front(job);
                }
                if state.status == Status::Running || !state.pending.is_empty() {
                    let inherited = pool_fds(shared, woken, &state, links);
                    match start_worker(method, inherited, start) {
                        Ok((worker, link)) => {
                            state.workers[i] = worker;
                            links[i] = link;
                        }
                        Err(e) => {
                            // Reaped: its pid may soon be another process's, so forget it.
                            state.workers.remove(i);
                            links.remove(i);
                            break 'step Some(Err(e));
                        }
                    }
                } else {
                    state.workers.remove(i);
                    links.remove(i);
                }
            }
            match state.status {
                Status::Terminated => break 'step Some(Ok(())),
                Status::Closed if state.idle() => break 'step Some(Ok(())),
                _ => state.dispatch(),
            }
            due = kill_overdue(&mut state);
            None
        };
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

/// Waits until a worker sends results or ends, the pool wakes the manager, or `due` comes.
/// Returns the indexes of the workers with results and of those that ended, and whether the
/// pool woke it.
fn wait_for_events(
    woken: &UnixStream,
    links: &mut [Link],
    due: Option<Instant>,
) -> io::Result<(Vec<usize>, Vec<usize>, bool)> {
    let mut fds = vec![PollFd::new(woken.as_fd(), PollFlags::POLLIN)];
    let mut owners = vec![];
    for (i, link) in links.iter().enumerate() {
        // After end of file the results socket would report POLLHUP on every poll; the
        // pidfd tells when the worker is gone.
        if !link.eof {
            fds.push(PollFd::new(link.results.as_fd(), PollFlags::POLLIN));
            owners.push((i, false));
        }
        let sentinel = link.process.sentinel().expect("a started worker");
        fds.push(PollFd::new(sentinel, PollFlags::POLLIN));
        owners.push((i, true));
    }
    loop {
        // Rounded up, so that the wait does not end just before the deadline.
        let timeout = due.map_or(PollTimeout::NONE, |due| {
            let left = due.saturating_duration_since(Instant::now()) + Duration::from_millis(1);
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
        });
        match poll(&mut fds, timeout) {
            Err(Errno::EINTR) => continue,
            other => other?,
        };
        break;
    }
    let (mut results, mut ended) = (vec![], vec![]);
    for (fd, &(i, is_pidfd)) in fds[1..].iter().zip(&owners) {
        if fd.revents().is_some_and(|r| !r.is_empty()) {
            if is_pidfd {
                ended.push(i)
            } else {
                results.push(i)
            }
        }
    }
    let wake = fds[0].revents().is_some_and(|r| !r.is_empty());
    Ok((results, ended, wake))
}

fn drain(woken: &UnixStream) {
    let mut buf = [0; 64];
    while matches!((&*woken).read(&mut buf), Ok(n) if n > 0) {}
}

/// Reads whatever the worker has sent, without waiting, and puts the tasks it finished in
/// `settled`. A worker that died (`ended`) just after sending a result still has it read
/// here, to the end of its stream.
fn read_results(
    link: &mut Link,
    worker: &mut Worker,
    ended: bool,
    scratch: &mut [u8],
    settled: &mut Vec<(Arc<Slot>, Outcome)>,
) {
    loop {
        match recv(link.results.as_raw_fd(), scratch, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => {
                link.eof = true;
                break;
            }
            // A live worker's stream read short is empty for now; more wakes the poll again.
            Ok(n) if n < scratch.len() && !ended => {
                link.received.extend_from_slice(&scratch[..n]);
                break;
            }
            Ok(n) => link.received.extend_from_slice(&scratch[..n]),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => break,
            Err(_) => {
                link.eof = true;
                break;
            }
        }
    }
    let mut used = 0;
    while let Some(len) = link.received.get(used..used + 4) {
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        let Some(frame) = link.received.get(used + 4..used + 4 + len) else {
            break;
        };
        used += 4 + len;
        match worker::result_of(frame) {
            Some(Report::Ended(outcome, start, end)) => {
                worker.finished(outcome, start, end, settled)
            }
            Some(Report::Ready) => {
                worker.ready = true;
                worker.since = Instant::now();
            }
            Some(Report::InitFailed(why)) => link.init_failed = Some(why),
            None => {}
        }
    }
    link.received.drain(..used);
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
fn shutdown(state: &mut State, mut links: Vec<Link>, kill_them: bool, reason: Error) {
    let workers = std::mem::take(&mut state.workers);
    for (worker, link) in workers.iter().zip(&mut links) {
        if kill_them {
            // Through its pidfd: a forkserver worker is not our child, and its pid could
            // name another process once the server has reaped it.
            let _ = link.process.kill();
        } else {
            // `shutdown` reaches the worker even if another process holds a copy of this
            // socket, which closing it would not.
            let _ = worker.tasks.shutdown(Shutdown::Both);
        }
    }
    // Waiting for a worker to end is bounded: it was killed, or it is idle, reading its
    // task stream, and leaves when that ends.
    debug_assert_eq!(workers.len(), links.len());
    for (worker, link) in workers.into_iter().zip(links) {
        let Link {
            results,
            mut process,
            ..
        } = link;
        drop(results);
        reap(&mut process);
        for job in worker.sent {
            job.slot.settle(Err(reason.clone()));
        }
    }
    for job in state.pending.drain(..) {
        job.slot.settle(Err(reason.clone()));
    }
}

/// The pool's own descriptors, which a new worker closes: it must hold no copy of another
/// worker's socket or of the manager's.
fn pool_fds(shared: &Shared, woken: &UnixStream, state: &State, links: &[Link]) -> Vec<RawFd> {
    let mut fds = vec![shared.wake.as_raw_fd(), woken.as_raw_fd()];
    fds.extend(state.workers.iter().map(|w| w.tasks.as_raw_fd()));
    // And the descriptors that tasks carry: a worker holds only those of its own tasks.
    let jobs = state
        .pending
        .iter()
        .chain(state.workers.iter().flat_map(|w| &w.sent));
    fds.extend(jobs.flat_map(|job| &job.fds).map(|fd| fd.as_raw_fd()));
    for link in links {
        fds.push(link.results.as_raw_fd());
        fds.extend(link.process.sentinel().map(|s| s.as_raw_fd()));
    }
    fds
}

/// Starts a worker by `method`. Runs on the manager thread only, which lives as long as the
/// pool: a forked or spawned worker gets SIGKILL when the thread that started it ends
/// (`process.rs`, `spawn.rs`), a forkserver worker when the server ends, which it does with
/// the program (`forkserver.rs`).
fn start_worker(
    method: StartMethod,
    mut inherited: Vec<RawFd>,
    start: &worker::Start,
) -> io::Result<(Worker, Link)> {
    let (ours, theirs) = UnixStream::pair()?;
    let tasks = ours.try_clone()?;
    // Ask for a 256 KiB buffer; the kernel may give less. Queued tasks may use a quarter.
    let _ = setsockopt(&ours, sockopt::SndBuf, &(256 << 10));
    let budget = getsockopt(&ours, sockopt::SndBuf)? / 4;
    inherited.extend([ours.as_raw_fd(), tasks.as_raw_fd()]);
    let (base, base_ns) = (Instant::now(), worker::monotonic_ns());
    let (ready, left, start) = (start.init.is_none(), start.max_tasks, start.clone());
    let mut process = match method {
        // The child has only this thread. Locks that other threads held at the fork stay
        // locked in it: the pool's state is one, and the worker never touches it (stdout and
        // stderr are held across the fork, so a task can print). A task that waits on a lock
        // another thread of the parent held at the fork waits for ever (see the README).
        StartMethod::Fork => Process::launch("ForkPoolWorker", move || {
            process::forked(move || worker::run(&theirs, &inherited, base_ns, &start))
        }),
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
                Process::launch("SpawnPoolWorker", move || spawn::spawn(&task))
            } else {
                Process::launch("ForkServerPoolWorker", move || forkserver::start(&task))
            }
        }
    };
    process.start()?;
    let pid = Pid::from_raw(process.pid().expect("started"));
    let worker = Worker {
        pid,
        tasks,
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
    Ok((
        worker,
        Link {
            results: ours,
            process,
            received: Vec::new(),
            eof: false,
            init_failed: None,
        },
    ))
}
