//! The expected-output format of `expected-output.txt`:
//!
//! - a line matches one output line literally, except that `[..]` matches any text within it;
//! - a line `...` matches any number of lines, none included;
//! - the lines between `[unordered]` and `[/unordered]` match as many output lines, in any
//!   order, each pattern once.

enum Item<'a> {
    Line(&'a str),
    AnyLines,
    Unordered(Vec<&'a str>),
}

fn parse(expected: &str) -> Result<Vec<Item<'_>>, String> {
    let mut items = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for (n, line) in expected.lines().enumerate() {
        match (line, &mut block) {
            ("[unordered]", None) => block = Some(Vec::new()),
            ("[/unordered]", Some(_)) => items.push(Item::Unordered(block.take().unwrap())),
            ("[unordered]" | "...", Some(_)) | ("[/unordered]", None) => {
                return Err(format!("line {}: {line:?} is not allowed here", n + 1));
            }
            ("...", None) => items.push(Item::AnyLines),
            (_, Some(lines)) => lines.push(line),
            (_, None) => items.push(Item::Line(line)),
        }
    }
    if block.is_some() {
        return Err("an [unordered] block is not closed".into());
    }
    Ok(items)
}

/// Whether `actual` matches the pattern `pattern`, in which `[..]` stands for any text.
pub fn line_matches(pattern: &str, actual: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap();
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether the output `actual` matches the expected-output file's text `expected`.
pub fn matches(expected: &str, actual: &str) -> Result<bool, String> {
    let items = parse(expected)?;
    let lines: Vec<&str> = actual.lines().collect();
    Ok(match_items(&items, &lines))
}

fn match_items(items: &[Item], lines: &[&str]) -> bool {
    let Some((item, rest)) = items.split_first() else {
        return lines.is_empty();
    };
    match item {
        Item::Line(pattern) => {
            lines.first().is_some_and(|l| line_matches(pattern, l))
                && match_items(rest, &lines[1..])
        }
        Item::AnyLines => (0..=lines.len()).any(|skip| match_items(rest, &lines[skip..])),
        Item::Unordered(patterns) => {
            lines.len() >= patterns.len()
                && match_any_order(patterns, &lines[..patterns.len()])
                && match_items(rest, &lines[patterns.len()..])
        }
    }
}

/// A perfect matching between patterns and lines (augmenting paths: a pattern that could
/// match several lines must not take the one another pattern needs).
fn match_any_order(patterns: &[&str], lines: &[&str]) -> bool {
    let mut owner: Vec<Option<usize>> = vec![None; lines.len()];
    fn place(
        p: usize,
        patterns: &[&str],
        lines: &[&str],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for l in 0..lines.len() {
            if seen[l] || !line_matches(patterns[p], lines[l]) {
                continue;
            }
            seen[l] = true;
            if owner[l].is_none_or(|q| place(q, patterns, lines, owner, seen)) {
                owner[l] = Some(p);
                return true;
            }
        }
        false
    }
    (0..patterns.len()).all(|p| {
        place(
            p,
            patterns,
            lines,
            &mut owner,
            &mut vec![false; lines.len()],
        )
    })
}

/// A line diff for a failed match: `-` for an expected line that is not there, `+` for an
/// output line that was not expected, and two spaces for lines that agree.
pub fn diff(expected: &str, actual: &str) -> String {
    let want: Vec<&str> = expected.lines().collect();
    let got: Vec<&str> = actual.lines().collect();
    // Longest common subsequence, where a pattern line and an output line agree if they match.
    // Block markers and `...` match no line of their own: they are shown as context.
    let marker = |w: &str| matches!(w, "..." | "[unordered]" | "[/unordered]");
    let agree = |w: &str, g: &str| !marker(w) && line_matches(w, g);
    let mut table = vec![vec![0usize; got.len() + 1]; want.len() + 1];
    for i in (0..want.len()).rev() {
        for j in (0..got.len()).rev() {
            table[i][j] = if marker(want[i]) {
                table[i + 1][j]
            } else if agree(want[i], got[j]) {
                table[i + 1][j + 1] + 1
            } else {
                table[i + 1][j].max(table[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < want.len() || j < got.len() {
        if i < want.len() && marker(want[i]) {
            out += &format!("  {}\n", want[i]);
            i += 1;
        } else if i < want.len() && j < got.len() && agree(want[i], got[j]) {
            out += &format!("  {}\n", got[j]);
            (i, j) = (i + 1, j + 1);
        } else if j < got.len() && (i == want.len() || table[i][j + 1] >= table[i + 1][j]) {
            out += &format!("+ {}\n", got[j]);
            j += 1;
        } else {
            out += &format!("- {}\n", want[i]);
            i += 1;
        }
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
    fn diff_marks_the_changed_line() {
        let d = diff("[pid [..]] a\n[pid [..]] b\n", "[pid 1] a\n[pid 1] c\n");
        assert_eq!(d, "  [pid 1] a\n+ [pid 1] c\n- [pid [..]] b\n");
    }
}
