//! `cargo xtask chaos [--quick]`: the fault-injection suite. Real processes, real SIGKILLs at
//! random moments, against the crates' own code.
//!
//! Each crate tests its primitive with an example, `examples/chaos_*.rs`, that runs one
//! bounded run of one scenario and prints one result line (see `examples/support/mod.rs` there).
//! This task builds them in release, runs every scenario over many seeds, each run in a
//! process group of its own that is killed after 15 s (the run's own watchdog reports a hang
//! after 12 s), and prints the table. A control run turns the lock's re-armed sleeps off and
//! must hang: it shows that the suite sees the bug it guards against.
//!
//! Every scenario runs under each start method (`--start-method fork`, `spawn`,
//! `forkserver`): the same faults, on processes that are forks or new images of the program,
//! sent their handles instead of inheriting them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use crate::demos;

/// A run still going after this is killed, with its process group, and counts as a hang.
const BACKSTOP: Duration = Duration::from_secs(15);

struct Scenario {
    krate: &'static str,
    example: &'static str,
    name: &'static str,
    /// How the run's processes start: `--start-method`.
    method: &'static str,
    /// Runs in the full suite and with `--quick`.
    runs: (u64, u64),
    /// A control: every run must hang. Its watchdog is shorter, since the hang is expected.
    control: bool,
}

const fn scenario(
    krate: &'static str,
    example: &'static str,
    name: &'static str,
    runs: (u64, u64),
) -> Scenario {
    Scenario {
        krate,
        example,
        name,
        method: "fork",
        runs,
        control: false,
    }
}

/// The same scenario under another start method.
const fn under(method: &'static str, s: Scenario) -> Scenario {
    Scenario { method, ..s }
}

const fn control(method: &'static str, runs: (u64, u64)) -> Scenario {
    Scenario {
        krate: "demo-lock",
        example: "chaos_lock",
        name: "woken-waiter-no-rearm",
        method,
        runs,
        control: true,
    }
}

/// Per queue scenario under spawn and forkserver: fewer runs than under fork, where the
/// queue's own code is the same and only how each process gets its handle differs.
const QUEUE_OTHER: (u64, u64) = (80, 2);
const LOCK_OTHER: (u64, u64) = (100, 2);

const SCENARIOS: &[Scenario] = &[
    scenario("demo-queue", "chaos_queue", "writers-bounded1", (160, 4)),
    scenario("demo-queue", "chaos_queue", "writers-bounded2", (160, 4)),
    scenario("demo-queue", "chaos_queue", "writers-unbounded", (160, 4)),
    scenario("demo-queue", "chaos_queue", "readers-bounded1", (160, 4)),
    scenario("demo-queue", "chaos_queue", "readers-bounded2", (160, 4)),
    scenario("demo-queue", "chaos_queue", "readers-unbounded", (160, 4)),
    scenario("demo-queue", "chaos_queue", "both-bounded1", (160, 4)),
    scenario("demo-queue", "chaos_queue", "both-bounded2", (160, 4)),
    scenario("demo-queue", "chaos_queue", "both-unbounded", (160, 4)),
    under("spawn", queue("writers-bounded1")),
    under("spawn", queue("writers-bounded2")),
    under("spawn", queue("writers-unbounded")),
    under("spawn", queue("readers-bounded1")),
    under("spawn", queue("readers-bounded2")),
    under("spawn", queue("readers-unbounded")),
    under("spawn", queue("both-bounded1")),
    under("spawn", queue("both-bounded2")),
    under("spawn", queue("both-unbounded")),
    under("forkserver", queue("writers-bounded1")),
    under("forkserver", queue("writers-bounded2")),
    under("forkserver", queue("writers-unbounded")),
    under("forkserver", queue("readers-bounded1")),
    under("forkserver", queue("readers-bounded2")),
    under("forkserver", queue("readers-unbounded")),
    under("forkserver", queue("both-bounded1")),
    under("forkserver", queue("both-bounded2")),
    under("forkserver", queue("both-unbounded")),
    scenario("demo-lock", "chaos_lock", "holder-killed", (200, 6)),
    scenario(
        "demo-lock",
        "chaos_lock",
        "timeout-waiters-killed",
        (200, 6),
    ),
    scenario("demo-lock", "chaos_lock", "woken-waiter", (200, 3)),
    control("fork", (3, 1)),
    under("spawn", lock("holder-killed")),
    under("spawn", lock("timeout-waiters-killed")),
    under("spawn", lock("woken-waiter")),
    // The controls under spawn and forkserver wait out their watchdog: the full suite only.
    control("spawn", (3, 0)),
    under("forkserver", lock("holder-killed")),
    under("forkserver", lock("timeout-waiters-killed")),
    under("forkserver", lock("woken-waiter")),
    control("forkserver", (3, 0)),
    scenario("demo-pool", "chaos_pool", "apply-async-killed", (100, 5)),
    scenario("demo-pool", "chaos_pool", "apply-threads-killed", (100, 5)),
    scenario("demo-pool", "chaos_pool", "map-killed", (100, 5)),
    scenario(
        "demo-pool",
        "chaos_pool",
        "apply-async-killed-maxtasks",
        (100, 5),
    ),
    scenario("demo-pool", "chaos_pool", "map-killed-maxtasks", (100, 5)),
    scenario(
        "demo-pool",
        "chaos_pool",
        "apply-async-killed-deadline",
        (100, 5),
    ),
    under("spawn", pool("apply-async-killed")),
    under("spawn", pool("apply-threads-killed")),
    under("spawn", pool("map-killed")),
    under("spawn", pool("apply-async-killed-maxtasks")),
    under("spawn", pool("apply-async-killed-deadline")),
    under("forkserver", pool("apply-async-killed")),
    under("forkserver", pool("apply-threads-killed")),
    under("forkserver", pool("map-killed")),
    under("forkserver", pool("apply-async-killed-maxtasks")),
    under("forkserver", pool("apply-async-killed-deadline")),
];

/// Per pool scenario under spawn and forkserver: the pool's own code is the same as under
/// fork; what differs is how each worker starts, which every kill makes it do again.
const POOL_OTHER: (u64, u64) = (100, 3);

const fn pool(name: &'static str) -> Scenario {
    scenario("demo-pool", "chaos_pool", name, POOL_OTHER)
}

const fn queue(name: &'static str) -> Scenario {
    scenario("demo-queue", "chaos_queue", name, QUEUE_OTHER)
}

const fn lock(name: &'static str) -> Scenario {
    scenario("demo-lock", "chaos_lock", name, LOCK_OTHER)
}

/// The watchdog of a control run, which is expected to hang.
const CONTROL_WATCHDOG: &str = "5";

/// One row of the table.
#[derive(Default)]
struct Row {
    runs: u64,
    hangs: u64,
    figures: BTreeMap<&'static str, u64>,
    slowest: Duration,
    /// Runs that failed without a result line, or left a process behind.
    failed: u64,
}

const COLUMNS: [(&str, &str); 6] = [
    ("kills", "kills"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("corrupted", "corrupted"),
    ("out_of_order", "out of order"),
    ("false_timeouts", "false timeouts"),
];

pub fn chaos(quick: bool) -> Result<bool, String> {
    let mut build = demos::cargo();
    build
        .current_dir(demos::root())
        .args(["build", "--release", "--quiet"]);
    for s in SCENARIOS {
        build.args(["-p", s.krate, "--example", s.example]);
    }
    if !build.status().map_err(|e| e.to_string())?.success() {
        return Err("cargo could not build the chaos examples".into());
    }
    let base = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % 1_000_000 * 1000);
    let total: u64 = SCENARIOS
        .iter()
        .map(|s| if quick { s.runs.1 } else { s.runs.0 })
        .sum();
    println!("chaos: {total} runs, seeds from {base}");
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut passed = true;
    for s in SCENARIOS {
        let runs = if quick { s.runs.1 } else { s.runs.0 };
        if runs == 0 {
            continue;
        }
        let began = Instant::now();
        let mut row = Row::default();
        for seed in base..base + runs {
            passed &= run_one(s, seed, &mut row)?;
        }
        let verdict = if s.control {
            if row.hangs == row.runs {
                "hangs, as it must"
            } else {
                passed = false;
                "FAILED: the control did not hang, so the suite cannot see the bug"
            }
        } else if row.hangs + row.failed > 0 || COLUMNS[1..].iter().any(|(k, _)| row.figures[k] > 0)
        {
            "FAILED"
        } else {
            "ok"
        };
        println!(
            "{} {} ({}): {runs} runs ... {verdict} ({:.1} s)",
            s.krate,
            s.name,
            s.method,
            began.elapsed().as_secs_f64()
        );
        rows.push((s, row));
    }
    println!();
    print!("{}", table(&rows));
    println!(
        "\n{total} runs in {:.0} s{}",
        started.elapsed().as_secs_f64(),
        if passed {
            ": no hang, nothing lost, duplicated or corrupted"
        } else {
            ": FAILED"
        }
    );
    Ok(passed)
}

/// Runs one scenario with one seed and adds what it found to `row`. False when the run broke
/// an invariant, hung, or (for a control) did not hang.
fn run_one(s: &Scenario, seed: u64, row: &mut Row) -> Result<bool, String> {
    let program = demos::target_dir().join("release/examples").join(s.example);
    let mut args = vec![
        "--scenario".to_string(),
        s.name.into(),
        "--seed".into(),
        seed.to_string(),
    ];
    if s.method != "fork" {
        args.extend(["--start-method".into(), s.method.into()]);
    }
    if s.control {
        args.extend(["--watchdog".into(), CONTROL_WATCHDOG.into()]);
    }
    let mut command = Command::new(&program);
    command.args(&args).env("RUST_BACKTRACE", "0");
    let outcome = demos::run(command, BACKSTOP).map_err(|e| format!("{}: {e}", s.example))?;
    row.runs += 1;
    let line = outcome.stdout.lines().find(|l| l.starts_with("chaos "));
    let fields: BTreeMap<&str, &str> = line
        .into_iter()
        .flat_map(|l| l.split_whitespace().skip(1))
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let number = |key: &str| fields.get(key).and_then(|v| v.parse::<u64>().ok());
    for (key, _) in COLUMNS {
        *row.figures.entry(key).or_default() += number(key).unwrap_or(0);
    }
    row.slowest = row
        .slowest
        .max(Duration::from_micros(number("recovery_us").unwrap_or(0)));
    let hang = outcome.status.is_none() || fields.get("result") == Some(&"hang");
    row.hangs += u64::from(hang);
    let problem = if outcome.left_behind {
        row.failed += 1;
        Some("left processes behind")
    } else if hang {
        (!s.control).then_some("hung")
    } else if s.control {
        Some("did not hang")
    } else if line.is_none() {
        row.failed += 1;
        Some("ended without a result line")
    } else if fields.get("result") != Some(&"ok") {
        Some("broke an invariant")
    } else {
        None
    };
    let Some(problem) = problem else {
        return Ok(true);
    };
    println!(
        "{} {} ({}) seed {seed}: {problem}",
        s.krate, s.name, s.method
    );
    if let Some(line) = line {
        println!("  {line}");
    }
    for l in outcome.stderr.lines().take(40) {
        println!("  | {l}");
    }
    println!(
        "  rerun with: cargo run --release -p {} --example {} -- {}",
        s.krate,
        s.example,
        args.join(" ")
    );
    Ok(false)
}

/// The table, in Markdown.
fn table(rows: &[(&Scenario, Row)]) -> String {
    let mut header = vec!["scenario".to_string(), "runs".into(), "hangs".into()];
    header.extend(COLUMNS.iter().map(|(_, title)| title.to_string()));
    header.push("slowest recovery".into());
    let mut lines = vec![header];
    for (s, row) in rows {
        let mut name = format!("{} {}", s.krate.trim_start_matches("demo-"), s.name);
        if s.method != "fork" {
            name += &format!(" ({})", s.method);
        }
        if s.control {
            name += " (control: must hang)";
        }
        let mut cells = vec![name, row.runs.to_string(), row.hangs.to_string()];
        cells.extend(COLUMNS.iter().map(|(key, _)| row.figures[key].to_string()));
        cells.push(if s.control {
            "-".into()
        } else {
            format!("{:.1} ms", row.slowest.as_secs_f64() * 1e3)
        });
        if row.failed > 0 {
            cells[0] += &format!(" ({} runs failed)", row.failed);
        }
        lines.push(cells);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                if c == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(c, w)| {
                    if c == 0 {
                        "-".repeat(w + 2)
                    } else {
                        format!("{}:", "-".repeat(w + 1))
                    }
                })
                .collect();
            let _ = writeln!(out, "|{}|", rule.join("|"));
        }
    }
    out
}
