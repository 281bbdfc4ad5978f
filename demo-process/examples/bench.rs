//! Process start+join, ours against the bare OS mechanism, fork and spawn.
//!
//! Prints `bench<TAB>id<TAB>who<TAB>median<TAB>unit` lines for `cargo xtask bench`.
//! Run with: `cargo run --release -p demo-process --example bench` (`BENCH_QUICK=1` for fewer repeats)

#[path = "../src/demo.rs"]
#[allow(unused)]
mod demo;
#[path = "../src/process.rs"]
mod process;
#[path = "../src/spawn.rs"]
mod spawn;

use std::process::Command;
use std::time::Instant;

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};
use process::Process;
use spawn::target;

fn noop(_: ()) {}

/// The median time of `f` in microseconds over `n` runs.
fn median_us(n: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

fn report(id: &str, who: &str, value: f64, unit: &str) {
    println!("bench\t{id}\t{who}\t{value:.3}\t{unit}");
}

fn main() {
    spawn::run_if_spawned(&[&target!(noop)]);
    if std::env::args().nth(1).as_deref() == Some("--exit-now") {
        return;
    }
    let n = if std::env::var_os("BENCH_QUICK").is_some() {
        100
    } else {
        1000
    };

    let fork_ours = median_us(n, || {
        let mut p = Process::new(noop, ());
        p.start().unwrap();
        p.join().unwrap();
    });
    let fork_bare = median_us(n, || {
        // SAFETY: the child calls only `_exit`, which is async-signal-safe.
        match unsafe { fork() }.unwrap() {
            ForkResult::Parent { child } => drop(waitpid(child, None).unwrap()),
            // SAFETY: `_exit` ends the child at once; it is always sound to call.
            ForkResult::Child => unsafe { libc::_exit(0) },
        }
    });
    report("process.fork", "ours", fork_ours, "us");
    report("process.fork", "limit", fork_bare, "us");

    let exe = std::env::current_exe().unwrap();
    let spawn_ours = median_us(n / 5, || {
        let mut p = Process::spawn(target!(noop), &()).unwrap();
        p.start().unwrap();
        p.join().unwrap();
    });
    let spawn_bare = median_us(n / 5, || {
        Command::new(&exe).arg("--exit-now").status().unwrap();
    });
    report("process.spawn", "ours", spawn_ours / 1000.0, "ms");
    report("process.spawn", "limit", spawn_bare / 1000.0, "ms");
}
