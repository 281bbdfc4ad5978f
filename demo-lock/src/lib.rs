//! demo-lock's doc tests. A binary crate's doc tests are never run, so the example that must
//! *not* compile lives in this small library, where `cargo test -p demo-lock` runs it.
//!
//! Python lets threads share a bare counter and lose updates at run time. In Rust, threads
//! that change an unprotected counter do not compile: each thread would need `&mut counter`
//! at the same time (error E0499).
//!
//! ```compile_fail,E0499
//! let mut counter = 0;
//! std::thread::scope(|s| {
//!     for _ in 0..4 {
//!         s.spawn(|| {
//!             for _ in 0..10_000 {
//!                 counter += 1;
//!             }
//!         });
//!     }
//! });
//! ```
//!
//! With the counter inside a `Mutex`, it compiles and counts exactly:
//!
//! ```
//! let counter = std::sync::Mutex::new(0);
//! std::thread::scope(|s| {
//!     for _ in 0..4 {
//!         s.spawn(|| {
//!             for _ in 0..10_000 {
//!                 *counter.lock().unwrap() += 1;
//!             }
//!         });
//!     }
//! });
//! assert_eq!(counter.into_inner().unwrap(), 40_000);
//! ```
