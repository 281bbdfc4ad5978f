//! `imap` and `imap_unordered`: results as an iterator, the items taken from their iterator
//! as the workers free up. At most `IN_FLIGHT` chunks per worker are sent and not yet given
//! out, so a million items, or an endless iterator, are never all in memory at once.
//!
//! Each chunk's slot forwards its outcome on a channel that the iterator reads: `imap` keeps
//! the chunks that come early until their turn, `imap_unordered` gives them out as they come.

use std::collections::{HashMap, HashSet, VecDeque};
use std::iter;
use std::marker::PhantomData;
use std::sync::{Arc, mpsc};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::worker::{self, Call};
use super::{Error, Forward, Outcome, Pool, Slot, lock};

/// How many chunks per worker may be sent and not yet given out: enough for each worker to
/// hold a run of quick tasks (up to 8, see `state.rs`) and have more queued behind them. With
/// 10, tiny items went through at about half the rate of `apply_async`; with 32, at its rate.
const IN_FLIGHT: usize = 32;

impl Pool {
    /// Python's `imap(task, items, chunksize)`: the results, in the order of the items, as an
    /// iterator. The items are taken from `items` as the workers free up, `chunksize` to a
    /// task; at most 32 chunks per worker are on their way or waiting to be given out, so the
    /// input is taken at the pace the results are read. (Python's `imap` takes the input in
    /// a thread of the pool as fast as the workers run it, and keeps the results that the
    /// caller has not read yet, however many.)
    ///
    /// Each item gives `Ok(result)`, or the error of its chunk (every item of a chunk that
    /// failed gives that chunk's error). If a chunk cannot be sent (the pool was closed, or
    /// the items cannot be encoded), its items give that error and the iterator ends there.
    /// Dropping the iterator early takes its unsent chunks back from the pool's queue; the
    /// chunks already in a worker run to their end, and their results are dropped.
    ///
    /// # Panics
    ///
    /// If `chunksize` is 0 (Python raises `ValueError`).
    pub fn imap<A, R, I>(
        &self,
        task: fn(A) -> R,
        items: I,
        chunksize: usize,
    ) -> Result<IMap<'_, R, I::IntoIter>, Error>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.imap_with(
            worker::call_chunk::<A, R>,
            task as usize,
            items,
            chunksize,
            true,
        )
    }

    /// Python's `imap_unordered(task, items, chunksize)`: `imap`, with the results in the
    /// order they come.
    ///
    /// # Panics
    ///
    /// If `chunksize` is 0.
    pub fn imap_unordered<A, R, I>(
        &self,
        task: fn(A) -> R,
        items: I,
        chunksize: usize,
    ) -> Result<IMap<'_, R, I::IntoIter>, Error>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.imap_with(
            worker::call_chunk::<A, R>,
            task as usize,
            items,
            chunksize,
            false,
        )
    }

    fn imap_with<R, I: IntoIterator>(
        &self,
        call: Call,
        task: usize,
        items: I,
        chunksize: usize,
        ordered: bool,
    ) -> Result<IMap<'_, R, I::IntoIter>, Error> {
        assert!(chunksize > 0, "chunksize must be at least 1");
        let workers = {
            let state = lock(&self.shared.state);
            if let Some(why) = &state.broken {
                return Err(Error::Broken(why.clone()));
            }
            if state.status != super::Status::Running {
                return Err(Error::NotRunning);
            }
            state.workers.len().max(1)
        };
        let (tx, rx) = mpsc::channel();
        Ok(IMap {
            pool: self,
            input: Some(items.into_iter()),
            call,
            task,
            chunksize,
            limit: workers * IN_FLIGHT,
            ordered,
            tx,
            rx,
            in_flight: HashMap::new(),
            submitted: 0,
            next: 0,
            arrived: HashMap::new(),
            ready: VecDeque::new(),
            unsent: None,
            result: PhantomData,
        })
    }
}

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: `Ok(result)` or the error
/// of the item's chunk, for each item. Dropping it early takes its unsent chunks back.
pub struct IMap<'p, R, I> {
    pool: &'p Pool,
    /// The items not yet taken; `None` once they are all taken, or a chunk could not be sent.
    input: Option<I>,
    call: Call,
    task: usize,
    chunksize: usize,
    /// How many chunks may be sent and not yet given out.
    limit: usize,
    ordered: bool,
    tx: mpsc::Sender<(usize, Outcome)>,
    rx: mpsc::Receiver<(usize, Outcome)>,
    /// The chunks sent and not yet given out, by number: their slot and how many items.
    in_flight: HashMap<usize, (Arc<Slot>, usize)>,
    submitted: usize,
    /// `imap`: the number of the next chunk to give out, and the ones that came before it.
    next: usize,
    arrived: HashMap<usize, Outcome>,
    /// The results of a chunk being given out.
    ready: VecDeque<Result<R, Error>>,
    /// A chunk that could not be sent: its error and how many items it had. Given out after
    /// the chunks sent before it.
    unsent: Option<(Error, usize)>,
    result: PhantomData<fn() -> R>,
}

impl<R, I> IMap<'_, R, I>
where
    I: Iterator,
    I::Item: Serialize,
{
    /// Sends chunks until `limit` are on their way or the items run out.
    fn fill(&mut self) {
        while self.in_flight.len() < self.limit {
            let Some(input) = &mut self.input else {
                return;
            };
            let chunk: Vec<I::Item> = input.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                self.input = None;
                return;
            }
            let forward = Forward::Channel(self.tx.clone(), self.submitted);
            let sent = worker::task_frame(self.call, self.task, &chunk)
                .and_then(|frame| self.pool.submit(frame, self.pool.deadline, Some(forward)));
            match sent {
                Ok(slot) => {
                    self.in_flight.insert(self.submitted, (slot, chunk.len()));
                    self.submitted += 1;
                }
                Err(e) => {
                    self.unsent = Some((e, chunk.len()));
                    self.input = None;
                }
            }
        }
    }
}

impl<R, I> Iterator for IMap<'_, R, I>
where
    I: Iterator,
    I::Item: Serialize,
    R: DeserializeOwned,
{
    type Item = Result<R, Error>;

    fn next(&mut self) -> Option<Result<R, Error>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            self.fill();
            if self.in_flight.is_empty() {
                let (e, n) = self.unsent.take()?;
                self.ready.extend(iter::repeat_n(e, n).map(Err));
                continue;
            }
            let (chunk, outcome) = match self.arrived.remove(&self.next) {
                Some(outcome) => (self.next, outcome),
                // It comes, as a `get()` does: the pool settles every slot, at the latest
                // when it ends. This iterator holds a sender, so the channel stays open.
                None => match self.rx.recv() {
                    Ok((chunk, outcome)) if self.ordered && chunk != self.next => {
                        self.arrived.insert(chunk, outcome);
                        continue;
                    }
                    Ok(arrived) => arrived,
                    Err(_) => return Some(Err(Error::Broken("the results stopped".into()))),
                },
            };
            if self.ordered {
                self.next += 1;
            }
            let Some((_, n)) = self.in_flight.remove(&chunk) else {
                continue;
            };
            match outcome.and_then(|bytes| {
                postcard::from_bytes::<Vec<R>>(&bytes)
                    .map_err(|e| Error::Serde(worker::uncodable("the result", e)))
            }) {
                Ok(results) => self.ready.extend(results.into_iter().map(Ok)),
                Err(e) => self.ready.extend(iter::repeat_n(e, n).map(Err)),
            }
        }
    }
}

impl<R, I> Drop for IMap<'_, R, I> {
    fn drop(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        let ours: HashSet<*const Slot> = (self.in_flight.values())
            .map(|(slot, _)| Arc::as_ptr(slot))
            .collect();
        let mut state = lock(&self.pool.shared.state);
        state
            .pending
            .retain(|job| !ours.contains(&Arc::as_ptr(&job.slot)));
    }
}
