//! Pipe round trip, and throughput at message sizes from 16 B to 16 MiB, between two
//! processes: ours, the bare socketpair (the limit), and ipc-channel (the crate a Rust user
//! would otherwise take).
//!
//! Its rows in the table of `cargo xtask bench`, in this order:
//!
//! | id | row |
//! |---|---|
//! | `pipe.roundtrip` | pipe round trip, [42, None, 'hello'] |
//! | `pipe.16b` | pipe, 16 B messages |
//! | `pipe.4kib` | pipe, 4 KiB messages |
//! | `pipe.64kib` | pipe, 64 KiB messages |
//! | `pipe.1mib` | pipe, 1 MiB messages |
//! | `pipe.16mib` | pipe, 16 MiB messages |
//!
//! Prints `bench<TAB>id<TAB>who<TAB>median<TAB>unit` lines for `cargo xtask bench`.
//! Run with: `cargo run --release -p demo-pipe --example bench_pipe` (`BENCH_QUICK=1` for fewer repeats)

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use demo_pipe::Process;
use demo_pipe::pipe::{Connection, pipe};
use demo_pipe::value::Value;
use ipc_channel::ipc;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use serde_bytes::{ByteBuf, Bytes};

const MIB: usize = 1 << 20;
/// The largest message measured.
const MAX: usize = 16 * MIB;
/// The sizes measured, with their row ids.
const SIZES: [(&str, usize); 5] = [
    ("pipe.16b", 16),
    ("pipe.4kib", 4 << 10),
    ("pipe.64kib", 64 << 10),
    ("pipe.1mib", MIB),
    ("pipe.16mib", MAX),
];
/// Ours on the wire for [42, None, 'hello']: a 4-byte length and 12 bytes of postcard.
const FRAME: usize = 16;

fn hello() -> Value {
    Value::List(vec![42.into(), Value::None, "hello".into()])
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

/// Microseconds per call of `f`, over `n` calls.
fn per_call_us(n: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// GB/s for `bytes` moved by `f`.
fn gb_per_s(bytes: usize, f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    bytes as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn first_cpu(set: &CpuSet) -> usize {
    (0..CpuSet::count())
        .find(|&c| set.is_set(c).unwrap())
        .unwrap()
}

fn report(id: &str, who: &str, value: f64, unit: &str) {
    println!("bench\t{id}\t{who}\t{value:.6}\t{unit}");
}

/// Starts `f` in a child; the child is killed and reaped when the `Process` is dropped.
fn child<A: 'static>(f: impl FnOnce(A) + 'static, args: A) -> Process {
    let mut p = Process::new(f, args);
    p.start().unwrap();
    p
}

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let (repeats, trips) = if quick { (5, 500) } else { (15, 2000) };

    assert_eq!(postcard::to_stdvec(&hello()).unwrap().len() + 4, FRAME);

    // Round trip of the note's [42, None, 'hello']: send it, the child sends it back. All
    // three contenders run on one CPU, children included: on a shared 2-core machine a
    // round trip otherwise measures mostly where the scheduler happened to put the two
    // processes, and varies 3× from run to run.
    let all_cpus = sched_getaffinity(Pid::from_raw(0)).unwrap();
    let mut one_cpu = CpuSet::new();
    one_cpu.set(first_cpu(&all_cpus)).unwrap();
    sched_setaffinity(Pid::from_raw(0), &one_cpu).unwrap();
    let (mut conn, theirs) = pipe().unwrap();
    let _echo = child(
        |mut conn: Connection| {
            while let Ok(v) = conn.recv::<Value>() {
                conn.send(&v).unwrap();
            }
        },
        theirs,
    );

    // The limit: the same 16 bytes that ours puts on the wire, echoed over a bare socketpair.
    let (mut sock, theirs) = UnixStream::pair().unwrap();
    let _echo = child(
        |mut sock: UnixStream| {
            let mut buf = [0; FRAME];
            while sock.read_exact(&mut buf).is_ok() {
                sock.write_all(&buf).unwrap();
            }
        },
        theirs,
    );

    let (to_child, from_parent) = ipc::channel::<Value>().unwrap();
    let (to_parent, from_child) = ipc::channel::<Value>().unwrap();
    let _echo = child(
        |(rx, tx): (ipc::IpcReceiver<Value>, ipc::IpcSender<Value>)| {
            while let Ok(v) = rx.recv() {
                tx.send(v).unwrap();
            }
        },
        (from_parent, to_parent),
    );
    let [ours, limit, ipc_typed] = medians(
        repeats,
        [
            &mut || {
                per_call_us(trips, || {
                    conn.send(&hello()).unwrap();
                    conn.recv::<Value>().unwrap();
                })
            },
            &mut || {
                let mut buf = [7; FRAME];
                per_call_us(trips, || {
                    sock.write_all(&buf).unwrap();
                    sock.read_exact(&mut buf).unwrap();
                })
            },
            &mut || {
                per_call_us(trips, || {
                    to_child.send(hello()).unwrap();
                    from_child.recv().unwrap();
                })
            },
        ],
    );
    report("pipe.roundtrip", "ours", ours, "us");
    report("pipe.roundtrip", "limit", limit, "us");
    report("pipe.roundtrip", "ipc-channel", ipc_typed, "us");
    sched_setaffinity(Pid::from_raw(0), &all_cpus).unwrap();

    // Messages of each size, child to parent: the parent asks for `n` of `size` bytes and
    // times them all. Each sender child keeps one 16 MiB vector and sends its first `size`
    // bytes, so that no child allocates while the parent's clock runs.
    let (mut conn, theirs) = pipe().unwrap();
    let _sender = child(
        |mut conn: Connection| {
            let data = vec![7u8; MAX];
            while let Ok((size, n)) = conn.recv::<(usize, usize)>() {
                for _ in 0..n {
                    conn.send(Bytes::new(&data[..size])).unwrap();
                }
            }
        },
        theirs,
    );

    // The limit: the bare bytes, written whole and read into one reused buffer.
    let (mut sock, theirs) = UnixStream::pair().unwrap();
    let _sender = child(
        |mut sock: UnixStream| {
            let data = vec![7u8; MAX];
            let mut ask = [0; 16];
            while sock.read_exact(&mut ask).is_ok() {
                let size = u64::from_le_bytes(ask[..8].try_into().unwrap()) as usize;
                for _ in 0..u64::from_le_bytes(ask[8..].try_into().unwrap()) {
                    sock.write_all(&data[..size]).unwrap();
                }
            }
        },
        theirs,
    );
    let mut buf = vec![0u8; MAX];

    let (ask, asked) = ipc::channel::<(usize, usize)>().unwrap();
    let (tx, rx) = ipc::bytes_channel().unwrap();
    let _sender = child(
        |(asked, tx): (ipc::IpcReceiver<(usize, usize)>, ipc::IpcBytesSender)| {
            let data = vec![7u8; MAX];
            while let Ok((size, n)) = asked.recv() {
                for _ in 0..n {
                    tx.send(&data[..size]).unwrap();
                }
            }
        },
        (asked, tx),
    );
    for (id, size) in SIZES {
        // About 32 MiB per figure (8 MiB quick), and never fewer than 8 messages.
        let bytes = if quick { 8 * MIB } else { 32 * MIB };
        let n = (bytes / size).clamp(8, 20_000);
        // Three times the round trip's repeats (48 rounds, each order eight times): the
        // figures of one size move by 2× from round to round with the machine, and a run's
        // median over 18 rounds still put ours anywhere from 0.6× to 1.1× the limit at 64 KiB.
        let [ours, limit, ipc_bytes] = medians(
            repeats * 3,
            [
                &mut || {
                    gb_per_s(n * size, || {
                        conn.send(&(size, n)).unwrap();
                        for _ in 0..n {
                            assert_eq!(conn.recv::<ByteBuf>().unwrap().len(), size);
                        }
                    })
                },
                &mut || {
                    gb_per_s(n * size, || {
                        let mut ask = [0; 16];
                        ask[..8].copy_from_slice(&(size as u64).to_le_bytes());
                        ask[8..].copy_from_slice(&(n as u64).to_le_bytes());
                        sock.write_all(&ask).unwrap();
                        for _ in 0..n {
                            sock.read_exact(&mut buf[..size]).unwrap();
                        }
                    })
                },
                &mut || {
                    gb_per_s(n * size, || {
                        ask.send((size, n)).unwrap();
                        for _ in 0..n {
                            assert_eq!(rx.recv().unwrap().len(), size);
                        }
                    })
                },
            ],
        );
        report(id, "ours", ours, "GB/s");
        report(id, "limit", limit, "GB/s");
        report(id, "ipc-channel", ipc_bytes, "GB/s");
    }
}
