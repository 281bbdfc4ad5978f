//! `cargo xtask bench`: each primitive measured in one run, ours (the crate's own API, release
//! build) beside the Python original and the bare OS mechanism.
//!
//! Each demo crate measures itself: `examples/bench_<section>.rs` (`bench_pool.rs` in
//! demo-pool) for ours and the limit, `python/bench.py` for Python. Both print lines
//! `bench<TAB>id<TAB>who<TAB>median<TAB>unit`; this task runs them, then prints the table and
//! writes `target/bench/results.json` and `target/bench/chart.svg`.
//!
//! The table's rows come from the crates too: each bench example's header lists the rows it
//! measures, in order, as a table of `` | `id` | what it measures | `` lines; the crates come in
//! the order of the top README's table, the note's order. A new crate with a bench example
//! joins by existing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use crate::compare::python_available;
use crate::demos;
use crate::memory;

/// A row of the table that a bench example declares: its id and what it measures.
type Primitive = (String, String);

/// The bench example of a demo crate: `examples/bench_pool.rs` in demo-pool.
fn example(name: &str) -> String {
    format!("bench_{}", name.trim_start_matches("demo-"))
}

/// The rows a bench example declares in its header: `//! | `id` | what it measures |`.
pub fn declared(source: &str) -> Vec<Primitive> {
    source
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .filter_map(|l| {
            let l = l.trim().strip_prefix("| `")?;
            let (id, rest) = l.split_once("` |")?;
            let row = rest.trim().strip_suffix('|')?.trim();
            Some((id.to_string(), row.to_string()))
        })
        .collect()
}

/// The demo crates with a bench example, in the order of the top README's table (the note's
/// order), then any the table does not name.
fn in_readme_order(mut names: Vec<String>) -> Vec<String> {
    let readme = std::fs::read_to_string(demos::root().join("README.md")).unwrap_or_default();
    let at = |name: &String| readme.find(&format!("cargo run -p {name}`"));
    names.sort_by_key(|name| (at(name).is_none(), at(name)));
    names
}

fn example_path(name: &str) -> std::path::PathBuf {
    demos::target_dir()
        .join("release/examples")
        .join(example(name))
}

/// Rows whose Python figure comes from another program than ours, measured again in turns
/// after the crate's whole bench: the crate, and the flag that makes both its bench example
/// and its `python/bench.py` measure those rows alone. Each figure is then the median of its
/// runs, which met the machine's moods alike: `Pool(4)` create+close+join is short, Python's
/// is ten times longer, and minutes apart their ratio measured the machine.
const IN_TURNS: &[(&str, &str)] = &[("demo-pool", "--create-join")];

/// How many more times the rows of `IN_TURNS` are measured, Rust then Python (`--quick`: 2),
/// so that with the first there is an odd number of runs, and a middle one.
const TURNS: usize = 8;

/// One figure: who measured (`ours`, `python`, `limit`, or an extra such as `flock`) and what.
struct Figure {
    who: String,
    value: f64,
    unit: String,
}

/// One row of the table: a primitive, or an extra figure of one.
pub struct Row {
    pub name: String,
    pub unit: String,
    pub ours: Option<f64>,
    pub python: Option<f64>,
    pub limit: Option<f64>,
    /// An extra figure of the primitive above (another mechanism, such as `flock`), in `ours`.
    pub other: Option<String>,
}

impl Row {
    /// Rates (per second) are better higher; times are better lower.
    fn higher_is_better(&self) -> bool {
        self.unit.ends_with("/s")
    }

    /// How many times better ours is than `other` (above 1: ours wins).
    fn better_than(&self, other: Option<f64>) -> Option<f64> {
        let (ours, other) = (self.ours?, other?);
        Some(if self.higher_is_better() {
            ours / other
        } else {
            other / ours
        })
    }
}

pub fn bench(quick: bool) -> Result<bool, String> {
    let names: Vec<String> = demos::discover()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|n| bench_source(n).is_file())
        .collect();
    let names = in_readme_order(names);
    let mut primitives = Vec::new();
    for name in &names {
        let source = std::fs::read_to_string(bench_source(name)).map_err(|e| e.to_string())?;
        let declared = declared(&source);
        if declared.is_empty() {
            return Err(format!(
                "{} declares no row: its header lists them as | `id` | what it measures |",
                bench_source(name).display()
            ));
        }
        primitives.extend(declared);
    }
    let python = python_available();
    if !python {
        eprintln!("python3 is not on this machine: the Python column stays empty");
    }
    eprintln!("building the bench examples (release)");
    let mut build = demos::cargo();
    build
        .current_dir(demos::root())
        .args(["build", "--release", "--quiet"]);
    for name in &names {
        build.args(["-p", name, "--example", &example(name)]);
    }
    let pool = names.iter().any(|n| n == "demo-pool");
    if pool {
        build.args(["--bin", "demo-pool"]);
    }
    if !build.status().map_err(|e| e.to_string())?.success() {
        return Err("cargo could not build the bench examples".into());
    }
    let mut figures: BTreeMap<String, Vec<Figure>> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        eprintln!(
            "[{}/{}] measuring {name}: Rust (release build)",
            i + 1,
            names.len()
        );
        collect(Command::new(example_path(name)), quick, &mut figures)?;
        let script = demos::root().join(name).join("python/bench.py");
        if python && script.is_file() {
            eprintln!("[{}/{}] measuring {name}: Python", i + 1, names.len());
            let mut py = Command::new("python3");
            py.arg(&script);
            collect(py, quick, &mut figures)?;
            for &(crate_name, flag) in IN_TURNS {
                if crate_name != name {
                    continue;
                }
                eprintln!(
                    "[{}/{}] {name} {flag}: Rust and Python in turns",
                    i + 1,
                    names.len()
                );
                for _ in 0..if quick { 2 } else { TURNS } {
                    let mut rust = Command::new(example_path(name));
                    rust.arg(flag);
                    collect(rust, quick, &mut figures)?;
                    let mut py = Command::new("python3");
                    py.arg(&script).arg(flag);
                    collect(py, quick, &mut figures)?;
                }
            }
        }
    }
    if pool {
        eprintln!("measuring the peak memory of demo-pool's run, ours and Python's");
        let (row, measured) = pool_memory(quick, python)?;
        // Beside the pool's own rows.
        let at = primitives
            .iter()
            .rposition(|(id, _)| id.starts_with("pool."));
        primitives.insert(at.map_or(primitives.len(), |i| i + 1), row);
        figures.insert(MEMORY_ID.into(), measured);
    }
    let rows = rows(&primitives, figures);
    print!("{}", table(&rows));
    let dir = demos::target_dir().join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("results.json"), json(&rows)).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("chart.svg"), chart(&rows)).map_err(|e| e.to_string())?;
    println!("\nwrote target/bench/results.json and target/bench/chart.svg");
    Ok(true)
}

/// The row of the peak memory of demo-pool's run, which this task measures itself.
const MEMORY_ID: &str = "pool.memory";

/// The peak memory of `demo-pool`'s run (the note's demo, sleeps shortened) and of
/// `python3 demo-pool/python/pool.py`: the resident set sizes of all the run's processes,
/// summed, at its largest (see `memory.rs`); the median of 3 runs (1 with `quick`), in MB.
fn pool_memory(quick: bool, python: bool) -> Result<(Primitive, Vec<Figure>), String> {
    let row = (
        MEMORY_ID.to_string(),
        "peak memory of demo-pool's run, RSS summed over its processes".to_string(),
    );
    let runs = if quick { 1 } else { 3 };
    let peak = |make: &dyn Fn() -> Command| -> Result<f64, String> {
        let peaks = (0..runs)
            .map(|_| {
                let mut command = make();
                command.env("DEMO_TIME_SCALE", "0.2");
                memory::peak_rss(command, LIMIT).map(|bytes| bytes as f64 / 1e6)
            })
            .collect::<Result<Vec<f64>, _>>()
            .map_err(|e| e.to_string())?;
        Ok(median(peaks))
    };
    let figure = |who: &str, value| Figure {
        who: who.into(),
        value,
        unit: "MB".into(),
    };
    let ours = peak(&|| Command::new(demos::target_dir().join("release/demo-pool")))?;
    let mut measured = vec![figure("ours", ours)];
    if python {
        let script = demos::root().join("demo-pool/python/pool.py");
        let theirs = peak(&|| {
            let mut py = Command::new("python3");
            py.arg(&script);
            py
        })?;
        measured.push(figure("python", theirs));
    }
    Ok((row, measured))
}

fn bench_source(name: &str) -> std::path::PathBuf {
    demos::root()
        .join(name)
        .join("examples")
        .join(format!("{}.rs", example(name)))
}

/// How long one measuring program may run before it is killed and the bench fails.
const LIMIT: Duration = Duration::from_secs(600);

/// Runs one measuring program, with a time limit, and keeps its `bench` lines.
fn collect(
    mut command: Command,
    quick: bool,
    figures: &mut BTreeMap<String, Vec<Figure>>,
) -> Result<(), String> {
    if quick {
        command.env("BENCH_QUICK", "1");
    }
    let program = format!("{command:?}");
    let output = demos::run(command, LIMIT).map_err(|e| e.to_string())?;
    if !output.status.is_some_and(|s| s.success()) {
        let how = output
            .status
            .map_or("was killed over its time limit".into(), |s| {
                format!("failed ({s})")
            });
        return Err(format!("{program} {how}:\n{}", output.stderr));
    }
    for line in output.stdout.lines() {
        if let ["bench", id, who, value, unit] = line.split('\t').collect::<Vec<_>>()[..] {
            let value = value
                .parse()
                .map_err(|_| format!("bad figure in {line:?}"))?;
            figures.entry(id.into()).or_default().push(Figure {
                who: who.into(),
                value,
                unit: unit.into(),
            });
        }
    }
    Ok(())
}

/// The middle value (the upper one of the two middle values of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The table's rows: the declared primitives in their order, then any others; each
/// primitive's extra figures as rows of their own just below it.
fn rows(primitives: &[Primitive], mut figures: BTreeMap<String, Vec<Figure>>) -> Vec<Row> {
    let mut ids: Vec<String> = primitives.iter().map(|(id, _)| id.clone()).collect();
    ids.extend(
        figures
            .keys()
            .filter(|k| !primitives.iter().any(|(id, _)| id == *k))
            .cloned(),
    );
    let mut rows = Vec::new();
    for id in ids {
        let Some(list) = figures.remove(&id) else {
            continue;
        };
        let name = primitives
            .iter()
            .find(|(i, _)| *i == id)
            .map_or(id.clone(), |(_, n)| n.clone());
        // A figure measured more than once (`IN_TURNS`) is the median of its runs.
        let get = |who: &str| {
            let values: Vec<f64> = list
                .iter()
                .filter(|f| f.who == who)
                .map(|f| f.value)
                .collect();
            (!values.is_empty()).then(|| median(values))
        };
        let unit = list[0].unit.clone();
        rows.push(Row {
            name: name.clone(),
            unit: unit.clone(),
            ours: get("ours"),
            python: get("python"),
            limit: get("limit"),
            other: None,
        });
        let mut extras: Vec<&Figure> = Vec::new();
        for f in &list {
            if !["ours", "python", "limit"].contains(&f.who.as_str())
                && !extras.iter().any(|e| e.who == f.who)
            {
                extras.push(f);
            }
        }
        for extra in extras {
            rows.push(Row {
                name: format!("{name}: {}", extra.who),
                unit: extra.unit.clone(),
                ours: get(&extra.who),
                python: None,
                limit: None,
                other: Some(extra.who.clone()),
            });
        }
    }
    rows
}

fn show(value: Option<f64>, unit: &str) -> String {
    let Some(mut v) = value else {
        return "-".into();
    };
    // Times move up the ladder, so that 5142 us reads 5.14 ms.
    let ladder = ["ns", "us", "ms", "s"];
    let mut unit = unit;
    while let Some(i) = ladder
        .iter()
        .position(|u| *u == unit)
        .filter(|&i| i < 3 && v >= 1000.0)
    {
        (v, unit) = (v / 1000.0, ladder[i + 1]);
    }
    // One spelling of micro, in the table and on the chart alike.
    let unit = if unit == "us" { "µs" } else { unit };
    match v {
        v if v >= 1e9 => format!("{:.2} G {unit}", v / 1e9),
        v if v >= 1e6 => format!("{:.2} M {unit}", v / 1e6),
        v if v >= 1e4 => format!("{:.0} k {unit}", v / 1e3),
        v if v >= 100.0 => format!("{v:.0} {unit}"),
        v if v >= 10.0 => format!("{v:.1} {unit}"),
        v if v >= 0.1 => format!("{v:.2} {unit}"),
        // Small figures (GB/s of 16-byte messages) keep three significant digits.
        v if v > 0.0 => {
            let digits = (2 - v.log10().floor() as i32).clamp(0, 12) as usize;
            format!("{v:.digits$} {unit}")
        }
        v => format!("{v} {unit}"),
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}x"))
}

/// The table, as Markdown with padded columns: it reads in a terminal and pastes into a README.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "primitive",
        "ours",
        "Python",
        "limit",
        "ours vs Python",
        "ours vs limit",
    ];
    let mut cells = vec![header.map(String::from).to_vec()];
    for r in rows {
        cells.push(vec![
            r.name.clone(),
            show(r.ours, &r.unit),
            show(r.python, &r.unit),
            show(r.limit, &r.unit),
            ratio(r.better_than(r.python)),
            ratio(r.better_than(r.limit)),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            cells
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap()
        })
        .collect();
    let line = |row: &[String]| {
        let padded: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| {
                if c == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&cells[0]);
    // `|---|---:|`: the first column to the left, the figures to the right.
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(c, &w)| {
            if c == 0 {
                "-".repeat(w + 2)
            } else {
                format!("{}:", "-".repeat(w + 1))
            }
        })
        .collect();
    out += &format!("|{}|\n", rule.join("|"));
    for row in &cells[1..] {
        out += &line(row);
    }
    out += "\nRatios say how many times better ours is: above 1 ours wins, below 1 it loses.\n";
    out
}

fn json(rows: &[Row]) -> String {
    let number = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v}"));
    let text = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let objects: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "  {{\"name\": {}, \"unit\": {}, \"ours\": {}, \"python\": {}, \"limit\": {}, \"better\": \"{}\"}}",
                text(&r.name),
                text(&r.unit),
                number(r.ours),
                number(r.python),
                number(r.limit),
                if r.higher_is_better() { "higher" } else { "lower" }
            )
        })
        .collect();
    format!("[\n{}\n]\n", objects.join(",\n"))
}

/// Seconds per operation, so that every figure fits one log axis: times as they are, rates
/// inverted, and GB/s as the time to move one MiB.
fn seconds(value: f64, unit: &str) -> f64 {
    match unit {
        "ns" => value * 1e-9,
        "us" => value * 1e-6,
        "ms" => value * 1e-3,
        "s" => value,
        "GB/s" => (1 << 20) as f64 / (value * 1e9),
        _ => 1.0 / value,
    }
}

/// The crates a Rust user would otherwise take, measured beside ours: their figures are drawn
/// in a colour of their own. A figure's `who` names the crate first (`rayon, catch_unwind per
/// item`).
const PEERS: [&str; 3] = ["rayon", "ipc-channel", "procspawn"];

fn is_peer(who: &str) -> bool {
    PEERS.iter().any(|p| who.starts_with(p))
}

/// Whether a row's figures are times or rates, which the chart draws; peak memory is not.
fn on_time_axis(unit: &str) -> bool {
    ["ns", "us", "ms", "s"].contains(&unit) || unit.ends_with("/s")
}

/// A bar chart: per primitive, ours, Python and the limit, as time per operation on a log axis;
/// each extra figure of a primitive (a peer crate, another mechanism) on a line of its own,
/// labelled beside its bar.
pub fn chart(rows: &[Row]) -> String {
    let rows: Vec<&Row> = rows.iter().filter(|r| on_time_axis(&r.unit)).collect();
    let (label_w, plot_w, bar_h, gap, top) = (330.0, 520.0, 11.0, 2.0, 70.0);
    // The bars of a row, with the colour each is drawn in.
    let series = [
        ("ours (Rust)", "#c2410c"),
        ("Python", "#3572a5"),
        ("OS limit", "#9ca3af"),
        ("peer crate (rayon, ipc-channel, procspawn)", "#0f766e"),
        ("ours, another mechanism", "#ca8a04"),
    ];
    let bars = |r: &Row| -> Vec<(f64, &str)> {
        let colours = match &r.other {
            Some(who) if is_peer(who) => [series[3].1; 3],
            Some(_) => [series[4].1; 3],
            None => [series[0].1, series[1].1, series[2].1],
        };
        [r.ours, r.python, r.limit]
            .into_iter()
            .zip(colours)
            .filter_map(|(v, c)| Some((v?, c)))
            .collect()
    };
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|r| bars(r).into_iter().map(|(v, _)| seconds(v, &r.unit)))
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    let lo = all
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .log10()
        .floor();
    let hi = all
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let (lo, hi) = if lo.is_finite() {
        (lo, hi)
    } else {
        (-9.0, 1.0)
    };
    let x = |s: f64| label_w + (s.log10() - lo) / (hi - lo) * plot_w;
    // Each row is as tall as its bars, with a gap above a primitive, less above its extras.
    let heights: Vec<f64> = rows
        .iter()
        .map(|r| {
            let above = if r.other.is_some() { 4.0 } else { 14.0 };
            above + bars(r).len().max(1) as f64 * (bar_h + gap)
        })
        .collect();
    let height = top + heights.iter().sum::<f64>() + 40.0;
    let width = label_w + plot_w + 120.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"15\">Time per operation, log scale, shorter is better (rates as time per item; GB/s as time per MiB moved)</text>\n"
    );
    let mut lx = 10.0;
    for (label, color) in series {
        writeln!(svg, "<rect x=\"{lx}\" y=\"32\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{}\" y=\"43\">{label}</text>", lx + 16.0).unwrap();
        lx += 16.0 + label.chars().count() as f64 * 6.6 + 18.0;
    }
    let units = [
        "1 ns", "10 ns", "100 ns", "1 µs", "10 µs", "100 µs", "1 ms", "10 ms", "100 ms", "1 s",
        "10 s",
    ];
    for decade in lo as i32..=hi as i32 {
        let gx = x(10f64.powi(decade));
        let label = units.get((decade + 9) as usize).copied().unwrap_or("");
        writeln!(svg, "<line x1=\"{gx}\" y1=\"{}\" x2=\"{gx}\" y2=\"{}\" stroke=\"#e5e7eb\"/><text x=\"{gx}\" y=\"{}\" text-anchor=\"middle\" fill=\"#6b7280\">{label}</text>", top - 8.0, height - 25.0, height - 10.0).unwrap();
    }
    let mut y = top;
    for (r, h) in rows.iter().zip(&heights) {
        let bars = bars(r);
        let first = y + h - bars.len().max(1) as f64 * (bar_h + gap);
        let name = match &r.other {
            Some(who) => format!("↳ {who}"),
            None => r.name.clone(),
        };
        let name = name.replace('&', "&amp;").replace('<', "&lt;");
        // The label beside the middle of its own bars.
        let middle = first + (bars.len().max(1) as f64 * (bar_h + gap) - gap) / 2.0;
        writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{name}</text>",
            label_w - 10.0,
            middle + 4.0
        )
        .unwrap();
        for (j, (v, color)) in bars.into_iter().enumerate() {
            let by = first + j as f64 * (bar_h + gap);
            let bx = x(seconds(v, &r.unit)).max(label_w + 1.0);
            writeln!(svg, "<rect x=\"{label_w}\" y=\"{by}\" width=\"{}\" height=\"{bar_h}\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\" font-size=\"10\">{}</text>", bx - label_w, bx + 4.0, by + 9.5, show(Some(v), &r.unit)).unwrap();
        }
        y += h;
    }
    svg += "</svg>\n";
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(lines: &[(&str, &str, f64, &str)]) -> BTreeMap<String, Vec<Figure>> {
        let mut map: BTreeMap<String, Vec<Figure>> = BTreeMap::new();
        for (id, who, value, unit) in lines {
            map.entry(id.to_string()).or_default().push(Figure {
                who: who.to_string(),
                value: *value,
                unit: unit.to_string(),
            });
        }
        map
    }

    #[test]
    fn a_figure_measured_in_turns_is_the_median_of_its_runs() {
        let primitives = vec![("pool.create_join".to_string(), "Pool(4)".to_string())];
        let rows = rows(
            &primitives,
            figures(&[
                ("pool.create_join", "ours", 1.0, "ms"),
                ("pool.create_join", "limit", 0.5, "ms"),
                ("pool.create_join", "procspawn", 9.0, "ms"),
                ("pool.create_join", "python", 12.0, "ms"),
                ("pool.create_join", "ours", 3.0, "ms"),
                ("pool.create_join", "python", 20.0, "ms"),
                ("pool.create_join", "ours", 2.0, "ms"),
                ("pool.create_join", "python", 10.0, "ms"),
                ("pool.create_join", "procspawn", 7.0, "ms"),
                ("pool.create_join", "procspawn", 8.0, "ms"),
            ]),
        );
        assert_eq!(
            rows.len(),
            2,
            "one row for ours, one for the peer, whatever the runs"
        );
        assert_eq!(rows[0].ours, Some(2.0));
        assert_eq!(rows[0].python, Some(12.0));
        assert_eq!(rows[0].limit, Some(0.5));
        assert_eq!(rows[1].name, "Pool(4): procspawn");
        assert_eq!(rows[1].ours, Some(8.0));
    }

    #[test]
    fn rows_follow_the_declared_order_and_ratios_favour_the_better_figure() {
        let header = "//! Measures things.\n//!\n//! | id | row |\n//! |---|---|\n\
                      //! | `process.fork` | process start+join, fork |\n\
                      //! | `queue.processes` | queue, process to process |\n\
                      //! | `lock.uncontended` | process lock, uncontended acquire+release |\n\
                      //! | `thread.start_join` | thread start+join |\n\n\
                      // | `not.a.row` | after the header |\n";
        let primitives = declared(header);
        assert_eq!(primitives.len(), 4, "{primitives:?}");
        assert_eq!(
            primitives[0],
            ("process.fork".into(), "process start+join, fork".into())
        );
        let rows = rows(
            &primitives,
            figures(&[
                ("thread.start_join", "ours", 30.0, "us"),
                ("process.fork", "ours", 150.0, "us"),
                ("process.fork", "python", 1500.0, "us"),
                ("process.fork", "limit", 100.0, "us"),
                ("queue.processes", "ours", 1e6, "msg/s"),
                ("queue.processes", "python", 1e5, "msg/s"),
                ("lock.uncontended", "ours", 25.0, "ns"),
                ("lock.uncontended", "flock", 400.0, "ns"),
            ]),
        );
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names[0], "process start+join, fork");
        assert_eq!(names[3], "process lock, uncontended acquire+release: flock");
        assert_eq!(names[4], "thread start+join");
        assert_eq!(rows[0].better_than(rows[0].python), Some(10.0));
        assert_eq!(rows[0].better_than(rows[0].limit), Some(100.0 / 150.0));
        assert_eq!(rows[1].better_than(rows[1].python), Some(10.0));
        assert_eq!(show(rows[0].python, "us"), "1.50 ms");
        assert_eq!(show(Some(2.5e6), "msg/s"), "2.50 M msg/s");
        let json = json(&rows);
        assert!(json.contains("\"name\": \"queue, process to process\", \"unit\": \"msg/s\", \"ours\": 1000000, \"python\": 100000, \"limit\": null, \"better\": \"higher\""), "{json}");
        let table = table(&rows);
        assert!(table.contains("| process start+join, fork "), "{table}");
        assert!(
            table
                .lines()
                .all(|l| l.is_empty() || l.starts_with('|') || l.starts_with("Ratios"))
        );
        let svg = chart(&rows);
        assert_eq!(
            svg.matches("height=\"11\"").count(),
            8,
            "one bar per figure"
        );
    }

    /// A label of the chart and its `y`; a bar's `y` and colour.
    type Labels = Vec<(String, f64)>;
    type Bars = Vec<(f64, String)>;

    /// The `y` of each label and bar of the chart, and each bar's colour, in order.
    fn labels_and_bars(svg: &str) -> (Labels, Bars) {
        let attr = |line: &str, name: &str| -> Option<String> {
            let at = line.find(&format!(" {name}=\""))? + name.len() + 3;
            Some(line[at..].split('"').next()?.to_string())
        };
        let mut labels = Vec::new();
        let mut bars = Vec::new();
        for line in svg.lines() {
            if line.contains("text-anchor=\"end\"") {
                let text = line.split('>').nth(1).unwrap().split('<').next().unwrap();
                labels.push((text.to_string(), attr(line, "y").unwrap().parse().unwrap()));
            } else if line.contains("height=\"11\"") {
                let y = attr(line, "y").unwrap().parse().unwrap();
                bars.push((y, attr(line, "fill").unwrap()));
            }
        }
        (labels, bars)
    }

    #[test]
    fn the_chart_labels_each_row_beside_its_bars_and_colours_peers_apart() {
        let primitives = declared(
            "//! | `threadpool.map` | thread pool map |\n//! | `pipe.roundtrip` | pipe round trip |\n\
             //! | `pool.memory` | peak memory |\n",
        );
        let rows = rows(
            &primitives,
            figures(&[
                ("threadpool.map", "ours", 5e8, "items/s"),
                ("threadpool.map", "python", 1e7, "items/s"),
                ("threadpool.map", "rayon", 1e9, "items/s"),
                (
                    "threadpool.map",
                    "rayon, catch_unwind per item",
                    8e8,
                    "items/s",
                ),
                ("pipe.roundtrip", "ours", 9.5, "us"),
                ("pipe.roundtrip", "limit", 8.5, "us"),
                ("pipe.roundtrip", "futex", 7.0, "us"),
                ("pool.memory", "ours", 4.2, "MB"),
                ("pool.memory", "python", 48.0, "MB"),
            ]),
        );
        assert_eq!(show(rows[3].ours, &rows[3].unit), "9.50 µs");
        assert_eq!(show(Some(0.0108), "GB/s"), "0.0108 GB/s");
        let svg = chart(&rows);
        assert!(
            !svg.contains(" us<") && !svg.contains(" us\""),
            "one spelling of micro"
        );
        assert!(svg.contains(">9.50 µs<") && svg.contains(">1 µs<"));
        assert!(
            !svg.contains("peak memory"),
            "memory is no time: the table shows it"
        );
        let (labels, bars) = labels_and_bars(&svg);
        let names: Vec<&str> = labels.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "thread pool map",
                "↳ rayon",
                "↳ rayon, catch_unwind per item",
                "pipe round trip",
                "↳ futex"
            ]
        );
        // Bars in row order: each label's y lies within its own bars, not a neighbour's.
        let per_row = [2, 1, 1, 2, 1];
        let mut next = 0;
        for ((name, y), n) in labels.iter().zip(per_row) {
            let (top, bottom) = (bars[next].0, bars[next + n - 1].0 + 11.0);
            assert!(
                top <= *y && *y <= bottom + 4.0,
                "{name} at {y}, bars {top}..{bottom}"
            );
            next += n;
        }
        assert_eq!(next, bars.len());
        let colours: Vec<&str> = bars.iter().map(|(_, c)| c.as_str()).collect();
        let peer = colours[2];
        assert_eq!(colours[3], peer, "both rayon rows in the peers' colour");
        assert!(![colours[0], colours[1], colours[4], colours[6]].contains(&peer));
        assert_ne!(colours[6], colours[4], "another mechanism is not ours");
        assert!(svg.contains("peer crate (rayon, ipc-channel, procspawn)"));
    }
}
