//! A pool of worker processes with Python's `multiprocessing.Pool` API: `apply_async`,
//! `apply`, `map`, `close`, `join`, `terminate`, and an `AsyncResult` with `get`,
//! `get_timeout`, `ready` and `successful`, and `ran`: which worker ran the task, and when.
//!
//! How a task reaches a worker: the workers are forked from this program, so they hold the
//! same code at the same addresses. A task is a plain `fn(A) -> R`; the pool sends its address
//! together with the address of `call_one::<A, R>`, a function made for exactly that `A` and
//! `R`, which decodes the JSON arguments, calls the task and encodes its result. The compiler
//! checks that task, arguments and result agree; serde carries the values. A closure that
//! captures nothing is a `fn` too; one that captures is refused at compile time, much as
//! Python's pickle refuses a lambda.
//!
//! What this pool promises that Python's does not:
//! - a worker killed in the middle of a task (`kill -9`) fails that task's `get()` with an
//!   error naming the worker, a new worker takes its place, and every other task completes
//!   (Python's pool waits for ever: bpo-22393);
//! - no worker outlives the pool: `terminate()` and dropping the pool kill and reap them, and
//!   every worker gets SIGKILL when the pool's manager thread ends, which it does when the
//!   program ends, however it ends (Ctrl-C, SIGTERM, SIGKILL);
//! - every result is settled when the pool ends, so a `get()` never waits on a pool that is
//!   gone.
//!
//! Inside: each pool has one manager thread. It forks every worker, the first ones and each
//! replacement, because the parent-death signal fires when the *thread* that forked exits: the
//! forking thread must live exactly as long as the pool. It reads results and watches each
//! worker through a pidfd. Each worker has one socketpair and runs one task at a time, so the
//! pool always knows which task a dead worker was running.

#![allow(dead_code)] // The demo uses part of this API; the tests and the bench use the rest.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::marker::PhantomData;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::prctl;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{MsgFlags, getsockopt, recv, setsockopt, sockopt};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What went wrong with the pool or with one task. Asking a result again gives the same error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// `apply_async` or `map` after `close()` or `terminate()`.
    NotRunning,
    /// `join()` before `close()` or `terminate()`.
    StillRunning,
    /// The task panicked; the panic's message.
    Panicked(String),
    /// The worker running the task died, for example killed by `kill -9`.
    WorkerDied { pid: i32, how: String },
    /// `get_timeout`: the result was not ready in time. The task goes on.
    Timeout,
    /// The pool was terminated before the task finished.
    Terminated,
    /// The pool could not go on, for example a replacement worker could not be forked.
    Broken(String),
    /// The arguments or the result could not be encoded or decoded.
    Serde(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Error::NotRunning => write!(f, "Pool not running (close() or terminate() was called)"),
            Error::StillRunning => write!(f, "join() before close() or terminate()"),
            Error::Panicked(message) => write!(f, "the task panicked: {message}"),
            Error::WorkerDied { pid, how } => {
                write!(f, "the worker running the task (pid {pid}) died: {how}")
            }
            Error::Timeout => write!(f, "the result is not ready yet"),
            Error::Terminated => write!(f, "the pool was terminated before the task finished"),
            Error::Broken(why) => write!(f, "the pool broke down: {why}"),
            Error::Serde(why) => write!(f, "could not encode or decode {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// A pool of worker processes. Dropping it terminates it.
pub struct Pool {
    shared: Arc<Shared>,
    manager: Option<JoinHandle<()>>,
}

/// The result of `apply_async`, settled when the task ends, its worker dies or the pool ends.
pub struct AsyncResult<R> {
    slot: Arc<Slot>,
    result: PhantomData<fn() -> R>,
}

/// Where and when a task ran: the pid of the worker, and the moments the task started and
/// ended there, on the clock of `Instant::now()` (a worker is a fork of this program and reads
/// the same monotonic clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ran {
    pub pid: i32,
    pub start: Instant,
    pub end: Instant,
}

impl Pool {
    /// Python's `Pool(processes)`: starts the workers. `None` means one per CPU.
    pub fn new(processes: impl Into<Option<usize>>) -> io::Result<Pool> {
        let n = match processes.into() {
            Some(n) => n,
            None => thread::available_parallelism()?.get(),
        };
        if n == 0 {
            let message = "Number of processes must be at least 1";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                status: Status::Running,
                broken: None,
                pending: VecDeque::new(),
                workers: Vec::new(),
            }),
            wake,
        });
        let (started_tx, started) = mpsc::channel();
        let manager_shared = Arc::clone(&shared);
        // The thread stays unnamed: the workers are copies of it, and a demo's `say!` prints
        // `[pid N]` for an unnamed thread. Tasks run on its stack, so give it a main-sized one.
        let manager = thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || manager_main(&manager_shared, woken, n, started_tx))?;
        match started.recv() {
            Ok(Ok(())) => Ok(Pool {
                shared,
                manager: Some(manager),
            }),
            Ok(Err(e)) => {
                let _ = manager.join();
                Err(e)
            }
            Err(_) => {
                let _ = manager.join();
                Err(io::Error::other(
                    "the pool's manager thread failed to start the workers",
                ))
            }
        }
    }

    /// The pids of the workers now running.
    pub fn pids(&self) -> Vec<i32> {
        lock(&self.shared.state)
            .workers
            .iter()
            .map(|w| w.pid.as_raw())
            .collect()
    }

    /// Python's `apply_async(task, args)`: queues `task(args)` and returns at once.
    pub fn apply_async<A, R>(&self, task: fn(A) -> R, args: A) -> Result<AsyncResult<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let frame = task_frame(call_one::<A, R>, task as usize, &args)?;
        Ok(AsyncResult {
            slot: self.submit(frame)?,
            result: PhantomData,
        })
    }

    /// Python's `apply(task, args)`: runs `task(args)` in a worker and waits for its result.
    pub fn apply<A, R>(&self, task: fn(A) -> R, args: A) -> Result<R, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.apply_async(task, args)?.get()
    }

    /// Python's `map(task, items)`: the results in the order of the items. As in Python, the
    /// items travel in chunks, about four per worker, and the first failed chunk is the error.
    pub fn map<A, R>(
        &self,
        task: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let items: Vec<A> = items.into_iter().collect();
        let workers = lock(&self.shared.state).workers.len().max(1);
        let chunk = items.len().div_ceil(workers * 4).max(1);
        let chunks = items
            .chunks(chunk)
            .map(|chunk| {
                let frame = task_frame(call_chunk::<A, R>, task as usize, chunk)?;
                Ok(AsyncResult::<Vec<R>> {
                    slot: self.submit(frame)?,
                    result: PhantomData,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let mut results = Vec::with_capacity(items.len());
        for chunk in chunks {
            results.extend(chunk.get()?);
        }
        Ok(results)
    }

    /// Python's `close()`: no more tasks; the workers leave once the queued ones are done.
    pub fn close(&self) {
        let mut state = lock(&self.shared.state);
        if state.status == Status::Running {
            state.status = Status::Closed;
        }
        drop(state);
        self.wake_manager();
    }

    /// Python's `join()`: waits until every task has ended and every worker has been reaped.
    /// It ends because each task either returns, panics or loses its worker; a task that
    /// never returns keeps it waiting, as in Python.
    pub fn join(&mut self) -> Result<(), Error> {
        if lock(&self.shared.state).status == Status::Running {
            return Err(Error::StillRunning);
        }
        if let Some(manager) = self.manager.take() {
            let _ = manager.join();
        }
        Ok(())
    }

    /// Python's `terminate()`: kills every worker at once (SIGKILL) and reaps it; each
    /// unfinished task's `get()` says the pool was terminated.
    pub fn terminate(&mut self) {
        lock(&self.shared.state).status = Status::Terminated;
        self.wake_manager();
        if let Some(manager) = self.manager.take() {
            let _ = manager.join();
        }
    }

    fn submit(&self, frame: Vec<u8>) -> Result<Arc<Slot>, Error> {
        let slot = Arc::new(Slot::default());
        let mut state = lock(&self.shared.state);
        if let Some(why) = &state.broken {
            return Err(Error::Broken(why.clone()));
        }
        if state.status != Status::Running {
            return Err(Error::NotRunning);
        }
        state.pending.push_back(Job {
            frame,
            slot: Arc::clone(&slot),
        });
        state.dispatch();
        Ok(slot)
    }

    fn wake_manager(&self) {
        // A full wake socket already holds a wake-up, so a failed write loses nothing.
        let _ = (&self.shared.wake).write(&[1]);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Waits for the result. It comes: the pool settles every result at the latest when it
    /// ends, and dropping the pool ends it.
    pub fn get(&self) -> Result<R, Error> {
        self.wait(None)
    }

    /// Waits at most `timeout`; `Err(Error::Timeout)` if the result is not ready by then.
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, Error> {
        self.wait(Some(Instant::now() + timeout))
    }

    /// Whether the result is settled.
    pub fn ready(&self) -> bool {
        lock(&self.slot.outcome).is_some()
    }

    /// Whether the task returned without an error; `None` while it is not ready (where
    /// Python raises `ValueError`).
    pub fn successful(&self) -> Option<bool> {
        lock(&self.slot.outcome).as_ref().map(Result::is_ok)
    }

    /// Which worker ran the task, and when: known once the task has returned or panicked
    /// (when `ready()`), and `None` before, or if the task never ended in a worker (its
    /// worker died, or the pool ended first). Python's `AsyncResult` has nothing like it.
    pub fn ran(&self) -> Option<Ran> {
        self.slot.ran.get().copied()
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<R, Error> {
        let mut outcome = lock(&self.slot.outcome);
        loop {
            match &*outcome {
                Some(Ok(bytes)) => {
                    return serde_json::from_slice(bytes)
                        .map_err(|e| Error::Serde(format!("the result: {e}")));
                }
                Some(Err(e)) => return Err(e.clone()),
                None => {}
            }
            self.slot.waiting.store(true, Ordering::Relaxed);
            outcome = match deadline {
                None => self
                    .slot
                    .settled
                    .wait(outcome)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout);
                    }
                    let waited = self.slot.settled.wait_timeout(outcome, left);
                    waited.unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
    }
}

// ---- What the submitting threads and the manager share ----

struct Shared {
    state: Mutex<State>,
    /// Written to wake the manager for `close` and `terminate`.
    wake: UnixStream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Running,
    Closed,
    Terminated,
}

struct State {
    status: Status,
    broken: Option<String>,
    pending: VecDeque<Job>,
    workers: Vec<Worker>,
}

/// A task on its way: its frame, kept until the result comes in case another worker must
/// run it, and where its result goes.
struct Job {
    frame: Vec<u8>,
    slot: Arc<Slot>,
}

/// A worker as the submitting threads see it: where to send tasks, and the tasks sent to it
/// whose results have not come back, oldest first.
struct Worker {
    pid: Pid,
    tasks: UnixStream,
    sent: VecDeque<Job>,
    /// Whether its last task took less than `QUICK`.
    quick: bool,
    /// When its last result came, or when it was given a task while it had none.
    since: Instant,
    /// A write to it failed: it is being killed and gets nothing more.
    gone: bool,
    /// What its unfinished tasks take in its socket's buffer, at most.
    sent_bytes: usize,
    /// How much of that buffer tasks beyond the first may take.
    budget: usize,
    /// The moment just before its fork: the worker sends its tasks' times as offsets from it.
    base: Instant,
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
        if self.gone {
            0
        } else {
            depth.saturating_sub(self.sent.len())
        }
    }

    /// Settles its oldest task, which the worker ran to the end, from `start` to `end`
    /// after `base`.
    fn finished(&mut self, outcome: Outcome, start: Duration, end: Duration) {
        let now = Instant::now();
        self.quick = now - self.since < QUICK;
        self.since = now;
        if let Some(job) = self.sent.pop_front() {
            self.sent_bytes -= job.frame.len() + WRITE_OVERHEAD;
            // Only a corrupt frame could overflow the clock; it would read as the fork's moment.
            let at = |offset| self.base.checked_add(offset).unwrap_or(self.base);
            let (pid, start, end) = (self.pid.as_raw(), at(start), at(end));
            let _ = job.slot.ran.set(Ran { pid, start, end });
            job.slot.settle(outcome);
        }
    }
}

/// A worker as the manager watches it: results come in on `results`, its end on `pidfd`.
struct Link {
    results: UnixStream,
    pidfd: OwnedFd,
    received: Vec<u8>,
    eof: bool,
}

/// The encoded result or the error; settled once.
type Outcome = Result<Vec<u8>, Error>;

#[derive(Default)]
struct Slot {
    outcome: Mutex<Option<Outcome>>,
    /// Whether a `get` is waiting, so that a result nobody waits for costs no wake-up call.
    waiting: AtomicBool,
    settled: Condvar,
    /// Set before the outcome, when a worker reports the task's end.
    ran: OnceLock<Ran>,
}

impl Slot {
    fn settle(&self, outcome: Outcome) {
        let mut slot = lock(&self.outcome);
        if slot.is_none() {
            *slot = Some(outcome);
            if self.waiting.load(Ordering::Relaxed) {
                self.settled.notify_all();
            }
        }
    }
}

impl State {
    /// Hands queued tasks to workers: first one to each worker that has none, then more to
    /// the workers whose tasks are quick. A worker's share goes in one write.
    fn dispatch(&mut self) {
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

    fn idle(&self) -> bool {
        self.pending.is_empty() && self.workers.iter().all(|w| w.sent.is_empty())
    }
}

/// Sends up to `n` queued tasks to `worker`, in one write.
fn send(worker: &mut Worker, pending: &mut VecDeque<Job>, n: usize) {
    let mut jobs = Vec::new();
    while let Some(job) = pending.front().filter(|_| jobs.len() < n) {
        // A worker with no task is reading, so its first task may be of any size. Tasks
        // behind it wait in the socket's buffer while the worker may be writing a result; if
        // they did not fit there, this write would wait for the worker, and the worker for
        // the manager, which waits for the lock this thread holds.
        let bytes = worker.sent_bytes + job.frame.len() + WRITE_OVERHEAD;
        if worker.sent_bytes > 0 && bytes > worker.budget {
            break;
        }
        worker.sent_bytes = bytes;
        jobs.push(pending.pop_front().unwrap());
    }
    let joined: Vec<u8>;
    let bytes = match jobs.as_slice() {
        [job] => &job.frame,
        _ => {
            joined = jobs.iter().flat_map(|job| &job.frame).copied().collect();
            &joined
        }
    };
    let (written, failed) = write_counting(&worker.tasks, bytes);
    if worker.sent.is_empty() {
        worker.since = Instant::now();
    }
    // Only the tasks the worker received whole can have started; the others go back to the
    // queue. A worker that cannot be written to is killed, and the manager replaces it.
    let mut end = 0;
    let mut unsent = Vec::new();
    for job in jobs {
        end += job.frame.len();
        if end <= written {
            worker.sent.push_back(job);
        } else {
            worker.sent_bytes -= job.frame.len() + WRITE_OVERHEAD;
            unsent.push(job);
        }
    }
    if failed {
        worker.gone = true;
        let _ = kill(worker.pid, Signal::SIGKILL);
    }
    for job in unsent.into_iter().rev() {
        pending.push_front(job);
    }
}

/// Writes `bytes`; returns how many were written and whether the write failed.
fn write_counting(mut to: &UnixStream, bytes: &[u8]) -> (usize, bool) {
    let mut written = 0;
    while written < bytes.len() {
        match to.write(&bytes[written..]) {
            Ok(0) => return (written, true),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (written, true),
        }
    }
    (written, false)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while the lock was held leaves the state consistent for what follows: every
    // change to it is a single push, pop or assignment.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---- The wire: one frame per task, one per result, on each worker's socketpair ----

/// What a worker calls: decodes the arguments, calls the task, appends the encoded result.
type Call = fn(usize, &[u8], &mut Vec<u8>) -> Result<(), String>;

/// A task frame: length of the rest (u32), the `Call` (u64), the task (u64), JSON arguments.
const TASK_HEADER: usize = 4 + 8 + 8;
/// A result frame: length of the rest (u32), kind (u8), when the task started and ended in
/// nanoseconds after the worker's base instant (u64 each), JSON result or a message.
const RESULT_HEADER: usize = 4 + 1 + 8 + 8;
const RETURNED: u8 = 0;
const PANICKED: u8 = 1;
const UNCODABLE: u8 = 2;

fn task_frame<A: Serialize + ?Sized>(call: Call, task: usize, args: &A) -> Result<Vec<u8>, Error> {
    let mut frame = vec![0; TASK_HEADER];
    frame[4..12].copy_from_slice(&(call as usize as u64).to_le_bytes());
    frame[12..20].copy_from_slice(&(task as u64).to_le_bytes());
    serde_json::to_writer(&mut frame, args)
        .map_err(|e| Error::Serde(format!("the arguments: {e}")))?;
    let len =
        u32::try_from(frame.len() - 4).map_err(|_| Error::Serde("arguments over 4 GiB".into()))?;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    Ok(frame)
}

fn call_one<A: DeserializeOwned, R: Serialize>(
    task: usize,
    args: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // SAFETY: `task` is the address of a `fn(A) -> R` that `apply_async::<A, R>` sent together
    // with this very function, `call_one::<A, R>`. This worker is a fork of the program that
    // took the address, so the same function is at that address here.
    let task = unsafe { std::mem::transmute::<usize, fn(A) -> R>(task) };
    let args = serde_json::from_slice(args).map_err(|e| format!("the arguments: {e}"))?;
    serde_json::to_writer(out, &task(args)).map_err(|e| format!("the result: {e}"))
}

fn call_chunk<A: DeserializeOwned, R: Serialize>(
    task: usize,
    args: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // SAFETY: as in `call_one`: `map::<A, R>` sent this function with a `fn(A) -> R`.
    let task = unsafe { std::mem::transmute::<usize, fn(A) -> R>(task) };
    let items: Vec<A> = serde_json::from_slice(args).map_err(|e| format!("the arguments: {e}"))?;
    let results: Vec<R> = items.into_iter().map(task).collect();
    serde_json::to_writer(out, &results).map_err(|e| format!("the result: {e}"))
}

// ---- The manager thread ----

fn manager_main(
    shared: &Shared,
    woken: UnixStream,
    n: usize,
    started: mpsc::Sender<io::Result<()>>,
) {
    let mut links = Vec::new();
    let first = {
        let mut state = lock(&shared.state);
        (0..n).try_for_each(|_| {
            let inherited = pool_fds(shared, &woken, &state, &links);
            let (worker, link) = start_worker(inherited)?;
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

    let ended = panic::catch_unwind(AssertUnwindSafe(|| manage(shared, &woken, &mut links)));
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
fn manage(shared: &Shared, woken: &UnixStream, links: &mut Vec<Link>) -> io::Result<()> {
    let mut scratch = vec![0; 64 * 1024];
    loop {
        let (results, ended) = wait_for_events(woken, links)?;
        drain(woken);
        let mut state = lock(&shared.state);
        for &i in results.iter().chain(&ended) {
            read_results(&mut links[i], &mut state.workers[i], &mut scratch);
        }
        // From the highest index down, so that removing a worker keeps the others' indexes.
        for &i in ended.iter().rev() {
            let pid = state.workers[i].pid;
            let how = reap(pid);
            // Its oldest task is the one it was running; the ones behind it had not started,
            // so they go back to the front of the queue for another worker.
            let mut sent = std::mem::take(&mut state.workers[i].sent);
            state.workers[i].sent_bytes = 0;
            if let Some(job) = sent.pop_front() {
                job.slot.settle(Err(Error::WorkerDied {
                    pid: pid.as_raw(),
                    how,
                }));
            }
            while let Some(job) = sent.pop_back() {
                state.pending.push_front(job);
            }
            if state.status == Status::Running || !state.pending.is_empty() {
                let inherited = pool_fds(shared, woken, &state, links);
                match start_worker(inherited) {
                    Ok((worker, link)) => {
                        state.workers[i] = worker;
                        links[i] = link;
                    }
                    Err(e) => {
                        // Reaped: its pid may soon be another process's, so forget it.
                        state.workers.remove(i);
                        links.remove(i);
                        return Err(e);
                    }
                }
            } else {
                state.workers.remove(i);
                links.remove(i);
            }
        }
        match state.status {
            Status::Terminated => return Ok(()),
            Status::Closed if state.idle() => return Ok(()),
            _ => state.dispatch(),
        }
    }
}

/// Waits until a worker sends results or ends, or the pool wakes the manager. Returns the
/// indexes of the workers with results and of those that ended.
fn wait_for_events(woken: &UnixStream, links: &mut [Link]) -> io::Result<(Vec<usize>, Vec<usize>)> {
    let mut fds = vec![PollFd::new(woken.as_fd(), PollFlags::POLLIN)];
    let mut owners = vec![];
    for (i, link) in links.iter().enumerate() {
        // After end of file the results socket would report POLLHUP on every poll; the
        // pidfd tells when the worker is gone.
        if !link.eof {
            fds.push(PollFd::new(link.results.as_fd(), PollFlags::POLLIN));
            owners.push((i, false));
        }
        fds.push(PollFd::new(link.pidfd.as_fd(), PollFlags::POLLIN));
        owners.push((i, true));
    }
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
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
    Ok((results, ended))
}

fn drain(woken: &UnixStream) {
    let mut buf = [0; 64];
    while matches!((&*woken).read(&mut buf), Ok(n) if n > 0) {}
}

/// Reads whatever the worker has sent, without waiting, and settles the tasks it finished.
/// A worker that died just after sending a result still has it read here.
fn read_results(link: &mut Link, worker: &mut Worker, scratch: &mut [u8]) {
    loop {
        match recv(link.results.as_raw_fd(), scratch, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => {
                link.eof = true;
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
        if frame.len() < RESULT_HEADER - 4 {
            continue;
        }
        let (kind, body) = (frame[0], &frame[RESULT_HEADER - 4..]);
        let nanos = |at: usize| u64::from_le_bytes(frame[at..at + 8].try_into().unwrap());
        let (start, end) = (
            Duration::from_nanos(nanos(1)),
            Duration::from_nanos(nanos(9)),
        );
        let outcome = match kind {
            RETURNED => Ok(body.to_vec()),
            PANICKED => Err(Error::Panicked(String::from_utf8_lossy(body).into_owned())),
            _ => Err(Error::Serde(String::from_utf8_lossy(body).into_owned())),
        };
        worker.finished(outcome, start, end);
    }
    link.received.drain(..used);
}

/// Reaps an ended worker and says how it ended.
fn reap(pid: Pid) -> String {
    loop {
        return match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            Ok(WaitStatus::Signaled(_, signal, _)) => format!("killed by {signal}"),
            Ok(WaitStatus::Exited(_, code)) => format!("exited with code {code}"),
            Ok(_) | Err(_) => "ended".to_string(),
        };
    }
}

/// Stops every worker: `kill` with SIGKILL, otherwise by ending its task stream, after which
/// an idle worker exits by itself. Reaps them all and settles every unfinished task.
fn shutdown(state: &mut State, links: Vec<Link>, kill_them: bool, reason: Error) {
    let workers = std::mem::take(&mut state.workers);
    for worker in &workers {
        if kill_them {
            let _ = kill(worker.pid, Signal::SIGKILL);
        } else {
            // `shutdown` reaches the worker even if another process holds a copy of this
            // socket, which closing it would not.
            let _ = worker.tasks.shutdown(Shutdown::Both);
        }
    }
    // Waiting for a worker to end is bounded: it was killed, or it is idle, reading its
    // task stream, and leaves when that ends.
    drop(links);
    for worker in workers {
        reap(worker.pid);
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
    fds.extend(
        links
            .iter()
            .flat_map(|l| [l.results.as_raw_fd(), l.pidfd.as_raw_fd()]),
    );
    fds
}

// ---- A worker ----

/// Forks a worker. Runs on the manager thread only, which lives as long as the pool.
fn start_worker(mut inherited: Vec<RawFd>) -> io::Result<(Worker, Link)> {
    let (ours, theirs) = UnixStream::pair()?;
    let tasks = ours.try_clone()?;
    // Ask for a 256 KiB buffer; the kernel may give less. Queued tasks may use a quarter.
    let _ = setsockopt(&ours, sockopt::SndBuf, &(256 << 10));
    let budget = getsockopt(&ours, sockopt::SndBuf)? / 4;
    inherited.extend([ours.as_raw_fd(), tasks.as_raw_fd()]);
    let parent = getpid();
    let base = Instant::now();
    // The child has only this thread. Holding the stdout and stderr locks across the fork
    // means no other thread holds them there, so a task can print; flushing means nothing
    // buffered is printed twice.
    let mut stdout = io::stdout().lock();
    stdout.flush()?;
    let stderr = io::stderr().lock();
    // SAFETY: the child runs only `worker_main`, which never returns into the parent's code
    // and ends with `_exit`. Locks that other threads held at the fork stay locked in the
    // child: the pool's state is one, and the child never touches it; stdout and stderr are
    // held by this thread and released in the child. A task that waits on a lock another
    // thread of the parent held at the fork waits for ever (see the README).
    let pid = match unsafe { fork() }? {
        ForkResult::Child => {
            drop(stderr);
            drop(stdout);
            worker_main(parent, &theirs, &inherited, base)
        }
        ForkResult::Parent { child } => child,
    };
    drop(stderr);
    drop(stdout);
    drop(theirs);
    let pidfd = pidfd_open(pid).inspect_err(|_| {
        let _ = kill(pid, Signal::SIGKILL);
        reap(pid);
    })?;
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
    };
    Ok((
        worker,
        Link {
            results: ours,
            pidfd,
            received: Vec::new(),
            eof: false,
        },
    ))
}

fn worker_main(parent: Pid, sock: &UnixStream, inherited: &[RawFd], base: Instant) -> ! {
    // SIGKILL when the manager thread ends, that is when the pool or the program ends.
    if prctl::set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != parent {
        exit_now(1);
    }
    for &fd in inherited {
        // SAFETY: these descriptors belong to the parent's side of the pool. Their owners
        // live in memory this process copied and never uses again: it never returns into
        // the parent's code and ends with `_exit`, so nothing closes them a second time.
        unsafe { libc::close(fd) };
    }
    exit_now(serve(sock, base))
}

/// Runs tasks until the pool ends the task stream: 0, or 1 if the stream broke. Each result
/// says when its task started and ended, after `base`.
fn serve(sock: &UnixStream, base: Instant) -> i32 {
    let mut reader = BufReader::with_capacity(64 * 1024, sock);
    let mut args = Vec::new();
    let mut out = Vec::new();
    let mut reseeded = false;
    loop {
        let mut header = [0; TASK_HEADER];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return 0,
            Err(_) => return 1,
        }
        let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap()) as usize;
        let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        let (call, task) = (word(4), word(12));
        let Some(args_len) = len.checked_sub(TASK_HEADER - 4) else {
            return 1;
        };
        args.resize(args_len, 0);
        if reader.read_exact(&mut args).is_err() {
            return 1;
        }
        // SAFETY: only the pool writes to this socket, and it writes the address of a `Call`
        // taken in the program this process is a fork of, where it is the same function.
        let call = unsafe { std::mem::transmute::<usize, Call>(call) };
        if !reseeded {
            // A forked random generator repeats the parent's numbers in every worker: reseed
            // the thread's generator from the OS before the first task, as Python's `random`
            // does after a fork. (Before the first task, not at start: a pool that is never
            // used pays nothing.)
            let _ = rand::rng().reseed();
            reseeded = true;
        }
        out.clear();
        out.resize(RESULT_HEADER, 0);
        let start = base.elapsed();
        let kind = match panic::catch_unwind(AssertUnwindSafe(|| call(task, &args, &mut out))) {
            Ok(Ok(())) => RETURNED,
            Ok(Err(why)) => {
                out.truncate(RESULT_HEADER);
                out.extend_from_slice(why.as_bytes());
                UNCODABLE
            }
            Err(payload) => {
                out.truncate(RESULT_HEADER);
                out.extend_from_slice(panic_message(&*payload).as_bytes());
                PANICKED
            }
        };
        let (kind, len) = match u32::try_from(out.len() - 4) {
            Ok(len) => (kind, len),
            Err(_) => {
                out.truncate(RESULT_HEADER);
                out.extend_from_slice(b"the result: over 4 GiB");
                (UNCODABLE, (out.len() - 4) as u32)
            }
        };
        let nanos = |d: Duration| {
            u64::try_from(d.as_nanos())
                .unwrap_or(u64::MAX)
                .to_le_bytes()
        };
        out[..4].copy_from_slice(&len.to_le_bytes());
        out[4] = kind;
        out[5..13].copy_from_slice(&nanos(start));
        out[13..21].copy_from_slice(&nanos(base.elapsed()));
        if (&*sock).write_all(&out).is_err() {
            return 1;
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message.to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Ends a worker at once, without running the parent's exit handlers or destructors.
fn exit_now(code: i32) -> ! {
    let _ = io::stdout().flush();
    // SAFETY: `_exit` ends the process immediately; it is always sound to call.
    unsafe { libc::_exit(code) }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::mem::ManuallyDrop;
    use std::os::fd::IntoRawFd;

    use nix::sys::wait::{Id, WaitPidFlag, waitid};

    // A forked worker's output is lost inside the test harness: these tests look only at
    // results, errors and pids. Tasks that must be mid-task when the test acts report their
    // pid on a pipe and then wait for a byte on another, so no test sleeps to synchronise.

    /// Two pipes between a test and its tasks, opened before the pool forks its workers so
    /// that every worker, replacements included, inherits them.
    struct Rendezvous {
        reports: File,
        release: File,
        /// The tasks' ends, as (report write end, release read end).
        ends: (RawFd, RawFd),
    }

    impl Rendezvous {
        fn new() -> Rendezvous {
            let (reports, report_end) = nix::unistd::pipe().unwrap();
            let (release_end, release) = nix::unistd::pipe().unwrap();
            let ends = (report_end.into_raw_fd(), release_end.into_raw_fd());
            Rendezvous {
                reports: reports.into(),
                release: release.into(),
                ends,
            }
        }

        /// The pid of the next task that has started, waiting at most 20 s.
        fn next_pid(&mut self) -> i32 {
            let mut fds = [PollFd::new(self.reports.as_fd(), PollFlags::POLLIN)];
            assert_eq!(
                poll(&mut fds, PollTimeout::from(20_000u16)).unwrap(),
                1,
                "no task started"
            );
            let mut pid = [0; 4];
            self.reports.read_exact(&mut pid).unwrap();
            i32::from_le_bytes(pid)
        }

        /// Lets `n` waiting tasks finish.
        fn release(&mut self, n: usize) {
            self.release.write_all(&vec![0; n]).unwrap();
        }
    }

    impl Drop for Rendezvous {
        fn drop(&mut self) {
            // SAFETY: the tasks' ends were leaked from `OwnedFd`s in `new` and are closed once,
            // here; the workers hold their own copies.
            unsafe {
                libc::close(self.ends.0);
                libc::close(self.ends.1);
            }
        }
    }

    fn borrowed(fd: RawFd) -> ManuallyDrop<File> {
        // SAFETY: the test keeps the pipe open while the pool lives, and `ManuallyDrop`
        // keeps this `File` from closing a descriptor it does not own.
        ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
    }

    /// Reports this worker's pid, waits for the test's byte, returns the pid and a number
    /// drawn from the worker's random generator.
    fn report_and_wait((report, release): (RawFd, RawFd)) -> (i32, u64) {
        let pid = std::process::id() as i32;
        borrowed(report).write_all(&pid.to_le_bytes()).unwrap();
        borrowed(release).read_exact(&mut [0]).unwrap();
        (pid, rand::random())
    }

    fn square(x: u64) -> u64 {
        x * x
    }

    fn pid_of_worker(_: ()) -> i32 {
        std::process::id() as i32
    }

    fn pidfd(pid: i32) -> OwnedFd {
        pidfd_open(Pid::from_raw(pid)).unwrap()
    }

    /// Whether the process behind `pidfd` is a child of ours that has not been reaped.
    fn unreaped_child(pidfd: &OwnedFd) -> bool {
        waitid(
            Id::PIDFd(pidfd.as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) != Err(Errno::ECHILD)
    }

    #[test]
    fn map_returns_the_results_in_input_order() {
        let pool = Pool::new(3).unwrap();
        let squares = pool.map(square, 0..1000).unwrap();
        assert_eq!(squares, (0..1000).map(|x| x * x).collect::<Vec<u64>>());
        assert_eq!(pool.map(square, []).unwrap(), Vec::<u64>::new());
        // A closure that captures nothing is a `fn` too.
        assert_eq!(
            pool.map(|s: String| s.len(), ["a", "bcd"].map(String::from))
                .unwrap(),
            [1, 3]
        );
    }

    #[test]
    fn get_timeout_times_out_while_the_task_runs() {
        let mut rendezvous = Rendezvous::new();
        let pool = Pool::new(1).unwrap();
        let result = pool.apply_async(report_and_wait, rendezvous.ends).unwrap();
        let pid = rendezvous.next_pid();
        assert_eq!(
            result.get_timeout(Duration::from_millis(20)),
            Err(Error::Timeout)
        );
        assert!(!result.ready());
        assert_eq!(result.successful(), None);
        rendezvous.release(1);
        assert_eq!(result.get_timeout(Duration::from_secs(20)).unwrap().0, pid);
        assert!(result.ready());
        assert_eq!(result.successful(), Some(true));
        assert_ne!(pid, std::process::id() as i32);
    }

    #[test]
    fn a_result_knows_which_worker_ran_it_and_when() {
        let pool = Pool::new(1).unwrap();
        let before = Instant::now();
        let first = pool.apply_async(pid_of_worker, ()).unwrap();
        let crash = pool
            .apply_async(
                |_: ()| -> u64 { panic!("boom (this panic is expected)") },
                (),
            )
            .unwrap();
        let pid = first.get().unwrap();
        assert!(crash.get().is_err());
        let after = Instant::now();
        let (first, crash) = (first.ran().unwrap(), crash.ran().unwrap());
        assert_eq!((first.pid, crash.pid), (pid, pid));
        // One clock for the pool and its workers: each task inside the test's interval, the
        // second after the first on the single worker.
        assert!(before <= first.start && first.start <= first.end);
        assert!(first.end <= crash.start && crash.start <= crash.end && crash.end <= after);
    }

    #[test]
    fn misuse_is_an_error_as_in_python() {
        assert_eq!(
            Pool::new(0).err().unwrap().kind(),
            io::ErrorKind::InvalidInput
        );
        let mut pool = Pool::new(2).unwrap();
        assert_eq!(pool.join(), Err(Error::StillRunning));
        let queued: Vec<_> = (0..10)
            .map(|x| pool.apply_async(square, x).unwrap())
            .collect();
        pool.close();
        assert_eq!(pool.apply_async(square, 1).err(), Some(Error::NotRunning));
        assert_eq!(pool.map(square, 0..3), Err(Error::NotRunning));
        // Tasks queued before close() still run; join() waits for them and the workers.
        pool.join().unwrap();
        assert!(
            queued
                .iter()
                .enumerate()
                .all(|(x, r)| r.get() == Ok(x as u64 * x as u64))
        );
        assert_eq!(pool.pids(), Vec::<i32>::new());
    }

    #[test]
    fn a_panicking_task_fails_its_get_and_the_pool_goes_on() {
        let pool = Pool::new(1).unwrap();
        let workers = pool.pids();
        let result = pool
            .apply_async(
                |_: ()| -> u64 { panic!("boom (this panic is expected)") },
                (),
            )
            .unwrap();
        assert_eq!(
            result.get(),
            Err(Error::Panicked("boom (this panic is expected)".into()))
        );
        assert_eq!(result.successful(), Some(false));
        assert_eq!(pool.apply(square, 7), Ok(49));
        // The same worker: a panic ends the task, not the process.
        assert_eq!(pool.pids(), workers);
        assert_eq!(pool.apply(pid_of_worker, ()).unwrap(), workers[0]);
    }

    #[test]
    fn a_worker_killed_mid_task_fails_that_task_only_and_is_replaced() {
        let mut rendezvous = Rendezvous::new();
        let pool = Pool::new(2).unwrap();
        let victim = pool.apply_async(report_and_wait, rendezvous.ends).unwrap();
        let pid = rendezvous.next_pid();
        let others: Vec<_> = (0..50)
            .map(|x| pool.apply_async(square, x).unwrap())
            .collect();
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();

        let Err(Error::WorkerDied { pid: died, how }) = victim.get() else {
            panic!("{:?}", victim.get())
        };
        assert_eq!((died, how.as_str()), (pid, "killed by SIGKILL"));
        assert_eq!(victim.ran(), None, "the task never ended in a worker");
        assert!(
            others
                .iter()
                .enumerate()
                .all(|(x, r)| r.get() == Ok(x as u64 * x as u64) && r.ran().unwrap().pid != pid)
        );
        let workers = pool.pids();
        assert_eq!(workers.len(), 2);
        assert!(!workers.contains(&pid));
        // Both workers run: two tasks that wait for each other's start run on two live pids.
        let pair: Vec<_> = (0..2)
            .map(|_| pool.apply_async(report_and_wait, rendezvous.ends).unwrap())
            .collect();
        let started = [rendezvous.next_pid(), rendezvous.next_pid()];
        assert_ne!(started[0], started[1]);
        assert!(started.iter().all(|p| workers.contains(p)));
        rendezvous.release(2);
        assert!(pair.iter().all(|r| r.get().is_ok()));
    }

    #[test]
    fn a_value_json_cannot_carry_is_a_serde_error() {
        let pool = Pool::new(1).unwrap();
        // JSON has no NaN: serde_json writes `null`, which does not decode as an f64.
        assert!(matches!(
            pool.apply(|x: f64| x, f64::NAN),
            Err(Error::Serde(_))
        ));
        assert!(matches!(
            pool.apply(|_: ()| f64::NAN, ()),
            Err(Error::Serde(_))
        ));
        assert_eq!(pool.apply(|x: f64| x * 2.0, 1.5), Ok(3.0));
    }

    #[test]
    fn a_task_that_ends_its_worker_fails_with_the_exit_code() {
        let pool = Pool::new(1).unwrap();
        let result = pool
            .apply_async(|code: i32| -> u64 { std::process::exit(code) }, 3)
            .unwrap();
        assert!(
            matches!(result.get(), Err(Error::WorkerDied { how, .. }) if how == "exited with code 3")
        );
        assert_eq!(pool.apply(square, 3), Ok(9));
    }

    #[test]
    fn terminate_kills_and_reaps_every_worker_and_settles_every_task() {
        let mut rendezvous = Rendezvous::new();
        let mut pool = Pool::new(2).unwrap();
        let running: Vec<_> = (0..2)
            .map(|_| pool.apply_async(report_and_wait, rendezvous.ends).unwrap())
            .collect();
        let pidfds = [rendezvous.next_pid(), rendezvous.next_pid()].map(pidfd);
        let queued = pool.apply_async(square, 2).unwrap();
        assert!(pidfds.iter().all(unreaped_child));
        pool.terminate();
        assert!(pidfds.iter().all(|fd| !unreaped_child(fd)));
        assert!(running.iter().all(|r| r.get() == Err(Error::Terminated)));
        assert_eq!(queued.get(), Err(Error::Terminated));
        assert_eq!(pool.apply_async(square, 1).err(), Some(Error::NotRunning));
        assert_eq!(pool.join(), Ok(()));
    }

    #[test]
    fn dropping_the_pool_terminates_it() {
        let mut rendezvous = Rendezvous::new();
        let pool = Pool::new(1).unwrap();
        let running = pool.apply_async(report_and_wait, rendezvous.ends).unwrap();
        let worker = pidfd(rendezvous.next_pid());
        drop(pool);
        assert!(!unreaped_child(&worker));
        assert_eq!(running.get(), Err(Error::Terminated));
    }

    #[test]
    fn each_worker_draws_its_own_random_numbers() {
        let mut rendezvous = Rendezvous::new();
        let pool = Pool::new(2).unwrap();
        let pair: Vec<_> = (0..2)
            .map(|_| pool.apply_async(report_and_wait, rendezvous.ends).unwrap())
            .collect();
        assert_ne!(rendezvous.next_pid(), rendezvous.next_pid());
        rendezvous.release(2);
        let [(_, a), (_, b)] = [pair[0].get().unwrap(), pair[1].get().unwrap()];
        assert_ne!(a, b);
    }
}
