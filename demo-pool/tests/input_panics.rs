//! A `map` or `imap` whose input panics half-way: the panic reaches the caller, and the pool
//! goes on.
//!
//! A test program of its own, because the panic happens in this process: while a thread
//! prints a panic's backtrace it holds the backtrace lock, and a worker forked by another
//! test's pool at that moment would inherit it locked, and hang on its own first panic.

use std::panic::{self, AssertUnwindSafe};

use demo_pool::Pool;

fn square(x: u64) -> u64 {
    x * x
}

/// The items 0, 1, … that panic when asked for `at`, as a generator that fails might.
fn panicking_at(at: u64) -> impl Iterator<Item = u64> {
    (0..).inspect(move |&x| assert!(x != at, "the input fails at {at} (this panic is expected)"))
}

#[test]
fn a_map_of_an_input_that_panics_half_way_panics_here_and_the_pool_goes_on() {
    let mut pool = Pool::new(2).unwrap();
    let map = panic::catch_unwind(AssertUnwindSafe(|| pool.map(square, panicking_at(50))));
    assert!(map.is_err());
    let mut given = Vec::new();
    let imap = panic::catch_unwind(AssertUnwindSafe(|| {
        for result in pool.imap(square, panicking_at(50), 4).unwrap() {
            given.push(result.unwrap());
        }
    }));
    assert!(imap.is_err());
    // imap gave out what it could before the input failed, in order.
    assert_eq!(
        given,
        (0..given.len() as u64).map(|x| x * x).collect::<Vec<_>>()
    );
    assert_eq!(pool.map(square, 0..5), Ok(vec![0, 1, 4, 9, 16]));
    pool.close();
    pool.join().unwrap();
}
