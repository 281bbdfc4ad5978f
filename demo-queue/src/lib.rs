//! Python's `multiprocessing.Queue` in Rust: a [`Queue`] between processes, whose
//! [`Writer`]s `put` values and whose [`Reader`]s `get` them, in a ring buffer in shared
//! memory that writers and readers each take turns at (a robust process-shared mutex per
//! side), woken through futexes; and the [`Process`] to
//! put and get from, as in `demo-process`: by fork ([`Process::new`]), or by spawn or
//! forkserver ([`get_context`], with [`run_if_spawned`] first in `main`). A handle given to a
//! spawned child crosses as descriptors ([`fds`]): the memfd of the ring, and its end.
//!
//! What it promises that Python's does not: a process killed with SIGKILL at any instant
//! while it uses the queue loses nothing that was put and duplicates nothing (a reader killed
//! after it took a value loses that value), and nobody waits for ever: readers get
//! [`GetError::Disconnected`] once every writer is gone and the queue is drained, a writer
//! waiting for room gets [`PutError::Disconnected`] once every reader is gone, and a wake-up
//! that died with a process costs at most one [`period`] (20 ms).
//!
//! The note's other queue, `queue.Queue` between threads, is a channel of the standard
//! library or of crossbeam; the demo shows it with `crossbeam-channel`.
//!
//! Linux only (robust futexes, futex waits, pidfd, `PR_SET_PDEATHSIG`); a build elsewhere
//! stops with one error that says so.

#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "demo-queue runs only on Linux: its queue relies on robust futexes as glibc and Linux make \
     them and on futex waits shared between processes, and its Process on pidfd_open and \
     PR_SET_PDEATHSIG; this target has none of them"
);

#[cfg(target_os = "linux")]
pub mod fds;
#[cfg(target_os = "linux")]
mod forkserver;
#[cfg(target_os = "linux")]
mod process;
#[cfg(target_os = "linux")]
mod queue;
#[cfg(target_os = "linux")]
mod robust;
#[cfg(target_os = "linux")]
mod shm;
#[cfg(target_os = "linux")]
mod spawn;

#[cfg(target_os = "linux")]
pub use process::{Process, StartMethod, Started, exit_now};
#[cfg(target_os = "linux")]
pub use queue::{GetError, PutError, Queue, RING_BYTES, Reader, Snapshot, Writer};
#[cfg(target_os = "linux")]
pub use robust::{DEFAULT_PERIOD, period, set_period};
#[cfg(target_os = "linux")]
pub use spawn::{Context, Task, get_context, run_if_spawned};
