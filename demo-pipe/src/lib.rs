//! The primitive of the Pipe section, as a library beside the demo binary: `cargo test` runs
//! the doctests of a library only, and the `compile_fail` one in `pipe.rs` is the point. The
//! benchmark and the tests use the same API.

pub mod pipe;
pub mod value;

// The same file as the binary's (and every crate's) copy; here only for the tests of `pipe`.
#[cfg(test)]
mod process;
