//! What the tests share: running a program with a deadline while its stdout and stderr are
//! drained on threads (so that a full pipe never blocks it), a guard that kills its process
//! group when dropped (so that nothing is left even when a test fails), the matcher of
//! `expected-output.txt`, and what the tests read of other processes in /proc.
//!
//! The expected-output format:
//!
//! - a line matches one output line literally, except that `[..]` matches any text within it;
//! - a line `...` matches any number of lines, none included;
//! - the lines between `[unordered]` and `[/unordered]` match as many output lines, in any
//!   order, each pattern once.
//!
//! This file is the same in every demo crate, so that each crate can be copied out alone with
//! its tests; a test in the xtask checks that the copies stay identical, and `cargo xtask
//! run-all` checks the demos with this same matcher.

#![allow(dead_code)] // Each test target uses its own part of this file.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// No program a test runs takes long; one still running after this is hung, and fails it.
pub const LIMIT: Duration = Duration::from_secs(120);

/// How a program ended, and everything it printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end, at most `LIMIT`, in a process group of its own with stdin
/// closed; whatever it leaves in its group is killed.
pub fn run(command: &mut Command) -> Output {
    Running::start(command).finish()
}

/// A program started in a process group of its own. Its stdout arrives line by line on a
/// thread, its stderr on another. Dropping it kills the whole group and reaps the program.
pub struct Running {
    child: Child,
    lines: Option<Receiver<String>>,
    stderr: Option<Receiver<String>>,
    status: Option<ExitStatus>,
}

impl Running {
    /// Starts `command` with stdin closed, stdout and stderr drained.
    pub fn start(command: &mut Command) -> Running {
        let mut running = Running::spawn(command);
        let stdout = running.child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            while matches!(stdout.read_line(&mut line), Ok(n) if n > 0) {
                if tx.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });
        running.lines = Some(lines);
        running
    }

    /// Starts `command` as `start` does, but hands its stdout to the caller, who must read it
    /// (or close it) for the program to go on once the pipe is full.
    pub fn start_with_stdout(command: &mut Command) -> (Running, ChildStdout) {
        let mut running = Running::spawn(command);
        let stdout = running.child.stdout.take().unwrap();
        (running, stdout)
    }

    fn spawn(command: &mut Command) -> Running {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, text) = mpsc::channel();
        thread::spawn(move || {
            let mut all = Vec::new();
            let _ = BufReader::new(stderr).read_to_end(&mut all);
            let _ = tx.send(String::from_utf8_lossy(&all).into_owned());
        });
        Running {
            child,
            lines: None,
            stderr: Some(text),
            status: None,
        }
    }

    /// The program's pid, which is also its process group's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of stdout, newline included; `None` once stdout has ended. Waits at
    /// most `LIMIT`.
    pub fn line(&mut self) -> Option<String> {
        let lines = self.lines.as_ref().expect("stdout is read by Running");
        match lines.recv_timeout(LIMIT) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!("no line from the program in {LIMIT:?}"),
        }
    }

    /// Waits for the program to end, at most `LIMIT`: one that never ends fails the test.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.status = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the program did not end within {LIMIT:?}"
            );
            // A poll interval for a process that is not ours to be woken by.
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the program's whole process group, as a terminal does for Ctrl-C.
    pub fn signal_group(&self, signal: Signal) {
        killpg(Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// Whether a process of the program's group is still there once the program has ended:
    /// its children die with it, but may take a moment to be reaped (10 s at most).
    pub fn left_behind(&self) -> bool {
        let group = Pid::from_raw(self.pid() as i32);
        let deadline = Instant::now() + Duration::from_secs(10);
        while killpg(group, None).is_ok() {
            if Instant::now() > deadline {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits for the end (at most `LIMIT`), kills what is left of the group, and returns the
    /// status and the output not yet taken by `line`.
    pub fn finish(mut self) -> Output {
        let status = self.wait();
        // Whatever the program left in its group holds no pipe open after this.
        let _ = killpg(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
        // A process that left the group may still hold a pipe: stop waiting for it at some point.
        let deadline = Instant::now() + Duration::from_secs(10);
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut stdout = String::new();
        if let Some(lines) = self.lines.take() {
            while let Ok(line) = lines.recv_timeout(left()) {
                stdout += &line;
            }
        }
        let stderr = self.stderr.take().unwrap().recv_timeout(left());
        Output {
            status,
            stdout,
            stderr: stderr.unwrap_or_default(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
        if self.status.is_none() {
            let _ = self.child.wait();
        }
    }
}

/// The pid a line starts with: `[pid 4242] …` or `[pid 4242 thread-1] …`.
pub fn pid_of(line: &str) -> u32 {
    let rest = line
        .strip_prefix("[pid ")
        .unwrap_or_else(|| panic!("a line that does not say who printed it: {line:?}"));
    let end = rest.find([' ', ']']).unwrap();
    rest[..end].parse().unwrap()
}

/// The only line of `text` that contains `part`.
pub fn line<'a>(text: &'a str, part: &str) -> &'a str {
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(part)).collect();
    assert_eq!(lines.len(), 1, "one line with {part:?} in:\n{text}");
    lines[0]
}

/// Checks `stdout` against this crate's `expected-output.txt`, with a diff when it does not
/// match.
pub fn assert_expected_output(stdout: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("expected-output.txt");
    let expected = std::fs::read_to_string(&path).unwrap();
    let matched = matches(&expected, stdout).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        matched,
        "stdout does not match {}\n--- diff (- expected, + printed)\n{}",
        path.display(),
        diff(&expected, stdout).trim_end()
    );
}

// ---- The expected-output matcher ----

/// One item of an expected-output file.
pub enum Item<'a> {
    /// A line pattern, which matches one line.
    Line(&'a str),
    /// `...`: any number of lines.
    AnyLines,
    /// An `[unordered]` block: as many lines, in any order.
    Unordered(Vec<&'a str>),
}

/// The items of an expected-output file; an error names a misplaced marker.
pub fn parse(expected: &str) -> Result<Vec<Item<'_>>, String> {
    let mut items = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for (n, line) in expected.lines().enumerate() {
        match (line, &mut block) {
            ("[unordered]", None) => block = Some(Vec::new()),
            ("[/unordered]", Some(_)) => items.push(Item::Unordered(block.take().unwrap())),
            ("[unordered]" | "...", Some(_)) | ("[/unordered]", None) => {
                return Err(format!("line {}: {line:?} is not allowed here", n + 1));
            }
            ("...", None) => items.push(Item::AnyLines),
            (_, Some(lines)) => lines.push(line),
            (_, None) => items.push(Item::Line(line)),
        }
    }
    if block.is_some() {
        return Err("an [unordered] block is not closed".into());
    }
    Ok(items)
}

/// Whether `actual` matches the pattern `pattern`, in which `[..]` stands for any text.
pub fn line_matches(pattern: &str, actual: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap();
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether the output `actual` matches the expected-output file's text `expected`.
pub fn matches(expected: &str, actual: &str) -> Result<bool, String> {
    let items = parse(expected)?;
    let lines: Vec<&str> = actual.lines().collect();
    Ok(match_items(&items, &lines))
}

fn match_items(items: &[Item], lines: &[&str]) -> bool {
    let Some((item, rest)) = items.split_first() else {
        return lines.is_empty();
    };
    match item {
        Item::Line(pattern) => {
            lines.first().is_some_and(|l| line_matches(pattern, l))
                && match_items(rest, &lines[1..])
        }
        Item::AnyLines => (0..=lines.len()).any(|skip| match_items(rest, &lines[skip..])),
        Item::Unordered(patterns) => {
            lines.len() >= patterns.len()
                && match_any_order(patterns, &lines[..patterns.len()])
                && match_items(rest, &lines[patterns.len()..])
        }
    }
}

/// Whether each pattern matches a line of its own (augmenting paths: a pattern that could
/// match several lines must not take the one another pattern needs).
pub fn match_any_order(patterns: &[&str], lines: &[&str]) -> bool {
    let mut owner: Vec<Option<usize>> = vec![None; lines.len()];
    fn place(
        p: usize,
        patterns: &[&str],
        lines: &[&str],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for l in 0..lines.len() {
            if seen[l] || !line_matches(patterns[p], lines[l]) {
                continue;
            }
            seen[l] = true;
            if owner[l].is_none_or(|q| place(q, patterns, lines, owner, seen)) {
                owner[l] = Some(p);
                return true;
            }
        }
        false
    }
    (0..patterns.len()).all(|p| {
        place(
            p,
            patterns,
            lines,
            &mut owner,
            &mut vec![false; lines.len()],
        )
    })
}

/// One step of the alignment of an expected-output file with an output.
enum Step<'a> {
    /// An output line that a pattern line matches.
    Agree(&'a str),
    /// `...` or a block marker: it matches no line of its own.
    Marker(&'a str),
    /// An expected line that is not there.
    Missing(&'a str),
    /// An output line that was not expected.
    Extra(&'a str),
}

fn is_marker(line: &str) -> bool {
    matches!(line, "..." | "[unordered]" | "[/unordered]")
}

/// The longest common subsequence of pattern lines and output lines, where a pattern line and
/// an output line agree if they match.
fn align<'a>(expected: &'a str, actual: &'a str) -> Vec<Step<'a>> {
    let want: Vec<&str> = expected.lines().collect();
    let got: Vec<&str> = actual.lines().collect();
    let agree = |w: &str, g: &str| !is_marker(w) && line_matches(w, g);
    let mut table = vec![vec![0usize; got.len() + 1]; want.len() + 1];
    for i in (0..want.len()).rev() {
        for j in (0..got.len()).rev() {
            table[i][j] = if is_marker(want[i]) {
                table[i + 1][j]
            } else if agree(want[i], got[j]) {
                table[i + 1][j + 1] + 1
            } else {
                table[i + 1][j].max(table[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut steps) = (0, 0, Vec::new());
    while i < want.len() || j < got.len() {
        if i < want.len() && is_marker(want[i]) {
            steps.push(Step::Marker(want[i]));
            i += 1;
        } else if i < want.len() && j < got.len() && agree(want[i], got[j]) {
            steps.push(Step::Agree(got[j]));
            (i, j) = (i + 1, j + 1);
        } else if j < got.len() && (i == want.len() || table[i][j + 1] >= table[i + 1][j]) {
            steps.push(Step::Extra(got[j]));
            j += 1;
        } else {
            steps.push(Step::Missing(want[i]));
            i += 1;
        }
    }
    steps
}

/// A line diff for a failed match: `-` for an expected line that is not there, `+` for an
/// output line that was not expected, and two spaces for lines that agree. Block markers and
/// `...` are shown as context.
pub fn diff(expected: &str, actual: &str) -> String {
    let mut out = String::new();
    for step in align(expected, actual) {
        out += &match step {
            Step::Agree(line) | Step::Marker(line) => format!("  {line}\n"),
            Step::Extra(line) => format!("+ {line}\n"),
            Step::Missing(line) => format!("- {line}\n"),
        };
    }
    out
}

// ---- Other processes, as /proc shows them ----

/// The pids that descend from `pid`: the children of each of its threads (a child's parent
/// may be any thread of the program), their children, and so on.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in text.split_whitespace().filter_map(|p| p.parse().ok()) {
            found.push(child);
            found.extend(descendants(child));
        }
    }
    found
}

/// The fields of /proc/PID/stat after the command name: state, ppid, ...
fn stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit(')').next()?;
    Some(after_name.split_whitespace().map(String::from).collect())
}

/// The parent of a running process.
pub fn parent_of(pid: u32) -> u32 {
    stat(pid).expect("a running process")[1].parse().unwrap()
}

/// Whether `pid` is gone or a zombie, that is, no longer running.
pub fn ended(pid: u32) -> bool {
    stat(pid).is_none_or(|fields| fields[0] == "Z")
}

/// Waits until each of `pids` has ended, at most `LIMIT` in all: one still running then
/// fails the test, named.
pub fn assert_all_end(pids: &[u32]) {
    let deadline = Instant::now() + LIMIT;
    for &pid in pids {
        while !ended(pid) {
            assert!(Instant::now() < deadline, "process {pid} is still running");
            thread::sleep(Duration::from_millis(5));
        }
    }
}
