//! `Pool::builder()`: the rest of Python's `Pool(...)` arguments (`initializer`, `initargs`,
//! `maxtasksperchild`), and a deadline for every task, which Python's pool does not have.

use std::io;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Pool, worker};
use crate::StartMethod;

impl Pool {
    /// Python's `Pool(processes, initializer, initargs, maxtasksperchild, context)`, and a
    /// deadline for every task: set what you need, then `build()`.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

/// How to start a [`Pool`]: `Pool::builder().processes(4).initializer(f, args).build()`.
/// What is not set is as in `Pool::new`: one worker per CPU, no initializer, workers that
/// live as long as the pool, no deadline.
#[derive(Default)]
pub struct Builder {
    processes: Option<usize>,
    method: Option<StartMethod>,
    start: worker::Start,
    deadline: Option<Duration>,
    /// Why `build()` must fail: arguments that could not be encoded.
    error: Option<String>,
}

impl Builder {
    /// Python's `processes`: how many workers.
    pub fn processes(mut self, n: usize) -> Builder {
        self.processes = Some(n);
        self
    }

    /// Python's `context=get_context(method)`: how the workers start (see
    /// [`Pool::with_start_method`]); fork if not set.
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// Python's `initializer` and `initargs`: each worker runs `init(initargs)` once, before
    /// its first task (the usual place to open a connection). Replacement workers run it too.
    ///
    /// Unlike Python, whose pool forks a new worker for ever when the initializer raises, a
    /// failed initializer stops the pool: a panic in it, or its worker ending before the
    /// initializer returns (except by SIGKILL, which the pool takes for a kill from outside),
    /// fails every unfinished task and every later call with [`Error::Broken`] naming the
    /// initializer.
    ///
    /// [`Error::Broken`]: crate::Error::Broken
    pub fn initializer<A>(mut self, init: fn(A), initargs: A) -> Builder
    where
        A: Serialize + DeserializeOwned,
    {
        let call = worker::call_one::<A, ()>;
        match worker::task_frame(call, init as usize, &initargs) {
            Ok(frame) if frame.fds.is_empty() => self.start.init = Some(frame.bytes),
            Ok(_) => {
                self.error =
                    Some("initargs: an initializer's arguments carry no descriptors".into())
            }
            Err(e) => self.error = Some(format!("initargs: {e}")),
        }
        self
    }

    /// Python's `maxtasksperchild`: a worker leaves after `n` tasks (a chunk of `map` or
    /// `imap` counts as one), and a fresh one takes its place: the cure for tasks that leak.
    pub fn maxtasksperchild(mut self, n: usize) -> Builder {
        self.start.max_tasks = Some(n);
        self
    }

    /// A deadline for every task that has none of its own (see
    /// [`Pool::apply_async_timeout`]); for `map`, `imap` and the like, for each chunk.
    /// A task past it fails with [`Error::TimedOut`], its worker killed and replaced.
    ///
    /// Each task with a deadline runs on a worker that holds no other task, so a pool with
    /// one gives up the batching that speeds up tiny tasks.
    ///
    /// [`Error::TimedOut`]: crate::Error::TimedOut
    pub fn task_deadline(mut self, deadline: Duration) -> Builder {
        self.deadline = Some(deadline);
        self
    }

    /// Starts the pool. Errors, as `InvalidInput`: no workers, `maxtasksperchild(0)`, or
    /// `initargs` that cannot be encoded.
    pub fn build(self) -> io::Result<Pool> {
        let invalid = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        if let Some(why) = self.error {
            return invalid(why);
        }
        if self.start.max_tasks == Some(0) {
            return invalid("maxtasksperchild must be at least 1".into());
        }
        let method = self.method.unwrap_or(Pool::DEFAULT_START_METHOD);
        Pool::start(self.processes, method, self.start, self.deadline)
    }
}
