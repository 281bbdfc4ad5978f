//! A worker, and the wire between it and the pool: one frame per task, one per result, on
//! each worker's socketpair.
//!
//! A worker is a fork of the program, or another image of the same executable file started by
//! spawn or by the forkserver (see `manager.rs`). A function's address means nothing in
//! another image (another ASLR base), but its distance from a fixed function of the same file,
//! `anchor`, is the same in every image of it. So a task frame carries two such offsets: of the
//! task, a `fn(A) -> R`, and of the `Call` made for exactly that `A` and `R`
//! (`call_one::<A, R>`), which decodes the arguments (postcard), calls the task and encodes
//! its result. A spawned or forkserver worker reaches `spawned` only through the bootstrap of
//! `spawn.rs`, which first checks that it runs the very file the pool runs.
//!
//! Arguments may hold descriptors (fields with `#[serde(with = "demo_pool::fds")]`: a pipe
//! end, a socket, a memfd). The bytes of a task frame hold only their indices; the
//! descriptors go with the frame's first bytes in the same write (`SCM_RIGHTS`), and the
//! worker reads its socket with `recvmsg`, which keeps them, in order, until the frame is read
//! whole. A frame without descriptors costs the same system calls as before: one write, and
//! the worker's reads.

use std::collections::VecDeque;
use std::io::{self, BufReader, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use nix::sys::socket::{MsgFlags, recvmsg};
use nix::time::{ClockId, clock_gettime};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Error, Outcome};
use crate::panic_message::message;
use crate::{fds, process};

/// What a worker calls: decodes the arguments (with the descriptors that came with them),
/// calls the task, appends the encoded result.
pub(super) type Call = fn(usize, &[u8], Vec<OwnedFd>, &mut Vec<u8>) -> Result<(), String>;

/// A task frame: length of the rest (u32), the offsets of the `Call` and of the task from
/// `anchor` (u64 each), how many descriptors came with it (u32), the arguments (postcard).
const TASK_HEADER: usize = 4 + 8 + 8 + 4;
/// A result frame: length of the rest (u32), kind (u8), when the task started and ended in
/// nanoseconds after the pool's base moment (u64 each), the result (postcard) or a message.
const RESULT_HEADER: usize = 4 + 1 + 8 + 8;
const RETURNED: u8 = 0;
const PANICKED: u8 = 1;
const UNCODABLE: u8 = 2;
/// The worker ran its initializer: it starts tasks from now on.
const READY: u8 = 3;
/// The worker's initializer panicked (the message follows); the worker leaves.
const INIT_FAILED: u8 = 4;

/// How each worker starts and when it leaves, the same for every worker of a pool.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(super) struct Start {
    /// A task frame the worker runs once before its first task (Python's `initializer`).
    pub(super) init: Option<Vec<u8>>,
    /// The worker leaves after this many tasks (Python's `maxtasksperchild`).
    pub(super) max_tasks: Option<usize>,
}

/// What a result frame reports.
pub(super) enum Report {
    /// The oldest task the worker holds ended, between these offsets after its base.
    Ended(Outcome, Duration, Duration),
    /// The initializer returned.
    Ready,
    /// The initializer panicked, with this message.
    InitFailed(String),
}

/// The fixed point of this file that the offsets of tasks are measured from.
#[inline(never)]
fn anchor() {}

/// A task's distance from `anchor`. A function of a shared library (a Rust dylib) lies apart
/// from the executable, and its distance would mean nothing in another image: a bug in how the
/// program is built, refused loudly.
fn offset_of(address: usize) -> u64 {
    assert!(
        crate::spawn::in_this_file(address),
        "a pool task must be a function of the executable itself, not of a shared library"
    );
    address.wrapping_sub(anchor as fn() as usize) as u64
}

/// The address `offset` bytes from `anchor` in this image.
fn address_at(offset: u64) -> usize {
    (anchor as fn() as usize).wrapping_add(offset as usize)
}

/// A task frame, and the descriptors its arguments hold, which go with it.
pub(super) struct Frame {
    pub(super) bytes: Vec<u8>,
    pub(super) fds: Vec<OwnedFd>,
}

pub(super) fn task_frame<A: Serialize + ?Sized>(
    call: Call,
    task: usize,
    args: &A,
) -> Result<Frame, Error> {
    let mut frame = vec![0; TASK_HEADER];
    frame[4..12].copy_from_slice(&offset_of(call as usize).to_le_bytes());
    frame[12..20].copy_from_slice(&offset_of(task).to_le_bytes());
    let mut fds = Vec::new();
    // Plain postcard first: a value without descriptors is encoded once, straight into the
    // frame. A descriptor field refuses plain postcard (`fds::serialize`); then `fds::encode`
    // encodes the value again and collects its descriptors, or says why it cannot.
    if encode(args, &mut frame).is_err() {
        frame.truncate(TASK_HEADER);
        let message = fds::encode(args).map_err(|e| Error::Serde(format!("the arguments: {e}")))?;
        frame.extend_from_slice(&message.bytes);
        fds = message.fds;
    }
    let len =
        u32::try_from(frame.len() - 4).map_err(|_| Error::Serde("arguments over 4 GiB".into()))?;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    // At most `fds::MAX_FDS`: `fds::encode` checked.
    frame[20..24].copy_from_slice(&(fds.len() as u32).to_le_bytes());
    Ok(Frame { bytes: frame, fds })
}

/// The arguments of a task, from their bytes and the descriptors that came with them.
pub(super) fn arguments<A: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<A, String> {
    if fds.is_empty() {
        postcard::from_bytes(bytes).map_err(|e| uncodable("the arguments", e))
    } else {
        let message = fds::Message {
            bytes: bytes.to_vec(),
            fds,
        };
        fds::decode(message).map_err(|e| format!("the arguments: {e}"))
    }
}

pub(super) fn call_one<A: DeserializeOwned, R: Serialize>(
    task: usize,
    args: &[u8],
    fds: Vec<OwnedFd>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // SAFETY: `task` is the address, in this image, of a `fn(A) -> R` that `apply_async::<A, R>`
    // sent together with this very function, `call_one::<A, R>`: `serve` found both at the
    // offsets the pool took from `anchor` in an image of this same file (see `serve`).
    let task = unsafe { std::mem::transmute::<usize, fn(A) -> R>(task) };
    let args = arguments(args, fds)?;
    let result = task(args);
    encode(&result, out).map_err(|e| unsendable(&result, e))?;
    Ok(())
}

pub(super) fn call_chunk<A: DeserializeOwned, R: Serialize>(
    task: usize,
    args: &[u8],
    fds: Vec<OwnedFd>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // SAFETY: as in `call_one`: `map::<A, R>` sent this function with a `fn(A) -> R`.
    let task = unsafe { std::mem::transmute::<usize, fn(A) -> R>(task) };
    let items: Vec<A> = arguments(args, fds)?;
    let results: Vec<R> = items.into_iter().map(task).collect();
    encode(&results, out).map_err(|e| unsendable(&results, e))?;
    Ok(())
}

/// `value` in postcard, appended to `out`. Through `Extend` rather than `io::Write`: postcard
/// writes a byte at a time, and `Vec`'s `extend` is cheaper per byte than `write_all`, which
/// makes a `map` of small items about a third faster.
pub(super) fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> postcard::Result<()> {
    postcard::to_extend(value, Append(out)).map(drop)
}

/// A vector appended to through a borrow: postcard's `to_extend` takes its writer by value.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// Why a task's result could not be encoded, in one sentence. A result crosses back as plain
/// postcard: one that holds a descriptor is refused, and the error says so.
pub(super) fn unsendable<R: Serialize + ?Sized>(result: &R, e: postcard::Error) -> String {
    match fds::encode(result) {
        Ok(message) if !message.fds.is_empty() => {
            "the result: it holds a descriptor, and descriptors cross only to a worker, in a \
             task's arguments"
                .into()
        }
        _ => uncodable("the result", e),
    }
}

/// Why `what` (the arguments, the result) could not cross, in one sentence.
pub(super) fn uncodable(what: &str, e: postcard::Error) -> String {
    format!(
        "{what} with postcard ({e}); postcard carries serde types whose shape the type says \
         (not untagged enums, flatten or serde_json::Value)"
    )
}

/// What a result frame (without its length) reports: for a task, its outcome and when it
/// started and ended, after the pool's base moment; `None` for a frame too short to be one.
pub(super) fn result_of(frame: &[u8]) -> Option<Report> {
    if frame.len() < RESULT_HEADER - 4 {
        return None;
    }
    let (kind, body) = (frame[0], &frame[RESULT_HEADER - 4..]);
    let nanos = |at: usize| u64::from_le_bytes(frame[at..at + 8].try_into().unwrap());
    let (start, end) = (
        Duration::from_nanos(nanos(1)),
        Duration::from_nanos(nanos(9)),
    );
    let text = || String::from_utf8_lossy(body).into_owned();
    let outcome = match kind {
        RETURNED => Ok(body.to_vec()),
        PANICKED => Err(Error::Panicked(text())),
        READY => return Some(Report::Ready),
        INIT_FAILED => return Some(Report::InitFailed(text())),
        _ => Err(Error::Serde(text())),
    };
    Some(Report::Ended(outcome, start, end))
}

// ---- In the worker ----

/// Now on the machine's monotonic clock (the clock of `Instant`, the same in every process),
/// in nanoseconds.
pub(super) fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| Duration::from(t).as_nanos() as u64)
}

/// A forked worker's life: it closes the pool's descriptors it inherited (it must hold no
/// copy of another worker's socket or of the manager's), then begins (`begin`).
pub(super) fn run(sock: &UnixStream, inherited: &[RawFd], base: u64, start: &Start) -> i32 {
    for &fd in inherited {
        // SAFETY: these descriptors belong to the parent's side of the pool. Their owners
        // live in memory this process copied and never uses again: it never returns into
        // the parent's code and ends with `_exit`, so nothing closes them a second time.
        unsafe { libc::close(fd) };
    }
    begin(sock, base, start)
}

/// What a spawned or forkserver worker is given: its end of the socketpair, the pool's base
/// moment on the monotonic clock, and how it starts and when it leaves.
#[derive(Serialize, Deserialize)]
pub(super) struct Boot {
    #[serde(with = "crate::fds")]
    pub(super) sock: UnixStream,
    pub(super) base: u64,
    pub(super) start: Start,
}

/// A spawned or forkserver worker's life, the target of its bootstrap. It inherited nothing
/// but stdio: the bootstrap closed every other descriptor.
pub(super) fn spawned(boot: Boot) {
    process::exit_now(begin(&boot.sock, boot.base, &boot.start))
}

/// A worker's life once it holds only its own socket: it runs the initializer if there is
/// one, then runs tasks from `sock` until the pool ends the stream or it has run its
/// `max_tasks`. Returns the exit code.
fn begin(sock: &UnixStream, base: u64, start: &Start) -> i32 {
    if let Some(init) = &start.init {
        // Reseeded first: an initializer may draw random numbers too.
        let _ = rand::rng().reseed();
        let mut report = vec![0; RESULT_HEADER];
        let ran = panic::catch_unwind(AssertUnwindSafe(|| {
            let (call, task, args) = parse(init)?;
            call(task, args, Vec::new(), &mut Vec::new())
        }));
        report[4] = match ran {
            Ok(Ok(())) => READY,
            Ok(Err(why)) => {
                report.extend_from_slice(why.as_bytes());
                INIT_FAILED
            }
            Err(payload) => {
                report.extend_from_slice(message(&*payload).as_bytes());
                INIT_FAILED
            }
        };
        let len = (report.len() - 4) as u32;
        report[..4].copy_from_slice(&len.to_le_bytes());
        if (&*sock).write_all(&report).is_err() || report[4] == INIT_FAILED {
            return 1;
        }
    }
    serve(sock, base, start.max_tasks.unwrap_or(usize::MAX))
}

/// A whole task frame's `Call`, task and arguments.
fn parse(frame: &[u8]) -> Result<(Call, usize, &[u8]), String> {
    let header = frame.get(..TASK_HEADER).ok_or("a short frame")?;
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
    // SAFETY: the pool made this frame with `task_frame` from the offset from `anchor` of a
    // `Call`, taken in an image of this same executable file, as `serve` reads them (see
    // there): the same file has the same code at the same distance from `anchor`.
    let call = unsafe { std::mem::transmute::<usize, Call>(address_at(word(4))) };
    Ok((call, address_at(word(12)), &frame[TASK_HEADER..]))
}

/// Runs tasks until the pool ends the task stream: 0, or 1 if the stream broke; or until it
/// has run `max_tasks`: 0. Each result says when its task started and ended, in nanoseconds
/// after `base` (`monotonic_ns`).
fn serve(sock: &UnixStream, base: u64, max_tasks: usize) -> i32 {
    let tasks = Tasks {
        sock,
        fds: VecDeque::new(),
        space: nix::cmsg_space!([RawFd; fds::MAX_FDS]),
    };
    // 8 KiB holds a few hundred small tasks; a longer frame is read past it, straight into
    // `args`. Not more: `BufReader` zeroes all of its buffer at the first read, and each page
    // a new worker touches is a page fault, which starting a pool pays four times over.
    let mut reader = BufReader::with_capacity(8 * 1024, tasks);
    let mut args = Vec::new();
    let mut out = Vec::new();
    let mut reseeded = false;
    for _ in 0..max_tasks {
        let mut header = [0; TASK_HEADER];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return 0,
            Err(_) => return 1,
        }
        let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
        let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        let (call, task) = (address_at(word(4)), address_at(word(12)));
        let Some(args_len) = len.checked_sub(TASK_HEADER - 4) else {
            return 1;
        };
        args.resize(args_len, 0);
        if reader.read_exact(&mut args).is_err() {
            return 1;
        }
        // Its descriptors came with its first bytes, so they are here, first in line.
        let count = u32::from_le_bytes(header[20..24].try_into().unwrap()) as usize;
        let queued = &mut reader.get_mut().fds;
        if queued.len() < count {
            return 1;
        }
        let fds: Vec<OwnedFd> = queued.drain(..count).collect();
        // SAFETY: only the pool writes to this socket, and it writes the offset from `anchor`
        // of a `Call`, taken in an image of this same executable file: this worker is a fork
        // of the pool's process, or was started from /proc/self/exe by spawn or by the
        // forkserver, whose bootstrap checked that this image runs the file the pool runs
        // (`spawn::receive`) before it called `spawned`. The same file has the same code at
        // the same distance from `anchor`, so `call` is that `Call` here.
        let call = unsafe { std::mem::transmute::<usize, Call>(call) };
        if !reseeded {
            // A forked random generator repeats the parent's numbers in every worker: reseed
            // the thread's generator from the OS before the first task, as Python's `random`
            // does after a fork. (Before the first task, not at start: a pool that is never
            // used pays nothing.)
            let _ = rand::rng().reseed();
            reseeded = true;
        }
        out.clear();
        out.resize(RESULT_HEADER, 0);
        let start = monotonic_ns().saturating_sub(base);
        let kind = match panic::catch_unwind(AssertUnwindSafe(|| call(task, &args, fds, &mut out)))
        {
            Ok(Ok(())) => RETURNED,
            Ok(Err(why)) => {
                out.truncate(RESULT_HEADER);
                out.extend_from_slice(why.as_bytes());
                UNCODABLE
            }
            Err(payload) => {
                out.truncate(RESULT_HEADER);
                out.extend_from_slice(message(&*payload).as_bytes());
                PANICKED
            }
        };
        let (kind, len) = match u32::try_from(out.len() - 4) {
            Ok(len) => (kind, len),
            Err(_) => {
                out.truncate(RESULT_HEADER);
                out.extend_from_slice(b"the result: over 4 GiB");
                (UNCODABLE, (out.len() - 4) as u32)
            }
        };
        let end = monotonic_ns().saturating_sub(base);
        out[..4].copy_from_slice(&len.to_le_bytes());
        out[4] = kind;
        out[5..13].copy_from_slice(&start.to_le_bytes());
        out[13..21].copy_from_slice(&end.to_le_bytes());
        if (&*sock).write_all(&out).is_err() {
            return 1;
        }
    }
    0
}

/// A worker's end of its task stream, read with `recvmsg`: the descriptors that come with
/// the bytes are kept, in the order they came, until their frame is read whole. A `recvmsg`
/// takes the descriptors of one write at most (the kernel stops there), so `space` always
/// has room for them.
struct Tasks<'a> {
    sock: &'a UnixStream,
    fds: VecDeque<OwnedFd>,
    space: Vec<u8>,
}

impl Read for Tasks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut iov = [IoSliceMut::new(buf)];
            let flags = MsgFlags::MSG_CMSG_CLOEXEC;
            let space = Some(&mut self.space[..]);
            match recvmsg::<()>(self.sock.as_raw_fd(), &mut iov, space, flags) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(msg) => {
                    self.fds.extend(fds::received_fds(&msg)?);
                    return Ok(msg.bytes);
                }
            }
        }
    }
}
