//! A robust, process-shared pthread mutex: the lock under demo-lock's `ProcessMutex` and
//! demo-queue's `Queue`, and the one place where either crate calls pthread.
//!
//! - **Process-shared**: it lives in a shared mapping, and every process that has the mapping
//!   may lock it.
//! - **Robust**: when the thread that holds it dies (its process killed), the kernel marks
//!   it, and the next locker is told (`Locked::OwnerDied`) instead of waiting for ever.
//! - **Error-checking**: a thread that locks it again while it holds it is told, instead of
//!   waiting for itself for ever (`lock` panics, `try_lock` and `lock_until` say it is busy).
//!   It costs nothing: glibc checks the owner only when the lock is taken.
//! - **Re-armed waits.** Robust futexes cover the death of a holder, not of a waiter that an
//!   unlock chose: glibc's unlock clears the lock's "waiters" bit and wakes one waiter. If that
//!   waiter is killed before it takes the lock, and another thread takes the free lock
//!   without waiting (so without setting the bit again) and releases it, nobody wakes the
//!   other waiters. (The kernel wakes one for a waiter that dies while the lock is free, not
//!   once another has taken it.) So no thread sleeps on the lock for longer than `period()`
//!   at a time: it wakes, tries again, and sleeps again. A lost wake-up costs at most one
//!   period, 20 ms unless changed; a wake-up that is not lost costs nothing more.
//!
//! The memory must stay mapped as long as a thread holds the mutex: glibc keeps each thread's
//! robust mutexes in a list that runs through them, and writes through it at the thread's
//! next lock or unlock, and so does the kernel when the thread ends. `may_unmap` says when
//! the memory can go.
//!
//! This file is the same in demo-lock and demo-queue, so that each crate can be copied out
//! alone; a test in the xtask checks that the copies stay identical.

#![allow(dead_code)] // Each crate uses its own part of this file.

use std::cell::UnsafeCell;
use std::io;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// The longest a thread sleeps on the lock before it looks again, unless `set_period`
/// changes it. Short enough that a lost wake-up is a pause rather than a hang, long enough
/// that a thread waiting for a lock held for seconds wakes only 50 times a second, a few
/// microseconds of CPU each.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(20);

/// How many times a thread that finds the lock held looks at it again before it sleeps: a
/// holder that runs lets go within a microsecond or so (a queue's ring, a shared counter),
/// and a sleep costs the waiter a system call, and its wake-up the holder another.
const SPINS: u32 = 100;

static PERIOD_NANOS: AtomicU64 = AtomicU64::new(DEFAULT_PERIOD.as_nanos() as u64);

/// The longest a wait sleeps before it looks again; `None` when waits are not re-armed.
pub fn period() -> Option<Duration> {
    match PERIOD_NANOS.load(Relaxed) {
        0 => None,
        nanos => Some(Duration::from_nanos(nanos)),
    }
}

/// Sets the period of this process, inherited by the processes it forks from now on.
/// `None` turns the re-armed waits off, which brings the lost wake-up back: only the
/// fault-injection suite does that, to show that it finds it.
pub fn set_period(period: Option<Duration>) {
    let nanos = period.map_or(0, |p| p.as_nanos().clamp(1, u64::MAX.into()) as u64);
    PERIOD_NANOS.store(nanos, Relaxed);
}

unsafe extern "C" {
    /// glibc 2.30 and later; the libc crate does not declare it yet.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// The low 30 bits of the futex word: the owner's thread id (the kernel's robust-futex ABI).
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// Whether the owner's thread id is where `word` reads it, as checked when a mutex is made:
/// until it has been seen to be, and for good once it has been seen not to be, no mapping
/// that holds a mutex is unmapped.
static OWNER_WORD: AtomicU8 = AtomicU8::new(UNCHECKED);
const UNCHECKED: u8 = 0;
const RELIABLE: u8 = 1;
const UNRELIABLE: u8 = 2;

/// A pthread mutex, robust, process-shared and error-checking, in memory that processes
/// share. It never moves: it is made in place in a mapping, by `unset` and then `init`.
#[repr(transparent)]
pub struct RobustMutex {
    raw: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: a pthread mutex is made to be used by many threads at once; every use goes
// through the pthread calls below.
unsafe impl Sync for RobustMutex {}
// SAFETY: as for Sync; it only ever stands in a shared mapping, never moved while in use.
unsafe impl Send for RobustMutex {}

/// The lock was taken: cleanly, or from an owner that died holding it (the data it guards
/// may be half updated). Either way the mutex is consistent again, so a death during the
/// repair is reported to the next locker in turn.
pub enum Locked<'a> {
    Clean(RobustGuard<'a>),
    OwnerDied(RobustGuard<'a>),
}

/// The lock was not taken: it stayed held (by another thread, or by this one) until the
/// deadline, or for `try_lock`, now.
#[derive(Debug)]
pub struct WouldBlock;

/// Holds the mutex; unlocks it when dropped. Not `Send`: a pthread mutex must be unlocked by
/// the thread that locked it.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RobustGuard<'a> {
    mutex: &'a RobustMutex,
    _not_send: PhantomData<*const ()>,
}

impl RobustMutex {
    /// The bytes of a default mutex, to be made robust by `init` where it stands.
    pub const fn unset() -> RobustMutex {
        RobustMutex {
            raw: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
        }
    }

    /// Makes the mutex robust, process-shared and error-checking, and checks once that the
    /// lock word holds the owner's thread id, as `may_unmap` expects.
    ///
    /// # Safety
    ///
    /// No other thread or process uses the mutex yet, and its memory stays mapped where it is
    /// as long as a thread may hold it: whoever unmaps it asks `may_unmap` first.
    pub unsafe fn init(&self) -> io::Result<()> {
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is initialised before it is used and destroyed after. The mutex is
        // initialised once, in place, before anyone else can reach it (the caller's promise).
        let rc = unsafe {
            let attr = attr.as_mut_ptr();
            let mut rc = libc::pthread_mutexattr_init(attr);
            if rc == 0 {
                rc = libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED);
                if rc == 0 {
                    rc = libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST);
                }
                if rc == 0 {
                    rc = libc::pthread_mutexattr_settype(attr, libc::PTHREAD_MUTEX_ERRORCHECK);
                }
                if rc == 0 {
                    rc = libc::pthread_mutex_init(self.raw.get(), attr);
                }
                libc::pthread_mutexattr_destroy(attr);
            }
            rc
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let reliable = match self.try_lock() {
            // SAFETY: gettid has no preconditions.
            Ok(_locked) => self.word() & FUTEX_TID_MASK == unsafe { libc::gettid() } as u32,
            Err(WouldBlock) => false,
        };
        if reliable {
            let _ = OWNER_WORD.compare_exchange(UNCHECKED, RELIABLE, SeqCst, SeqCst);
        } else {
            OWNER_WORD.store(UNRELIABLE, SeqCst);
        }
        Ok(())
    }

    /// For a process that maps a mutex another process made (and `init`ed): checks once, on
    /// a mutex of its own, that the lock word holds the owner's thread id, as `may_unmap`
    /// expects. Until it has, `may_unmap` answers no.
    pub fn check_owner_word() -> io::Result<()> {
        if OWNER_WORD.load(SeqCst) != UNCHECKED {
            return Ok(());
        }
        let probe = Box::new(RobustMutex::unset());
        // SAFETY: no one else can reach `probe`, and `init` has unlocked it when it returns,
        // so no robust list points into it when it is freed.
        unsafe { probe.init() }
    }

    /// Takes the lock if it is free now (or its owner died).
    #[inline]
    pub fn try_lock(&self) -> Result<Locked<'_>, WouldBlock> {
        // SAFETY: the mutex was set up by `init` and its memory stays mapped while `self`
        // can be reached.
        match unsafe { libc::pthread_mutex_trylock(self.raw.get()) } {
            0 => Ok(Locked::Clean(RobustGuard::new(self))),
            rc => self.not_locked(rc),
        }
    }

    /// Takes the lock, waiting as long as it takes. Panics if this thread holds it already.
    #[inline]
    pub fn lock(&self) -> Locked<'_> {
        // The same one call as `try_lock` when the lock is free.
        match self.try_lock().or_else(|_| self.spin()) {
            Ok(locked) => locked,
            Err(WouldBlock) => match self.wait(None) {
                Ok(locked) => locked,
                Err(WouldBlock) => panic!(
                    "this thread locks a mutex it already holds (is a guard forgotten?): \
                     it would wait for itself for ever"
                ),
            },
        }
    }

    /// Takes the lock, waiting until `deadline` at most. At the deadline it looks once more,
    /// so `WouldBlock` means that the lock was held then. A thread that holds the lock
    /// already gets `WouldBlock` at once: the lock is bound to stay held until the deadline.
    #[inline]
    pub fn lock_until(&self, deadline: Instant) -> Result<Locked<'_>, WouldBlock> {
        match self.try_lock().or_else(|_| self.spin()) {
            Ok(locked) => Ok(locked),
            Err(WouldBlock) => self.wait(Some(deadline)),
        }
    }

    /// The lock word as the kernel sees it: the owner's thread id in the low 30 bits (0:
    /// free), bit 30 set when the owner died, bit 31 when waiters may sleep.
    pub fn word(&self) -> u32 {
        // SAFETY: glibc keeps the futex word as the first int of the mutex (the word the
        // kernel's robust-futex ABI points at), aligned, and changes it only atomically.
        unsafe { AtomicU32::from_ptr(self.raw.get().cast()) }.load(SeqCst)
    }

    /// Whether the memory that holds the mutex may be unmapped by this process now: not
    /// while a thread of this process holds the mutex (a guard was forgotten), since that
    /// thread's robust list points into it. Threads of other processes do not matter: their
    /// lists point into their own mappings. Answers no if the lock word could not be checked.
    pub fn may_unmap(&self) -> bool {
        if OWNER_WORD.load(SeqCst) != RELIABLE {
            return false;
        }
        let owner = (self.word() & FUTEX_TID_MASK) as libc::pid_t;
        // SAFETY: tgkill with signal 0 sends nothing; it says whether the thread `owner`
        // exists in this process.
        owner == 0
            || (unsafe { libc::tgkill(libc::getpid(), owner, 0) } == -1
                && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH))
    }

    /// Looks at the lock word a few times (`SPINS`), and takes the lock as soon as it is seen
    /// free; `WouldBlock` if it never was.
    fn spin(&self) -> Result<Locked<'_>, WouldBlock> {
        for _ in 0..SPINS {
            std::hint::spin_loop();
            if self.word() & FUTEX_TID_MASK == 0 {
                if let Ok(locked) = self.try_lock() {
                    return Ok(locked);
                }
            }
        }
        Err(WouldBlock)
    }

    /// Sleeps on the lock at most one period at a time, trying again after each, until it is
    /// taken or `deadline` passes.
    #[cold]
    fn wait(&self, deadline: Option<Instant>) -> Result<Locked<'_>, WouldBlock> {
        loop {
            let left = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    // The last look: `WouldBlock` only if the lock is held now.
                    _ => return self.try_lock(),
                },
                None => None,
            };
            let sleep = match (left, period()) {
                (Some(left), Some(period)) => Some(left.min(period)),
                (left, period) => left.or(period),
            };
            let raw = self.raw.get();
            let rc = match sleep {
                // SAFETY: as in `try_lock`.
                None => unsafe { libc::pthread_mutex_lock(raw) },
                Some(sleep) => {
                    let until = monotonic_after(sleep);
                    // SAFETY: as in `try_lock`; `until` is a valid timespec on the clock named.
                    unsafe { pthread_mutex_clocklock(raw, libc::CLOCK_MONOTONIC, &until) }
                }
            };
            match rc {
                libc::ETIMEDOUT => continue,
                // This thread holds it: no wait will end that.
                libc::EDEADLK => return Err(WouldBlock),
                0 => return Ok(Locked::Clean(RobustGuard::new(self))),
                rc => return self.not_locked(rc),
            }
        }
    }

    #[cold]
    fn not_locked(&self, rc: i32) -> Result<Locked<'_>, WouldBlock> {
        match rc {
            libc::EOWNERDEAD => {
                // SAFETY: EOWNERDEAD means this thread now holds the mutex. Marking it
                // consistent lets it be locked again after this guard unlocks it; the caller
                // is told, to repair the data first.
                let rc = unsafe { libc::pthread_mutex_consistent(self.raw.get()) };
                assert_eq!(rc, 0, "pthread_mutex_consistent by the new owner");
                Ok(Locked::OwnerDied(RobustGuard::new(self)))
            }
            // Held by another thread, or (EDEADLK, error-checking) by this one.
            libc::EBUSY | libc::EDEADLK => Err(WouldBlock),
            // The others (EINVAL, ENOTRECOVERABLE, …) cannot happen with a mutex set up by
            // `init` and made consistent after every owner death: a bug.
            _ => panic!(
                "locking a robust mutex: {}",
                io::Error::from_raw_os_error(rc)
            ),
        }
    }
}

impl<'a> Locked<'a> {
    pub fn into_guard(self) -> RobustGuard<'a> {
        match self {
            Locked::Clean(guard) | Locked::OwnerDied(guard) => guard,
        }
    }
}

impl<'a> RobustGuard<'a> {
    /// Only once this thread holds `mutex`.
    fn new(mutex: &'a RobustMutex) -> RobustGuard<'a> {
        RobustGuard {
            mutex,
            _not_send: PhantomData,
        }
    }
}

impl Drop for RobustGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: this thread locked the mutex when it made the guard, has not unlocked it,
        // and the memory is still mapped (see `init`).
        let rc = unsafe { libc::pthread_mutex_unlock(self.mutex.raw.get()) };
        debug_assert_eq!(rc, 0, "pthread_mutex_unlock");
    }
}

/// The monotonic clock's time `d` from now, saturating far in the future.
pub fn monotonic_after(d: Duration) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec into the one it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let nanos = now.tv_nsec + d.subsec_nanos() as libc::c_long;
    let secs = libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX);
    libc::timespec {
        tv_sec: now
            .tv_sec
            .saturating_add(secs)
            .saturating_add(nanos / 1_000_000_000),
        tv_nsec: nanos % 1_000_000_000,
    }
}

/// The size of a memory page: a mapping that holds a mutex in its first page keeps that page
/// mapped for good when `may_unmap` says no, and lets the rest go.
pub fn page_size() -> usize {
    // SAFETY: sysconf only reads a value of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicI32;
    use std::sync::mpsc;
    use std::thread;

    const WAITERS: u32 = 1 << 31;
    /// Long enough to mean "for ever" here: a test that waits this long has failed.
    const FOR_EVER: Duration = Duration::from_secs(60);

    /// A mutex that lives as long as the test process: a test that fails with a guard held
    /// must not free memory that a robust list points into.
    fn mutex() -> &'static RobustMutex {
        let mutex: &'static RobustMutex = Box::leak(Box::new(RobustMutex::unset()));
        // SAFETY: no one else can reach the mutex yet, and its memory is never freed.
        unsafe { mutex.init() }.unwrap();
        mutex
    }

    /// Waits until the thread `tid` of this process sleeps in a futex, as the kernel reports.
    pub(crate) fn wait_until_asleep_in_futex(tid: &AtomicI32) {
        let end = Instant::now() + FOR_EVER;
        while Instant::now() < end {
            let tid = tid.load(SeqCst);
            let read = |what| std::fs::read_to_string(format!("/proc/self/task/{tid}/{what}"));
            let state = read("stat").unwrap_or_default();
            let state = state
                .rsplit_once(')')
                .map_or("", |(_, rest)| rest.trim_start());
            if tid != 0
                && state.starts_with('S')
                && read("wchan").unwrap_or_default().contains("futex")
            {
                return;
            }
            thread::yield_now();
        }
        panic!("thread {} never went to sleep", tid.load(SeqCst));
    }

    /// The current thread's id.
    pub(crate) fn gettid() -> i32 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() }
    }

    #[test]
    fn a_waiter_whose_wake_up_was_lost_still_gets_the_lock() {
        let mutex = mutex();
        let held = mutex.lock().into_guard();
        let tid: &'static AtomicI32 = Box::leak(Box::new(AtomicI32::new(0)));
        let (got_it, got) = mpsc::channel();
        // Not scoped: if the fix fails, this thread sleeps for ever, and the test must still
        // end (with a failure).
        thread::spawn(move || {
            tid.store(gettid(), SeqCst);
            let _locked = mutex.lock();
            got_it.send(()).unwrap();
        });
        wait_until_asleep_in_futex(tid);
        assert_ne!(
            mutex.word() & WAITERS,
            0,
            "a sleeping waiter marks the lock"
        );
        // Lose its wake-up, as when the unlock's chosen waiter is killed before it takes the
        // lock and a third thread takes it without waiting: nothing marks a waiter any more,
        // so the unlock wakes no one.
        // SAFETY: the futex word is an aligned int changed only atomically.
        unsafe { AtomicU32::from_ptr(mutex.raw.get().cast()) }.fetch_and(!WAITERS, SeqCst);
        drop(held);
        assert!(
            got.recv_timeout(FOR_EVER).is_ok(),
            "the waiter slept on a free lock"
        );
    }

    #[test]
    fn a_spin_takes_a_lock_it_sees_free_and_leaves_one_held_all_along() {
        let mutex = mutex();
        let (release, released) = mpsc::channel::<()>();
        let (held_tx, held) = mpsc::channel();
        let holder = thread::spawn(move || {
            let guard = mutex.lock();
            held_tx.send(()).unwrap();
            released.recv().unwrap();
            drop(guard);
        });
        held.recv().unwrap();
        assert!(matches!(mutex.spin(), Err(WouldBlock)));
        release.send(()).unwrap();
        holder.join().unwrap();
        assert!(matches!(mutex.spin(), Ok(Locked::Clean(_))));
        // A holder that ended with the lock leaves it free to the kernel's eye: the spin
        // takes it, and is told.
        thread::scope(|s| s.spawn(|| std::mem::forget(mutex.lock())).join()).unwrap();
        assert!(matches!(mutex.spin(), Ok(Locked::OwnerDied(_))));
    }

    #[test]
    fn a_thread_that_locks_twice_is_told() {
        let mutex = mutex();
        let held = mutex.lock();
        assert!(matches!(mutex.try_lock(), Err(WouldBlock)));
        let deadline = Instant::now() + FOR_EVER;
        assert!(matches!(mutex.lock_until(deadline), Err(WouldBlock)));
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(mutex.lock())));
        assert!(
            again.is_err(),
            "lock() panics instead of waiting for itself"
        );
        drop(held);
        assert!(matches!(mutex.try_lock(), Ok(Locked::Clean(_))));
    }

    #[test]
    fn the_memory_may_go_unless_a_thread_here_holds_the_mutex() {
        let mutex = mutex();
        assert!(mutex.may_unmap());
        let held = mutex.lock();
        assert!(!mutex.may_unmap());
        drop(held);
        assert!(mutex.may_unmap());
        // A thread that ended holding it is on no list any more; the kernel marked the
        // mutex, and the next locker is told.
        thread::scope(|s| s.spawn(|| std::mem::forget(mutex.lock())).join()).unwrap();
        assert!(mutex.may_unmap());
        assert!(matches!(mutex.lock(), Locked::OwnerDied(_)));
        assert!(matches!(mutex.lock(), Locked::Clean(_)));
    }
}
