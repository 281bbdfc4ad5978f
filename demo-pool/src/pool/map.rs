//! `map_async`, `starmap` and `starmap_async`: a list of items in chunks, as `map`, with one
//! `AsyncResult` for the whole list. Each chunk's result is a part of it, gathered as the
//! parts come in; the first part to fail settles it with that error, as in Python.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::worker::{self, Call};
use super::{AsyncResult, Error, Forward, Outcome, Pool, Slot, lock};

impl Pool {
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
            slot.settle(Ok(b"[]".to_vec()));
        }
        for (i, frame) in frames.into_iter().enumerate() {
            let forward = Forward::Gather(Arc::clone(&gather), i);
            self.submit(frame, self.deadline, Some(forward))?;
        }
        Ok(AsyncResult {
            slot,
            result: PhantomData,
        })
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
                    self.slot.settle(Ok(joined));
                }
            }
        }
    }
}

/// One JSON list made of several: `[1,2]` and `[3]` make `[1,2,3]`. This knows how the wire
/// encodes a list; another encoding of values needs its own way to join them.
fn join_lists(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut joined = Vec::with_capacity(parts.iter().map(Vec::len).sum::<usize>() + 2);
    joined.push(b'[');
    for part in parts {
        let inner = part
            .get(1..part.len().saturating_sub(1))
            .unwrap_or_default();
        if !inner.is_empty() {
            if joined.len() > 1 {
                joined.push(b',');
            }
            joined.extend_from_slice(inner);
        }
    }
    joined.push(b']');
    joined
}

fn call_star_chunk<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
    task: usize,
    args: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // SAFETY: as in `call_one`: `starmap_async::<A, B, R>` sent this function with a
    // `fn(A, B) -> R`, and this worker is a fork of the program that took its address.
    let task = unsafe { std::mem::transmute::<usize, fn(A, B) -> R>(task) };
    let items: Vec<(A, B)> =
        serde_json::from_slice(args).map_err(|e| format!("the arguments: {e}"))?;
    let results: Vec<R> = items.into_iter().map(|(a, b)| task(a, b)).collect();
    serde_json::to_writer(out, &results).map_err(|e| format!("the result: {e}"))
}
