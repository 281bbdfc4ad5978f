//! The conventions every demo follows: `--help`, a one-line error and exit code 2 for bad
//! input, `DEMO_TIME_SCALE` for every sleep, and lines that say who printed them.
//!
//! This file is the same in every demo crate, so that each crate can be copied out alone;
//! a test in the xtask checks that the copies stay identical.

#![allow(dead_code)] // Each demo uses its own part of this file.

use std::time::Duration;

/// `println!` for a line that starts with who printed it: `[pid 4242]` in a process's main
/// thread, `[pid 4242 thread-1]` in a named thread.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{} {}", $crate::demo::who(), format_args!($($arg)*))
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

/// A bad flag, argument or environment value: one line on stderr, exit code 2.
pub fn fail(message: &str) -> ! {
    eprintln!("{}: {message}", env!("CARGO_PKG_NAME"));
    std::process::exit(2)
}

/// The command line, taken apart flag by flag; what is left over at `finish` is an error.
pub struct Args {
    args: Vec<String>,
}

impl Args {
    /// Reads the command line. `--help` prints `usage` and exits 0. Checks `DEMO_TIME_SCALE`
    /// too, so that a bad value stops the demo before it starts anything.
    pub fn parse(usage: &str) -> Args {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.iter().any(|a| a == "--help" || a == "-h") {
            print!("{usage}");
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

    /// The value of `--name VALUE` or `--name=VALUE`, if given.
    pub fn value(&mut self, name: &str) -> Option<String> {
        let i = self
            .args
            .iter()
            .position(|a| a == name || a.starts_with(&format!("{name}=")))?;
        let arg = self.args.remove(i);
        match arg.split_once('=') {
            Some((_, value)) => Some(value.to_string()),
            None if i < self.args.len() => Some(self.args.remove(i)),
            None => fail(&format!("{name} needs a value")),
        }
    }

    /// The arguments left, none of which may look like a flag.
    pub fn finish(self) -> Vec<String> {
        if let Some(flag) = self.args.iter().find(|a| a.starts_with('-')) {
            fail(&format!("unknown flag {flag} (try --help)"));
        }
        self.args
    }
}

/// `DEMO_TIME_SCALE`, a number > 0 that multiplies every sleep; 1 when unset.
pub fn time_scale() -> f64 {
    let Ok(value) = std::env::var("DEMO_TIME_SCALE") else {
        return 1.0;
    };
    match value.parse::<f64>() {
        Ok(scale) if scale > 0.0 && scale.is_finite() => scale,
        _ => fail(&format!(
            "DEMO_TIME_SCALE must be a number > 0, not {value:?}"
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
