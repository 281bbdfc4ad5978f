//! Every guarantee of the pool, under each start method (fork, spawn, forkserver): results in
//! order, a panicking task, a worker killed mid-task (its task fails, a new worker takes its
//! place, the others complete), `terminate()`, a forkserver that dies, no worker left when the
//! parent is killed (SIGKILL, SIGTERM, Ctrl-C to its group), and the hazard that spawn and
//! forkserver exist for: a lock another thread holds while a worker starts. And the calls
//! beyond the note's: `imap`, `starmap`, `map_async`, an initializer (that works, that
//! panics), `maxtasksperchild`, and a task past its deadline.
//!
//! This test target has `harness = false`, and its own `main`: a spawned worker is this test
//! binary run again, and it must reach `run_if_spawned` first thing in `main`, as a program's
//! workers do. libtest's own `main` never calls it. So this one does, then runs each check
//! under each method, catching panics, and ends with libtest's summary line. Scenarios that
//! need a parent to kill run this binary again as that parent (`--as-parent`).
//!
//! A task that must be mid-task when the test acts tells the test its pid on a datagram socket
//! in Linux's abstract namespace (a name that travels as the task's argument, where an
//! inherited pipe would not reach a spawned worker), then waits to be killed.

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use demo_pool::{Error, Pool, StartMethod, run_if_spawned};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use support::{Running, assert_all_end, descendants, ended, parent_of, run};

mod support;

/// Long enough for any start on a loaded machine; only reached if something is broken.
const BOUND: Duration = Duration::from_secs(60);

fn square(x: u64) -> u64 {
    x * x
}

fn pid_of_worker(_: ()) -> i32 {
    std::process::id() as i32
}

fn panics(_: ()) -> u64 {
    panic!("this panic is expected")
}

/// Tells the test its pid on the abstract socket `to`, then waits until it is killed.
fn report_and_wait(to: String) {
    let to = SocketAddr::from_abstract_name(to).unwrap();
    let pid = std::process::id().to_le_bytes();
    UnixDatagram::unbound()
        .unwrap()
        .send_to_addr(&pid, &to)
        .unwrap();
    loop {
        std::thread::park(); // Until SIGKILL.
    }
}

/// Where tasks report: a socket bound to a name of this process's own.
struct Reports {
    socket: UnixDatagram,
    name: String,
}

impl Reports {
    fn new() -> Reports {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("demo-pool-test-{}-{n}", std::process::id());
        let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap());
        let socket = socket.unwrap();
        socket.set_read_timeout(Some(BOUND)).unwrap();
        Reports { socket, name }
    }

    /// The pid of the next task that has reported.
    fn next_pid(&self) -> i32 {
        let mut pid = [0; 4];
        assert_eq!(self.socket.recv(&mut pid).expect("no task reported"), 4);
        i32::from_le_bytes(pid)
    }
}

fn pool(n: usize, method: StartMethod) -> Pool {
    let pool = Pool::with_start_method(n, method).unwrap();
    assert_eq!(pool.start_method(), method);
    pool
}

/// An argument that holds a descriptor: one end of a socketpair, whose other end the test
/// keeps. It crosses to the worker by `SCM_RIGHTS`, under every start method.
#[derive(Serialize, Deserialize)]
struct Through {
    tag: u32,
    #[serde(with = "demo_pool::fds")]
    end: UnixStream,
}

/// Writes its tag and its worker's pid through the end it was given.
fn write_through(through: Through) -> i32 {
    let pid = std::process::id() as i32;
    let line = format!("{} {pid}\n", through.tag);
    (&through.end).write_all(line.as_bytes()).unwrap();
    pid
}

/// A socketpair: the end the test reads (bounded), and the end that goes to a task.
fn ends() -> (UnixStream, UnixStream) {
    let (here, there) = UnixStream::pair().unwrap();
    here.set_read_timeout(Some(BOUND)).unwrap();
    (here, there)
}

/// Everything that was written to `here`, up to the end: every copy of the other end is
/// closed by then, in the pool and in its workers.
fn read_all(mut here: UnixStream) -> String {
    let mut got = String::new();
    here.read_to_string(&mut got).unwrap();
    got
}

fn a_descriptor_in_the_arguments_works_in_the_worker(method: StartMethod) {
    let pool = Pool::with_start_method(2, method).unwrap();
    // One task at a time: the worker's line comes through, and once `get` returns no process
    // holds the task's end any more (the read ends).
    for tag in 0..3 {
        let (here, there) = ends();
        let pid = pool
            .apply_async(write_through, Through { tag, end: there })
            .unwrap()
            .get()
            .unwrap();
        assert!(pool.pids().contains(&pid), "{pid} is not a worker");
        assert_eq!(read_all(here), format!("{tag} {pid}\n"));
    }
    // Many at once, and through `map`: several descriptors in a frame, several frames in a
    // write; each reaches its own task.
    for by_map in [false, true] {
        let (heres, theres): (Vec<_>, Vec<_>) = (0..6).map(|_| ends()).unzip();
        let items = theres.into_iter().enumerate().map(|(tag, end)| Through {
            tag: tag as u32,
            end,
        });
        let pids: Vec<i32> = if by_map {
            pool.map(write_through, items).unwrap()
        } else {
            let pending: Vec<_> = items
                .map(|item| pool.apply_async(write_through, item).unwrap())
                .collect();
            pending.into_iter().map(|r| r.get().unwrap()).collect()
        };
        for (tag, (here, pid)) in heres.into_iter().zip(pids).enumerate() {
            assert_eq!(read_all(here), format!("{tag} {pid}\n"));
        }
    }
}

fn results_come_back_in_order_from_the_workers(method: StartMethod) {
    let before = Instant::now();
    let mut pool = pool(3, method);
    assert_eq!(
        pool.map(square, 0..1000).unwrap(),
        (0..1000).map(|x| x * x).collect::<Vec<u64>>()
    );
    let workers = pool.pids();
    assert_eq!(workers.len(), 3);
    assert!(!workers.contains(&(std::process::id() as i32)));
    let result = pool.apply_async(pid_of_worker, ()).unwrap();
    let pid = result.get_timeout(BOUND).unwrap();
    assert!(workers.contains(&pid), "{pid} is not one of {workers:?}");
    // The worker's clock readings, whatever image it is, land on this process's clock.
    let ran = result.ran().unwrap();
    assert_eq!(ran.pid, pid);
    assert!(before <= ran.start && ran.start <= ran.end && ran.end <= Instant::now());
    pool.close();
    pool.join().unwrap();
    assert!(workers.iter().all(|&p| ended(p as u32)));
}

fn a_panicking_task_fails_its_get_and_the_pool_goes_on(method: StartMethod) {
    let pool = pool(1, method);
    let crash = pool.apply_async(panics, ()).unwrap();
    assert_eq!(
        crash.get_timeout(BOUND),
        Err(Error::Panicked("this panic is expected".into()))
    );
    assert_eq!(pool.apply(square, 7), Ok(49));
}

fn a_killed_worker_fails_its_task_and_is_replaced(method: StartMethod) {
    let reports = Reports::new();
    let pool = pool(2, method);
    let workers = pool.pids();
    let victim = pool
        .apply_async(report_and_wait, reports.name.clone())
        .unwrap();
    let others: Vec<_> = (0..50)
        .map(|x| pool.apply_async(square, x).unwrap())
        .collect();
    let pid = reports.next_pid();
    assert!(workers.contains(&pid));
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let how = "killed by SIGKILL".to_string();
    assert_eq!(
        victim.get_timeout(BOUND),
        Err(Error::WorkerDied { pid, how })
    );
    // The replacement is in place before the task's error is told.
    let now = pool.pids();
    assert_eq!(now.len(), 2);
    assert!(!now.contains(&pid));
    for (x, result) in (0..50).zip(&others) {
        assert_eq!(result.get_timeout(BOUND), Ok(x * x));
    }
    let ran_on: Vec<i32> = (0..20)
        .map(|_| pool.apply(pid_of_worker, ()).unwrap())
        .collect();
    assert!(ran_on.iter().all(|p| now.contains(p)), "{ran_on:?} {now:?}");
}

fn terminate_kills_every_worker_and_settles_every_task(method: StartMethod) {
    let reports = Reports::new();
    let mut pool = pool(2, method);
    let workers = pool.pids();
    let running: Vec<_> = (0..2)
        .map(|_| {
            pool.apply_async(report_and_wait, reports.name.clone())
                .unwrap()
        })
        .collect();
    let queued = pool.apply_async(square, 3).unwrap();
    reports.next_pid();
    reports.next_pid();
    pool.terminate();
    // Ended once terminate returns: no wait needed.
    for pid in &workers {
        assert!(ended(*pid as u32), "worker {pid} outlived terminate()");
    }
    for result in &running {
        assert_eq!(result.get_timeout(BOUND), Err(Error::Terminated));
    }
    assert_eq!(queued.get_timeout(BOUND), Err(Error::Terminated));
    assert_eq!(pool.apply_async(square, 1).err(), Some(Error::NotRunning));
}

/// Forkserver only: the server killed while a pool runs takes its workers with it; their tasks
/// fail, the pool starts new workers from a new server, and goes on.
fn a_dead_forkserver_takes_its_workers_and_the_pool_goes_on(method: StartMethod) {
    if method != StartMethod::Forkserver {
        return;
    }
    let reports = Reports::new();
    let pool = pool(1, method);
    let victim = pool
        .apply_async(report_and_wait, reports.name.clone())
        .unwrap();
    let worker = reports.next_pid();
    let server = parent_of(worker as u32);
    assert!(descendants(std::process::id()).contains(&server));
    kill(Pid::from_raw(server as i32), Signal::SIGKILL).unwrap();
    assert!(matches!(
        victim.get_timeout(BOUND),
        Err(Error::WorkerDied { pid, .. }) if pid == worker
    ));
    let pid = pool.apply(pid_of_worker, ()).unwrap();
    assert_ne!(pid, worker);
    assert_ne!(parent_of(pid as u32), server);
}

static LOCK: Mutex<()> = Mutex::new(());

fn takes_the_lock(_: ()) -> bool {
    drop(LOCK.lock());
    true
}

/// The hazard the spawn and forkserver methods exist for: another thread holds a lock while
/// the pool starts a worker whose task takes that lock. A forked worker has a copy of the lock,
/// held by a thread it does not have: it never gets it, not even after the parent's thread
/// lets go. A spawned or forkserver worker starts from a fresh image of the program.
fn a_lock_held_by_another_thread_at_the_start_of_a_worker(method: StartMethod) {
    let (held, release) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            let _guard = LOCK.lock();
            held.wait();
            release.wait();
        });
        held.wait();
        let mut pool = pool(1, method);
        let result = pool.apply_async(takes_the_lock, ()).unwrap();
        if method == StartMethod::Fork {
            // Never done, however long we wait: the bound only says when we stop looking.
            let bound = Duration::from_millis(200);
            assert_eq!(result.get_timeout(bound), Err(Error::Timeout));
            release.wait();
            // The parent's lock is free now; the worker's copy stays taken for ever.
            assert!(LOCK.lock().is_ok());
            assert_eq!(result.get_timeout(bound), Err(Error::Timeout));
            pool.terminate();
            assert_eq!(result.get(), Err(Error::Terminated));
        } else {
            assert_eq!(result.get_timeout(BOUND), Ok(true));
            release.wait();
        }
    });
}

fn nothing_outlives_a_parent_killed_by(method: StartMethod, signal: Signal, group: bool) {
    let mut parent = Running::start(&mut as_parent("sleep", method));
    let pid = parent.pid();
    assert_eq!(parent.line().as_deref(), Some("ready\n"));
    let left = descendants(pid);
    // Two workers, and the forkserver if there is one.
    let expected = if method == StartMethod::Forkserver {
        3
    } else {
        2
    };
    assert_eq!(left.len(), expected, "{left:?}");
    if group {
        parent.signal_group(signal);
    } else {
        kill(Pid::from_raw(pid as i32), signal).unwrap();
    }
    parent.wait();
    // The kernel delivers the death signals as the parent exits; they need a moment to act.
    assert_all_end(&left);
}

fn nothing_outlives_a_parent_killed_by_sigkill(method: StartMethod) {
    nothing_outlives_a_parent_killed_by(method, Signal::SIGKILL, false);
}

fn nothing_outlives_a_parent_killed_by_sigterm(method: StartMethod) {
    nothing_outlives_a_parent_killed_by(method, Signal::SIGTERM, false);
}

fn nothing_outlives_ctrl_c_to_the_group(method: StartMethod) {
    nothing_outlives_a_parent_killed_by(method, Signal::SIGINT, true);
}

fn nothing_is_left_after_a_normal_exit(method: StartMethod) {
    let out = run(&mut as_parent("exit", method));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let left: Vec<u32> = out
        .stdout
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    if method == StartMethod::Forkserver {
        assert_eq!(left.len(), 1, "the forkserver was running: {out:?}");
    }
    for pid in left {
        assert!(ended(pid), "process {pid} outlived a program that exited");
    }
}

/// The scenarios that need a parent of their own: this binary run again as that parent.
fn as_parent(scenario: &str, method: StartMethod) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--as-parent", scenario, method.name()])
        .env("RUST_BACKTRACE", "0");
    command
}

fn run_as_parent(scenario: &str, method: StartMethod) -> ExitCode {
    match scenario {
        "sleep" => {
            let reports = Reports::new();
            let pool = pool(2, method);
            let _running: Vec<_> = (0..2)
                .map(|_| {
                    pool.apply_async(report_and_wait, reports.name.clone())
                        .unwrap()
                })
                .collect();
            reports.next_pid();
            reports.next_pid();
            println!("ready");
            // Killed by the test; the sleep only keeps a broken test from running for ever.
            std::thread::sleep(BOUND);
        }
        "exit" => {
            let mut pool = pool(2, method);
            assert_eq!(pool.apply(square, 3), Ok(9));
            pool.close();
            pool.join().unwrap();
            // What is left running now (the forkserver, if any) must be gone at exit.
            let left = descendants(std::process::id());
            let left: Vec<String> = left.iter().map(u32::to_string).collect();
            println!("{}", left.join(" "));
        }
        _ => return ExitCode::from(2),
    }
    ExitCode::SUCCESS
}

type Check = fn(StartMethod);

fn imap_starmap_and_map_async(method: StartMethod) {
    let pool = pool(2, method);
    let squares: Vec<u64> = (0..100).map(|x| x * x).collect();
    let ordered = pool.imap(square, 0..100, 7).unwrap();
    assert_eq!(ordered.collect::<Result<Vec<_>, _>>(), Ok(squares.clone()));
    let mut unordered = (pool.imap_unordered(square, 0..100, 1).unwrap())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    unordered.sort();
    assert_eq!(unordered, squares);
    let all = pool.map_async(square, 0..100).unwrap();
    assert_eq!(all.get_timeout(BOUND), Ok(squares));
    assert_eq!(pool.starmap(u64::pow, [(2, 10), (3, 2)]), Ok(vec![1024, 9]));
}

/// Set by the initializer, in each worker.
static OPENED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

fn open(connection: u64) {
    OPENED.set(connection).unwrap();
}

fn opened(_: u64) -> (i32, Option<u64>) {
    (std::process::id() as i32, OPENED.get().copied())
}

fn fails_to_open(_: ()) {
    panic!("no database (this panic is expected)")
}

fn the_initializer_and_maxtasksperchild(method: StartMethod) {
    let builder = Pool::builder().processes(2).start_method(method);
    let pool = builder
        .initializer(open, 42)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    let results: Vec<_> = (0..10)
        .map(|i| pool.apply_async(opened, i).unwrap())
        .collect();
    let seen: Vec<_> = results
        .iter()
        .map(|r| r.get_timeout(BOUND).unwrap())
        .collect();
    assert!(seen.iter().all(|&(_, s)| s == Some(42)), "{seen:?}");
    let pids: std::collections::HashSet<_> = seen.iter().map(|&(p, _)| p).collect();
    assert_eq!(pids.len(), 10, "a fresh worker for each task");
    let builder = Pool::builder().processes(2).start_method(method);
    let broken = builder.initializer(fails_to_open, ()).build().unwrap();
    let expected = "the initializer panicked: no database (this panic is expected)";
    let result = broken
        .apply_async(square, 3)
        .and_then(|r| r.get_timeout(BOUND));
    assert_eq!(result, Err(Error::Broken(expected.into())));
    assert!(broken.pids().is_empty());
}

fn a_task_past_its_deadline_is_killed_and_replaced(method: StartMethod) {
    let reports = Reports::new();
    let pool = pool(2, method);
    let deadline = Duration::from_millis(100);
    let late = (pool.apply_async_timeout(report_and_wait, reports.name.clone(), deadline)).unwrap();
    let pid = reports.next_pid();
    let others: Vec<_> = (0..20)
        .map(|x| pool.apply_async(square, x).unwrap())
        .collect();
    assert_eq!(
        late.get_timeout(BOUND),
        Err(Error::TimedOut { pid, deadline })
    );
    assert!(!pool.pids().contains(&pid));
    assert_eq!(pool.pids().len(), 2);
    assert!(
        others
            .iter()
            .enumerate()
            .all(|(x, r)| r.get_timeout(BOUND) == Ok(x as u64 * x as u64))
    );
}

const CHECKS: &[(&str, Check)] = &[
    (
        "a_descriptor_in_the_arguments_works_in_the_worker",
        a_descriptor_in_the_arguments_works_in_the_worker,
    ),
    ("imap_starmap_and_map_async", imap_starmap_and_map_async),
    (
        "the_initializer_and_maxtasksperchild",
        the_initializer_and_maxtasksperchild,
    ),
    (
        "a_task_past_its_deadline_is_killed_and_replaced",
        a_task_past_its_deadline_is_killed_and_replaced,
    ),
    (
        "results_come_back_in_order_from_the_workers",
        results_come_back_in_order_from_the_workers,
    ),
    (
        "a_panicking_task_fails_its_get_and_the_pool_goes_on",
        a_panicking_task_fails_its_get_and_the_pool_goes_on,
    ),
    (
        "a_killed_worker_fails_its_task_and_is_replaced",
        a_killed_worker_fails_its_task_and_is_replaced,
    ),
    (
        "terminate_kills_every_worker_and_settles_every_task",
        terminate_kills_every_worker_and_settles_every_task,
    ),
    (
        "a_dead_forkserver_takes_its_workers_and_the_pool_goes_on",
        a_dead_forkserver_takes_its_workers_and_the_pool_goes_on,
    ),
    (
        "a_lock_held_by_another_thread_at_the_start_of_a_worker",
        a_lock_held_by_another_thread_at_the_start_of_a_worker,
    ),
    (
        "nothing_outlives_a_parent_killed_by_sigkill",
        nothing_outlives_a_parent_killed_by_sigkill,
    ),
    (
        "nothing_outlives_a_parent_killed_by_sigterm",
        nothing_outlives_a_parent_killed_by_sigterm,
    ),
    (
        "nothing_outlives_ctrl_c_to_the_group",
        nothing_outlives_ctrl_c_to_the_group,
    ),
    (
        "nothing_is_left_after_a_normal_exit",
        nothing_is_left_after_a_normal_exit,
    ),
];

fn main() -> ExitCode {
    // The expected panics, one line each (workers too: they run this main first).
    panic::set_hook(Box::new(|info| {
        eprintln!("[pid {}] {info}", std::process::id())
    }));
    // A spawned worker is this binary run again: here it becomes a worker and never returns.
    run_if_spawned();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, scenario, method] = args.as_slice() {
        if flag == "--as-parent" {
            return run_as_parent(scenario, method.parse().unwrap());
        }
    }
    // Flags (`--nocapture`, ...) mean nothing here; a word filters the checks, as in libtest.
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let (mut passed, mut failed) = (0, 0);
    for method in StartMethod::ALL {
        for (name, check) in CHECKS {
            let name = format!("{name}::{method}");
            if filter.is_some_and(|f| !name.contains(f.as_str())) {
                continue;
            }
            let ok = panic::catch_unwind(AssertUnwindSafe(|| check(method))).is_ok();
            println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
            if ok { passed += 1 } else { failed += 1 }
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!("\ntest result: {verdict}. {passed} passed; {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}
