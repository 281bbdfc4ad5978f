//! A thread waiting for a task's result reads it itself, from the socket of the worker that
//! runs the task, rather than wait for the manager to read it and pass it on: one hop less,
//! which is most of a round trip's cost (a pipe's round trip is two wake-ups; through the
//! manager it was three). The thread *claims* the worker first, under the state's lock: from
//! then on it alone reads that worker's results (those of other threads' tasks too, which it
//! settles for them), and the manager's epoll does not watch them (see `state.rs`).
//!
//! What ends a claimed read: the task's result, the worker's end (its pidfd, which the manager
//! always watches and handles, claimed or not), the end of its stream, or the caller's
//! deadline. The claim is given back when the read ends, or when the `Claim` is dropped,
//! whatever ended it.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::state::{Shared, State, Status};
use super::{Slot, lock};

/// A worker this thread reads the results of, until it gives it back.
pub(super) struct Claim<'a> {
    shared: &'a Shared,
    /// The worker's id: a replacement has another, so a claim never touches it.
    id: u64,
    results: Arc<UnixStream>,
    sentinel: Arc<OwnedFd>,
    given_back: bool,
}

impl<'a> Claim<'a> {
    /// Claims the worker that holds `slot`'s task, if one does and nobody has claimed it yet.
    /// With the state's lock held, so that the claim and the task's dispatch can be one step.
    pub(super) fn take(shared: &'a Shared, state: &mut State, slot: &Arc<Slot>) -> Option<Self> {
        let i = state.holder(slot)?;
        let worker = &mut state.workers[i];
        if worker.claimed || worker.eof {
            return None;
        }
        worker.claimed = true;
        worker.sync_arm(&shared.epoll);
        Some(Claim {
            shared,
            id: worker.id,
            results: Arc::clone(&worker.results),
            sentinel: Arc::clone(&worker.sentinel),
            given_back: false,
        })
    }

    /// Reads the worker's results, settling each task they finish, until `slot`'s comes, the
    /// worker or its stream ends, or `deadline` passes. `false` only if the deadline passed;
    /// otherwise the slot is settled, or the manager will settle it.
    pub(super) fn read_until(mut self, slot: &Arc<Slot>, deadline: Option<Instant>) -> bool {
        let mut scratch = [0u8; 16 * 1024];
        let mut settled = Vec::new();
        loop {
            let mut fds = [
                PollFd::new(self.results.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.sentinel.as_fd(), PollFlags::POLLIN),
            ];
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(deadline) => {
                    // Rounded up, so that the wait does not end just before the deadline.
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    let left = left + Duration::from_micros(999);
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                }
            };
            match poll(&mut fds, timeout) {
                Err(Errno::EINTR) | Ok(0) => continue,
                // Only a bad descriptor or no memory: the manager reads the results instead.
                Err(_) => return true,
                Ok(_) => {}
            }
            let ended = fds[1].revents().is_some_and(|r| !r.is_empty());
            let mut state = lock(&self.shared.state);
            let Some(i) = state.index_of(self.id) else {
                // The manager has replaced the worker: nothing is left to give back.
                self.given_back = true;
                return true;
            };
            // A worker that has ended is the manager's to read to the end and to replace.
            let mut done = ended;
            if !ended {
                let worker = &mut state.workers[i];
                worker.read_results(false, &mut scratch, &mut settled);
                done = worker.eof || settled.iter().any(|(s, _)| Arc::ptr_eq(s, slot));
                // The worker has room again: it takes the next queued task at once.
                state.dispatch();
            }
            if done {
                state.workers[i].claimed = false;
                self.given_back = true;
            }
            state.sync_arms(&self.shared.epoll);
            // Results taken from the worker and not yet settled: until they are, a closed pool
            // is not done (`State::settling`).
            let settling = !settled.is_empty();
            if settling {
                state.settling += 1;
            }
            // What the manager must act on and would not hear of from the results, since
            // they were read here: a failed initializer, a deadline whose clock started.
            let tell = state
                .workers
                .iter()
                .any(|w| w.init_failed.is_some() || w.due().is_some());
            drop(state);
            if tell {
                self.shared.wake_manager();
            }
            settled
                .drain(..)
                .for_each(|(slot, outcome)| slot.settle(outcome));
            if settling {
                // And a closed pool that may now be idle, with every result settled.
                let mut state = lock(&self.shared.state);
                state.settling -= 1;
                let closing = state.status != Status::Running;
                drop(state);
                if closing {
                    self.shared.wake_manager();
                }
            }
            if done {
                return true;
            }
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.given_back {
            return;
        }
        let mut state = lock(&self.shared.state);
        if let Some(i) = state.index_of(self.id) {
            let worker = &mut state.workers[i];
            worker.claimed = false;
            // Its results are the manager's again: armed if any may come.
            worker.sync_arm(&self.shared.epoll);
        }
    }
}
