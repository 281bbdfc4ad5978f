//! 进程池 (the process pool): Python's `multiprocessing.Pool`, with worker processes that
//! survive a panicking task and are replaced when killed.
//!
//! The note's Python:
//!
//! ```python
//! def run(name):
//!     print("%s子进程开始，进程ID：%d" % (name, os.getpid()))
//!     start = time()
//!     sleep(random.choice([1, 2, 3, 4]))
//!     end = time()
//!     print("%s子进程结束，进程ID：%d。耗时0.2%f" % (name, os.getpid(), end-start))
//!
//! if __name__ == "__main__":
//!     print("父进程开始")
//!     p = Pool(4)
//!     for i in range(10):
//!         p.apply_async(run, args=(i,))
//!     p.close()
//!     p.join()
//!     print("父进程结束。")
//!     p.terminate()
//! ```
//!
//! Run with: `cargo run -p demo-pool` (add `--timeline pool.svg` to draw which worker ran
//! which task, and when)

mod demo;
mod pool;
mod timeline;

use std::error::Error;
use std::fs::File;
use std::io::Write;
use std::process::ExitCode;
use std::sync::LazyLock;

use nix::sys::signal::kill;
use nix::unistd::Pid;
use rand::seq::IndexedRandom;

use demo::{Args, say};
use pool::Pool;
use timeline::{Bar, Timeline};

const USAGE: &str = "\
Usage: demo-pool [--help] [--timeline FILE]

Runs the note's ten tasks on Pool(4): each sleeps 1 to 4 s and says which worker ran it. Then
tours map, a task that panics, and terminate(). Exits 1 if a task failed that should not have.

--timeline FILE also draws the ten tasks as an SVG: a lane per worker, a bar per task.

Environment: DEMO_TIME_SCALE multiplies every sleep (default 1).
";

/// The clock of the timeline, started in the parent before the pool; the workers, forks of
/// the parent, read the same clock.
static CLOCK: LazyLock<Timeline> = LazyLock::new(Timeline::new);

/// The note's task. It runs in a worker: a `fn`, so that the worker, a fork of this program,
/// finds it at the same address. It returns where and when it ran, for the timeline.
fn run(name: u32) -> (u32, f64, f64) {
    say!("task {name} starts");
    let start = CLOCK.now();
    // The pool reseeds each worker's generator; a forked one would repeat the parent's draws.
    demo::sleep(*[1.0, 2.0, 3.0, 4.0].choose(&mut rand::rng()).unwrap());
    let end = CLOCK.now();
    say!("task {name} ends, took {:.2} s", end - start);
    (std::process::id(), start, end)
}

fn square(x: u64) -> u64 {
    x * x
}

fn crash(_: ()) {
    panic!("a task that panics");
}

/// Whether `pid` names a process, as `kill -0` asks.
fn is_alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

fn main() -> ExitCode {
    let mut args = Args::parse(USAGE);
    let picture = args.value("--timeline");
    args.finish();
    // A file that cannot be written stops the demo before it starts, as a bad flag does.
    let picture = picture.map(|path| match File::create(&path) {
        Ok(file) => (path, file),
        Err(e) => demo::fail(&format!("cannot write the timeline to {path}: {e}")),
    });
    let failed = try_main(picture).unwrap_or_else(|e| vec![e.to_string()]);
    failed.iter().for_each(|f| eprintln!("demo-pool: {f}"));
    ExitCode::from(u8::from(!failed.is_empty()))
}

/// Runs the demo; returns what failed although it should not have.
fn try_main(picture: Option<(String, File)>) -> Result<Vec<String>, Box<dyn Error>> {
    say!("parent starts");
    LazyLock::force(&CLOCK);
    let mut p = Pool::new(4)?;
    let mut results = Vec::new();
    for i in 0..10 {
        results.push(p.apply_async(run, i)?);
    }
    p.close();
    p.join()?;
    say!("parent ends");
    p.terminate();
    // Python drops a task's exception unless someone calls get(); here every result is asked.
    let mut failed = Vec::new();
    for (i, result) in results.iter().enumerate() {
        match result.get() {
            Ok((pid, start, end)) => CLOCK.add(Bar::new(
                &format!("pid {pid}"),
                &format!("task {i}"),
                start,
                end,
            )),
            Err(e) => failed.push(format!("task {i} failed: {e}")),
        }
    }
    if let Some((path, mut file)) = picture {
        let title = "Pool(4): the note's ten tasks, each on one of the 4 worker processes";
        file.write_all(timeline::svg(title, &CLOCK.bars()).as_bytes())?;
        say!("wrote timeline to {path}");
    }

    say!("the rest of Pool, on Pool(2):");
    let mut pool = Pool::new(2)?;
    say!("map(square, range(10)) = {:?}", pool.map(square, 0..10)?);
    match pool.apply_async(crash, ())?.get() {
        Err(pool::Error::Panicked(message)) => say!("apply_async(crash).get() failed: {message}"),
        other => failed.push(format!("crash should have panicked, got {other:?}")),
    }
    let seven = pool.apply(square, 7)?;
    say!("apply(square, 7) = {seven}, the pool goes on");

    for _ in 0..2 {
        pool.apply_async(demo::sleep, 60.0)?;
    }
    let workers = pool.pids();
    pool.terminate();
    let (stopped, alive) = (
        workers.len(),
        workers.iter().filter(|&&p| is_alive(p)).count(),
    );
    say!("terminate() with 2 tasks running: {stopped} workers stopped at once, {alive} alive");
    Ok(failed)
}
