//! A pool of worker processes with Python's `multiprocessing.Pool` API: `apply_async`,
//! `apply`, `map`, `map_async`, `starmap`, `starmap_async`, `imap`, `imap_unordered`,
//! `close`, `join`, `terminate`; `initializer` and `maxtasksperchild` through
//! `Pool::builder()`; and an `AsyncResult` with `get`, `get_timeout`, `ready` and
//! `successful`, and `ran`: which worker ran the task, and when.
//!
//! How a task reaches a worker: every worker is an image of this same executable file, a fork
//! of this process or, under spawn and forkserver, the file run again (whose bootstrap checks
//! that it is the same file). A task is a plain `fn(A) -> R`; the pool sends its offset from a
//! fixed function of the file, together with the offset of `call_one::<A, R>`, a function made
//! for exactly that `A` and `R`, which decodes the arguments (postcard), calls the task and encodes
//! its result. The compiler checks that task, arguments and result agree; serde carries the
//! values. A closure that captures nothing is a `fn` too; one that captures is refused at
//! compile time, much as Python's pickle refuses a lambda.
//!
//! What this pool promises that Python's does not:
//! - a worker killed in the middle of a task (`kill -9`) fails that task's `get()` with an
//!   error naming the worker, a new worker takes its place, and every other task completes
//!   (Python's pool waits for ever: bpo-22393);
//! - no worker outlives the pool: `terminate()` and dropping the pool kill and reap them, and
//!   every worker gets SIGKILL when the thread that started it ends (the pool's manager thread,
//!   or the program's main thread), which happens when the program ends, however it ends
//!   (Ctrl-C, SIGTERM, SIGKILL);
//! - every result is settled when the pool ends, so a `get()` never waits on a pool that is
//!   gone;
//! - a task may have a deadline (`apply_async_timeout`, or `Builder::task_deadline` for
//!   all): past it, its worker is killed and replaced and the task fails with
//!   `Error::TimedOut`, without touching any other task;
//! - an initializer that fails stops the pool with an error that says so, instead of
//!   forking new workers for ever.
//!
//! The pool by role, a file each:
//! - this file: the API, `Pool` and `AsyncResult`; `error.rs`, its `Error`; `slot.rs`, the
//!   slot a result is settled in;
//! - `state.rs`: what the submitting threads and the manager share: the queue of tasks, the
//!   workers, and which tasks each worker holds;
//! - `manager.rs`: the manager thread, one per pool. It reads the results that no waiting
//!   thread reads, watches each worker through a pidfd, and replaces the workers that die;
//! - `start.rs`: starting a worker, from a thread that lives as long as the pool, because the
//!   parent-death signal fires when the *thread* that started a process exits: the manager
//!   thread, or for the first workers of a pool made on the program's main thread, that one;
//! - `claim.rs`: a thread waiting for a result reads it from the worker's socket itself, one
//!   hop less than through the manager;
//! - `worker.rs`: a worker, and the wire format of tasks and results. Each worker has one
//!   socketpair and runs one task at a time, so the pool always knows which task a dead
//!   worker was running;
//! - `options.rs`: `Pool::builder()`, for the initializer, `maxtasksperchild` and a deadline;
//! - `map.rs`: `map`, and `map_async` and `starmap`, one result gathered from a list's chunks;
//! - `imap.rs`: `imap` and `imap_unordered`, results as an iterator over a lazy input;
//! - `deadline.rs`: `apply_async_timeout`, a task with a deadline.

mod claim;
mod deadline;
mod error;
mod imap;
mod manager;
mod map;
mod options;
mod slot;
mod start;
mod state;
mod worker;

pub use error::Error;
pub use imap::IMap;
pub use options::Builder;

use std::io;
use std::marker::PhantomData;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::process::StartMethod;
use claim::Claim;
use slot::{Forward, Outcome, Slot};
use state::{Job, Shared, State, Status, Token};

/// A pool of worker processes. Dropping it terminates it.
pub struct Pool {
    shared: Arc<Shared>,
    manager: Option<JoinHandle<()>>,
    /// The deadline of every task not given its own (`Builder::task_deadline`).
    deadline: Option<Duration>,
    method: StartMethod,
}

/// The result of `apply_async`, settled when the task ends, its worker dies or the pool ends.
pub struct AsyncResult<R> {
    slot: Arc<Slot>,
    /// The pool's state, where `get` finds the worker that holds the task, to read its
    /// result there.
    shared: Arc<Shared>,
    result: PhantomData<fn() -> R>,
}

/// Where and when a task ran: the pid of the worker, and the moments the task started and
/// ended there, on the clock of `Instant::now()` (the machine's monotonic clock, which every
/// worker reads too, whatever its start method).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ran {
    /// The pid of the worker that ran the task.
    pub pid: i32,
    /// When the task started in the worker.
    pub start: Instant,
    /// When the task returned or panicked there.
    pub end: Instant,
}

impl Pool {
    /// Python's `Pool(processes)`: starts the workers by the default start method,
    /// [`Pool::DEFAULT_START_METHOD`]. `None` means one per CPU.
    pub fn new(processes: impl Into<Option<usize>>) -> io::Result<Pool> {
        Pool::start(
            processes.into(),
            Pool::DEFAULT_START_METHOD,
            worker::Start::default(),
            None,
        )
    }

    /// The start method of `Pool::new`: fork. It needs nothing of the program and starts a
    /// worker fastest, but a task must not wait on a lock another thread may hold (the
    /// crate's README measures the three methods and says why).
    pub const DEFAULT_START_METHOD: StartMethod = StartMethod::Fork;

    /// Python's `Pool(processes, context=get_context(method))`: starts the workers by
    /// `method`. Spawn and forkserver need [`run_if_spawned`](crate::run_if_spawned) first
    /// thing in the program's `main` (a spawned worker is this program run again, and that
    /// call is where it becomes a worker); without it, this is an error that says so.
    pub fn with_start_method(
        processes: impl Into<Option<usize>>,
        method: StartMethod,
    ) -> io::Result<Pool> {
        Pool::start(processes.into(), method, worker::Start::default(), None)
    }

    fn start(
        processes: Option<usize>,
        method: StartMethod,
        start: worker::Start,
        deadline: Option<Duration>,
    ) -> io::Result<Pool> {
        let n = match processes {
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
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let event = EpollEvent::new(EpollFlags::EPOLLIN, Token::Wake.encode());
        epoll.add(woken.as_fd(), event)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            wake,
            epoll,
        });
        let manager_shared = Arc::clone(&shared);
        // The thread stays unnamed: the workers it forks are copies of it, and a demo's `say!`
        // prints `[pid N]` for an unnamed thread, as for the main thread. Tasks run on its
        // stack, so give it a main-sized one.
        let manager = thread::Builder::new().stack_size(8 << 20);
        let manager = if on_main_thread() {
            // New: the program's main thread lives as long as the program, so it may start
            // the first workers itself (their parent-death signal fires when it ends); then
            // `Pool::new` waits for no other thread.
            let first = start::start_first(&shared, &woken, n, method, &start)?;
            manager.spawn(move || manager::run(&manager_shared, woken, first, method, &start))?
        } else {
            let (started_tx, started) = mpsc::channel();
            let manager = manager.spawn(move || {
                match start::start_first(&manager_shared, &woken, n, method, &start) {
                    Ok(first) => {
                        let _ = started_tx.send(Ok(()));
                        manager::run(&manager_shared, woken, first, method, &start);
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                }
            })?;
            let started = started.recv().unwrap_or_else(|_| {
                Err(io::Error::other(
                    "the pool's manager thread failed to start the workers",
                ))
            });
            if let Err(e) = started {
                let _ = manager.join();
                return Err(e);
            }
            manager
        };
        Ok(Pool {
            shared,
            manager: Some(manager),
            deadline,
            method,
        })
    }

    /// How this pool starts its workers.
    pub fn start_method(&self) -> StartMethod {
        self.method
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
        self.apply_async_within(task, args, self.deadline)
    }

    /// Python's `apply(task, args)`: runs `task(args)` in a worker and waits for its result.
    pub fn apply<A, R>(&self, task: fn(A) -> R, args: A) -> Result<R, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        // The task is sent and its worker claimed in one step: this thread reads the result
        // from the worker itself (see `claim.rs`).
        let frame = worker::task_frame(worker::call_one::<A, R>, task as usize, &args)?;
        let (slot, claim) = self.enqueue(frame, self.deadline, None, true)?;
        let result = AsyncResult::new(&self.shared, slot);
        result.wait_claimed(claim, None)
    }

    /// Python's `close()`: no more tasks; the workers leave once the queued ones are done.
    pub fn close(&self) {
        let mut state = lock(&self.shared.state);
        if state.status == Status::Running {
            state.status = Status::Closed;
        }
        if state.status == Status::Closed && state.idle() {
            // New: with no task left, the workers are told to leave at once, while the
            // manager wakes up: each reads the end of its task stream and exits. No task can
            // reach them any more: a closed pool takes none, and none is queued. A worker
            // still running its initializer is left to the manager, for whom its early end
            // would be the initializer's failure.
            for worker in state.workers.iter_mut().filter(|w| w.ready) {
                worker.gone = true;
                let _ = worker.tasks.shutdown(Shutdown::Write);
            }
        }
        drop(state);
        self.shared.wake_manager();
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
        self.shared.wake_manager();
        if let Some(manager) = self.manager.take() {
            let _ = manager.join();
        }
    }

    /// Queues a task frame; its outcome goes to the slot returned, or on to `forward`.
    fn submit(
        &self,
        frame: worker::Frame,
        deadline: Option<Duration>,
        forward: Option<Forward>,
    ) -> Result<Arc<Slot>, Error> {
        Ok(self.enqueue(frame, deadline, forward, false)?.0)
    }

    /// `submit`, and if `claim` and the task went to a worker at once, a claim on that
    /// worker, taken under the same lock: then the manager's epoll never watches the worker
    /// for this task.
    fn enqueue(
        &self,
        frame: worker::Frame,
        deadline: Option<Duration>,
        forward: Option<Forward>,
        claim: bool,
    ) -> Result<(Arc<Slot>, Option<Claim<'_>>), Error> {
        let slot = Arc::new(Slot {
            forward,
            ..Slot::default()
        });
        let mut state = lock(&self.shared.state);
        if let Some(why) = &state.broken {
            return Err(Error::Broken(why.clone()));
        }
        if state.status != Status::Running {
            return Err(Error::NotRunning);
        }
        state.pending.push_back(Job {
            frame: frame.bytes,
            fds: frame.fds,
            slot: Arc::clone(&slot),
            deadline,
        });
        state.dispatch();
        let claim = claim
            .then(|| Claim::take(&self.shared, &mut state, &slot))
            .flatten();
        state.sync_arms(&self.shared.epoll);
        drop(state);
        if deadline.is_some() {
            // The manager keeps the deadlines' clock: tell it of a new one.
            self.shared.wake_manager();
        }
        Ok((slot, claim))
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
        // The worker that holds the task, if one does and nobody reads its results yet, is
        // read here (see `claim.rs`); otherwise whoever reads them settles the slot.
        let claim = Claim::take(&self.shared, &mut lock(&self.shared.state), &self.slot);
        self.wait_claimed(claim, deadline)
    }

    fn wait_claimed(&self, claim: Option<Claim>, deadline: Option<Instant>) -> Result<R, Error> {
        self.wait_decoded(claim, deadline, |bytes| postcard::from_bytes(bytes))
    }
}

impl<R> AsyncResult<R> {
    fn new(shared: &Arc<Shared>, slot: Arc<Slot>) -> Self {
        AsyncResult {
            slot,
            shared: Arc::clone(shared),
            result: PhantomData,
        }
    }

    /// Waits for the result, reading it from its worker under `claim`, and decodes it with
    /// `decode`.
    fn wait_decoded<T>(
        &self,
        claim: Option<Claim>,
        deadline: Option<Instant>,
        decode: impl FnOnce(&[u8]) -> postcard::Result<T>,
    ) -> Result<T, Error> {
        if let Some(claim) = claim {
            if !claim.read_until(&self.slot, deadline) {
                return Err(Error::Timeout);
            }
        }
        let mut outcome = lock(&self.slot.outcome);
        loop {
            match &*outcome {
                Some(Ok(bytes)) => {
                    return decode(bytes)
                        .map_err(|e| Error::Serde(worker::uncodable("the result", e)));
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while the lock was held leaves the state consistent for what follows: every
    // change to it is a single push, pop or assignment.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether this is the program's main thread, whose end is the program's end.
fn on_main_thread() -> bool {
    nix::unistd::gettid() == nix::unistd::getpid()
}
