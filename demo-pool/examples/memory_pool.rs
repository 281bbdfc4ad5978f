//! Peak memory of `map` against `imap` on 1,000,000 items: `map` collects the items and
//! encodes every chunk before the first result; `imap` takes the items as the workers free up.
//!
//! Each run is one process, so that one call's peak does not hide another's. It prints the
//! peak resident size of this process (`getrusage`, `ru_maxrss`), the size before the call,
//! and the largest peak among the reaped workers.
//!
//! Run with: `cargo run --release -p demo-pool --example memory_pool -- map` (or `imap 1000`,
//! `imap 1`, `imap_unordered 1000`: the call and its chunksize)

use std::process::ExitCode;
use std::time::Instant;

use demo_pool::Pool;

const ITEMS: u64 = 1_000_000;

fn square(x: u64) -> u64 {
    x * x
}

/// The peak resident size, in MiB, of this process or of its largest reaped child.
fn peak_mib(who: libc::c_int) -> f64 {
    // SAFETY: `getrusage` only writes the `rusage` it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(who, &mut usage);
        usage
    };
    usage.ru_maxrss as f64 / 1024.0
}

fn main() -> ExitCode {
    // `args_os`: an argument that is not UTF-8 is a usage error, not a panic.
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let arg = |i: usize| args.get(i).map(|a| a.to_str().ok_or(()));
    let chunksize = arg(1).map_or(Ok(1000), |c| {
        c.and_then(|c| c.parse::<usize>().map_err(drop))
    });
    let (call, chunksize) = match (arg(0), chunksize) {
        (Some(Ok(call @ ("map" | "imap" | "imap_unordered"))), Ok(n)) if n > 0 => (call, n),
        _ => {
            eprintln!("usage: memory_pool map|imap|imap_unordered [CHUNKSIZE]");
            return ExitCode::from(2);
        }
    };
    let mut pool = Pool::new(4).unwrap();
    let before = peak_mib(libc::RUSAGE_SELF);
    let start = Instant::now();
    let items = 0..ITEMS;
    let sum: u64 = match call {
        "map" => pool.map(square, items).unwrap().iter().sum(),
        "imap" => pool
            .imap(square, items, chunksize)
            .unwrap()
            .map(Result::unwrap)
            .sum(),
        _ => (pool.imap_unordered(square, items, chunksize).unwrap())
            .map(Result::unwrap)
            .sum(),
    };
    let took = start.elapsed().as_secs_f64();
    assert_eq!(sum, (0..ITEMS).map(square).sum::<u64>());
    pool.close();
    pool.join().unwrap();
    let shown = if call == "map" {
        String::new()
    } else {
        format!(", chunksize {chunksize}")
    };
    println!(
        "{call}{shown}: {ITEMS} items in {took:.2} s; peak RSS {:.1} MiB (before the call \
         {before:.1} MiB); largest worker {:.1} MiB",
        peak_mib(libc::RUSAGE_SELF),
        peak_mib(libc::RUSAGE_CHILDREN),
    );
    ExitCode::SUCCESS
}
