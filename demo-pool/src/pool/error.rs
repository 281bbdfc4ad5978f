//! The pool's `Error`: what went wrong with the pool or with one task.

use std::fmt;
use std::time::Duration;

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
    WorkerDied {
        /// The worker's pid.
        pid: i32,
        /// How it ended: `killed by SIGKILL`, `exited with code 3`.
        how: String,
    },
    /// `get_timeout`: the result was not ready in time. The task goes on.
    Timeout,
    /// The task ran past its deadline (`apply_async_timeout`, or the pool's
    /// `Builder::task_deadline`): its worker was killed and replaced. Python's pool has no
    /// such thing.
    TimedOut {
        /// The pid of the worker that was killed.
        pid: i32,
        /// The deadline the task ran past.
        deadline: Duration,
    },
    /// The pool was terminated before the task finished.
    Terminated,
    /// The pool could not go on, for example a replacement worker could not be started.
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
            Error::TimedOut { pid, deadline } => write!(
                f,
                "the task ran past its deadline of {} s: its worker (pid {pid}) was killed",
                deadline.as_secs_f64()
            ),
            Error::Terminated => write!(f, "the pool was terminated before the task finished"),
            Error::Broken(why) => write!(f, "the pool broke down: {why}"),
            Error::Serde(why) => write!(f, "could not encode or decode {why}"),
        }
    }
}

impl std::error::Error for Error {}
