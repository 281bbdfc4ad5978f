//! Measures the process lock against the bare OS mechanism and the neighbours worth knowing.
//!
//! - `lock.uncontended` (ns per acquire+release, one process): ours (robust process-shared
//!   pthread mutex), `limit` (a process-shared POSIX semaphore, what Python's Lock is built
//!   on), and extra rows: `pthread-robust` (the same pthread mutex as ours, called directly),
//!   `futex` (a bare futex lock: two atomic instructions when
//!   uncontended), `std-mutex` (`std::sync::Mutex`, threads only), `flock` (a file lock).
//! - `lock.4x10000` (ms): 4 forked processes each add 1 to a shared counter 10,000 times under
//!   the lock, from the first fork to the last join: ours and `limit` (the semaphore).
//!
//! Its rows in the table of `cargo xtask bench`, in this order:
//!
//! | id | row |
//! |---|---|
//! | `lock.uncontended` | process lock, uncontended acquire+release |
//! | `lock.4x10000` | 4 processes x 10,000 locked increments |
//!
//! Prints `bench<TAB>ID<TAB>WHO<TAB>VALUE<TAB>UNIT` lines, medians over repeats; `BENCH_QUICK=1`
//! for fewer repeats. Run with: `cargo run --release -p demo-lock --example bench_lock`

use std::fs::File;
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use demo_lock::{Lock, Process, ProcessMutex};

fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let (repeats, iters) = if quick { (3, 200_000) } else { (9, 2_000_000) };

    let lock = Lock::new(()).unwrap();
    let ours = per_op(repeats, iters, || drop(black_box(lock.acquire().unwrap())));
    report("lock.uncontended", "ours", ours);

    let sem = Semaphore::new();
    report(
        "lock.uncontended",
        "limit",
        per_op(repeats, iters, || sem.with(|| ())),
    );

    let raw = RawRobust::new();
    report(
        "lock.uncontended",
        "pthread-robust",
        per_op(repeats, iters, || raw.lock_unlock()),
    );

    let futex = Futex::default();
    report(
        "lock.uncontended",
        "futex",
        per_op(repeats, iters, || futex.with(|| ())),
    );

    let mutex = Mutex::new(());
    let std_mutex = per_op(repeats, iters, || drop(black_box(mutex.lock().unwrap())));
    report("lock.uncontended", "std-mutex", std_mutex);

    let path = std::env::temp_dir().join(format!("demo-lock-bench-{}", std::process::id()));
    let file = File::create(&path).unwrap();
    let flock = |op| {
        // SAFETY: flock on an open file descriptor that `file` owns.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), op) }, 0);
    };
    let flocked = per_op(repeats, iters / 10, || {
        flock(libc::LOCK_EX);
        flock(libc::LOCK_UN);
    });
    report("lock.uncontended", "flock", flocked);
    std::fs::remove_file(path).unwrap();

    let repeats = if quick { 3 } else { 11 };
    let counter = ProcessMutex::new(0u64).unwrap();
    let ours = median(repeats, || {
        *counter.acquire().unwrap() = 0;
        let took = four_processes(&counter, |c| *c.acquire().unwrap() += 1);
        assert_eq!(*counter.acquire().unwrap(), 40_000);
        took
    });
    report_ms("lock.4x10000", "ours", ours);

    let sem = Semaphore::new();
    let limit = median(repeats, || {
        sem.with(|| sem.set_count(0));
        let took = four_processes(&sem, |s| s.with(|| s.set_count(s.count() + 1)));
        assert_eq!(sem.with(|| sem.count()), 40_000);
        took
    });
    report_ms("lock.4x10000", "limit", limit);
}

/// Forks 4 processes that each call `increment(shared)` 10,000 times; milliseconds from the
/// first fork to the last join.
fn four_processes<S: Clone + 'static>(shared: &S, increment: fn(&S)) -> f64 {
    let start = Instant::now();
    let mut children: Vec<Process> = (0..4)
        .map(|_| {
            Process::new(
                move |s: S| (0..10_000).for_each(|_| increment(&s)),
                shared.clone(),
            )
        })
        .collect();
    children.iter_mut().for_each(|p| p.start().unwrap());
    children
        .iter_mut()
        .for_each(|p| assert_eq!(p.join().unwrap(), 0));
    start.elapsed().as_secs_f64() * 1e3
}

/// The median over `repeats` of the nanoseconds per call of `op`, run `iters` times.
fn per_op(repeats: usize, iters: u32, mut op: impl FnMut()) -> f64 {
    median(repeats, || {
        let start = Instant::now();
        for _ in 0..iters {
            op();
        }
        start.elapsed().as_secs_f64() * 1e9 / f64::from(iters)
    })
}

fn median(repeats: usize, measure: impl FnMut() -> f64) -> f64 {
    let mut values: Vec<f64> = std::iter::repeat_with(measure).take(repeats).collect();
    values.sort_by(f64::total_cmp);
    values[repeats / 2]
}

fn report(id: &str, who: &str, nanos: f64) {
    println!("bench\t{id}\t{who}\t{nanos:.1}\tns");
}

fn report_ms(id: &str, who: &str, millis: f64) {
    println!("bench\t{id}\t{who}\t{millis:.2}\tms");
}

/// A process-shared POSIX semaphore with a counter beside it, in a shared mapping: the bare
/// mechanism under Python's `multiprocessing.Lock`. Clones share it (it is never unmapped).
#[derive(Clone)]
struct Semaphore {
    shared: *mut (libc::sem_t, u64),
}

impl Semaphore {
    fn new() -> Semaphore {
        let len = size_of::<(libc::sem_t, u64)>();
        let (prot, flags) = (
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
        );
        // SAFETY: a new anonymous shared mapping, which nothing else uses.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        assert_ne!(ptr, libc::MAP_FAILED);
        let shared = ptr.cast::<(libc::sem_t, u64)>();
        // SAFETY: the mapping is page-aligned and long enough; pshared = 1 for processes.
        assert_eq!(unsafe { libc::sem_init(&raw mut (*shared).0, 1, 1) }, 0);
        Semaphore { shared }
    }

    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: the semaphore was initialised in `new` and stays mapped.
        while unsafe { libc::sem_wait(&raw mut (*self.shared).0) } != 0 {}
        let r = f();
        // SAFETY: as above.
        unsafe { libc::sem_post(&raw mut (*self.shared).0) };
        r
    }

    /// Only under `with`, which keeps other processes out.
    fn count(&self) -> u64 {
        // SAFETY: the caller holds the semaphore, so no one writes the counter now.
        unsafe { (*self.shared).1 }
    }

    fn set_count(&self, value: u64) {
        // SAFETY: as in `count`.
        unsafe { (*self.shared).1 = value }
    }
}

/// A robust process-shared pthread mutex called directly, without our safe API around it:
/// the floor for ours. (Heap memory is enough to time it; it is never shared.)
struct RawRobust(Box<libc::pthread_mutex_t>);

impl RawRobust {
    fn new() -> RawRobust {
        let mut mutex = Box::new(libc::PTHREAD_MUTEX_INITIALIZER);
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: the attribute object is initialised before use; the mutex lives in a Box
        // that does not move and is initialised once.
        unsafe {
            assert_eq!(libc::pthread_mutexattr_init(attr.as_mut_ptr()), 0);
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
            assert_eq!(libc::pthread_mutex_init(&mut *mutex, attr.as_ptr()), 0);
        }
        RawRobust(mutex)
    }

    fn lock_unlock(&self) {
        let mutex = (&raw const *self.0).cast_mut();
        // SAFETY: an initialised mutex, locked and unlocked by this thread.
        unsafe {
            assert_eq!(libc::pthread_mutex_lock(mutex), 0);
            libc::pthread_mutex_unlock(mutex);
        }
    }
}

/// The classic three-state futex lock (Drepper, "Futexes Are Tricky"): 0 free, 1 locked,
/// 2 locked with waiters. Uncontended, it is one compare-exchange and one swap.
#[derive(Default)]
struct Futex {
    state: AtomicU32,
}

impl Futex {
    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        if self
            .state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.state.swap(2, Ordering::Acquire) != 0 {
                self.futex(libc::FUTEX_WAIT, 2);
            }
        }
        let r = f();
        if self.state.swap(0, Ordering::Release) == 2 {
            self.futex(libc::FUTEX_WAKE, 1);
        }
        r
    }

    fn futex(&self, op: i32, value: u32) {
        // SAFETY: FUTEX_WAIT and FUTEX_WAKE on an aligned u32 that lives as long as `self`.
        unsafe { libc::syscall(libc::SYS_futex, self.state.as_ptr(), op, value, 0) };
    }
}
