//! The conventions every demo follows: `--help`, a one-line error and exit code 2 for bad
//! input, `DEMO_TIME_SCALE` for every sleep, lines that say who printed them, a panic that is
//! one line, and a quiet end when the reader of stdout goes away.
//!
//! It belongs to the demo binary (`mod demo;` in `main.rs`), not to the crate's library.
//!
//! This file is the same in every demo crate, so that each crate can be copied out alone;
//! a test in the xtask checks that the copies stay identical.

#![allow(dead_code)] // Each demo uses its own part of this file.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// `println!` for a line that starts with who printed it: `[pid 4242]` in a process's main
/// thread, `[pid 4242 thread-1]` in a named thread.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::demo::say_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

pub fn who() -> String {
    let pid = std::process::id();
    match std::thread::current().name() {
        Some("main") | None => format!("[pid {pid}]"),
        Some(name) => format!("[pid {pid} {name}]"),
    }
}

/// Prints one line of `say!`. Rust ignores SIGPIPE, so `println!` would panic once the
/// reader has gone (`demo | head -1`); this ends the demo quietly instead, as `cat` does.
pub fn say_line(line: fmt::Arguments) {
    write_stdout(format_args!("{} {line}\n", who()));
}

/// The demo's own process, the one that parsed the command line; its children are forks of
/// it (or programs it started) and have other pids.
static DEMO: AtomicU32 = AtomicU32::new(0);

/// Whether this process found stdout closed: it prints nothing from then on.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

fn write_stdout(text: fmt::Arguments) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        drop(stdout);
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("{}: cannot write to stdout: {e}", env!("CARGO_PKG_NAME"));
            std::process::exit(1);
        }
        stdout_gone();
    }
}

/// The reader of stdout has gone. The demo ends at once, with exit code 0 and not a word,
/// after it has killed its children: a child that saw its parent vanish might say so on
/// stderr. A child that finds stdout closed first only stops printing and goes on, so that
/// its parent never finds a child gone in the middle of its work, until the parent, which
/// prints too, finds stdout closed and ends it.
fn stdout_gone() {
    STDOUT_GONE.store(true, Ordering::Relaxed);
    if std::process::id() == DEMO.load(Ordering::Relaxed) {
        for child in children() {
            let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        }
        std::process::exit(0);
    }
}

/// The pids of this process's children, whichever of its threads started them.
fn children() -> Vec<i32> {
    let threads = std::fs::read_dir("/proc/self/task").into_iter().flatten();
    let lists =
        threads.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok());
    lists
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A bad flag, argument or environment value: one line on stderr, exit code 2.
pub fn fail(message: &str) -> ! {
    eprintln!("{}: {message}", env!("CARGO_PKG_NAME"));
    std::process::exit(2)
}

/// The end of every demo's `main`: exit code 0, or the error as one line on stderr and exit
/// code 1.
pub fn exit_code<E: fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e}", env!("CARGO_PKG_NAME"));
            ExitCode::FAILURE
        }
    }
}

/// The command line, taken apart flag by flag; nothing may be left over at `finish`.
pub struct Args {
    args: Vec<String>,
}

impl Args {
    /// Reads the command line. `--help` prints `usage` and exits 0. Checks `DEMO_TIME_SCALE`
    /// too, so that a bad value stops the demo before it starts anything, and makes every
    /// panic from here on one line on stderr (see `one_line_panics`).
    pub fn parse(usage: &str) -> Args {
        DEMO.store(std::process::id(), Ordering::Relaxed);
        one_line_panics();
        let args: Vec<String> = std::env::args_os()
            .skip(1)
            .map(|arg| arg.into_string().unwrap_or_else(not_utf8))
            .collect();
        if args.iter().any(|a| a == "--help" || a == "-h") {
            write_stdout(format_args!("{usage}"));
            std::process::exit(0);
        }
        time_scale();
        Args { args }
    }

    /// Whether `--name` was given.
    pub fn flag(&mut self, name: &str) -> bool {
        let before = self.args.len();
        self.args.retain(|a| a != name);
        self.args.len() < before
    }

    /// The value of `--name VALUE` or `--name=VALUE`, if given. A value that looks like a
    /// flag is taken only in the second form, so that `--name --typo` is not a file.
    pub fn value(&mut self, name: &str) -> Option<String> {
        let i = self
            .args
            .iter()
            .position(|a| a == name || a.starts_with(&format!("{name}=")))?;
        let arg = self.args.remove(i);
        match arg.split_once('=') {
            Some((_, value)) => Some(value.to_string()),
            None if i < self.args.len() && !self.args[i].starts_with('-') => {
                Some(self.args.remove(i))
            }
            None => fail(&format!("{name} needs a value (try --help)")),
        }
    }

    /// Ends the parsing: any argument left is an error.
    pub fn finish(self) {
        if let Some(arg) = self.args.first() {
            fail(&unexpected(arg));
        }
    }

    /// The arguments left, for a demo that takes some (URLs); none may look like a flag.
    pub fn operands(self) -> Vec<String> {
        if let Some(flag) = self.args.iter().find(|a| a.starts_with('-')) {
            fail(&unexpected(flag));
        }
        self.args
    }
}

fn unexpected(arg: &str) -> String {
    if arg.starts_with('-') {
        format!("unknown flag {arg} (try --help)")
    } else {
        format!("unexpected argument {arg:?} (try --help)")
    }
}

fn not_utf8(arg: OsString) -> String {
    fail(&format!("the argument {arg:?} is not UTF-8"))
}

/// The largest `DEMO_TIME_SCALE`: a hundred times the note's timings is already slower than
/// anyone watches, and every scaled sleep stays far from what `Duration` can hold.
pub const MAX_TIME_SCALE: f64 = 100.0;

/// `DEMO_TIME_SCALE`, a number in (0, 100] that multiplies every sleep; 1 when unset.
pub fn time_scale() -> f64 {
    let Some(value) = std::env::var_os("DEMO_TIME_SCALE") else {
        return 1.0;
    };
    match value.to_str().map(str::parse::<f64>) {
        Some(Ok(scale)) if scale > 0.0 && scale <= MAX_TIME_SCALE => scale,
        _ => fail(&format!(
            "DEMO_TIME_SCALE must be a number in (0, {MAX_TIME_SCALE}], not {value:?}"
        )),
    }
}

/// `seconds` of the note's time, scaled by `DEMO_TIME_SCALE`.
pub fn scaled(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds * time_scale())
}

/// Python's `time.sleep(seconds)`, scaled by `DEMO_TIME_SCALE`.
pub fn sleep(seconds: f64) {
    std::thread::sleep(scaled(seconds));
}

/// Makes every panic print one line, `[pid 4242 thread-1] panicked at src/main.rs:9:5: …`,
/// whatever `RUST_BACKTRACE` says: the demos panic on purpose to show where a panic ends
/// up, and a backtrace would drown the story. `Args::parse` calls it; a program whose spawned
/// children never parse arguments calls it first thing in `main`. Children forked later
/// inherit the hook. Once stdout is closed, a panic says nothing, as the rest of the demo.
pub fn one_line_panics() {
    std::panic::set_hook(Box::new(|info| {
        if STDOUT_GONE.load(Ordering::Relaxed) {
            return;
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic without a message");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let message = message.replace('\n', " ");
        let _ = writeln!(io::stderr(), "{} panicked{at}: {message}", who());
    }));
}
