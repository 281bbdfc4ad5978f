//! 多进程 (processes): Python's `multiprocessing.Process`, with real OS processes started by
//! each of Python's three start methods: fork, spawn and forkserver.
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

use std::io;
use std::process::ExitCode;

use demo::{Args, say};
use demo_process::{Process, StartMethod, get_context, run_if_spawned};

const USAGE: &str = "\
Usage: demo-process [--help]

Runs the note's f('john') in a child process started by each start method (fork, spawn,
forkserver), then tours join_timeout, terminate, and a child that panics under each method.
Every line starts with the pid that printed it.

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
    // First, so that a spawned child's panic is one line too: it never reaches Args::parse.
    demo::one_line_panics();
    // Python's `if __name__ == "__main__":`. A spawned child is this program run again: here
    // it runs the target it was sent, instead of the rest of main.
    run_if_spawned();
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
    for method in StartMethod::ALL {
        say!("start method {method}: {}", how(method));
        let mut p = get_context(method).process(f, "john".to_string());
        p.start()?;
        say!("started {} with pid {}", p.name(), p.pid().unwrap());
        let code = p.join()?;
        say!("joined {}: exitcode {code}", p.name());
    }

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

    for method in StartMethod::ALL {
        let mut p = get_context(method).process(crash, ());
        p.start()?;
        let code = p.join()?;
        say!(
            "{} panicked: exitcode {code}, its message is on stderr",
            p.name()
        );
    }
    Ok(())
}

fn how(method: StartMethod) -> &'static str {
    match method {
        StartMethod::Fork => "the child is a copy of this process",
        StartMethod::Spawn => "the child runs this program again, told what to run by a socket",
        StartMethod::Forkserver => "a server, spawned once, forks the child",
    }
}
