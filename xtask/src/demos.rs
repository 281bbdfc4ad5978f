//! Finding, building and running the demo crates.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The workspace root: the xtask lives one folder below it.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Every `demo-*` folder with a Cargo.toml, by name: a new demo joins by existing.
pub fn discover() -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root())? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("demo-") && root().join(&name).join("Cargo.toml").is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Builds the demos' binaries in one cargo call and returns where each one is.
pub fn build(names: &[String], release: bool) -> io::Result<Vec<PathBuf>> {
    let mut command = cargo();
    command
        .current_dir(root())
        .args(["build", "--quiet", "--bins"]);
    if release {
        command.arg("--release");
    }
    for name in names {
        command.args(["--package", name]);
    }
    if !command.status()?.success() {
        return Err(io::Error::other("cargo build failed"));
    }
    let profile = if release { "release" } else { "debug" };
    Ok(names
        .iter()
        .map(|n| target_dir().join(profile).join(n))
        .collect())
}

pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    /// `None` when the demo ran over its time and was killed.
    pub status: Option<ExitStatus>,
    /// Whether processes of the demo were still there after it ended.
    pub left_behind: bool,
    pub elapsed: Duration,
}

impl Default for Outcome {
    /// An empty run that succeeded, to `append` runs to.
    fn default() -> Outcome {
        let status = Some(ExitStatus::default());
        Outcome {
            stdout: String::new(),
            stderr: String::new(),
            status,
            left_behind: false,
            elapsed: Duration::ZERO,
        }
    }
}

impl Outcome {
    /// Adds a run that followed this one: its output, its time, and its failure if it failed.
    pub fn append(&mut self, next: Outcome) {
        self.stdout += &next.stdout;
        self.stderr += &next.stderr;
        if !next.status.is_some_and(|s| s.success()) {
            self.status = next.status;
        }
        self.left_behind |= next.left_behind;
        self.elapsed += next.elapsed;
    }
}

/// Runs `command` in a process group of its own, for at most `limit`. Whatever of the group
/// is still there at the end (the demo itself when over time, or children it left) is killed.
pub fn run(mut command: Command, limit: Duration) -> io::Result<Outcome> {
    use std::os::unix::process::CommandExt;
    let start = Instant::now();
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let group = Pid::from_raw(child.id() as i32);
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());

    // Polled every 10 ms: a bounded wait for a process that is not ours to be woken by.
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = killpg(group, Signal::SIGKILL);
            child.wait()?;
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    // Children killed by their parent's death take a moment to be reaped: allow them 5 s.
    let grace = Instant::now() + Duration::from_secs(5);
    let mut left_behind = false;
    while status.is_some() && killpg(group, None).is_ok() {
        if Instant::now() > grace {
            left_behind = true;
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = killpg(group, Signal::SIGKILL);
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    Ok(Outcome {
        stdout,
        stderr,
        status,
        left_behind,
        elapsed,
    })
}

fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
