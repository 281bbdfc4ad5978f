//! The calls beyond the note's: `imap` and `imap_unordered` (lazy input, dropped early),
//! `map_async`, `starmap`, an initializer (that works, that panics, that ends its worker),
//! `maxtasksperchild`, and per-task deadlines. (An input that panics is in
//! `input_panics.rs`, a test program of its own.)
//!
//! A forked worker's output is lost inside the test harness: these tests look only at
//! results, errors and pids. A task that must be mid-task when the test acts reports its pid
//! on a pipe and then waits for a byte on another, so no test sleeps to synchronise.

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, RawFd};
use std::sync::OnceLock;
use std::time::Duration;

use demo_pool::{AsyncResult, Error, Pool};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Two pipes between a test and its tasks, opened before the pool forks its workers so
/// that every worker, replacements included, inherits them.
struct Rendezvous {
    reports: File,
    release: File,
    /// The tasks' ends, as (report write end, release read end).
    ends: (RawFd, RawFd),
}

impl Rendezvous {
    fn new() -> Rendezvous {
        let (reports, report_end) = nix::unistd::pipe().unwrap();
        let (release_end, release) = nix::unistd::pipe().unwrap();
        let ends = (report_end.into_raw_fd(), release_end.into_raw_fd());
        Rendezvous {
            reports: reports.into(),
            release: release.into(),
            ends,
        }
    }

    /// Whether a report is there within `ms` milliseconds.
    fn reported(&self, ms: u16) -> bool {
        let mut fds = [PollFd::new(self.reports.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).unwrap() == 1
    }

    /// The pid of the next task that has started, waiting at most 20 s.
    fn next_pid(&mut self) -> i32 {
        assert!(self.reported(20_000), "no task started");
        let mut pid = [0; 4];
        self.reports.read_exact(&mut pid).unwrap();
        i32::from_le_bytes(pid)
    }

    /// Lets `n` waiting tasks finish.
    fn release(&mut self, n: usize) {
        self.release.write_all(&vec![0; n]).unwrap();
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        // SAFETY: the tasks' ends were leaked from `OwnedFd`s in `new` and are closed once,
        // here; the workers hold their own copies.
        unsafe {
            libc::close(self.ends.0);
            libc::close(self.ends.1);
        }
    }
}

fn borrowed(fd: RawFd) -> ManuallyDrop<File> {
    // SAFETY: the test keeps the pipe open while the pool lives, and `ManuallyDrop`
    // keeps this `File` from closing a descriptor it does not own.
    ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
}

/// Reports this worker's pid, waits for the test's byte, returns the pid.
fn report_and_wait((report, release): (RawFd, RawFd)) -> i32 {
    let pid = std::process::id() as i32;
    borrowed(report).write_all(&pid.to_le_bytes()).unwrap();
    borrowed(release).read_exact(&mut [0]).unwrap();
    pid
}

/// Reports this worker's pid, then waits until its worker is killed.
fn report_and_hang((report, _): (RawFd, RawFd)) {
    borrowed(report)
        .write_all(&(std::process::id() as i32).to_le_bytes())
        .unwrap();
    loop {
        std::thread::park();
    }
}

/// Reports this worker's pid and returns `x * x`: each report is one run.
fn report_and_square(((report, _), x): ((RawFd, RawFd), u64)) -> u64 {
    borrowed(report)
        .write_all(&(std::process::id() as i32).to_le_bytes())
        .unwrap();
    x * x
}

fn square(x: u64) -> u64 {
    x * x
}

fn pid_of_worker(_: u64) -> i32 {
    std::process::id() as i32
}

/// A bound on a wait that must end: at most 20 s, then the test fails instead of hanging.
const BOUND: Duration = Duration::from_secs(20);

/// `apply`, with the wait bounded.
fn bounded<R: serde::de::DeserializeOwned>(
    result: Result<AsyncResult<R>, Error>,
) -> Result<R, Error> {
    result?.get_timeout(BOUND)
}

#[test]
fn imap_gives_the_results_in_input_order_and_imap_unordered_all_of_them() {
    let pool = Pool::new(3).unwrap();
    let squares: Vec<u64> = (0..1000).map(|x| x * x).collect();
    for chunksize in [1, 7, 1000, 5000] {
        let ordered: Result<Vec<u64>, Error> =
            pool.imap(square, 0..1000, chunksize).unwrap().collect();
        assert_eq!(ordered.unwrap(), squares);
        let mut unordered: Vec<u64> = (pool.imap_unordered(square, 0..1000, chunksize).unwrap())
            .collect::<Result<_, _>>()
            .unwrap();
        unordered.sort();
        assert_eq!(unordered, squares);
    }
    assert_eq!(pool.imap(square, [], 1).unwrap().count(), 0);
}

#[test]
fn imap_takes_its_input_as_it_goes() {
    let pool = Pool::new(2).unwrap();
    let taken = Cell::new(0);
    let endless = (0..).inspect(|_| taken.set(taken.get() + 1));
    let mut results = pool.imap(square, endless, 3).unwrap();
    assert_eq!(
        results.by_ref().take(5).collect::<Result<Vec<_>, _>>(),
        Ok(vec![0, 1, 4, 9, 16])
    );
    let bounded = taken.get();
    assert!(bounded < 1000, "{bounded} items taken for 5 results");
    drop(results);
    assert_eq!(taken.get(), bounded);
}

#[test]
fn imap_dropped_early_leaves_no_worker_busy() {
    let mut rendezvous = Rendezvous::new();
    let mut pool = Pool::new(1).unwrap();
    let mut results = (pool.imap(report_and_wait, vec![rendezvous.ends; 100], 1)).unwrap();
    rendezvous.release(1);
    assert!(results.next().unwrap().is_ok());
    let pid = rendezvous.next_pid();
    drop(results);
    // The chunks the worker already holds run to their end; the queued ones are taken back.
    rendezvous.release(100);
    let after = pool.apply_async(pid_of_worker, 0).unwrap();
    assert_eq!(after.get_timeout(BOUND), Ok(pid), "the worker is free");
    let mut ran = 1;
    while rendezvous.reported(0) {
        assert_eq!(rendezvous.next_pid(), pid);
        ran += 1;
    }
    assert!(ran < 100, "all {ran} tasks of the dropped imap ran");
    pool.close();
    pool.join().unwrap();
}

#[test]
fn map_async_gives_one_result_for_the_list_and_starmap_unpacks_pairs() {
    let pool = Pool::new(2).unwrap();
    let squares = pool.map_async(square, 0..1000).unwrap();
    assert_eq!(
        squares.get_timeout(BOUND).unwrap(),
        (0..1000).map(|x| x * x).collect::<Vec<u64>>()
    );
    assert_eq!(squares.successful(), Some(true));
    assert_eq!(
        pool.map_async(square, []).unwrap().get_timeout(BOUND),
        Ok(vec![])
    );
    let failed = pool
        .map_async(
            |x: u64| -> u64 {
                assert!(x != 500, "boom (this panic is expected)");
                x
            },
            0..1000,
        )
        .unwrap();
    assert_eq!(
        failed.get_timeout(BOUND),
        Err(Error::Panicked("boom (this panic is expected)".into()))
    );
    let powers = pool.starmap(u64::pow, [(2, 10), (3, 2), (10, 0)]);
    assert_eq!(powers, Ok(vec![1024, 9, 1]));
    let sums = pool.starmap_async(|a: String, b: String| a + &b, [("a".into(), "b".into())]);
    assert_eq!(sums.unwrap().get_timeout(BOUND), Ok(vec!["ab".to_string()]));
}

/// Set by the initializer, in each worker.
static OPENED: OnceLock<u64> = OnceLock::new();

fn open(connection: u64) {
    OPENED.set(connection).unwrap();
}

fn opened(_: u64) -> Option<u64> {
    OPENED.get().copied()
}

#[test]
fn each_worker_runs_the_initializer_once_before_its_first_task() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(open, 42)
        .maxtasksperchild(3)
        .build()
        .unwrap();
    // The replacements run it too; `set` would panic on a second run in one worker.
    let seen: Vec<_> = pool
        .map_async(opened, 0..30)
        .unwrap()
        .get_timeout(BOUND)
        .unwrap();
    assert!(seen.iter().all(|&s| s == Some(42)), "{seen:?}");
    assert_eq!(
        OPENED.get(),
        None,
        "the initializer ran in the pool's process"
    );
}

#[test]
fn an_initializer_that_panics_fails_the_pool_with_an_error_that_names_it() {
    let mut pool = Pool::builder()
        .processes(2)
        .initializer(|_: ()| panic!("no database (this panic is expected)"), ())
        .build()
        .unwrap();
    // Queued before or after the pool stops, the task fails with the reason.
    let expected = "the initializer panicked: no database (this panic is expected)";
    assert_eq!(
        bounded(pool.apply_async(square, 3)),
        Err(Error::Broken(expected.into()))
    );
    assert_eq!(
        pool.apply_async(square, 3).err(),
        Some(Error::Broken(expected.into()))
    );
    assert!(pool.pids().is_empty(), "no worker forked again");
    pool.terminate();
}

#[test]
fn an_initializer_that_ends_its_worker_fails_the_pool() {
    // SAFETY: `_exit` ends the worker at once; it is always sound to call.
    let exit = |code: i32| unsafe { libc::_exit(code) };
    let pool = Pool::builder()
        .processes(1)
        .initializer(exit, 3)
        .build()
        .unwrap();
    let expected = "the initializer ended its worker: exited with code 3";
    assert_eq!(
        bounded(pool.apply_async(square, 3)),
        Err(Error::Broken(expected.into()))
    );
}

#[test]
fn maxtasksperchild_1_runs_each_of_100_tasks_in_a_fresh_worker() {
    let mut pool = Pool::builder()
        .processes(4)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    let results: Vec<_> = (0..100)
        .map(|i| pool.apply_async(pid_of_worker, i).unwrap())
        .collect();
    let pids: Vec<i32> = results
        .iter()
        .map(|r| r.get_timeout(BOUND).unwrap())
        .collect();
    assert!(
        results
            .iter()
            .zip(&pids)
            .all(|(r, &pid)| r.ran().unwrap().pid == pid)
    );
    assert_eq!(pids.iter().collect::<HashSet<_>>().len(), 100);
    pool.close();
    pool.join().unwrap();
    assert!(pool.pids().is_empty());
}

#[test]
fn a_task_past_its_deadline_is_killed_and_the_others_run_once_untouched() {
    let mut rendezvous = Rendezvous::new();
    let mut pool = Pool::new(2).unwrap();
    // One worker runs a task that waits for the test; the deadline task takes the other.
    let waiting = pool.apply_async(report_and_wait, rendezvous.ends).unwrap();
    let waiter = rendezvous.next_pid();
    let deadline = Duration::from_millis(100);
    let late = pool
        .apply_async_timeout(report_and_hang, rendezvous.ends, deadline)
        .unwrap();
    let hung = rendezvous.next_pid();
    let others: Vec<_> = (0..20)
        .map(|x| {
            pool.apply_async(report_and_square, (rendezvous.ends, x))
                .unwrap()
        })
        .collect();
    assert_eq!(
        late.get_timeout(BOUND),
        Err(Error::TimedOut {
            pid: hung,
            deadline
        })
    );
    assert!(
        !pool.pids().contains(&hung),
        "the late task's worker was replaced"
    );
    assert!(pool.pids().contains(&waiter));
    rendezvous.release(1);
    assert_eq!(
        waiting.get_timeout(BOUND),
        Ok(waiter),
        "the task beside it ran on, untouched"
    );
    assert!(
        others
            .iter()
            .enumerate()
            .all(|(x, r)| r.get_timeout(BOUND) == Ok(x as u64 * x as u64))
    );
    let runs = (0..20).map(|_| rendezvous.next_pid()).count();
    assert_eq!(runs, 20);
    assert!(!rendezvous.reported(0), "a task ran twice");
    let quick = pool.apply_async_timeout(square, 3, BOUND).unwrap();
    assert_eq!(quick.get_timeout(BOUND), Ok(9));
    // A deadline too far to be a moment never comes. The manager looks at the deadlines
    // after each result: two results later, it has looked at this one.
    let far = (pool.apply_async_timeout(report_and_wait, rendezvous.ends, Duration::MAX)).unwrap();
    let pid = rendezvous.next_pid();
    for x in 0..2 {
        let other = pool.apply_async_timeout(square, x, Duration::MAX).unwrap();
        assert_eq!(other.get_timeout(BOUND), Ok(x * x));
    }
    rendezvous.release(1);
    assert_eq!(far.get_timeout(BOUND), Ok(pid));
    pool.close();
    pool.join().unwrap();
}

#[test]
fn a_pool_wide_deadline_holds_for_every_task() {
    let rendezvous = Rendezvous::new();
    let deadline = Duration::from_millis(50);
    let pool = Pool::builder()
        .processes(2)
        .task_deadline(deadline)
        .build()
        .unwrap();
    let late = pool.apply_async(report_and_hang, rendezvous.ends).unwrap();
    assert!(
        matches!(late.get_timeout(BOUND), Err(Error::TimedOut { deadline: d, .. }) if d == deadline)
    );
    assert_eq!(pool.map(square, 0..100).unwrap().len(), 100);
}
