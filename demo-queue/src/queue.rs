//! A queue between processes with Python's `multiprocessing.Queue` API: `put`, `get`,
//! `get_timeout` (→ `Empty`), and `Queue::bounded(maxsize)`, whose `put` waits while the
//! queue is full and whose `put_timeout` gives up with `Full`.
//!
//! Three kernel objects, inherited by `fork`, make one queue:
//! - a ring buffer in shared memory holds the serialized values, guarded by a robust
//!   process-shared mutex: a process killed while holding it does not block the others,
//!   the next one to lock it is told and goes on. A value is copied in before it is
//!   published and copied out before it is removed, so a kill at any point loses nothing
//!   that was put and duplicates nothing.
//! - two eventfds wake the waiters: `items` the readers of an empty queue, `space` the
//!   writers of a full one. A process writes one only when someone sleeps; a queue that
//!   keeps flowing makes no system call at all.
//! - a socketpair that carries nothing: writers hold one end, readers the other, so the
//!   kernel tells when the last writer or the last reader is gone, however it ended (the
//!   other end polls `POLLHUP`). A reader of a drained queue then gets `Disconnected`, and
//!   so does a writer waiting for room, instead of waiting for ever.
//!
//! Values are serialized with serde (JSON), as Python pickles them.
//!
//! A forked process holds every end its parent held at the fork. Hand them out with care:
//! give writers a `Writer` and readers a `Reader`, drop the `Queue` you no longer need,
//! and start the writers before the readers, so that no reader holds a write end (it would
//! wait for itself) and no writer a read end.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes in the ring. A value takes its serialized length plus 4; a bigger one is an error.
pub const RING_BYTES: usize = 1 << 20;
/// Where the ring starts in the shared mapping, after the header.
const DATA_OFFSET: usize = 4096;
/// How many times an empty `get` looks again before it sleeps: a writer on another core
/// usually puts the next value within microseconds, and a sleep costs more than that.
const SPINS: u32 = 100;

/// Why `put` failed.
#[derive(Debug)]
pub enum PutError {
    /// `put_timeout`: the queue stayed full until the timeout (Python's `queue.Full`).
    Full,
    /// Every reader is gone while the queue is full: nobody will ever make room.
    Disconnected,
    Io(io::Error),
}

/// Why `get` failed.
#[derive(Debug)]
pub enum GetError {
    /// `get_timeout`: nothing arrived before the timeout (Python's `queue.Empty`).
    Empty,
    /// The queue is drained and every writer is gone: nothing more can arrive.
    Disconnected,
    Io(io::Error),
}

/// The writing half: `put` and `put_timeout`. Clone it for more writers.
pub struct Writer<T> {
    shared: Arc<Shared>,
    /// Open while this handle lives: the readers' end reports `POLLHUP` once no writer
    /// anywhere holds it.
    end: Arc<OwnedFd>,
    _values: PhantomData<fn(T)>,
}

/// The reading half: `get` and `get_timeout`. Clone it for more readers.
pub struct Reader<T> {
    shared: Arc<Shared>,
    end: Arc<OwnedFd>,
    _values: PhantomData<fn() -> T>,
}

/// Both halves, like Python's `Queue`, which every process can both put to and get from.
pub struct Queue<T> {
    writer: Writer<T>,
    reader: Reader<T>,
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Python's `Queue()`: it holds as many values as fit in `RING_BYTES`.
    pub fn new() -> io::Result<Queue<T>> {
        Queue::with_maxsize(u64::MAX)
    }

    /// Python's `Queue(maxsize)`: at most `maxsize` values wait in the queue.
    pub fn bounded(maxsize: u64) -> io::Result<Queue<T>> {
        if maxsize == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "maxsize must be > 0",
            ));
        }
        Queue::with_maxsize(maxsize)
    }

    fn with_maxsize(maxsize: u64) -> io::Result<Queue<T>> {
        let shared = Arc::new(Shared::new(maxsize)?);
        let (w, r) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok(Queue {
            writer: Writer {
                shared: shared.clone(),
                end: Arc::new(w),
                _values: PhantomData,
            },
            reader: Reader {
                shared,
                end: Arc::new(r),
                _values: PhantomData,
            },
        })
    }

    /// A handle that can only put.
    pub fn writer(&self) -> Writer<T> {
        self.writer.clone()
    }

    /// A handle that can only get.
    pub fn reader(&self) -> Reader<T> {
        self.reader.clone()
    }

    pub fn put(&self, value: T) -> Result<(), PutError> {
        self.writer.put(value)
    }

    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError> {
        self.writer.put_timeout(value, timeout)
    }

    pub fn get(&self) -> Result<T, GetError> {
        self.reader.get()
    }

    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.reader.get_timeout(timeout)
    }
}

impl<T: Serialize> Writer<T> {
    /// Puts `value`, waiting while the queue is full.
    pub fn put(&self, value: T) -> Result<(), PutError> {
        self.put_until(&value, None)
    }

    /// Puts `value`, or gives up with `Full` after `timeout`.
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError> {
        self.put_until(&value, Some(Instant::now() + timeout))
    }

    fn put_until(&self, value: &T, deadline: Option<Instant>) -> Result<(), PutError> {
        SCRATCH.with_borrow_mut(|bytes| {
            bytes.clear();
            serde_json::to_writer(&mut *bytes, value).map_err(io::Error::from)?;
            if bytes.len() + 4 > RING_BYTES {
                let e = format!("a value of {} bytes does not fit in the queue", bytes.len());
                return Err(PutError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)));
            }
            let mut waiting = false;
            loop {
                let mut ring = self.shared.lock()?;
                if waiting {
                    ring.header().putters_waiting.fetch_sub(1, Relaxed);
                }
                if ring.push(bytes) {
                    let wake = ring.header().getters_waiting.load(Relaxed) > 0;
                    drop(ring);
                    if wake {
                        self.shared.items.write(1)?;
                    }
                    return Ok(());
                }
                ring.header().putters_waiting.fetch_add(1, Relaxed);
                waiting = true;
                drop(ring);
                // No event asked on our end: poll reports POLLHUP there anyway, once the
                // last reader is gone.
                let mut fds = [
                    PollFd::new(self.shared.space.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.end.as_fd(), PollFlags::empty()),
                ];
                let woken = wait(&mut fds, deadline)?;
                let hangup = fds[1].any() == Some(true);
                take_token(&self.shared.space)?;
                if !woken || hangup {
                    self.shared
                        .lock()?
                        .header()
                        .putters_waiting
                        .fetch_sub(1, Relaxed);
                    return Err(if hangup {
                        PutError::Disconnected
                    } else {
                        PutError::Full
                    });
                }
            }
        })
    }
}

impl<T: DeserializeOwned> Reader<T> {
    /// Gets the next value, waiting for one; `Disconnected` once none can come.
    pub fn get(&self) -> Result<T, GetError> {
        self.get_until(None)
    }

    /// Gets the next value, or gives up with `Empty` after `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_until(Some(Instant::now() + timeout))
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<T, GetError> {
        SCRATCH.with_borrow_mut(|bytes| {
            let mut waiting = false;
            let mut spins = 0;
            loop {
                let mut ring = self.shared.lock()?;
                if waiting {
                    ring.header().getters_waiting.fetch_sub(1, Relaxed);
                    waiting = false;
                }
                if ring.pop(bytes) {
                    let wake = ring.header().putters_waiting.load(Relaxed) > 0;
                    drop(ring);
                    if wake {
                        self.shared.space.write(1)?;
                    }
                    return Ok(serde_json::from_slice(bytes).map_err(io::Error::from)?);
                }
                if spins < SPINS {
                    drop(ring);
                    spins += 1;
                    while spins < SPINS && self.shared.header().count.load(Relaxed) == 0 {
                        std::hint::spin_loop();
                        spins += 1;
                    }
                    continue;
                }
                ring.header().getters_waiting.fetch_add(1, Relaxed);
                waiting = true;
                drop(ring);
                let mut fds = [
                    PollFd::new(self.shared.items.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.end.as_fd(), PollFlags::empty()),
                ];
                let woken = wait(&mut fds, deadline)?;
                let hangup = fds[1].any() == Some(true);
                take_token(&self.shared.items)?;
                if !woken || hangup {
                    // Values put before the last writer left are still there: take them.
                    let mut ring = self.shared.lock()?;
                    ring.header().getters_waiting.fetch_sub(1, Relaxed);
                    if ring.pop(bytes) {
                        drop(ring);
                        return Ok(serde_json::from_slice(bytes).map_err(io::Error::from)?);
                    }
                    return Err(if hangup {
                        GetError::Disconnected
                    } else {
                        GetError::Empty
                    });
                }
            }
        })
    }
}

impl<T> Writer<T> {
    /// What the queue's shared header holds now (see `Snapshot`).
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }
}

impl<T> Reader<T> {
    /// What the queue's shared header holds now (see `Snapshot`).
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }
}

/// The queue's shared header, read field by field without the lock: to see why a queue is
/// stuck, or to check from outside what a timed call had in front of it. `head` and `tail`
/// only grow: they count the bytes ever taken and put.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub head: u64,
    pub tail: u64,
    pub count: u64,
    pub maxsize: u64,
    pub lock_word: u32,
    pub getters_waiting: u32,
    pub putters_waiting: u32,
}

thread_local! {
    /// One value's bytes on their way in or out; one per thread, so that neither `put`
    /// nor `get` allocates once it has warmed up.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What every process sees at the start of the shared mapping.
#[repr(C)]
struct Header {
    mutex: libc::pthread_mutex_t,
    /// The fields below change only under the mutex; they are atomics so that a waiting
    /// reader may peek at `count` without it.
    head: AtomicU64,
    tail: AtomicU64,
    count: AtomicU64,
    maxsize: AtomicU64,
    getters_waiting: AtomicU32,
    putters_waiting: AtomicU32,
}

/// The mapping and the two eventfds, shared by every handle of a queue in this process.
struct Shared {
    map: NonNull<u8>,
    items: EventFd,
    space: EventFd,
}

// SAFETY: the mapping is only touched under its process-shared mutex (or, for `count`,
// through an atomic), so handles may move to and be used from any thread.
unsafe impl Send for Shared {}
// SAFETY: as for Send.
unsafe impl Sync for Shared {}

const MAP_BYTES: usize = DATA_OFFSET + RING_BYTES;
const _: () = assert!(size_of::<Header>() <= DATA_OFFSET);

impl Shared {
    fn new(maxsize: u64) -> io::Result<Shared> {
        // SAFETY: an anonymous shared mapping of fresh zeroed pages; no Rust object lives
        // there yet. MAP_SHARED keeps it shared with every process forked from now on.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let flags = EfdFlags::EFD_SEMAPHORE | EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC;
        let shared = Shared {
            map: NonNull::new(map.cast()).expect("mmap does not return null on success"),
            items: EventFd::from_flags(flags)?,
            space: EventFd::from_flags(flags)?,
        };
        shared.header().maxsize.store(maxsize, Relaxed);
        let mutex = shared.mutex();
        // SAFETY: `attr` is initialised before use and destroyed after; the mutex lies in
        // zeroed memory no other process can see yet, and is initialised exactly once.
        let status = unsafe {
            let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            let attr = attr.as_mut_ptr();
            let mut status = libc::pthread_mutexattr_init(attr);
            if status == 0 {
                status = libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED);
            }
            if status == 0 {
                status = libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST);
            }
            if status == 0 {
                status = libc::pthread_mutex_init(mutex, attr);
            }
            libc::pthread_mutexattr_destroy(attr);
            status
        };
        if status != 0 {
            return Err(io::Error::from_raw_os_error(status));
        }
        Ok(shared)
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is MAP_BYTES long, page-aligned, and starts with a Header
        // whose fields other than the mutex are atomics; it lives as long as `self`.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        // SAFETY: the mutex is the first field of the Header at the start of the mapping.
        unsafe { &raw mut (*self.map.as_ptr().cast::<Header>()).mutex }
    }

    fn snapshot(&self) -> Snapshot {
        let h = self.header();
        // SAFETY: glibc keeps the futex word as the first int of the mutex, aligned, and
        // changes it only atomically.
        let word = unsafe { &*self.mutex().cast::<AtomicU32>() };
        Snapshot {
            head: h.head.load(Relaxed),
            tail: h.tail.load(Relaxed),
            count: h.count.load(Relaxed),
            maxsize: h.maxsize.load(Relaxed),
            lock_word: word.load(Relaxed),
            getters_waiting: h.getters_waiting.load(Relaxed),
            putters_waiting: h.putters_waiting.load(Relaxed),
        }
    }

    fn lock(&self) -> io::Result<Ring<'_>> {
        // SAFETY: the mutex was initialised in `new`, before any handle existed.
        match unsafe { libc::pthread_mutex_lock(self.mutex()) } {
            0 => Ok(Ring { shared: self }),
            libc::EOWNERDEAD => {
                // A process died holding the lock. Every change is published last, with
                // one store each to `tail`/`head` and then `count`: recount to be sure.
                let ring = Ring { shared: self };
                ring.recount();
                // SAFETY: we hold the mutex, which the kernel handed over as inconsistent.
                unsafe { libc::pthread_mutex_consistent(self.mutex()) };
                Ok(ring)
            }
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the last handle of this process is gone, so nothing here uses the
        // mapping any more; other processes keep their own mappings.
        unsafe { libc::munmap(self.map.as_ptr().cast(), MAP_BYTES) };
    }
}

/// The ring, locked. Each value is a 4-byte length and its bytes, wrapping at the end.
struct Ring<'a> {
    shared: &'a Shared,
}

impl Ring<'_> {
    fn header(&self) -> &Header {
        self.shared.header()
    }

    /// Appends a value if the queue has room for it.
    fn push(&mut self, value: &[u8]) -> bool {
        let h = self.header();
        let (head, tail, count) = (
            h.head.load(Relaxed),
            h.tail.load(Relaxed),
            h.count.load(Relaxed),
        );
        let needed = 4 + value.len() as u64;
        if count >= h.maxsize.load(Relaxed) || RING_BYTES as u64 - (tail - head) < needed {
            return false;
        }
        self.copy_in(tail, &(value.len() as u32).to_le_bytes());
        self.copy_in(tail + 4, value);
        // Published only now: a writer killed before this line leaves no trace.
        h.tail.store(tail + needed, Relaxed);
        h.count.store(count + 1, Relaxed);
        true
    }

    /// Takes the oldest value into `value`, if there is one.
    fn pop(&mut self, value: &mut Vec<u8>) -> bool {
        let h = self.header();
        let (head, tail) = (h.head.load(Relaxed), h.tail.load(Relaxed));
        if head == tail {
            return false;
        }
        let mut len = [0; 4];
        self.copy_out(head, &mut len);
        value.resize(u32::from_le_bytes(len) as usize, 0);
        self.copy_out(head + 4, value);
        // Removed only now: a reader killed before this line leaves the value in place.
        h.head.store(head + 4 + value.len() as u64, Relaxed);
        h.count.store(h.count.load(Relaxed) - 1, Relaxed);
        true
    }

    /// Counts the values between head and tail again, after a process died mid-change.
    fn recount(&self) {
        let h = self.header();
        let (mut at, tail) = (h.head.load(Relaxed), h.tail.load(Relaxed));
        let mut count = 0;
        while at < tail {
            let mut len = [0; 4];
            self.copy_out(at, &mut len);
            at += 4 + u32::from_le_bytes(len) as u64;
            count += 1;
        }
        h.count.store(count, Relaxed);
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: DATA_OFFSET + RING_BYTES is the mapping's length.
        unsafe { self.shared.map.as_ptr().add(DATA_OFFSET) }
    }

    fn copy_in(&self, position: u64, bytes: &[u8]) {
        let at = (position % RING_BYTES as u64) as usize;
        let first = bytes.len().min(RING_BYTES - at);
        // SAFETY: we hold the mutex; both pieces lie inside the ring (`at + first` and
        // `bytes.len() - first` are at most RING_BYTES), in bytes no reader looks at
        // until `tail` moves past them.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data().add(at), first);
            std::ptr::copy_nonoverlapping(
                bytes[first..].as_ptr(),
                self.data(),
                bytes.len() - first,
            );
        }
    }

    fn copy_out(&self, position: u64, bytes: &mut [u8]) {
        let at = (position % RING_BYTES as u64) as usize;
        let first = bytes.len().min(RING_BYTES - at);
        // SAFETY: we hold the mutex; both pieces lie inside the ring and between head and
        // tail, where no writer writes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data().add(at), bytes.as_mut_ptr(), first);
            let rest = bytes.len() - first;
            std::ptr::copy_nonoverlapping(self.data(), bytes[first..].as_mut_ptr(), rest);
        }
    }
}

impl Drop for Ring<'_> {
    fn drop(&mut self) {
        // SAFETY: a Ring exists only while this thread holds the mutex.
        unsafe { libc::pthread_mutex_unlock(self.shared.mutex()) };
    }
}

/// Takes one wake-up token if there is one. Tokens can outnumber sleepers; a spare one
/// only makes a later waiter look at the ring once more.
fn take_token(eventfd: &EventFd) -> io::Result<()> {
    match eventfd.read() {
        Ok(_) | Err(Errno::EAGAIN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Polls `fds` until one is ready (true) or `deadline` passes (false).
fn wait(fds: &mut [PollFd], deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                // Round up: poll counts whole milliseconds, and 0 would spin.
                let ms = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(fds, timeout) {
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

impl<T> Clone for Writer<T> {
    fn clone(&self) -> Self {
        Writer {
            shared: self.shared.clone(),
            end: self.end.clone(),
            _values: PhantomData,
        }
    }
}

impl<T> Clone for Reader<T> {
    fn clone(&self) -> Self {
        Reader {
            shared: self.shared.clone(),
            end: self.end.clone(),
            _values: PhantomData,
        }
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            writer: self.writer.clone(),
            reader: self.reader.clone(),
        }
    }
}

impl fmt::Display for PutError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            PutError::Full => write!(f, "the queue is full"),
            PutError::Disconnected => write!(f, "the queue is full and no reader is left"),
            PutError::Io(e) => write!(f, "put failed: {e}"),
        }
    }
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            GetError::Empty => write!(f, "the queue is empty"),
            GetError::Disconnected => write!(f, "the queue is empty and no writer is left"),
            GetError::Io(e) => write!(f, "get failed: {e}"),
        }
    }
}

impl std::error::Error for PutError {}
impl std::error::Error for GetError {}

impl From<io::Error> for PutError {
    fn from(e: io::Error) -> Self {
        PutError::Io(e)
    }
}

impl From<nix::Error> for PutError {
    fn from(e: nix::Error) -> Self {
        PutError::Io(e.into())
    }
}

impl From<io::Error> for GetError {
    fn from(e: io::Error) -> Self {
        GetError::Io(e)
    }
}

impl From<nix::Error> for GetError {
    fn from(e: nix::Error) -> Self {
        GetError::Io(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tests of the queue between processes are in tests/queue.rs; this one needs a private
    // method. Its child ends at once, so the ends it inherits close at once too.
    #[test]
    fn a_process_that_dies_holding_the_lock_does_not_block_the_queue() {
        let q = Queue::<u32>::bounded(4).unwrap();
        q.put(1).unwrap();
        let die_holding_it = |shared: Arc<Shared>| {
            std::mem::forget(shared.lock().unwrap());
            // SAFETY: `_exit` ends the process at once; it is always sound to call.
            unsafe { libc::_exit(0) }
        };
        let mut child = crate::process::Process::new(die_holding_it, q.writer.shared.clone());
        child.start().unwrap();
        assert_eq!(child.join().unwrap(), 0);
        q.put(2).unwrap();
        assert_eq!((q.get().unwrap(), q.get().unwrap()), (1, 2));
    }

    #[test]
    fn get_timeout_on_an_empty_queue_gives_empty() {
        let q = Queue::<u32>::new().unwrap();
        assert!(matches!(
            q.get_timeout(Duration::from_millis(20)),
            Err(GetError::Empty)
        ));
        q.put(7).unwrap();
        assert_eq!(q.get_timeout(Duration::from_millis(20)).unwrap(), 7);
    }

    #[test]
    fn put_timeout_on_a_full_queue_gives_full_and_values_keep_their_order() {
        let q = Queue::<String>::bounded(2).unwrap();
        q.put("a".into()).unwrap();
        q.put_timeout("b".into(), Duration::ZERO).unwrap();
        let full = q.put_timeout("c".into(), Duration::from_millis(20));
        assert!(matches!(full, Err(PutError::Full)), "{full:?}");
        assert_eq!(q.get().unwrap(), "a");
        q.put_timeout("c".into(), Duration::ZERO).unwrap();
        assert_eq!(
            (q.get().unwrap(), q.get().unwrap()),
            ("b".into(), "c".into())
        );
    }

    #[test]
    fn values_wrap_around_the_end_of_the_ring() {
        let q = Queue::<Vec<u32>>::new().unwrap();
        let value: Vec<u32> = (0..30_000).collect(); // About 190 KB of JSON.
        for round in 0..20 {
            q.put(value.clone()).unwrap();
            q.put(vec![round]).unwrap();
            assert_eq!(q.get().unwrap(), value);
            assert_eq!(q.get().unwrap(), vec![round]);
        }
    }

    #[test]
    fn an_unbounded_queue_is_bounded_by_its_ring() {
        let q = Queue::<Vec<u8>>::new().unwrap();
        let big = vec![0u8; RING_BYTES / 8]; // JSON writes each 0 as "0,": 2 bytes each.
        let mut put = 0;
        while q.put_timeout(big.clone(), Duration::ZERO).is_ok() {
            put += 1;
        }
        assert_eq!(put, 3);
        let too_big = q.put(vec![0u8; RING_BYTES]);
        assert!(matches!(too_big, Err(PutError::Io(_))), "{too_big:?}");
    }

    #[test]
    fn a_thread_that_dies_holding_the_lock_does_not_block_the_queue() {
        let q = Queue::<u32>::bounded(4).unwrap();
        q.put(1).unwrap();
        let shared = q.writer.shared.clone();
        std::thread::spawn(move || std::mem::forget(shared.lock().unwrap()))
            .join()
            .unwrap();
        // The robust mutex reports its owner's death to the next locker, who goes on.
        q.put(2).unwrap();
        assert_eq!((q.get().unwrap(), q.get().unwrap()), (1, 2));
    }

    #[test]
    fn recount_restores_the_count_of_values() {
        let q = Queue::<u32>::new().unwrap();
        (0..5).for_each(|i| q.put(i).unwrap());
        let ring = q.writer.shared.lock().unwrap();
        ring.header().count.store(99, Relaxed); // As if a writer died mid-change.
        ring.recount();
        assert_eq!(ring.header().count.load(Relaxed), 5);
    }
}
