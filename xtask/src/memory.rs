//! Peak memory of a run: the resident set sizes of every process of the run, summed, sampled
//! every few milliseconds from `/proc` while it runs, and the largest sum kept.
//!
//! The run is started in a process group of its own, and every process of that group counts:
//! the program and every child it forks (they stay in the group unless they leave it, which
//! neither demo-pool nor Python's `multiprocessing` does). A page that a forked child shares
//! with its parent counts in both, as `ps` and `top` count it. Samples can miss a peak shorter
//! than their period; both runs measured here last seconds, and hold their workers throughout.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How often the processes are looked at.
const PERIOD: Duration = Duration::from_millis(2);

/// The largest sum of resident set sizes over the processes of `command`'s run, in bytes.
/// The run must end within `limit`; it is killed otherwise, and that is an error.
pub fn peak_rss(mut command: Command, limit: Duration) -> io::Result<u64> {
    let start = Instant::now();
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let group = child.id() as i32;
    let mut peak = 0;
    loop {
        peak = peak.max(group_rss(group));
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                return Err(io::Error::other(format!("{command:?} failed: {status}")));
            }
            break;
        }
        if start.elapsed() > limit {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
            let _ = child.wait();
            return Err(io::Error::other(format!("{command:?} ran over {limit:?}")));
        }
        thread::sleep(PERIOD);
    }
    // Whatever of the group outlived its leader goes now: it is not ours to leave running.
    let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    Ok(peak)
}

/// The resident set sizes of the processes of `group`, summed, in bytes.
fn group_rss(group: i32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            // "pid (comm) state ppid pgrp …": the name may hold spaces and parentheses.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
            (fields.get(2)?.parse::<i32>().ok()? == group).then_some(())?;
            // "VmRSS:     1234 kB"; a zombie has no such line, and no memory.
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib << 10)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_that_holds_memory_counts_beside_its_parent() {
        // The shell forks a child that holds 64 MiB for a moment; the parent holds little.
        let script = "python3 -c 'import time; b = bytearray(64 << 20); time.sleep(0.3)' & wait";
        if !crate::compare::python_available() {
            eprintln!("python3 is not on this machine: skipped");
            return;
        }
        let mut sh = Command::new("sh");
        sh.args(["-c", script]);
        let peak = peak_rss(sh, Duration::from_secs(30)).unwrap();
        assert!(peak >= 64 << 20, "{peak}");
        assert!(peak < 256 << 20, "{peak}");
    }

    #[test]
    fn a_run_that_fails_is_an_error() {
        let mut sh = Command::new("sh");
        sh.args(["-c", "exit 3"]);
        assert!(peak_rss(sh, Duration::from_secs(30)).is_err());
    }
}
