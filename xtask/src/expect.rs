//! The expected-output format of `expected-output.txt`:
//!
//! - a line matches one output line literally, except that `[..]` matches any text within it;
//! - a line `...` matches any number of lines, none included;
//! - the lines between `[unordered]` and `[/unordered]` match as many output lines, in any
//!   order, each pattern once.
//!
//! The matcher and its diff are the demo crates' own: `tests/support/mod.rs`, the same file in
//! every demo crate (the tidy test checks it), included here as it is, so that `run-all` and
//! each crate's own test cannot disagree about a file. This module adds what only the xtask
//! does: `--bless`.

#[path = "../../demo-process/tests/support/mod.rs"]
mod support;

use support::{Item, line_matches, match_any_order, parse};
pub use support::{diff, matches};

/// An output line as a pattern: the number of each `[pid N` becomes `[..]`.
pub fn literal(line: &str) -> String {
    let (mut out, mut rest) = (String::new(), line);
    while let Some(i) = rest.find("[pid ") {
        out += &rest[..i + 5];
        rest = rest[i + 5..].trim_start_matches(|c: char| c.is_ascii_digit());
        out += "[..]";
    }
    out + rest
}

/// A new expected-output file for `runs`, the outputs of several runs of one demo: what of
/// `expected` still matches the first run keeps its patterns (`[..]`, `...`, whole
/// `[unordered]` blocks), the rest gives way to that run's lines, with pids as `[..]`. An error,
/// which names the lines, when the result does not match every run: the runs differ beyond
/// pids where no pattern says they may.
pub fn bless(expected: &str, runs: &[&str]) -> Result<String, String> {
    // A malformed file keeps nothing.
    let items = parse(expected).unwrap_or_default();
    let lines: Vec<&str> = runs[0].lines().collect();
    let blessed = keep_what_matches(&items, &lines);
    let mut differ = String::new();
    for run in runs {
        if !matches(&blessed, run)? {
            for line in diff(&blessed, run).lines().filter(|l| !l.starts_with("  ")) {
                differ += &format!("{line}\n");
            }
        }
    }
    if differ.is_empty() {
        Ok(blessed)
    } else {
        Err(format!(
            "{} runs differ beyond pids in these lines (- as blessed from the first run, + \
             another run); make them patterns by hand ([..] within a line, [unordered] for \
             lines in any order):\n{}",
            runs.len(),
            differ.trim_end()
        ))
    }
}

/// The items that cover the most of `lines`, kept as they are, and the lines that none
/// covers, as literal patterns, in the order of the output.
fn keep_what_matches(items: &[Item], lines: &[&str]) -> String {
    // covered[i][j]: how many of lines[j..] items[i..] can cover at most. An item left out
    // covers nothing, and so does a line taken literally; `...` covers any lines.
    let (n, m) = (items.len(), lines.len());
    let mut covered = vec![vec![0usize; m + 1]; n + 1];
    let take = |i: usize, j: usize, covered: &[Vec<usize>]| -> Option<(usize, usize)> {
        match &items[i] {
            Item::Line(p) => (j < m && line_matches(p, lines[j])).then_some(1),
            Item::Unordered(ps) => (j + ps.len() <= m
                && match_any_order(ps, &lines[j..j + ps.len()]))
            .then_some(ps.len()),
            Item::AnyLines => (j < m).then_some(1),
        }
        .map(|k| {
            let next = if matches!(items[i], Item::AnyLines) {
                i
            } else {
                i + 1
            };
            (k + covered[next][j + k], k)
        })
    };
    for i in (0..n).rev() {
        for j in (0..=m).rev() {
            let left_out = covered[i + 1][j];
            let literal = if j < m { covered[i][j + 1] } else { 0 };
            let taken = take(i, j, &covered).map_or(0, |(c, _)| c);
            covered[i][j] = left_out.max(literal).max(taken);
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n {
            if let Some((_, k)) = take(i, j, &covered).filter(|&(c, _)| c == covered[i][j]) {
                match &items[i] {
                    Item::Line(p) => out += &format!("{p}\n"),
                    Item::Unordered(ps) => {
                        out += "[unordered]\n";
                        ps.iter().for_each(|p| out += &format!("{p}\n"));
                        out += "[/unordered]\n";
                    }
                    // `...` is written once, when it has covered its last line.
                    Item::AnyLines => {}
                }
                if !matches!(items[i], Item::AnyLines) {
                    i += 1;
                }
                j += k;
                continue;
            }
            if covered[i + 1][j] == covered[i][j] {
                if matches!(items[i], Item::AnyLines) {
                    out += "...\n";
                }
                i += 1;
                continue;
            }
        }
        out += &format!("{}\n", literal(lines[j]));
        j += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_a_line() {
        assert!(line_matches(
            "[pid [..]] hello john",
            "[pid 4242] hello john"
        ));
        assert!(line_matches("[..]", ""));
        assert!(line_matches("a[..]b[..]c", "a-b-b-c"));
        assert!(line_matches("took [..] s", "took 2.00 s"));
        assert!(!line_matches(
            "[pid [..]] hello john",
            "[pid 4242] hello jane"
        ));
        assert!(!line_matches("abc", "abcd"));
        assert!(!line_matches("a[..]a", "a"));
    }

    #[test]
    fn any_lines_matches_zero_or_more() {
        assert_eq!(matches("a\n...\nz\n", "a\nz\n"), Ok(true));
        assert_eq!(matches("a\n...\nz\n", "a\nb\nc\nz\n"), Ok(true));
        assert_eq!(matches("a\n...\nz\n", "a\nb\n"), Ok(false));
        assert_eq!(matches("a\nz\n", "a\nb\nz\n"), Ok(false));
    }

    #[test]
    fn unordered_blocks_match_any_order_each_pattern_once() {
        let expected = "start\n[unordered]\nx [..]\nx 1\n[/unordered]\nend\n";
        assert_eq!(matches(expected, "start\nx 1\nx 2\nend\n"), Ok(true));
        assert_eq!(matches(expected, "start\nx 2\nx 1\nend\n"), Ok(true));
        assert_eq!(matches(expected, "start\nx 2\nx 3\nend\n"), Ok(false));
        assert_eq!(matches(expected, "start\nx 1\nend\n"), Ok(false));
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(matches("[unordered]\na\n", "a\n").is_err());
        assert!(matches("[/unordered]\n", "").is_err());
        assert!(matches("[unordered]\n...\n[/unordered]\n", "").is_err());
    }

    #[test]
    fn a_literal_line_replaces_pids() {
        assert_eq!(
            literal("[pid 7 thread-1] b [pid 9]"),
            "[pid [..] thread-1] b [pid [..]]"
        );
        assert_eq!(literal("no pid"), "no pid");
    }

    #[test]
    fn bless_keeps_matching_patterns_and_takes_new_lines() {
        let expected = "a\n[unordered]\nx [..]\ny\n[/unordered]\ngone\ntook [..] s\n";
        let runs = [
            "a\ny\nx 1\ntook 1 s\n[pid 4] new\n",
            "a\nx 2\ny\ntook 2 s\n[pid 5] new\n",
        ];
        assert_eq!(
            bless(expected, &runs),
            Ok("a\n[unordered]\nx [..]\ny\n[/unordered]\ntook [..] s\n[pid [..]] new\n".into())
        );
    }

    #[test]
    fn bless_names_the_lines_where_runs_differ() {
        let err = bless("a\n", &["a\nb 1\n", "a\nb 2\n"]).unwrap_err();
        assert!(err.contains("- b 1") && err.contains("+ b 2"), "{err}");
    }

    #[test]
    fn diff_marks_the_changed_line() {
        let d = diff("[pid [..]] a\n[pid [..]] b\n", "[pid 1] a\n[pid 1] c\n");
        assert_eq!(d, "  [pid 1] a\n+ [pid 1] c\n- [pid [..]] b\n");
    }
}
