//! Python's `multiprocessing.dummy.Pool` (a pool of threads, despite the module's name) with
//! the method the note uses: `map`, whose results come back in the order of the items,
//! whichever job ends first. `map_timed` also says which thread ran each item, and when.
//!
//! The threads are named `pool-1`, `pool-2`, …, so that every line a job prints says which of
//! them printed it. A panic in a job does not vanish: the calls run under `catch_unwind`, so
//! a panic becomes that item's `Err`, every other item still gets its result, and the thread
//! goes on to the next item.

use std::fmt;
use std::io;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;
use std::vec;

use threadpool::ThreadPool;

use crate::panic_message::message;

/// A pool of worker threads, named `pool-1` to `pool-N`.
pub struct Pool {
    /// One single-thread `ThreadPool` per thread: the `threadpool` crate gives every thread of
    /// one pool the same name, and ours are numbered.
    threads: Vec<ThreadPool>,
}

/// An item whose call panicked, with the panic's message.
///
/// A `Box<str>` rather than a `String`: two words instead of three, which makes each item's
/// `Result` a third smaller (16 bytes for a `u64`, not 24), and `map` writes one per item.
#[derive(Debug, Clone, PartialEq)]
pub struct Panicked(pub Box<str>);

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "panicked: {}", self.0)
    }
}

impl std::error::Error for Panicked {}

/// Where and when an item ran: the name of the pool thread, and the moments its call started
/// and ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// The name of the pool thread that ran the item, `pool-N`.
    pub thread: String,
    /// When the item's call started.
    pub start: Instant,
    /// When the item's call returned or panicked.
    pub end: Instant,
}

impl Pool {
    /// Python's `ThreadPool(threads)`: the threads start now and wait for jobs. Zero threads
    /// is an error, as in Python.
    pub fn new(threads: usize) -> io::Result<Pool> {
        if threads == 0 {
            let message = "Number of threads must be at least 1";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        let threads = (1..=threads)
            .map(|n| {
                threadpool::Builder::new()
                    .num_threads(1)
                    .thread_name(format!("pool-{n}"))
                    .build()
            })
            .collect();
        Ok(Pool { threads })
    }

    /// Python's `pool.map(f, items)`: `f` on every item, in the pool's threads, and the results
    /// in the order of `items`. Items go to the threads in chunks, as Python's `map` sends them
    /// (about four chunks per thread, and at most 2048 items in one), so that short jobs do not
    /// pay one hand-over each.
    pub fn map<T, R, F>(&self, f: F, items: Vec<T>) -> Vec<Result<R, Panicked>>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(T) -> R + Send + Sync + 'static,
    {
        self.each(items, move |items, outputs| call_all(&f, items, outputs))
    }

    /// `map`, and where and when each item ran, in the order of `items`. It reads the clock
    /// twice per item, which `map` does not.
    pub fn map_timed<T, R, F>(&self, f: F, items: Vec<T>) -> (Vec<Result<R, Panicked>>, Vec<Ran>)
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(T) -> R + Send + Sync + 'static,
    {
        let timed = self.each(items, move |items, outputs| {
            for item in items {
                let start = Instant::now();
                let result = call(&f, item);
                let end = Instant::now();
                let thread = thread::current().name().unwrap_or_default().to_string();
                outputs.push((result, Ran { thread, start, end }));
            }
        });
        timed.into_iter().unzip()
    }

    /// Python's `pool.close(); pool.join()`: waits for the jobs to finish. Taking `self` is the
    /// `close`: no job can be added after it.
    pub fn join(self) {
        for thread in &self.threads {
            thread.join();
        }
        // New: dropping a `ThreadPool` closes its queue, and its thread, now idle, leaves.
    }

    /// `each` on every chunk of items, in the pool's threads; each chunk's outputs pushed in
    /// item order, and all of them returned in that order.
    ///
    /// Every thread gets one job, which claims chunks of consecutive items until none is
    /// left: a thread that is free takes the next chunk, as from Python's shared queue, and a
    /// thread still busy with another `map`'s job is not waited for. Nobody splits the items
    /// ahead: each chunk is taken by the thread that runs it.
    fn each<T, U, E>(&self, items: Vec<T>, each: E) -> Vec<U>
    where
        T: Send + 'static,
        U: Send + 'static,
        E: Fn(vec::Drain<T>, &mut Vec<U>) + Send + Sync + 'static,
    {
        let n = items.len();
        if n == 0 {
            return Vec::new();
        }
        let chunk = n.div_ceil(self.threads.len() * 4).min(CHUNK);
        let batch = Arc::new(Batch::new(items, chunk, each));
        let (done, finished) = mpsc::channel();
        for thread in self.threads.iter().take(n.div_ceil(chunk)) {
            let (batch, done) = (Arc::clone(&batch), done.clone());
            thread.execute(move || batch.run(&done));
        }
        drop(done);
        // Each job holds a `done`: if every job ended without the last chunk in place (a
        // panic outside any item's call), the channel closes instead of waiting for ever.
        finished
            .recv()
            .expect("a pool thread panicked outside an item's call");
        let outputs = batch.outputs.lock().unwrap().done.take();
        let outputs = outputs.expect("the outputs are back in place once the last chunk is in");
        assert_eq!(outputs.len(), n, "every chunk is in place");
        outputs
    }
}

/// The most items in one chunk: a chunk's items and outputs stay in the cache of the thread
/// that runs it, and the last chunk to finish is short.
const CHUNK: usize = 2048;

/// One `each` call, shared by the jobs that run it.
struct Batch<T, U, E> {
    /// The items not yet taken, and the number of the next chunk.
    items: Mutex<(usize, vec::IntoIter<T>)>,
    chunk: usize,
    chunks: usize,
    each: E,
    outputs: Mutex<Outputs<U>>,
}

/// The outputs so far: `done` holds those of chunks `0..next` in order, with room for all of
/// them from the start; a chunk that finishes before its turn waits in `early`.
struct Outputs<U> {
    next: usize,
    /// `None` while a thread has it out, appending chunks to it with the lock released.
    done: Option<Vec<U>>,
    early: Vec<Option<Vec<U>>>,
    /// Empty vectors of chunks that went in, for the jobs to fill again.
    spare: Vec<Vec<U>>,
}

impl<T, U, E: Fn(vec::Drain<T>, &mut Vec<U>)> Batch<T, U, E> {
    fn new(items: Vec<T>, chunk: usize, each: E) -> Self {
        let (n, chunks) = (items.len(), items.len().div_ceil(chunk));
        Batch {
            items: Mutex::new((0, items.into_iter())),
            chunk,
            chunks,
            each,
            outputs: Mutex::new(Outputs {
                next: 0,
                done: Some(Vec::with_capacity(n)),
                early: (0..chunks).map(|_| None).collect(),
                spare: Vec::new(),
            }),
        }
    }

    /// A pool thread's job: runs chunks until none is left; the one that puts the last
    /// chunk in place says so on `done`.
    fn run(&self, done: &Sender<()>) {
        // Kept from chunk to chunk: a chunk allocates nothing once the job has warmed up.
        let mut items = Vec::with_capacity(self.chunk);
        let mut outputs = Vec::new();
        loop {
            let k = {
                let mut taken = self.items.lock().unwrap();
                let (next, rest) = &mut *taken;
                if rest.len() == 0 {
                    return;
                }
                items.extend(rest.by_ref().take(self.chunk));
                if rest.len() == 0 {
                    // New: the items' buffer is freed here, in a pool thread, rather than by
                    // the caller once every chunk is in.
                    *rest = Vec::new().into_iter();
                }
                *next += 1;
                *next - 1
            };
            if outputs.capacity() == 0 {
                let spare = self.outputs.lock().unwrap().spare.pop();
                outputs = spare.unwrap_or_else(|| Vec::with_capacity(self.chunk));
            }
            (self.each)(items.drain(..), &mut outputs);
            self.put_in_place(k, &mut outputs, done);
        }
    }

    /// Chunk `k`'s outputs go in their place: at once if the chunk is next in line and nobody
    /// is appending, otherwise into `early` for the thread that is. The appending itself, a
    /// copy of the chunk's outputs, runs with the lock released, so that the other threads
    /// can hand in their chunks meanwhile; the vector of all outputs is with one thread at a
    /// time, and it goes back under the lock only once no chunk in line is left waiting.
    fn put_in_place(&self, k: usize, outputs: &mut Vec<U>, done: &Sender<()>) {
        let mut guard = self.outputs.lock().unwrap();
        let all = &mut *guard;
        let mut writing = match all.done.take() {
            Some(writing) if k == all.next => writing,
            other => {
                all.done = other;
                all.early[k] = Some(mem::take(outputs));
                return;
            }
        };
        all.next += 1;
        drop(guard);
        // `append` moves the outputs and keeps the vector.
        writing.append(outputs);
        loop {
            let mut all = self.outputs.lock().unwrap();
            let next = all.next;
            match all.early.get_mut(next).and_then(Option::take) {
                Some(mut early) => {
                    all.next += 1;
                    drop(all);
                    writing.append(&mut early);
                    self.outputs.lock().unwrap().spare.push(early);
                }
                None => {
                    all.done = Some(writing);
                    if all.next == self.chunks {
                        // The caller may have gone (a panic while waiting): nobody left to tell.
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
    }
}

/// `f` on each item, each result pushed to `outputs` in order, a panic caught as its item's
/// error. One `catch_unwind` for the whole chunk rather than one per item, which lets the
/// compiler see through the loop: after a panic, the loop goes on from the next item, so each
/// item is still called once. (`extend` keeps the outputs it pushed before a panic; if it
/// ever did not, `each` would find outputs missing and say so, rather than misplace them.)
fn call_all<T, R>(
    f: &impl Fn(T) -> R,
    mut items: vec::Drain<T>,
    outputs: &mut Vec<Result<R, Panicked>>,
) {
    loop {
        let ran = panic::catch_unwind(AssertUnwindSafe(|| {
            outputs.extend(items.by_ref().map(|item| Ok(f(item))));
        }));
        match ran {
            Ok(()) => return,
            // The item whose call panicked was taken from `items` and dropped by the unwinding.
            Err(p) => outputs.push(Err(Panicked(message(&*p).into_boxed_str()))),
        }
    }
}

/// `f(item)`, with a panic caught as the item's error. A panic leaves nothing half-done that
/// another item would see, unless `f` itself keeps state; the same holds for an exception in
/// Python's map.
fn call<T, R>(f: &impl Fn(T) -> R, item: T) -> Result<R, Panicked> {
    panic::catch_unwind(AssertUnwindSafe(|| f(item)))
        .map_err(|p| Panicked(message(&*p).into_boxed_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::sync::Condvar;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::Duration;

    #[test]
    fn map_keeps_input_order_under_random_job_durations() {
        let pool = Pool::new(4).unwrap();
        // A fresh random state each run: durations of 0 to 5 ms, in a new order every time.
        let random = RandomState::new();
        let durations: Vec<u64> = (0..40).map(|i| random.hash_one(i) % 6).collect();
        let items: Vec<(usize, u64)> = durations.into_iter().enumerate().collect();
        let results = pool.map(
            |(i, ms)| {
                std::thread::sleep(Duration::from_millis(ms));
                i * 10
            },
            items,
        );
        let results: Vec<usize> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(results, (0..40).map(|i| i * 10).collect::<Vec<_>>());
        pool.join();
    }

    #[test]
    fn the_first_item_finishing_last_is_still_first() {
        let pool = Pool::new(4).unwrap();
        let results = pool.map(
            |ms: u64| {
                std::thread::sleep(Duration::from_millis(ms));
                ms
            },
            vec![40, 30, 20, 10, 0],
        );
        assert_eq!(results, [Ok(40), Ok(30), Ok(20), Ok(10), Ok(0)]);
    }

    #[test]
    fn a_panicking_job_is_an_error_for_its_item_only() {
        let pool = Pool::new(4).unwrap();
        let results = pool.map(
            |i: u32| {
                if i == 3 {
                    panic!("item {i} fails");
                }
                i
            },
            (0..8).collect(),
        );
        for (i, result) in results.into_iter().enumerate() {
            if i == 3 {
                assert_eq!(result, Err(Panicked("item 3 fails".into())));
            } else {
                assert_eq!(result, Ok(i as u32));
            }
        }
        // The pool still works after the panic: its threads are all there.
        assert_eq!(pool.map(|i: u32| i + 1, vec![1, 2]), [Ok(2), Ok(3)]);
        pool.join();
    }

    #[test]
    fn many_items_go_in_chunks_and_all_come_back() {
        let pool = Pool::new(4).unwrap();
        // 100,000 items: chunks of the most a chunk holds, and a shorter last one.
        let results = pool.map(|i: u64| i * i, (0..100_000).collect());
        assert_eq!(results.len(), 100_000);
        assert!(
            results
                .iter()
                .enumerate()
                .all(|(i, r)| *r == Ok(i as u64 * i as u64))
        );
    }

    #[test]
    fn every_item_is_dropped_once_and_every_result_handed_back() {
        /// Counts its drops, so that a lost or doubled value shows.
        struct Counted(u32, Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.1.fetch_add(1, SeqCst);
            }
        }
        let (items_dropped, results_dropped) = (Arc::default(), Arc::default());
        let pool = Pool::new(3).unwrap();
        let items = (0..10_000).map(|i| Counted(i, Arc::clone(&items_dropped)));
        let counter = Arc::clone(&results_dropped);
        let results = pool.map(
            move |item: Counted| {
                if item.0 % 1000 == 7 {
                    panic!("item {} fails", item.0); // The unwinding drops the item.
                }
                Counted(item.0 * 2, Arc::clone(&counter))
            },
            items.collect(),
        );
        assert_eq!(items_dropped.load(SeqCst), 10_000);
        assert_eq!(results_dropped.load(SeqCst), 0);
        for (i, result) in results.iter().enumerate() {
            match result {
                Ok(Counted(doubled, _)) => assert_eq!(*doubled as usize, i * 2),
                Err(Panicked(message)) => assert_eq!(&**message, format!("item {i} fails")),
            }
        }
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 10);
        drop(results);
        assert_eq!(results_dropped.load(SeqCst), 10_000 - 10);
    }

    #[test]
    fn two_maps_at_once_on_one_pool_each_get_their_own_results() {
        let pool = Pool::new(2).unwrap();
        std::thread::scope(|s| {
            let maps: Vec<_> = (0..2u64)
                .map(|m| {
                    let pool = &pool;
                    s.spawn(move || pool.map(move |i: u64| i * 10 + m, (0..50_000).collect()))
                })
                .collect();
            for (m, map) in maps.into_iter().enumerate() {
                let results = map.join().unwrap();
                assert!(
                    results
                        .into_iter()
                        .enumerate()
                        .all(|(i, r)| r == Ok(i as u64 * 10 + m as u64))
                );
            }
        });
        pool.join();
    }

    #[test]
    fn no_items_no_results_and_no_threads_is_an_error() {
        let pool = Pool::new(2).unwrap();
        assert!(pool.map(|i: u8| i, vec![]).is_empty());
        assert_eq!(
            Pool::new(0).err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidInput)
        );
    }

    /// The name of the thread that runs it, once `n` items are running at the same time (or
    /// after 20 s, if they never are).
    fn meet(arrived: &(Mutex<usize>, Condvar), n: usize) -> Option<String> {
        let (count, all_here) = arrived;
        let mut count = count.lock().unwrap();
        *count += 1;
        all_here.notify_all();
        let limit = Duration::from_secs(20);
        let (count, _) = all_here
            .wait_timeout_while(count, limit, |c| *c < n)
            .unwrap();
        assert_eq!(*count, n, "the items did not all run at once");
        std::thread::current().name().map(str::to_string)
    }

    #[test]
    fn the_threads_are_numbered_and_each_item_knows_where_it_ran() {
        let pool = Pool::new(4).unwrap();
        let arrived = Arc::new((Mutex::new(0), Condvar::new()));
        // Four items that wait for each other run on four threads at once.
        let before = Instant::now();
        let (names, ran) = pool.map_timed(move |_: u8| meet(&arrived, 4), vec![0; 4]);
        let after = Instant::now();
        let mut names: Vec<String> = names.into_iter().map(|n| n.unwrap().unwrap()).collect();
        for (name, ran) in names.iter().zip(&ran) {
            assert_eq!(&ran.thread, name);
            assert!(before <= ran.start && ran.start <= ran.end && ran.end <= after);
        }
        names.sort();
        assert_eq!(names, ["pool-1", "pool-2", "pool-3", "pool-4"]);
        pool.join();
    }

    #[test]
    fn map_timed_returns_what_map_returns() {
        let pool = Pool::new(2).unwrap();
        let items: Vec<u32> = (0..100).collect();
        let square = |i: u32| {
            if i == 7 {
                panic!("seven");
            }
            i * i
        };
        let (results, ran) = pool.map_timed(square, items.clone());
        assert_eq!(results, pool.map(square, items));
        assert_eq!(ran.len(), 100);
        assert!(
            ran.iter()
                .all(|r| ["pool-1", "pool-2"].contains(&r.thread.as_str()))
        );
    }
}
