//! `cargo xtask compare SECTION`: the Python reference and the Rust demo of a section, side by
//! side, both checked against the crate's expected-output.txt.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

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

/// Runs the Python and the Rust of each demo, both with the arguments `args` (say,
/// `--start-method spawn`), shows them, and checks both. True when all pass.
pub fn compare(
    names: &[String],
    args: &[&str],
    env: &[(&str, &str)],
    show: bool,
) -> Result<bool, String> {
    if !python_available() {
        return Err("python3 is not on this machine; compare needs it (run-all does not)".into());
    }
    let bins = demos::build(names, false).map_err(|e| e.to_string())?;
    let mut all_ok = true;
    for (name, bin) in names.iter().zip(bins) {
        let bin = match bin {
            Ok(bin) => bin,
            Err(why) => {
                println!("{name} ... FAILED: {why}\n");
                all_ok = false;
                continue;
            }
        };
        let expected = demos::root().join(name).join("expected-output.txt");
        let references = references(name);
        if references.is_empty() {
            return Err(format!("{name} has no Python reference in {name}/python/"));
        }
        let mut python = Outcome::default();
        for script in &references {
            let mut command = Command::new("python3");
            command.arg(script).args(args).envs(env.iter().copied());
            let part = demos::run(command, LIMIT).map_err(|e| e.to_string())?;
            python.append(part);
        }
        let mut rust = Command::new(&bin);
        rust.args(args)
            .env("RUST_BACKTRACE", "0")
            .envs(env.iter().copied());
        let rust = demos::run(rust, LIMIT).map_err(|e| e.to_string())?;
        let python_check = check(&expected, &python);
        let rust_check = check(&expected, &rust);
        let verdict = |r: &Result<(), String>| if r.is_ok() { "ok" } else { "FAILED" };
        // Wall time, sleeps included: the demos sleep as the note does, so this is no race.
        let left = format!(
            "Python: {}, {:.2} s wall time (sleeps included)",
            verdict(&python_check),
            python.elapsed.as_secs_f64(),
        );
        let right = format!(
            "Rust: {}, {:.2} s wall time (sleeps included)",
            verdict(&rust_check),
            rust.elapsed.as_secs_f64(),
        );
        if show {
            println!("== {name} {}", args.join(" "));
            let width = terminal_width();
            print!(
                "{}",
                side_by_side(width, &left, &python.stdout, &right, &rust.stdout)
            );
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

/// Two columns when `width` has room for them, one after the other when not. Both columns
/// are cut to fit, measured in display columns: a CJK character takes two.
fn side_by_side(
    width: usize,
    left_title: &str,
    left: &str,
    right_title: &str,
    right: &str,
) -> String {
    if width < 2 * 40 + 3 {
        return format!("--- {left_title}\n{left}--- {right_title}\n{right}");
    }
    let widest = [left_title, right_title]
        .into_iter()
        .chain(left.lines())
        .chain(right.lines())
        .map(|l| printable(l).width())
        .max()
        .unwrap_or(0);
    let column = ((width - 3) / 2).min(widest).max(1);
    let mut out = format!(
        "{} | {}\n",
        fit(left_title, column),
        fit(right_title, column).trim_end()
    );
    out += &format!("{}-+-{}\n", "-".repeat(column), "-".repeat(column));
    let (l, r): (Vec<&str>, Vec<&str>) = (left.lines().collect(), right.lines().collect());
    for i in 0..l.len().max(r.len()) {
        let (l, r) = (l.get(i).unwrap_or(&""), r.get(i).unwrap_or(&""));
        out += &format!("{} | {}\n", fit(l, column), fit(r, column).trim_end());
    }
    out + "\n"
}

/// A line as the terminal should show it in a column: tabs as spaces, other control
/// characters as `?`, since their width is the terminal's to decide.
fn printable(line: &str) -> String {
    line.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// `line` cut or padded to exactly `column` display columns; a cut line ends with `…`.
fn fit(line: &str, column: usize) -> String {
    let line = printable(line);
    let mut out = String::new();
    let mut used = 0;
    if line.width() > column {
        for c in line.chars() {
            let w = c.width().unwrap_or(0);
            if used + w > column - 1 {
                break;
            }
            out.push(c);
            used += w;
        }
        out.push('…');
        used += 1;
    } else {
        out = line;
        used = out.width();
    }
    out + &" ".repeat(column - used)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_columns_fit_the_terminal_whatever_the_script() {
        let long = "x".repeat(300);
        let python = format!("[pid 1] 执行操作 {}\n[pid 1] short\n", "执行".repeat(80));
        let rust = format!("[pid 2] {long}\n[pid 2] 执行操作\n[pid 2] a\tb\n");
        for width in [83, 120, 200] {
            let shown = side_by_side(width, "Python: ok", &python, "Rust: ok", &rust);
            let lines: Vec<&str> = shown.lines().filter(|l| !l.is_empty()).collect();
            assert_eq!(lines.len(), 2 + 3, "{shown}");
            let separator = |line: &str| {
                let i = line.find(" | ").or_else(|| line.find("-+-")).unwrap();
                line[..i].width()
            };
            for line in &lines {
                assert!(
                    line.width() <= width,
                    "{width}: {line:?} is {}",
                    line.width()
                );
                // The separator stands in the same display column on every line.
                assert_eq!(separator(line), separator(lines[1]), "{width}: {line:?}");
            }
        }
    }

    #[test]
    fn a_narrow_terminal_shows_one_after_the_other() {
        let shown = side_by_side(60, "Python", "a\n", "Rust", "b\n");
        assert_eq!(shown, "--- Python\na\n--- Rust\nb\n");
    }
}
