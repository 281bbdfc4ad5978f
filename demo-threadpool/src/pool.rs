//! Python's `multiprocessing.dummy.Pool` (a pool of threads, despite the module's name) with
//! the method the note uses: `map`, whose results come back in the order of the items,
//! whichever job ends first. `map_timed` also says which thread ran each item, and when.
//!
//! The threads are named `pool-1`, `pool-2`, …, so that every line a job prints says which of
//! them printed it. A panic in a job does not vanish: each item's call runs under
//! `catch_unwind`, so a panic becomes that item's `Err`, every other item still gets its
//! result, and the thread goes on to the next job.

use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crate::panic_message::message;

/// A pool of worker threads, named `pool-1` to `pool-N`.
pub struct Pool {
    threads: Vec<JoinHandle<()>>,
    jobs: Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

/// An item whose call panicked, with the panic's message.
#[derive(Debug, Clone, PartialEq)]
pub struct Panicked(pub String);

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
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = (1..=threads)
            .map(|n| {
                let queue = Arc::clone(&queue);
                let named = thread::Builder::new().name(format!("pool-{n}"));
                named.spawn(move || work(&queue))
            })
            .collect::<io::Result<_>>()?;
        Ok(Pool { threads, jobs })
    }

    /// Python's `pool.map(f, items)`: `f` on every item, in the pool's threads, and the results
    /// in the order of `items`. Items go to the threads in chunks, as Python's `map` sends them
    /// (about four chunks per thread), so that short jobs do not pay one hand-over each.
    pub fn map<T, R, F>(&self, f: F, items: Vec<T>) -> Vec<Result<R, Panicked>>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(T) -> R + Send + Sync + 'static,
    {
        self.each(items, move |item| call(&f, item))
    }

    /// `map`, and where and when each item ran, in the order of `items`. It reads the clock
    /// twice per item, which `map` does not.
    pub fn map_timed<T, R, F>(&self, f: F, items: Vec<T>) -> (Vec<Result<R, Panicked>>, Vec<Ran>)
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(T) -> R + Send + Sync + 'static,
    {
        let timed = self.each(items, move |item| {
            let start = Instant::now();
            let result = call(&f, item);
            let end = Instant::now();
            let thread = thread::current().name().unwrap_or_default().to_string();
            (result, Ran { thread, start, end })
        });
        timed.into_iter().unzip()
    }

    /// Python's `pool.close(); pool.join()`: waits for the jobs to finish, and the threads
    /// leave. Taking `self` is the `close`: no job can be added after it.
    pub fn join(self) {
        let Pool { threads, jobs } = self;
        drop(jobs); // New: the threads leave when the queue is closed and empty.
        for thread in threads {
            // A job never panics (each item's call is caught), so neither does a thread.
            let _ = thread.join();
        }
    }

    /// `each` on every item, in the pool's threads, in chunks; the outputs in item order.
    fn each<T, U, E>(&self, items: Vec<T>, each: E) -> Vec<U>
    where
        T: Send + 'static,
        U: Send + 'static,
        E: Fn(T) -> U + Send + Sync + 'static,
    {
        let n = items.len();
        let chunk = n.div_ceil(self.threads.len() * 4).max(1);
        let each = Arc::new(each);
        let (tx, rx) = mpsc::channel();
        let mut items = items.into_iter();
        for k in 0..n.div_ceil(chunk) {
            let batch: Vec<T> = items.by_ref().take(chunk).collect();
            let (each, tx) = (Arc::clone(&each), tx.clone());
            let job = move || {
                let outputs: Vec<U> = batch.into_iter().map(&*each).collect();
                // The receiver is dropped only if `map` itself is gone: nobody to tell.
                let _ = tx.send((k, outputs));
            };
            // The threads hold the queue's receiver until `join`, which takes the pool.
            self.jobs
                .send(Box::new(job))
                .expect("the pool's threads are running");
        }
        // New: without this drop, the loop below would wait for a sender that never leaves.
        drop(tx);
        let mut chunks: Vec<(usize, Vec<U>)> = rx.into_iter().collect();
        // The chunks come back as they finish: put them in the order of the items.
        chunks.sort_unstable_by_key(|(k, _)| *k);
        let outputs: Vec<U> = chunks.into_iter().flat_map(|(_, o)| o).collect();
        assert_eq!(
            outputs.len(),
            n,
            "every chunk sends its outputs, panic or not"
        );
        outputs
    }
}

/// A pool thread: runs jobs until the queue is closed and empty.
fn work(queue: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held while waiting for a job, and released before running it.
        let job = queue.lock().unwrap().recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// `f(item)`, with a panic caught as the item's error. A panic leaves nothing half-done that
/// another item would see, unless `f` itself keeps state; the same holds for an exception in
/// Python's map.
fn call<T, R>(f: &impl Fn(T) -> R, item: T) -> Result<R, Panicked> {
    panic::catch_unwind(AssertUnwindSafe(|| f(item))).map_err(|p| Panicked(message(&*p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::sync::Condvar;
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
        let results = pool.map(|i: u64| i * i, (0..10_000).collect());
        assert_eq!(results.len(), 10_000);
        assert!(
            results
                .iter()
                .enumerate()
                .all(|(i, r)| *r == Ok(i as u64 * i as u64))
        );
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
