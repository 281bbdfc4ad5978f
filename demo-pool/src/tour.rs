//! The rest of `Pool`, beyond the note: `map`, `imap`, `starmap`, a task that panics, a
//! worker killed with SIGKILL in the middle of a task, a task past its deadline (which
//! Python's pool does not have), and `terminate()` with tasks running.

use std::error::Error;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use demo_pool::{Pool, StartMethod};

use crate::demo::{self, say};

fn square(x: u64) -> u64 {
    x * x
}

fn pow(base: u64, exp: u32) -> u64 {
    base.pow(exp)
}

fn crash(_: ()) {
    panic!("a task that panics");
}

/// Tells the parent, on the socket it named, that this task has started and in which worker;
/// then waits until the parent kills the worker. (Or the pool does, when it ends: the wait
/// ends whatever the parent does.)
fn wait_to_be_killed(parent: String) {
    say!("a task starts, tells the parent its pid, and waits");
    let to = SocketAddr::from_abstract_name(parent).unwrap();
    let pid = std::process::id().to_string();
    let tell = UnixDatagram::unbound().unwrap();
    tell.send_to_addr(pid.as_bytes(), &to).unwrap();
    loop {
        std::thread::park(); // Until SIGKILL.
    }
}

/// A task that never ends: it waits until its worker is killed.
fn never_ends(_: ()) {
    loop {
        std::thread::park();
    }
}

/// Whether `pid` names a process, as `kill -0` asks.
fn is_alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// The value of `--start-method`: Python's `get_context(method)`, the pool's default when not
/// given; a bad value is one line on stderr and exit code 2.
pub fn start_method(value: Option<String>) -> StartMethod {
    let parsed = value.map_or(Ok(Pool::DEFAULT_START_METHOD), |v| v.parse());
    parsed.unwrap_or_else(|e: String| demo::fail(&e))
}

/// Runs the tour; returns what failed although it should not have.
pub fn run(method: StartMethod) -> Result<Vec<String>, Box<dyn Error>> {
    let mut failed = Vec::new();
    say!("the rest of Pool, on Pool(2):");
    let mut pool = Pool::with_start_method(2, method)?;
    say!("map(square, range(10)) = {:?}", pool.map(square, 0..10)?);
    // imap takes the items as the workers free up, and gives the results as they come.
    let squares = pool
        .imap(square, 0..10, 3)?
        .collect::<Result<Vec<_>, _>>()?;
    say!("list(imap(square, range(10), chunksize=3)) = {squares:?}");
    let powers = pool.starmap(pow, [(2, 10), (3, 2), (10, 3)])?;
    say!("starmap(pow, [(2, 10), (3, 2), (10, 3)]) = {powers:?}");
    match pool.apply_async(crash, ())?.get() {
        Err(demo_pool::Error::Panicked(message)) => {
            say!("apply_async(crash).get() failed: {message}")
        }
        other => failed.push(format!("crash should have panicked, got {other:?}")),
    }
    let seven = pool.apply(square, 7)?;
    say!("apply(square, 7) = {seven}, the pool goes on");

    // A worker killed in the middle of a task: the task's get() says so, the pool replaces
    // the worker, and the other tasks complete. (Python's pool would wait for ever: bpo-22393.)
    // The task tells the parent when it has started, on a socket in Linux's abstract
    // namespace: a name that can travel as the task's argument, with no file to clean up.
    let name = format!("demo-pool-{}", std::process::id());
    let started = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name)?)?;
    started.set_read_timeout(Some(Duration::from_secs(30)))?;
    let workers = pool.pids();
    let victim = pool.apply_async(wait_to_be_killed, name)?;
    let others: Vec<_> = (0..5)
        .map(|x| pool.apply_async(square, x))
        .collect::<Result<_, _>>()?;
    let mut pid = [0; 16];
    let n = started.recv(&mut pid)?;
    let pid: i32 = std::str::from_utf8(&pid[..n])?.parse()?;
    say!("kill -9 {pid}, the worker running that task");
    kill(Pid::from_raw(pid), Signal::SIGKILL)?;
    match victim.get() {
        Err(e @ demo_pool::Error::WorkerDied { .. }) => say!("get() of the killed task: {e}"),
        other => failed.push(format!("the killed task should have failed, got {other:?}")),
    }
    // The pool replaces a dead worker before it lets anyone see the task's error.
    match pool.pids().into_iter().find(|p| !workers.contains(p)) {
        Some(new) => say!("a new worker took its place: pid {new}"),
        None => failed.push("the killed worker was not replaced".to_string()),
    }
    let squares = others
        .iter()
        .map(|r| r.get())
        .collect::<Result<Vec<_>, _>>()?;
    say!("the other tasks completed: {squares:?}");
    failed.extend(past_its_deadline(&pool)?);

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

/// A task past its deadline, which Python's pool does not have: the pool kills the worker
/// running it and puts a new one in its place, the task's `get()` says so, and the tasks
/// queued beside it complete. (Python's `get(timeout)` gives up waiting, but the task runs
/// on, and holds its worker for ever.)
fn past_its_deadline(pool: &Pool) -> Result<Vec<String>, Box<dyn Error>> {
    let mut failed = Vec::new();
    let deadline = demo::scaled(0.5);
    let seconds = deadline.as_secs_f64();
    say!("a task that never ends, with apply_async_timeout(.., {seconds} s), beside 5 others");
    let workers = pool.pids();
    let late = pool.apply_async_timeout(never_ends, (), deadline)?;
    let others: Vec<_> = (0..5)
        .map(|x| pool.apply_async(square, x))
        .collect::<Result<_, _>>()?;
    match late.get() {
        Err(e @ demo_pool::Error::TimedOut { .. }) => {
            say!("get() of the task past its deadline: {e}")
        }
        other => failed.push(format!(
            "the late task should have timed out, got {other:?}"
        )),
    }
    let killed = workers.iter().find(|p| !pool.pids().contains(p));
    let new = pool.pids().into_iter().find(|p| !workers.contains(p));
    match (killed, new) {
        (Some(killed), Some(new)) => {
            say!("its worker: pid {killed} killed, pid {new} in its place")
        }
        _ => failed.push("the late task's worker was not replaced".to_string()),
    }
    let squares = others
        .iter()
        .map(|r| r.get())
        .collect::<Result<Vec<_>, _>>()?;
    say!("the other tasks completed: {squares:?}");
    Ok(failed)
}
