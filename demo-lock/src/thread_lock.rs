//! 线程锁 (thread lock): Python's `threading.Lock` is `std::sync::Mutex<T>`.
//!
//! The note's Python:
//!
//! ```python
//! import threading
//! mutex = threading.Lock()
//! if mutex.acquire(1):    # 加锁
//!     print('执行操作')
//! mutex.release()   #解锁
//! ```
//!
//! What Rust changes: the data lives *inside* the mutex, so it cannot be reached without the
//! lock, and a program whose threads share an unprotected counter does not compile (see the
//! `compile_fail` example in `lib.rs`). A holder that panics poisons the mutex.

use std::io;
use std::sync::{Mutex, TryLockError};
use std::thread;

use crate::demo::say;
use crate::workers::{N, TOTAL, WORKERS};

pub fn run() -> io::Result<()> {
    say!("4. the note's threading.Lock: std::sync::Mutex");
    let mutex = Mutex::new(());
    if let Ok(_guard) = mutex.lock() {
        say!("执行操作");
        let busy = matches!(mutex.try_lock(), Err(TryLockError::WouldBlock));
        say!(
            "acquire(False) is try_lock: {}",
            if busy { "busy" } else { "taken" }
        );
    } // mutex.release(): the guard's drop, here.

    // Python's `with mutex:` releases the lock on an exception and says nothing; a guard
    // dropped by a panic releases it too, but marks the mutex poisoned: the data may be half
    // updated, and every later `lock()` says so until the poison is cleared.
    let counter = Mutex::new(0u64);
    thread::scope(|s| {
        let holder = thread::Builder::new().name("holder".into());
        let holder = holder.spawn_scoped(s, || {
            let mut guard = counter.lock().unwrap();
            *guard += 1; // The first half of an update.
            panic!("a holder panics while it holds the lock");
        })?;
        assert!(holder.join().is_err(), "the holder panicked");
        io::Result::Ok(())
    })?;
    if let Err(poisoned) = counter.lock() {
        let mut value = poisoned.into_inner();
        say!("after a holder panicked: the mutex is poisoned, counter {value}; repaired to 0");
        *value = 0;
        counter.clear_poison();
    }

    thread::scope(|s| {
        for i in 1..=WORKERS {
            let add = || (0..N).for_each(|_| *counter.lock().unwrap() += 1);
            thread::Builder::new()
                .name(format!("thread-{i}"))
                .spawn_scoped(s, add)?;
        }
        io::Result::Ok(())
    })?;
    let total = *counter.lock().unwrap();
    say!("{WORKERS} threads: counter = {total} (expected {TOTAL})");
    assert_eq!(total, TOTAL);
    Ok(())
}
