//! A small HTTP server on 127.0.0.1 that stands in for the note's five sites, so that the demo
//! runs offline: each site is a path, answered after its own delay (`DEMO_TIME_SCALE` applies).
//!
//! One thread accepts, one thread per connection answers (each answer waits, as a slow site
//! does, so they must overlap). Dropping the `Server` stops it at once: it closes every
//! connection still open, wakes every answer still waiting, and joins all its threads. A client
//! that trickles a request byte by byte cannot keep it running.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::demo;

/// A path and how long, in the note's seconds, the site takes to answer it.
pub type Site = (&'static str, f64);

pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// What the server's threads share: whether it has stopped, and the connections still open,
/// so that stopping can close them.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    stopped: Condvar,
}

#[derive(Default)]
struct State {
    stopped: bool,
    open: HashMap<u64, TcpStream>,
}

impl Shared {
    /// Registers a new connection under a number; false once the server has stopped.
    fn open(&self, n: u64, stream: &TcpStream) -> io::Result<bool> {
        let mut state = self.state.lock().unwrap();
        if !state.stopped {
            state.open.insert(n, stream.try_clone()?);
        }
        Ok(!state.stopped)
    }

    fn close(&self, n: u64) {
        self.state.lock().unwrap().open.remove(&n);
    }

    /// Stops the server: every open connection is shut, so that a read or write on it
    /// returns at once, and every `wait` wakes.
    fn stop(&self) {
        let mut state = self.state.lock().unwrap();
        state.stopped = true;
        for stream in state.open.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.stopped.notify_all();
    }

    /// Waits `delay`, as a slow site does; false if the server stopped meanwhile.
    fn wait(&self, delay: Duration) -> bool {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .stopped
            .wait_timeout_while(state, delay, |s| !s.stopped)
            .unwrap();
        !state.stopped
    }
}

impl Server {
    /// Listens on a free port of 127.0.0.1 and serves `sites` until dropped.
    pub fn start(sites: &'static [Site]) -> io::Result<Server> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let serving = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("server".into())
            .spawn(move || serve(listener, sites, serving))?;
        Ok(Server {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// `http://127.0.0.1:PORT/` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop();
        // `accept` blocks until someone connects: we do, so that it sees the stop. If even
        // that fails, the thread is left to end with the process rather than waited for in
        // vain; the connections are closed all the same.
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
            if let Some(accept) = self.accept.take() {
                let _ = accept.join();
            }
        }
    }
}

fn serve(listener: TcpListener, sites: &'static [Site], shared: Arc<Shared>) {
    let mut answering = Vec::new();
    for (n, stream) in (0..).zip(listener.incoming()) {
        let Ok(stream) = stream else { continue };
        match shared.open(n, &stream) {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => continue, // Not served: a connection the stop could not close.
        }
        let answering_shared = Arc::clone(&shared);
        let answer = thread::Builder::new().name("server".into()).spawn(move || {
            answer(stream, sites, &answering_shared);
            answering_shared.close(n);
        });
        match answer {
            Ok(answer) => answering.push(answer),
            Err(_) => shared.close(n),
        }
        answering.retain(|t: &JoinHandle<()>| !t.is_finished());
    }
    // Each answer ends at once: its connection is shut and its wait is woken.
    for t in answering {
        let _ = t.join();
    }
}

/// Reads one request and answers it: the site's page after the site's delay, or 404.
fn answer(mut stream: TcpStream, sites: &[Site], shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buf = [0; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let request = String::from_utf8_lossy(&request);
    // "GET /www.baidu.com HTTP/1.1"
    let path = request
        .split(' ')
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/');
    let response = match sites.iter().find(|(site, _)| *site == path) {
        Some((site, delay)) => {
            if !shared.wait(demo::scaled(*delay)) {
                return;
            }
            let body = page(site);
            format!("HTTP/1.1 200 OK\r\n{}\r\n\r\n{body}", headers(body.len()))
        }
        None => format!("HTTP/1.1 404 Not Found\r\n{}\r\n\r\n", headers(0)),
    };
    let _ = stream.write_all(response.as_bytes());
}

fn headers(length: usize) -> String {
    format!("Content-Type: text/html\r\nContent-Length: {length}\r\nConnection: close")
}

/// The page a site answers with: its size is what the demo prints.
pub fn page(site: &str) -> String {
    format!("<html><title>{site}</title><p>{site}, served by the demo on 127.0.0.1</p></html>\n")
}
