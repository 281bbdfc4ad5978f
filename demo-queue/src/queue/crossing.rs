//! How a queue handle crosses to a spawned or forkserver child: as the memfd of its ring and
//! its end of the socketpair, both sent by `SCM_RIGHTS` inside the child's arguments (see
//! `fds.rs`). The child maps the memfd (the same memory, at another address) and holds its
//! own copy of the end, so the hang-ups work as under fork: readers see `Disconnected` once
//! every writer's end, in every process, is closed.
//!
//! Only `fds::encode` (which the start of a child calls) can serialize a handle: anywhere
//! else, as in JSON, a descriptor field is a serde error. The handle sent stays usable here.

use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{End, Queue, Reader, Shared, Side, Writer};

#[derive(Serialize)]
struct HandleOut<'a> {
    #[serde(with = "crate::fds")]
    memory: BorrowedFd<'a>,
    #[serde(with = "crate::fds")]
    end: BorrowedFd<'a>,
}

#[derive(Deserialize)]
struct HandleIn {
    #[serde(with = "crate::fds")]
    memory: OwnedFd,
    #[serde(with = "crate::fds")]
    end: OwnedFd,
}

fn out<'a>(shared: &'a Shared, end: &'a End) -> HandleOut<'a> {
    HandleOut {
        memory: shared.memory.fd(),
        end: end.fd.as_ref().expect("open until dropped").as_fd(),
    }
}

/// The handle's shared part and end, in this process.
fn adopt<'de, D: Deserializer<'de>>(
    deserializer: D,
    side: Side,
) -> Result<(Arc<Shared>, Arc<End>), D::Error> {
    let handle = HandleIn::deserialize(deserializer)?;
    let shared = Arc::new(Shared::adopt(handle.memory).map_err(D::Error::custom)?);
    let end = End::new(handle.end, &shared, side);
    Ok((shared, end))
}

impl<T> Serialize for Writer<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        out(&self.shared, &self.end).serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Writer<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (shared, end) = adopt(deserializer, Side::Writers)?;
        Ok(Writer {
            shared,
            end,
            _values: PhantomData,
        })
    }
}

impl<T> Serialize for Reader<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        out(&self.shared, &self.end).serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Reader<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (shared, end) = adopt(deserializer, Side::Readers)?;
        Ok(Reader {
            shared,
            end,
            _values: PhantomData,
        })
    }
}

#[derive(Serialize)]
struct QueueOut<'a> {
    #[serde(with = "crate::fds")]
    memory: BorrowedFd<'a>,
    #[serde(with = "crate::fds")]
    writers: BorrowedFd<'a>,
    #[serde(with = "crate::fds")]
    readers: BorrowedFd<'a>,
}

#[derive(Deserialize)]
struct QueueIn {
    #[serde(with = "crate::fds")]
    memory: OwnedFd,
    #[serde(with = "crate::fds")]
    writers: OwnedFd,
    #[serde(with = "crate::fds")]
    readers: OwnedFd,
}

/// Both halves: the child holds a write end and a read end, as a forked child holding a
/// `Queue` does.
impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (writer, reader) = (&self.writer, &self.reader);
        QueueOut {
            memory: writer.shared.memory.fd(),
            writers: out(&writer.shared, &writer.end).end,
            readers: out(&reader.shared, &reader.end).end,
        }
        .serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let handle = QueueIn::deserialize(deserializer)?;
        let shared = Arc::new(Shared::adopt(handle.memory).map_err(D::Error::custom)?);
        Ok(Queue {
            writer: Writer {
                end: End::new(handle.writers, &shared, Side::Writers),
                shared: shared.clone(),
                _values: PhantomData,
            },
            reader: Reader {
                end: End::new(handle.readers, &shared, Side::Readers),
                shared,
                _values: PhantomData,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fds;
    use crate::queue::MAP_BYTES;
    use crate::shm::SharedMemory;

    #[test]
    fn a_handle_decoded_here_is_the_same_queue() {
        let q = Queue::<u32>::new().unwrap();
        let writer: Writer<u32> = fds::decode(fds::encode(&q.writer()).unwrap()).unwrap();
        writer.put(7).unwrap();
        assert_eq!(q.get().unwrap(), 7);
    }

    #[test]
    fn a_memfd_that_holds_no_queue_is_refused() {
        let q = Queue::<u32>::new().unwrap();
        let mut message = fds::encode(&q.writer()).unwrap();
        // Of a queue's size and sealed so, but zeroed: no queue was ever set up there.
        let blank = SharedMemory::new(c"blank", MAP_BYTES, |_| false).unwrap();
        message.fds[0] = blank.fd().try_clone_to_owned().unwrap();
        assert!(fds::decode::<Writer<u32>>(message).is_err());
    }
}
