//! Python's `multiprocessing.Lock` and `threading.Lock` in Rust. The process lock is
//! [`ProcessMutex`] (and [`Lock`], one that guards no data): a robust, process-shared pthread
//! mutex in a shared mapping, which owns the data it guards as `std::sync::Mutex<T>` does.
//! [`Shared`] puts a value (an atomic counter, say) in memory shared by processes without a
//! lock; [`Process`] starts the processes that share them, as in `demo-process`: by fork
//! ([`Process::new`]), or by spawn or forkserver ([`get_context`], with [`run_if_spawned`]
//! first in `main`). A lock given to a spawned child crosses as the memfd it lives in
//! ([`fds`]), which the child maps.
//!
//! What differs from Python:
//!
//! - [`ProcessMutex::acquire`] returns a guard, and the lock is released when the guard is
//!   dropped: Python's `release()`, or the end of a `with` block.
//! - It is robust. Python's Lock is a semaphore that stays taken for ever when its holder
//!   dies. Here the next acquirer gets the lock inside an `Err(OwnerDied)`, so it cannot miss
//!   that the data may be half updated and must be repaired.
//! - No wait hangs after a kill: a waiter sleeps at most one [`period`] (20 ms) at a time and
//!   looks again, so a wake-up lost with a killed waiter costs one period.
//!
//! Linux only (robust futexes, pidfd, `PR_SET_PDEATHSIG`); a build elsewhere stops with one
//! error that says so.
//!
//! # The thread lock
//!
//! Python lets threads share a bare counter and lose updates at run time. In Rust, threads
//! that change an unprotected counter do not compile: each thread would need `&mut counter`
//! at the same time (error E0499).
//!
//! ```compile_fail,E0499
//! let mut counter = 0;
//! std::thread::scope(|s| {
//!     for _ in 0..4 {
//!         s.spawn(|| {
//!             for _ in 0..10_000 {
//!                 counter += 1;
//!             }
//!         });
//!     }
//! });
//! ```
//!
//! With the counter inside a `Mutex`, it compiles and counts exactly:
//!
//! ```
//! let counter = std::sync::Mutex::new(0);
//! std::thread::scope(|s| {
//!     for _ in 0..4 {
//!         s.spawn(|| {
//!             for _ in 0..10_000 {
//!                 *counter.lock().unwrap() += 1;
//!             }
//!         });
//!     }
//! });
//! assert_eq!(counter.into_inner().unwrap(), 40_000);
//! ```

#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "demo-lock runs only on Linux: its lock relies on robust futexes as glibc and Linux make \
     them (the owner's thread id in the futex word, the kernel's robust list), and its \
     Process on pidfd_open and PR_SET_PDEATHSIG; this target has none of them"
);

#[cfg(target_os = "linux")]
pub mod fds;
#[cfg(target_os = "linux")]
mod forkserver;
#[cfg(target_os = "linux")]
mod process;
#[cfg(target_os = "linux")]
mod process_lock;
#[cfg(target_os = "linux")]
mod robust;
#[cfg(target_os = "linux")]
mod shm;
#[cfg(target_os = "linux")]
mod spawn;

#[cfg(target_os = "linux")]
pub use process::{Process, StartMethod, Started, exit_now};
#[cfg(target_os = "linux")]
pub use process_lock::{Guard, Lock, OwnerDied, Plain, ProcessMutex, Shared, TryAcquireError};
#[cfg(target_os = "linux")]
pub use robust::{DEFAULT_PERIOD, period, set_period};
#[cfg(target_os = "linux")]
pub use spawn::{Context, Task, get_context, run_if_spawned};
