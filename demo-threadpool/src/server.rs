//! A small HTTP server on 127.0.0.1 that stands in for the note's five sites, so that the demo
//! runs offline: each site is a path, answered after its own delay (`DEMO_TIME_SCALE` applies).
//!
//! One thread accepts, one thread per connection answers (each answer waits, as a slow site
//! does, so they must overlap). Dropping the `Server` stops it and joins all its threads.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::demo;

/// A path and how long, in the note's seconds, the site takes to answer it.
pub type Site = (&'static str, f64);

pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on a free port of 127.0.0.1 and serves `sites` until dropped.
    pub fn start(sites: &'static [Site]) -> io::Result<Server> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let accept = thread::Builder::new()
            .name("server".into())
            .spawn(move || serve(listener, sites, &stopping))?;
        Ok(Server {
            addr,
            stop,
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
        self.stop.store(true, Ordering::SeqCst);
        // `accept` blocks until someone connects: we do, so that it sees `stop`. If even that
        // fails, the thread is left to end with the process rather than waited for in vain.
        if TcpStream::connect(self.addr).is_ok() {
            if let Some(accept) = self.accept.take() {
                let _ = accept.join();
            }
        }
    }
}

fn serve(listener: TcpListener, sites: &'static [Site], stop: &AtomicBool) {
    let mut answering = Vec::new();
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let answer = thread::Builder::new()
            .name("server".into())
            .spawn(move || answer(stream, sites));
        answering.extend(answer.ok());
        answering.retain(|t: &JoinHandle<()>| !t.is_finished());
    }
    // Each answer ends: its reads time out, its delay is bounded.
    for t in answering {
        let _ = t.join();
    }
}

/// Reads one request and answers it: the site's page after the site's delay, or 404.
fn answer(mut stream: TcpStream, sites: &[Site]) {
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
            demo::sleep(*delay);
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
