#[path = "../src/pool.rs"]
mod pool;
use std::time::Instant;
fn noop(x: u64) -> u64 { x }
fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    if arg == "map" {
        let p = pool::Pool::new(4).unwrap();
        p.map(noop, 0..1_000_000).unwrap();
    }
    if arg == "apply" {
        let p = pool::Pool::new(4).unwrap();
        let r: Vec<_> = (0..20000).map(|i| p.apply_async(noop, i).unwrap()).collect();
        r.iter().for_each(|r| { r.get().unwrap(); });
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    eprintln!("{}", status.lines().filter(|l| l.starts_with("VmRSS") || l.starts_with("VmData")|| l.starts_with("Threads")).collect::<Vec<_>>().join(" "));
    for _ in 0..5 {
        let t = Instant::now();
        let mut p = pool::Pool::new(4).unwrap();
        let a = t.elapsed();
        p.close();
        p.join().unwrap();
        let b = t.elapsed();
        eprintln!("new {:?} close+join {:?}", a, b - a);
    }
}
