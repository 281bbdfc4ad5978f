//! The workspace's tasks: `cargo xtask <task>`.
//!
//! Run with: `cargo xtask help`

mod bench;
mod chaos;
mod compare;
mod copy_out;
mod demos;
mod expect;
mod memory;
#[cfg(test)]
mod tidy;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

const USAGE: &str = "\
Usage: cargo xtask <task>

Tasks:
  run-all [--bless]    build every demo-* crate, run each binary with a time limit and check
                       its stdout against the crate's expected-output.txt
  run NAME [--bless]   the same for one demo (NAME: demo-pool or pool)
  list                 the demos run-all finds
  compare SECTION      run the section's Python reference and its Rust demo, show their output
                       side by side, and check both against expected-output.txt (SECTION: a
                       crate, demo-pool, or its short name, pool); compare --all: every section;
                       compare pool --start-method spawn: both started with that flag
  bench [--quick]      measure each primitive, ours against Python and the OS limit, in one
                       run; print the table, write target/bench/results.json and chart.svg
  chaos [--quick]      kill processes with SIGKILL at random moments while they use the queue,
                       the lock and the pool, over many runs; print what was lost, duplicated,
                       corrupted or hung; exit 1 if anything was (--quick: about 30 s)
  copy-out [NAME]      copy each demo crate (or one) out alone, as its README says, without
                       the lock file, and run cargo test in the copy, with the newest
                       compatible versions of its dependencies (needs the registry)

--bless rewrites the expected-output.txt of each demo whose output does not match, from three
runs: lines that still match keep their patterns, the others take the output's lines with pids
as [..]; where the runs differ beyond that, it names the lines and leaves the file alone (make
them patterns by hand: [..] within a line, [unordered] for lines in any order).

Environment: DEMO_TIME_SCALE is passed to the demos (it multiplies their sleeps).
";

/// How long one demo may run before it is killed and counts as failed.
const LIMIT: Duration = Duration::from_secs(120);

/// How many runs `--bless` compares before it rewrites a file.
const BLESS_RUNS: usize = 3;

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::from(2)
        }
    }
}

fn try_main() -> Result<ExitCode, String> {
    let args = parse_args(std::env::args_os().skip(1))?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ok = |passed: bool| {
        if passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    };
    match args.as_slice() {
        ["run-all", rest @ ..] => {
            let bless = bless_flag(rest)?;
            Ok(ok(run_all(
                &demos::discover().map_err(|e| e.to_string())?,
                bless,
                &[],
            )?))
        }
        ["run", name, rest @ ..] => {
            let bless = bless_flag(rest)?;
            Ok(ok(run_all(&[demo_name(name)?], bless, &[])?))
        }
        ["list"] => {
            for name in demos::discover().map_err(|e| e.to_string())? {
                println!("{name:<18} cargo run -p {name}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ["compare", "--all"] => Ok(ok(compare::compare(
            &demos::discover().map_err(|e| e.to_string())?,
            &[],
            &[],
            true,
        )?)),
        ["compare", section] if !section.starts_with('-') => Ok(ok(compare::compare(
            &[demo_name(section)?],
            &[],
            &[],
            true,
        )?)),
        ["compare", section, "--start-method", method] if !section.starts_with('-') => {
            // Only the sections whose demo and Python take the flag (the pool): another demo
            // refuses it with exit code 2, and the comparison fails saying so.
            if !["fork", "spawn", "forkserver"].contains(method) {
                return Err(format!(
                    "unknown start method {method:?} (fork, spawn or forkserver)"
                ));
            }
            let args = ["--start-method", method];
            Ok(ok(compare::compare(
                &[demo_name(section)?],
                &args,
                &[],
                true,
            )?))
        }
        ["bench"] => Ok(ok(bench::bench(false)?)),
        ["bench", "--quick"] => Ok(ok(bench::bench(true)?)),
        ["copy-out"] => Ok(ok(copy_out::copy_out(
            &demos::discover().map_err(|e| e.to_string())?,
        )?)),
        ["copy-out", name] if !name.starts_with('-') => {
            Ok(ok(copy_out::copy_out(&[demo_name(name)?])?))
        }
        ["chaos"] => Ok(ok(chaos::chaos(false)?)),
        ["chaos", "--quick"] => Ok(ok(chaos::chaos(true)?)),
        ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        [] => Err(format!("no task given\n\n{USAGE}")),
        [task, ..] => Err(format!(
            "unknown task or arguments: {task} (try `cargo xtask help`)"
        )),
    }
}

/// The arguments as text: one that is not UTF-8 is an error, as any bad argument is.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Vec<String>, String> {
    args.into_iter()
        .map(OsString::into_string)
        .collect::<Result<_, _>>()
        .map_err(|arg| format!("the argument {arg:?} is not UTF-8 (try `cargo xtask help`)"))
}

fn bless_flag(rest: &[&str]) -> Result<bool, String> {
    match rest {
        [] => Ok(false),
        ["--bless"] => Ok(true),
        [other, ..] => Err(format!("unknown flag {other} (try `cargo xtask help`)")),
    }
}

/// `pool` or `demo-pool`, checked against the demos that exist.
fn demo_name(name: &str) -> Result<String, String> {
    let full = if name.starts_with("demo-") {
        name.to_string()
    } else {
        format!("demo-{name}")
    };
    let all = demos::discover().map_err(|e| e.to_string())?;
    if all.contains(&full) {
        Ok(full)
    } else {
        Err(format!(
            "no demo named {name}; the demos are: {}",
            all.join(", ")
        ))
    }
}

/// Builds and runs each demo, checks its output, keeps going after a failure, and prints
/// `N passed, N failed`. `env` is added to each demo's environment. True when all passed.
fn run_all(names: &[String], bless: bool, env: &[(&str, &str)]) -> Result<bool, String> {
    let bins = demos::build(names, false).map_err(|e| e.to_string())?;
    let (_, failed) = run_built(&demos::root(), names, bins, bless, env)?;
    Ok(failed == 0)
}

/// `run_all` once the demos of `root` are built: `bins` holds each one's binary, or why it
/// has none. Returns how many passed and how many failed.
fn run_built(
    root: &Path,
    names: &[String],
    bins: Vec<Result<PathBuf, String>>,
    bless: bool,
    env: &[(&str, &str)],
) -> Result<(usize, usize), String> {
    // Every demo runs at once, each in its own process group, under its own limit: they
    // mostly sleep, as the note's examples do, so together they take about as long as the
    // longest. Their verdicts are printed in order, each as soon as those before it are.
    let counts = std::thread::scope(|scope| {
        let runs: Vec<_> = names
            .iter()
            .zip(&bins)
            .map(|(name, bin)| {
                scope.spawn(move || {
                    let expected_path = root.join(name).join("expected-output.txt");
                    match bin {
                        Ok(bin) => {
                            let demo = || {
                                let mut command = Command::new(bin);
                                command.env("RUST_BACKTRACE", "0").envs(env.iter().copied());
                                command
                            };
                            run_demo(name, demo, &expected_path, bless)
                        }
                        Err(why) => Ok(Err((why.clone(), None))),
                    }
                })
            })
            .collect();
        let (mut passed, mut failed) = (0, 0);
        for (name, run) in names.iter().zip(runs) {
            let verdict = run.join().expect("a demo's run does not panic")?;
            match verdict {
                Ok(elapsed) => {
                    println!("{name} ... ok ({:.1} s)", elapsed.as_secs_f64());
                    passed += 1;
                }
                Err((why, stderr)) => {
                    println!("{name} ... FAILED: {why}");
                    if let Some(stderr) = stderr.filter(|s| !s.is_empty()) {
                        println!("--- stderr\n{}", stderr.trim_end());
                    }
                    let scale = env.iter().find(|(k, _)| *k == "DEMO_TIME_SCALE");
                    let scale = scale
                        .map(|(_, v)| format!("DEMO_TIME_SCALE={v} "))
                        .unwrap_or_default();
                    println!("rerun with: {scale}cargo xtask run {name}\n");
                    failed += 1;
                }
            }
        }
        Ok::<_, String>((passed, failed))
    });
    let (passed, failed) = counts?;
    println!("{passed} passed, {failed} failed");
    Ok((passed, failed))
}

/// One demo's verdict: how long it took, or why it failed and its stderr. With `bless`, an
/// output that does not match is run again, and the file rewritten if the runs agree.
type Verdict = Result<Duration, (String, Option<String>)>;

fn run_demo(
    name: &str,
    demo: impl Fn() -> Command,
    expected_path: &Path,
    bless: bool,
) -> Result<Verdict, String> {
    let run = || demos::run(demo(), LIMIT).map_err(|e| format!("{name}: {e}"));
    let outcome = run()?;
    let failed = |why: String, outcome: &demos::Outcome| Err((why, Some(outcome.stderr.clone())));
    if let Err(why) = ended_well(&outcome) {
        return Ok(failed(why, &outcome));
    }
    let Err(why) = matches_file(expected_path, &outcome.stdout) else {
        return Ok(Ok(outcome.elapsed));
    };
    if !bless {
        return Ok(failed(why, &outcome));
    }
    let mut runs = vec![outcome.stdout.clone()];
    for _ in 1..BLESS_RUNS {
        let again = run()?;
        if let Err(why) = ended_well(&again) {
            return Ok(failed(format!("a run to bless: {why}"), &again));
        }
        runs.push(again.stdout);
    }
    let expected = std::fs::read_to_string(expected_path).unwrap_or_default();
    let runs: Vec<&str> = runs.iter().map(String::as_str).collect();
    match expect::bless(&expected, &runs) {
        Ok(text) => {
            std::fs::write(expected_path, text).map_err(|e| e.to_string())?;
            println!(
                "{name}: rewrote {} from {BLESS_RUNS} runs",
                expected_path.display()
            );
            Ok(Ok(outcome.elapsed))
        }
        Err(why) => Ok(failed(
            format!(
                "not blessed: {why}\n{} is left as it was",
                expected_path.display()
            ),
            &outcome,
        )),
    }
}

/// Whether one demo's run passed: it ended in time, exited 0, left no process behind, and
/// printed what its expected-output.txt says.
fn check(expected_path: &Path, outcome: &demos::Outcome) -> Result<(), String> {
    ended_well(outcome)?;
    matches_file(expected_path, &outcome.stdout)
}

/// Whether a run ended as a demo should: by itself, in time, with exit code 0, within its
/// output cap, leaving no process behind.
fn ended_well(outcome: &demos::Outcome) -> Result<(), String> {
    if outcome.flooded {
        return Err(format!(
            "printed more than {} MiB, and was killed",
            demos::OUTPUT_CAP >> 20
        ));
    }
    let Some(status) = outcome.status else {
        return Err(format!(
            "killed after {} s, over its time limit",
            LIMIT.as_secs()
        ));
    };
    if outcome.left_behind {
        return Err("processes were left running after the demo ended (now killed)".into());
    }
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    Ok(())
}

/// Whether `stdout` matches the expected-output file, with a diff when not.
fn matches_file(expected_path: &Path, stdout: &str) -> Result<(), String> {
    let expected = std::fs::read_to_string(expected_path).unwrap_or_default();
    if expect::matches(&expected, stdout)
        .map_err(|e| format!("{}: {e}", expected_path.display()))?
    {
        return Ok(());
    }
    Err(format!(
        "stdout does not match {}\n--- diff (- expected, + printed)\n{}",
        expected_path.display(),
        expect::diff(&expected, stdout).trim_end()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_passes_run_all() {
        let names = demos::discover().unwrap();
        assert!(!names.is_empty());
        assert!(run_all(&names, false, &[("DEMO_TIME_SCALE", "0.05")]).unwrap());
    }

    #[test]
    fn python_and_rust_agree_for_every_section() {
        if !compare::python_available() {
            println!("skipped: python3 is not on this machine");
            return;
        }
        let names = demos::discover().unwrap();
        let env = [("DEMO_TIME_SCALE", "0.05")];
        assert!(compare::compare(&names, &[], &env, false).unwrap());
        // The pool under each start method, Python's and ours.
        for method in ["fork", "spawn", "forkserver"] {
            let args = ["--start-method", method];
            let pool = ["demo-pool".to_string()];
            assert!(
                compare::compare(&pool, &args, &env, false).unwrap(),
                "{method}"
            );
        }
    }

    /// A folder of its own under the system's temporary folder, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(what: &str) -> TempDir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("xtask-{what}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sh(script: &str) -> impl Fn() -> Command {
        let script = script.to_string();
        move || {
            let mut sh = Command::new("sh");
            sh.args(["-c", &script]);
            sh
        }
    }

    #[test]
    fn an_argument_that_is_not_utf8_is_an_error() {
        use std::os::unix::ffi::OsStringExt;
        let err = parse_args([std::ffi::OsString::from_vec(b"\xff".to_vec())]).unwrap_err();
        assert!(err.contains("not UTF-8"), "{err}");
        assert_eq!(
            parse_args(["run".into(), "pool".into()]).unwrap(),
            ["run", "pool"]
        );
    }

    #[test]
    fn a_changed_line_fails_with_a_diff_and_bless_rewrites_it() {
        let dir = TempDir::new("check");
        let path = dir.0.join("expected-output.txt");
        std::fs::write(&path, "[pid [..]] hello john\n").unwrap();
        let echo = sh("echo \"[pid $$] hello jane\"");
        let (err, _) = run_demo("echo", &echo, &path, false).unwrap().unwrap_err();
        assert!(
            err.contains("- [pid [..]] hello john")
                && err.contains("+ [pid ")
                && err.contains("] hello jane"),
            "{err}"
        );
        run_demo("echo", &echo, &path, true).unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[pid [..]] hello jane\n"
        );
    }

    /// A demo whose output varies from run to run, where the file's patterns say it may: the
    /// order of two lines and a time. Bless keeps those patterns and adds the new line.
    #[test]
    fn bless_keeps_the_patterns_that_still_match() {
        let dir = TempDir::new("bless");
        let path = dir.0.join("expected-output.txt");
        let patterns = "[pid [..]] start\n[unordered]\n[pid [..]] worker a\n[pid [..]] worker b\n\
                        [/unordered]\n[pid [..]] took [..] s\n";
        std::fs::write(&path, patterns).unwrap();
        let counter = dir.0.join("runs");
        // Each run counts itself in a file: odd runs print b first, and the time changes.
        let script = format!(
            "n=$(($(cat {c} 2>/dev/null || echo 0) + 1)); echo $n > {c}; echo \"[pid $$] start\"; \
             if [ $((n % 2)) = 1 ]; then echo \"[pid $$] worker b\"; echo \"[pid $$] worker a\"; \
             else echo \"[pid $$] worker a\"; echo \"[pid $$] worker b\"; fi; \
             echo \"[pid $$] took $n.0 s\"; echo \"[pid $$] a new line\"",
            c = counter.display()
        );
        run_demo("varies", sh(&script), &path, true)
            .unwrap()
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{patterns}[pid [..]] a new line\n")
        );
        assert_eq!(std::fs::read_to_string(&counter).unwrap(), "3\n");
    }

    #[test]
    fn bless_refuses_runs_that_differ_where_no_pattern_says_they_may() {
        let dir = TempDir::new("bless-refused");
        let path = dir.0.join("expected-output.txt");
        std::fs::write(&path, "[pid [..]] start\n").unwrap();
        let counter = dir.0.join("runs");
        let script = format!(
            "n=$(($(cat {c} 2>/dev/null || echo 0) + 1)); echo $n > {c}; echo \"[pid $$] start\"; \
             echo \"[pid $$] took $n.0 s\"",
            c = counter.display()
        );
        let (err, _) = run_demo("varies", sh(&script), &path, true)
            .unwrap()
            .unwrap_err();
        assert!(
            err.contains("[pid [..]] took 1.0 s") && err.contains("took 2.0 s"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[pid [..]] start\n"
        );
    }

    #[test]
    fn a_demo_over_its_limit_is_killed_with_its_children() {
        let mut sh = Command::new("sh");
        sh.args(["-c", "sleep 300 & echo started; wait"]);
        let outcome = demos::run(sh, Duration::from_secs(2)).unwrap();
        assert!(outcome.status.is_none());
        assert_eq!(outcome.stdout, "started\n");
    }

    #[test]
    fn a_child_left_running_is_a_failure() {
        let mut sh = Command::new("sh");
        sh.args(["-c", "sleep 300 >/dev/null 2>&1 &"]);
        let outcome = demos::run(sh, LIMIT).unwrap();
        assert!(outcome.status.unwrap().success());
        assert!(outcome.left_behind);
        assert!(ended_well(&outcome).unwrap_err().contains("left running"));
    }

    /// A process in a session of its own is out of the demo's process group, and holds the
    /// demo's stdout open: it is found all the same, killed and reaped.
    #[test]
    fn a_process_that_leaves_the_group_is_found_and_killed() {
        let mut sh = Command::new("sh");
        sh.args(["-c", "setsid sleep 300 & echo $!"]);
        let outcome = demos::run(sh, LIMIT).unwrap();
        assert!(outcome.status.unwrap().success());
        assert!(outcome.left_behind);
        let pid = outcome.stdout.trim();
        assert!(pid.parse::<u32>().is_ok(), "{pid:?}");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "sleep {pid} is still there"
        );
    }

    /// The first demo waits (at most 20 s) for a file that only the second makes: both pass
    /// only if they run at once. Each is reported in its order, as it passed.
    #[test]
    fn the_demos_run_at_once_and_are_reported_in_order() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("at-once");
        let flag = dir.0.join("flag");
        let scripts = [
            (
                "demo-first",
                format!(
                    "i=0; while [ ! -e {f} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; \
                     [ -e {f} ] && echo \"[pid $$] saw it\"",
                    f = flag.display()
                ),
            ),
            (
                "demo-second",
                format!("touch {}; echo \"[pid $$] made it\"", flag.display()),
            ),
        ];
        let mut bins = Vec::new();
        for (name, script) in &scripts {
            let bin = dir.0.join(name).join(name);
            std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
            std::fs::write(&bin, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
            let expected = if *name == "demo-first" {
                "saw it"
            } else {
                "made it"
            };
            std::fs::write(
                dir.0.join(name).join("expected-output.txt"),
                format!("[pid [..]] {expected}\n"),
            )
            .unwrap();
            bins.push(Ok(bin));
        }
        let names = ["demo-first".to_string(), "demo-second".to_string()];
        assert_eq!(run_built(&dir.0, &names, bins, false, &[]).unwrap(), (2, 0));
    }

    #[test]
    fn a_demo_that_floods_its_output_is_stopped() {
        let mut sh = Command::new("sh");
        sh.args(["-c", "yes"]);
        let outcome = demos::run(sh, LIMIT).unwrap();
        assert!(outcome.flooded);
        assert_eq!(outcome.stdout.len(), demos::OUTPUT_CAP);
        let why = ended_well(&outcome).unwrap_err();
        assert!(why.contains("printed more than 1 MiB"), "{why}");
    }

    /// A workspace of three demos: one that builds, one that does not compile, one without a
    /// binary; its target directory set in its cargo configuration. The first passes, the
    /// other two fail, each for its own reason; cargo's progress of the cold build is shown.
    #[test]
    fn a_crate_that_does_not_build_fails_alone() {
        let dir = TempDir::new("workspace");
        let root = &dir.0;
        let files = [
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"demo-*\"]\nresolver = \"3\"\n",
            ),
            (
                ".cargo/config.toml",
                "[build]\ntarget-dir = \"elsewhere\"\n",
            ),
            (
                "demo-ok/src/main.rs",
                "fn main() { println!(\"[pid {}] hi\", std::process::id()) }",
            ),
            (
                "demo-broken/src/main.rs",
                "fn main() { let x: u32 = \"no\"; }",
            ),
            ("demo-nobin/src/lib.rs", "pub fn f() {}"),
        ];
        for (file, text) in files {
            std::fs::create_dir_all(root.join(file).parent().unwrap()).unwrap();
            std::fs::write(root.join(file), text).unwrap();
        }
        for name in ["demo-ok", "demo-broken", "demo-nobin"] {
            let manifest =
                format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n");
            std::fs::write(root.join(name).join("Cargo.toml"), manifest).unwrap();
            std::fs::write(
                root.join(name).join("expected-output.txt"),
                "[pid [..]] hi\n",
            )
            .unwrap();
        }
        let names = demos::discover_in(root).unwrap();
        assert_eq!(names, ["demo-broken", "demo-nobin", "demo-ok"]);
        let progress = root.join("progress.txt");
        let log = std::fs::File::create(&progress).unwrap();
        let bins = demos::build_in(root, &names, false, log.into()).unwrap();
        let progress = std::fs::read_to_string(progress).unwrap();
        assert!(progress.contains("Compiling demo-ok"), "{progress}");
        assert!(bins[0].as_ref().unwrap_err().contains("did not build"));
        assert!(bins[1].as_ref().unwrap_err().contains("has no binary"));
        let ok = bins[2].as_ref().unwrap();
        // Where cargo was told to build: CARGO_TARGET_DIR, if set, wins over the configuration.
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => root.canonicalize().unwrap().join("elsewhere"),
        };
        assert!(ok.starts_with(&target), "{}", ok.display());
        assert_eq!(run_built(root, &names, bins, false, &[]).unwrap(), (1, 2));
    }
}
