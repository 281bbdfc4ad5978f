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
//! Run with: `cargo run -p demo-pool` (`-- --start-method spawn` to start the workers another
//! way, `-- --timeline pool.svg` to draw them). `src/tour.rs` then tours the rest of the pool.

mod demo;
mod timeline;
mod tour;

use std::error::Error;
use std::fs::File;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use rand::seq::IndexedRandom;

use demo::{Args, say};
use demo_pool::{AsyncResult, Pool, StartMethod, run_if_spawned};

const USAGE: &str = "\
Usage: demo-pool [--help] [--start-method fork|spawn|forkserver] [--timeline FILE]

Runs the note's ten tasks on Pool(4): each sleeps 1 to 4 s and says which worker ran it. Then
tours map, imap, starmap, a task that panics, a worker killed mid-task, a task past its
deadline, and terminate(). Exits 1 if a task failed that should not have. --start-method: how
the workers start (default fork), as Python's get_context(method). --timeline FILE also draws
the ten tasks as an SVG.

Environment: DEMO_TIME_SCALE multiplies every sleep (default 1).
";

/// The note's task. It runs in a worker: a `fn`, so that the worker, a fork of this program or
/// this program run again, finds it at the same distance from a fixed function.
fn run(name: u32) {
    say!("task {name} starts");
    let start = Instant::now();
    // The pool reseeds each worker's generator; a forked one would repeat the parent's draws.
    demo::sleep(*[1.0, 2.0, 3.0, 4.0].choose(&mut rand::rng()).unwrap());
    let took = start.elapsed().as_secs_f64();
    say!("task {name} ends, took {took:.2} s");
}

fn main() -> ExitCode {
    // Python's `if __name__ == "__main__":` a spawned worker is this program run again, and
    // becomes a worker here. (Panics first: it never reaches Args::parse, which sets them.)
    demo::one_line_panics();
    run_if_spawned();
    let mut args = Args::parse(USAGE);
    let method = tour::start_method(args.value("--start-method"));
    let picture = args.value("--timeline");
    args.finish();
    // A file that cannot be written stops the demo before it starts, as a bad flag does.
    let picture = picture.map(|path| match File::create(&path) {
        Ok(file) => (path, file),
        Err(e) => demo::fail(&format!("cannot write the timeline to {path}: {e}")),
    });
    let failed = try_main(method, picture).unwrap_or_else(|e| vec![e.to_string()]);
    failed.iter().for_each(|f| eprintln!("demo-pool: {f}"));
    ExitCode::from(u8::from(!failed.is_empty()))
}

/// Runs the demo; returns what failed although it should not have.
fn try_main(method: StartMethod, picture: Option<Picture>) -> Result<Vec<String>, Box<dyn Error>> {
    say!("parent starts");
    let mut p = Pool::with_start_method(4, method)?;
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
        if let Err(e) = result.get() {
            failed.push(format!("task {i} failed: {e}"));
        }
    }
    if let Some((path, mut file)) = picture {
        let title = "Pool(4): the note's ten tasks, each on one of the 4 worker processes";
        file.write_all(timeline::svg(title, &bars(&results)).as_bytes())?;
        say!("wrote timeline to {path}");
    }
    failed.extend(tour::run(method)?);
    Ok(failed)
}

type Picture = (String, File);

/// The picture's bars: each result knows which worker ran its task, and when.
fn bars(results: &[AsyncResult<()>]) -> Vec<timeline::Bar> {
    let ran = (results.iter().enumerate()).filter_map(|(i, r)| Some((i, r.ran()?)));
    let lane = |pid| format!("pid {pid}");
    timeline::bars(ran.map(|(i, r)| (lane(r.pid), format!("task {i}"), r.start, r.end)))
}
