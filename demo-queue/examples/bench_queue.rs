//! Measures the two queues of this crate next to the bare mechanism under them.
//!
//! - `queue.processes`: small integers from one process to another, in messages per second:
//!   our `Queue` (unbounded, and bounded to 1000), and a bare `SOCK_SEQPACKET` socketpair
//!   sending 8-byte messages (the limit: our queue adds serde and, when it sleeps, a futex).
//! - `queue.16b`, `queue.4kib`, `queue.64kib`: `serde_bytes` values of that size from one
//!   process to another, in messages per second: our `Queue`, a `String` of the same size
//!   through it, and ipc-channel (the crate a Rust user would otherwise take: one-way, one
//!   receiver, unbounded) with the same bytes; the three take turns, round by round, over five
//!   times the repeats of the other rows.
//! - `queue.threads`: items per second from one thread to another through a crossbeam
//!   channel, the counterpart of Python's `queue.Queue`.
//!
//! Its rows in the table of `cargo xtask bench`, in this order:
//!
//! | id | row |
//! |---|---|
//! | `queue.processes` | queue, process to process |
//! | `queue.16b` | queue, 16 B values |
//! | `queue.4kib` | queue, 4 KiB values |
//! | `queue.64kib` | queue, 64 KiB values |
//! | `queue.threads` | queue.Queue between 2 threads |
//!
//! Run with: `cargo run --release -p demo-queue --example bench_queue` (`BENCH_QUICK=1` for fewer
//! repeats). `python/bench.py` measures Python's side.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use demo_queue::{Process, Queue, Writer};
use ipc_channel::ipc;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let (repeats, n) = if quick { (3, 100_000) } else { (7, 300_000) };

    let ours = median(repeats, || queue_processes(Queue::new().unwrap(), n));
    report("queue.processes", "ours", ours, "msg/s");
    let bounded = median(repeats, || {
        queue_processes(Queue::bounded(1000).unwrap(), n)
    });
    report("queue.processes", "bounded", bounded, "msg/s");
    let limit = median(repeats, || socketpair_processes(n));
    report("queue.processes", "limit", limit, "msg/s");

    for (id, size, count) in [
        ("queue.16b", 16, n),
        ("queue.4kib", 4 << 10, n / 3),
        ("queue.64kib", 64 << 10, n / 15),
    ] {
        let bytes = ByteBuf::from(vec![7u8; size]);
        let text = "7".repeat(size);
        // Five times the repeats (36 rounds, each order six times): bytes and a `String` of
        // the same size are nearly the same work, and on a shared machine, whose speed moves
        // by 2× from round to round here, fewer rounds leave their order to chance.
        let [ours, string, ipc] = medians(
            repeats * 5,
            [
                &mut || values_processes(Queue::new().unwrap(), bytes.clone(), count),
                &mut || values_processes(Queue::new().unwrap(), text.clone(), count),
                &mut || ipc_processes(bytes.clone(), count),
            ],
        );
        report(id, "ours", ours, "msg/s");
        report(id, "String", string, "msg/s");
        report(id, "ipc-channel", ipc, "msg/s");
    }

    let threads = median(repeats, || crossbeam_threads(n * 10));
    report("queue.threads", "ours", threads, "items/s");
}

/// One writer process puts 0..n, this process gets them all.
fn queue_processes(q: Queue<u64>, n: u64) -> f64 {
    let reader = q.reader();
    let writer = q.writer();
    drop(q);
    let start = Instant::now();
    let mut child = Process::new(
        move |w: Writer<u64>| (0..n).for_each(|i| w.put(i).unwrap()),
        writer,
    );
    child.start().unwrap();
    let sum: u64 = (0..n).map(|_| reader.get().unwrap()).sum();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    assert_eq!(sum, n * (n - 1) / 2);
    assert_eq!(child.join().unwrap(), 0);
    rate
}

/// One writer process puts `n` copies of `value`, this process gets them all.
fn values_processes<T>(q: Queue<T>, value: T, n: u64) -> f64
where
    T: Serialize + DeserializeOwned + Clone + PartialEq + 'static,
{
    let reader = q.reader();
    let writer = q.writer();
    drop(q);
    let start = Instant::now();
    let sent = value.clone();
    let mut child = Process::new(
        move |w: Writer<T>| (0..n).for_each(|_| w.put(sent.clone()).unwrap()),
        writer,
    );
    child.start().unwrap();
    let mut last = None;
    for _ in 0..n {
        last = Some(reader.get().unwrap());
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    assert!(last == Some(value));
    assert_eq!(child.join().unwrap(), 0);
    rate
}

/// The same traffic through an ipc-channel channel, made before the fork as our queue is.
fn ipc_processes(value: ByteBuf, n: u64) -> f64 {
    let (tx, rx) = ipc::channel::<ByteBuf>().unwrap();
    let start = Instant::now();
    let sent = value.clone();
    let mut child = Process::new(
        move |tx: ipc::IpcSender<ByteBuf>| (0..n).for_each(|_| tx.send(sent.clone()).unwrap()),
        tx,
    );
    child.start().unwrap();
    let mut last = None;
    for _ in 0..n {
        last = Some(rx.recv().unwrap());
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    assert!(last == Some(value));
    assert_eq!(child.join().unwrap(), 0);
    rate
}

/// The median figure of each contender over at least `repeats` rounds. Each round runs every
/// contender once, in turn, so that the machine's drift (it is shared) falls on all alike.
/// The rounds go through the contenders' orders evenly: each rotation forwards and backwards,
/// so that each contender runs first, last, and right after each other one (after its
/// processes and memory went) equally often; a run's place in its round moves its figure by
/// up to 15% here.
fn medians<const N: usize>(repeats: usize, contenders: [&mut dyn FnMut() -> f64; N]) -> [f64; N] {
    let rounds = repeats.div_ceil(2 * N) * 2 * N;
    let mut figures = [(); N].map(|_| Vec::with_capacity(rounds));
    for round in 0..rounds {
        for k in 0..N {
            let k = if (round / N) % 2 == 0 { k } else { N - 1 - k };
            let i = (round + k) % N;
            figures[i].push(contenders[i]());
        }
    }
    figures.map(|mut v| {
        v.sort_by(f64::total_cmp);
        (v[rounds / 2 - 1] + v[rounds / 2]) / 2.0
    })
}

/// The same traffic on a bare socketpair: one 8-byte message per value, no serde.
fn socketpair_processes(n: u64) -> f64 {
    let (w, r) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let start = Instant::now();
    let mut child = Process::new(
        move |w: OwnedFd| {
            for i in 0..n {
                send(w.as_raw_fd(), &i.to_ne_bytes(), MsgFlags::empty()).unwrap();
            }
        },
        w,
    );
    child.start().unwrap();
    let mut sum = 0;
    let mut buf = [0u8; 8];
    for _ in 0..n {
        recv(r.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        sum += u64::from_ne_bytes(buf);
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    assert_eq!(sum, n * (n - 1) / 2);
    assert_eq!(child.join().unwrap(), 0);
    rate
}

/// A producer thread sends 0..n through a crossbeam channel, this thread receives them.
fn crossbeam_threads(n: u64) -> f64 {
    let (tx, rx) = crossbeam_channel::unbounded();
    let start = Instant::now();
    let producer = std::thread::spawn(move || (0..n).for_each(|i| tx.send(i).unwrap()));
    let sum: u64 = rx.iter().sum();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    producer.join().unwrap();
    assert_eq!(sum, n * (n - 1) / 2);
    rate
}

fn median(repeats: usize, mut f: impl FnMut() -> f64) -> f64 {
    let mut values: Vec<f64> = (0..repeats).map(|_| f()).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(id: &str, who: &str, value: f64, unit: &str) {
    println!("bench\t{id}\t{who}\t{value:.0}\t{unit}");
}
