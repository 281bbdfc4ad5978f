//! The pool itself, through its API: `map` in input order, `get_timeout` timing out, `ran()`,
//! the errors of misuse, a panicking task, a worker killed with SIGKILL mid-task, a task that
//! ends its worker, `terminate()` and dropping the pool, workers drawing different random
//! numbers, and threads that read their results from the workers themselves.
//!
//! A forked worker's output is lost inside the test harness: these tests look only at
//! results, errors and pids. Tasks that must be mid-task when the test acts report their pid
//! on a pipe and then wait for a byte on another, so no test sleeps to synchronise.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use demo_pool::{Error, Pool, StartMethod};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

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

    /// The pid of the next task that has started, waiting at most 20 s.
    fn next_pid(&mut self) -> i32 {
        let mut fds = [PollFd::new(self.reports.as_fd(), PollFlags::POLLIN)];
        assert_eq!(
            poll(&mut fds, PollTimeout::from(20_000u16)).unwrap(),
            1,
            "no task started"
        );
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

/// Reports this worker's pid, waits for the test's byte, returns the pid and a number
/// drawn from the worker's random generator.
fn report_and_wait((report, release): (RawFd, RawFd)) -> (i32, u64) {
    let pid = std::process::id() as i32;
    borrowed(report).write_all(&pid.to_le_bytes()).unwrap();
    borrowed(release).read_exact(&mut [0]).unwrap();
    (pid, rand::random())
}

fn square(x: u64) -> u64 {
    x * x
}

fn pid_of_worker(_: ()) -> i32 {
    std::process::id() as i32
}

fn pidfd(pid: i32) -> OwnedFd {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(fd >= 0, "pidfd_open({pid}): {}", io::Error::last_os_error());
    // SAFETY: `fd` was just opened and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Whether the process behind `pidfd` is a child of ours that has not been reaped.
fn unreaped_child(pidfd: &OwnedFd) -> bool {
    waitid(
        Id::PIDFd(pidfd.as_fd()),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
    ) != Err(Errno::ECHILD)
}

#[test]
fn map_returns_the_results_in_input_order() {
    let pool = Pool::new(3).unwrap();
    let squares = pool.map(square, 0..1000).unwrap();
    assert_eq!(squares, (0..1000).map(|x| x * x).collect::<Vec<u64>>());
    assert_eq!(pool.map(square, []).unwrap(), Vec::<u64>::new());
    // A closure that captures nothing is a `fn` too.
    assert_eq!(
        pool.map(|s: String| s.len(), ["a", "bcd"].map(String::from))
            .unwrap(),
        [1, 3]
    );
}

/// An iterator whose size hint says `hint` items, whatever it yields: wrong, but safe code
/// may write one.
struct Hinting<I> {
    items: I,
    hint: usize,
}

impl<I: Iterator> Iterator for Hinting<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        self.items.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.hint, Some(self.hint))
    }
}

#[test]
fn map_takes_every_item_whatever_the_iterator_says_of_its_size() {
    let pool = Pool::new(2).unwrap();
    for (items, hint) in [
        (1000, 3),
        (3, 1000),
        (100, 0),
        (0, usize::MAX),
        (5, usize::MAX),
    ] {
        let hinting = Hinting {
            items: 0..items,
            hint,
        };
        let squares = pool.map(square, hinting).unwrap();
        assert_eq!(squares, (0..items).map(|x| x * x).collect::<Vec<u64>>());
    }
}

#[test]
fn get_timeout_times_out_while_the_task_runs() {
    let mut rendezvous = Rendezvous::new();
    let pool = Pool::new(1).unwrap();
    let result = pool.apply_async(report_and_wait, rendezvous.ends).unwrap();
    let pid = rendezvous.next_pid();
    assert_eq!(
        result.get_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    );
    assert!(!result.ready());
    assert_eq!(result.successful(), None);
    rendezvous.release(1);
    assert_eq!(result.get_timeout(Duration::from_secs(20)).unwrap().0, pid);
    assert!(result.ready());
    assert_eq!(result.successful(), Some(true));
    assert_ne!(pid, std::process::id() as i32);
}

#[test]
fn a_result_knows_which_worker_ran_it_and_when() {
    let pool = Pool::new(1).unwrap();
    let before = Instant::now();
    let first = pool.apply_async(pid_of_worker, ()).unwrap();
    let crash = pool
        .apply_async(
            |_: ()| -> u64 { panic!("boom (this panic is expected)") },
            (),
        )
        .unwrap();
    let pid = first.get().unwrap();
    assert!(crash.get().is_err());
    let after = Instant::now();
    let (first, crash) = (first.ran().unwrap(), crash.ran().unwrap());
    assert_eq!((first.pid, crash.pid), (pid, pid));
    // One clock for the pool and its workers: each task inside the test's interval, the
    // second after the first on the single worker.
    assert!(before <= first.start && first.start <= first.end);
    assert!(first.end <= crash.start && crash.start <= crash.end && crash.end <= after);
}

#[test]
fn misuse_is_an_error_as_in_python() {
    assert_eq!(
        Pool::new(0).err().unwrap().kind(),
        io::ErrorKind::InvalidInput
    );
    let mut pool = Pool::new(2).unwrap();
    assert_eq!(pool.join(), Err(Error::StillRunning));
    let queued: Vec<_> = (0..10)
        .map(|x| pool.apply_async(square, x).unwrap())
        .collect();
    pool.close();
    assert_eq!(pool.apply_async(square, 1).err(), Some(Error::NotRunning));
    assert_eq!(pool.map(square, 0..3), Err(Error::NotRunning));
    // Tasks queued before close() still run; join() waits for them and the workers.
    pool.join().unwrap();
    assert!(
        queued
            .iter()
            .enumerate()
            .all(|(x, r)| r.get() == Ok(x as u64 * x as u64))
    );
    assert_eq!(pool.pids(), Vec::<i32>::new());
}

#[test]
fn a_panicking_task_fails_its_get_and_the_pool_goes_on() {
    let pool = Pool::new(1).unwrap();
    let workers = pool.pids();
    let result = pool
        .apply_async(
            |_: ()| -> u64 { panic!("boom (this panic is expected)") },
            (),
        )
        .unwrap();
    assert_eq!(
        result.get(),
        Err(Error::Panicked("boom (this panic is expected)".into()))
    );
    assert_eq!(result.successful(), Some(false));
    assert_eq!(pool.apply(square, 7), Ok(49));
    // The same worker: a panic ends the task, not the process.
    assert_eq!(pool.pids(), workers);
    assert_eq!(pool.apply(pid_of_worker, ()).unwrap(), workers[0]);
}

#[test]
fn a_worker_killed_mid_task_fails_that_task_only_and_is_replaced() {
    let mut rendezvous = Rendezvous::new();
    let pool = Pool::new(2).unwrap();
    let victim = pool.apply_async(report_and_wait, rendezvous.ends).unwrap();
    let pid = rendezvous.next_pid();
    let others: Vec<_> = (0..50)
        .map(|x| pool.apply_async(square, x).unwrap())
        .collect();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();

    let Err(Error::WorkerDied { pid: died, how }) = victim.get() else {
        panic!("{:?}", victim.get())
    };
    assert_eq!((died, how.as_str()), (pid, "killed by SIGKILL"));
    assert_eq!(victim.ran(), None, "the task never ended in a worker");
    assert!(
        others
            .iter()
            .enumerate()
            .all(|(x, r)| r.get() == Ok(x as u64 * x as u64) && r.ran().unwrap().pid != pid)
    );
    let workers = pool.pids();
    assert_eq!(workers.len(), 2);
    assert!(!workers.contains(&pid));
    // Both workers run: two tasks that wait for each other's start run on two live pids.
    let pair: Vec<_> = (0..2)
        .map(|_| pool.apply_async(report_and_wait, rendezvous.ends).unwrap())
        .collect();
    let started = [rendezvous.next_pid(), rendezvous.next_pid()];
    assert_ne!(started[0], started[1]);
    assert!(started.iter().all(|p| workers.contains(p)));
    rendezvous.release(2);
    assert!(pair.iter().all(|r| r.get().is_ok()));
}

/// A shape postcard cannot decode (untagged: the type does not say which variant).
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Untagged {
    Number(u32),
}

/// A value whose length its serializer does not say up front, which postcard needs.
struct Unsized;

impl serde::Serialize for Unsized {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        s.serialize_seq(None)?.end()
    }
}

impl<'de> serde::Deserialize<'de> for Unsized {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Unsized)
    }
}

#[test]
fn a_value_postcard_cannot_carry_is_a_clear_serde_error() {
    let pool = Pool::new(1).unwrap();
    let postcard = |result: Result<(), Error>| match result {
        Err(Error::Serde(why)) => assert!(why.contains("postcard"), "{why}"),
        other => panic!("{other:?}"),
    };
    // Encoded here: refused before it is sent.
    postcard(pool.apply_async(|_: Unsized| (), Unsized).map(drop));
    // Encoded, but not decodable in the worker: the task's get() says so.
    postcard(pool.apply(|_: Untagged| (), Untagged::Number(1)));
    // A result that cannot be encoded in the worker, nor decoded here.
    postcard(pool.apply(|_: ()| Unsized, ()).map(drop));
    postcard(pool.apply(|_: ()| Untagged::Number(2), ()).map(drop));
    // The pool goes on; a NaN, which JSON could not carry, crosses as it is.
    assert!(pool.apply(|x: f64| x, f64::NAN).unwrap().is_nan());
    assert_eq!(pool.apply(|x: f64| x * 2.0, 1.5), Ok(3.0));
}

#[test]
fn a_task_that_ends_its_worker_fails_with_the_exit_code() {
    let pool = Pool::new(1).unwrap();
    let result = pool
        // `_exit`: a forked worker that ran `std::process::exit` could wait for ever on a
        // lock that another thread of this test binary held at the fork.
        // SAFETY: `_exit` ends the worker at once; it is always sound to call.
        .apply_async(|code: i32| -> u64 { unsafe { libc::_exit(code) } }, 3)
        .unwrap();
    assert!(
        matches!(result.get(), Err(Error::WorkerDied { how, .. }) if how == "exited with code 3")
    );
    assert_eq!(pool.apply(square, 3), Ok(9));
}

#[test]
fn terminate_kills_and_reaps_every_worker_and_settles_every_task() {
    let mut rendezvous = Rendezvous::new();
    let mut pool = Pool::new(2).unwrap();
    let running: Vec<_> = (0..2)
        .map(|_| pool.apply_async(report_and_wait, rendezvous.ends).unwrap())
        .collect();
    let pidfds = [rendezvous.next_pid(), rendezvous.next_pid()].map(pidfd);
    let queued = pool.apply_async(square, 2).unwrap();
    assert!(pidfds.iter().all(unreaped_child));
    pool.terminate();
    assert!(pidfds.iter().all(|fd| !unreaped_child(fd)));
    assert!(running.iter().all(|r| r.get() == Err(Error::Terminated)));
    assert_eq!(queued.get(), Err(Error::Terminated));
    assert_eq!(pool.apply_async(square, 1).err(), Some(Error::NotRunning));
    assert_eq!(pool.join(), Ok(()));
}

/// The parent-death signal fires when the *thread* that started a worker ends: a pool made on
/// a thread that then ends keeps its workers, which its manager thread started.
#[test]
fn a_pool_made_on_a_thread_that_ends_keeps_its_workers() {
    let (pool, tid) = std::thread::spawn(|| (Pool::new(2).unwrap(), nix::unistd::gettid()))
        .join()
        .unwrap();
    // The thread's directory goes once its exit is complete, parent-death signals and all.
    let until = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/self/task/{tid}")).exists() {
        assert!(Instant::now() < until, "thread {tid} did not end");
        std::thread::yield_now();
    }
    let workers = pool.pids();
    let ran = pool.map(pid_of_worker, vec![(); 100]).unwrap();
    assert!(
        ran.iter().all(|pid| workers.contains(pid)),
        "{ran:?} {workers:?}"
    );
    assert_eq!(pool.pids(), workers);
}

#[test]
fn dropping_the_pool_terminates_it() {
    let mut rendezvous = Rendezvous::new();
    let pool = Pool::new(1).unwrap();
    let running = pool.apply_async(report_and_wait, rendezvous.ends).unwrap();
    let worker = pidfd(rendezvous.next_pid());
    drop(pool);
    assert!(!unreaped_child(&worker));
    assert_eq!(running.get(), Err(Error::Terminated));
}

#[test]
fn each_worker_draws_its_own_random_numbers() {
    let mut rendezvous = Rendezvous::new();
    let pool = Pool::new(2).unwrap();
    let pair: Vec<_> = (0..2)
        .map(|_| pool.apply_async(report_and_wait, rendezvous.ends).unwrap())
        .collect();
    assert_ne!(rendezvous.next_pid(), rendezvous.next_pid());
    rendezvous.release(2);
    let [(_, a), (_, b)] = [pair[0].get().unwrap(), pair[1].get().unwrap()];
    assert_ne!(a, b);
}

/// This test binary never calls `run_if_spawned` (libtest owns its `main`): a pool that would
/// spawn its workers says what is missing instead of starting the test binary again.
#[test]
fn spawn_and_forkserver_without_run_if_spawned_are_a_clear_error() {
    for method in [StartMethod::Spawn, StartMethod::Forkserver] {
        let err = Pool::with_start_method(1, method).err().unwrap();
        assert!(err.to_string().contains("run_if_spawned"), "{err}");
    }
    assert_eq!(Pool::DEFAULT_START_METHOD, StartMethod::Fork);
    assert!(Pool::new(1).is_ok());
}

/// A value holding descriptors: as many ends of pipes as it is given.
#[derive(serde::Serialize, serde::Deserialize)]
struct Ends(Vec<WithFd>);

#[derive(serde::Serialize, serde::Deserialize)]
struct WithFd(#[serde(with = "demo_pool::fds")] OwnedFd);

fn some_ends(n: usize) -> Ends {
    Ends(
        (0..n)
            .map(|_| WithFd(std::os::unix::net::UnixStream::pair().unwrap().0.into()))
            .collect(),
    )
}

#[test]
fn descriptors_beyond_what_crosses_are_a_clear_serde_error() {
    let pool = Pool::new(1).unwrap();
    let serde = |result: Result<(), Error>, says: &str| match result {
        Err(Error::Serde(why)) => assert!(why.contains(says), "{why}"),
        other => panic!("{other:?}"),
    };
    // More than one message carries: refused here, before anything is sent.
    let refused = pool.apply_async(|ends: Ends| ends.0.len(), some_ends(254));
    serde(refused.map(drop), "at most 253 descriptors");
    // 253 cross, and each arrives.
    assert_eq!(
        pool.apply(|ends: Ends| ends.0.len(), some_ends(253))
            .unwrap(),
        253
    );
    // A result crosses back without descriptors: one that holds some is an error of get().
    let held = pool.apply(|n: usize| some_ends(n), 1).map(drop);
    serde(held, "the result: it holds a descriptor");
}

#[test]
fn threads_waiting_on_the_same_workers_each_get_their_own_results() {
    // Quick tasks: each worker holds several at once, so a thread that reads its own result
    // from a worker reads, and settles, other threads' results too.
    let pool = Pool::new(2).unwrap();
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    let applied = (0..200).map(|i| pool.apply(square, t * 1000 + i));
                    let waited: Vec<_> = (200..400)
                        .map(|i| pool.apply_async(square, t * 1000 + i).unwrap())
                        .collect();
                    let got = waited.iter().map(|r| r.get());
                    applied.chain(got).collect::<Vec<_>>()
                })
            })
            .collect();
        for (t, thread) in threads.into_iter().enumerate() {
            let expected: Vec<_> = (0..400).map(|i| Ok(square(t as u64 * 1000 + i))).collect();
            assert_eq!(thread.join().unwrap(), expected);
        }
    });
}

/// Whether thread `tid` of this process is waiting in `poll`, as a thread that reads its
/// worker's results itself does (one that waits for the manager waits on a futex).
fn polling(tid: Pid) -> bool {
    let path = format!("/proc/self/task/{tid}/syscall");
    let call = std::fs::read_to_string(path).unwrap_or_default();
    let number: Option<i64> = call.split_whitespace().next().and_then(|n| n.parse().ok());
    #[cfg(target_arch = "x86_64")]
    if number == Some(libc::SYS_poll) {
        return true;
    }
    number == Some(libc::SYS_ppoll)
}

#[test]
fn a_closed_pool_ends_when_a_waiting_thread_reads_the_last_result() {
    let mut rendezvous = Rendezvous::new();
    let mut pool = Pool::new(1).unwrap();
    let result = pool.apply_async(report_and_wait, rendezvous.ends).unwrap();
    let pid = rendezvous.next_pid();
    pool.close();
    let waiter = nix::unistd::gettid();
    std::thread::scope(|s| {
        let rendezvous = &mut rendezvous;
        s.spawn(move || {
            // The task ends only once `get` below waits on the worker's socket: the result
            // is read by that thread, not by the manager.
            let start = Instant::now();
            while !polling(waiter) {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "get never polled"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            rendezvous.release(1);
        });
        assert_eq!(result.get().unwrap().0, pid);
    });
    // The manager was not the one to read the last result; it must still learn that the
    // closed pool has no work left, and end.
    let (joined, join) = std::sync::mpsc::channel();
    std::thread::spawn(move || joined.send(pool.join()));
    assert_eq!(join.recv_timeout(Duration::from_secs(20)), Ok(Ok(())));
}
