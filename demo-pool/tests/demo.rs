//! Runs the demo binary and checks from outside what its output and its processes must show:
//! at most four tasks at once on four workers that are not the parent, a worker killed in the
//! middle of a task and replaced, a task past its deadline and its worker replaced, a picture
//! drawn from what the pool knows, and no worker left behind when the parent is killed.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::process::Command;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Output, Running, assert_expected_output, line, parent_of, run};

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_demo-pool");

/// The values of `--start-method`, as Python names them.
const METHODS: [&str; 3] = ["fork", "spawn", "forkserver"];

fn demo(scale: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .env("DEMO_TIME_SCALE", scale)
        .env("RUST_BACKTRACE", "0");
    command
}

/// The pid a line starts with: `[pid 4242] …`.
fn pid_of(line: &str) -> i32 {
    support::pid_of(line) as i32
}

/// The demo's stdout at a small time scale, after checking that it succeeded.
fn stdout_of(command: &mut Command) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = run(command);
    assert!(status.success(), "{stdout}\n{stderr}");
    stdout
}

/// Which worker ran each of the note's ten tasks, from the lines up to `parent ends`.
fn note_tasks(stdout: &str) -> HashMap<String, i32> {
    let parent = pid_of(stdout.lines().next().unwrap());
    let (mut running, mut most) = (HashMap::new(), 0);
    let (mut started, mut ended) = (HashMap::new(), HashSet::new());
    for line in stdout.lines().take_while(|l| !l.ends_with("] parent ends")) {
        let words: Vec<&str> = line.split(' ').collect();
        let pid = pid_of(line);
        match words.get(2..5) {
            Some(["task", task, "starts"]) => {
                assert_eq!(
                    started.insert(task.to_string(), pid),
                    None,
                    "{task} started twice"
                );
                assert_eq!(
                    running.insert(pid, task.to_string()),
                    None,
                    "{pid} runs two tasks at once"
                );
                most = most.max(running.len());
            }
            Some(["task", task, "ends,"]) => {
                assert_eq!(
                    running.remove(&pid).as_deref(),
                    Some(*task),
                    "{task} ended elsewhere"
                );
                assert!(ended.insert(task.to_string()));
            }
            _ => assert_eq!(pid, parent, "{line}"),
        }
    }
    let workers: HashSet<i32> = started.values().copied().collect();
    assert_eq!((started.len(), ended.len()), (10, 10), "{stdout}");
    assert!(
        most <= 4 && workers.len() <= 4,
        "{most} tasks at once on {workers:?}"
    );
    assert!(!workers.contains(&parent));
    started
}

/// The note's run prints the same under each start method.
#[test]
fn the_pool_keeps_its_promises_under_each_start_method() {
    for method in METHODS {
        let stdout = stdout_of(demo("0.05").args(["--start-method", method]));
        note_tasks(&stdout);
        assert_expected_output(&stdout);
    }
}

#[test]
fn a_worker_killed_mid_task_fails_that_task_and_is_replaced_and_the_rest_complete() {
    for method in METHODS {
        killed_worker(method);
    }
}

fn killed_worker(method: &str) {
    let stdout = stdout_of(demo("0.05").args(["--start-method", method]));
    let parent = pid_of(stdout.lines().next().unwrap());
    let victim = pid_of(line(&stdout, "a task starts, tells the parent its pid"));
    assert_ne!(victim, parent);
    let tour: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("a task starts, tells the parent"))
        .skip(1)
        .take(4)
        .collect();
    let replacement = pid_of_replacement(tour[2]);
    assert!(replacement != victim && replacement != parent);
    assert_eq!(
        tour,
        [
            format!("[pid {parent}] kill -9 {victim}, the worker running that task"),
            format!(
                "[pid {parent}] get() of the killed task: the worker running the task \
                 (pid {victim}) died: killed by SIGKILL"
            ),
            format!("[pid {parent}] a new worker took its place: pid {replacement}"),
            format!("[pid {parent}] the other tasks completed: [0, 1, 4, 9, 16]"),
        ]
    );
}

#[test]
fn a_task_past_its_deadline_has_its_worker_replaced_and_the_rest_complete() {
    let stdout = stdout_of(&mut demo("0.05"));
    let parent = pid_of(stdout.lines().next().unwrap());
    let tour: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("a task that never ends, with apply_async_timeout"))
        .skip(1)
        .take(3)
        .collect();
    let words: Vec<&str> = tour[1].split(' ').collect();
    let (killed, new): (i32, i32) = (words[5].parse().unwrap(), words[8].parse().unwrap());
    assert!(killed != new && killed != parent && new != parent);
    assert_eq!(
        tour,
        [
            format!(
                "[pid {parent}] get() of the task past its deadline: the task ran past its \
                 deadline of 0.025 s: its worker (pid {killed}) was killed"
            ),
            format!("[pid {parent}] its worker: pid {killed} killed, pid {new} in its place"),
            format!("[pid {parent}] the other tasks completed: [0, 1, 4, 9, 16]"),
        ]
    );
}

/// The pid at the end of `… took its place: pid N`.
fn pid_of_replacement(line: &str) -> i32 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
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
fn the_timeline_draws_each_task_in_the_lane_of_the_worker_that_ran_it() {
    let path = std::env::temp_dir().join(format!("demo-pool-timeline-{}.svg", std::process::id()));
    let stdout = stdout_of(demo("0.05").arg("--timeline").arg(&path));
    assert!(
        stdout.contains(&format!("] wrote timeline to {}\n", path.display())),
        "{stdout}"
    );
    let svg = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
    let lanes = svg.matches("class=\"lane\"").count();
    assert!((1..=4).contains(&lanes), "{lanes} lanes for Pool(4)");
    let mut drawn = bars(&svg);
    drawn.sort();
    let mut printed: Vec<(String, String)> = (note_tasks(&stdout).into_iter())
        .map(|(task, pid)| (format!("pid {pid}"), format!("task {task}")))
        .collect();
    printed.sort();
    assert_eq!(drawn, printed, "{svg}");
}

#[test]
fn an_unwritable_timeline_is_one_line_and_exit_code_2() {
    let output = run(demo("0.05").args(["--timeline", "/no-such-dir/pool.svg"]));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty());
    assert_eq!(output.stderr.lines().count(), 1);
}

#[test]
fn help_and_bad_input() {
    let help = run(demo("1").arg("--help"));
    assert!(help.status.success());
    assert!(help.stdout.starts_with("Usage: demo-pool"));
    let bad: [(&str, &[&str]); 4] = [
        ("1", &["--frobnicate"]),
        ("0", &[]),
        ("1", &["--start-method", "vfork"]),
        ("1", &["--start-method"]),
    ];
    for (scale, args) in bad {
        let output = run(demo(scale).args(args));
        assert_eq!(output.status.code(), Some(2));
        assert_eq!(output.stderr.lines().count(), 1);
        assert!(output.stdout.is_empty());
    }
}

/// Starts the demo in its own process group under each start method, waits until four tasks
/// run, and kills it with `signal`; then every worker must end, by the parent-death signal if
/// not by `signal` (a forkserver worker with its server, which dies with the demo).
fn no_worker_outlives(signal: Signal, whole_group: bool) {
    for method in METHODS {
        no_worker_outlives_under(method, signal, whole_group);
    }
}

fn no_worker_outlives_under(method: &str, signal: Signal, whole_group: bool) {
    // The tasks sleep 100 to 400 s: a worker the signal does not end outlives the 10 s wait.
    let mut demo = Running::start(demo("100").args(["--start-method", method]));
    let parent = demo.pid() as i32;
    let mut workers = HashSet::new();
    while workers.len() < 4 {
        let line = demo.line().expect("four tasks did not start");
        if line.trim_end().ends_with("starts") && line.contains("task") {
            workers.insert(pid_of(&line));
        }
    }
    // A pidfd names the process itself, so a recycled pid cannot fool the check below.
    let pidfds: Vec<OwnedFd> = workers.iter().map(|&pid| pidfd_open(pid)).collect();
    for &pid in &workers {
        let ppid = parent_of(pid as u32) as i32;
        if method == "forkserver" {
            let server = ppid;
            assert_eq!(parent_of(server as u32) as i32, parent, "{pid}'s server");
        } else {
            assert_eq!(ppid, parent, "worker {pid} is not the demo's child");
        }
    }

    if whole_group {
        demo.signal_group(signal);
    } else {
        kill(Pid::from_raw(parent), signal).unwrap();
    }
    let status = demo.wait();
    assert!(!status.success());
    for (pid, pidfd) in workers.iter().zip(&pidfds) {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        let ended = poll(&mut fds, PollTimeout::from(10_000u16)).unwrap();
        assert_eq!(ended, 1, "worker {pid} ({method}) outlived its parent");
    }
}

#[test]
fn no_worker_outlives_a_parent_killed_with_sigkill() {
    no_worker_outlives(Signal::SIGKILL, false);
}

#[test]
fn no_worker_outlives_a_parent_killed_with_sigterm() {
    no_worker_outlives(Signal::SIGTERM, false);
}

#[test]
fn ctrl_c_ends_every_process() {
    // A terminal sends Ctrl-C's SIGINT to the whole foreground process group.
    no_worker_outlives(Signal::SIGINT, true);
}

fn pidfd_open(pid: i32) -> OwnedFd {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(
        fd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` was just opened and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}
