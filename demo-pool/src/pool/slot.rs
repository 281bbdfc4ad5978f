//! Where a result is settled: a slot per task, which `get()` waits on, or whose outcome moves
//! on to the larger result it is a part of.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};

use super::{Error, Ran, lock, map};

/// The encoded result or the error; settled once.
pub(super) type Outcome = Result<Vec<u8>, Error>;

#[derive(Default)]
pub(super) struct Slot {
    pub(super) outcome: Mutex<Option<Outcome>>,
    /// Whether a `get` is waiting, so that a result nobody waits for costs no wake-up call.
    pub(super) waiting: AtomicBool,
    pub(super) settled: Condvar,
    /// Set before the outcome, when a worker reports the task's end.
    pub(super) ran: OnceLock<Ran>,
    /// Where the outcome goes instead, for a part of a larger result.
    pub(super) forward: Option<Forward>,
}

/// Where a slot's outcome goes when it is one part of a larger result.
pub(super) enum Forward {
    /// To `map_async`'s single result, as part `usize` of it.
    Gather(Arc<map::Gather>, usize),
    /// To an `imap` iterator, as chunk `usize`.
    Channel(mpsc::Sender<(usize, Outcome)>, usize),
}

impl Slot {
    /// Settles the slot, once: a later outcome (of a task already settled by its deadline,
    /// say) is ignored.
    pub(super) fn settle(&self, outcome: Outcome) {
        let mut slot = lock(&self.outcome);
        if slot.is_some() {
            return;
        }
        match &self.forward {
            None => {
                *slot = Some(outcome);
                let waiting = self.waiting.load(Ordering::Relaxed);
                drop(slot);
                // After the unlock: a waiter woken while the lock is still held would only
                // wait for it again, which on a busy CPU costs two more switches.
                if waiting {
                    self.settled.notify_all();
                }
            }
            Some(forward) => {
                // Nobody waits on this slot: its outcome moves on, and only the mark stays.
                *slot = Some(Ok(Vec::new()));
                drop(slot);
                match forward {
                    Forward::Gather(gather, part) => gather.arrive(*part, outcome),
                    // An iterator dropped early no longer wants its results.
                    Forward::Channel(to, chunk) => drop(to.send((*chunk, outcome))),
                }
            }
        }
    }
}
