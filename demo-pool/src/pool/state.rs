//! What the submitting threads and the manager thread share, under one mutex: the tasks no
//! worker holds yet, and for each worker the tasks it was sent whose results have not come
//! back. A worker runs its tasks one after the other and answers each in order, so the
//! oldest task it holds is the one it is running; when it dies, that task fails and the
//! tasks behind it, which had not started, go back to the front of the queue.
//!
//! A worker's results are read by one thread at a time, under the lock: by the manager, or
//! by a thread waiting for one of that worker's tasks, which has *claimed* the worker (see
//! `claim.rs`). That thread reads the result itself, one hop less than through the
//! manager; meanwhile the manager's epoll does not watch the worker's results (it is not
//! *armed*), so the manager sleeps through them. It always watches every worker's pidfd: a
//! worker's death is the manager's to handle, claimed or not.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::socket::{ControlMessage, MsgFlags, recv, sendmsg};
use nix::unistd::Pid;

use super::worker::{self, Report};
use super::{Outcome, Ran, Slot};
use crate::fds;

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Written to wake the manager for `close` and `terminate`.
    pub(super) wake: UnixStream,
    /// What the manager waits on: the other end of `wake`, every worker's pidfd, and the
    /// results of each armed worker.
    pub(super) epoll: Epoll,
}

impl Shared {
    pub(super) fn wake_manager(&self) {
        // A full wake socket already holds a wake-up, so a failed write loses nothing.
        let _ = (&self.wake).write(&[1]);
    }
}

/// What woke the manager, as its epoll tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    Wake,
    /// Worker `id` has results to read.
    Results(u64),
    /// Worker `id` ended.
    Ended(u64),
}

impl Token {
    pub(super) fn encode(self) -> u64 {
        match self {
            Token::Wake => u64::MAX,
            Token::Results(id) => id * 2,
            Token::Ended(id) => id * 2 + 1,
        }
    }

    pub(super) fn decode(data: u64) -> Token {
        match data {
            u64::MAX => Token::Wake,
            _ if data % 2 == 0 => Token::Results(data / 2),
            _ => Token::Ended(data / 2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Running,
    Closed,
    Terminated,
}

pub(super) struct State {
    pub(super) status: Status,
    /// Why the pool broke down, if it did: every later submission fails with it.
    pub(super) broken: Option<String>,
    /// The tasks no worker holds yet, oldest first.
    pub(super) pending: VecDeque<Job>,
    pub(super) workers: Vec<Worker>,
    /// How many claiming threads hold results they took from a worker and have not settled
    /// yet. A closed pool ends only once this is zero, so that `join()` returns with every
    /// result settled, as Python's does.
    pub(super) settling: usize,
}

/// A task on its way: its frame, kept until the result comes in case another worker must
/// run it, and where its result goes.
pub(super) struct Job {
    pub(super) frame: Vec<u8>,
    /// The descriptors its arguments hold: copies go with each write of the frame.
    pub(super) fds: Vec<OwnedFd>,
    pub(super) slot: Arc<Slot>,
    /// How long it may run once started; a job with one goes to a worker that holds nothing
    /// else, so that killing the worker at the deadline touches no other task.
    pub(super) deadline: Option<Duration>,
}

/// A worker as the submitting threads see it: where to send tasks, and the tasks sent to it
/// whose results have not come back, oldest first.
pub(super) struct Worker {
    /// Its number in this pool, never reused: a replacement gets a new one.
    pub(super) id: u64,
    pub(super) pid: Pid,
    pub(super) tasks: UnixStream,
    /// Where its results come in; shared with the thread that claims it.
    pub(super) results: Arc<UnixStream>,
    /// A pidfd of it, readable once it has ended; shared with the thread that claims it.
    pub(super) sentinel: Arc<OwnedFd>,
    /// The bytes read from `results` that do not yet make a whole frame.
    pub(super) received: Vec<u8>,
    /// `results` has ended.
    pub(super) eof: bool,
    /// What its initializer's panic said, if it panicked.
    pub(super) init_failed: Option<String>,
    /// A waiting thread reads its results.
    pub(super) claimed: bool,
    /// The manager's epoll watches `results`.
    pub(super) armed: bool,
    pub(super) sent: VecDeque<Job>,
    /// Whether its last task took less than `QUICK`.
    pub(super) quick: bool,
    /// When its last result came, or when it was given a task while it had none.
    pub(super) since: Instant,
    /// A write to it failed: its task stream is shut down and it gets nothing more.
    pub(super) gone: bool,
    /// What its unfinished tasks take in its socket's buffer, at most.
    pub(super) sent_bytes: usize,
    /// How much of that buffer tasks beyond the first may take.
    pub(super) budget: usize,
    /// The moment just before it started: the worker sends its tasks' times as offsets from
    /// it, read on the monotonic clock (the clock of `Instant`, the same in every process).
    pub(super) base: Instant,
    /// Whether it has run its initializer (always, without one): until then it starts no
    /// task, and its oldest task's deadline does not run.
    pub(super) ready: bool,
    /// How many more tasks it may be sent before it leaves (`maxtasksperchild`).
    pub(super) left: Option<usize>,
    /// It was killed because its task ran past the task's deadline.
    pub(super) overdue: bool,
}

/// How many tasks a worker holds at once while its tasks are quick. It runs them back to
/// back without waiting for the pool between them.
const DEEP: usize = 8;
/// A task quicker than this lets its worker hold `DEEP` tasks; a slower one, a single task.
const QUICK: Duration = Duration::from_millis(1);
/// What the kernel adds to each write in a socket's buffer, at most.
const WRITE_OVERHEAD: usize = 1024;

impl Worker {
    /// How many more tasks it may be sent. One at a time while its tasks are slow (or not yet
    /// known): then a task never waits behind a long one while another worker is free.
    fn room(&self) -> usize {
        let depth = if self.quick { DEEP } else { 1 };
        let held_alone = self.sent.front().is_some_and(|job| job.deadline.is_some());
        if self.gone || held_alone {
            0
        } else {
            let room = depth.saturating_sub(self.sent.len());
            self.left.map_or(room, |left| room.min(left))
        }
    }

    /// When its oldest task passes its deadline, if it has one and has started. A deadline
    /// too far to be an `Instant` never comes.
    pub(super) fn due(&self) -> Option<Instant> {
        let deadline = self.sent.front()?.deadline?;
        let started = self.ready && !self.overdue;
        started.then(|| self.since.checked_add(deadline)).flatten()
    }

    /// Its oldest task, which the worker ran to the end, from `start` to `end` after `base`:
    /// the task leaves the worker, and its slot and outcome go to `settled`, to be settled
    /// once the state's lock is released.
    pub(super) fn finished(
        &mut self,
        outcome: Outcome,
        start: Duration,
        end: Duration,
        settled: &mut Vec<(Arc<Slot>, Outcome)>,
    ) {
        let now = Instant::now();
        self.quick = now - self.since < QUICK;
        self.since = now;
        if let Some(mut job) = self.sent.pop_front() {
            self.sent_bytes -= job.frame.len() + WRITE_OVERHEAD;
            // Closed before the result is out: once `get` returns, the pool holds no copy.
            job.fds.clear();
            // Only a corrupt frame could overflow the clock; it would read as the fork's moment.
            let at = |offset| self.base.checked_add(offset).unwrap_or(self.base);
            let (pid, start, end) = (self.pid.as_raw(), at(start), at(end));
            let _ = job.slot.ran.set(Ran { pid, start, end });
            settled.push((job.slot, outcome));
        }
    }
}

impl Worker {
    /// Reads whatever the worker has sent, without waiting, and puts the tasks it finished in
    /// `settled`. A worker that died (`ended`) just after sending a result still has it read
    /// here, to the end of its stream. Whether a read filled `scratch`.
    pub(super) fn read_results(
        &mut self,
        ended: bool,
        scratch: &mut [u8],
        settled: &mut Vec<(Arc<Slot>, Outcome)>,
    ) -> bool {
        let mut filled = false;
        loop {
            match recv(self.results.as_raw_fd(), scratch, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                // A live worker's stream read short is empty for now; more wakes its reader
                // again.
                Ok(n) if n < scratch.len() && !ended => {
                    self.received.extend_from_slice(&scratch[..n]);
                    break;
                }
                Ok(n) => {
                    filled |= n == scratch.len();
                    self.received.extend_from_slice(&scratch[..n]);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    self.eof = true;
                    break;
                }
            }
        }
        let mut used = 0;
        while let Some(len) = self.received.get(used..used + 4) {
            let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
            let Some(frame) = self.received.get(used + 4..used + 4 + len) else {
                break;
            };
            used += 4 + len;
            match worker::result_of(frame) {
                Some(Report::Ended(outcome, start, end)) => {
                    self.finished(outcome, start, end, settled)
                }
                Some(Report::Ready) => {
                    self.ready = true;
                    self.since = Instant::now();
                }
                Some(Report::InitFailed(why)) => self.init_failed = Some(why),
                None => {}
            }
        }
        self.received.drain(..used);
        filled
    }

    /// Arms or disarms the manager's watch on its results: armed while a result or a report
    /// may come (it holds tasks, or has not said it is ready), nobody has claimed it, and
    /// its stream has not ended (after the end it would wake the manager for ever; its
    /// pidfd says when it is gone).
    pub(super) fn sync_arm(&mut self, epoll: &Epoll) {
        let wanted = (!self.sent.is_empty() || !self.ready) && !self.claimed && !self.eof;
        if wanted == self.armed {
            return;
        }
        let changed = if wanted {
            let event = EpollEvent::new(EpollFlags::EPOLLIN, Token::Results(self.id).encode());
            epoll.add(self.results.as_fd(), event)
        } else {
            epoll.delete(self.results.as_fd())
        };
        // It fails only if the kernel is out of memory; the state stays as it was, and the
        // next call tries again.
        if changed.is_ok() {
            self.armed = wanted;
        }
    }

    /// Takes it out of the manager's epoll, before it is dropped: an entry outlives the
    /// descriptor while a claiming thread holds a copy of it.
    pub(super) fn unwatch(&mut self, epoll: &Epoll) {
        if self.armed {
            let _ = epoll.delete(self.results.as_fd());
            self.armed = false;
        }
        let _ = epoll.delete(self.sentinel.as_fd());
    }
}

impl State {
    /// A running pool's state, before its first worker starts.
    pub(super) fn new() -> State {
        State {
            status: Status::Running,
            broken: None,
            pending: VecDeque::new(),
            workers: Vec::new(),
            settling: 0,
        }
    }

    /// Hands queued tasks to workers: first one to each worker that has none, then more to
    /// the workers whose tasks are quick. A worker's share goes in one write.
    pub(super) fn dispatch(&mut self) {
        for fill in [false, true] {
            for worker in &mut self.workers {
                if self.pending.is_empty() {
                    return;
                }
                let room = match fill {
                    false if worker.sent.is_empty() => worker.room().min(1),
                    false => 0,
                    true => worker.room(),
                };
                if room > 0 {
                    send(worker, &mut self.pending, room);
                }
            }
        }
    }

    /// No task is queued, held by a worker, or being settled by a claiming thread.
    pub(super) fn idle(&self) -> bool {
        self.pending.is_empty()
            && self.workers.iter().all(|w| w.sent.is_empty())
            && self.settling == 0
    }

    pub(super) fn sync_arms(&mut self, epoll: &Epoll) {
        self.workers.iter_mut().for_each(|w| w.sync_arm(epoll));
    }

    /// The index of the worker that holds the task settled in `slot`, if one does.
    pub(super) fn holder(&self, slot: &Arc<Slot>) -> Option<usize> {
        let holds = |w: &Worker| w.sent.iter().any(|job| Arc::ptr_eq(&job.slot, slot));
        self.workers.iter().position(holds)
    }

    pub(super) fn index_of(&self, id: u64) -> Option<usize> {
        self.workers.iter().position(|w| w.id == id)
    }
}

/// Sends up to `n` queued tasks to `worker`, in one write.
fn send(worker: &mut Worker, pending: &mut VecDeque<Job>, n: usize) {
    let mut jobs = Vec::new();
    let mut fd_count = 0;
    while let Some(job) = pending.front().filter(|_| jobs.len() < n) {
        // The descriptors of one write go in one control message, which holds `MAX_FDS`.
        if fd_count + job.fds.len() > fds::MAX_FDS {
            break;
        }
        // A worker with no task is reading, so its first task may be of any size. Tasks
        // behind it wait in the socket's buffer while the worker may be writing a result; if
        // they did not fit there, this write would wait for the worker, and the worker for
        // the manager, which waits for the lock this thread holds.
        let bytes = worker.sent_bytes + job.frame.len() + WRITE_OVERHEAD;
        if worker.sent_bytes > 0 && bytes > worker.budget {
            break;
        }
        // A task with a deadline goes alone to a worker that holds nothing else.
        if job.deadline.is_some() && !(jobs.is_empty() && worker.sent.is_empty()) {
            break;
        }
        let alone = job.deadline.is_some();
        fd_count += job.fds.len();
        worker.sent_bytes = bytes;
        jobs.push(pending.pop_front().unwrap());
        if alone {
            break;
        }
    }
    if jobs.is_empty() {
        return;
    }
    let joined: Vec<u8>;
    let bytes = match jobs.as_slice() {
        [job] => &job.frame,
        _ => {
            joined = jobs.iter().flat_map(|job| &job.frame).copied().collect();
            &joined
        }
    };
    let raw: Vec<RawFd> = jobs
        .iter()
        .flat_map(|job| &job.fds)
        .map(AsRawFd::as_raw_fd)
        .collect();
    let (written, failed) = write_counting(&worker.tasks, bytes, &raw);
    if worker.sent.is_empty() {
        worker.since = Instant::now();
    }
    // Only the tasks the worker received whole can have started; the others go back to the
    // queue. A worker that cannot be written to has its task stream shut down: it answers the
    // tasks it has, leaves when it reads the end (or has died already), and the manager
    // replaces it. Shut down, not killed by pid: a forkserver worker is the server's child,
    // and the server may have reaped it.
    let mut end = 0;
    let mut unsent = Vec::new();
    for job in jobs {
        end += job.frame.len();
        if end <= written {
            if let Some(left) = &mut worker.left {
                *left -= 1;
            }
            worker.sent.push_back(job);
        } else {
            worker.sent_bytes -= job.frame.len() + WRITE_OVERHEAD;
            unsent.push(job);
        }
    }
    if failed {
        worker.gone = true;
        let _ = worker.tasks.shutdown(Shutdown::Write);
    }
    for job in unsent.into_iter().rev() {
        pending.push_front(job);
    }
}

/// Writes `bytes`, and `fds` with the first of them (`SCM_RIGHTS`); returns how many bytes
/// were written and whether the write failed. Without descriptors, a plain `write`.
fn write_counting(mut to: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> (usize, bool) {
    let mut written = 0;
    while written < bytes.len() {
        let wrote = if written == 0 && !fds.is_empty() {
            let iov = [IoSlice::new(bytes)];
            let rights = [ControlMessage::ScmRights(fds)];
            let flags = MsgFlags::MSG_NOSIGNAL;
            sendmsg::<()>(to.as_raw_fd(), &iov, &rights, flags, None).map_err(io::Error::from)
        } else {
            to.write(&bytes[written..])
        };
        match wrote {
            Ok(0) => return (written, true),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (written, true),
        }
    }
    (written, false)
}
