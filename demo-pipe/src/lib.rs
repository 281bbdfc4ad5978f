//! Python's `multiprocessing.Pipe` in Rust: two connected ends ([`pipe::Connection`]) that
//! carry typed values between processes, both ways (or one way, [`pipe::pipe_duplex`]), with
//! `poll` and the end of file a closed end gives; and the [`Process`] to run at the other end.
//!
//! - [`pipe`]: the pipe, a socketpair with length-prefixed postcard frames;
//! - [`value`]: a Python value such as the note's `[42, None, 'hello']`, whose `Display` is
//!   Python's `repr`;
//! - [`Process`]: a child process, as in `demo-process`: by fork ([`Process::new`]), or by
//!   spawn or forkserver ([`get_context`], with [`run_if_spawned`] first in `main`). An end
//!   given to a spawned child crosses as its descriptor ([`fds`]).
//!
//! Linux only (pidfd, `PR_SET_PDEATHSIG`); a build elsewhere stops with one error that says
//! so.
//!
//! # Example
//!
//! The note's program: a child sends `[42, None, 'hello']`, the parent receives it.
//!
//! ```
//! use demo_pipe::Process;
//! use demo_pipe::pipe::{Connection, pipe};
//! use demo_pipe::value::Value;
//!
//! fn f(mut conn: Connection) {
//!     let hello = Value::List(vec![42.into(), Value::None, "hello".into()]);
//!     conn.send(&hello).unwrap();
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (mut parent_conn, child_conn) = pipe()?;
//! let mut p = Process::new(f, child_conn);
//! p.start()?;
//! assert_eq!(parent_conn.recv::<Value>()?.to_string(), "[42, None, 'hello']");
//! assert_eq!(p.join()?, 0);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "demo-pipe runs only on Linux: its Process watches a child through a pidfd (pidfd_open) \
     and makes it die with its parent (PR_SET_PDEATHSIG), and this target has neither"
);

#[cfg(target_os = "linux")]
pub mod fds;
#[cfg(target_os = "linux")]
mod forkserver;
#[cfg(target_os = "linux")]
pub mod pipe;
#[cfg(target_os = "linux")]
mod process;
#[cfg(target_os = "linux")]
mod spawn;
#[cfg(target_os = "linux")]
pub mod value;

/// # Example
///
/// Python's `p = Process(target=f, args=(x,)); p.start(); p.join()`, by fork, with the child's
/// exit code as Python's `exitcode`:
///
/// ```
/// use demo_pipe::{Process, exit_now};
///
/// # fn main() -> std::io::Result<()> {
/// let mut p = Process::new(|code: i32| exit_now(code), 3);
/// p.start()?;
/// assert_eq!(p.join()?, 3);
/// # Ok(())
/// # }
/// ```
#[cfg(target_os = "linux")]
pub use process::Process;
#[cfg(target_os = "linux")]
pub use process::{StartMethod, Started, exit_now};
#[cfg(target_os = "linux")]
pub use spawn::{Context, Task, get_context, run_if_spawned};
