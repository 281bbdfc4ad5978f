//! Fault injection for the process lock: holders and waiters killed with SIGKILL at random
//! moments, and the one death that robust futexes do not cover, reproduced every time.
//!
//! Scenarios:
//! - `holder-killed`: 3 processes add to a counter under the lock, each in two steps with a
//!   journal, so that a holder killed in between leaves a half update; a supervisor beside
//!   each kills it at random moments and starts the next, for 0.2 s; then two of them are
//!   killed for good, and the survivor goes on for 0.1 s without them. The next acquirer
//!   after a death is told (`OwnerDied`) and rolls the half update back.
//! - `timeout-waiters-killed`: the same with 4 processes that wait in `acquire_timeout` and
//!   hold the lock longer, so that most kills hit a waiter. A `WouldBlock` is checked against
//!   the lock's word: the lock must not have been free, and untaken, for the whole wait.
//! - `woken-waiter`: two processes sleep in `acquire`; the holder releases, which wakes the
//!   first; that one is killed before it can run (all on one CPU, it in `SCHED_IDLE` beside
//!   a busy process), and a third process takes the free lock at once and releases it. The
//!   second waiter must still get the lock. `woken-waiter-no-rearm` is the same with the
//!   re-armed sleeps turned off: it must hang, which shows that the run can see the bug.
//!
//! Checked: the guarded data is exact after repair (the counter equals the sum of each
//! process's share, each share within the kills of its slot of what its processes saw
//! complete), no run hangs, no timed call lies. Prints one line, `chaos scenario=… result=…`.
//!
//! `--start-method fork|spawn|forkserver` (default fork) says how every process of the run
//! starts. Under spawn and forkserver each one is sent the lock and the run's shared counters
//! as descriptors (`SCM_RIGHTS`) inside its arguments, and maps the same memfds; a spawned
//! image does not inherit the control's setting, so the run sends it too.
//!
//! Run with: `cargo run --release -p demo-lock --example chaos_lock -- --scenario
//! holder-killed --seed 1`; `cargo xtask chaos` runs every scenario over many seeds.

mod support;

use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use demo_lock::{Guard, Lock, Process, ProcessMutex, TryAcquireError};
use demo_lock::{fds, get_context, run_if_spawned};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use support::{Board, Child, Kills, Options, Rng, StartMethod};

const SCENARIOS: [&str; 4] = [
    "holder-killed",
    "timeout-waiters-killed",
    "woken-waiter",
    "woken-waiter-no-rearm",
];

/// How long the processes are killed and replaced before the run stops replacing them.
const RUN: Duration = Duration::from_millis(200);
/// How long the survivors go on after that, while some are killed for good.
const LAST: Duration = Duration::from_millis(100);
/// Each supervisor kills its worker at a random moment within this after starting it.
const GAP: Duration = Duration::from_millis(20);
const MAX_WORKERS: usize = 4;

/// The guarded data: the counter, the journal of the update under way, and each slot's share.
type Data = [AtomicU64; 16];
const TOTAL: usize = 0;
/// The slot + 1 of the update under way; 0 when none is.
const DIRTY: usize = 1;
const SAVED_TOTAL: usize = 2;
const SAVED_SHARE: usize = 3;
const SHARE: usize = 4;

/// The program's own counters on the board.
const ACQUIRED: usize = 0;
const REPAIRS: usize = 1;
const SECOND_WAITER_AT: usize = 2;
const RELEASED_AT: usize = 3;
/// Per slot: the increments its workers saw complete, and the kills of its workers.
const DONE: usize = 4;
const KILLS_OF: usize = DONE + MAX_WORKERS;
const WORDS: usize = KILLS_OF + MAX_WORKERS;

/// The bits of the lock word (see `ProcessMutex::lock_word`).
const WAITERS: u32 = 1 << 31;
const TID: u32 = (1 << 30) - 1;

#[derive(Clone)]
struct Ctx {
    board: Board,
    rng: Rng,
    method: StartMethod,
    /// Whether waits are re-armed (false only in the control).
    rearm: bool,
}

/// A descriptor inside a child's arguments (see `fds`).
#[derive(Serialize)]
struct FdOut<'a>(#[serde(with = "fds")] BorrowedFd<'a>);

#[derive(Deserialize)]
struct FdIn(#[serde(with = "fds")] OwnedFd);

/// A spawned child is sent the memfds of the run's shared counters.
impl Serialize for Ctx {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fds = self.board.memfds().map(FdOut);
        (fds, &self.rng, self.method, self.rearm).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Ctx {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ([words, pids], rng, method, rearm) =
            <([FdIn; 2], Rng, StartMethod, bool)>::deserialize(d)?;
        Ok(Ctx {
            board: Board::adopt([words.0, pids.0]).map_err(D::Error::custom)?,
            rng,
            method,
            rearm,
        })
    }
}

impl support::Child for Process {
    fn pid(&self) -> i32 {
        Process::pid(self).unwrap_or(0)
    }
    fn is_alive(&mut self) -> bool {
        Process::is_alive(self).unwrap_or(false)
    }
    fn kill(&mut self) -> io::Result<()> {
        Process::kill(self)
    }
    fn join(&mut self) -> io::Result<i32> {
        Process::join(self)
    }
}

fn main() {
    // A spawned child is this program run again: here it runs its target and exits.
    run_if_spawned();
    let about = "One run of the process lock under SIGKILLs: holders killed, waiters in \
                 acquire_timeout killed, or the woken waiter killed (deterministic).";
    let opts = Options::parse_methods("chaos_lock", about, &SCENARIOS, &StartMethod::ALL);
    let result = match opts.scenario.as_str() {
        "holder-killed" => random_kills(&opts, 3, false),
        "timeout-waiters-killed" => random_kills(&opts, 4, true),
        "woken-waiter" => woken_waiter(&opts),
        _ => {
            disable_rearm();
            woken_waiter(&opts)
        }
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("chaos_lock: {e}");
            std::process::exit(1);
        }
    }
}

/// Turns off the re-armed sleeps, in this process and every one it forks from now on.
fn disable_rearm() {
    demo_lock::set_period(None);
}

/// Starts a process with the run's start method.
fn start<A>(method: StartMethod, target: fn(A), args: A) -> io::Result<Process>
where
    A: Serialize + DeserializeOwned + 'static,
{
    use demo_lock::StartMethod as M;
    let method = match method {
        StartMethod::Fork => M::Fork,
        StartMethod::Spawn => M::Spawn,
        StartMethod::Forkserver => M::Forkserver,
    };
    let mut p = get_context(method).process(target, args);
    p.start()?;
    Ok(p)
}

fn new_data() -> Data {
    std::array::from_fn(|_| AtomicU64::new(0))
}

fn random_kills(opts: &Options, workers: usize, timed: bool) -> io::Result<i32> {
    let started = Instant::now();
    let ctx = Ctx {
        board: Board::new(WORDS, 2 * workers)?,
        rng: Rng::new(opts.seed),
        method: opts.start_method,
        rearm: demo_lock::period().is_some(),
    };
    let m = ProcessMutex::new(new_data())?;
    let roles = (0..workers)
        .map(|slot| format!("supervisor {slot}"))
        .chain((0..workers).map(|slot| format!("worker {slot}")))
        .collect();
    let word = m.clone();
    let state = move || format!("lock word: {:#010x}", word.lock_word());
    let watchdog = support::watch(opts, &ctx.board, roles, state, started);
    let mut supervisors = Vec::new();
    for slot in 0..workers {
        let args = (ctx.clone(), m.clone(), slot, workers, timed);
        let p = start(ctx.method, supervisor, args)?;
        ctx.board.set_pid(slot, Child::pid(&p));
        supervisors.push(p);
    }
    thread::sleep(RUN);
    ctx.board.stop();
    thread::sleep(LAST);
    ctx.board.finish();
    let mut failed = 0;
    for p in &mut supervisors {
        let code = p.join()?;
        if code != 0 {
            eprintln!("chaos_lock: a supervisor ended with {code}");
            failed += 1;
        }
    }
    // The last kill may have hit a holder: this acquire repairs, as any other would.
    let guard = acquire_and_repair(&ctx, &m);
    ctx.board.progress();
    let mut tally = ctx.board.tally();
    tally.corrupted += failed;
    let total = guard[TOTAL].load(SeqCst);
    let shares: u64 = (0..workers).map(|s| guard[SHARE + s].load(SeqCst)).sum();
    if total != shares || guard[DIRTY].load(SeqCst) != 0 {
        eprintln!("chaos_lock: counter {total}, shares {shares}, journal not clean");
        tally.corrupted += 1;
    }
    for slot in 0..workers {
        let share = guard[SHARE + slot].load(SeqCst);
        let done = ctx.board.word(DONE + slot).load(SeqCst);
        let kills = ctx.board.word(KILLS_OF + slot).load(SeqCst);
        // A share counts an increment before its worker sees it complete, so it may be ahead
        // by one for each worker killed in between, never behind.
        tally.lost += done.saturating_sub(share);
        tally.duplicated += share.saturating_sub(done + kills);
    }
    drop(guard);
    drop(watchdog);
    Ok(support::report(opts, false, &tally, started))
}

fn supervisor((ctx, m, slot, workers, timed): (Ctx, ProcessMutex<Data>, usize, usize, bool)) {
    let mut rng = ctx.rng.split(1_000_000 + slot as u64);
    let start_worker = |g| start(ctx.method, worker, (ctx.clone(), m.clone(), slot, g, timed));
    let count_kill = || {
        ctx.board.word(KILLS_OF + slot).fetch_add(1, SeqCst);
    };
    // Slot 0 keeps its last worker, the others lose theirs: the survivors must finish
    // without them.
    let kills = Kills {
        gap: Some(GAP),
        last: slot != 0,
    };
    let code = support::supervise(
        &ctx.board,
        workers + slot,
        kills,
        &mut rng,
        start_worker,
        count_kill,
    );
    support::exit_now(code);
}

/// Adds 1 to the counter and to its slot's share, under the lock, until the run finishes.
fn worker((ctx, m, slot, g, timed): (Ctx, ProcessMutex<Data>, usize, u64, bool)) {
    let mut rng = ctx.rng.split(g);
    while !ctx.board.finished() {
        let guard = if timed {
            let acquired = ctx.board.word(ACQUIRED);
            let (before, word_before) = (acquired.load(SeqCst), m.lock_word());
            match m.acquire_timeout(rng.upto(Duration::from_millis(20))) {
                Ok(guard) => counted(&ctx, guard),
                Err(TryAcquireError::OwnerDied(died)) => repaired(&ctx, died.into_guard()),
                Err(TryAcquireError::WouldBlock) => {
                    // Free (no owner, dead or alive) when the wait began and when it ended,
                    // and nobody acquired it in between: it was free for the whole wait.
                    let word_after = m.lock_word();
                    if acquired.load(SeqCst) == before
                        && word_before & TID == 0
                        && word_after & !WAITERS == 0
                    {
                        eprintln!("[pid {}] WouldBlock on a free lock", std::process::id());
                        ctx.board.false_timeout();
                    }
                    continue;
                }
            }
        } else {
            acquire_and_repair(&ctx, &m)
        };
        // Timed workers hold the lock longer, so that others wait for it.
        let hold = if timed {
            Duration::from_micros(300)
        } else {
            Duration::from_micros(10)
        };
        increment(&guard, slot, rng.upto(hold));
        drop(guard);
        ctx.board.word(DONE + slot).fetch_add(1, SeqCst);
        ctx.board.progress();
        support::spin(rng.upto(Duration::from_micros(5)));
    }
}

fn acquire_and_repair<'a>(ctx: &Ctx, m: &'a ProcessMutex<Data>) -> Guard<'a, Data> {
    match m.acquire() {
        Ok(guard) => counted(ctx, guard),
        Err(died) => repaired(ctx, died.into_guard()),
    }
}

fn counted<'a>(ctx: &Ctx, guard: Guard<'a, Data>) -> Guard<'a, Data> {
    ctx.board.word(ACQUIRED).fetch_add(1, SeqCst);
    guard
}

/// The previous holder died: roll back its half update, if it left one.
fn repaired<'a>(ctx: &Ctx, guard: Guard<'a, Data>) -> Guard<'a, Data> {
    let guard = counted(ctx, guard);
    let dirty = guard[DIRTY].load(SeqCst);
    if dirty != 0 {
        let slot = dirty as usize - 1;
        guard[TOTAL].store(guard[SAVED_TOTAL].load(SeqCst), SeqCst);
        guard[SHARE + slot].store(guard[SAVED_SHARE].load(SeqCst), SeqCst);
        guard[DIRTY].store(0, SeqCst);
        ctx.board.word(REPAIRS).fetch_add(1, SeqCst);
    }
    guard
}

/// The update, in steps that a kill may separate: journal, counter, share, journal cleared.
/// (SeqCst stores keep their order, so the journal is written before what it covers.)
fn increment(data: &Data, slot: usize, hold: Duration) {
    data[SAVED_TOTAL].store(data[TOTAL].load(SeqCst), SeqCst);
    data[SAVED_SHARE].store(data[SHARE + slot].load(SeqCst), SeqCst);
    data[DIRTY].store(slot as u64 + 1, SeqCst);
    data[TOTAL].fetch_add(1, SeqCst);
    support::spin(hold);
    data[SHARE + slot].fetch_add(1, SeqCst);
    data[DIRTY].store(0, SeqCst);
}

/// The deterministic case: the waiter an unlock wakes is killed before it takes the lock.
fn woken_waiter(opts: &Options) -> io::Result<i32> {
    let started = Instant::now();
    let ctx = Ctx {
        board: Board::new(WORDS, 4)?,
        rng: Rng::new(opts.seed),
        method: opts.start_method,
        rearm: demo_lock::period().is_some(),
    };
    // Everything on one CPU, so that who runs when is the scheduler's choice alone.
    let cpus = support::allowed_cpus();
    support::pin_to_cpu(cpus[opts.seed as usize % cpus.len()])?;
    let lock = Lock::new(())?;
    let roles = [
        "woken waiter",
        "second waiter",
        "third process",
        "busy process",
    ];
    let roles = roles.map(String::from).to_vec();
    let word = lock.clone();
    let state = move || format!("lock word: {:#010x}", word.lock_word());
    let watchdog = support::watch(opts, &ctx.board, roles, state, started);
    let asleep = |p: &Process, who: &str| {
        if support::wait_until_asleep_in_futex(Child::pid(p), Duration::from_secs(10)) {
            Ok(())
        } else {
            Err(io::Error::other(format!("the {who} did not go to sleep")))
        }
    };

    let held = lock.acquire().unwrap();
    // The first waiter sleeps first, so it is first in the futex's queue: the one the
    // unlock wakes. Its own sleeps are never re-armed, so it stays first.
    let mut woken = start(ctx.method, first_waiter, lock.clone())?;
    ctx.board.set_pid(0, Child::pid(&woken));
    asleep(&woken, "first waiter")?;
    let mut second = start(ctx.method, second_waiter, (ctx.clone(), lock.clone()))?;
    ctx.board.set_pid(1, Child::pid(&second));
    asleep(&second, "second waiter")?;
    support::set_idle(Child::pid(&woken))?;
    let mut busy = start(ctx.method, busy, ctx.clone())?;
    ctx.board.set_pid(3, Child::pid(&busy));
    let (mut to_third, there) = UnixStream::pair()?;
    let mut third = start(ctx.method, third, (lock.clone(), Parent(there)))?;
    ctx.board.set_pid(2, Child::pid(&third));

    drop(held); // Wakes the first waiter, which cannot run yet: it is SCHED_IDLE, the CPU busy.
    woken.kill()?;
    ctx.board.killed();
    to_third.write_all(b"g")?; // Take the lock: it is free, so without waiting.
    to_third.read_exact(&mut [0])?;
    // The killed waiter dies while the lock is held: the kernel, which wakes a waiter for
    // one that dies between being woken and taking a free lock, sees it taken.
    woken.join()?;
    ctx.board.word(RELEASED_AT).store(support::now_ns(), SeqCst);
    to_third.write_all(b"r")?; // Release it: no waiter is marked, so no one is woken.
    let third_code = third.join()?;
    // The second waiter must get the lock all the same.
    let second_code = second.join()?;
    ctx.board.finish();
    busy.join()?;
    drop(watchdog);

    let mut tally = ctx.board.tally();
    let (released, got) = (
        ctx.board.word(RELEASED_AT).load(SeqCst),
        ctx.board.word(SECOND_WAITER_AT).load(SeqCst),
    );
    tally.recovery = Duration::from_nanos(got.saturating_sub(released));
    if third_code != 0 || second_code != 0 {
        eprintln!(
            "chaos_lock: the third process ended with {third_code}, the second waiter {second_code}"
        );
        tally.corrupted += 1;
    }
    Ok(support::report(opts, false, &tally, started))
}

fn first_waiter(lock: Lock) {
    disable_rearm();
    let _guard = lock.acquire();
}

fn second_waiter((ctx, lock): (Ctx, Lock)) {
    if !ctx.rearm {
        disable_rearm(); // A spawned image starts with the default.
    }
    let _guard = lock.acquire();
    ctx.board
        .word(SECOND_WAITER_AT)
        .store(support::now_ns(), SeqCst);
    ctx.board.progress();
}

/// The third process's socket to the controller.
#[derive(Serialize, Deserialize)]
struct Parent(#[serde(with = "fds")] UnixStream);

fn third((lock, Parent(mut parent)): (Lock, Parent)) {
    parent.read_exact(&mut [0]).unwrap();
    let guard = lock.acquire();
    parent.write_all(b"h").unwrap();
    parent.read_exact(&mut [0]).unwrap();
    drop(guard);
}

/// Keeps the CPU busy until the run finishes, so that a SCHED_IDLE process there does not run.
fn busy(ctx: Ctx) {
    while !ctx.board.finished() {
        support::spin(Duration::from_micros(100));
    }
}
