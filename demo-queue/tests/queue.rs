//! The queue between real processes: bounds, many writers and readers, and dead peers.
//! Children report through queues and exit codes; they print nothing (a forked child's
//! output is lost inside the test harness).

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use demo_queue::{GetError, Process, PutError, Queue, Reader, Writer, exit_now};

/// Tests run on parallel threads, and a child forked by one test would hold the queue ends
/// another test has open at that moment, keeping them open past their owner's drop. The
/// tests that fork, or that wait for ends to close, take turns.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static FORKS: Mutex<()> = Mutex::new(());
    FORKS.lock().unwrap_or_else(|e| e.into_inner())
}

const LONG: Duration = Duration::from_secs(30);

#[test]
fn a_put_on_a_full_queue_waits_for_a_get_in_another_process() {
    let _turn = one_at_a_time();
    let q = Queue::<u64>::bounded(2).unwrap();
    let mut writer = Process::new(
        |w: Writer<u64>| {
            for i in 0..100 {
                w.put(i).unwrap();
            }
            // The queue holds at most 2: a third put cannot go in before the reader takes one.
            w.put(100).unwrap();
            w.put(101).unwrap();
            let full = w.put_timeout(102, Duration::from_millis(50));
            let code = if matches!(full, Err(PutError::Full)) {
                0
            } else {
                3
            };
            // `_exit`: `std::process::exit` would first run the standard library's clean-up,
            // which takes a lock that a test thread starting or ending at the fork may have
            // held, and wait for it for ever.
            exit_now(code)
        },
        q.writer(),
    );
    writer.start().unwrap();
    for i in 0..100 {
        assert_eq!(q.get_timeout(LONG).unwrap(), i);
    }
    assert_eq!(
        writer.join().unwrap(),
        0,
        "put_timeout on the full queue did not give Full"
    );
    assert_eq!((q.get().unwrap(), q.get().unwrap()), (100, 101));
    assert!(matches!(
        q.get_timeout(Duration::from_millis(20)),
        Err(GetError::Empty)
    ));
}

#[test]
fn many_writer_processes_lose_nothing_and_duplicate_nothing() {
    let _turn = one_at_a_time();
    const WRITERS: u64 = 4;
    const EACH: u64 = 2_000;
    let q = Queue::<u64>::bounded(16).unwrap();
    let (w, r) = (q.writer(), q.reader());
    drop(q);
    let mut writers: Vec<Process> = (0..WRITERS)
        .map(|n| {
            Process::new(
                move |w: Writer<u64>| (0..EACH).for_each(|i| w.put(n * EACH + i).unwrap()),
                w.clone(),
            )
        })
        .collect();
    drop(w);
    writers.iter_mut().for_each(|p| p.start().unwrap());
    let mut seen = HashSet::new();
    let mut sum = 0;
    // Every writer gone and the queue drained: Disconnected ends the loop.
    loop {
        match r.get() {
            Ok(value) => {
                assert!(seen.insert(value), "{value} arrived twice");
                sum += value;
            }
            Err(GetError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let n = WRITERS * EACH;
    assert_eq!(seen.len() as u64, n);
    assert_eq!(sum, n * (n - 1) / 2);
    for mut p in writers {
        assert_eq!(p.join().unwrap(), 0);
    }
}

#[test]
fn many_reader_processes_share_the_values_out() {
    let _turn = one_at_a_time();
    const N: u64 = 3_000;
    let q = Queue::<u64>::bounded(8).unwrap();
    let results = Queue::<Vec<u64>>::new().unwrap();
    let (w, r) = (q.writer(), q.reader());
    drop(q);
    // The writer starts first and this process lets go of its write end before the
    // readers start: a reader forked while we held one would wait for us for ever.
    let mut writer = Process::new(
        move |w: Writer<u64>| (0..N).for_each(|i| w.put(i).unwrap()),
        w,
    );
    writer.start().unwrap();
    // Each reader sends back what it got.
    let mut readers: Vec<Process> = (0..3)
        .map(|_| {
            Process::new(
                |(r, out): (Reader<u64>, Writer<Vec<u64>>)| {
                    let mut got = Vec::new();
                    while let Ok(value) = r.get() {
                        got.push(value);
                    }
                    out.put(got).unwrap();
                },
                (r.clone(), results.writer()),
            )
        })
        .collect();
    drop(r);
    readers.iter_mut().for_each(|p| p.start().unwrap());
    let mut all: Vec<u64> = Vec::new();
    for _ in 0..3 {
        let got = results.get_timeout(LONG).unwrap();
        assert!(got.is_sorted(), "one reader got values out of order");
        all.extend(got);
    }
    all.sort();
    assert_eq!(all, (0..N).collect::<Vec<_>>());
    assert_eq!(writer.join().unwrap(), 0);
    for mut p in readers {
        assert_eq!(p.join().unwrap(), 0);
    }
}

#[test]
fn a_put_on_a_full_queue_fails_once_the_reader_process_dies() {
    let _turn = one_at_a_time();
    let q = Queue::<u64>::bounded(1).unwrap();
    let w = q.writer();
    // The reader holds the only read end; it takes one value, then hangs until killed.
    let mut reader = Process::new(
        |r: Reader<u64>| {
            r.get().unwrap();
            loop {
                std::thread::park();
            }
        },
        q.reader(),
    );
    drop(q);
    reader.start().unwrap();
    w.put(1).unwrap();
    w.put(2).unwrap(); // Goes in once the reader has taken 1: now the queue is full.
    let blocked = std::thread::spawn(move || {
        let result = w.put(3); // Waits for room that will never come...
        (result, w)
    });
    reader.kill().unwrap(); // ...until the last reader is gone.
    assert_eq!(reader.join().unwrap(), -9);
    let (result, w) = blocked.join().unwrap();
    assert!(matches!(result, Err(PutError::Disconnected)), "{result:?}");
    let again = w.put_timeout(4, LONG);
    assert!(matches!(again, Err(PutError::Disconnected)), "{again:?}");
}

#[test]
fn a_reader_gets_disconnected_once_every_writer_is_gone_even_killed() {
    let _turn = one_at_a_time();
    let q = Queue::<u64>::new().unwrap();
    let r = q.reader();
    let mut ends = Process::new(|w: Writer<u64>| w.put(1).unwrap(), q.writer());
    let mut hangs = Process::new(
        |w: Writer<u64>| {
            w.put(2).unwrap();
            loop {
                std::thread::park();
            }
        },
        q.writer(),
    );
    drop(q);
    ends.start().unwrap();
    hangs.start().unwrap();
    let mut got = [r.get().unwrap(), r.get().unwrap()];
    got.sort();
    assert_eq!(got, [1, 2]);
    assert_eq!(ends.join().unwrap(), 0);
    hangs.kill().unwrap();
    assert_eq!(hangs.join().unwrap(), -9);
    let last = r.get(); // No timeout: it must not hang.
    assert!(matches!(last, Err(GetError::Disconnected)), "{last:?}");
}
