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
//! Run with: `cargo run -p demo-threadpool` (URLs given as arguments are fetched for real)

mod demo;
mod fetch;
mod server;
mod sites;
mod timeline;

use std::fs::File;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Instant;

use demo::{Args, say};
use demo_threadpool::{Pool, Ran};
use fetch::{Agents, Page, fetch};

const USAGE: &str = "\
Usage: demo-threadpool [--help] [--timeline FILE] [URL...]

Fetches URLs through a pool of 4 threads with map and prints each one's url, status and size
in the order given, then times the same fetches one by one. With no URL it serves the note's
five sites from 127.0.0.1 (each answers after 0.1 to 0.5 s): no network needed. Exit code 1 if
a fetch failed, 2 for a malformed URL (nothing is fetched then). --timeline FILE also draws the
fetches as an SVG: a lane per thread, a bar per URL.

Environment: DEMO_TIME_SCALE multiplies every sleep (default 1); HTTP(S)_PROXY, if set, is
used for hosts other than loopback.
";

fn main() -> ExitCode {
    let mut args = Args::parse(USAGE);
    let picture = args.value("--timeline");
    let urls = args.operands();
    // A malformed URL stops the demo before anything is fetched.
    if let Some(e) = urls.iter().find_map(|url| fetch::check(url).err()) {
        demo::fail(&e);
    }
    // A file that cannot be written stops the demo before it starts, as a bad flag does.
    let picture = picture.map(|path| match File::create(&path) {
        Ok(file) => (path, file),
        Err(e) => demo::fail(&format!("cannot write the timeline to {path}: {e}")),
    });
    demo::exit_code(try_main(urls, picture))
}

/// `requests.get(url)`, in a pool thread, which says so.
fn get(agents: &Agents, url: &str) -> Result<Page, String> {
    say!("get {url}");
    fetch(agents, url)
}

/// Fails if a fetch failed, after it has printed every result.
fn try_main(urls: Vec<String>, picture: Option<(String, File)>) -> io::Result<()> {
    let (server, urls) = match urls.is_empty() {
        true => sites::serve().map(|(server, urls)| (Some(server), urls))?,
        false => (None, urls),
    };
    let agents = Agents::new();
    let pool = Pool::new(4)?;
    let (fetcher, start) = (agents.clone(), Instant::now());
    // map_timed is map, and also says which thread ran each fetch and when, for the picture.
    let (results, ran) = pool.map_timed(move |url: String| get(&fetcher, &url), urls.clone());
    let pooled = start.elapsed().as_secs_f64() * 1e3;
    pool.join();

    // New: results come in the order of `urls`, whichever fetch ended first.
    let failed = results.iter().filter(|r| !matches!(r, Ok(Ok(_)))).count();
    for (url, result) in urls.iter().zip(results) {
        match result.map_err(|e| e.to_string()).and_then(|page| page) {
            Ok(page) => say!("{} {} {} bytes", page.url, page.status, page.size),
            Err(e) => say!("{url} failed: {e}"),
        }
    }

    let start = Instant::now();
    let _: Vec<_> = urls.iter().map(|url| fetch(&agents, url)).collect(); // Only the time counts.
    let serial = start.elapsed().as_secs_f64() * 1e3;
    say!("all fetches through a pool of 4 threads: {pooled:.0} ms; one by one: {serial:.0} ms");
    drop(server); // Stops the server and joins its threads.
    if let Some((path, mut file)) = picture {
        let title = format!("pool.map: {} fetches in a pool of 4 threads", urls.len());
        file.write_all(timeline::svg(&title, &bars(&urls, ran)).as_bytes())?;
        say!("wrote timeline to {path}");
    }
    match failed {
        0 => Ok(()),
        n => Err(io::Error::other(format!("fetches failed: {n}"))),
    }
}

/// The picture's bars: a lane per pool thread, a bar per fetch named by the URL's last part.
fn bars(urls: &[String], ran: Vec<Ran>) -> Vec<timeline::Bar> {
    let last = |url: &str| url.rsplit('/').find(|p| !p.is_empty()).map(String::from);
    let bar = |(url, r): (&String, Ran)| (r.thread, last(url).unwrap_or_default(), r.start, r.end);
    timeline::bars(urls.iter().zip(ran).map(bar))
}
