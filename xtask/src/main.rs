//! The workspace's tasks: `cargo xtask <task>`.
//!
//! Run with: `cargo xtask help`

mod bench;
mod chaos;
mod compare;
mod demos;
mod expect;
#[cfg(test)]
mod tidy;

use std::path::Path;
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
                       crate, demo-pool, or its short name, pool); compare --all: every section
  bench [--quick]      measure each primitive, ours against Python and the OS limit, in one
                       run; print the table, write target/bench/results.json and chart.svg
  chaos [--quick]      kill processes with SIGKILL at random moments while they use the queue,
                       the lock and the pool, over many runs; print what was lost, duplicated,
                       corrupted or hung; exit 1 if anything was (--quick: about 30 s)

--bless rewrites the expected-output.txt of each demo whose output does not match, from this
run's output with pids replaced by [..]; edit what else varies (times, order) by hand.

Environment: DEMO_TIME_SCALE is passed to the demos (it multiplies their sleeps).
";

/// How long one demo may run before it is killed and counts as failed.
const LIMIT: Duration = Duration::from_secs(120);

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
    let args: Vec<String> = std::env::args().skip(1).collect();
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
            true,
        )?)),
        ["compare", section] if !section.starts_with('-') => {
            Ok(ok(compare::compare(&[demo_name(section)?], &[], true)?))
        }
        ["bench"] => Ok(ok(bench::bench(false)?)),
        ["bench", "--quick"] => Ok(ok(bench::bench(true)?)),
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
    let (mut passed, mut failed) = (0, 0);
    for (name, bin) in names.iter().zip(bins) {
        let mut command = Command::new(&bin);
        command.env("RUST_BACKTRACE", "0").envs(env.iter().copied());
        let outcome = demos::run(command, LIMIT).map_err(|e| format!("{name}: {e}"))?;
        let expected_path = demos::root().join(name).join("expected-output.txt");
        match check(name, &expected_path, &outcome, bless) {
            Ok(()) => {
                println!("{name} ... ok ({:.1} s)", outcome.elapsed.as_secs_f64());
                passed += 1;
            }
            Err(why) => {
                println!("{name} ... FAILED: {why}");
                if !outcome.stderr.is_empty() {
                    println!("--- stderr\n{}", outcome.stderr.trim_end());
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
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// Whether one demo's run passed: it ended in time, exited 0, left no process behind, and
/// printed what its expected-output.txt says. With `bless`, a mismatch rewrites the file.
fn check(
    name: &str,
    expected_path: &Path,
    outcome: &demos::Outcome,
    bless: bool,
) -> Result<(), String> {
    let Some(status) = outcome.status else {
        return Err(format!(
            "killed after {} s, over its time limit",
            LIMIT.as_secs()
        ));
    };
    if outcome.left_behind {
        return Err("processes were left running after the demo ended".into());
    }
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    let expected = std::fs::read_to_string(expected_path).unwrap_or_default();
    if expect::matches(&expected, &outcome.stdout)
        .map_err(|e| format!("{}: {e}", expected_path.display()))?
    {
        return Ok(());
    }
    if bless {
        std::fs::write(expected_path, blessed(&outcome.stdout)).map_err(|e| e.to_string())?;
        println!("{name}: rewrote {}", expected_path.display());
        return Ok(());
    }
    Err(format!(
        "stdout does not match {}\n--- diff (- expected, + printed)\n{}",
        expected_path.display(),
        expect::diff(&expected, &outcome.stdout).trim_end()
    ))
}

/// A run's output as an expected-output file: the numbers of `[pid N` become `[..]`.
fn blessed(stdout: &str) -> String {
    let mut out = String::new();
    for line in stdout.lines() {
        let mut rest = line;
        while let Some(i) = rest.find("[pid ") {
            out += &rest[..i + 5];
            rest = rest[i + 5..].trim_start_matches(|c: char| c.is_ascii_digit());
            out += "[..]";
        }
        out += rest;
        out += "\n";
    }
    out
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
        assert!(compare::compare(&names, &[("DEMO_TIME_SCALE", "0.05")], false).unwrap());
    }

    #[test]
    fn bless_replaces_pids() {
        assert_eq!(
            blessed("[pid 42] a\n[pid 7 thread-1] b [pid 9]\n"),
            "[pid [..]] a\n[pid [..] thread-1] b [pid [..]]\n"
        );
    }

    #[test]
    fn a_changed_line_fails_with_a_diff() {
        let dir = std::env::temp_dir().join(format!("xtask-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("expected-output.txt");
        std::fs::write(&path, "[pid [..]] hello john\n").unwrap();
        let mut echo = Command::new("echo");
        echo.arg("[pid 1] hello jane");
        let outcome = demos::run(echo, LIMIT).unwrap();
        let err = check("echo", &path, &outcome, false).unwrap_err();
        assert!(
            err.contains("- [pid [..]] hello john") && err.contains("+ [pid 1] hello jane"),
            "{err}"
        );
        check("echo", &path, &outcome, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[pid [..]] hello jane\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
    }
}
