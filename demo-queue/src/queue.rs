//! A queue between processes with Python's `multiprocessing.Queue` API: `put`, `get`,
//! `get_timeout` (→ `Empty`), and `Queue::bounded(maxsize)`, whose `put` waits while the
//! queue is full and whose `put_timeout` gives up with `Full`.
//!
//! Two kernel objects, inherited by `fork` or sent to a spawned child, make one queue:
//! - a shared mapping of a memfd (`shm.rs`): a ring buffer that holds the serialized values,
//!   and a header with two robust process-shared mutexes (`robust.rs`), the writers' turn and
//!   the readers' turn. A writer writes a value in beyond the values, then publishes it by
//!   moving the writers' mark; a reader reads the oldest value out, then removes it by moving
//!   the readers' mark. Each mark is one word (the bytes and the values so far), moved by one
//!   store, so a kill at any point loses nothing that was put, duplicates nothing, and leaves
//!   nothing half-done; a process killed in its turn does not block the others: the next one
//!   to take the turn is told by the kernel, and goes on. A writer and a reader never wait for
//!   each other's turn, and share no cache line that both write. Each side goes by the other
//!   side's mark as it last read it, and reads the real one only when that shows too little
//!   room (or no value): while values queue up, a small one moves almost no cache line from
//!   CPU to CPU but its own bytes.
//! - a socketpair that carries nothing: writers hold one end, readers the other, so the
//!   kernel tells when the last writer or the last reader is gone, however it ended (the
//!   other end polls `POLLHUP`). A reader of a drained queue then gets `Disconnected`, and
//!   so does a writer waiting for room, instead of waiting for ever.
//!
//! Sleeping and waking, with no wake-up that a death can lose for good: for each direction
//! (values for readers, room for writers) the header holds a sequence number and a
//! "sleepers" mark. A process with nothing to do marks that it sleeps, looks once more, and
//! sleeps on the sequence number (a futex shared between processes) for at most one period
//! (20 ms). A process that changes what the sleepers wait for and sees the mark clears it,
//! bumps the number, and once it has let go of its turn wakes *every* sleeper, which all look
//! again. (The mark, the number and the marks are read and written in one order that every
//! process sees alike, so either the waker sees the mark or the sleeper's last look sees the
//! change.) No one is chosen to pass a wake-up on, so a killed sleeper loses nothing (its mark
//! is cleared by the next waker); a waker killed before waking costs the sleepers one period,
//! after which they look anyway. A queue that keeps flowing makes no system call at all: a
//! waker calls the kernel only when someone sleeps.
//!
//! Values are serialized with serde in postcard, a compact binary format, as Python pickles
//! them. A long value is encoded straight into the ring with the writers' turn held, and
//! decoded straight out of it with the readers' turn, so the value's bytes are copied by
//! nobody else; a short one is encoded before the turn is taken and copied in.
//!
//! A handle given as an argument to a spawned or forkserver child crosses with its
//! descriptors (`queue/crossing.rs`): the child maps the same memfd and holds its own copy
//! of the handle's end, and of no other.
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
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{
    AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release, Ordering::SeqCst,
};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::robust::{self, Locked, RobustGuard, RobustMutex};
use crate::shm::SharedMemory;

mod crossing;

/// Bytes in the ring. A value takes its serialized length plus 4; a bigger one is an error.
pub const RING_BYTES: usize = 1 << 20;
/// Where the ring starts in the shared mapping, after the header.
const DATA_OFFSET: usize = 4096;
/// A value this long or longer is encoded into and decoded out of the ring in place, with its
/// side's turn held; a shorter one is encoded beforehand (decoded afterwards) and copied, which
/// holds the turn for less time than encoding it in would.
const IN_PLACE: usize = 1 << 10;
/// How long a `get` that finds the queue empty, or a `put` that finds it full, looks again
/// before it sleeps: the other side usually acts within microseconds, while a sleep and its
/// wake-up cost a system call each and, on a virtual machine, tens of microseconds.
const LOOK_FOR: Duration = Duration::from_micros(100);
/// How many of those looks are a busy loop, before each look gives the CPU away first (to
/// the other side, if it waits for this CPU).
const SPINS: u32 = 100;

/// Why `put` failed.
#[derive(Debug)]
pub enum PutError {
    /// `put_timeout`: the queue stayed full until the timeout (Python's `queue.Full`).
    Full,
    /// Every reader is gone while the queue is full: nobody will ever make room.
    Disconnected,
    /// The value could not be encoded or does not fit in the ring, or a system call failed.
    Io(io::Error),
}

/// Why `get` failed.
#[derive(Debug)]
pub enum GetError {
    /// `get_timeout`: nothing arrived before the timeout (Python's `queue.Empty`).
    Empty,
    /// The queue is drained and every writer is gone: nothing more can arrive.
    Disconnected,
    /// The value could not be decoded as a `T`, or a system call failed.
    Io(io::Error),
}

/// The writing half: `put` and `put_timeout`. Clone it for more writers.
pub struct Writer<T> {
    shared: Arc<Shared>,
    /// Open while a writer handle of this process lives: the readers' end reports `POLLHUP`
    /// once no writer anywhere holds it.
    end: Arc<End>,
    _values: PhantomData<fn(T)>,
}

/// The reading half: `get` and `get_timeout`. Clone it for more readers.
pub struct Reader<T> {
    shared: Arc<Shared>,
    end: Arc<End>,
    _values: PhantomData<fn() -> T>,
}

/// Both halves, like Python's `Queue`, which every process can both put to and get from.
///
/// # Example
///
/// The note's writer and reader, each in a process of its own; the reader ends by itself
/// once the writer is gone and the queue is drained:
///
/// ```
/// use demo_queue::{GetError, Process, Queue, Reader, Writer, exit_now};
///
/// fn write(q: Writer<String>) {
///     for value in ["A", "B", "C"] {
///         q.put(value.to_string()).unwrap();
///     }
/// }
///
/// fn read(q: Reader<String>) {
///     let mut got = Vec::new();
///     while let Ok(value) = q.get() {
///         got.push(value);
///     }
///     exit_now(if got == ["A", "B", "C"] { 0 } else { 1 });
/// }
///
/// # fn main() -> std::io::Result<()> {
/// let q = Queue::new()?;
/// let mut pw = Process::new(write, q.writer());
/// let mut pr = Process::new(read, q.reader());
/// // A forked child holds every end its parent held: let go of both before the start, and
/// // start the writer first, so that the reader holds no write end.
/// drop(q);
/// pw.start()?;
/// pr.start()?;
/// assert_eq!(pw.join()?, 0);
/// assert_eq!(pr.join()?, 0, "the reader got A, B, C and then Disconnected");
///
/// let q: Queue<u32> = Queue::bounded(1)?;
/// q.put(1).unwrap();
/// let full = q.put_timeout(2, std::time::Duration::from_millis(10));
/// assert!(matches!(full, Err(demo_queue::PutError::Full)));
/// assert_eq!(q.get().unwrap(), 1);
/// assert!(matches!(q.get_timeout(std::time::Duration::ZERO), Err(GetError::Empty)));
/// # Ok(())
/// # }
/// ```
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
                end: End::new(w, &shared, Side::Writers),
                _values: PhantomData,
            },
            reader: Reader {
                end: End::new(r, &shared, Side::Readers),
                shared,
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

    /// Python's `put(value)`: see [`Writer::put`].
    pub fn put(&self, value: T) -> Result<(), PutError> {
        self.writer.put(value)
    }

    /// Python's `put(value, timeout=…)`: see [`Writer::put_timeout`].
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError> {
        self.writer.put_timeout(value, timeout)
    }

    /// Python's `get()`: see [`Reader::get`].
    pub fn get(&self) -> Result<T, GetError> {
        self.reader.get()
    }

    /// Python's `get(timeout=…)`: see [`Reader::get_timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.reader.get_timeout(timeout)
    }
}

impl<T: Serialize> Writer<T> {
    /// Puts `value`, waiting while the queue is full.
    pub fn put(&self, value: T) -> Result<(), PutError> {
        self.put_until(&value, None)
    }

    /// Puts `value`, or gives up with `Full` after `timeout`. `Full` means that the queue was
    /// full when it looked last, at the timeout.
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError> {
        self.put_until(&value, Instant::now().checked_add(timeout))
    }

    fn put_until(&self, value: &T, deadline: Option<Instant>) -> Result<(), PutError> {
        let len = encoded_len(value)?;
        if len + 4 > RING_BYTES {
            let e = format!("a value of {len} bytes does not fit in the queue");
            return Err(PutError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)));
        }
        // A long value is encoded straight into the ring, once its place is found; a short
        // one now, before the turn is taken, to be copied in.
        let in_place = len >= IN_PLACE;
        SCRATCH.with_borrow_mut(|bytes| {
            if !in_place {
                encode(value, bytes)?;
                same_len(Some(bytes.len()), len)?;
            }
            let mut looked = false;
            loop {
                let mut writing = self.shared.writing();
                let taken = match writing.room_for(len) {
                    Err(taken) => taken,
                    Ok(slot) => {
                        if in_place {
                            writing.encode_in(&slot, value, bytes)?;
                        } else {
                            writing.copy_in(&slot, bytes);
                        }
                        writing.publish(slot);
                        return Ok(()); // Dropping the turn unlocks, then wakes the readers.
                    }
                };
                drop(writing);
                let room = &self.shared.header().room;
                let room_made = || self.shared.taken() != taken;
                match wait(room, &self.end, &mut looked, deadline, room_made)? {
                    Next::Again => {}
                    Next::Gone => return Err(PutError::Disconnected),
                    Next::TimedOut => return Err(PutError::Full),
                }
            }
        })
    }
}

/// `value` in postcard, a compact binary format (as Python pickles), into `bytes`.
fn encode<T: Serialize>(value: &T, bytes: &mut Vec<u8>) -> io::Result<()> {
    bytes.clear();
    postcard::to_io(value, &mut *bytes)
        .map(drop)
        .map_err(cannot_encode)
}

/// How many bytes `value` takes in postcard, found without writing them.
fn encoded_len<T: Serialize>(value: &T) -> io::Result<usize> {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(cannot_encode)
}

fn cannot_encode(e: postcard::Error) -> io::Error {
    let e = format!("the value cannot be encoded: {e}");
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

/// A value is encoded twice, once to learn its length and once into its place: an error if
/// the second time gave another length (a `Serialize` that changes its mind), so that no
/// value is ever published cut short or overflowing its place.
fn same_len(written: Option<usize>, found: usize) -> io::Result<()> {
    if written == Some(found) {
        return Ok(());
    }
    let e = format!("the value encoded to {found} bytes, then to another length");
    Err(io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// The value that `bytes` encode, all of them: bytes left over mean the writer put another
/// type.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err(postcard::Error::DeserializeBadEncoding),
        Err(e) => Err(e),
    }
    .map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a value that is not a {}: {e}", std::any::type_name::<T>()),
        )
    })
}

impl<T: DeserializeOwned> Reader<T> {
    /// Gets the next value, waiting for one; `Disconnected` once none can come.
    pub fn get(&self) -> Result<T, GetError> {
        self.get_until(None)
    }

    /// Gets the next value, or gives up with `Empty` after `timeout`. `Empty` means that the
    /// queue was empty when it looked last, at the timeout.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_until(Instant::now().checked_add(timeout))
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<T, GetError> {
        SCRATCH.with_borrow_mut(|bytes| {
            let mut looked = false;
            loop {
                let mut reading = self.shared.reading();
                let put = match reading.oldest() {
                    Err(put) => put,
                    Ok(oldest) => {
                        if oldest.len >= IN_PLACE {
                            // A value is taken once decoded, even by a `Deserialize` that panics,
                            // so that one bad value does not stop every reader.
                            let decoded = panic::catch_unwind(AssertUnwindSafe(|| {
                                reading.decode_out(&oldest, bytes)
                            }));
                            reading.remove(oldest);
                            drop(reading);
                            return Ok(decoded.unwrap_or_else(|p| panic::resume_unwind(p))?);
                        }
                        reading.pop(oldest, bytes);
                        drop(reading); // Unlocked, and the writers woken: then the decoding.
                        return Ok(decode(bytes)?);
                    }
                };
                drop(reading);
                // Drained: if no writer is left, nothing more can come.
                let values = &self.shared.header().values;
                let arrived = || self.shared.put() != put;
                match wait(values, &self.end, &mut looked, deadline, arrived)? {
                    Next::Again => {}
                    Next::Gone => return Err(GetError::Disconnected),
                    Next::TimedOut => return Err(GetError::Empty),
                }
            }
        })
    }
}

/// What a `put` that found the queue full, or a `get` that found it empty, does next.
enum Next {
    /// Try again: what it waits for may have come.
    Again,
    /// The other side is gone, and what it waits for had not come.
    Gone,
    /// The deadline has passed.
    TimedOut,
}

/// Waits for `changed` (room made, a value put): the first time (`looked`), looks again for a
/// while; then marks that it sleeps on `wakeup`, looks once more, and sleeps for at most one
/// period, not past `deadline`. What came from the other side before it left came before it
/// left, so after the hang-up is seen it looks once more too.
fn wait(
    wakeup: &Wakeup,
    end: &End,
    looked: &mut bool,
    deadline: Option<Instant>,
    changed: impl Fn() -> bool,
) -> io::Result<Next> {
    if !*looked {
        *looked = true;
        look_again(deadline, &changed);
        return Ok(Next::Again);
    }
    let seq = wakeup.prepare();
    if changed() {
        return Ok(Next::Again);
    }
    if end.hung_up()? && !changed() {
        return Ok(Next::Gone);
    }
    let Some(nap) = nap(deadline) else {
        return Ok(Next::TimedOut);
    };
    wakeup.sleep(seq, nap);
    Ok(Next::Again)
}

/// Looks until `ready`, for `LOOK_FOR` at most and not past `deadline`: `SPINS` times in a
/// busy loop, then after yielding the CPU each time.
fn look_again(deadline: Option<Instant>, ready: impl Fn() -> bool) {
    for _ in 0..SPINS {
        std::hint::spin_loop();
        if ready() {
            return;
        }
    }
    let now = Instant::now();
    let until = deadline.map_or(now + LOOK_FOR, |d| d.min(now + LOOK_FOR));
    while Instant::now() < until {
        std::thread::yield_now();
        if ready() {
            return;
        }
    }
}

/// How long to sleep before looking again: at most one period (for ever when the waits are
/// not re-armed), and not past `deadline`. `None` once the deadline has passed.
fn nap(deadline: Option<Instant>) -> Option<Option<Duration>> {
    let left = match deadline {
        Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Some(left),
            _ => return None,
        },
        None => None,
    };
    Some(match (left, robust::period()) {
        (Some(left), Some(period)) => Some(left.min(period)),
        (left, period) => left.or(period),
    })
}

impl<T> Writer<T> {
    /// What the queue's shared header holds now (see `Snapshot`).
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// `snapshot`, read with the writers' turn held: `tail` and `count` cannot grow while it is
    /// read, and `head` only grows, so the room it shows is the least that a `put` would find
    /// until `tail` moves. (`writers_word` then names this thread.) Waits for the turn as `put`
    /// does.
    pub fn snapshot_locked(&self) -> Snapshot {
        let writing = self.shared.writing();
        let snapshot = self.shared.snapshot();
        drop(writing);
        snapshot
    }
}

impl<T> Reader<T> {
    /// What the queue's shared header holds now (see `Snapshot`).
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }
}

/// The queue's shared header, read field by field: to see why a queue is stuck, or to check
/// from outside what a timed call had in front of it. `head` and `tail` only grow (modulo
/// 2^40, a terabyte): they count the bytes ever taken and put. `head` is read first, so that
/// it is never past `tail`.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// Bytes ever taken out of the ring (each value and its 4-byte length).
    pub head: u64,
    /// Bytes ever put in the ring.
    pub tail: u64,
    /// Values in the queue now; one taken between the reads of `head` and `tail` still counts.
    pub count: u64,
    /// The most values the queue holds (`u64::MAX`: as many as fit).
    pub maxsize: u64,
    /// The writers' turn's futex word: the holder's thread id in the low 30 bits (0: free).
    pub writers_word: u32,
    /// The readers' turn's futex word.
    pub readers_word: u32,
    /// The sequence number readers sleep on, bumped when values arrive.
    pub values_seq: u32,
    /// Whether readers may be asleep waiting for values.
    pub values_sleepers: u32,
    /// The sequence number writers sleep on, bumped when room is made.
    pub room_seq: u32,
    /// Whether writers may be asleep waiting for room.
    pub room_sleepers: u32,
}

thread_local! {
    /// One value's bytes on their way in or out; one per thread, so that neither `put`
    /// nor `get` allocates once it has warmed up.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What every process sees at the start of the shared mapping. Each side has its turn and its
/// mark, each on a cache line of its own: a writer and a reader share no line that both write
/// (but for a sleepers' mark, written only by one that goes to sleep), and one of each goes on
/// without waiting for the other.
#[repr(C)]
struct Header {
    /// Held by the writer that puts a value: only its holder writes into the ring, beyond
    /// `put`, where no reader looks, and moves `put`.
    writers: Line<RobustMutex>,
    /// Held by the reader that gets a value: only its holder reads it out, from `taken`,
    /// where no writer writes, and moves `taken`.
    readers: Line<RobustMutex>,
    maxsize: AtomicU64,
    /// `MAGIC` once the header is set up: what a process that is sent the memfd checks.
    magic: AtomicU64,
    /// How far the writers are (a `Mark`), moved once a value is in.
    put: Line<AtomicU64>,
    /// How far the readers are, moved once a value is out.
    taken: Line<AtomicU64>,
    /// Wakes the readers: a value arrived, or a writer end closed.
    values: Line<Wakeup>,
    /// Wakes the writers: room was made, or a reader end closed.
    room: Line<Wakeup>,
    /// The readers' mark as the writers last read it, on a line only writers touch: `taken`'s
    /// line moves from CPU to CPU with every `get`, this one stays with the writers. It lags
    /// the readers' mark, so the room it shows is there; and a `put` goes by it only while the
    /// writers' mark is at most the ring's size past it, so the two never wrap apart.
    taken_seen: Line<AtomicU64>,
    /// The writers' mark as the readers last read it, the same way round: what it shows was
    /// put, and the readers' mark never passes it.
    put_seen: Line<AtomicU64>,
}

/// What a queue's header says it is: a queue of this layout and ring size.
const MAGIC: u64 = u64::from_le_bytes(*b"dq-ring3") ^ RING_BYTES as u64;

/// A field alone on its cache line.
#[repr(C, align(64))]
struct Line<T>(T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// How far one side is, in one word: the bytes ever put (or taken), modulo 2^40, in the low
/// bits, and the values, modulo 2^24, in the high ones. One store moves both, so a process
/// killed at any moment leaves a side before a value or after it, never in between: nothing
/// is left to mend, and the number of values in the queue is always the difference of the two
/// sides' marks. (The ring holds at most 2^18 values, of 4 bytes at least, in 2^20 bytes.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    bytes: u64,
    values: u64,
}

const MARK_BYTES: u32 = 40;
const BYTES_MASK: u64 = (1 << MARK_BYTES) - 1;
const VALUES_MASK: u64 = (1 << (64 - MARK_BYTES)) - 1;

impl Mark {
    fn of(word: u64) -> Mark {
        Mark {
            bytes: word & BYTES_MASK,
            values: word >> MARK_BYTES,
        }
    }

    fn word(self) -> u64 {
        (self.values << MARK_BYTES) | self.bytes
    }

    /// The mark after a value of `len` bytes (and its length).
    fn after(self, len: usize) -> Mark {
        Mark {
            bytes: (self.bytes + 4 + len as u64) & BYTES_MASK,
            values: (self.values + 1) & VALUES_MASK,
        }
    }

    /// Bytes and values between `taken` and `self` (the writers' mark).
    fn since(self, taken: Mark) -> (u64, u64) {
        (
            self.bytes.wrapping_sub(taken.bytes) & BYTES_MASK,
            self.values.wrapping_sub(taken.values) & VALUES_MASK,
        )
    }
}

/// A sequence number to sleep on, and a mark that someone does.
#[repr(C)]
struct Wakeup {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

impl Wakeup {
    /// By a process with nothing to do, before it looks one last time: returns the number to
    /// sleep on, and marks that someone sleeps. Whoever then makes the change it waits for
    /// sees the mark (`changed`), or the last look sees the change: all four accesses are
    /// `SeqCst`, so one of the two comes after the other. The number is read first: a waker
    /// that clears the mark after that, even one whose change came before and was seen, bumps
    /// the number past it, and the sleep ends at once rather than after a period.
    fn prepare(&self) -> u32 {
        let seq = self.seq.load(SeqCst);
        self.sleepers.store(1, SeqCst);
        seq
    }

    /// After a change the sleepers wait for: whether someone may sleep, in which case the mark
    /// is cleared and the number bumped, and the caller must call `wake_all` once it has let
    /// go of its turn.
    fn changed(&self) -> bool {
        if self.sleepers.load(SeqCst) == 0 || self.sleepers.swap(0, SeqCst) == 0 {
            return false;
        }
        self.seq.fetch_add(1, SeqCst);
        true
    }

    /// Every sleeper is to look again.
    fn bump(&self) {
        self.seq.fetch_add(1, SeqCst);
    }

    /// Sleeps while the number is still `seq`, for at most `nap` (`None`: until woken).
    fn sleep(&self, seq: u32, nap: Option<Duration>) {
        let timeout = nap.map(|nap| libc::timespec {
            tv_sec: libc::time_t::try_from(nap.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: nap.subsec_nanos() as libc::c_long,
        });
        let timeout = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const _);
        // SAFETY: FUTEX_WAIT reads the aligned u32 that `seq` refers to, which lives as long
        // as `self`, and the relative timeout it is given, if any. It is not private: the
        // word is shared with other processes. Its outcome (woken, timed out, interrupted,
        // the number already changed) does not matter: the caller looks again in any case.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.seq.as_ptr(),
                libc::FUTEX_WAIT,
                seq,
                timeout,
                std::ptr::null::<u32>(),
                0u32,
            )
        };
    }

    /// Wakes every process that sleeps on the number.
    fn wake_all(&self) {
        // SAFETY: FUTEX_WAKE only uses the address of the word, which is valid.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.seq.as_ptr(),
                libc::FUTEX_WAKE,
                i32::MAX,
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                0u32,
            )
        };
    }
}

/// One end of the socketpair that tells who is still there, shared by the handles of one
/// side in this process. When the last of them goes, it closes its end and wakes the
/// other side's sleepers, so that they look at once whether anyone is left.
struct End {
    fd: Option<OwnedFd>,
    shared: Arc<Shared>,
    side: Side,
}

#[derive(Clone, Copy)]
enum Side {
    Writers,
    Readers,
}

impl End {
    fn new(fd: OwnedFd, shared: &Arc<Shared>, side: Side) -> Arc<End> {
        Arc::new(End {
            fd: Some(fd),
            shared: shared.clone(),
            side,
        })
    }

    /// Whether the other end is closed in every process: no one is left on the other side.
    /// (No event is asked: poll reports `POLLHUP` anyway.)
    fn hung_up(&self) -> io::Result<bool> {
        let fd = self.fd.as_ref().expect("open until dropped");
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::empty())];
        loop {
            match poll(&mut fds, PollTimeout::ZERO) {
                Ok(_) => return Ok(fds[0].any() == Some(true)),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for End {
    fn drop(&mut self) {
        // Closed first, so that the woken see the hang-up if this was the last end anywhere.
        drop(self.fd.take());
        let header = self.shared.header();
        let other = match self.side {
            Side::Writers => &header.values,
            Side::Readers => &header.room,
        };
        other.bump();
        other.wake_all();
    }
}

/// The mapping, shared by every handle of a queue in this process. It is only touched under
/// a side's turn (a process-shared mutex) or through atomics, so handles may move to and be
/// used from any thread.
struct Shared {
    memory: SharedMemory,
}

const MAP_BYTES: usize = DATA_OFFSET + RING_BYTES;
const _: () = assert!(size_of::<Header>() <= DATA_OFFSET);

impl Shared {
    fn new(maxsize: u64) -> io::Result<Shared> {
        // Fresh zeroed pages that no other thread or process can see yet: no Rust object
        // lives there, and a zeroed Header is valid (default mutexes, atomics).
        let shared = Shared {
            memory: SharedMemory::new(c"demo-queue", MAP_BYTES, Shared::pinned)?,
        };
        shared.header().maxsize.store(maxsize, Relaxed);
        // SAFETY: the mutex lies in zeroed memory (a default mutex) that no other thread or
        // process can see yet, and the mapping is unmapped only when `may_unmap` allows
        // (see `pinned`).
        unsafe { shared.header().writers.init() }?;
        // SAFETY: as for the first mutex.
        unsafe { shared.header().readers.init() }?;
        shared.header().magic.store(MAGIC, SeqCst);
        Ok(shared)
    }

    /// The queue behind a memfd that another process's `Shared::new` made, and sent here.
    fn adopt(memfd: OwnedFd) -> io::Result<Shared> {
        RobustMutex::check_owner_word()?;
        let shared = Shared {
            memory: SharedMemory::adopt(memfd, MAP_BYTES, Shared::pinned)?,
        };
        if shared.header().magic.load(SeqCst) != MAGIC {
            let why = "the shared memory sent is not a queue's";
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        Ok(shared)
    }

    /// When the last handle of this process is gone, nothing here uses the mapping any more;
    /// other processes keep their own mappings. If a thread of this process still held a
    /// turn, its robust list would point into the first page: that page stays mapped.
    fn pinned(memory: &SharedMemory) -> bool {
        // SAFETY: as in `header`.
        let header = unsafe { memory.ptr().cast::<Header>().as_ref() };
        !(header.writers.may_unmap() && header.readers.may_unmap())
    }

    /// The writers' turn, waited for as long as it takes: a live holder lets go within
    /// microseconds (or, with a long value, once it is encoded in), a dead one is reported by
    /// the kernel, and a lost wake-up costs one period. (Only a holder stopped by SIGSTOP
    /// makes it wait longer: until it continues.)
    fn writing(&self) -> Writing<'_> {
        let (turn, died) = turn(&self.header().writers);
        if died {
            // A writer died in its turn. It had published nothing it was writing, or all of
            // it; perhaps without waking the readers: wake them all.
            self.header().values.bump();
        }
        Writing {
            shared: self,
            turn: Some(turn),
            wake_values: died,
        }
    }

    /// The readers' turn, as `writing`. A reader that died in it had removed nothing it was
    /// reading, or all of it.
    fn reading(&self) -> Reading<'_> {
        let (turn, died) = turn(&self.header().readers);
        if died {
            self.header().room.bump();
        }
        Reading {
            shared: self,
            turn: Some(turn),
            wake_room: died,
        }
    }

    /// The writers' mark, as far as readers may read.
    fn put(&self) -> Mark {
        Mark::of(self.header().put.load(SeqCst))
    }

    /// The readers' mark, as far as writers may write.
    fn taken(&self) -> Mark {
        Mark::of(self.header().taken.load(SeqCst))
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: DATA_OFFSET + RING_BYTES is the mapping's length.
        unsafe { self.memory.ptr().as_ptr().add(DATA_OFFSET) }
    }

    /// Copies `bytes` into the ring at `position`, wrapping at its end.
    ///
    /// # Safety
    ///
    /// No other thread or process reads or writes those bytes meanwhile: they lie beyond
    /// the writers' mark, up to the readers', and the caller holds the writers' turn.
    unsafe fn copy_in(&self, position: u64, bytes: &[u8]) {
        let at = (position % RING_BYTES as u64) as usize;
        let first = bytes.len().min(RING_BYTES - at);
        // SAFETY: both pieces lie inside the ring (`at + first` and `bytes.len() - first` are
        // at most RING_BYTES), in bytes nobody else touches, as the caller promises.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data().add(at), first);
            std::ptr::copy_nonoverlapping(
                bytes[first..].as_ptr(),
                self.data(),
                bytes.len() - first,
            );
        }
    }

    /// The ring's `len` bytes at `position`, to be written in place, unless they wrap at its
    /// end.
    ///
    /// # Safety
    ///
    /// As for `copy_in`, for as long as the slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn place_mut(&self, position: u64, len: usize) -> Option<&mut [u8]> {
        let at = (position % RING_BYTES as u64) as usize;
        (len <= RING_BYTES - at).then(|| {
            // SAFETY: the bytes lie inside the ring, and nobody else reads or writes them
            // while the slice lives, as the caller promises.
            unsafe { std::slice::from_raw_parts_mut(self.data().add(at), len) }
        })
    }

    /// The ring's `len` bytes at `position`, to be read in place, unless they wrap at its end.
    ///
    /// # Safety
    ///
    /// As for `copy_out`, for as long as the slice lives.
    unsafe fn place(&self, position: u64, len: usize) -> Option<&[u8]> {
        let at = (position % RING_BYTES as u64) as usize;
        (len <= RING_BYTES - at).then(|| {
            // SAFETY: the bytes lie inside the ring, and no writer writes them while the
            // slice lives, as the caller promises.
            unsafe { std::slice::from_raw_parts(self.data().add(at), len) }
        })
    }

    /// Copies the ring's bytes at `position` into `bytes`, wrapping at its end.
    ///
    /// # Safety
    ///
    /// No writer writes those bytes meanwhile: they lie between the readers' mark and the
    /// writers', and the readers' mark stays before them (the caller holds the readers' turn).
    unsafe fn copy_out(&self, position: u64, bytes: &mut [u8]) {
        // A length read from the ring is trusted only this far: whatever the shared memory
        // holds, nothing is read outside the ring.
        assert!(bytes.len() <= RING_BYTES, "a value longer than the ring");
        let at = (position % RING_BYTES as u64) as usize;
        let first = bytes.len().min(RING_BYTES - at);
        // SAFETY: both pieces lie inside the ring, in bytes no writer touches, as the caller
        // promises.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data().add(at), bytes.as_mut_ptr(), first);
            let rest = bytes.len() - first;
            std::ptr::copy_nonoverlapping(self.data(), bytes[first..].as_mut_ptr(), rest);
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is MAP_BYTES long, page-aligned, and starts with a Header
        // whose fields are mutexes (used only through their own API) and atomics, valid when
        // zeroed and whatever bytes another process left; it lives as long as `self`.
        unsafe { self.memory.ptr().cast::<Header>().as_ref() }
    }

    fn snapshot(&self) -> Snapshot {
        let h = self.header();
        let (taken, put) = (self.taken(), self.put());
        Snapshot {
            head: taken.bytes,
            tail: put.bytes,
            count: put.since(taken).1,
            maxsize: h.maxsize.load(SeqCst),
            writers_word: h.writers.word(),
            readers_word: h.readers.word(),
            values_seq: h.values.seq.load(SeqCst),
            values_sleepers: h.values.sleepers.load(SeqCst),
            room_seq: h.room.seq.load(SeqCst),
            room_sleepers: h.room.sleepers.load(SeqCst),
        }
    }
}

/// A side's turn, and whether its last holder died in it.
fn turn(mutex: &RobustMutex) -> (RobustGuard<'_>, bool) {
    match mutex.lock() {
        Locked::Clean(lock) => (lock, false),
        Locked::OwnerDied(lock) => (lock, true),
    }
}

/// A value's place in the ring: where its length starts, and its length. Made only by
/// `room_for` (free bytes, for the writers' turn) and `oldest` (the oldest value, for the
/// readers' turn); not `Clone`, so that each is published or removed once.
struct Slot {
    at: Mark,
    len: usize,
}

/// The writers' turn: the one writer that may write into the ring and move `put`. Dropping it
/// lets go of the turn, then wakes the readers if the value it put concerns sleepers.
struct Writing<'a> {
    shared: &'a Shared,
    turn: Option<RobustGuard<'a>>,
    wake_values: bool,
}

impl Writing<'_> {
    /// Where a value of `len` bytes goes (its length first), if the queue has room for it;
    /// otherwise the readers' mark it found full, to look for room made since. The readers'
    /// mark is read here, under the turn, so that the slot lies where no reader reads: first
    /// as the writers last read it, then, if that shows too little room, afresh. Only this
    /// turn's holder moves `put`: it is read without ordering.
    fn room_for(&self, len: usize) -> Result<Slot, Mark> {
        let h = self.shared.header();
        let put = Mark::of(h.put.load(Relaxed));
        let fits = |taken: Mark| {
            let (bytes, values) = put.since(taken);
            let free = (RING_BYTES as u64).saturating_sub(bytes);
            values < h.maxsize.load(Relaxed) && free >= 4 + len as u64
        };
        if fits(Mark::of(h.taken_seen.load(Acquire))) {
            return Ok(Slot { at: put, len });
        }
        let taken = self.shared.taken();
        h.taken_seen.store(taken.word(), Release);
        if fits(taken) {
            Ok(Slot { at: put, len })
        } else {
            Err(taken)
        }
    }

    /// Copies a short value's bytes, and its length, into `slot`.
    fn copy_in(&self, slot: &Slot, value: &[u8]) {
        assert_eq!(slot.len, value.len(), "the slot was found for this value");
        // SAFETY: we hold the writers' turn, and `room_for` found the slot's bytes free: only
        // this turn's holder moves `put`, and readers only read up to it.
        unsafe {
            self.shared.copy_in(slot.at.bytes + 4, value);
            self.shared
                .copy_in(slot.at.bytes, &(slot.len as u32).to_le_bytes());
        }
    }

    /// Encodes `value` and its length into the slot that `room_for` found for it: straight
    /// into the ring, or through `scratch` where the slot wraps at the ring's end. The slot
    /// is to be published only if this succeeds.
    fn encode_in<T: Serialize>(
        &self,
        slot: &Slot,
        value: &T,
        scratch: &mut Vec<u8>,
    ) -> io::Result<()> {
        // SAFETY: as in `copy_in`. The slice is used only in this call, while `self` holds the
        // turn, and no other slice of these bytes lives meanwhile (a reader's lies before
        // `put`).
        match unsafe { self.shared.place_mut(slot.at.bytes + 4, slot.len) } {
            Some(place) => {
                // Too long for its place is an error from postcard, and not written past it.
                let written = postcard::to_slice(value, place).ok().map(|b| b.len());
                same_len(written, slot.len)?;
            }
            None => {
                encode(value, scratch)?;
                same_len(Some(scratch.len()), slot.len)?;
                // SAFETY: as in `copy_in`.
                unsafe { self.shared.copy_in(slot.at.bytes + 4, scratch) };
            }
        }
        // SAFETY: as in `copy_in`.
        unsafe {
            self.shared
                .copy_in(slot.at.bytes, &(slot.len as u32).to_le_bytes())
        };
        Ok(())
    }

    /// Makes the value written into `slot` visible to readers: one store.
    fn publish(&mut self, slot: Slot) {
        let h = self.shared.header();
        // Published only now: a writer killed before this line leaves no trace.
        h.put.store(slot.at.after(slot.len).word(), SeqCst);
        self.wake_values |= h.values.changed();
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        drop(self.turn.take()); // Unlocked first: a writer woken elsewhere finds it free.
        if self.wake_values {
            self.shared.header().values.wake_all();
        }
    }
}

/// The readers' turn: the one reader that may read a value out of the ring and move `taken`.
/// Dropping it lets go of the turn, then wakes the writers if the value it took made room
/// that sleepers wait for.
struct Reading<'a> {
    shared: &'a Shared,
    turn: Option<RobustGuard<'a>>,
    wake_room: bool,
}

impl Reading<'_> {
    /// Where the oldest value starts (its length first) and its length, if there is one;
    /// otherwise the writers' mark it found empty, to look for values put since. The writers'
    /// mark is read here, under the turn, so that the value read was all written: first as
    /// the readers last read it, then, if that shows nothing, afresh. Only this turn's holder
    /// moves `taken`: it is read without ordering.
    fn oldest(&self) -> Result<Slot, Mark> {
        let h = self.shared.header();
        let taken = Mark::of(h.taken.load(Relaxed));
        let mut put = Mark::of(h.put_seen.load(Acquire));
        let (mut bytes, _) = put.since(taken);
        if bytes < 4 {
            put = self.shared.put();
            h.put_seen.store(put.word(), Release);
            (bytes, _) = put.since(taken);
            if bytes < 4 {
                return Err(put);
            }
        }
        let mut len = [0; 4];
        // SAFETY: we hold the readers' turn; the 4 bytes at `taken` lie before `put`.
        unsafe { self.shared.copy_out(taken.bytes, &mut len) };
        // A length no writer can have written (longer than what was put, or than the ring)
        // cannot lead a read past what was put, nor a buffer longer than the ring.
        let len = (u32::from_le_bytes(len) as u64).min(bytes - 4) as usize;
        Ok(Slot {
            at: taken,
            len: len.min(RING_BYTES - 4),
        })
    }

    /// Decodes the value that `oldest` found: straight from the ring, or through `scratch`
    /// where it wraps at the ring's end.
    fn decode_out<T: DeserializeOwned>(
        &self,
        oldest: &Slot,
        scratch: &mut Vec<u8>,
    ) -> io::Result<T> {
        // SAFETY: we hold the readers' turn: only its holder moves `taken`, so the value,
        // published before `put`, stays where it is and no writer writes there; the slice is
        // used only in this call, while `self` holds the turn.
        if let Some(place) = unsafe { self.shared.place(oldest.at.bytes + 4, oldest.len) } {
            return decode(place);
        }
        scratch.resize(oldest.len, 0);
        // SAFETY: as above.
        unsafe { self.shared.copy_out(oldest.at.bytes + 4, scratch) };
        decode(scratch)
    }

    /// Copies the oldest value (`oldest`) into `value` and removes it.
    fn pop(&mut self, oldest: Slot, value: &mut Vec<u8>) {
        value.resize(oldest.len, 0);
        // SAFETY: we hold the readers' turn; the value lies between `taken` and `put`, where
        // no writer writes.
        unsafe { self.shared.copy_out(oldest.at.bytes + 4, value) };
        self.remove(oldest);
    }

    /// Removes the oldest value (`oldest`), read out by the caller: one store.
    fn remove(&mut self, oldest: Slot) {
        let h = self.shared.header();
        // Removed only now: a reader killed before this line leaves the value in place.
        h.taken.store(oldest.at.after(oldest.len).word(), SeqCst);
        self.wake_room |= h.room.changed();
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        drop(self.turn.take());
        if self.wake_room {
            self.shared.header().room.wake_all();
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
    use crate::robust::tests::{gettid, wait_until_asleep_in_futex};
    use std::sync::atomic::AtomicI32;
    use std::sync::mpsc;

    // Tests of the queue between processes are in tests/queue.rs; this one needs a private
    // method. Its child ends at once, so the ends it inherits close at once too.
    #[test]
    fn a_process_that_dies_in_a_turn_does_not_block_the_queue() {
        let q = Queue::<u32>::bounded(4).unwrap();
        q.put(1).unwrap();
        let die_in_both = |shared: Arc<Shared>| {
            std::mem::forget(shared.writing());
            std::mem::forget(shared.reading());
            // SAFETY: `_exit` ends the process at once; it is always sound to call.
            unsafe { libc::_exit(0) }
        };
        let mut child = crate::process::Process::new(die_in_both, q.writer.shared.clone());
        child.start().unwrap();
        assert_eq!(child.join().unwrap(), 0);
        q.put(2).unwrap();
        assert_eq!((q.get().unwrap(), q.get().unwrap()), (1, 2));
    }

    #[test]
    fn a_writer_killed_before_it_publishes_leaves_nothing_half_put() {
        let q = Queue::<u32>::bounded(2).unwrap();
        q.put(1).unwrap();
        // A writer that dies with the value's bytes in, and before the one store that
        // publishes it.
        let die_mid_put = |shared: Arc<Shared>| {
            let writing = shared.writing();
            let slot = writing.room_for(1).ok().unwrap();
            writing.copy_in(&slot, &[2]); // 2u32 in postcard.
            std::mem::forget(writing);
            // SAFETY: `_exit` ends the process at once; it is always sound to call.
            unsafe { libc::_exit(0) }
        };
        let mut child = crate::process::Process::new(die_mid_put, q.writer.shared.clone());
        child.start().unwrap();
        assert_eq!(child.join().unwrap(), 0);
        let s = q.writer.snapshot();
        assert_eq!(
            (s.tail - s.head, s.count),
            (5, 1),
            "one value: 1, and its length"
        );
        q.put(3).unwrap();
        assert_eq!((q.get().unwrap(), q.get().unwrap()), (1, 3));
        assert!(matches!(
            q.get_timeout(Duration::ZERO),
            Err(GetError::Empty)
        ));
    }

    #[test]
    fn a_writer_copying_in_does_not_stop_a_reader_nor_a_reader_a_writer() {
        let q = Queue::<String>::new().unwrap();
        q.put("first".into()).unwrap();
        // A writer in the middle of its copy holds the writers' turn: readers go on.
        let writing = q.writer.shared.writing();
        assert_eq!(q.get_timeout(Duration::ZERO).unwrap(), "first");
        drop(writing);
        // A reader in the middle of its copy holds the readers' turn: writers go on.
        let reading = q.reader.shared.reading();
        q.put_timeout("second".into(), Duration::ZERO).unwrap();
        drop(reading);
        assert_eq!(q.get().unwrap(), "second");
    }

    #[test]
    fn a_writer_or_reader_that_dies_in_its_turn_blocks_nobody_and_loses_nothing() {
        let q = Queue::<u32>::bounded(4).unwrap();
        q.put(1).unwrap();
        let shared = q.writer.shared.clone();
        // Killed mid-copy: the turn is held, nothing was published or removed.
        std::thread::spawn(move || {
            std::mem::forget(shared.writing());
            std::mem::forget(shared.reading());
        })
        .join()
        .unwrap();
        q.put(2).unwrap();
        assert_eq!((q.get().unwrap(), q.get().unwrap()), (1, 2));
        assert_eq!(q.writer.snapshot().count, 0);
    }

    #[test]
    fn a_value_that_cannot_be_encoded_is_a_clear_error_and_puts_nothing() {
        // A flattened field makes serde write a map without saying its length first, which
        // postcard cannot encode.
        #[derive(Serialize, serde::Deserialize)]
        struct Flat {
            #[serde(flatten)]
            inner: std::collections::BTreeMap<String, u32>,
        }
        let q = Queue::<Flat>::new().unwrap();
        let err = q
            .put(Flat {
                inner: [("a".into(), 1)].into(),
            })
            .unwrap_err();
        let PutError::Io(e) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(
            err.to_string()
                .starts_with("put failed: the value cannot be encoded: "),
            "{err}"
        );
        assert_eq!(q.writer.snapshot().tail, 0);
    }

    /// Bytes that encode to one more byte each time they are encoded, while `fickle`; and a
    /// decoding that panics on a first byte of 0xFF.
    struct Odd {
        bytes: std::cell::RefCell<Vec<u8>>,
        fickle: bool,
    }

    impl Odd {
        fn new(bytes: Vec<u8>, fickle: bool) -> Odd {
            let bytes = std::cell::RefCell::new(bytes);
            Odd { bytes, fickle }
        }
    }

    impl Serialize for Odd {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut bytes = self.bytes.borrow_mut();
            let encoded = s.serialize_bytes(&bytes);
            if self.fickle {
                bytes.push(0);
            }
            encoded
        }
    }

    impl<'de> serde::Deserialize<'de> for Odd {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Odd, D::Error> {
            let bytes = serde_bytes::ByteBuf::deserialize(d)?.into_vec();
            assert_ne!(
                bytes.first(),
                Some(&0xFF),
                "a value that panics when decoded"
            );
            Ok(Odd::new(bytes, false))
        }
    }

    #[test]
    fn a_long_value_whose_encoding_changes_length_is_an_error_and_puts_nothing() {
        let q = Queue::<Odd>::new().unwrap();
        // Long enough to be encoded in place, once its length is known from a first encoding.
        let err = q.put(Odd::new(vec![1; 2 * IN_PLACE], true)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "put failed: the value encoded to {} bytes, then to another length",
                2 * IN_PLACE + 2
            )
        );
        let s = q.writer.snapshot();
        assert_eq!((s.tail, s.count), (0, 0));
        // Nothing is left half-done: the next value goes in and out.
        q.put(Odd::new(vec![2; 2 * IN_PLACE], false)).unwrap();
        assert_eq!(*q.get().unwrap().bytes.borrow(), vec![2; 2 * IN_PLACE]);
    }

    #[test]
    fn a_long_value_whose_decoding_panics_is_taken_all_the_same() {
        let q = Queue::<Odd>::new().unwrap();
        q.put(Odd::new(vec![0xFF; 2 * IN_PLACE], false)).unwrap();
        q.put(Odd::new(vec![3; 2 * IN_PLACE], false)).unwrap();
        // Decoded in place: the panic comes out of `get`, after the value was taken.
        let got = panic::catch_unwind(AssertUnwindSafe(|| q.get()));
        assert!(got.is_err(), "the first value's decoding panics");
        assert_eq!(q.writer.snapshot().count, 1);
        assert_eq!(*q.get().unwrap().bytes.borrow(), vec![3; 2 * IN_PLACE]);
        assert_eq!(q.writer.snapshot().count, 0);
    }

    #[test]
    fn looking_again_ends_when_ready_and_stops_at_the_deadline() {
        let looks = std::cell::Cell::new(0);
        let ready_at = |n: u32| {
            let looks = &looks;
            move || {
                looks.set(looks.get() + 1);
                looks.get() == n
            }
        };
        look_again(None, ready_at(3));
        assert_eq!(looks.replace(0), 3);
        // Past its deadline, it only spins: it yields only before the deadline.
        look_again(Some(Instant::now()), ready_at(0));
        assert_eq!(looks.get(), SPINS);
    }

    #[test]
    fn bytes_and_strings_cross_as_they_are() {
        let q = Queue::<(serde_bytes::ByteBuf, String)>::new().unwrap();
        let bytes: Vec<u8> = (0..=255).cycle().take(70_000).collect();
        let text = "é".repeat(35_000);
        q.put((serde_bytes::ByteBuf::from(bytes.clone()), text.clone()))
            .unwrap();
        // A length and the bytes themselves, for each: no JSON array of numbers, no escapes.
        assert_eq!(q.writer.snapshot().tail, 4 + 3 + 70_000 + 3 + 70_000);
        let (got_bytes, got_text) = q.get().unwrap();
        assert!(got_bytes.as_slice() == bytes.as_slice() && got_text == text);
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
    fn what_each_side_kept_of_the_other_lags_it_and_never_misleads() {
        use std::hash::{BuildHasher, RandomState};
        let q = Queue::<serde_bytes::ByteBuf>::new().unwrap();
        let h = q.writer.shared.header();
        let ring = RING_BYTES as u64;
        // A fresh random state each run: puts and gets in runs of 1 to 8, values of 4 bytes
        // to 8 KiB, each starting with its number, around the ring tens of times.
        let random = RandomState::new();
        let (mut next_put, mut next_get, mut passed) = (0u32, 0u32, 0u64);
        for step in 0..10_000u64 {
            let r = random.hash_one(step);
            for k in 0..(r >> 8) % 8 + 1 {
                if r % 2 == 0 {
                    let len = 4 + (random.hash_one((step, k)) % 8192) as usize;
                    let mut value = vec![7u8; len];
                    value[..4].copy_from_slice(&next_put.to_le_bytes());
                    match q.put_timeout(value.into(), Duration::ZERO) {
                        Ok(()) => (next_put, passed) = (next_put + 1, passed + len as u64),
                        Err(PutError::Full) => {
                            // Full means full: no room for it by the readers' own mark.
                            let (put, taken) = (q.writer.shared.put(), q.writer.shared.taken());
                            let prefix = if len < 128 { 1 } else { 2 }; // postcard's length
                            assert!(put.since(taken).0 + 4 + prefix + len as u64 > ring);
                            break;
                        }
                        Err(e) => panic!("{e}"),
                    }
                } else {
                    match q.get_timeout(Duration::ZERO) {
                        Ok(value) => {
                            assert_eq!(value[..4], next_get.to_le_bytes(), "in order, once");
                            next_get += 1;
                        }
                        Err(GetError::Empty) => {
                            // Empty means empty: nothing between the two sides' own marks.
                            assert_eq!(q.writer.shared.put(), q.writer.shared.taken());
                            break;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            // Each side's copy of the other's mark lies between its own mark and the other's,
            // and at most a ring away.
            let (put, taken) = (q.writer.shared.put(), q.writer.shared.taken());
            let taken_seen = Mark::of(h.taken_seen.load(SeqCst));
            let put_seen = Mark::of(h.put_seen.load(SeqCst));
            assert!(put.since(taken).0 <= put.since(taken_seen).0);
            assert!(put.since(taken_seen).0 <= ring);
            assert!(put_seen.since(taken).0 <= put.since(taken).0);
        }
        assert!(
            passed > 10 * ring,
            "{passed} bytes: too few rounds of the ring"
        );
        assert_eq!(next_get, next_put - q.writer.snapshot().count as u32);
    }

    #[test]
    fn values_wrap_around_the_end_of_the_ring() {
        let q = Queue::<Vec<u32>>::new().unwrap();
        let value: Vec<u32> = (0..100_000).collect(); // About 290 KB of postcard.
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
        let big = vec![0u8; RING_BYTES / 4]; // A length, then a byte each: 4 do not fit.
        let mut put = 0;
        while q.put_timeout(big.clone(), Duration::ZERO).is_ok() {
            put += 1;
        }
        assert_eq!(put, 3);
        let too_big = q.put(vec![0u8; RING_BYTES]);
        assert!(matches!(too_big, Err(PutError::Io(_))), "{too_big:?}");
    }

    /// Long enough to mean "for ever" here: a test that waits this long has failed.
    const FOR_EVER: Duration = Duration::from_secs(60);

    /// Starts a thread that runs `op` and sends back what it returns; returns its thread id,
    /// to watch it go to sleep, and where the result arrives. Not scoped: if the fix fails,
    /// the thread sleeps for ever, and the test must still end (with a failure).
    fn in_a_thread<R: Send + 'static>(
        op: impl FnOnce() -> R + Send + 'static,
    ) -> (&'static AtomicI32, mpsc::Receiver<R>) {
        let tid: &'static AtomicI32 = Box::leak(Box::new(AtomicI32::new(0)));
        let (done, result) = mpsc::channel();
        std::thread::spawn(move || {
            tid.store(gettid(), SeqCst);
            let _ = done.send(op());
        });
        (tid, result)
    }

    #[test]
    fn a_reader_whose_wake_up_was_lost_still_gets_the_value() {
        let q = Queue::<u32>::new().unwrap();
        let reader = q.reader();
        let (tid, got) = in_a_thread(move || reader.get().ok());
        wait_until_asleep_in_futex(tid);
        // A put whose writer is killed between publishing and waking: the value is in, the
        // sleepers' mark cleared, and no wake-up comes.
        let mut writing = q.writer.shared.writing();
        let slot = writing.room_for(1).ok().unwrap();
        writing.copy_in(&slot, &[7]); // 7u32 in postcard.
        writing.publish(slot);
        assert!(writing.wake_values, "the reader marked that it sleeps");
        writing.wake_values = false;
        drop(writing);
        assert_eq!(got.recv_timeout(FOR_EVER).unwrap(), Some(7));
    }

    #[test]
    fn a_writer_whose_wake_up_was_lost_still_puts() {
        let q = Queue::<u32>::bounded(1).unwrap();
        q.put(1).unwrap();
        let writer = q.writer();
        let (tid, put) = in_a_thread(move || writer.put(2).is_ok());
        wait_until_asleep_in_futex(tid);
        // A get whose reader is killed between removing and waking.
        let mut reading = q.reader.shared.reading();
        let oldest = reading.oldest().ok().unwrap();
        reading.pop(oldest, &mut Vec::new());
        assert!(reading.wake_room, "the writer marked that it sleeps");
        reading.wake_room = false;
        drop(reading);
        assert!(put.recv_timeout(FOR_EVER).unwrap());
        assert_eq!(q.get().unwrap(), 2);
    }

    #[test]
    fn dropping_the_last_writer_wakes_a_sleeping_reader() {
        let q = Queue::<u32>::new().unwrap();
        let (w, r) = (q.writer(), q.reader());
        drop(q);
        let (tid, got) = in_a_thread(move || r.get());
        wait_until_asleep_in_futex(tid);
        drop(w);
        let got = got.recv_timeout(FOR_EVER).unwrap();
        assert!(matches!(got, Err(GetError::Disconnected)), "{got:?}");
    }

    #[test]
    fn a_drained_queue_without_writers_says_so_without_waiting() {
        let q = Queue::<u32>::new().unwrap();
        let r = q.reader();
        q.put(1).unwrap();
        drop(q);
        assert_eq!(r.get_timeout(Duration::ZERO).unwrap(), 1);
        let last = r.get_timeout(Duration::ZERO);
        assert!(matches!(last, Err(GetError::Disconnected)), "{last:?}");
    }

    #[test]
    fn marks_wrap_and_still_give_what_lies_between_them() {
        let taken = Mark {
            bytes: BYTES_MASK - 2,
            values: VALUES_MASK,
        };
        assert_eq!(Mark::of(taken.word()), taken);
        let put = taken.after(10).after(0);
        assert_eq!(
            put,
            Mark {
                bytes: 15,
                values: 1
            },
            "both wrapped"
        );
        assert_eq!(Mark::of(put.word()), put);
        assert_eq!(put.since(taken), (4 + 10 + 4, 2));
        assert_eq!(put.since(put), (0, 0));
    }
}
