//! Descriptors inside serde values, for values that cross to another process: a pipe end, a
//! socket, a memfd of shared memory given as an argument to a spawned or forkserver child.
//!
//! Bytes can be copied to another process; a descriptor cannot, the kernel has to install it
//! there (`SCM_RIGHTS` on a Unix socket). So `encode` turns a value into a `Message`: its bytes
//! (postcard), where each descriptor field (`#[serde(with = "fds")]`) is only an index, and the
//! list of descriptors those indices point into. `send_message` writes both on a socket,
//! `recv_message` reads them back, and `decode` gives each field its descriptor by index. Outside `encode` and
//! `decode`, such a field is a serde error (a descriptor means nothing in JSON or in a file),
//! never a panic.
//!
//! This file is the same in every demo crate that starts processes, so that each crate can be
//! copied out alone; a test in the xtask checks that the copies stay identical.

#![allow(dead_code)] // Each demo uses its own part of this file.

use std::cell::RefCell;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, send, sendmsg};
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value ready to cross: its bytes, and the descriptors its fields refer to by index.
#[derive(Debug, Default)]
pub struct Message {
    /// The value, encoded with postcard.
    pub bytes: Vec<u8>,
    /// The value's descriptors, in the order of their indices in `bytes`.
    pub fds: Vec<OwnedFd>,
}

/// The most descriptors one message can carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

// SAFETY: CMSG_SPACE only computes a size.
const CMSG_SPACE: usize = unsafe { libc::CMSG_SPACE((MAX_FDS * 4) as u32) } as usize;

/// Room for the control message of `MAX_FDS` descriptors, aligned as a `cmsghdr` must be.
#[repr(C, align(8))]
struct CmsgSpace([u8; CMSG_SPACE]);

/// While `encode` or `decode` runs on this thread: where descriptor fields go, or come from.
enum Scope {
    Outside,
    Encoding(Vec<OwnedFd>),
    Decoding(Vec<Option<OwnedFd>>),
}

thread_local! {
    static SCOPE: RefCell<Scope> = const { RefCell::new(Scope::Outside) };
    /// The last descriptor error on this thread: postcard keeps only "custom error".
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A serde error about a descriptor field, remembered for `encode` and `decode` to report.
fn fd_error(message: String) -> String {
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(message.clone()));
    message
}

/// Runs `f` with `scope` as this thread's scope, and gives back the scope as `f` left it. The
/// previous scope comes back afterwards, even if `f` panics.
fn within<T>(scope: Scope, f: impl FnOnce() -> T) -> (T, Scope) {
    struct Restore(Option<Scope>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take().unwrap_or(Scope::Outside);
            SCOPE.with(|s| *s.borrow_mut() = previous);
        }
    }
    let mut restore = Restore(Some(SCOPE.with(|s| s.replace(scope))));
    LAST_ERROR.with(|e| e.borrow_mut().take());
    let result = f();
    let ours = SCOPE.with(|s| s.replace(restore.0.take().unwrap_or(Scope::Outside)));
    (result, ours)
}

const OUTSIDE: &str = "a descriptor field can only be sent to a child process \
                       (as the arguments of a spawn or forkserver target, or with fds::encode)";

/// Serializes a descriptor field: use with `#[serde(with = "fds")]` on a field of a type
/// that is `AsFd` and `From<OwnedFd>` (`OwnedFd`, `UnixStream`, `File`, ...). The value keeps
/// its descriptor; the message gets a duplicate.
pub fn serialize<F: AsFd, S: Serializer>(fd: &F, serializer: S) -> Result<S::Ok, S::Error> {
    let index = SCOPE
        .with(|scope| match &mut *scope.borrow_mut() {
            Scope::Encoding(fds) => {
                let copy = fd.as_fd().try_clone_to_owned();
                fds.push(copy.map_err(|e| fd_error(e.to_string()))?);
                Ok(fds.len() - 1)
            }
            _ => Err(fd_error(OUTSIDE.into())),
        })
        .map_err(S::Error::custom)?;
    serializer.serialize_u32(index as u32)
}

/// Deserializes a descriptor field; see `serialize`.
pub fn deserialize<'de, F: From<OwnedFd>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<F, D::Error> {
    let index = u32::deserialize(deserializer)? as usize;
    SCOPE
        .with(|scope| match &mut *scope.borrow_mut() {
            Scope::Decoding(fds) => fds
                .get_mut(index)
                .and_then(Option::take)
                .map(F::from)
                .ok_or_else(|| fd_error(format!("no descriptor number {index} came"))),
            _ => Err(fd_error(OUTSIDE.into())),
        })
        .map_err(D::Error::custom)
}

pub use self::deserialize as deserialize_fd;
pub use self::serialize as serialize_fd;

/// Encodes `value` with postcard, collecting its descriptor fields.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> io::Result<Message> {
    let (bytes, scope) = within(Scope::Encoding(Vec::new()), || postcard::to_stdvec(value));
    let bytes = bytes.map_err(|e| postcard_error("encode", e))?;
    let Scope::Encoding(fds) = scope else {
        unreachable!("the scope stays what `within` set")
    };
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a message carries at most {MAX_FDS} descriptors"),
        ));
    }
    Ok(Message { bytes, fds })
}

/// Decodes a value that `encode` made, giving its descriptor fields their descriptors. Those
/// that no field takes are closed.
pub fn decode<T: DeserializeOwned>(message: Message) -> io::Result<T> {
    let fds = message.fds.into_iter().map(Some).collect();
    let (value, _) = within(Scope::Decoding(fds), || {
        postcard::from_bytes(&message.bytes)
    });
    value.map_err(|e| postcard_error("decode", e))
}

fn postcard_error(what: &str, e: postcard::Error) -> io::Error {
    let saved = LAST_ERROR.with(|e| e.borrow_mut().take());
    if let (Some(message), postcard::Error::SerdeSerCustom | postcard::Error::SerdeDeCustom) =
        (saved, &e)
    {
        return io::Error::new(io::ErrorKind::InvalidData, message);
    }
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "cannot {what} a value for another process with postcard ({e}); postcard carries \
             serde types whose shape the type says (not untagged enums, flatten or \
             serde_json::Value)"
        ),
    )
}

/// Writes `message` on a stream socket: a header (length, number of descriptors) that carries
/// the descriptors (`SCM_RIGHTS`), then the bytes. Blocks until the peer has room; the peer's
/// death ends it with an error.
pub fn send_message(socket: BorrowedFd, message: &Message) -> io::Result<()> {
    Outgoing::new(&[], message).send_rest(socket)
}

/// A message on its way out of a stream socket, after `prefix` (bytes of the caller's own, read
/// back by `recv_message`): one `sendmsg` carries the descriptors and as much as the socket
/// takes, so a small message costs one system call.
pub struct Outgoing<'a> {
    pub(crate) head: Vec<u8>,
    body: &'a [u8],
    fds: &'a [OwnedFd],
    sent: usize,
}

impl<'a> Outgoing<'a> {
    /// `prefix`, then `message`, ready to send.
    pub fn new(prefix: &[u8], message: &'a Message) -> Outgoing<'a> {
        let mut head = Vec::with_capacity(prefix.len() + 12);
        head.extend_from_slice(prefix);
        head.extend_from_slice(&(message.bytes.len() as u64).to_le_bytes());
        head.extend_from_slice(&(message.fds.len() as u32).to_le_bytes());
        Outgoing {
            head,
            body: &message.bytes,
            fds: &message.fds,
            sent: 0,
        }
    }

    /// Sends what the socket takes without waiting (possibly all, possibly nothing, even before
    /// anyone reads the other end). True once everything is sent.
    pub fn send_now(&mut self, socket: BorrowedFd) -> io::Result<bool> {
        self.send(socket, MsgFlags::MSG_DONTWAIT)
    }

    /// Sends the rest, waiting for the peer to read; the peer's death ends it with an error
    /// (`BrokenPipe`).
    pub fn send_rest(&mut self, socket: BorrowedFd) -> io::Result<()> {
        while !self.send(socket, MsgFlags::empty())? {}
        Ok(())
    }

    fn send(&mut self, socket: BorrowedFd, flags: MsgFlags) -> io::Result<bool> {
        let total = self.head.len() + self.body.len();
        while self.sent < total {
            let (head, body) = if self.sent < self.head.len() {
                (&self.head[self.sent..], self.body)
            } else {
                (&[][..], &self.body[self.sent - self.head.len()..])
            };
            let iov = [IoSlice::new(head), IoSlice::new(body)];
            let raw: Vec<RawFd> = self.fds.iter().map(AsRawFd::as_raw_fd).collect();
            let rights = [ControlMessage::ScmRights(&raw)];
            // The descriptors go with the first bytes, and only with them.
            let with_fds = self.sent == 0 && !raw.is_empty();
            let cmsgs: &[ControlMessage] = if with_fds { &rights } else { &[] };
            let flags = flags | MsgFlags::MSG_NOSIGNAL;
            match sendmsg::<()>(socket.as_raw_fd(), &iov, cmsgs, flags, None) {
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) => return Ok(false),
                Err(e) => return Err(e.into()),
                Ok(n) => self.sent += n,
            }
        }
        Ok(true)
    }
}

/// Writes all of `bytes` on a socket; `MSG_NOSIGNAL`, so that a closed peer is an error
/// (`BrokenPipe`), never a signal.
pub fn send_all(socket: BorrowedFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match send(socket.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(n) => bytes = &bytes[n..],
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes from a socket; the peer's end (EOF) before that is an
/// `UnexpectedEof` error. Reads no further, so descriptors sent after these bytes stay queued.
pub fn recv_exact(socket: BorrowedFd, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::read(socket, buf) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
        }
    }
    Ok(())
}

/// Reads a message that `send_message` wrote. Its descriptors arrive close-on-exec.
pub fn recv_message(socket: BorrowedFd) -> io::Result<Message> {
    recv_message_after(socket, &mut [])
}

/// Reads the `prefix` bytes an `Outgoing` sent before its message, then the message.
pub fn recv_message_after(socket: BorrowedFd, prefix: &mut [u8]) -> io::Result<Message> {
    recv_head(socket, prefix)?.recv_body(socket)
}

/// A message whose header (and descriptors) have come, and whose bytes have not yet been read:
/// the reader can check its prefix first.
pub struct Incoming {
    len: u64,
    fds: Vec<OwnedFd>,
}

/// Reads the `prefix` bytes an `Outgoing` sent before its message, and the message's header.
pub fn recv_head(socket: BorrowedFd, prefix: &mut [u8]) -> io::Result<Incoming> {
    let mut header = [0u8; 12];
    // On the stack: a forked child that allocates nothing copies fewer pages of its parent's.
    let mut space = CmsgSpace([0; CMSG_SPACE]);
    // The descriptors come with the first bytes: a `recvmsg` takes them. It reads no further
    // than the header, and `recv_exact` after it neither, so nothing is read past the message.
    let (got, fds) = loop {
        let mut iov = [IoSliceMut::new(prefix), IoSliceMut::new(&mut header)];
        let flags = MsgFlags::MSG_CMSG_CLOEXEC;
        match recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space.0), flags) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(msg) => break (msg.bytes, received_fds(&msg)?),
        }
    };
    if got == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if got < prefix.len() {
        recv_exact(socket, &mut prefix[got..])?;
        recv_exact(socket, &mut header)?;
    } else {
        recv_exact(socket, &mut header[got - prefix.len()..])?;
    }
    let count = u32::from_le_bytes(header[8..].try_into().unwrap()) as usize;
    if fds.len() != count {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{count} descriptors were sent, {} came", fds.len()),
        ));
    }
    let len = u64::from_le_bytes(header[..8].try_into().unwrap());
    Ok(Incoming { len, fds })
}

impl Incoming {
    /// Reads the message's bytes. A length this process cannot hold is an error, not an abort.
    pub fn recv_body(self, socket: BorrowedFd) -> io::Result<Message> {
        let too_long = || io::Error::new(io::ErrorKind::InvalidData, "a message too long to hold");
        let len = usize::try_from(self.len).map_err(|_| too_long())?;
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len).map_err(|_| too_long())?;
        bytes.resize(len, 0);
        recv_exact(socket, &mut bytes)?;
        Ok(Message {
            bytes,
            fds: self.fds,
        })
    }
}

/// The descriptors a `recvmsg` received, now owned; an error if some were cut off.
pub fn received_fds<S>(msg: &nix::sys::socket::RecvMsg<'_, '_, S>) -> io::Result<Vec<OwnedFd>> {
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel has just installed these descriptors in this process for this
            // message; nothing else knows their numbers yet.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors were cut off",
        ));
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[derive(Debug, Serialize, Deserialize)]
    struct WithFd {
        name: String,
        #[serde(with = "crate::fds")]
        end: UnixStream,
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        let flags = SockFlag::SOCK_CLOEXEC;
        socketpair(AddressFamily::Unix, SockType::Stream, None, flags).unwrap()
    }

    #[test]
    fn a_descriptor_crosses_a_socket_inside_a_value() {
        let (a, b) = pair();
        let (here, there) = UnixStream::pair().unwrap();
        let value = WithFd {
            name: "x".repeat(100_000),
            end: there,
        };
        let message = encode(&value).unwrap();
        drop(value);
        assert_eq!(message.fds.len(), 1);
        // The writer runs beside the reader: 100 kB do not fit in a socket buffer.
        let writer = std::thread::spawn(move || send_message(a.as_fd(), &message).unwrap());
        let back: WithFd = decode(recv_message(b.as_fd()).unwrap()).unwrap();
        writer.join().unwrap();
        assert_eq!(back.name.len(), 100_000);
        (&back.end).write_all(b"hi").unwrap();
        drop(back);
        let mut got = String::new();
        (&here).read_to_string(&mut got).unwrap();
        // EOF after "hi": every copy of the other end was closed, none leaked.
        assert_eq!(got, "hi");
    }

    #[test]
    fn outside_encode_a_descriptor_is_a_serde_error() {
        let (_, there) = UnixStream::pair().unwrap();
        let value = WithFd {
            name: String::new(),
            end: there,
        };
        assert!(postcard::to_stdvec(&value).is_err());
        let err = serde_json::to_string(&value).unwrap_err();
        assert!(err.to_string().contains("descriptor field"), "{err}");
        let bytes = postcard::to_stdvec(&(String::new(), 0u32)).unwrap();
        assert!(postcard::from_bytes::<WithFd>(&bytes).is_err());
        // A missing descriptor is an error too, and says so.
        let missing = Message { bytes, fds: vec![] };
        let err = decode::<WithFd>(missing).unwrap_err();
        assert!(err.to_string().contains("no descriptor number 0"), "{err}");
    }

    #[test]
    fn a_length_too_long_to_hold_is_an_error_not_an_abort() {
        let (a, b) = pair();
        let mut header = [0u8; 12];
        header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        send_all(a.as_fd(), &header).unwrap();
        let err = recv_message(b.as_fd()).unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
    }

    #[test]
    fn the_peer_closing_is_an_error_not_a_hang() {
        let (a, b) = pair();
        drop(a);
        let err = recv_message(b.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = send_all(b.as_fd(), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn arguments_postcard_cannot_carry_are_a_clear_error() {
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                s.serialize_seq(None)?.end()
            }
        }
        let err = encode(&Unsized).unwrap_err();
        assert!(err.to_string().contains("postcard"), "{err}");
    }
}
