//! Runs the demo binary and checks from outside: the local server path works without network
//! (even with a proxy set), results come in input order, a failed fetch is its item's error
//! and exit code 1, a malformed URL is exit code 2 before anything is fetched.
//!
//! Every address here is on loopback.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::thread;
use std::time::Duration;

use support::{Output, run};

mod support;

fn demo() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-threadpool"));
    command
        .env("RUST_BACKTRACE", "0")
        .env("DEMO_TIME_SCALE", "0.05");
    for proxy in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
    ] {
        command.env_remove(proxy);
    }
    command
}

/// A loopback port where nothing listens: bound, then let go.
fn closed_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A one-page server on loopback that answers every request with `body`. Its thread is not
/// joined: it waits for requests until the test process ends.
fn one_page_server(body: &'static str) -> String {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let url = format!("http://{}/page", listener.local_addr().unwrap());
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(format!("{head}{body}").as_bytes());
        }
    });
    url
}

fn lines(out: &Output) -> Vec<String> {
    out.stdout
        .lines()
        .map(|l| l.split_once("] ").unwrap().1.to_string())
        .collect()
}

#[test]
fn the_local_sites_are_fetched_in_order_without_network_or_proxy() {
    // A proxy that does not exist: loopback must not go through it.
    let proxy = format!("http://127.0.0.1:{}", closed_port());
    let out = run(demo().env("HTTP_PROXY", &proxy).env("http_proxy", &proxy));
    assert!(out.status.success(), "{out:?}");
    let results: Vec<String> = lines(&out)
        .into_iter()
        .filter(|l| l.starts_with("http://127.0.0.1:"))
        .collect();
    let sites = [
        "www.baidu.com",
        "www.sina.com.cn",
        "www.163.com",
        "www.qq.com",
        "www.taobao.com",
    ];
    assert_eq!(results.len(), sites.len(), "{results:?}");
    for (line, site) in results.iter().zip(sites) {
        let (url, rest) = line.split_once(' ').unwrap();
        assert!(url.ends_with(&format!("/{site}")), "{line}");
        assert!(
            rest.starts_with("200 ") && rest.ends_with(" bytes"),
            "{line}"
        );
    }
}

#[test]
fn a_bad_url_is_its_items_error_and_exit_code_1() {
    let good = one_page_server("hello");
    let bad = format!("http://127.0.0.1:{}/nothing-here", closed_port());
    let out = run(demo().args([&bad, &good]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let results: Vec<String> = lines(&out)
        .into_iter()
        .filter(|l| l.starts_with("http://"))
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        results[0].starts_with(&format!("{bad} failed: ")),
        "{results:?}"
    );
    assert_eq!(results[1], format!("{good} 200 5 bytes"));
    assert!(out.stderr.contains("fetches failed: 1"), "{}", out.stderr);
}

#[test]
fn a_malformed_url_is_exit_code_2_before_any_fetch() {
    let good = format!("http://127.0.0.1:{}/", closed_port());
    for bad in ["not a url", "www.baidu.com", "ftp://127.0.0.1/"] {
        let out = run(demo().args([good.as_str(), bad]));
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        assert!(out.stdout.is_empty(), "{bad}: something was fetched");
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(bad), "{}", out.stderr);
    }
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    for (env, arg) in [("abc", None), ("0", None), ("1", Some("--bogus"))] {
        let out = run(demo().env("DEMO_TIME_SCALE", env).args(arg));
        assert_eq!(out.status.code(), Some(2), "{env} {arg:?}");
        assert_eq!(out.stderr.lines().count(), 1);
        assert!(out.stdout.is_empty());
    }
    let help = run(demo().arg("--help"));
    assert!(help.status.success());
    assert!(help.stdout.starts_with("Usage: demo-threadpool"));
}

/// A directory of its own under the system's temp dir, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The bars of a picture as (lane, label), matched to their lanes by their height in it.
fn bars(svg: &str) -> Vec<(String, String)> {
    let attr = |line: &str, name: &str| -> f64 {
        let at = line.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        line[at..at + line[at..].find('"').unwrap()]
            .parse()
            .unwrap()
    };
    let between = |line: &str, from: &str, to: &str| -> String {
        let at = line.find(from).unwrap() + from.len();
        line[at..at + line[at..].find(to).unwrap()].to_string()
    };
    let lanes: Vec<(f64, String)> = (svg.lines())
        .filter(|l| l.contains("class=\"lane\""))
        .map(|l| (attr(l, "y"), between(l, "text-anchor=\"end\">", "</text>")))
        .collect();
    (svg.lines())
        .filter(|l| l.contains("class=\"bar\""))
        .map(|l| {
            let y = attr(l, "y");
            let lane = lanes.iter().find(|(top, _)| (y - top - 5.0).abs() < 0.5);
            let label = between(l, "<title>", ": ");
            (lane.expect("a bar in a lane").1.clone(), label)
        })
        .collect()
}

#[test]
fn every_fetch_says_which_numbered_pool_thread_ran_it() {
    let out = run(&mut demo());
    assert!(out.status.success(), "{out:?}");
    let stdout = out.stdout;
    let gets: Vec<&str> = stdout.lines().filter(|l| l.contains("] get ")).collect();
    assert_eq!(gets.len(), 5, "{stdout}");
    for line in gets {
        let who = &line[..line.find(']').unwrap()];
        let thread = who.rsplit(' ').next().unwrap();
        let n: usize = thread.strip_prefix("pool-").unwrap().parse().unwrap();
        assert!((1..=4).contains(&n), "{line}");
    }
}

#[test]
fn the_timeline_draws_each_fetch_in_the_lane_of_the_thread_that_ran_it() {
    let dir = TempDir::new("demo-threadpool-timeline");
    let path = dir.0.join("pool.svg");
    let out = run(demo().arg("--timeline").arg(&path));
    assert!(out.status.success(), "{out:?}");
    let lines = lines(&out);
    let stdout = out.stdout;
    // The flagless output, then one line more.
    assert_eq!(lines.len(), 13, "{lines:?}");
    assert_eq!(lines[12], format!("wrote timeline to {}", path.display()));
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
    let lanes = svg.matches("class=\"lane\"").count();
    assert!((1..=4).contains(&lanes), "{lanes} lanes for 4 threads");
    // Each `get` line names its thread; the picture must put that fetch in that thread's lane.
    let mut printed: Vec<(String, String)> = (stdout.lines())
        .filter_map(|l| {
            let (who, url) = l.split_once("] get ")?;
            let site = url.rsplit('/').next().unwrap();
            Some((
                who.rsplit(' ').next().unwrap().to_string(),
                site.to_string(),
            ))
        })
        .collect();
    printed.sort();
    let mut drawn = bars(&svg);
    drawn.sort();
    assert_eq!(drawn.len(), 5, "{svg}");
    assert_eq!(drawn, printed, "{svg}");
}

#[test]
fn an_unwritable_timeline_is_one_line_and_exit_code_2_before_any_fetch() {
    let dir = TempDir::new("demo-threadpool-unwritable");
    let path = dir.0.join("no-such-dir").join("pool.svg");
    let out = run(demo().arg("--timeline").arg(&path));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "the demo started");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("no-such-dir"), "{}", out.stderr);
    assert!(!path.exists());
}
