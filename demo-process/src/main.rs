//! 多进程 (processes): Python's `multiprocessing.Process`, with real OS processes started by
//! fork and by spawn.
//!
//! The note's Python:
//!
//! ```python
//! from multiprocessing import Process
//! def f(name):
//!     print(f'hello {name}')
//! p = Process(target=f, args=('john',))
//! p.start()
//! p.join()
//! ```
//!
//! Run with: `cargo run -p demo-process`

mod demo;
mod process;
mod spawn;

use std::io;
use std::process::ExitCode;

use demo::{Args, say};
use process::Process;
use spawn::target;

const USAGE: &str = "\
Usage: demo-process [--help]

Runs the note's f('john') in a child process started by fork, then by spawn, then tours
join_timeout, terminate and a child that panics. Every line starts with the pid that printed it.

Environment: DEMO_TIME_SCALE multiplies every sleep (default 1).
";

fn f(name: String) {
    say!("hello {name}");
}

/// A child that would run for a long time, for `join_timeout` and `terminate` to act on.
fn sleeper(seconds: f64) {
    demo::sleep(seconds);
}

fn crash(_: ()) {
    panic!("a target that panics");
}

fn main() -> ExitCode {
    // A spawned child is this program run again: here it finds its target by name and runs
    // it instead of the rest of main.
    spawn::run_if_spawned(&[&target!(f), &target!(sleeper)]);
    Args::parse(USAGE).finish();
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-process: {e}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> io::Result<()> {
    say!("start method fork: the child is a copy of this process");
    let mut p = Process::new(f, "john".to_string());
    p.start()?;
    say!("started {} with pid {}", p.name(), p.pid().unwrap());
    let code = p.join()?;
    say!("joined {}: exitcode {code}", p.name());

    say!("start method spawn: the child runs this program again and finds f by name");
    let mut p = Process::spawn(target!(f), &"john".to_string())?;
    p.start()?;
    say!("started {} with pid {}", p.name(), p.pid().unwrap());
    let code = p.join()?;
    say!("joined {}: exitcode {code}", p.name());

    let mut p = Process::new(sleeper, 60.0);
    p.start()?;
    let timeout = demo::scaled(0.5);
    p.join_timeout(timeout)?;
    let alive = p.is_alive()?;
    say!(
        "{} sleeps 60 s; after join_timeout(0.5 s), exitcode {:?}, is_alive {alive}",
        p.name(),
        p.exitcode()
    );
    p.terminate()?;
    let code = p.join()?;
    say!("terminate(): {} exitcode {code} (minus SIGTERM)", p.name());

    let mut p = Process::new(crash, ());
    p.start()?;
    let code = p.join()?;
    say!(
        "{} panicked: exitcode {code}, its message is on stderr",
        p.name()
    );
    Ok(())
}
