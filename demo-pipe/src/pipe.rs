//! Python's `multiprocessing.Pipe`: two connected ends that carry typed values between
//! processes, built on a Unix socketpair.
//!
//! Each message is a frame: a 4-byte little-endian length, then the value encoded with
//! postcard (a compact serde format). Python pickles the object and frames it the same way.
//! `send`, `recv` and `poll` behave as Python's, with one difference: `recv` on an end whose
//! peer has closed, or whose peer's process has died, returns `Error::Eof` (Python raises
//! `EOFError`), never waits for ever.
//!
//! A fork copies every open descriptor, so a child started with one end also holds a copy of
//! the other end, which would keep the pipe open after the parent closes its end. Python asks
//! the child to call `parent_conn.close()`; a Rust child cannot even name `parent_conn`. So the
//! first time an end is used in a process other than the one that made the pipe, it releases
//! the copy of its twin that the fork left there (see `release_twin`).
//!
//! Two threads cannot use one end at once: `send` and `recv` take `&mut self`, so sharing an
//! end between threads needs a lock, and the compiler refuses the program without one:
//!
//! ```compile_fail
//! let (mut a, _b) = demo_pipe::pipe::pipe().unwrap();
//! std::thread::scope(|s| {
//!     s.spawn(|| a.send(&1).unwrap());
//!     s.spawn(|| a.send(&2).unwrap()); // error[E0499]: `a` is already borrowed mutably
//! });
//! ```
//!
//! The same program with a lock compiles, and each frame goes out whole:
//!
//! ```
//! let (a, mut b) = demo_pipe::pipe::pipe().unwrap();
//! let a = std::sync::Mutex::new(a);
//! std::thread::scope(|s| {
//!     s.spawn(|| a.lock().unwrap().send(&1).unwrap());
//!     s.spawn(|| a.lock().unwrap().send(&2).unwrap());
//! });
//! let sum: i32 = b.recv::<i32>().unwrap() + b.recv::<i32>().unwrap();
//! assert_eq!(sum, 3);
//! ```

use std::any::{Any, TypeId};
use std::fmt;
use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

/// Python's `Pipe()`: two ends, each of which can send and receive.
pub fn pipe() -> io::Result<(Connection, Connection)> {
    pipe_duplex(true)
}

/// Python's `Pipe(duplex)`. With `duplex` false the first end can only receive and the second
/// can only send, as in Python.
pub fn pipe_duplex(duplex: bool) -> io::Result<(Connection, Connection)> {
    // std opens both ends with close-on-exec: a program started by exec inherits neither.
    let (a, b) = UnixStream::pair()?;
    let twins = Arc::new(Twins {
        maker: std::process::id(),
        fds: [a.as_raw_fd(), b.as_raw_fd()],
        closed: [AtomicBool::new(false), AtomicBool::new(false)],
    });
    let (a_mode, b_mode) = if duplex {
        (Mode::Duplex, Mode::Duplex)
    } else {
        (Mode::RecvOnly, Mode::SendOnly)
    };
    Ok((
        Connection::new(a, 0, a_mode, twins.clone()),
        Connection::new(b, 1, b_mode, twins),
    ))
}

/// Why `send` or `recv` failed.
#[derive(Debug)]
pub enum Error {
    /// The other end was closed, or its process ended, before a whole message came:
    /// Python's `EOFError`.
    Eof,
    /// The bytes are not a `T` (the two sides disagree on the type), or `T` could not be
    /// encoded.
    Data(postcard::Error),
    /// Any other failure of the socket, such as sending to an end that was closed
    /// (Python's `BrokenPipeError`) or using an end in the wrong direction.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Eof => write!(f, "EOFError: the other end of the pipe was closed"),
            Error::Data(e) => write!(f, "the message is not of the expected type: {e}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            Error::Eof => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            Error::Data(_) => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Duplex,
    RecvOnly,
    SendOnly,
}

/// What the two ends of one pipe know about each other, in each process's own copy of memory.
struct Twins {
    /// The process that made the pipe, where both ends legitimately live at first.
    maker: u32,
    fds: [RawFd; 2],
    /// Whether end `i`'s descriptor is closed (or released) in this process.
    closed: [AtomicBool; 2],
}

/// One end of a pipe: Python's `Connection`.
pub struct Connection {
    /// Reads go through a buffer, so that a small message costs one `read` call, not two.
    socket: BufReader<UnixStream>,
    end: usize,
    mode: Mode,
    twins: Arc<Twins>,
    /// Buffers kept between messages, so that a stream of small messages allocates nothing.
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
}

/// Frame length prefix.
const HEADER: usize = 4;
/// A piece of an encoded value this long or longer is written from where it is, not copied.
const BULK: usize = 4 << 10;
/// A frame this long or longer whose value is one run of bytes is read into the value itself.
const RUN: usize = 1 << 10;
/// A body this long or longer is read straight from the socket, not through the read buffer.
const DIRECT: usize = 16 << 10;
/// A receive buffer larger than this is given back after a message of less than half its size.
const KEEP: usize = 4 << 20;

impl Connection {
    fn new(socket: UnixStream, end: usize, mode: Mode, twins: Arc<Twins>) -> Connection {
        Connection {
            socket: BufReader::with_capacity(64 << 10, socket),
            end,
            mode,
            twins,
            send_buf: Vec::new(),
            recv_buf: Vec::new(),
        }
    }

    /// Python's `send(obj)`: sends one value, which arrives whole or not at all.
    pub fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if self.mode == Mode::RecvOnly {
            return Err(io::Error::other("connection is read-only").into());
        }
        self.release_twin();
        // Counting the bytes first walks the value without copying anything.
        let len = postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(
            value,
            Default::default(),
        )
        .map_err(Error::Data)?;
        let header = u32::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message larger than 4 GiB"))?
            .to_le_bytes();
        // Small pieces (the header, lengths, numbers) gather in `send_buf`; a bulk piece (a
        // `Bytes`, a long `String`) goes out with them in one `writev`, straight from where it
        // is: a small message is one system call, and a large one is not copied on the way.
        self.send_buf.clear();
        self.send_buf.extend_from_slice(&header);
        let mut out = Gather {
            socket: self.socket.get_ref(),
            pending: &mut self.send_buf,
            failed: None,
        };
        let encoded = postcard::to_io(value, &mut out).map(drop);
        // postcard reports a failed write as its own error: the socket's comes first.
        if let Some(e) = out.failed.take() {
            return Err(e.into());
        }
        // postcard flushes at the end: what is still pending is written by then.
        encoded.map_err(Error::Data)
    }

    /// Python's `recv()`: waits for the next value. `Error::Eof` once the other end is
    /// closed and every message it sent has been read.
    ///
    /// A `serde_bytes::ByteBuf`, a `Vec<u8>` or a `String` of 1 KiB or more is read from the
    /// socket straight into the vector that becomes the value, without a copy on the way.
    pub fn recv<T: DeserializeOwned + 'static>(&mut self) -> Result<T, Error> {
        if self.mode == Mode::SendOnly {
            return Err(io::Error::other("connection is write-only").into());
        }
        self.release_twin();
        let mut header = [0; HEADER];
        read_exact(&mut self.socket, &mut header)?;
        let len = u32::from_le_bytes(header) as usize;
        let mut prefix = Vec::new();
        if len >= RUN && is_one_run::<T>() {
            match self.recv_run::<T>(len)? {
                Run::Value(value) => {
                    return Ok(*value.downcast::<T>().expect("the type was checked"));
                }
                // Another type was sent: the bytes read so far start the frame.
                Run::Not(read) => prefix = read,
            }
        }
        let len = len - prefix.len();
        // `recv_buf` is kept initialised (zeroed when it grows), so that reading into it
        // needs no zeroing per message.
        let mut buf = std::mem::take(&mut self.recv_buf);
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let body = &mut buf[..len];
        let read = if len < DIRECT {
            self.socket.read_exact(body)
        } else {
            // What the read buffer holds of the body, then the rest straight from the socket,
            // in as few calls as the socket allows: no copy on the way.
            let buffered = self.socket.buffer().len().min(len);
            body[..buffered].copy_from_slice(&self.socket.buffer()[..buffered]);
            self.socket.consume(buffered);
            self.socket.get_ref().read_exact(&mut body[buffered..])
        };
        let result = match read {
            Ok(()) if prefix.is_empty() => decode(body),
            Ok(()) => decode(&[&prefix[..], body].concat()),
            Err(e) => Err(eof_or(e)),
        };
        // Kept while messages stay about its size, so that a stream of large messages does
        // not allocate (and fault in) a fresh buffer each; given back after a much smaller one.
        if buf.len() <= KEEP.max(2 * len) {
            self.recv_buf = buf;
        }
        result
    }

    /// A frame of `len` bytes whose value is one run of bytes (see `is_one_run`): the run's
    /// length, then the run read straight from the socket into the vector that becomes the
    /// value, with no copy on the way. If the length says that the frame holds something
    /// else, the bytes read so far, for `recv` to read the rest after them.
    fn recv_run<T: 'static>(&mut self, len: usize) -> Result<Run, Error> {
        // postcard's length: 7 bits a byte, low first, the high bit set on all but the last.
        let mut read = Vec::new();
        let mut run = 0u64;
        loop {
            let mut byte = [0];
            read_exact(&mut self.socket, &mut byte)?;
            read.push(byte[0]);
            run |= u64::from(byte[0] & 0x7f) << (7 * (read.len() - 1));
            if byte[0] & 0x80 == 0 {
                break;
            }
            if read.len() == 10 || read.len() == len {
                return Ok(Run::Not(read));
            }
        }
        if run != (len - read.len()) as u64 {
            return Ok(Run::Not(read));
        }
        let run = run as usize;
        let mut bytes = Vec::with_capacity(run);
        let buffered = self.socket.buffer().len().min(run);
        bytes.extend_from_slice(&self.socket.buffer()[..buffered]);
        self.socket.consume(buffered);
        // Straight into `bytes`, without zeroing it first, in as few calls as the socket allows.
        let rest = (run - buffered) as u64;
        match self.socket.get_ref().take(rest).read_to_end(&mut bytes) {
            Ok(_) if bytes.len() == run => {}
            Ok(_) => return Err(Error::Eof),
            Err(e) => return Err(eof_or(e)),
        }
        let value: Box<dyn Any> = if TypeId::of::<T>() == TypeId::of::<String>() {
            let text = String::from_utf8(bytes);
            Box::new(text.map_err(|_| Error::Data(postcard::Error::DeserializeBadUtf8))?)
        } else if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
            Box::new(bytes)
        } else {
            Box::new(ByteBuf::from(bytes))
        };
        Ok(Run::Value(value))
    }

    /// Python's `poll(timeout)`: whether `recv` would return at once, waiting at most
    /// `timeout` for it. True also when the other end is closed: `recv` then returns `Eof`.
    pub fn poll(&mut self, timeout: Duration) -> io::Result<bool> {
        self.release_twin();
        if !self.socket.buffer().is_empty() {
            return Ok(true);
        }
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(
            self.socket.get_ref().as_fd(),
            PollFlags::POLLIN,
        )];
        loop {
            match poll(&mut fds, timeout) {
                // A signal that interrupts the wait restarts it with the whole timeout;
                // the demos install no handlers, so this does not loop for ever.
                Err(nix::Error::EINTR) => continue,
                Ok(n) => return Ok(n > 0),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Python's `close()`. Dropping the connection does the same.
    pub fn close(self) {}

    /// In a forked child, closes the copy of the other end that the fork left here, so that
    /// the pipe ends when the process that really holds that end closes it or dies.
    ///
    /// It acts only outside the process that made the pipe (there both ends are real) and
    /// only once. A child given both ends of one pipe would lose one of them: a pipe joins
    /// two processes, so that use is a mistake.
    fn release_twin(&self) {
        let twin = 1 - self.end;
        // The flag first: it is usually set (the twin left this process, or was released
        // already), and reading it costs less than asking the kernel for our pid.
        if self.twins.closed[twin].load(Ordering::SeqCst)
            || std::process::id() == self.twins.maker
            || self.twins.closed[twin].swap(true, Ordering::SeqCst)
        {
            return;
        }
        // The twin's descriptor is replaced, not closed, by a socket whose peer is gone: its
        // number stays taken, so the twin's `Connection` (which still owns the number, and
        // will close it if it is ever dropped) never reaches a file opened later.
        let Ok((dead, _)) = UnixStream::pair() else {
            return;
        };
        // SAFETY: `dead` is a descriptor we own; `twins.fds[twin]` is open in this process
        // (its `closed` flag was clear, and `Connection::drop` sets it before closing) and
        // owned by the twin `Connection`. dup3 swaps what that number refers to in one step;
        // the number itself remains owned by the twin.
        unsafe { libc::dup3(dead.as_raw_fd(), self.twins.fds[twin], libc::O_CLOEXEC) };
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Mark first, then the field drop closes the descriptor: a fork in between leaves
        // the child a copy it will not touch, never a flag that points at a reused number.
        self.twins.closed[self.end].store(true, Ordering::SeqCst);
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.socket.get_ref().as_raw_fd())
            .finish()
    }
}

/// A frame on its way out: small pieces gather in `pending`, and a bulk piece leaves with
/// them in one `writev`.
struct Gather<'a> {
    socket: &'a UnixStream,
    pending: &'a mut Vec<u8>,
    /// Why a write failed, which postcard would otherwise report as a full buffer.
    failed: Option<io::Error>,
}

impl Gather<'_> {
    /// `pending`, then `piece`, in as few `writev` calls as the socket allows.
    fn write_both(&mut self, piece: &[u8]) -> io::Result<()> {
        let mut slices = [IoSlice::new(self.pending), IoSlice::new(piece)];
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match self.socket.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pending.clear();
        Ok(())
    }
}

impl Write for Gather<'_> {
    fn write(&mut self, piece: &[u8]) -> io::Result<usize> {
        if piece.len() < BULK {
            self.pending.extend_from_slice(piece);
        } else if let Err(e) = self.write_both(piece) {
            let kind = e.kind();
            self.failed = Some(e);
            return Err(kind.into());
        }
        Ok(piece.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut socket = self.socket;
        if let Err(e) = socket.write_all(self.pending) {
            let kind = e.kind();
            self.failed = Some(e);
            return Err(kind.into());
        }
        self.pending.clear();
        Ok(())
    }
}

/// The types whose postcard encoding is one run of bytes, its length first: `recv` reads a
/// large one straight into the value. Any other type is decoded from the frame as a whole.
fn is_one_run<T: 'static>() -> bool {
    [
        TypeId::of::<ByteBuf>(),
        TypeId::of::<Vec<u8>>(),
        TypeId::of::<String>(),
    ]
    .contains(&TypeId::of::<T>())
}

/// What `recv_run` found.
enum Run {
    /// The value, of the type `recv` asked for.
    Value(Box<dyn Any>),
    /// The frame holds something else: the bytes read of it so far.
    Not(Vec<u8>),
}

/// Decodes a whole frame: bytes left over mean the sender sent some other type.
fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, Error> {
    match postcard::take_from_bytes(frame) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err(Error::Data(postcard::Error::DeserializeBadEncoding)),
        Err(e) => Err(Error::Data(e)),
    }
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), Error> {
    reader.read_exact(buf).map_err(eof_or)
}

/// The ways a socket read reports that the other end has gone.
fn eof_or(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => Error::Eof,
        _ => Error::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Process;
    use serde::Deserialize;

    // A forked child's output is lost inside the test harness: children report through
    // their exit code, and a failed assertion in a child is exit code 1.

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Point {
        x: i32,
        name: String,
    }

    #[test]
    fn values_cross_in_order_both_ways() {
        let (mut a, mut b) = pipe().unwrap();
        a.send(&Point {
            x: 1,
            name: "one".into(),
        })
        .unwrap();
        a.send(&Point {
            x: 2,
            name: "two".into(),
        })
        .unwrap();
        b.send("back").unwrap();
        assert_eq!(
            b.recv::<Point>().unwrap(),
            Point {
                x: 1,
                name: "one".into()
            }
        );
        assert_eq!(b.recv::<Point>().unwrap().x, 2);
        assert_eq!(a.recv::<String>().unwrap(), "back");
    }

    #[test]
    fn a_child_sends_and_the_parent_answers() {
        let (mut parent, child) = pipe().unwrap();
        let mut p = Process::new(
            |mut conn: Connection| {
                conn.send(&Point {
                    x: 42,
                    name: "from the child".into(),
                })
                .unwrap();
                assert_eq!(conn.recv::<u64>().unwrap(), 43);
            },
            child,
        );
        p.start().unwrap();
        let got: Point = parent.recv().unwrap();
        assert_eq!(got.name, "from the child");
        parent.send(&(got.x as u64 + 1)).unwrap();
        assert_eq!(p.join().unwrap(), 0);
    }

    #[test]
    fn eof_after_the_peer_closes() {
        let (mut parent, child) = pipe().unwrap();
        let mut p = Process::new(
            |mut conn: Connection| {
                conn.send(&7u8).unwrap();
                conn.close();
                // Still alive while the parent reads: the EOF comes from `close`, not from exit.
                loop {
                    std::thread::park();
                }
            },
            child,
        );
        p.start().unwrap();
        // What was sent before the close is still delivered, then EOF.
        assert_eq!(parent.recv::<u8>().unwrap(), 7);
        assert!(matches!(parent.recv::<u8>(), Err(Error::Eof)));
        assert!(p.is_alive().unwrap());
        p.kill().unwrap();
        p.join().unwrap();
    }

    #[test]
    fn eof_after_the_peer_process_is_killed() {
        let (mut parent, child) = pipe().unwrap();
        let mut p = Process::new(
            |mut conn: Connection| {
                conn.send(&"ready").unwrap();
                // Blocks in recv, holding its end open, until it is killed.
                let _: u8 = conn.recv().unwrap();
            },
            child,
        );
        p.start().unwrap();
        assert_eq!(parent.recv::<String>().unwrap(), "ready");
        p.kill().unwrap();
        assert!(matches!(parent.recv::<u8>(), Err(Error::Eof)));
        assert_eq!(p.join().unwrap(), -9);
    }

    #[test]
    fn a_child_sees_eof_when_the_parent_closes_its_end() {
        // The child holds a copy of the parent's end from the fork; it must let go of it,
        // or this recv would wait for ever.
        let (parent, child) = pipe().unwrap();
        let mut p = Process::new(
            |mut conn: Connection| {
                assert!(matches!(conn.recv::<u8>(), Err(Error::Eof)));
            },
            child,
        );
        p.start().unwrap();
        parent.close();
        assert_eq!(p.join().unwrap(), 0);
    }

    #[test]
    fn send_to_a_closed_end_is_an_error() {
        let (mut a, b) = pipe().unwrap();
        drop(b);
        let err = a.send(&1).unwrap_err();
        assert!(
            matches!(&err, Error::Io(e) if e.kind() == io::ErrorKind::BrokenPipe),
            "{err}"
        );
    }

    #[test]
    fn poll_times_out_then_sees_a_message() {
        let (mut a, mut b) = pipe().unwrap();
        assert!(!a.poll(Duration::from_millis(20)).unwrap());
        assert!(!a.poll(Duration::ZERO).unwrap());
        b.send(&5).unwrap();
        assert!(a.poll(Duration::ZERO).unwrap());
        assert_eq!(a.recv::<i32>().unwrap(), 5);
        drop(b);
        // A closed peer makes the end readable: recv then says EOF.
        assert!(a.poll(Duration::from_secs(60)).unwrap());
        assert!(matches!(a.recv::<i32>(), Err(Error::Eof)));
    }

    #[test]
    fn poll_sees_messages_already_in_the_read_buffer() {
        let (mut a, mut b) = pipe().unwrap();
        b.send(&1).unwrap();
        b.send(&2).unwrap();
        // Both frames are read from the socket by the first recv; the second is buffered.
        assert_eq!(a.recv::<i32>().unwrap(), 1);
        assert!(a.poll(Duration::ZERO).unwrap());
        assert_eq!(a.recv::<i32>().unwrap(), 2);
    }

    #[test]
    fn a_one_way_pipe_refuses_the_wrong_direction() {
        let (mut r, mut w) = pipe_duplex(false).unwrap();
        assert_eq!(
            r.send(&1).unwrap_err().to_string(),
            "connection is read-only"
        );
        assert_eq!(
            w.recv::<i32>().unwrap_err().to_string(),
            "connection is write-only"
        );
        w.send(&9).unwrap();
        assert_eq!(r.recv::<i32>().unwrap(), 9);
    }

    #[test]
    fn the_wrong_type_is_a_data_error() {
        let (mut a, mut b) = pipe().unwrap();
        a.send(&"not a number").unwrap();
        assert!(matches!(b.recv::<u64>(), Err(Error::Data(_))));
    }

    #[test]
    fn messages_of_every_size_arrive_whole_between_small_ones() {
        // Around each threshold: a piece written from where it is (BULK), a body read
        // straight from the socket (DIRECT), a receive buffer kept or given back (KEEP).
        let sizes = [
            0,
            1,
            BULK - 1,
            BULK,
            DIRECT - 1,
            DIRECT,
            64 << 10,
            KEEP,
            KEEP + 1,
            3 * KEEP,
            3 * KEEP + 7,
            5,
        ];
        fn pattern(size: usize) -> Vec<u8> {
            (0..size).map(|i| (i * 31 + size) as u8).collect()
        }
        let (mut parent, child) = pipe().unwrap();
        let mut p = Process::new(
            move |mut conn: Connection| {
                for size in sizes {
                    conn.send(serde_bytes::Bytes::new(&pattern(size))).unwrap();
                    conn.send(&(size as u64)).unwrap();
                    // A value with a bulk piece between small ones.
                    let text = "é".repeat(size / 2);
                    conn.send(&(size as u32, text, size as u8)).unwrap();
                }
            },
            child,
        );
        p.start().unwrap();
        for size in sizes {
            let got: serde_bytes::ByteBuf = parent.recv().unwrap();
            assert!(got.as_slice() == pattern(size), "{size} bytes");
            assert_eq!(parent.recv::<u64>().unwrap(), size as u64);
            let (n, text, last): (u32, String, u8) = parent.recv().unwrap();
            assert_eq!((n, last), (size as u32, size as u8));
            assert!(text == "é".repeat(size / 2), "{size} bytes of text");
        }
        assert!(matches!(parent.recv::<u8>(), Err(Error::Eof)));
        assert_eq!(p.join().unwrap(), 0);
    }

    #[test]
    fn bytes_and_strings_read_into_the_value_and_other_frames_are_decoded_whole() {
        let (mut a, mut b) = pipe().unwrap();
        let bytes: Vec<u8> = (0..100_000).map(|i| (i % 251) as u8).collect();
        a.send(serde_bytes::Bytes::new(&bytes)).unwrap();
        a.send(&bytes).unwrap(); // A `Vec<u8>` without serde_bytes: the same bytes on the wire.
        a.send(&"ü".repeat(1000)).unwrap();
        assert!(b.recv::<ByteBuf>().unwrap().as_slice() == bytes.as_slice());
        assert!(b.recv::<Vec<u8>>().unwrap() == bytes);
        assert!(b.recv::<String>().unwrap() == "ü".repeat(1000));
        // Not a run of bytes: a number that is not the length, then 2000 bytes.
        a.send(&(5000u64, serde_bytes::Bytes::new(&[1u8; 2000])))
            .unwrap();
        // Bytes that are not UTF-8, asked for as a `String`.
        a.send(serde_bytes::Bytes::new(&[0xff; 2000])).unwrap();
        a.send(&"after").unwrap();
        assert!(matches!(b.recv::<ByteBuf>(), Err(Error::Data(_))));
        assert!(matches!(b.recv::<String>(), Err(Error::Data(_))));
        // Each wrong frame was read whole: the next message is intact.
        assert_eq!(b.recv::<String>().unwrap(), "after");
    }

    #[test]
    fn a_64_mib_message_arrives_whole_from_another_process() {
        const LEN: usize = 64 << 20;
        fn pattern(i: usize) -> u8 {
            (i.wrapping_mul(2654435761) >> 7) as u8
        }
        let (mut parent, child) = pipe().unwrap();
        let mut p = Process::new(
            |mut conn: Connection| {
                let data: Vec<u8> = (0..LEN).map(pattern).collect();
                conn.send(serde_bytes::Bytes::new(&data)).unwrap();
            },
            child,
        );
        p.start().unwrap();
        let got: serde_bytes::ByteBuf = parent.recv().unwrap();
        assert_eq!(got.len(), LEN);
        assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(i)));
        assert_eq!(p.join().unwrap(), 0);
    }
}
