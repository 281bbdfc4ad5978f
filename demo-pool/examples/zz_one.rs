use demo_pool::{Pool, StartMethod, run_if_spawned};
fn main() {
    run_if_spawned();
    let m: StartMethod = std::env::args().nth(1).unwrap().parse().unwrap();
    let mut pool = Pool::with_start_method(4, m).unwrap();
    pool.close();
    pool.join().unwrap();
    let mut pool = Pool::with_start_method(4, m).unwrap();
    pool.close();
    pool.join().unwrap();
}
