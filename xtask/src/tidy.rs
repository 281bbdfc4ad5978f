//! Checks that keep the demo crates alike and each one copyable on its own.

use std::collections::BTreeMap;
use std::path::Path;

use crate::demos::{self, root};

/// A manifest as `section -> key -> value`, enough for the checks below.
fn manifest(name: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let text = std::fs::read_to_string(root().join(name).join("Cargo.toml")).unwrap();
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, value)) = line.split_once('=') {
            sections
                .entry(section.clone())
                .or_default()
                .insert(key.trim().into(), value.trim().into());
        }
    }
    sections
}

/// The version a dependency line asks for: `"1"` or `{ version = "1", … }`.
fn version(value: &str) -> &str {
    let value = value
        .split("version")
        .nth(1)
        .map_or(value, |v| v.trim_start_matches([' ', '=']));
    value.split('"').nth(1).unwrap_or(value)
}

#[test]
fn demo_manifests_agree_and_stand_alone() {
    let names = demos::discover().unwrap();
    let first = manifest(&names[0]);
    let mut versions: BTreeMap<String, (String, String)> = BTreeMap::new();
    for name in &names {
        let m = manifest(name);
        for key in ["edition", "rust-version", "license"] {
            assert_eq!(
                m["package"].get(key),
                first["package"].get(key),
                "{name}: package.{key}"
            );
        }
        for (section, entries) in m.iter().filter(|(s, _)| s.starts_with("lints")) {
            assert_eq!(
                Some(entries),
                first.get(section),
                "{name}: [{section}] differs from {}",
                names[0]
            );
        }
        assert_eq!(
            m.keys().filter(|s| s.starts_with("lints")).count(),
            first.keys().filter(|s| s.starts_with("lints")).count()
        );
        for section in ["dependencies", "dev-dependencies"] {
            for (dep, value) in m.get(section).into_iter().flatten() {
                assert!(
                    !value.contains("workspace") && !value.contains("path"),
                    "{name}: {dep} must be a plain registry dependency"
                );
                let v = version(value).to_string();
                let (seen, seen_in) = versions
                    .entry(dep.clone())
                    .or_insert((v.clone(), name.clone()));
                assert_eq!(&v, seen, "{name} asks for {dep} {v}, {seen_in} for {seen}");
            }
        }
    }
}

/// Files that stand in several crates, so that each crate can be copied out alone, must not
/// drift apart: each copy equals the first crate's (demo.rs and its test stand in every crate).
#[test]
fn shared_files_are_identical_in_every_demo() {
    let names = demos::discover().unwrap();
    for file in [
        "src/demo.rs",
        "tests/conventions.rs",
        "src/process.rs",
        "src/spawn.rs",
        "src/forkserver.rs",
        "src/fds.rs",
        "src/timeline.rs",
        "src/robust.rs",
        "examples/support/chaos.rs",
    ] {
        let copies: Vec<(&String, String)> = names
            .iter()
            .filter_map(|n| Some((n, std::fs::read_to_string(root().join(n).join(file)).ok()?)))
            .collect();
        if file == "src/demo.rs" || file == "tests/conventions.rs" {
            assert_eq!(copies.len(), names.len(), "every demo crate has {file}");
        }
        for (name, copy) in &copies[1..] {
            assert!(
                copy == &copies[0].1,
                "{name}/{file} differs from {}/{file}: copy it again",
                copies[0].0
            );
        }
    }
}

#[test]
fn every_demo_has_its_files_and_a_row_in_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for name in demos::discover().unwrap() {
        for file in ["README.md", "expected-output.txt", "src/main.rs"] {
            assert!(
                root().join(&name).join(file).is_file(),
                "{name}/{file} is missing"
            );
        }
        assert!(
            readme.contains(&format!("cargo run -p {name}")),
            "README.md has no row for {name}"
        );
    }
}

/// Each demo's `main.rs` is the note's program in Rust and reads as one story: at most 120
/// lines. What goes beyond the note lives in a module of its own.
#[test]
fn every_main_rs_is_at_most_120_lines() {
    for name in demos::discover().unwrap() {
        let main = std::fs::read_to_string(root().join(&name).join("src/main.rs")).unwrap();
        let lines = main.lines().count();
        assert!(
            lines <= 120,
            "{name}/src/main.rs has {lines} lines, over 120"
        );
    }
}

/// `cp -r demo-x elsewhere && cargo build` works: each crate is copied alone, with the
/// workspace's Cargo.lock, into an empty folder and built offline there.
#[test]
fn every_demo_builds_when_copied_out() {
    let out = std::env::temp_dir().join(format!("copy-out-{}", std::process::id()));
    for name in demos::discover().unwrap() {
        let dir = out.join(&name);
        copy_dir(&root().join(&name), &dir);
        std::fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        let status = demos::cargo()
            .current_dir(&dir)
            .args(["build", "--offline", "--quiet"])
            .env("CARGO_TARGET_DIR", root().join("target").join("copy-out"))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "{name} does not build alone in {}",
            dir.display()
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (path, name) = (entry.path(), entry.file_name());
        if path.is_dir() {
            if name != "target" {
                copy_dir(&path, &to.join(name));
            }
        } else {
            std::fs::copy(&path, to.join(name)).unwrap();
        }
    }
}
