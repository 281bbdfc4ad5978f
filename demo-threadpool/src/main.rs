//! 线程池 (the thread pool): Python's `multiprocessing.dummy.Pool`, whose `map` fetches the
//! note's five URLs in 4 threads and hands back the responses in the order of the URLs.
//!
//! The note's Python:
//!
//! ```python
//! import requests
//! from multiprocessing.dummy import Pool as ThreadPool
//! urls = ['http://www.baidu.com', 'http://www.sina.com.cn', 'http://www.163.com',
//!         'http://www.qq.com', 'http://www.taobao.com']
//! pool = ThreadPool(4)
//! results = pool.map(requests.get, urls)
//! pool.close()
//! pool.join()
//! for i in results:
//!     print(i.url)
//! ```
//!
//! Run with: `cargo run -p demo-threadpool` (or give URLs to fetch them for real; add
//! `--timeline pool.svg` to draw which thread fetched which URL, and when)

mod demo;
mod fetch;
mod pool;
mod server;
mod timeline;

use std::fs::File;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use demo::{Args, say};
use fetch::{Agents, fetch};
use pool::Pool;
use server::{Server, Site};
use timeline::Timeline;

const USAGE: &str = "\
Usage: demo-threadpool [--help] [--timeline FILE] [URL...]

Fetches URLs through a pool of 4 threads with map, prints each one's url, status and size in
the order given, then times the same fetches one by one. With no URL it serves the note's five
sites from 127.0.0.1 (each answers after 0.1 to 0.5 s) and fetches those: no network needed.
Exit code 1 if a fetch failed, 2 for a malformed URL (nothing is fetched then).
--timeline FILE also draws the pool's fetches as an SVG: a lane per thread, a bar per URL.

Environment: DEMO_TIME_SCALE multiplies every sleep (default 1); HTTP(S)_PROXY, if set, is
used for hosts other than loopback.
";

/// The note's five sites, as paths of the local server, with how long each takes to answer.
const SITES: &[Site] = &[
    ("www.baidu.com", 0.5),
    ("www.sina.com.cn", 0.2),
    ("www.163.com", 0.4),
    ("www.qq.com", 0.1),
    ("www.taobao.com", 0.3),
];

fn main() -> ExitCode {
    let mut args = Args::parse(USAGE);
    let picture = args.value("--timeline");
    let urls = args.operands();
    // A malformed URL stops the demo before anything is fetched.
    for url in &urls {
        if let Err(e) = fetch::check(url) {
            demo::fail(&e);
        }
    }
    // A file that cannot be written stops the demo before it starts, as a bad flag does.
    let picture = picture.map(|path| match File::create(&path) {
        Ok(file) => (path, file),
        Err(e) => demo::fail(&format!("cannot write the timeline to {path}: {e}")),
    });
    match try_main(urls, picture) {
        Ok(0) => ExitCode::SUCCESS,
        result => {
            let why = result.map_or_else(|e| e.to_string(), |n| format!("fetches failed: {n}"));
            eprintln!("demo-threadpool: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Returns how many fetches failed.
fn try_main(urls: Vec<String>, picture: Option<(String, File)>) -> io::Result<usize> {
    let server = urls.is_empty().then(|| Server::start(SITES)).transpose()?;
    let urls = match &server {
        Some(server) => {
            say!("serving the note's five sites on {}", server.url(""));
            SITES.iter().map(|(site, _)| server.url(site)).collect()
        }
        None => urls,
    };

    let agents = Agents::new();
    let pool = Pool::new(4);
    let start = Instant::now();
    let (fetcher, timeline) = (agents.clone(), Arc::new(Timeline::new()));
    let recorder = Arc::clone(&timeline);
    let results = pool.map(
        move |url: String| {
            say!("get {url}");
            // On the timeline, a URL is its last part: the site's name, or the host.
            let label = url.rsplit('/').find(|p| !p.is_empty()).unwrap_or("");
            LANE.with(|lane| recorder.record(lane, label, || fetch(&fetcher, &url)))
        },
        urls.clone(),
    );
    let pooled = start.elapsed().as_secs_f64() * 1e3;
    pool.join();

    // New: results come in the order of `urls`, whichever fetch ended first.
    let mut failed = 0;
    for (url, result) in urls.iter().zip(results) {
        match result.map_err(|e| e.to_string()).and_then(|page| page) {
            Ok(page) => say!("{} {} {} bytes", page.url, page.status, page.size),
            Err(e) => {
                failed += 1;
                say!("{url} failed: {e}");
            }
        }
    }

    let start = Instant::now();
    for url in &urls {
        let _ = fetch(&agents, url);
    }
    let serial = start.elapsed().as_secs_f64() * 1e3;
    say!("all fetches through a pool of 4 threads: {pooled:.0} ms; one by one: {serial:.0} ms");
    drop(server); // Stops the server and joins its threads.
    if let Some((path, mut file)) = picture {
        let title = format!("pool.map: {} fetches in a pool of 4 threads", urls.len());
        file.write_all(timeline::svg(&title, &timeline.bars()).as_bytes())?;
        say!("wrote timeline to {path}");
    }
    Ok(failed)
}

static THREADS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The timeline's lane: every pool thread is named `pool`, so each gets a number, in the
    /// order the threads start their first fetch.
    static LANE: String = format!("pool thread {}", THREADS.fetch_add(1, Ordering::Relaxed));
}
