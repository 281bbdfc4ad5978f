//! Python's "subclass `threading.Thread` and override `run`", the Rust way: a struct that owns
//! its data implements [`Run`], and [`Thread`] wraps it with `start`, `join` and a `name`.
//!
//! Rust has no subclassing, so the part Python inherits (start, join, name) is a wrapper that
//! holds the part you write (the run method and its data). Two things Python does not give:
//! - `run` takes `self`: the struct moves into the new thread, so no other thread can touch
//!   its data while it runs, and the compiler checks it (`Send + 'static`);
//! - `join` returns what `run` returned, or the panic that ended the thread as an `Err`.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};

use crate::panic_message::message;

/// What a thread runs: Python's overridden `run` method, with its data in `self`.
pub trait Run: Send + 'static {
    /// What `join` hands back; `()` for a thread that only does something.
    type Output: Send + 'static;

    /// The thread's work: it owns `self`, so no other thread can touch its data meanwhile.
    fn run(self) -> Self::Output;
}

/// A closure is a `Run` too: `Thread::new(move || run("thread 1"))` is Python's
/// `Thread(target=run, args=("thread 1",))`.
impl<F, T> Run for F
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    type Output = T;
    fn run(self) -> T {
        self()
    }
}

/// A thread that runs a [`Run`], started by `start` and waited for by `join`.
pub struct Thread<R: Run> {
    name: String,
    state: State<R>,
}

enum State<R: Run> {
    New(R),
    Running(JoinHandle<R::Output>),
    Joined,
}

/// A thread that ended by panicking: its name and the panic's message.
#[derive(Debug)]
pub struct Panicked {
    /// The thread's name, `thread-N`.
    pub name: String,
    /// What the panic said.
    pub message: String,
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} panicked: {}", self.name, self.message)
    }
}

impl std::error::Error for Panicked {}

/// Numbers threads `thread-1`, `thread-2`, … as Python numbers `Thread-1`, `Thread-2`.
static COUNT: AtomicUsize = AtomicUsize::new(0);

impl<R: Run> Thread<R> {
    /// Python's `MyThread(n)`: nothing runs until `start`.
    pub fn new(runner: R) -> Thread<R> {
        let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        Thread {
            name: format!("thread-{n}"),
            state: State::New(runner),
        }
    }

    /// Python's `name`: `thread-1`, `thread-2`, … in the order the threads were made.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the thread. A thread starts once, as in Python.
    pub fn start(&mut self) -> io::Result<()> {
        let runner = match std::mem::replace(&mut self.state, State::Joined) {
            State::New(runner) => runner,
            started => {
                self.state = started;
                return Err(io::Error::other("threads can only be started once"));
            }
        };
        let handle = thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || runner.run())?;
        self.state = State::Running(handle);
        Ok(())
    }

    /// Waits for the thread to end and returns what `run` returned. A panic in the thread
    /// comes back here as an `Err`, where Python would only print it and return `None`.
    ///
    /// # Panics
    /// If the thread was not started, or was joined already: a bug in the caller.
    pub fn join(&mut self) -> Result<R::Output, Panicked> {
        let State::Running(handle) = std::mem::replace(&mut self.state, State::Joined) else {
            panic!("join: {} is not running", self.name);
        };
        handle.join().map_err(|payload| Panicked {
            name: self.name.clone(),
            message: message(&*payload),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct Double(u64);

    impl Run for Double {
        type Output = u64;
        fn run(self) -> u64 {
            self.0 * 2
        }
    }

    struct Crash;

    impl Run for Crash {
        type Output = ();
        fn run(self) {
            panic!("crash {}", 42);
        }
    }

    /// Reports the name of the thread it runs on.
    struct WhoAmI(mpsc::Sender<Option<String>>);

    impl Run for WhoAmI {
        type Output = ();
        fn run(self) {
            self.0
                .send(thread::current().name().map(str::to_string))
                .unwrap();
        }
    }

    #[test]
    fn join_returns_what_run_returned() {
        let mut t = Thread::new(Double(21));
        t.start().unwrap();
        assert_eq!(t.join().unwrap(), 42);
    }

    #[test]
    fn a_panic_comes_back_from_join() {
        let mut t = Thread::new(Crash);
        t.start().unwrap();
        let err = t.join().unwrap_err();
        assert_eq!(err.name, t.name());
        assert_eq!(err.message, "crash 42");
    }

    #[test]
    fn the_thread_carries_the_name() {
        let (tx, rx) = mpsc::channel();
        let mut t = Thread::new(WhoAmI(tx));
        assert!(t.name().starts_with("thread-"));
        t.start().unwrap();
        t.join().unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some(t.name()));
    }

    #[test]
    fn a_closure_runs_too() {
        let mut t = Thread::new(|| "done");
        t.start().unwrap();
        assert_eq!(t.join().unwrap(), "done");
    }

    #[test]
    fn names_are_numbered() {
        let a = Thread::new(Double(1));
        let b = Thread::new(Double(1));
        assert_ne!(a.name(), b.name());
    }

    #[test]
    fn a_thread_starts_once() {
        let mut t = Thread::new(Double(1));
        t.start().unwrap();
        assert!(t.start().is_err());
        assert_eq!(t.join().unwrap(), 2);
    }

    #[test]
    #[should_panic(expected = "is not running")]
    fn join_before_start_is_a_bug() {
        let mut t = Thread::new(Double(1));
        let _ = t.join();
    }
}
