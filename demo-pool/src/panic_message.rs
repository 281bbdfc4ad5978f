//! The text of a panic, for the primitives that catch a panic and hand it back as an error
//! (a thread's `join`, a pool's result) instead of letting it vanish.
//!
//! This file is the same in demo-thread, demo-threadpool and demo-pool, so that each crate
//! can be copied out alone; a test in the xtask checks that the copies stay identical.

use std::any::Any;

/// The text of a panic: `panic!("...")` carries a `&str` or a `String`; any other payload
/// (from `std::panic::panic_any`) has no text to show.
pub fn message(payload: &(dyn Any + Send)) -> String {
    match payload.downcast_ref::<&str>() {
        Some(text) => text.to_string(),
        None => match payload.downcast_ref::<String>() {
            Some(text) => text.clone(),
            None => "a panic without a message".to_string(),
        },
    }
}
