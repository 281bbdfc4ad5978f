//! Python's `multiprocessing.Process` with its three start methods: a child process you
//! `start`, `join`, `terminate` or `kill`, begun by fork, spawn or forkserver.
//!
//! - [`Process`] is the child, and [`Process::new`] starts it by fork: a copy of this process
//!   that runs a closure.
//! - [`get_context`] makes processes that start by any [`StartMethod`]: fork; spawn, this
//!   program run again and told through a socket which function to run; forkserver, forked by
//!   a server that was spawned while it had one thread.
//! - [`run_if_spawned`] is Python's `if __name__ == "__main__":`. A program that starts
//!   processes by spawn or forkserver calls it first thing in `main`: a spawned child is the
//!   same program run again, and that call is where it runs its target instead of the rest of
//!   `main`.
//! - [`fds`] puts descriptors (a pipe end, a socket, a memfd) inside the serde values that
//!   cross to a spawned child.
//!
//! Two promises Python does not make: a child never outlives its parent (it gets SIGKILL when
//! the parent dies, however the parent dies), and dropping a [`Process`] that still runs kills
//! and reaps it.
//!
//! Linux only (pidfd, `PR_SET_PDEATHSIG`, `/proc/self/exe`); a build elsewhere stops with one
//! error that says so.
//!
//! The files behind this API, `process.rs`, `spawn.rs`, `forkserver.rs` and `fds.rs`, are the
//! same in every crate that starts processes, so that each crate can be copied out alone.

#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "demo-process runs only on Linux: it watches a child through a pidfd (pidfd_open), makes \
     it die with its parent (PR_SET_PDEATHSIG) and spawns this program again from \
     /proc/self/exe, and this target has none of them"
);

#[cfg(target_os = "linux")]
pub mod fds;
#[cfg(target_os = "linux")]
mod forkserver;
#[cfg(target_os = "linux")]
mod process;
#[cfg(target_os = "linux")]
mod spawn;

/// # Example
///
/// Python's `p = Process(target=f, args=('john',)); p.start(); p.join()`, and a child that
/// `terminate()` ends:
///
/// ```
/// use demo_process::Process;
///
/// # fn main() -> std::io::Result<()> {
/// let mut p = Process::new(|name: String| assert_eq!(name, "john"), "john".to_string());
/// p.start()?;
/// assert_eq!(p.join()?, 0);
///
/// let mut sleeper = Process::new(|_: ()| std::thread::park(), ());
/// sleeper.start()?;
/// assert!(sleeper.is_alive()?);
/// sleeper.terminate()?;
/// assert_eq!(sleeper.join()?, -15); // minus SIGTERM, as Python's exitcode
/// # Ok(())
/// # }
/// ```
#[cfg(target_os = "linux")]
pub use process::Process;
#[cfg(target_os = "linux")]
pub use process::{StartMethod, Started, exit_now};
/// # Example
///
/// The same target under each start method. A doctest's `main` is not the program's, so the
/// spawn and forkserver methods, whose children run the program's `main` again, are shown in
/// the crate's demo (`src/main.rs`) rather than here; fork needs no `run_if_spawned`:
///
/// ```
/// use demo_process::{StartMethod, get_context};
///
/// fn f(name: String) {
///     assert_eq!(name, "john");
/// }
///
/// # fn main() -> std::io::Result<()> {
/// let ctx = get_context(StartMethod::Fork);
/// let mut p = ctx.process(f, "john".to_string());
/// p.start()?;
/// assert_eq!(p.join()?, 0);
/// assert!(p.name().starts_with("ForkProcess-"));
/// # Ok(())
/// # }
/// ```
#[cfg(target_os = "linux")]
pub use spawn::Context;
#[cfg(target_os = "linux")]
pub use spawn::{Task, get_context, run_if_spawned};
