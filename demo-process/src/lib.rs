//! Python's `multiprocessing.Process` with its three start methods, as a library beside the
//! demo binary, so that the tests and the benchmark use the same API as the demo.
//!
//! - `process`: the `Process` type, the fork start method, and `StartMethod`;
//! - `spawn`: the spawn start method, the child bootstrap (`run_if_spawned`) and `get_context`;
//! - `forkserver`: the forkserver start method;
//! - `fds`: descriptors inside serde values, for arguments that cross to a child.
//!
//! A program that starts processes by spawn or forkserver calls `spawn::run_if_spawned()`
//! first thing in `main`: a spawned child is the same program run again, and that call is
//! where it runs its target instead of the rest of `main`.

#![warn(missing_docs)]

pub mod fds;
pub mod forkserver;
pub mod process;
pub mod spawn;
