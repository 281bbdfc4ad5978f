//! How an end crosses to a spawned or forkserver child: as its descriptor, sent by
//! `SCM_RIGHTS` inside the child's arguments (see `fds.rs`), and its direction. The child gets
//! that end alone, without the copy of its twin that a fork leaves, so it has nothing to
//! release; the parent's copy closes when the parent drops its `Connection` (a `Process`
//! drops its arguments once the child has started).
//!
//! Only `fds::encode` (which the start of a child calls) can serialize an end: anywhere else,
//! as in JSON, a descriptor field is a serde error.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Connection, Mode, Twins};

#[derive(Serialize)]
struct EndOut<'a> {
    #[serde(with = "crate::fds")]
    socket: BorrowedFd<'a>,
    mode: u8,
}

#[derive(Deserialize)]
struct EndIn {
    #[serde(with = "crate::fds")]
    socket: OwnedFd,
    mode: u8,
}

impl Serialize for Connection {
    /// An end whose read buffer holds bytes already read from the socket cannot cross: they
    /// would be lost to the child. That is an error, never a silent loss.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.socket.buffer().is_empty() {
            return Err(S::Error::custom(
                "a Connection that has read ahead of what it received cannot be sent",
            ));
        }
        let mode = match self.mode {
            Mode::Duplex => 0,
            Mode::RecvOnly => 1,
            Mode::SendOnly => 2,
        };
        let socket = self.socket.get_ref().as_fd();
        EndOut { socket, mode }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let end = EndIn::deserialize(deserializer)?;
        let mode = match end.mode {
            0 => Mode::Duplex,
            1 => Mode::RecvOnly,
            2 => Mode::SendOnly,
            n => return Err(D::Error::custom(format!("no direction numbered {n}"))),
        };
        let socket = UnixStream::from(end.socket);
        // A stream socket, as `pipe` makes: anything else is refused here, not at `recv`.
        let kind = nix::sys::socket::getsockopt(&socket, nix::sys::socket::sockopt::SockType);
        if kind != Ok(nix::sys::socket::SockType::Stream) {
            return Err(D::Error::custom(io::Error::new(
                io::ErrorKind::InvalidData,
                "the descriptor sent is not a stream socket",
            )));
        }
        // Its own pair record: this end is end 0, and its twin is in no descriptor here.
        let twins = Arc::new(Twins {
            maker: std::process::id(),
            fds: [socket.as_raw_fd(), -1],
            closed: [AtomicBool::new(false), AtomicBool::new(true)],
        });
        Ok(Connection::new(socket, 0, mode, twins))
    }
}
