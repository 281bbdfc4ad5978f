//! Fault injection for the queue between processes: writers, readers, or both, killed with
//! SIGKILL at random moments, on `Queue::bounded(1)`, `Queue::bounded(2)` and `Queue::new()`.
//!
//! One run: 3 writer processes put numbered, checksummed values and 2 reader processes get
//! them, while a supervisor beside each one kills it at random moments and starts the next,
//! for 0.2 s. Then no process is replaced any more, and all but one writer and one reader of
//! those being killed are killed once more, for good; the survivors go on for 0.1 s without
//! them. Then the run finishes: the last writers end, and the readers drain the queue and
//! must get `Disconnected`. A quarter of the calls are timed (`put_timeout`,
//! `get_timeout`). Checked in every run:
//! - every value read is intact and was put, once;
//! - each reader gets each writer's values in put order;
//! - every value whose `put` returned `Ok` arrives, unless a reader was killed holding it (at
//!   most one value per reader kill);
//! - the readers get `Disconnected` once the writers are gone and the queue is drained;
//! - a timed call never says `Full` (`Empty`) when there was room (a value) for the whole wait.
//!
//! Prints one line, `chaos scenario=… result=ok|broken|hang kills=… lost=… …`.
//!
//! `--start-method fork|spawn|forkserver` (default fork) says how every process of the run
//! starts. Under spawn and forkserver each one is sent its queue handle and the run's shared
//! counters as descriptors (`SCM_RIGHTS`) inside its arguments, and maps the same memfds.
//!
//! Run with: `cargo run --release -p demo-queue --example chaos_queue -- --scenario
//! writers-bounded1 --seed 1`; `cargo xtask chaos` runs every scenario over many seeds.

mod support;

use std::collections::HashMap;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use demo_queue::{GetError, Process, PutError, Queue, RING_BYTES, Reader, Snapshot, Writer};
use demo_queue::{fds, get_context, run_if_spawned};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use support::{Board, Child, Kills, Options, Rng, SharedArray, StartMethod, Tally};

const SCENARIOS: [&str; 9] = [
    "writers-bounded1",
    "writers-bounded2",
    "writers-unbounded",
    "readers-bounded1",
    "readers-bounded2",
    "readers-unbounded",
    "both-bounded1",
    "both-bounded2",
    "both-unbounded",
];

const WRITERS: usize = 3;
const READERS: usize = 2;
/// How long the processes are killed and replaced before the run stops replacing them.
const RUN: Duration = Duration::from_millis(200);
/// How long the survivors go on after that, while some are killed for good.
const LAST: Duration = Duration::from_millis(100);
/// Each supervisor kills its worker at a random moment within this after starting it.
const GAP: Duration = Duration::from_millis(30);
/// The longest wait of a timed call.
const TIMED: Duration = Duration::from_millis(5);
/// Writer generations and values per generation that the shared tallies have room for.
const MAX_GEN: usize = 2048;
const MAX_SEQ: u32 = 4096;

/// Pid slots: the supervisors, then the workers they keep alive.
const WRITER_SUPERVISOR: usize = 0;
const WRITER: usize = WRITER_SUPERVISOR + WRITERS;
const READER_SUPERVISOR: usize = WRITER + WRITERS;
const READER: usize = READER_SUPERVISOR + READERS;
const SLOTS: usize = READER + READERS;

/// The program's own counters on the board.
const READER_KILLS: usize = 0;
const CORRUPTED: usize = 1;
const OUT_OF_ORDER: usize = 2;

/// A value: writer generation, sequence number, some text, and a checksum of the three.
type Value = (u32, u32, String, u64);

/// What every process of the run shares.
#[derive(Clone)]
struct Ctx {
    board: Board,
    /// Per writer generation: how many of its puts returned `Ok`.
    acked: SharedArray<AtomicU32>,
    /// Per value: how many times a reader got it.
    seen: SharedArray<AtomicU8>,
    rng: Rng,
    method: StartMethod,
}

/// A descriptor inside a child's arguments (see `fds`).
#[derive(Serialize)]
struct FdOut<'a>(#[serde(with = "fds")] BorrowedFd<'a>);

#[derive(Deserialize)]
struct FdIn(#[serde(with = "fds")] OwnedFd);

/// A spawned child is sent the memfds of the run's shared counters.
impl Serialize for Ctx {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let [words, pids] = self.board.memfds();
        let fds = [words, pids, self.acked.memfd(), self.seen.memfd()].map(FdOut);
        (fds, &self.rng, self.method).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Ctx {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ([words, pids, acked, seen], rng, method) =
            <([FdIn; 4], Rng, StartMethod)>::deserialize(d)?;
        Ok(Ctx {
            board: Board::adopt([words.0, pids.0]).map_err(D::Error::custom)?,
            acked: SharedArray::adopt(acked.0).map_err(D::Error::custom)?,
            seen: SharedArray::adopt(seen.0).map_err(D::Error::custom)?,
            rng,
            method,
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
    let about = "One run of a queue under random SIGKILLs: writers, readers or both killed, \
                 on bounded(1), bounded(2) or unbounded.";
    let opts = Options::parse_methods("chaos_queue", about, &SCENARIOS, &StartMethod::ALL);
    match run(&opts) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("chaos_queue: {e}");
            std::process::exit(1);
        }
    }
}

/// Starts a process with the run's start method.
fn start<A>(method: StartMethod, target: fn(A), args: A) -> io::Result<Process>
where
    A: Serialize + DeserializeOwned + 'static,
{
    use demo_queue::StartMethod as M;
    let method = match method {
        StartMethod::Fork => M::Fork,
        StartMethod::Spawn => M::Spawn,
        StartMethod::Forkserver => M::Forkserver,
    };
    let mut p = get_context(method).process(target, args);
    p.start()?;
    Ok(p)
}

fn run(opts: &Options) -> io::Result<i32> {
    let started = Instant::now();
    let (kill_writers, kill_readers, maxsize) = match opts.scenario.split_once('-') {
        Some((who, size)) => (
            who != "readers",
            who != "writers",
            size.strip_prefix("bounded").map(|n| n.parse().unwrap()),
        ),
        None => unreachable!("the scenarios are checked when parsed"),
    };
    let ctx = Ctx {
        board: Board::new(3, SLOTS)?,
        acked: SharedArray::new(MAX_GEN)?,
        seen: SharedArray::new(MAX_GEN * MAX_SEQ as usize)?,
        rng: Rng::new(opts.seed),
        method: opts.start_method,
    };
    let q: Queue<Value> = match maxsize {
        Some(n) => Queue::bounded(n)?,
        None => Queue::new()?,
    };
    let (w, r) = (q.writer(), q.reader());
    drop(q);

    let header = r.clone();
    let state = move || format!("queue header: {:?}", header.snapshot());
    let roles = (0..SLOTS).map(role).collect();
    let watchdog = support::watch(opts, &ctx.board, roles, state, started);

    // The writers' supervisors first, while this process still holds a write end; then the
    // readers', once it has let go of it: a reader must hold no write end, or it would never
    // see the last writer go.
    let mut supervisors = Vec::new();
    for slot in 0..WRITERS {
        let args = (ctx.clone(), w.clone(), slot, kill_writers);
        supervisors.push(start(ctx.method, writer_supervisor, args)?);
    }
    drop(w);
    for slot in 0..READERS {
        let args = (ctx.clone(), r.clone(), slot, kill_readers);
        supervisors.push(start(ctx.method, reader_supervisor, args)?);
    }
    let slots = (WRITER_SUPERVISOR..WRITER).chain(READER_SUPERVISOR..READER);
    for (p, slot) in supervisors.iter().zip(slots) {
        ctx.board.set_pid(slot, Child::pid(p));
    }

    thread::sleep(RUN);
    ctx.board.stop();
    thread::sleep(LAST);
    ctx.board.finish();
    let mut failed = 0;
    for p in &mut supervisors {
        let code = p.join()?;
        if code != 0 {
            eprintln!("chaos_queue: a supervisor ended with {code}");
            failed += 1;
        }
    }
    // Every writer is gone and the readers have stopped at `Disconnected`: nothing is left,
    // and this `get` says so at once.
    let mut left = 0;
    loop {
        match r.get() {
            Ok(_) => left += 1,
            Err(GetError::Disconnected) => break,
            Err(e) => {
                eprintln!("chaos_queue: the drained queue says {e}, not Disconnected");
                failed += 1;
                break;
            }
        }
    }
    if left > 0 {
        eprintln!("chaos_queue: {left} values left after the readers said Disconnected");
    }
    drop(watchdog);
    let mut tally = tally(&ctx, left);
    tally.corrupted += failed;
    Ok(support::report(opts, false, &tally, started))
}

fn role(slot: usize) -> String {
    match slot {
        s if s < WRITER => format!("writer supervisor {s}"),
        s if s < READER_SUPERVISOR => format!("writer {}", s - WRITER),
        s if s < READER => format!("reader supervisor {}", s - READER_SUPERVISOR),
        s => format!("reader {}", s - READER),
    }
}

/// The kills of a supervisor of slot `slot`: slot 0 keeps its last worker, the others lose
/// it, so that a run ends with survivors that must do without the dead.
fn kills(kill: bool, slot: usize) -> Kills {
    Kills {
        gap: kill.then_some(GAP),
        last: slot != 0,
    }
}

fn writer_supervisor((ctx, w, slot, kill): (Ctx, Writer<Value>, usize, bool)) {
    let mut rng = ctx.rng.split(1_000_000 + slot as u64);
    let start_writer = |g| start(ctx.method, writer, (ctx.clone(), w.clone(), g));
    let code = support::supervise(
        &ctx.board,
        WRITER + slot,
        kills(kill, slot),
        &mut rng,
        start_writer,
        || {},
    );
    support::exit_now(code);
}

fn reader_supervisor((ctx, r, slot, kill): (Ctx, Reader<Value>, usize, bool)) {
    let mut rng = ctx.rng.split(2_000_000 + slot as u64);
    let start_reader = |g| start(ctx.method, reader, (ctx.clone(), r.clone(), g));
    let count_kill = || {
        ctx.board.word(READER_KILLS).fetch_add(1, SeqCst);
    };
    let code = support::supervise(
        &ctx.board,
        READER + slot,
        kills(kill, slot),
        &mut rng,
        start_reader,
        count_kill,
    );
    support::exit_now(code);
}

/// Puts values `(g, 0)`, `(g, 1)`, … until the run finishes, recording each put that returned
/// `Ok`. A quarter of the puts are timed; a `Full` is checked against what the queue held.
fn writer((ctx, w, g): (Ctx, Writer<Value>, u64)) {
    if g as usize >= MAX_GEN {
        // No room left to record this generation's values: sit the run out.
        while !ctx.board.finished() {
            thread::sleep(Duration::from_millis(1));
        }
        return;
    }
    let mut rng = ctx.rng.split(g);
    for s in 0..MAX_SEQ {
        if ctx.board.finished() {
            return;
        }
        let value = make(g as u32, s);
        loop {
            let put = if rng.one_in(4) {
                // With the writers' turn held, `tail` and `count` stand still while they are
                // read, and `head` only grows: the room it shows, the `put` finds at least.
                let before = w.snapshot_locked();
                let put = w.put_timeout(value.clone(), rng.upto(TIMED));
                if let Err(PutError::Full) = put {
                    let len = postcard::to_stdvec(&value).unwrap().len() as u64;
                    if w.snapshot().tail == before.tail && had_room(&before, len) {
                        eprintln!("[pid {}] Full, with room all along", std::process::id());
                        ctx.board.false_timeout();
                    }
                }
                put
            } else {
                w.put(value.clone())
            };
            match put {
                Ok(()) => break,
                Err(PutError::Full) if ctx.board.finished() => return,
                Err(PutError::Full) => {}
                Err(e) => {
                    eprintln!("[pid {}] put: {e}", std::process::id());
                    support::exit_now(3);
                }
            }
        }
        ctx.acked[g as usize].store(s + 1, SeqCst);
        ctx.board.progress();
    }
}

/// Whether a queue in state `before` had room for a value of `len` bytes: if no put came
/// after (`tail` did not move), the room stayed.
fn had_room(before: &Snapshot, len: u64) -> bool {
    let free = RING_BYTES as u64 - (before.tail - before.head);
    before.count < before.maxsize && free >= 4 + len
}

/// Gets values until `Disconnected`, checking each. A quarter of the gets are timed; an
/// `Empty` is checked against what the queue held.
fn reader((ctx, r, g): (Ctx, Reader<Value>, u64)) {
    let mut rng = ctx.rng.split(g);
    let mut last: HashMap<u32, u32> = HashMap::new();
    loop {
        let got = if rng.one_in(4) {
            let before = r.snapshot();
            let got = r.get_timeout(rng.upto(TIMED));
            // A value was there when the wait began, and none was taken since (`head` did
            // not move): it was there for the whole wait.
            if matches!(got, Err(GetError::Empty))
                && before.tail > before.head
                && r.snapshot().head == before.head
            {
                eprintln!("[pid {}] Empty, with a value all along", std::process::id());
                ctx.board.false_timeout();
            }
            got
        } else {
            r.get()
        };
        match got {
            Ok(value) => received(&ctx, value, &mut last),
            Err(GetError::Empty) => {}
            Err(GetError::Disconnected) => return,
            Err(GetError::Io(e)) => {
                eprintln!("[pid {}] get: {e}", std::process::id());
                ctx.board.word(CORRUPTED).fetch_add(1, SeqCst);
            }
        }
    }
}

fn received(ctx: &Ctx, (g, s, text, sum): Value, last: &mut HashMap<u32, u32>) {
    if g as usize >= MAX_GEN || s >= MAX_SEQ || make(g, s) != (g, s, text.clone(), sum) {
        eprintln!(
            "[pid {}] corrupted: {:?}",
            std::process::id(),
            (g, s, text, sum)
        );
        ctx.board.word(CORRUPTED).fetch_add(1, SeqCst);
        return;
    }
    match last.insert(g, s) {
        Some(before) if before >= s => {
            eprintln!(
                "[pid {}] ({g}, {s}) after ({g}, {before})",
                std::process::id()
            );
            ctx.board.word(OUT_OF_ORDER).fetch_add(1, SeqCst);
        }
        _ => {}
    }
    ctx.seen[g as usize * MAX_SEQ as usize + s as usize].fetch_add(1, SeqCst);
    ctx.board.progress();
}

/// The value `(g, s)`: text of a length and letters that depend on both (a few are long,
/// so that values wrap around the end of the ring), and a checksum over all three.
fn make(g: u32, s: u32) -> Value {
    let mut rng = Rng::new(u64::from(g) << 32 | u64::from(s));
    let len = if rng.one_in(16) {
        rng.below(8000)
    } else {
        rng.below(64)
    };
    let text: String = (0..len)
        .map(|_| char::from(b'a' + rng.below(26) as u8))
        .collect();
    let sum = text
        .bytes()
        .fold(u64::from(g) << 32 | u64::from(s), |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    (g, s, text, sum)
}

/// The run's figures: every value whose put returned `Ok` must have arrived, once, except at
/// most one per reader kill (a reader killed between taking a value and recording it).
fn tally(ctx: &Ctx, left: u64) -> Tally {
    let mut tally = ctx.board.tally();
    let mut missing = 0u64;
    for g in 0..(ctx.board.generations() as usize).min(MAX_GEN) {
        let acked = ctx.acked[g].load(SeqCst);
        for s in 0..MAX_SEQ {
            let n = u64::from(ctx.seen[g * MAX_SEQ as usize + s as usize].load(SeqCst));
            tally.duplicated += n.saturating_sub(1);
            if s < acked && n == 0 {
                missing += 1;
            }
            // `s == acked` may have arrived: its writer was killed after the put returned
            // and before recording it. Beyond that nothing was put.
            if s > acked && n > 0 {
                tally.corrupted += n;
            }
        }
    }
    let reader_kills = ctx.board.word(READER_KILLS).load(SeqCst);
    tally.lost = missing.saturating_sub(reader_kills) + left;
    tally.corrupted += ctx.board.word(CORRUPTED).load(SeqCst);
    tally.out_of_order = ctx.board.word(OUT_OF_ORDER).load(SeqCst);
    tally
}
