//! Runs the demo binary and checks, from outside, what the note's scenario promises: every
//! Get after its Put, gets in put order, writer and reader in two processes other than the
//! parent; and that the output matches expected-output.txt.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Kills the child if a test fails before it has been waited for.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(args: &[&str], scale: &str) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_demo-queue"))
        .args(args)
        .env("DEMO_TIME_SCALE", scale)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard(Some(child));
    let deadline = Instant::now() + Duration::from_secs(60);
    let child = guard.0.as_mut().unwrap();
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the demo did not end within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20)); // A poll interval, not a synchronisation.
    }
    let mut child = guard.0.take().unwrap();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Output {
        status: child.wait().unwrap(),
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

/// `[pid 42] rest` or `[pid 42 name] rest` → (42, rest).
fn split(line: &str) -> (u32, &str) {
    let (who, rest) = line
        .strip_prefix("[pid ")
        .unwrap()
        .split_once("] ")
        .unwrap();
    (who.split(' ').next().unwrap().parse().unwrap(), rest)
}

/// The lines of one part: after the line starting with `from`, up to the next numbered part.
fn part<'a>(lines: &[&'a str], from: &str) -> Vec<&'a str> {
    let start = lines
        .iter()
        .position(|l| split(l).1.starts_with(from))
        .unwrap()
        + 1;
    lines[start..]
        .iter()
        .take_while(|l| !split(l).1.starts_with(char::is_numeric))
        .copied()
        .collect()
}

/// Checks one writer/reader run; returns how many values the reader printed.
fn check_processes(lines: &[&str], parent: u32) -> usize {
    let find = |prefix: &str| lines.iter().position(|l| split(l).1.starts_with(prefix));
    let writer = split(lines[find("Process to write").unwrap()]).0;
    let mut gets = 0;
    for value in ["A", "B", "C"] {
        let put = find(&format!("Put {value} to queue")).unwrap();
        assert_eq!(split(lines[put]).0, writer);
        if let Some(get) = find(&format!("Get {value} from queue.")) {
            assert!(get > put, "Get {value} came before its Put");
            let reader = split(lines[get]).0;
            assert!(reader != writer && reader != parent && writer != parent);
            assert_eq!(
                gets,
                ["A", "B", "C"].iter().position(|v| *v == value).unwrap()
            );
            gets += 1;
        }
    }
    gets
}

#[test]
fn writer_and_reader_are_two_processes_and_gets_follow_puts_in_order() {
    let out = run(&[], "0.05");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let parent = split(lines[0]).0;

    // Python's way may lose what the reader had not taken when it was terminated.
    let terminated = part(&lines, "1.");
    let got = check_processes(&terminated, parent);
    let (_, last) = split(terminated.last().unwrap());
    let left: usize = last
        .split("unread: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(got + left <= 3);

    // The clean way loses nothing.
    let clean = part(&lines, "2.");
    assert_eq!(check_processes(&clean, parent), 3);
    assert!(clean.last().unwrap().ends_with("nothing is lost"));

    let threads = part(&lines, "3.");
    for item in 0..5 {
        let put = threads
            .iter()
            .position(|l| *l == format!("[pid {parent} producer] Put {item} to queue..."));
        let get = threads
            .iter()
            .position(|l| *l == format!("[pid {parent} consumer] Get {item} from queue."));
        assert!(put.unwrap() < get.unwrap(), "item {item}: Get before Put");
    }
}

#[test]
fn output_matches_expected_output() {
    let out = run(&[], "0.05");
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let expected =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/expected-output.txt"))
            .unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(matches(&patterns(&expected), &lines), "output:\n{stdout}");
}

#[test]
fn help_and_bad_input() {
    let help = run(&["--help"], "1");
    assert!(help.status.success());
    assert!(
        String::from_utf8(help.stdout)
            .unwrap()
            .starts_with("Usage: demo-queue")
    );
    for (args, scale) in [(&["--bogus"][..], "1"), (&[][..], "fast")] {
        let bad = run(args, scale);
        assert_eq!(bad.status.code(), Some(2));
        assert!(bad.stdout.is_empty());
        assert_eq!(String::from_utf8(bad.stderr).unwrap().lines().count(), 1);
    }
}

// The expected-output.txt format: `[..]` is any text within a line, a line `...` any lines,
// and lines between `[unordered]` and `[/unordered]` match in any order.

enum Pattern<'a> {
    Line(&'a str),
    AnyLines,
    Unordered(Vec<&'a str>),
}

fn patterns(text: &str) -> Vec<Pattern<'_>> {
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in text.lines() {
        match (line, &mut block) {
            ("[unordered]", None) => block = Some(Vec::new()),
            ("[/unordered]", Some(_)) => out.push(Pattern::Unordered(block.take().unwrap())),
            (line, Some(block)) => block.push(line),
            ("...", None) => out.push(Pattern::AnyLines),
            (line, None) => out.push(Pattern::Line(line)),
        }
    }
    out
}

fn matches(patterns: &[Pattern], lines: &[&str]) -> bool {
    match patterns.split_first() {
        None => lines.is_empty(),
        Some((Pattern::AnyLines, rest)) => (0..=lines.len()).any(|k| matches(rest, &lines[k..])),
        Some((Pattern::Line(p), rest)) => {
            !lines.is_empty() && line_matches(p, lines[0]) && matches(rest, &lines[1..])
        }
        Some((Pattern::Unordered(ps), rest)) => {
            lines.len() >= ps.len()
                && assign(ps, &lines[..ps.len()], &mut vec![false; ps.len()])
                && matches(rest, &lines[ps.len()..])
        }
    }
}

/// Whether each line can take a pattern of its own.
fn assign(patterns: &[&str], lines: &[&str], used: &mut Vec<bool>) -> bool {
    let Some((line, rest)) = lines.split_first() else {
        return true;
    };
    for i in 0..patterns.len() {
        if !used[i] && line_matches(patterns[i], line) {
            used[i] = true;
            if assign(patterns, rest, used) {
                return true;
            }
            used[i] = false;
        }
    }
    false
}

fn line_matches(pattern: &str, line: &str) -> bool {
    let pieces: Vec<&str> = pattern.split("[..]").collect();
    if pieces.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}
