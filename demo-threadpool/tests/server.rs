//! The demo's local server stops once the fetches are done, whoever is still connected: a
//! client that trickles a request slower than it ends but faster than the server's read
//! timeout cannot keep the demo running.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use support::Running;

mod support;

#[test]
fn a_slow_client_does_not_keep_the_demo_running() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-threadpool"));
    command
        .env("DEMO_TIME_SCALE", "1")
        .env("RUST_BACKTRACE", "0");
    let mut demo = Running::start(&mut command);
    let first = demo.line().unwrap_or_default();
    // "[pid 4242] serving the note's five sites on http://127.0.0.1:PORT/"
    let addr = first
        .trim_end()
        .rsplit_once("http://")
        .and_then(|(_, url)| url.strip_suffix('/'))
        .unwrap_or_else(|| panic!("no server address in {first:?}"))
        .to_string();
    let mut client = TcpStream::connect(&addr).unwrap();
    let mut reply = client.try_clone().unwrap();

    // A byte a second, well within the server's 5 s read timeout: the request never ends.
    let (stop, stopped) = mpsc::channel::<()>();
    let trickle = thread::spawn(move || {
        let head = b"GET /www.baidu.com HTTP/1.1\r\nX-Slow: ";
        for &byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if stopped.recv_timeout(Duration::from_secs(1)).is_ok() {
                return;
            }
            if client.write_all(&[byte]).is_err() {
                return;
            }
        }
    });
    // The server closes the connection when it stops: the read sees the end, or a reset.
    let (closed_tx, closed) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0; 1024];
        let got = match reply.read(&mut buf) {
            Ok(0) | Err(_) => Ok(()),
            Ok(n) => Err(String::from_utf8_lossy(&buf[..n]).into_owned()),
        };
        let _ = closed_tx.send(got);
    });

    // Bounded by the support's limit: a demo that a slow client keeps running fails there.
    let out = demo.finish();
    assert!(
        out.status.success(),
        "{}\n{first}{}",
        out.status,
        out.stdout
    );
    assert_eq!(
        closed.recv_timeout(Duration::from_secs(60)),
        Ok(Ok(())),
        "the slow client's connection was answered or left open"
    );
    let _ = stop.send(());
    trickle.join().unwrap();
}
