//! What the tests read of other processes in /proc, shared by the test targets of this crate.

#![allow(dead_code)] // Each test target uses its own part of this file.

/// The pids that descend from `pid`: the children of each of its threads (the forkserver's
/// parent is a thread of the program), their children, and so on.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for task in tasks {
        let path = task.unwrap().path().join("children");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for child in text.split_whitespace().map(|p| p.parse().unwrap()) {
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
