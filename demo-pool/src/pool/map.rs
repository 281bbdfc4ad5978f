//! `map`, `map_async`, `starmap` and `starmap_async`: a list of items in chunks. `map` waits
//! for each chunk in turn and decodes its results straight onto the end of the list;
//! `map_async` and `starmap` give one `AsyncResult` for the whole list, whose chunks' results
//! are parts of it, gathered as the parts come in; the first part to fail settles it with that
//! error, as in Python.

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::{Deserialize, DeserializeOwned, DeserializeSeed, Deserializer, SeqAccess, Visitor};

use super::claim::Claim;
use super::worker::{self, Call};
use super::{AsyncResult, Error, Forward, Outcome, Pool, Slot, lock};

impl Pool {
    /// Python's `map(task, items)`: the results in the order of the items. As in Python, the
    /// items travel in chunks, about four per worker, and the first failed chunk is the error.
    /// Items whose number the iterator does not say exactly are collected first, as in
    /// Python; the others are sent chunk by chunk as they come. `imap` takes them as it goes,
    /// whatever their number. A deadline set with `Builder::task_deadline` holds for each
    /// chunk.
    pub fn map<A, R>(
        &self,
        task: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let items = items.into_iter();
        // New: items whose number is known are encoded chunk by chunk as they come, rather
        // than collected first; the number sets the size of the chunks.
        match items.size_hint() {
            (low, Some(high)) if low == high => self.map_known(task, items, low),
            _ => {
                let items: Vec<A> = items.collect();
                let n = items.len();
                self.map_known(task, items.into_iter(), n)
            }
        }
    }

    /// `map` of about `n` items. An iterator's size hint may be wrong: then the chunks are only
    /// of another size, and nothing is reserved on its word but a chunk of at most
    /// `MAX_CHUNK` items.
    fn map_known<A, R>(
        &self,
        task: fn(A) -> R,
        mut items: impl Iterator<Item = A>,
        n: usize,
    ) -> Result<Vec<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let workers = lock(&self.shared.state).workers.len().max(1);
        let size = n.div_ceil(workers * 4).clamp(1, MAX_CHUNK);
        let mut chunk = Vec::new();
        let (mut chunks, mut count) = (Vec::new(), 0);
        loop {
            chunk.extend(items.by_ref().take(size));
            if chunk.is_empty() {
                break;
            }
            count += chunk.len();
            let call = worker::call_chunk::<A, R>;
            let frame = worker::task_frame(call, task as usize, chunk.as_slice())?;
            chunk.clear();
            let slot = self.submit(frame, self.deadline, None)?;
            chunks.push(AsyncResult::<Vec<R>>::new(&self.shared, slot));
        }
        let mut results = Vec::with_capacity(count);
        for chunk in chunks {
            chunk.get_appended(&mut results)?;
        }
        Ok(results)
    }

    /// Python's `map_async(task, items)`: `map` without the wait, one [`AsyncResult`] for
    /// the whole list. The items travel in chunks, as in `map`.
    pub fn map_async<A, R>(
        &self,
        task: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<R>>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let items: Vec<A> = items.into_iter().collect();
        self.gathered(worker::call_chunk::<A, R>, task as usize, &items)
    }

    /// Python's `starmap(task, pairs)`: `task(a, b)` for each `(a, b)`, the results in order.
    /// A task of one argument takes a tuple with `map` just as well; this is for a `fn` of
    /// two, such as `u64::pow`.
    pub fn starmap<A, B, R>(
        &self,
        task: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.starmap_async(task, items)?.get()
    }

    /// Python's `starmap_async`: `starmap` without the wait.
    pub fn starmap_async<A, B, R>(
        &self,
        task: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<AsyncResult<Vec<R>>, Error>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let items: Vec<(A, B)> = items.into_iter().collect();
        self.gathered(call_star_chunk::<A, B, R>, task as usize, &items)
    }

    /// Sends `items` in chunks, about four per worker as in Python, to `call` with `task`,
    /// and gathers the chunks' results into one.
    fn gathered<T: Serialize, R>(
        &self,
        call: Call,
        task: usize,
        items: &[T],
    ) -> Result<AsyncResult<Vec<R>>, Error> {
        let workers = lock(&self.shared.state).workers.len().max(1);
        let chunk = items.len().div_ceil(workers * 4).max(1);
        let frames = items
            .chunks(chunk)
            .map(|chunk| worker::task_frame(call, task, chunk))
            .collect::<Result<Vec<_>, Error>>()?;
        let slot = Arc::new(Slot::default());
        let gather = Arc::new(Gather {
            parts: Mutex::new((vec![Vec::new(); frames.len()], frames.len())),
            slot: Arc::clone(&slot),
        });
        if frames.is_empty() {
            slot.settle(join_lists(&[]));
        }
        for (i, frame) in frames.into_iter().enumerate() {
            let forward = Forward::Gather(Arc::clone(&gather), i);
            self.submit(frame, self.deadline, Some(forward))?;
        }
        Ok(AsyncResult::new(&self.shared, slot))
    }
}

/// The parts of one result, and where it is settled.
pub(super) struct Gather {
    /// Each part's encoded list, and how many have not come yet.
    parts: Mutex<(Vec<Vec<u8>>, usize)>,
    slot: Arc<Slot>,
}

impl Gather {
    /// Part `part` has come: the first error settles the result; the last part, the list.
    pub(super) fn arrive(&self, part: usize, outcome: Outcome) {
        match outcome {
            Err(e) => self.slot.settle(Err(e)),
            Ok(bytes) => {
                let mut parts = lock(&self.parts);
                parts.0[part] = bytes;
                parts.1 -= 1;
                if parts.1 == 0 {
                    let joined = join_lists(&parts.0);
                    drop(parts);
                    self.slot.settle(joined);
                }
            }
        }
    }
}

/// One encoded list made of several. A list crosses as postcard: its length (a varint),
/// then its items; so the joined list is the sum of the lengths, then every part's items.
fn join_lists(parts: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
    let mut total = 0u64;
    let mut items = Vec::with_capacity(parts.len());
    for part in parts {
        let (len, used) =
            varint(part).ok_or_else(|| Error::Serde("a part of the result".into()))?;
        total += len;
        items.push(&part[used..]);
    }
    let mut joined = Vec::with_capacity(items.iter().map(|i| i.len()).sum::<usize>() + 10);
    loop {
        let byte = (total & 0x7f) as u8;
        total >>= 7;
        if total == 0 {
            joined.push(byte);
            break;
        }
        joined.push(byte | 0x80);
    }
    items.iter().for_each(|i| joined.extend_from_slice(i));
    Ok(joined)
}

/// A varint at the start of `bytes` (7 bits a byte, low first, the top bit set on all but the
/// last), and how many bytes it takes.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn call_star_chunk<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
    task: usize,
    args: &[u8],
    fds: Vec<OwnedFd>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // SAFETY: as in `call_one`: `starmap_async::<A, B, R>` sent this function with a
    // `fn(A, B) -> R`, and `serve` found both in this image as `call_one` says.
    let task = unsafe { std::mem::transmute::<usize, fn(A, B) -> R>(task) };
    let items: Vec<(A, B)> = worker::arguments(args, fds)?;
    let results: Vec<R> = items.into_iter().map(|(a, b)| task(a, b)).collect();
    worker::encode(&results, out).map_err(|e| worker::unsendable(&results, e))?;
    Ok(())
}

impl<R: DeserializeOwned> AsyncResult<Vec<R>> {
    /// `get` for a list, whose items are decoded straight onto the end of `results`.
    fn get_appended(&self, results: &mut Vec<R>) -> Result<(), Error> {
        let claim = Claim::take(&self.shared, &mut lock(&self.shared.state), &self.slot);
        self.wait_decoded(claim, None, |bytes| {
            AppendTo(results).deserialize(&mut postcard::Deserializer::from_bytes(bytes))
        })
    }
}

/// Decodes a list onto the end of a vector.
struct AppendTo<'a, R>(&'a mut Vec<R>);

impl<'de, R: Deserialize<'de>> DeserializeSeed<'de> for AppendTo<'_, R> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, decoder: D) -> Result<(), D::Error> {
        decoder.deserialize_seq(self)
    }
}

impl<'de, R: Deserialize<'de>> Visitor<'de> for AppendTo<'_, R> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of results")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        // No `reserve` from the list's length: `map` made room for all the items already.
        while let Some(result) = seq.next_element()? {
            self.0.push(result);
        }
        Ok(())
    }
}

/// The most items in one chunk of `map`: bounds what a wrong size hint can make it reserve.
const MAX_CHUNK: usize = 1 << 20;
