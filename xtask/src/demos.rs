//! Finding, building and running the demo crates.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::prctl;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
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

/// Where cargo builds, as cargo itself says: `CARGO_TARGET_DIR`, `CARGO_BUILD_TARGET_DIR` and
/// `build.target-dir` all move it.
pub fn target_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let metadata = cargo()
            .current_dir(root())
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .stderr(Stdio::null())
            .output();
        metadata
            .ok()
            .and_then(|m| serde_json::from_slice::<serde_json::Value>(&m.stdout).ok())
            .and_then(|m| Some(PathBuf::from(m["target_directory"].as_str()?)))
            .unwrap_or_else(|| root().join("target"))
    })
    .clone()
}

/// Every `demo-*` folder of the workspace with a Cargo.toml, by name: a new demo joins by
/// existing.
pub fn discover() -> io::Result<Vec<String>> {
    discover_in(&root())
}

pub fn discover_in(root: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("demo-") && root.join(&name).join("Cargo.toml").is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A program cargo built: a binary or an example of the package in `dir`.
pub struct Artifact {
    pub dir: PathBuf,
    pub kind: String,
    pub name: String,
    pub executable: PathBuf,
}

/// Runs `cargo build` with `args` in `root`. Cargo's progress and errors go to `progress` (the
/// terminal, as for a `cargo build` typed there); what it built is read from its JSON
/// messages, so that a configured target directory is where the programs are looked for.
/// Returns the programs built, and whether cargo succeeded.
pub fn cargo_build(
    root: &Path,
    args: &[&str],
    progress: Stdio,
) -> io::Result<(Vec<Artifact>, bool)> {
    let mut cargo = cargo()
        .current_dir(root)
        .arg("build")
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(progress)
        .spawn()?;
    let mut built = Vec::new();
    for line in BufReader::new(cargo.stdout.take().unwrap()).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line?) else {
            continue;
        };
        let target = &message["target"];
        let fields = (
            message["reason"].as_str(),
            message["manifest_path"].as_str(),
            target["kind"][0].as_str(),
            target["name"].as_str(),
            message["executable"].as_str(),
        );
        if let (Some("compiler-artifact"), Some(manifest), Some(kind), Some(name), Some(exe)) =
            fields
        {
            built.push(Artifact {
                dir: Path::new(manifest).parent().unwrap_or(root).to_path_buf(),
                kind: kind.into(),
                name: name.into(),
                executable: exe.into(),
            });
        }
    }
    Ok((built, cargo.wait()?.success()))
}

/// Builds the binaries of the demos `names` of the workspace, in one cargo call that goes on
/// past a crate that fails. For each demo: its binary, or why there is none.
pub fn build(names: &[String], release: bool) -> io::Result<Vec<Result<PathBuf, String>>> {
    build_in(&root(), names, release, Stdio::inherit())
}

pub fn build_in(
    root: &Path,
    names: &[String],
    release: bool,
    progress: Stdio,
) -> io::Result<Vec<Result<PathBuf, String>>> {
    let mut args = vec!["--bins", "--keep-going"];
    if release {
        args.push("--release");
    }
    for name in names {
        args.extend(["--package", name]);
    }
    let (built, _) = cargo_build(root, &args, progress)?;
    let root = root.canonicalize()?;
    let binaries = binaries(&root);
    Ok(names
        .iter()
        .map(|name| {
            let dir = root.join(name);
            let bin = built
                .iter()
                .find(|a| a.kind == "bin" && a.name == *name && a.dir == dir);
            match bin {
                Some(bin) => Ok(bin.executable.clone()),
                None if binaries
                    .as_ref()
                    .is_some_and(|b| !b.contains(&dir.join(name))) =>
                {
                    Err(format!("{name} has no binary named {name}"))
                }
                None => Err(format!("{name} did not build (cargo's errors are above)")),
            }
        })
        .collect())
}

/// The binaries the workspace at `root` declares, each as its package's folder joined with
/// its name; `None` if cargo cannot read the workspace.
fn binaries(root: &Path) -> Option<Vec<PathBuf>> {
    let metadata = cargo()
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).ok()?;
    let mut binaries = Vec::new();
    for package in metadata["packages"].as_array()? {
        let dir = Path::new(package["manifest_path"].as_str()?).parent()?;
        for target in package["targets"].as_array()? {
            if target["kind"].as_array()?.iter().any(|k| k == "bin") {
                binaries.push(dir.join(target["name"].as_str()?));
            }
        }
    }
    Some(binaries)
}

/// At most this much of a demo's stdout, and as much of its stderr, is kept: a demo that
/// prints more is stopped and fails.
pub const OUTPUT_CAP: usize = 1 << 20;

/// Processes that are still there this long after the demo ended fail it. Children killed
/// by their parent's death take a moment to be reaped.
const GRACE: Duration = Duration::from_secs(5);

/// Every process a run starts carries this variable in its environment, with a value of its
/// own: a process that left the demo's process group is still found by it.
const MARK: &str = "XTASK_RUN";

pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    /// `None` when the demo ran over its time and was killed.
    pub status: Option<ExitStatus>,
    /// Whether processes of the demo were still there after it ended.
    pub left_behind: bool,
    /// Whether the demo printed more than `OUTPUT_CAP` and was killed for it.
    pub flooded: bool,
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
            flooded: false,
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
        self.flooded |= next.flooded;
        self.elapsed += next.elapsed;
    }
}

/// Runs `command` in a process group of its own, for at most `limit`, keeping at most
/// `OUTPUT_CAP` of each output. Whatever the demo leaves (its group, and every process that
/// carries its mark, wherever it went) is killed and reaped before this returns: this process
/// is a child subreaper, so that a descendant whose parent dies comes to it, not to init.
pub fn run(mut command: Command, limit: Duration) -> io::Result<Outcome> {
    use std::os::unix::process::CommandExt;
    prctl::set_child_subreaper(true)?;
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let mark = format!(
        "{}.{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    );
    let start = Instant::now();
    let mut child = command
        .env(MARK, &mark)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let group = Pid::from_raw(child.id() as i32);
    let flooded = Arc::new(AtomicBool::new(false));
    let stdout = Capped::read(child.stdout.take().unwrap(), &flooded);
    let stderr = Capped::read(child.stderr.take().unwrap(), &flooded);

    // Polled every 10 ms: a bounded wait for a process that is not ours to be woken by.
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        let over = start.elapsed() > limit;
        if over || flooded.load(Ordering::Relaxed) {
            let _ = killpg(group, Signal::SIGKILL);
            let status = child.wait()?;
            break (!over).then_some(status);
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    // A demo that was killed fails for that; what it left goes at once.
    let ended = status.is_some() && !flooded.load(Ordering::Relaxed);
    let grace = if ended { GRACE } else { Duration::ZERO };
    let mut left_behind = end_the_rest(group, &mark, grace) && ended;
    // Whatever still holds the pipes open now escaped the sweep: do not wait for it for ever.
    let (stdout, done) = stdout.finish(Duration::from_secs(5));
    let (stderr, stderr_done) = stderr.finish(Duration::from_secs(1));
    left_behind |= !(done && stderr_done);
    Ok(Outcome {
        stdout,
        stderr,
        status,
        left_behind,
        flooded: flooded.load(Ordering::Relaxed),
        elapsed,
    })
}

/// One output of a demo, read on a thread of its own: at most `OUTPUT_CAP` is kept, the rest
/// is read and dropped (so that the demo never blocks on a full pipe) and sets `flooded`.
struct Capped {
    kept: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Capped {
    fn read(mut pipe: impl Read + Send + 'static, flooded: &Arc<AtomicBool>) -> Capped {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done) = mpsc::channel();
        let (into, flooded) = (Arc::clone(&kept), Arc::clone(flooded));
        thread::spawn(move || {
            let mut buf = vec![0; 64 << 10];
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let mut kept = into.lock().unwrap();
                let room = OUTPUT_CAP - kept.len();
                kept.extend_from_slice(&buf[..n.min(room)]);
                if n > room {
                    flooded.store(true, Ordering::Relaxed);
                }
            }
            let _ = done_tx.send(());
        });
        Capped { kept, done }
    }

    /// What was read, once the pipe has ended or `wait` has passed; and whether it ended.
    fn finish(self, wait: Duration) -> (String, bool) {
        let ended = self.done.recv_timeout(wait).is_ok();
        let kept = self.kept.lock().unwrap();
        (String::from_utf8_lossy(&kept).into_owned(), ended)
    }
}

/// Ends what a run left behind: the processes of its `group` and those that carry its
/// `mark`. They have `grace` to end by themselves, then get SIGKILL. Each that is this
/// process's child (its own, or an orphan that came to this subreaper) is reaped. True if any
/// was still running after `grace`.
fn end_the_rest(group: Pid, mark: &str, grace: Duration) -> bool {
    let started = Instant::now();
    let mut left_behind = false;
    let mut known = HashSet::new();
    // Past `grace`, SIGKILL ends everything but a process stuck in the kernel: 10 s more.
    while started.elapsed() < grace + Duration::from_secs(10) {
        let mut running = false;
        for process in processes() {
            let ours = process.group == group.as_raw()
                || known.contains(&process.pid)
                || process.has_mark(mark);
            if !ours {
                continue;
            }
            known.insert(process.pid);
            let pid = Pid::from_raw(process.pid);
            if process.zombie && process.parent == std::process::id() as i32 {
                let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
                continue;
            }
            // A zombie of another parent comes to this subreaper when that parent dies.
            running = true;
            if process.zombie {
                continue;
            }
            if started.elapsed() >= grace {
                left_behind = true;
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        if !running {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    left_behind
}

/// A process as /proc shows it.
struct Process {
    pid: i32,
    parent: i32,
    group: i32,
    zombie: bool,
}

impl Process {
    /// Whether its environment holds `MARK=mark`. A zombie's environment cannot be read.
    fn has_mark(&self, mark: &str) -> bool {
        let wanted = format!("{MARK}={mark}");
        std::fs::read(format!("/proc/{}/environ", self.pid))
            .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == wanted.as_bytes()))
    }
}

fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok());
    pids.filter_map(|pid| {
        // "pid (comm) state ppid pgrp …": the name may hold spaces and parentheses.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
        Some(Process {
            pid,
            parent: fields.get(1)?.parse().ok()?,
            group: fields.get(2)?.parse().ok()?,
            zombie: fields.first() == Some(&"Z"),
        })
    })
    .collect()
}
