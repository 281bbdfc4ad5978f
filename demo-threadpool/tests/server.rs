//! The demo's local server stops once the fetches are done, whoever is still connected: a
//! client that trickles a request slower than it ends but faster than the server's read
//! timeout cannot keep the demo running.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Kills the demo if a test fails before it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_slow_client_does_not_keep_the_demo_running() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-threadpool"));
    command
        .env("DEMO_TIME_SCALE", "1")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut demo = Guard(command.spawn().unwrap());
    let mut stdout = BufReader::new(demo.0.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
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

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the demo still runs 60 s on, kept alive by a slow client"
        );
        thread::sleep(Duration::from_millis(10));
    };
    let rest = std::io::read_to_string(stdout).unwrap();
    assert!(status.success(), "{status}\n{first}{rest}");
    assert_eq!(
        closed.recv_timeout(Duration::from_secs(60)),
        Ok(Ok(())),
        "the slow client's connection was answered or left open"
    );
    let _ = stop.send(());
    trickle.join().unwrap();
}
