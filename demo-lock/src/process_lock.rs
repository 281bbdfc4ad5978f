//! A lock shared by processes, Python's `multiprocessing.Lock`, that can also own the data it
//! guards as `std::sync::Mutex<T>` does: a robust, process-shared pthread mutex in a shared
//! mapping of a memfd (`shm.rs`). `Shared<T>` puts a value in shared memory without a lock.
//!
//! A clone is another handle to the same memory, to give to a child (Python passes the lock
//! in `args`). A forked child inherits the mapping; a spawned or forkserver child is sent the
//! memfd inside its arguments (`SCM_RIGHTS`, the handles are serde values for `fds::encode`)
//! and maps it: either way parent and children see the same memory.
//!
//! What differs from Python:
//! - `acquire` returns a guard and the lock is released when the guard is dropped: Python's
//!   `release()`, or the end of a `with` block. A panic drops the guard too, as an exception
//!   leaves `with`.
//! - It is robust. Python's Lock is a semaphore that stays taken for ever when its holder dies
//!   (python/cpython gh-88304). Here the next acquirer gets the lock inside an
//!   `Err(OwnerDied)`, so it cannot miss that the data may be half updated and must be repaired.
//! - No wait hangs after a kill: a waiter sleeps at most one period (20 ms) at a time and
//!   looks again, so a wake-up lost with a killed waiter costs one period (see `robust.rs`).

use std::cell::UnsafeCell;
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic;
use std::time::{Duration, Instant};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::robust::{Locked, RobustGuard, RobustMutex, WouldBlock};
use crate::shm::SharedMemory;

/// A type whose values may live in memory shared by processes.
///
/// # Safety
///
/// The type holds no pointer or reference (an address made in one process means nothing in
/// another), needs no drop, any interior mutability it has works across processes (atomics
/// do; `std::sync::Mutex`, whose futex is private to one process, does not), and any bytes
/// are a value of it (so not `bool` or `char`): a process that is sent the memory of a
/// `Shared` or a `ProcessMutex` finds there whatever the others wrote.
pub unsafe trait Plain: Send + 'static {}

macro_rules! plain {
    ($($t:ty),*) => { $(
        // SAFETY: numbers, and atomics built on them: no pointers, no drop, and atomic
        // instructions work on shared memory between processes as between threads.
        unsafe impl Plain for $t {}
    )* };
}
plain! {
    (), u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64,
    atomic::AtomicBool, atomic::AtomicU8, atomic::AtomicU16, atomic::AtomicU32,
    atomic::AtomicU64, atomic::AtomicUsize, atomic::AtomicI8, atomic::AtomicI16,
    atomic::AtomicI32, atomic::AtomicI64, atomic::AtomicIsize
}
// SAFETY: an array of plain values is plain values side by side.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}
// SAFETY: a tuple of plain values is plain values side by side.
unsafe impl<A: Plain, B: Plain> Plain for (A, B) {}
// SAFETY: as for pairs.
unsafe impl<A: Plain, B: Plain, C: Plain> Plain for (A, B, C) {}

/// A `T` in a shared mapping of a memfd: the memory that fork, and a spawned child that is
/// sent the memfd, see as *one* copy. The `T` is never dropped (and a mutex never destroyed):
/// another process may still be using it.
struct Mapping<T> {
    ptr: NonNull<T>,
    memory: SharedMemory,
}

// SAFETY: a mapping only hands out `&T` and never drops the `T`, so sending or sharing it
// between threads is sound when `&T` may be shared, that is when `T: Sync`.
unsafe impl<T: Sync> Send for Mapping<T> {}
// SAFETY: as for Send.
unsafe impl<T: Sync> Sync for Mapping<T> {}

/// What a mapping holds: a tag that names the value's type, then the value. A memfd taken over
/// as another type than the one it was made for (a `Shared<AtomicU64>`'s as a `Shared<u64>`, or
/// as a `ProcessMutex`) is refused: a `&u64` must not see memory that an atomic changes.
#[repr(C)]
struct Tagged<T> {
    tag: atomic::AtomicU64,
    value: T,
}

/// A number for the type `T` in this executable: a hash of its `TypeId`, which is the same in
/// every process that runs this very file (a spawned child's executable is checked to be it).
fn tag_of<T: 'static>() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    std::any::TypeId::of::<T>().hash(&mut hasher);
    hasher.finish()
}

/// Where a mapping's value lies, after its tag.
fn value_in<T>(memory: &SharedMemory) -> NonNull<T> {
    let offset = std::mem::offset_of!(Tagged<T>, value);
    let at = memory
        .ptr()
        .map_addr(|a| a.checked_add(offset).expect("inside the mapping"));
    at.cast::<T>()
}

impl<T: 'static> Mapping<T> {
    /// `value` in a new mapping; `pinned` says when the first page must stay mapped.
    fn new(value: T, pinned: fn(&SharedMemory) -> bool) -> io::Result<Mapping<T>> {
        assert!(
            align_of::<Tagged<T>>() <= 4096,
            "a mapping is only page-aligned"
        );
        let memory = SharedMemory::new(c"demo-lock", size_of::<Tagged<T>>(), pinned)?;
        let tag = atomic::AtomicU64::new(tag_of::<T>());
        // SAFETY: the mapping is page-aligned, at least `size_of::<Tagged<T>>()` bytes long,
        // and no one else can see it yet.
        unsafe {
            memory
                .ptr()
                .cast::<Tagged<T>>()
                .as_ptr()
                .write(Tagged { tag, value })
        };
        Ok(Mapping {
            ptr: value_in(&memory),
            memory,
        })
    }

    /// The `T` in a memfd that another process's `new` made, and sent here: the memfd is
    /// checked to be sealed at the size of a tagged `T`, and its tag to name `T`.
    ///
    /// # Safety
    ///
    /// Any bytes must be a valid `T` (as `Plain` promises for the data; a robust mutex is
    /// only used through pthread, which checks what it finds).
    unsafe fn adopt(memfd: OwnedFd, pinned: fn(&SharedMemory) -> bool) -> io::Result<Self> {
        assert!(
            align_of::<Tagged<T>>() <= 4096,
            "a mapping is only page-aligned"
        );
        let memory = SharedMemory::adopt(memfd, size_of::<Tagged<T>>(), pinned)?;
        // SAFETY: the tag is the first 8 bytes of a page-aligned mapping at least that long,
        // an atomic valid whatever its bytes, mapped as long as `memory`.
        let tag = unsafe { memory.ptr().cast::<atomic::AtomicU64>().as_ref() };
        if tag.load(atomic::Ordering::SeqCst) != tag_of::<T>() {
            let why = "the shared memory sent holds another type than the one received";
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        Ok(Mapping {
            ptr: value_in(&memory),
            memory,
        })
    }
}

impl<T> Deref for Mapping<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the `T` was written in `new` (or, adopted, is valid whatever its bytes) and
        // stays mapped as long as `self.memory`.
        unsafe { self.ptr.as_ref() }
    }
}

/// A value in memory shared by processes, for atomics: `Shared::new(AtomicU64::new(0))`.
/// Python's `multiprocessing.Value(..., lock=False)`.
///
/// # Example
///
/// A counter that a child adds to and its parent reads: the child's write lands in the one
/// copy both processes map.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use demo_lock::{Process, Shared};
///
/// # fn main() -> std::io::Result<()> {
/// let counter = Shared::new(AtomicU64::new(0))?;
/// let mut p = Process::new(
///     |c: Shared<AtomicU64>| {
///         c.fetch_add(5, Ordering::Relaxed);
///     },
///     counter.clone(),
/// );
/// p.start()?;
/// p.join()?;
/// assert_eq!(counter.load(Ordering::Relaxed), 5);
/// # Ok(())
/// # }
/// ```
pub struct Shared<T: Plain + Sync>(Arc<Mapping<T>>);

impl<T: Plain + Sync> Shared<T> {
    /// `value` in a new shared mapping; a clone is another handle to the same memory.
    pub fn new(value: T) -> io::Result<Shared<T>> {
        Ok(Shared(Arc::new(Mapping::new(value, |_| false)?)))
    }
}

/// Crosses to a spawned or forkserver child as its memfd (only inside `fds::encode`).
impl<T: Plain + Sync> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Memfd(self.0.memory.fd()).serialize(serializer)
    }
}

impl<'de, T: Plain + Sync> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let memfd = MemfdIn::deserialize(deserializer)?.0;
        // SAFETY: any bytes are a `T` (`Plain`).
        let mapping = unsafe { Mapping::adopt(memfd, |_| false) };
        Ok(Shared(Arc::new(mapping.map_err(D::Error::custom)?)))
    }
}

#[derive(Serialize)]
struct Memfd<'a>(#[serde(with = "crate::fds")] BorrowedFd<'a>);

#[derive(Deserialize)]
struct MemfdIn(#[serde(with = "crate::fds")] OwnedFd);

impl<T: Plain + Sync> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T: Plain + Sync> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Python's `multiprocessing.Lock()`: a process mutex that guards nothing but itself.
///
/// # Example
///
/// The note's `l = mp.Lock(); l.acquire(); l.release()`, and a child that finds it taken:
///
/// ```
/// use demo_lock::{Lock, Process, exit_now};
///
/// # fn main() -> std::io::Result<()> {
/// let l = Lock::new(())?;
/// let guard = l.acquire().unwrap(); // Err would say a holder died: none has.
/// let mut p = Process::new(
///     |l: Lock| exit_now(if l.try_acquire().is_err() { 0 } else { 1 }),
///     l.clone(),
/// );
/// p.start()?;
/// assert_eq!(p.join()?, 0, "the child found the lock taken");
/// drop(guard); // l.release()
/// assert!(l.try_acquire().is_ok());
/// # Ok(())
/// # }
/// ```
pub type Lock = ProcessMutex<()>;

/// A mutex shared by processes that owns the `T` it guards, as `std::sync::Mutex<T>` does.
///
/// # Example
///
/// Four processes add to a counter under the lock; then a holder is killed in the middle of
/// an update, and the next acquirer is told (`Err(OwnerDied)`) and repairs the data.
///
/// ```
/// use demo_lock::{Process, ProcessMutex};
///
/// # fn main() -> std::io::Result<()> {
/// let counter = ProcessMutex::new(0u64)?;
/// let mut workers: Vec<Process> = (0..4)
///     .map(|_| {
///         Process::new(
///             |c: ProcessMutex<u64>| (0..1000).for_each(|_| *c.acquire().unwrap() += 1),
///             counter.clone(),
///         )
///     })
///     .collect();
/// workers.iter_mut().try_for_each(Process::start)?;
/// for p in &mut workers {
///     assert_eq!(p.join()?, 0);
/// }
/// assert_eq!(*counter.acquire().unwrap(), 4000);
///
/// let (mut held, tell) = std::os::unix::net::UnixStream::pair()?;
/// let mut holder = Process::new(
///     |(c, mut tell): (ProcessMutex<u64>, std::os::unix::net::UnixStream)| {
///         let mut guard = c.acquire().unwrap();
///         *guard += 1; // Half an update.
///         std::io::Write::write_all(&mut tell, b"!").unwrap();
///         loop {
///             std::thread::park(); // Until SIGKILL.
///         }
///     },
///     (counter.clone(), tell),
/// );
/// holder.start()?;
/// std::io::Read::read_exact(&mut held, &mut [0])?;
/// holder.kill()?;
/// assert_eq!(holder.join()?, -9);
/// // Holds the lock, and says its owner died.
/// let Err(died) = counter.acquire() else {
///     panic!("the next acquirer is told")
/// };
/// let mut guard = died.into_guard();
/// assert_eq!(*guard, 4001);
/// *guard = 4000; // The repair.
/// # Ok(())
/// # }
/// ```
pub struct ProcessMutex<T: Plain> {
    /// Where the mapping is, kept beside it so that locking follows one pointer, not two.
    inner: NonNull<Inner<T>>,
    mapping: Arc<Mapping<Inner<T>>>,
}

#[repr(C)]
struct Inner<T> {
    /// First, so that it lies in the mapping's first page, the one kept if it must be.
    mutex: RobustMutex,
    data: UnsafeCell<T>,
}

impl<T> Inner<T> {
    /// Whether the first page must stay mapped when this process lets go of the mapping.
    fn pinned(memory: &SharedMemory) -> bool {
        // SAFETY: the mapping holds a tagged `Inner<T>` and is still mapped; only the mutex is
        // read.
        let inner = unsafe { value_in::<Inner<T>>(memory).as_ref() };
        !inner.mutex.may_unmap()
    }
}

/// Crosses to a spawned or forkserver child as its memfd (only inside `fds::encode`): the
/// child maps the same mutex and data. A holder that dies there is an owner that died, as
/// under fork.
impl<T: Plain> Serialize for ProcessMutex<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Memfd(self.mapping.memory.fd()).serialize(serializer)
    }
}

impl<'de, T: Plain> Deserialize<'de> for ProcessMutex<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let memfd = MemfdIn::deserialize(deserializer)?.0;
        RobustMutex::check_owner_word().map_err(D::Error::custom)?;
        // SAFETY: any bytes are a `T` (`Plain`), and the mutex is only used through pthread.
        let mapping = unsafe { Mapping::<Inner<T>>::adopt(memfd, Inner::<T>::pinned) };
        let mapping = mapping.map_err(D::Error::custom)?;
        Ok(ProcessMutex {
            inner: mapping.ptr,
            mapping: Arc::new(mapping),
        })
    }
}

// SAFETY: the data is only reached through a guard, which holds the mutex; like
// `std::sync::Mutex<T>`, sharing it only needs `T: Send`.
unsafe impl<T: Send> Sync for Inner<T> {}

// SAFETY: `inner` points into `mapping`, which is Send and Sync when `Inner<T>` is Sync, that
// is when `T: Send`; the pointer adds nothing that a reference to the mapping would not.
unsafe impl<T: Plain> Send for ProcessMutex<T> {}
// SAFETY: as for Send.
unsafe impl<T: Plain> Sync for ProcessMutex<T> {}

impl<T: Plain> Clone for ProcessMutex<T> {
    fn clone(&self) -> Self {
        ProcessMutex {
            inner: self.inner,
            mapping: self.mapping.clone(),
        }
    }
}

impl<T: Plain> ProcessMutex<T> {
    /// A robust process-shared mutex around `value`, in a new shared mapping.
    pub fn new(value: T) -> io::Result<ProcessMutex<T>> {
        let inner = Inner {
            mutex: RobustMutex::unset(),
            data: UnsafeCell::new(value),
        };
        // Dropping the last handle of this process while one of its threads holds the
        // mutex (a guard was forgotten) must not unmap it: that thread's robust list
        // points into it.
        let mapping = Mapping::new(inner, Inner::<T>::pinned)?;
        // SAFETY: the mapping was just made, so no other thread or process can reach the
        // mutex yet, and it is unmapped only when `may_unmap` allows (see `Mapping::drop`).
        unsafe { mapping.mutex.init() }?;
        Ok(ProcessMutex {
            inner: mapping.ptr,
            mapping: Arc::new(mapping),
        })
    }

    /// Python's `acquire()`: waits for the lock. `Err(OwnerDied)` still holds the lock: its
    /// previous owner died holding it, so repair the data, then use `into_guard`. A thread
    /// that acquires a lock it holds already panics, where Python's Lock and a bare pthread
    /// mutex would wait for themselves for ever.
    pub fn acquire(&self) -> Result<Guard<'_, T>, OwnerDied<Guard<'_, T>>> {
        match self.inner().mutex.lock() {
            Locked::Clean(lock) => Ok(Guard::new(self, lock)),
            Locked::OwnerDied(lock) => Err(OwnerDied {
                guard: Guard::new(self, lock),
            }),
        }
    }

    /// Python's `acquire(False)`: takes the lock only if it is free now.
    pub fn try_acquire(&self) -> Result<Guard<'_, T>, TryAcquireError<Guard<'_, T>>> {
        self.guard(self.inner().mutex.try_lock())
    }

    /// Python's `acquire(timeout=…)`: waits at most `timeout`, then gives up with
    /// `WouldBlock`, which it says only if the lock was still held at the end. A thread that
    /// holds the lock already gets `WouldBlock` at once.
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Guard<'_, T>, TryAcquireError<Guard<'_, T>>> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.guard(self.inner().mutex.lock_until(deadline)),
            // Further than the clock reaches: no deadline at all.
            None => self.acquire().map_err(TryAcquireError::OwnerDied),
        }
    }

    /// The mutex's futex word as the kernel sees it, for diagnosing a stuck lock: the owner's
    /// thread id in the low 30 bits (0: free), bit 30 set when the owner died, bit 31 when
    /// waiters may sleep.
    pub fn lock_word(&self) -> u32 {
        self.inner().mutex.word()
    }

    fn inner(&self) -> &Inner<T> {
        // SAFETY: `inner` points into the mapping, which `self.mapping` keeps mapped.
        unsafe { self.inner.as_ref() }
    }

    fn guard<'a>(
        &'a self,
        locked: Result<Locked<'a>, WouldBlock>,
    ) -> Result<Guard<'a, T>, TryAcquireError<Guard<'a, T>>> {
        match locked {
            Ok(Locked::Clean(lock)) => Ok(Guard::new(self, lock)),
            Ok(Locked::OwnerDied(lock)) => Err(TryAcquireError::OwnerDied(OwnerDied {
                guard: Guard::new(self, lock),
            })),
            Err(WouldBlock) => Err(TryAcquireError::WouldBlock),
        }
    }
}

/// Holds a `ProcessMutex` and gives access to its data; unlocks it when dropped.
///
/// Not `Send`: a pthread mutex must be unlocked by the thread that locked it.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct Guard<'a, T: Plain> {
    mutex: &'a ProcessMutex<T>,
    _lock: RobustGuard<'a>,
}

impl<'a, T: Plain> Guard<'a, T> {
    fn new(mutex: &'a ProcessMutex<T>, lock: RobustGuard<'a>) -> Guard<'a, T> {
        Guard { mutex, _lock: lock }
    }
}

// SAFETY: a `&Guard` only gives `&T`, which may be shared between threads when `T: Sync`.
unsafe impl<T: Plain + Sync> Sync for Guard<'_, T> {}

impl<T: Plain> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the mutex, so no one else touches the data now.
        unsafe { &*self.mutex.inner().data.get() }
    }
}

impl<T: Plain> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only borrow through the guard.
        unsafe { &mut *self.mutex.inner().data.get() }
    }
}

/// The lock was acquired, but its previous owner died holding it: the data may be half
/// updated. Repair it through `into_guard`. Only the first acquirer after a death is told.
pub struct OwnerDied<G> {
    guard: G,
}

impl<G> OwnerDied<G> {
    /// The guard of the lock, which this process now holds.
    pub fn into_guard(self) -> G {
        self.guard
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnerDied { .. }")
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the previous owner of the lock died holding it")
    }
}

impl<G> std::error::Error for OwnerDied<G> {}

/// Why `try_acquire` or `acquire_timeout` returned without a clean guard.
pub enum TryAcquireError<G> {
    /// Another thread or process holds the lock (still, after the timeout).
    WouldBlock,
    /// The lock was acquired, but its previous owner died holding it.
    OwnerDied(OwnerDied<G>),
}

impl<G> fmt::Debug for TryAcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryAcquireError::WouldBlock => f.write_str("WouldBlock"),
            TryAcquireError::OwnerDied(died) => write!(f, "{died:?}"),
        }
    }
}

impl<G> fmt::Display for TryAcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryAcquireError::WouldBlock => f.write_str("the lock is held by someone else"),
            TryAcquireError::OwnerDied(died) => write!(f, "{died}"),
        }
    }
}

impl<G> std::error::Error for TryAcquireError<G> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Process;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::thread;

    // A forked child's output is lost inside the test harness: these tests check exit codes
    // and the shared data, never printed lines.

    /// Starts a child that takes `mutex`, stores `value` in it, says so through a socket and
    /// holds it until it is killed. Returns once the child holds it.
    fn holder(mutex: &ProcessMutex<u64>, value: u64) -> Process {
        let (mut here, mut there) = UnixStream::pair().unwrap();
        let mutex = mutex.clone();
        let mut p = Process::new(
            move |_: ()| {
                let mut guard = mutex.acquire().unwrap();
                *guard = value;
                there.write_all(b"!").unwrap();
                loop {
                    thread::park();
                }
            },
            (),
        );
        p.start().unwrap();
        // The parent's end of `there` went with the closure: if the child dies first, this
        // read ends with an error instead of waiting.
        here.read_exact(&mut [0])
            .expect("the holder says it holds the lock");
        p
    }

    /// Unwinds as a panic does, without the panic hook: the hook takes a lock that another
    /// test thread may have held when this process was forked, and would wait on it for ever.
    fn unwind_quietly() -> ! {
        std::panic::resume_unwind(Box::new("a holder panics"))
    }

    #[test]
    fn four_processes_count_exactly() {
        let counter = ProcessMutex::new(0u64).unwrap();
        let mut children: Vec<Process> = (0..4)
            .map(|_| {
                let counter = counter.clone();
                Process::new(
                    move |_: ()| (0..10_000).for_each(|_| *counter.acquire().unwrap() += 1),
                    (),
                )
            })
            .collect();
        children.iter_mut().for_each(|p| p.start().unwrap());
        for p in &mut children {
            assert_eq!(p.join().unwrap(), 0);
        }
        assert_eq!(*counter.acquire().unwrap(), 40_000);
    }

    #[test]
    fn try_acquire_and_acquire_timeout_fail_while_another_process_holds_it() {
        let mutex = ProcessMutex::new(0u64).unwrap();
        let mut p = holder(&mutex, 1);
        assert!(matches!(
            mutex.try_acquire(),
            Err(TryAcquireError::WouldBlock)
        ));
        let timed = mutex.acquire_timeout(Duration::from_millis(20));
        assert!(matches!(timed, Err(TryAcquireError::WouldBlock)));
        p.kill().unwrap();
        assert_eq!(p.join().unwrap(), -9);
    }

    #[test]
    fn the_next_acquirer_after_a_sigkill_is_told_and_can_repair() {
        let mutex = ProcessMutex::new(0u64).unwrap();
        let mut p = holder(&mutex, 99);
        p.kill().unwrap();
        assert_eq!(p.join().unwrap(), -9);
        let Err(died) = mutex.acquire() else {
            panic!("not told that the owner died")
        };
        let mut guard = died.into_guard();
        assert_eq!(*guard, 99, "the dead owner's write is visible");
        *guard = 0;
        drop(guard);
        // Told once: the mutex is consistent again and works as before.
        assert_eq!(*mutex.try_acquire().unwrap(), 0);
        assert_eq!(*mutex.acquire_timeout(Duration::from_secs(60)).unwrap(), 0);
    }

    #[test]
    fn a_waiting_acquire_timeout_is_told_too() {
        let mutex = ProcessMutex::new(0u64).unwrap();
        let mut p = holder(&mutex, 5);
        p.kill().unwrap();
        let Err(TryAcquireError::OwnerDied(died)) = mutex.acquire_timeout(Duration::from_secs(60))
        else {
            panic!("not told that the owner died")
        };
        assert_eq!(*died.into_guard(), 5);
        assert_eq!(p.join().unwrap(), -9);
    }

    #[test]
    fn a_panic_in_another_process_releases_the_lock() {
        let mutex = ProcessMutex::new(0u64).unwrap();
        let child = mutex.clone();
        let mut p = Process::new(
            move |_: ()| {
                let mut guard = child.acquire().unwrap();
                *guard = 7;
                unwind_quietly();
            },
            (),
        );
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 1);
        // Released by the unwinding, not found by the kernel after the child's death: had
        // the guard not been dropped, this would be `OwnerDied`.
        assert_eq!(*mutex.try_acquire().unwrap(), 7);
    }

    #[test]
    fn a_panic_in_a_thread_releases_the_lock() {
        let mutex = ProcessMutex::new(0u64).unwrap();
        let result = thread::scope(|s| {
            s.spawn(|| {
                let _guard = mutex.acquire().unwrap();
                unwind_quietly();
            })
            .join()
        });
        assert!(result.is_err());
        assert!(mutex.try_acquire().is_ok());
    }

    #[test]
    fn a_thread_that_ends_holding_the_lock_is_an_owner_that_died() {
        let mutex = ProcessMutex::new(0u64).unwrap();
        // An explicit join, which waits for the thread's real exit, when the kernel marks the
        // mutex; the end of a scope only waits for the closure to return.
        thread::scope(|s| {
            s.spawn(|| std::mem::forget(mutex.acquire().unwrap()))
                .join()
        })
        .unwrap();
        assert!(matches!(
            mutex.try_acquire(),
            Err(TryAcquireError::OwnerDied(_))
        ));
    }

    #[test]
    fn dropping_the_last_handle_of_a_forgotten_guard_corrupts_nothing() {
        let lock = ProcessMutex::new(5u64).unwrap();
        std::mem::forget(lock.acquire().unwrap());
        // This thread still holds the mutex, and its robust list points into the mapping:
        // dropping the last handle must leave that memory mapped.
        drop(lock);
        // Memory mapped afterwards keeps its values while this thread locks other mutexes,
        // which writes to its robust list.
        let values: [AtomicU64; 8] = std::array::from_fn(|i| AtomicU64::new(i as u64 + 1));
        let shared = Shared::new(values).unwrap();
        let counter = ProcessMutex::new(0u64).unwrap();
        for _ in 0..100 {
            *counter.acquire().unwrap() += 1;
        }
        drop(ProcessMutex::new(0u64).unwrap().acquire());
        let seen: Vec<u64> = shared.iter().map(|v| v.load(Ordering::Relaxed)).collect();
        assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(*counter.try_acquire().unwrap(), 100);
    }

    #[test]
    fn shared_memory_is_seen_by_parent_and_child() {
        let shared = Shared::new(AtomicU64::new(0)).unwrap();
        let child = shared.clone();
        let mut p = Process::new(move |_: ()| child.store(42, Ordering::Relaxed), ());
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 0);
        assert_eq!(shared.load(Ordering::Relaxed), 42);
    }

    #[test]
    fn a_lock_guards_zero_sized_data() {
        let lock = Lock::new(()).unwrap();
        let guard = lock.acquire().unwrap();
        assert!(matches!(
            lock.try_acquire(),
            Err(TryAcquireError::WouldBlock)
        ));
        drop(guard);
        assert!(lock.try_acquire().is_ok());
    }
}
