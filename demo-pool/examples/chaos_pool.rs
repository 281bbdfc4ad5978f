//! Fault injection for the process pool: workers killed with SIGKILL at random moments while
//! tasks go through `apply_async` (`apply-async-killed`) or `map` (`map-killed`); the same
//! with `maxtasksperchild(MAX_TASKS_PER_CHILD)`, so that workers also leave and are replaced
//! by themselves (`apply-async-killed-maxtasks`, `map-killed-maxtasks`); and with a deadline
//! for every task, which some tasks run past, so that the pool kills workers too
//! (`apply-async-killed-deadline`); and with `THREADS` threads of this process each calling
//! `apply`, one task at a time, so that each thread reads its results from its worker itself,
//! and the results of the others' tasks on that worker too (`apply-threads-killed`).
//!
//! One run: `Pool(4)`, its workers started by `--start-method` (fork, spawn or forkserver),
//! runs batches of small tasks while a thread of this process kills a random worker at random
//! moments, for 0.2 s; then one more batch runs without kills, and the pool is closed and
//! joined. Each task appends its number to a log file that every worker reaches by name,
//! whatever its start method (a spawned worker inherits no memory of ours). Checked: every
//! result is `Ok` with the right value, `Err(WorkerDied)`, or (with a deadline)
//! `Err(TimedOut)`; no task runs twice; an `Ok` comes from a task that ran; every `get` and
//! `map` returns (a watchdog ends a run that hangs).
//!
//! Prints one line, `chaos scenario=… result=ok|broken|hang kills=… lost=… …`.
//!
//! Run with: `cargo run --release -p demo-pool --example chaos_pool -- --scenario
//! apply-async-killed --seed 1 [--start-method spawn]`; `cargo xtask chaos` runs every
//! scenario under each method over many seeds.

mod support;

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use demo_pool::{Error, Pool, StartMethod, run_if_spawned};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Board, Options, Rng, Tally};

const SCENARIOS: [&str; 6] = [
    "apply-async-killed",
    "apply-threads-killed",
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
/// In `apply-threads-killed`, how many threads call `apply` at once.
const THREADS: usize = 4;
/// How long workers are killed before the last batch.
const RUN: Duration = Duration::from_millis(200);
/// The killer kills a worker at a random moment within this after the last kill.
const GAP: Duration = Duration::from_millis(10);
const BATCH: u64 = 200;
const MAX_TASKS: usize = 1 << 20;

/// The run's log, opened once per worker: the name of the controller's descriptor of it.
static LOG: OnceLock<File> = OnceLock::new();

/// A task: writes its number at the end of the log, works a little, returns `2i + 1`. One
/// write of 8 bytes to a file opened for appending lands whole or not at all, even when its
/// worker is killed.
fn task((log, i): (String, u64)) -> u64 {
    let mut file = LOG.get_or_init(|| File::options().append(true).open(log).unwrap());
    file.write_all(&i.to_le_bytes()).unwrap();
    support::spin(Duration::from_micros(i % 50));
    2 * i + 1
}

/// `task`, and then, for one task in `LONG_EVERY`, work `LONG`, far past the deadline of
/// `apply-async-killed-deadline`.
fn task_or_long((log, i): (String, u64)) -> u64 {
    let result = task((log, i));
    if i % LONG_EVERY == LONG_EVERY - 1 {
        support::spin(LONG);
    }
    result
}

fn main() {
    // A spawned worker is this program run again: it becomes a worker here.
    run_if_spawned();
    let (opts, method) = parse();
    match run(&opts, method) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("chaos_pool: {e}");
            std::process::exit(1);
        }
    }
}

/// The command line of `support::Options`, and `--start-method fork|spawn|forkserver`, which
/// the pool takes and `Options` leaves to each program.
fn parse() -> (Options, StartMethod) {
    let about = "One run of the process pool with workers killed by SIGKILL at random moments, \
                 during apply_async or map, the workers started by fork (default), spawn or \
                 forkserver.";
    let mut args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut method = StartMethod::Fork;
    if let Some(i) = args.iter().position(|a| a == "--start-method") {
        let Some(name) = args.get(i + 1) else {
            eprintln!("chaos_pool: --start-method needs a value (try --help)");
            std::process::exit(2);
        };
        method = name.parse().unwrap_or_else(|e| {
            eprintln!("chaos_pool: {e}");
            std::process::exit(2)
        });
        args.drain(i..i + 2);
    }
    (options(&args, about), method)
}

/// `support::Options` from `args`, the command line without `--start-method`, read as
/// `Options::parse` reads it (which takes no start method but fork).
fn options(args: &[String], about: &str) -> Options {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "Usage: chaos_pool --scenario NAME --seed N [--watchdog SECS] \
             [--start-method fork|spawn|forkserver]\n\n{about}\n\nScenarios: {}",
            SCENARIOS.join(", ")
        );
        std::process::exit(0);
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let bad = |why: String| -> ! {
        eprintln!("chaos_pool: {why} (try --help)");
        std::process::exit(2)
    };
    let known = ["--scenario", "--seed", "--watchdog"];
    for pair in args.chunks(2) {
        if !known.contains(&pair[0].as_str()) || pair.len() < 2 {
            bad(format!("unexpected argument {:?}", pair[0]));
        }
    }
    let scenario = value("--scenario").unwrap_or_else(|| bad("--scenario is missing".into()));
    if !SCENARIOS.contains(&scenario.as_str()) {
        bad(format!("no scenario named {scenario:?}"));
    }
    let seed = value("--seed").unwrap_or_else(|| bad("--seed is missing".into()));
    let seed = seed
        .parse()
        .unwrap_or_else(|_| bad("--seed takes a whole number".into()));
    let watchdog = match value("--watchdog").map(|s| s.parse::<u64>()) {
        None => support::WATCHDOG,
        Some(Ok(secs @ 1..=3600)) => Duration::from_secs(secs),
        Some(_) => bad("--watchdog takes whole seconds, 1 to 3600".into()),
    };
    Options {
        program: "chaos_pool",
        scenario: scenario.clone(),
        seed,
        watchdog,
        start_method: support::StartMethod::Fork,
    }
}

/// A file for the run's log, already unlinked (nothing is left behind, even after a hang), and
/// the name under which the workers open it: this process's descriptor in /proc.
fn log() -> Result<(File, String), String> {
    let path = std::env::temp_dir().join(format!("chaos_pool-{}.log", std::process::id()));
    let file = File::options()
        .read(true)
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::remove_file(&path).map_err(|e| e.to_string())?;
    let name = format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
    Ok((file, name))
}

fn run(opts: &Options, method: StartMethod) -> Result<i32, String> {
    let started = Instant::now();
    let board = Board::new(1, WORKERS).map_err(|e| e.to_string())?;
    let (mut log, log_name) = log()?;
    let roles = (0..WORKERS).map(|_| "worker (last seen)".into()).collect();
    let state = || "the pool's workers, as last seen:".to_string();
    let watchdog = support::watch(opts, &board, roles, state, started);
    let mut builder = Pool::builder().processes(WORKERS).start_method(method);
    if opts.scenario.ends_with("-maxtasks") {
        builder = builder.maxtasksperchild(MAX_TASKS_PER_CHILD);
    }
    let long = opts.scenario.ends_with("-deadline");
    if long {
        builder = builder.task_deadline(DEADLINE);
    }
    let mut pool = builder.build().map_err(|e| e.to_string())?;
    let mut rng = Rng::new(opts.seed);
    let mut results = Results {
        log: log_name,
        board: Some(board.clone()),
        long,
        threads: opts.scenario == "apply-threads-killed",
        ..Results::default()
    };
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
    tally.corrupted = results.corrupted;
    let mut logged = Vec::new();
    log.rewind().map_err(|e| e.to_string())?;
    log.read_to_end(&mut logged).map_err(|e| e.to_string())?;
    let mut runs = vec![0u64; next as usize];
    for i in logged.chunks(8) {
        match i.try_into().map(u64::from_le_bytes) {
            Ok(i) if i < next => runs[i as usize] += 1,
            _ => {
                eprintln!("chaos_pool: the log holds {i:?}, which is no task's number");
                tally.corrupted += 1;
            }
        }
    }
    for (i, &n) in runs.iter().enumerate() {
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
    /// The name of the log that tasks write to.
    log: String,
    /// Where a completed operation is counted (the end of a kill's recovery).
    board: Option<Board>,
    /// Per task: whether its result was `Ok`.
    ok: Vec<bool>,
    died: u64,
    timed_out: u64,
    /// Whether some tasks run past their deadline (`task_or_long`).
    long: bool,
    /// Whether `THREADS` threads each call `apply`, rather than one thread `apply_async`.
    threads: bool,
    lost: u64,
    corrupted: u64,
}

impl Results {
    /// Runs tasks `next..next + BATCH` through `apply_async` + `get`, through `apply` from
    /// several threads, or through `map`, and checks each result.
    fn batch(&mut self, pool: &Pool, next: &mut u64, map: bool, rng: &mut Rng) {
        let task = if self.long { task_or_long } else { task };
        let ids: Vec<u64> = (*next..*next + BATCH).collect();
        *next += BATCH;
        self.ok.resize(*next as usize, false);
        if map {
            // A map whose chunk lost its worker fails as a whole, as Python's does.
            let size = 1 + rng.below(BATCH);
            for chunk in ids.chunks(size as usize) {
                let items = chunk.iter().map(|&i| (self.log.clone(), i));
                match pool.map(task, items) {
                    Ok(values) => {
                        for (&i, value) in chunk.iter().zip(values) {
                            self.check(i, Ok(value));
                        }
                    }
                    Err(e) => self.check(chunk[0], Err(e)),
                }
            }
        } else if self.threads {
            let log = &self.log;
            let results: Vec<(u64, Result<u64, Error>)> = thread::scope(|s| {
                let threads: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let mine = ids.iter().skip(t).step_by(THREADS);
                        s.spawn(move || {
                            let results = mine.map(|&i| (i, pool.apply(task, (log.clone(), i))));
                            results.collect::<Vec<_>>()
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .flat_map(|t| t.join().unwrap())
                    .collect()
            });
            for (i, result) in results {
                self.check(i, result);
            }
        } else {
            let pending: Vec<_> = ids
                .iter()
                .map(|&i| (i, pool.apply_async(task, (self.log.clone(), i))))
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
            Ok(value) if value == 2 * i + 1 => {
                self.ok[i as usize] = true;
                self.board.as_ref().expect("set by run").progress();
            }
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
