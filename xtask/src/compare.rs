//! `cargo xtask compare SECTION`: the Python reference and the Rust demo of a section, side by
//! side, both checked against the crate's expected-output.txt.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::demos::{self, Outcome};
use crate::{LIMIT, check};

/// The Python references of a demo crate: its `python/*.py`, but the benchmarks.
pub fn references(name: &str) -> Vec<PathBuf> {
    let dir = demos::root().join(name).join("python");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "py") && !p.ends_with("bench.py"))
        .collect();
    files.sort();
    files
}

pub fn python_available() -> bool {
    Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the Python and the Rust of each demo, shows them, and checks both. True when all pass.
pub fn compare(names: &[String], env: &[(&str, &str)], show: bool) -> Result<bool, String> {
    if !python_available() {
        return Err("python3 is not on this machine; compare needs it (run-all does not)".into());
    }
    let bins = demos::build(names, false).map_err(|e| e.to_string())?;
    let mut all_ok = true;
    for (name, bin) in names.iter().zip(bins) {
        let expected = demos::root().join(name).join("expected-output.txt");
        let references = references(name);
        if references.is_empty() {
            return Err(format!("{name} has no Python reference in {name}/python/"));
        }
        let mut python = Outcome::default();
        for script in &references {
            let mut command = Command::new("python3");
            command.arg(script).envs(env.iter().copied());
            let part = demos::run(command, LIMIT).map_err(|e| e.to_string())?;
            python.append(part);
        }
        let mut rust = Command::new(&bin);
        rust.env("RUST_BACKTRACE", "0").envs(env.iter().copied());
        let rust = demos::run(rust, LIMIT).map_err(|e| e.to_string())?;
        let python_check = check(name, &expected, &python, false);
        let rust_check = check(name, &expected, &rust, false);
        let verdict = |r: &Result<(), String>| if r.is_ok() { "ok" } else { "FAILED" };
        let left = format!(
            "Python, {:.2} s: {}",
            python.elapsed.as_secs_f64(),
            verdict(&python_check)
        );
        let right = format!(
            "Rust, {:.2} s: {}",
            rust.elapsed.as_secs_f64(),
            verdict(&rust_check)
        );
        if show {
            println!("== {name}");
            side_by_side(&left, &python.stdout, &right, &rust.stdout);
        }
        for (who, result) in [("Python", &python_check), ("Rust", &rust_check)] {
            if let Err(why) = result {
                println!("{name} ({who}) ... FAILED: {why}\n");
                all_ok = false;
            }
        }
        println!(
            "{name} ... {}",
            if python_check.is_ok() && rust_check.is_ok() {
                "both ok"
            } else {
                "FAILED"
            }
        );
    }
    Ok(all_ok)
}

/// Two columns when the terminal is wide enough for them, one after the other when not.
fn side_by_side(left_title: &str, left: &str, right_title: &str, right: &str) {
    let widest = left
        .lines()
        .chain(right.lines())
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    let width = terminal_width();
    if width < 2 * 40 + 3 {
        println!("--- {left_title}\n{left}--- {right_title}\n{right}");
        return;
    }
    let column = ((width - 3) / 2).min(widest.max(left_title.len()));
    let cut = |s: &str| -> String {
        if s.chars().count() <= column {
            format!("{s:<column$}")
        } else {
            s.chars().take(column - 1).collect::<String>() + "…"
        }
    };
    println!("{} | {}", cut(left_title), right_title);
    println!("{}-+-{}", "-".repeat(column), "-".repeat(column));
    let (l, r): (Vec<&str>, Vec<&str>) = (left.lines().collect(), right.lines().collect());
    for i in 0..l.len().max(r.len()) {
        println!(
            "{} | {}",
            cut(l.get(i).unwrap_or(&"")),
            r.get(i).unwrap_or(&"")
        );
    }
    println!();
}

/// The terminal's width: `COLUMNS` if set, else what `stty size` says of the terminal on
/// stdin, else 80.
fn terminal_width() -> usize {
    if let Some(columns) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return columns;
    }
    let size = Command::new("stty")
        .arg("size")
        .stdin(Stdio::inherit())
        .stderr(Stdio::null())
        .output();
    let size = size
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    size.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(80)
}
