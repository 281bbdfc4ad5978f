//! What the fault-injection programs (`examples/chaos_*.rs`) share: their command line, a
//! seeded random generator, counters in shared memory, the supervisor that kills a worker at
//! random moments, the watchdog, and the one result line that `cargo xtask chaos` reads.
//!
//! A program runs one bounded run of one scenario in a controller process: it starts the
//! processes, kills some of them with SIGKILL at random moments, stops, and checks what the
//! survivors saw. Nothing here is mocked: real processes, real signals, the crate's own code.
//!
//! The shared counters live in memfds, so that a program whose processes start by spawn or
//! forkserver can send them to its children (`SharedArray::memfd`, `SharedArray::adopt`).
//!
//! This file is the same in demo-lock, demo-queue and demo-pool, so that each crate can be
//! copied out alone; a test in the xtask checks that the copies stay identical.

#![allow(dead_code)] // Each program uses its own part of this file.

use std::ffi::OsString;
use std::io::{self, Write};
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// A run not done within this is a hang (`--watchdog SECS` changes it).
pub const WATCHDOG: Duration = Duration::from_secs(12);

/// How the scenario's processes start: each program starts its children through one function
/// that matches on this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StartMethod {
    Fork,
    Spawn,
    Forkserver,
}

impl StartMethod {
    pub const ALL: [StartMethod; 3] = [Self::Fork, Self::Spawn, Self::Forkserver];

    pub fn name(self) -> &'static str {
        match self {
            Self::Fork => "fork",
            Self::Spawn => "spawn",
            Self::Forkserver => "forkserver",
        }
    }
}

/// The command line: `--scenario NAME --seed N [--watchdog SECS] [--start-method METHOD]`.
#[derive(Clone)]
pub struct Options {
    pub program: &'static str,
    pub scenario: String,
    pub seed: u64,
    pub watchdog: Duration,
    pub start_method: StartMethod,
}

impl Options {
    /// Reads the command line of a program whose processes start by fork only.
    pub fn parse(program: &'static str, about: &str, scenarios: &[&str]) -> Options {
        Options::parse_methods(program, about, scenarios, &[StartMethod::Fork])
    }

    /// Reads the command line. `--help` prints the usage; bad input, a start method not in
    /// `methods` included, is one line on stderr and exit code 2.
    pub fn parse_methods(
        program: &'static str,
        about: &str,
        scenarios: &[&str],
        methods: &[StartMethod],
    ) -> Options {
        let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
        let usage = format!(
            "Usage: {program} --scenario NAME --seed N [--watchdog SECS] [--start-method {}]\n\n\
             {about}\n\nScenarios: {}\n",
            names.join("|"),
            scenarios.join(", ")
        );
        let bad = |what: String| -> ! {
            eprintln!("{program}: {what} (try --help)");
            std::process::exit(2)
        };
        let mut args = std::env::args_os().skip(1);
        let value = |flag: &str, args: &mut dyn Iterator<Item = OsString>| -> String {
            match args.next().map(OsString::into_string) {
                Some(Ok(v)) => v,
                Some(Err(_)) => bad(format!("{flag} takes text, not these bytes")),
                None => bad(format!("{flag} needs a value")),
            }
        };
        let (mut scenario, mut seed, mut watchdog) = (None, None, WATCHDOG);
        let mut start_method = StartMethod::Fork;
        while let Some(arg) = args.next() {
            match arg.to_str() {
                Some("--help" | "-h") => {
                    let _ = write!(io::stdout(), "{usage}");
                    std::process::exit(0);
                }
                Some("--scenario") => {
                    let name = value("--scenario", &mut args);
                    if !scenarios.contains(&name.as_str()) {
                        bad(format!("no scenario named {name:?}"));
                    }
                    scenario = Some(name);
                }
                Some("--seed") => match value("--seed", &mut args).parse() {
                    Ok(n) => seed = Some(n),
                    Err(_) => bad("--seed takes a whole number".into()),
                },
                Some("--watchdog") => match value("--watchdog", &mut args).parse::<u64>() {
                    Ok(secs @ 1..=3600) => watchdog = Duration::from_secs(secs),
                    _ => bad("--watchdog takes whole seconds, 1 to 3600".into()),
                },
                Some("--start-method") => {
                    let name = value("--start-method", &mut args);
                    match methods.iter().find(|m| m.name() == name) {
                        Some(&m) => start_method = m,
                        None => bad(format!("start method {name:?} is not available here")),
                    }
                }
                _ => bad(format!("unknown argument {:?}", arg.to_string_lossy())),
            }
        }
        Options {
            program,
            scenario: scenario.unwrap_or_else(|| bad("--scenario is missing".into())),
            seed: seed.unwrap_or_else(|| bad("--seed is missing".into())),
            watchdog,
            start_method,
        }
    }
}

/// SplitMix64: small, fast, and the same sequence for the same seed everywhere.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// A generator of its own for one process of the run (a forked child starts with a copy
    /// of its parent's, which would repeat its parent's choices).
    pub fn split(&self, stream: u64) -> Rng {
        Rng::new(self.0 ^ stream.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A duration between zero and `max`, to the microsecond.
    pub fn upto(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros() as u64 + 1))
    }
}

/// The monotonic clock in nanoseconds: the same clock in every process of the machine, so
/// that times taken in different processes compare.
pub fn now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec into the one it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Busy for `d`, without a system call: the time a holder spends in its critical section.
pub fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// A type whose all-zero bytes, and any other bytes, are a valid value, and that works in
/// memory shared between processes.
///
/// # Safety
///
/// Any bytes, zeroed ones first, must be a valid value of the type (a process that adopts a
/// memfd finds what the others wrote), and it must hold no pointer.
pub unsafe trait ZeroValid: Sync + Send + 'static {}
// SAFETY: atomics of plain numbers: zero is a number, and atomic instructions work on memory
// shared between processes as between threads.
unsafe impl ZeroValid for AtomicU8 {}
// SAFETY: as above.
unsafe impl ZeroValid for AtomicU32 {}
// SAFETY: as above.
unsafe impl ZeroValid for AtomicI32 {}
// SAFETY: as above.
unsafe impl ZeroValid for AtomicU64 {}

/// `len` zeroed atomics in a shared mapping of a memfd: one copy, seen by this process, every
/// process forked after it was made, and every process that is sent the memfd and maps it.
/// A clone is another handle to the same memory.
pub struct SharedArray<A: ZeroValid> {
    region: Arc<Region>,
    len: usize,
    _values: PhantomData<A>,
}

struct Region {
    ptr: NonNull<u8>,
    bytes: usize,
    memfd: OwnedFd,
}

// SAFETY: the region is only reached as atomics, which any thread may use.
unsafe impl Send for Region {}
// SAFETY: as for Send.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing borrows from it any more (every borrow
        // goes through a handle, and this is the last one).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}

/// The seals of a region's memfd: its size is fixed, so a mapping of it never faults.
const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

impl<A: ZeroValid> SharedArray<A> {
    pub fn new(len: usize) -> io::Result<SharedArray<A>> {
        let bytes = (len * size_of::<A>()).max(1);
        let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        // SAFETY: memfd_create reads the name and returns a new descriptor or -1.
        let fd = unsafe { libc::memfd_create(c"chaos".as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened, and nothing else owns it.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate and fcntl(F_ADD_SEALS) change only the file behind `memfd`.
        let sized = unsafe {
            libc::ftruncate(fd, bytes as libc::off_t) == 0
                && libc::fcntl(fd, libc::F_ADD_SEALS, SEALS) == 0
        };
        if !sized {
            return Err(io::Error::last_os_error());
        }
        SharedArray::map(memfd, bytes, len)
    }

    /// The memfd behind the array, to send to a spawned child.
    pub fn memfd(&self) -> BorrowedFd<'_> {
        self.region.memfd.as_fd()
    }

    /// The array behind a memfd that `new` made in another process, and sent here.
    pub fn adopt(memfd: OwnedFd) -> io::Result<SharedArray<A>> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
        // SAFETY: fcntl(F_GET_SEALS) only reads the seals of the file behind `memfd`.
        let seals = unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & SEALS != SEALS {
            return Err(bad("not a memfd sealed at its size"));
        }
        let bytes = std::fs::File::from(memfd.try_clone()?).metadata()?.len() as usize;
        if bytes == 0 || (bytes > 1 && bytes % size_of::<A>() != 0) {
            return Err(bad("not an array of this type"));
        }
        SharedArray::map(memfd, bytes, bytes / size_of::<A>())
    }

    fn map(memfd: OwnedFd, bytes: usize, len: usize) -> io::Result<SharedArray<A>> {
        // SAFETY: a new shared mapping of the memfd at an address the kernel picks touches
        // no memory that Rust knows about; the memfd is `bytes` long, sealed so.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).expect("mmap succeeded, so not null");
        Ok(SharedArray {
            region: Arc::new(Region { ptr, bytes, memfd }),
            len,
            _values: PhantomData,
        })
    }
}

impl<A: ZeroValid> Deref for SharedArray<A> {
    type Target = [A];
    fn deref(&self) -> &[A] {
        // SAFETY: the mapping is page-aligned, `len` values long, of atomics that any bytes
        // are a valid value of (zeroed when new), and stays mapped while this handle lives.
        unsafe { std::slice::from_raw_parts(self.region.ptr.as_ptr().cast(), self.len) }
    }
}

impl<A: ZeroValid> Clone for SharedArray<A> {
    fn clone(&self) -> Self {
        SharedArray {
            region: self.region.clone(),
            len: self.len,
            _values: PhantomData,
        }
    }
}

/// The counters every scenario keeps in shared memory, and the pids of its processes, by
/// slot, for the watchdog.
#[derive(Clone)]
pub struct Board {
    words: SharedArray<AtomicU64>,
    pids: SharedArray<AtomicI32>,
}

const STOP: usize = 0;
const FINISH: usize = 7;
const KILLS: usize = 1;
/// When the oldest kill that no operation has followed yet happened (0: none).
const PENDING: usize = 2;
const SLOWEST: usize = 3;
const OPS: usize = 4;
const GENERATION: usize = 5;
const FALSE_TIMEOUTS: usize = 6;
/// Where each program's own counters start.
pub const FIRST_FREE: usize = 8;

impl Board {
    /// `words` counters of the program's own after the common ones, and `pids` slots.
    pub fn new(words: usize, pids: usize) -> io::Result<Board> {
        Ok(Board {
            words: SharedArray::new(FIRST_FREE + words)?,
            pids: SharedArray::new(pids)?,
        })
    }

    /// The memfds of the board, to send to a spawned child.
    pub fn memfds(&self) -> [BorrowedFd<'_>; 2] {
        [self.words.memfd(), self.pids.memfd()]
    }

    /// The board behind the memfds of another process's board, sent here.
    pub fn adopt([words, pids]: [OwnedFd; 2]) -> io::Result<Board> {
        Ok(Board {
            words: SharedArray::adopt(words)?,
            pids: SharedArray::adopt(pids)?,
        })
    }

    /// The program's own counter `i` (0 is the first after the common ones).
    pub fn word(&self, i: usize) -> &AtomicU64 {
        &self.words[FIRST_FREE + i]
    }

    /// The run stops replacing the workers it kills.
    pub fn stop(&self) {
        self.words[STOP].store(1, SeqCst);
    }

    pub fn stopped(&self) -> bool {
        self.words[STOP].load(SeqCst) != 0
    }

    /// The workers finish what they do and end.
    pub fn finish(&self) {
        self.words[FINISH].store(1, SeqCst);
    }

    pub fn finished(&self) -> bool {
        self.words[FINISH].load(SeqCst) != 0
    }

    /// Counts a kill, and starts the clock of its recovery unless an earlier one runs.
    pub fn killed(&self) {
        self.words[KILLS].fetch_add(1, SeqCst);
        let _ = self.words[PENDING].compare_exchange(0, now_ns(), SeqCst, SeqCst);
    }

    /// Counts an operation that completed: the first one after a kill ends its recovery.
    pub fn progress(&self) {
        self.words[OPS].fetch_add(1, SeqCst);
        let pending = self.words[PENDING].load(SeqCst);
        if pending != 0
            && self.words[PENDING]
                .compare_exchange(pending, 0, SeqCst, SeqCst)
                .is_ok()
        {
            let took = now_ns().saturating_sub(pending);
            self.words[SLOWEST].fetch_max(took, SeqCst);
        }
    }

    /// A timed call said the lock was busy, or the queue full or empty, although it was not
    /// for the whole wait.
    pub fn false_timeout(&self) {
        self.words[FALSE_TIMEOUTS].fetch_add(1, SeqCst);
    }

    /// A number no other process of the run gets: a worker's generation.
    pub fn next_generation(&self) -> u64 {
        self.words[GENERATION].fetch_add(1, SeqCst)
    }

    pub fn generations(&self) -> u64 {
        self.words[GENERATION].load(SeqCst)
    }

    pub fn set_pid(&self, slot: usize, pid: i32) {
        self.pids[slot].store(pid, SeqCst);
    }

    pub fn pid(&self, slot: usize) -> i32 {
        self.pids[slot].load(SeqCst)
    }

    /// The common counters, for the result line.
    pub fn tally(&self) -> Tally {
        Tally {
            kills: self.words[KILLS].load(SeqCst),
            false_timeouts: self.words[FALSE_TIMEOUTS].load(SeqCst),
            recovery: Duration::from_nanos(self.words[SLOWEST].load(SeqCst)),
            ops: self.words[OPS].load(SeqCst),
            ..Tally::default()
        }
    }
}

/// A child process as a supervisor sees it: each program implements it for its `Process`.
pub trait Child {
    fn pid(&self) -> i32;
    /// Whether it still runs; reaps it if it has ended.
    fn is_alive(&mut self) -> bool;
    fn kill(&mut self) -> io::Result<()>;
    fn join(&mut self) -> io::Result<i32>;
}

/// How a supervisor treats its worker.
#[derive(Clone, Copy)]
pub struct Kills {
    /// Kill the worker at a random moment within this after starting it, and start the next,
    /// until the run stops replacing workers; `None`: never kill.
    pub gap: Option<Duration>,
    /// Then kill the last one too, at a random moment within the same gap, and start none:
    /// the survivors must finish without it.
    pub last: bool,
}

/// Keeps one worker alive in pid slot `slot` as `kills` says: starts it (`start` gets a
/// fresh generation number), kills it at random moments and starts the next, until the run
/// stops replacing workers (`Board::stop`). A worker that ends by itself with 0 before that
/// (its share done) is followed by the next. Then it waits for the last worker, which ends
/// by itself once the run finishes (`Board::finish`), or kills it for good. Returns the last
/// worker's exit code (0 when killed for good); a worker that fails ends the supervision
/// with its code. `on_kill` runs after each kill.
pub fn supervise<C: Child>(
    board: &Board,
    slot: usize,
    kills: Kills,
    rng: &mut Rng,
    mut start: impl FnMut(u64) -> io::Result<C>,
    mut on_kill: impl FnMut(),
) -> i32 {
    let mut kill = |child: &mut C| {
        let _ = child.kill();
        board.killed();
        on_kill();
        let _ = child.join();
        board.set_pid(slot, 0);
    };
    loop {
        let mut child = match start(board.next_generation()) {
            Ok(child) => child,
            Err(e) => {
                eprintln!("[pid {}] cannot start a worker: {e}", std::process::id());
                return 4;
            }
        };
        board.set_pid(slot, child.pid());
        if let Some(gap) = kills.gap.filter(|_| !board.stopped()) {
            thread::sleep(rng.upto(gap));
            if !board.stopped() && child.is_alive() {
                kill(&mut child);
                continue;
            }
        }
        if let Some(gap) = kills.gap.filter(|_| kills.last && board.stopped()) {
            thread::sleep(rng.upto(gap));
            if !board.finished() && child.is_alive() {
                kill(&mut child);
                return 0;
            }
        }
        let code = child.join().unwrap_or(4);
        board.set_pid(slot, 0);
        if code != 0 || board.stopped() {
            return code;
        }
    }
}

/// Ends a forked child at once, as its `Process` does when the target returns.
/// `std::process::exit` would run the standard library's clean-up first, which takes locks
/// that another thread of the parent may have held at the fork, and wait for ever.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process immediately; it is always sound to call.
    unsafe { libc::_exit(code) }
}

/// One line about a process for a hang report: its state, and the kernel function it sleeps
/// in (`/proc/PID/wchan`).
pub fn describe(pid: i32, role: &str) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state is the field after the command name, which is in parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("gone");
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    let wchan = if wchan.is_empty() || wchan == "0" {
        "-"
    } else {
        &wchan
    };
    format!("  pid {pid:<7} {role:<22} state {state}  wchan {wchan}")
}

/// Waits until `pid` sleeps in a futex (a lock or a queue's sleep), or `limit` passes.
/// Looks every millisecond: the kernel says when a process sleeps, nothing else can.
pub fn wait_until_asleep_in_futex(pid: i32, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let line = describe(pid, "");
        if line.contains("state S") && line.contains("futex") {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Ends the run as a hang if it is not done within its limit: `report` prints what is stuck
/// and the result line, then the process exits, and its children die with it (each has a
/// parent-death signal, and so has each of theirs).
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
}

impl Watchdog {
    /// Returns once the watchdog's thread runs: while a thread starts (and ends), it holds
    /// a lock of the standard library's, and a process forked then would inherit it locked.
    pub fn start(limit: Duration, report: impl FnOnce() + Send + 'static) -> Watchdog {
        let (done, wait) = mpsc::channel::<()>();
        let (running, started) = mpsc::channel::<()>();
        thread::spawn(move || {
            let _ = running.send(());
            if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
                report();
                let _ = io::stdout().flush();
                std::process::exit(1);
            }
        });
        let _ = started.recv();
        Watchdog { done: Some(done) }
    }
}

/// The watchdog of a run, which reports a hang thus: `state()` (the queue's header, the
/// lock's word), then each process of the run still there, by the role of its pid slot, then
/// the result line.
pub fn watch(
    opts: &Options,
    board: &Board,
    roles: Vec<String>,
    state: impl Fn() -> String + Send + 'static,
    started: Instant,
) -> Watchdog {
    let (opts, board) = (opts.clone(), board.clone());
    Watchdog::start(opts.watchdog, move || {
        let limit = opts.watchdog.as_secs();
        eprintln!("{}: not done after {limit} s: a hang", opts.program);
        eprintln!("{}", state());
        for (slot, role) in roles.iter().enumerate() {
            let pid = board.pid(slot);
            if pid != 0 {
                eprintln!("{}", describe(pid, role));
            }
        }
        report(&opts, true, &board.tally(), started);
    })
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

/// What one run found: the columns of `cargo xtask chaos`'s table.
#[derive(Default, Debug)]
pub struct Tally {
    pub kills: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    pub out_of_order: u64,
    pub false_timeouts: u64,
    /// The longest time from a kill to the next completed operation.
    pub recovery: Duration,
    pub ops: u64,
}

impl Tally {
    pub fn broken(&self) -> bool {
        self.lost + self.duplicated + self.corrupted + self.out_of_order + self.false_timeouts > 0
    }
}

/// Prints the run's one result line, `chaos scenario=… seed=… result=ok|broken|hang …`,
/// and returns the exit code: 0 when the run held up.
pub fn report(opts: &Options, hang: bool, tally: &Tally, started: Instant) -> i32 {
    let result = if hang {
        "hang"
    } else if tally.broken() {
        "broken"
    } else {
        "ok"
    };
    // A closed stdout loses the line, quietly: the exit code still tells.
    let _ = writeln!(
        io::stdout(),
        "chaos scenario={} seed={} result={result} kills={} lost={} duplicated={} corrupted={} \
         out_of_order={} false_timeouts={} recovery_us={} ops={} ms={}",
        opts.scenario,
        opts.seed,
        tally.kills,
        tally.lost,
        tally.duplicated,
        tally.corrupted,
        tally.out_of_order,
        tally.false_timeouts,
        tally.recovery.as_micros(),
        tally.ops,
        started.elapsed().as_millis()
    );
    let _ = io::stdout().flush();
    i32::from(result != "ok")
}

/// Pins this process (and the processes it forks from now on) to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and sched_setaffinity only read
    // and write the set they are given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as in `pin_to_cpu`; sched_getaffinity fills the set it is given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Puts process `pid` in `SCHED_IDLE`: it runs only when nothing else on its CPU wants to.
pub fn set_idle(pid: i32) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads the parameter it is given.
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_IDLE, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
