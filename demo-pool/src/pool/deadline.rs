//! Per-task deadlines, which Python's pool does not have. The manager keeps the clock (see
//! `kill_overdue` in `manager.rs`); a task with a deadline goes to a worker that holds no other
//! task (see `send` in `state.rs`), so that killing the worker touches no other task.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AsyncResult, Error, Pool, worker};

impl Pool {
    /// `apply_async` with a deadline, which Python's pool does not have: if the task runs
    /// longer than `deadline` (counted from when it starts in a worker), its worker is killed
    /// and replaced, and its `get()` is `Err(Error::TimedOut)`. The other tasks are
    /// untouched: a task with a deadline runs on a worker that holds no other task.
    pub fn apply_async_timeout<A, R>(
        &self,
        task: fn(A) -> R,
        args: A,
        deadline: Duration,
    ) -> Result<AsyncResult<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.apply_async_within(task, args, Some(deadline))
    }

    pub(super) fn apply_async_within<A, R>(
        &self,
        task: fn(A) -> R,
        args: A,
        deadline: Option<Duration>,
    ) -> Result<AsyncResult<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let frame = worker::task_frame(worker::call_one::<A, R>, task as usize, &args)?;
        let slot = self.submit(frame, deadline, None)?;
        Ok(AsyncResult::new(&self.shared, slot))
    }
}
