//! Python's `multiprocessing.Pool` in Rust: a [`Pool`] of worker processes, started once and
//! fed tasks, with `apply_async`, `apply`, `map`, `map_async`, `starmap`, `imap`,
//! `imap_unordered` ([`IMap`]), `close`, `join` and `terminate`, an [`AsyncResult`] for each
//! task, and Python's `initializer` and `maxtasksperchild` through [`Pool::builder`].
//!
//! A task is a plain `fn(A) -> R` whose argument and result are serde values. The workers
//! start by fork (the default), spawn or forkserver ([`Pool::with_start_method`], Python's
//! `get_context(method).Pool(n)`): each is an image of this same executable file, so the
//! task's distance from a fixed function of the file names the same function there. A closure
//! that captures nothing is a `fn` too. Spawn and forkserver need [`run_if_spawned`] first
//! thing in `main`.
//!
//! An argument may hold descriptors (a pipe end, a socket, a memfd): a field with
//! `#[serde(with = "demo_pool::fds")]` ([`fds`]) reaches the task as a working descriptor in
//! the worker, under every start method, passed with the task by `SCM_RIGHTS`.
//!
//! What this pool promises that Python's does not:
//!
//! - a worker killed in the middle of a task (`kill -9`) fails that task's `get()` with
//!   [`Error::WorkerDied`], a new worker takes its place, and every other task completes
//!   (Python's pool waits for ever: bpo-22393);
//! - no worker outlives the pool: `terminate()` and dropping the pool kill and reap them,
//!   and every worker gets SIGKILL when the pool ends, however the program ends;
//! - every result is settled when the pool ends, so a `get()` never waits on a pool that is
//!   gone;
//! - a task may have a deadline ([`Pool::apply_async_timeout`]): past it, its worker is
//!   killed and replaced and the task fails with [`Error::TimedOut`]; no other task is
//!   touched;
//! - an initializer that panics stops the pool with [`Error::Broken`] naming it, instead of
//!   a pool that forks new workers for ever.
//!
//! Linux only (pidfd, `PR_SET_PDEATHSIG`, `/proc/self/exe`); a build elsewhere stops with one
//! error that says so.

#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "demo-pool runs only on Linux: it watches each worker through a pidfd (pidfd_open) and \
     makes it die with the pool (PR_SET_PDEATHSIG), and this target has neither"
);

#[cfg(target_os = "linux")]
pub mod fds;
#[cfg(target_os = "linux")]
mod forkserver;
#[cfg(target_os = "linux")]
mod panic_message;
#[cfg(target_os = "linux")]
mod pool;
#[cfg(target_os = "linux")]
mod process;
#[cfg(target_os = "linux")]
mod spawn;

/// # Example
///
/// A result knows which worker ran its task, and when:
///
/// ```
/// use demo_pool::Pool;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = Pool::new(2)?;
/// let result = pool.apply_async(|_: ()| std::process::id() as i32, ())?;
/// let pid = result.get()?;
/// assert!(result.ready());
/// assert_eq!(result.successful(), Some(true));
/// let ran = result.ran().unwrap();
/// assert_eq!(ran.pid, pid);
/// assert!(ran.start <= ran.end);
/// # Ok(())
/// # }
/// ```
#[cfg(target_os = "linux")]
pub use pool::AsyncResult;
/// # Example
///
/// An initializer, workers that leave after 100 tasks, and a deadline for every task:
///
/// ```
/// use std::time::Duration;
///
/// use demo_pool::{Error, Pool};
///
/// fn open(url: String) {
///     // Opens a connection, say, once in each worker.
///     assert!(url.starts_with("db://"));
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = Pool::builder()
///     .processes(2)
///     .initializer(open, "db://localhost".to_string())
///     .maxtasksperchild(100)
///     .task_deadline(Duration::from_secs(60))
///     .build()?;
/// assert_eq!(pool.starmap(u64::pow, [(2, 10), (3, 2)])?, [1024, 9]);
/// let late = pool.apply_async_timeout(
///     |_: ()| std::thread::sleep(Duration::from_secs(60)),
///     (),
///     Duration::from_millis(10),
/// )?;
/// assert!(matches!(late.get(), Err(Error::TimedOut { .. })));
/// # Ok(())
/// # }
/// ```
#[cfg(target_os = "linux")]
pub use pool::Builder;
/// # Example
///
/// Results as they come, from an input taken as the workers free up:
///
/// ```
/// use demo_pool::Pool;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = Pool::new(2)?;
/// let endless = 0u64..;
/// let first: Vec<u64> = pool
///     .imap(|x: u64| x * x, endless, 10)?
///     .take(5)
///     .collect::<Result<_, _>>()?;
/// assert_eq!(first, [0, 1, 4, 9, 16]);
/// # Ok(())
/// # }
/// ```
#[cfg(target_os = "linux")]
pub use pool::IMap;
/// # Example
///
/// The note's `Pool(4)` with `apply_async`, `close` and `join`, then `map`, and a task that
/// panics:
///
/// ```
/// use demo_pool::{Error, Pool};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut p = Pool::new(4)?;
/// let results: Vec<_> = (0..10)
///     .map(|i| p.apply_async(square, i))
///     .collect::<Result<_, _>>()?;
/// assert_eq!(p.map(square, 0..5)?, [0, 1, 4, 9, 16]);
/// let crash = p.apply_async(|_: ()| -> u64 { panic!("boom") }, ())?;
/// p.close();
/// p.join()?;
/// assert_eq!(results[3].get()?, 9);
/// assert_eq!(crash.get(), Err(Error::Panicked("boom".into())));
/// # Ok(())
/// # }
/// ```
#[cfg(target_os = "linux")]
pub use pool::Pool;
#[cfg(target_os = "linux")]
pub use pool::{Error, Ran};
#[cfg(target_os = "linux")]
pub use process::{StartMethod, exit_now};
/// # Example
///
/// A pool under each start method, as Python's `get_context(method).Pool(2)`. A program
/// whose pools spawn their workers calls `run_if_spawned` first thing in its `main` (here
/// the doctest's own), tests with their own `main` included (`harness = false`):
///
/// ```
/// use demo_pool::{Pool, StartMethod, run_if_spawned};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     // A spawned worker is this program run again: it becomes a worker here.
///     run_if_spawned();
///     for method in StartMethod::ALL {
///         let pool = Pool::with_start_method(2, method)?;
///         assert_eq!(pool.map(square, 0..4)?, [0, 1, 4, 9]);
///     }
///     Ok(())
/// }
/// ```
#[cfg(target_os = "linux")]
pub use spawn::run_if_spawned;
