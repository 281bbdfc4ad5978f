//! Python's `multiprocessing.dummy.Pool` (a pool of threads, despite the module's name) on the
//! `threadpool` crate, with the method the note uses: `map`, whose results come back in the
//! order of the items, whichever job ends first.
//!
//! `threadpool` drops a job's panic on the floor: the worker thread is replaced, and whoever
//! waits for that job's result waits for ever. Here each item's call runs under `catch_unwind`,
//! so a panic becomes that item's `Err` and every other item still gets its result.

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, mpsc};

use threadpool::ThreadPool;

/// A pool of worker threads, all named `pool`.
pub struct Pool {
    threads: usize,
    inner: ThreadPool,
}

/// An item whose call panicked, with the panic's message.
#[derive(Debug, Clone, PartialEq)]
pub struct Panicked(pub String);

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "panicked: {}", self.0)
    }
}

impl std::error::Error for Panicked {}

impl Pool {
    /// Python's `ThreadPool(threads)`: the threads start now and wait for jobs.
    pub fn new(threads: usize) -> Pool {
        let inner = threadpool::Builder::new()
            .num_threads(threads)
            .thread_name("pool".into())
            .build();
        Pool { threads, inner }
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
        let n = items.len();
        let chunk = n.div_ceil(self.threads * 4).max(1);
        let f = Arc::new(f);
        let (tx, rx) = mpsc::channel();
        let mut items = items.into_iter();
        for k in 0..n.div_ceil(chunk) {
            let batch: Vec<T> = items.by_ref().take(chunk).collect();
            let (f, tx) = (Arc::clone(&f), tx.clone());
            self.inner.execute(move || {
                // A panic leaves nothing half-done that another item would see, unless `f`
                // itself keeps state; the same holds for an exception in Python's map.
                let call = |item| panic::catch_unwind(AssertUnwindSafe(|| f(item)));
                let results = batch
                    .into_iter()
                    .map(call)
                    .map(|r| r.map_err(|p| Panicked(message(&*p))));
                // The receiver is dropped only if `map` itself is gone: nobody to tell.
                let _ = tx.send((k, results.collect::<Vec<_>>()));
            });
        }
        // New: without this drop, the loop below would wait for a sender that never leaves.
        drop(tx);
        let mut chunks: Vec<(usize, Vec<Result<R, Panicked>>)> = rx.into_iter().collect();
        // The chunks come back as they finish: put them in the order of the items.
        chunks.sort_unstable_by_key(|(k, _)| *k);
        let results: Vec<_> = chunks
            .into_iter()
            .flat_map(|(_, results)| results)
            .collect();
        assert_eq!(
            results.len(),
            n,
            "every chunk sends its results, panic or not"
        );
        results
    }

    /// Python's `pool.close(); pool.join()`: waits for the jobs to finish, and the threads
    /// leave. Taking `self` is the `close`: no job can be added after it.
    pub fn join(self) {
        self.inner.join();
    }
}

/// The text of a panic: `panic!("...")` carries a `&str` or a `String`.
fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::time::Duration;

    #[test]
    fn map_keeps_input_order_under_random_job_durations() {
        let pool = Pool::new(4);
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
        let pool = Pool::new(4);
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
        let pool = Pool::new(4);
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
        let pool = Pool::new(4);
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
    fn no_items_no_results() {
        let pool = Pool::new(2);
        assert!(pool.map(|i: u8| i, vec![]).is_empty());
    }

    #[test]
    fn the_jobs_run_in_the_pool_threads() {
        let pool = Pool::new(2);
        let names = pool.map(
            |_: u8| std::thread::current().name().map(str::to_string),
            vec![0; 4],
        );
        assert!(
            names
                .into_iter()
                .all(|n| n.unwrap().as_deref() == Some("pool"))
        );
    }
}
