//! Fault injection for the process pool: workers killed with SIGKILL at random moments while
//! tasks go through `apply_async` (`apply-async-killed`) or `map` (`map-killed`); the same
//! with `maxtasksperchild(MAX_TASKS_PER_CHILD)`, so that workers also leave and are replaced
//! by themselves (`apply-async-killed-maxtasks`, `map-killed-maxtasks`); and with a deadline
//! for every task, which some tasks run past, so that the pool kills workers too
//! (`apply-async-killed-deadline`).
//!
//! One run: `Pool(4)` runs batches of small tasks while a thread of this process kills a
//! random worker at random moments, for 0.2 s; then one more batch runs without kills, and the
//! pool is closed and joined. Each task counts its runs in shared memory. Checked: every
//! result is `Ok` with the right value, `Err(WorkerDied)`, or (with a deadline)
//! `Err(TimedOut)`; no task runs twice; an `Ok` comes from a task that ran; every `get` and
//! `map` returns (a watchdog ends a run that hangs).
//!
//! Prints one line, `chaos scenario=… result=ok|broken|hang kills=… lost=… …`.
//!
//! Run with: `cargo run --release -p demo-pool --example chaos_pool -- --scenario
//! apply-async-killed --seed 1`; `cargo xtask chaos` runs every scenario over many seeds.

mod support;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use demo_pool::{Error, Pool};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Board, Options, Rng, SharedArray, Tally};

const SCENARIOS: [&str; 5] = [
    "apply-async-killed",
    "map-killed",
    "apply-async-killed-maxtasks",
    "map-killed-maxtasks",
    "apply-async-killed-deadline",
];

/// In the `-maxtasks` scenarios, a worker leaves after this many tasks (chunks, in `map`).
const MAX_TASKS_PER_CHILD: usize = 7;
/// In `apply-async-killed-deadline`, every task's deadline; one task in `LONG_EVERY` works
/// `LONG`, far past it.
const DEADLINE: Duration = Duration::from_millis(20);
const LONG_EVERY: u64 = 25;
const LONG: Duration = Duration::from_millis(200);

const WORKERS: usize = 4;
/// How long workers are killed before the last batch.
const RUN: Duration = Duration::from_millis(200);
/// The killer kills a worker at a random moment within this after the last kill.
const GAP: Duration = Duration::from_millis(10);
const BATCH: u64 = 200;
const MAX_TASKS: usize = 1 << 20;

/// The program's own counter on the board.
const CORRUPTED: usize = 0;

/// Shared with the workers, which are forked after it is set: the board, and how many times
/// each task ran.
static SHARED: OnceLock<(Board, SharedArray<AtomicU8>)> = OnceLock::new();
/// Set, before the pool starts, when some tasks run past their deadline.
static LONG_TASKS: OnceLock<()> = OnceLock::new();

/// A task: counts its run, works a little, returns `2i + 1`.
fn task(i: u64) -> u64 {
    let (board, runs) = SHARED.get().expect("set before the pool starts");
    runs[i as usize].fetch_add(1, SeqCst);
    let long = LONG_TASKS.get().is_some() && i % LONG_EVERY == LONG_EVERY - 1;
    support::spin(if long {
        LONG
    } else {
        Duration::from_micros(i % 50)
    });
    board.progress();
    2 * i + 1
}

fn main() {
    let about = "One run of the process pool with workers killed by SIGKILL at random moments, \
                 during apply_async or map.";
    let opts = Options::parse("chaos_pool", about, &SCENARIOS);
    match run(&opts) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("chaos_pool: {e}");
            std::process::exit(1);
        }
    }
}

fn run(opts: &Options) -> Result<i32, String> {
    let started = Instant::now();
    let board = Board::new(1, WORKERS).map_err(|e| e.to_string())?;
    let runs = SharedArray::<AtomicU8>::new(MAX_TASKS).map_err(|e| e.to_string())?;
    let _ = SHARED.set((board.clone(), runs.clone()));
    let roles = (0..WORKERS).map(|_| "worker (last seen)".into()).collect();
    let state = || "the pool's workers, as last seen:".to_string();
    let watchdog = support::watch(opts, &board, roles, state, started);
    let mut builder = Pool::builder().processes(WORKERS);
    if opts.scenario.ends_with("-maxtasks") {
        builder = builder.maxtasksperchild(MAX_TASKS_PER_CHILD);
    }
    if opts.scenario.ends_with("-deadline") {
        let _ = LONG_TASKS.set(());
        builder = builder.task_deadline(DEADLINE);
    }
    let mut pool = builder.build().map_err(|e| e.to_string())?;
    let mut rng = Rng::new(opts.seed);
    let mut results = Results::default();
    let map = opts.scenario.starts_with("map-killed");
    let mut next = 0;
    thread::scope(|s| {
        let (pool, board) = (&pool, &board);
        let mut killer_rng = rng.split(1);
        s.spawn(move || {
            while !board.stopped() {
                thread::sleep(killer_rng.upto(GAP));
                let pids = pool.pids();
                for (slot, pid) in pids.iter().enumerate().take(WORKERS) {
                    board.set_pid(slot, *pid);
                }
                if let Some(&pid) = pids.get(killer_rng.below(pids.len() as u64) as usize) {
                    if !board.stopped() && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                        board.killed();
                    }
                }
            }
        });
        while started.elapsed() < RUN && (next + BATCH) as usize <= MAX_TASKS {
            results.batch(pool, &mut next, map, &mut rng);
        }
        board.stop();
    });
    // The last batch, without kills: the pool still works.
    results.batch(&pool, &mut next, map, &mut rng);
    pool.close();
    pool.join().map_err(|e| e.to_string())?;
    drop(watchdog);

    let mut tally = board.tally();
    tally.lost = results.lost;
    tally.corrupted = results.corrupted + board.word(CORRUPTED).load(SeqCst);
    for i in 0..next as usize {
        let n = u64::from(runs[i].load(SeqCst));
        tally.duplicated += n.saturating_sub(1);
        if n == 0 && results.ok.get(i).copied().unwrap_or(false) {
            eprintln!("chaos_pool: task {i} has a result but never ran");
            tally.corrupted += 1;
        }
    }
    report_died(&results, &tally);
    Ok(support::report(opts, false, &tally, started))
}

fn report_died(results: &Results, tally: &Tally) {
    if tally.broken() {
        eprintln!(
            "chaos_pool: {} results Ok, {} WorkerDied, {} TimedOut",
            results.ok.iter().filter(|ok| **ok).count(),
            results.died,
            results.timed_out
        );
    }
}

#[derive(Default)]
struct Results {
    /// Per task: whether its result was `Ok`.
    ok: Vec<bool>,
    died: u64,
    timed_out: u64,
    lost: u64,
    corrupted: u64,
}

impl Results {
    /// Runs tasks `next..next + BATCH` through `apply_async` + `get`, or through `map`, and
    /// checks each result.
    fn batch(&mut self, pool: &Pool, next: &mut u64, map: bool, rng: &mut Rng) {
        let ids: Vec<u64> = (*next..*next + BATCH).collect();
        *next += BATCH;
        self.ok.resize(*next as usize, false);
        if map {
            // A map whose chunk lost its worker fails as a whole, as Python's does.
            let size = 1 + rng.below(BATCH);
            for chunk in ids.chunks(size as usize) {
                match pool.map(task, chunk.iter().copied()) {
                    Ok(values) => {
                        for (&i, value) in chunk.iter().zip(values) {
                            self.check(i, Ok(value));
                        }
                    }
                    Err(e) => self.check(chunk[0], Err(e)),
                }
            }
        } else {
            let pending: Vec<_> = ids
                .iter()
                .map(|&i| (i, pool.apply_async(task, i)))
                .collect();
            for (i, result) in pending {
                match result {
                    Ok(result) => self.check(i, result.get()),
                    Err(e) => self.check(i, Err(e)),
                }
            }
        }
    }

    fn check(&mut self, i: u64, result: Result<u64, Error>) {
        match result {
            Ok(value) if value == 2 * i + 1 => self.ok[i as usize] = true,
            Ok(value) => {
                eprintln!("chaos_pool: task {i} returned {value}");
                self.corrupted += 1;
            }
            Err(Error::WorkerDied { .. }) => self.died += 1,
            Err(Error::TimedOut { .. }) => self.timed_out += 1,
            Err(e) => {
                eprintln!("chaos_pool: task {i}: {e}");
                self.lost += 1;
            }
        }
    }
}
