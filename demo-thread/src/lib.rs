//! Python's `threading.Thread` in Rust: a [`Thread`] that runs a closure (Python's
//! `Thread(target=run, args=(n,))`) or a struct that implements [`Run`] (Python's subclass
//! that overrides `run`), with `start`, `join` and a `name`.
//!
//! Rust has no subclassing, so the part Python inherits (start, join, name) is a wrapper that
//! holds the part you write (the run method and its data). Two things Python does not give:
//!
//! - `run` takes `self`: the struct moves into the new thread, so no other thread can touch
//!   its data while it runs, and the compiler checks it (`Send + 'static`);
//! - [`Thread::join`] returns what `run` returned, or the panic that ended the thread as an
//!   `Err` ([`Panicked`]).
//!
//! Threads are not processes: they share the process's memory and its pid, and in Rust they
//! run in parallel (Python's take turns, under the GIL). Portable: any Unix.

#![warn(missing_docs)]

mod panic_message;
mod thread;

pub use thread::Panicked;
/// # Example
///
/// Python's `class MyThread(threading.Thread)` that overrides `run`:
///
/// ```
/// use demo_thread::{Run, Thread};
///
/// struct Double(u64);
///
/// impl Run for Double {
///     type Output = u64;
///     fn run(self) -> u64 {
///         self.0 * 2
///     }
/// }
///
/// # fn main() -> std::io::Result<()> {
/// let mut t = Thread::new(Double(21));
/// t.start()?;
/// assert_eq!(t.join().unwrap(), 42);
/// # Ok(())
/// # }
/// ```
pub use thread::Run;
/// # Example
///
/// Python's `t = Thread(target=run, args=("thread 1",)); t.start(); t.join()`, and a thread
/// that panics:
///
/// ```
/// use demo_thread::Thread;
///
/// # fn main() -> std::io::Result<()> {
/// let mut t = Thread::new(|| format!("ran on {}", std::thread::current().name().unwrap()));
/// t.start()?;
/// assert_eq!(t.join().unwrap(), format!("ran on {}", t.name()));
///
/// let mut crash = Thread::new(|| -> u32 { panic!("boom") });
/// crash.start()?;
/// let e = crash.join().unwrap_err();
/// assert_eq!(e.message, "boom");
/// # Ok(())
/// # }
/// ```
pub use thread::Thread;
