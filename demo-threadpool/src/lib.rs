//! Python's `multiprocessing.dummy.Pool` (a pool of threads, despite the module's name) with
//! the method the note uses: [`Pool::map`], whose results come back in the order of the
//! items, whichever job ends first. [`Pool::map_timed`] also says which thread ran each item,
//! and when ([`Ran`]).
//!
//! The threads are named `pool-1`, `pool-2`, …, so that every line a job prints says which of
//! them printed it. A panic in a job does not vanish: it becomes that item's `Err`
//! ([`Panicked`]), every other item still gets its result, and the thread goes on to the next
//! job. Portable: any Unix.

#![warn(missing_docs)]

mod panic_message;
mod pool;

/// # Example
///
/// Python's `pool = ThreadPool(4); results = pool.map(f, items); pool.close(); pool.join()`:
///
/// ```
/// use demo_threadpool::Pool;
///
/// # fn main() -> std::io::Result<()> {
/// let pool = Pool::new(4)?;
/// let results = pool.map(|x: u64| x * x, (0..10).collect());
/// let squares: Vec<u64> = results.into_iter().map(Result::unwrap).collect();
/// assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
///
/// // A panic is its item's error; the other items still get their results.
/// let results = pool.map(|x: u64| 10 / x, vec![0, 5]);
/// assert!(results[0].is_err());
/// assert_eq!(results[1].as_ref().unwrap(), &2);
/// pool.join();
/// # Ok(())
/// # }
/// ```
pub use pool::Pool;
pub use pool::{Panicked, Ran};
