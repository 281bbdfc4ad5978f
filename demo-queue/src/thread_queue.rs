//! 线程通信 队列 (a queue between threads): Python's `queue.Queue(maxsize=2)` is a bounded
//! crossbeam channel. The items move from one thread to the other; nothing is serialized.
//!
//! The note only names it (`import queue`, "not the queue of multiprocessing"); this part
//! shows it with a producer thread that is faster than its consumer.

use std::io;
use std::thread;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::demo::{self, say};

/// Puts 0..5 on a queue that holds 2; returns how many times it found the queue full.
fn producer(q: Sender<i32>) -> usize {
    let mut waits = 0;
    for item in 0..5 {
        say!("Put {item} to queue...");
        if let Err(TrySendError::Full(item)) = q.try_send(item) {
            waits += 1;
            q.send(item).unwrap(); // Blocks until the consumer takes one.
        }
    }
    waits // Dropping the last Sender closes the channel: the consumer's loop ends.
}

fn consumer(q: Receiver<i32>) {
    for item in q {
        say!("Get {item} from queue.");
        demo::sleep(0.2);
    }
}

pub fn run() -> io::Result<()> {
    say!("3. Threads: queue.Queue(maxsize=2) is a bounded crossbeam channel");
    let (tx, rx) = crossbeam_channel::bounded(2);
    let named = |name: &str| thread::Builder::new().name(name.into());
    let producer = named("producer").spawn(move || producer(tx))?;
    let consumer = named("consumer").spawn(move || consumer(rx))?;
    let waits = producer.join().unwrap();
    consumer.join().unwrap();
    say!("The producer waited {waits} times for room; the items moved, nothing was serialized");
    Ok(())
}
