//! Checks that keep the demo crates alike and each one a template that stands alone: run by
//! `cargo test -p xtask` (and so by `cargo test --workspace`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

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
        // rust-version is each crate's own: see `rust_version_is_what_the_dependencies_need`.
        for key in ["edition", "license"] {
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
/// drift apart: each copy equals the first crate's. Those every crate has are required.
const SHARED: &[(&str, bool)] = &[
    ("src/demo.rs", true),
    ("tests/conventions.rs", true),
    ("tests/support/mod.rs", true),
    ("LICENSE-MIT", true),
    ("LICENSE-APACHE", true),
    ("src/process.rs", false),
    ("src/spawn.rs", false),
    ("src/forkserver.rs", false),
    ("src/fds.rs", false),
    ("src/timeline.rs", false),
    ("src/robust.rs", false),
    ("src/panic_message.rs", false),
    ("examples/support/mod.rs", false),
];

/// The start-method files need one another (spawn.rs names the forkserver and fds.rs), and
/// process.rs starts what they make: a crate takes all of them or none of the first three.
const START_METHODS: [&str; 3] = ["src/spawn.rs", "src/forkserver.rs", "src/fds.rs"];

#[test]
fn start_method_files_come_together() {
    for name in demos::discover().unwrap() {
        let dir = root().join(&name);
        let has: Vec<bool> = START_METHODS
            .iter()
            .map(|f| dir.join(f).is_file())
            .collect();
        assert!(
            has.iter().all(|&h| h == has[0]),
            "{name} has some of {START_METHODS:?} but not all: copy the three together"
        );
        if has[0] {
            assert!(
                dir.join("src/process.rs").is_file(),
                "{name} has the start-method files but not src/process.rs"
            );
        }
    }
}

#[test]
fn shared_files_are_identical_in_every_demo() {
    let names = demos::discover().unwrap();
    for &(file, everywhere) in SHARED {
        let copies: Vec<(&String, String)> = names
            .iter()
            .filter_map(|n| Some((n, std::fs::read_to_string(root().join(n).join(file)).ok()?)))
            .collect();
        if everywhere {
            assert_eq!(copies.len(), names.len(), "every demo crate has {file}");
        }
        for (name, copy) in &copies[1..] {
            assert!(
                copy == &copies[0].1,
                "{name}/{file} differs from {}/{file}: copy it again",
                copies[0].0
            );
        }
        // A shared source file says so, so that whoever edits one copy knows of the others.
        if file.ends_with(".rs") && !copies.is_empty() {
            assert!(
                copies[0].1.contains("This file is the same in"),
                "{file} does not say in its header that it is shared"
            );
        }
    }
}

/// The licence texts at the root are the ones each crate carries.
#[test]
fn every_crate_carries_the_licences_of_the_root() {
    for file in ["LICENSE-MIT", "LICENSE-APACHE"] {
        let root_copy = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(root_copy.len() > 1000, "{file} is not a licence text");
        for name in demos::discover().unwrap() {
            let copy = std::fs::read_to_string(root().join(&name).join(file)).unwrap();
            assert!(copy == root_copy, "{name}/{file} differs from the root's");
        }
    }
    let apache = std::fs::read_to_string(root().join("LICENSE-APACHE")).unwrap();
    assert!(apache.contains("Apache License\n                        Version 2.0, January 2004"));
    let mit = std::fs::read_to_string(root().join("LICENSE-MIT")).unwrap();
    assert!(mit.starts_with("MIT License\n"));
}

#[test]
fn every_demo_has_its_files_and_a_row_in_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for name in demos::discover().unwrap() {
        for file in [
            "README.md",
            "expected-output.txt",
            "src/lib.rs",
            "src/main.rs",
            "tests/support/mod.rs",
            "LICENSE-MIT",
            "LICENSE-APACHE",
        ] {
            assert!(
                root().join(&name).join(file).is_file(),
                "{name}/{file} is missing"
            );
        }
        assert!(
            readme.contains(&format!("cargo run -p {name}`")),
            "README.md has no row for {name}"
        );
        let lib = std::fs::read_to_string(root().join(&name).join("src/lib.rs")).unwrap();
        assert!(
            lib.contains("#![warn(missing_docs)]"),
            "{name}/src/lib.rs does not warn of missing docs"
        );
        // The demo's conventions belong to the binary, not to the library's API.
        assert!(
            !lib.contains("mod demo;"),
            "{name}/src/lib.rs has the demo's conventions"
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

/// Every Rust file of a demo crate, with its path.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() && entry.file_name() != "target" {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Tests, benches, examples and doctests use the library as a user would: no file of a demo
/// crate reaches another one with `#[path]`, and no source file of the pool is over 500 lines
/// (but the shared files, which are the same in other crates and split by their own roles).
#[test]
fn demo_crates_use_their_library_and_no_file_is_too_long() {
    for name in demos::discover().unwrap() {
        for file in rust_files(&root().join(&name)) {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                !text.contains(&["#[path", " = "].concat()),
                "{} reaches another file with #[path]",
                file.display()
            );
            let shared = SHARED
                .iter()
                .any(|(f, _)| file == root().join(&name).join(f));
            if file.starts_with(root().join("demo-pool/src")) && !shared {
                let lines = text.lines().count();
                assert!(lines <= 500, "{} has {lines} lines", file.display());
            }
        }
    }
}

/// Cargo warns when two targets of a workspace would write the same file (and says it may
/// become an error): every example's name is unique in the workspace.
#[test]
fn example_names_are_unique_in_the_workspace() {
    let mut seen: HashMap<String, String> = HashMap::new();
    for name in demos::discover().unwrap() {
        let dir = root().join(&name).join("examples");
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Some(example) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            if let Some(other) = seen.insert(example.to_string(), name.clone()) {
                panic!("{name} and {other} both have an example named {example}");
            }
        }
    }
}

/// Each bench example says which rows of `cargo xtask bench` it measures, and no two claim
/// the same row.
#[test]
fn every_bench_example_declares_its_rows() {
    let mut seen = BTreeSet::new();
    for name in demos::discover().unwrap() {
        let short = name.trim_start_matches("demo-");
        let path = root()
            .join(&name)
            .join(format!("examples/bench_{short}.rs"));
        let source =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let rows = crate::bench::declared(&source);
        assert!(!rows.is_empty(), "{} declares no row", path.display());
        for (id, _) in rows {
            assert!(seen.insert(id.clone()), "two bench examples declare {id}");
        }
    }
}

/// A `major.minor[.patch]` version as numbers, for comparing.
fn parse_version(v: &str) -> Vec<u64> {
    v.split('.').map(|n| n.parse().unwrap()).collect()
}

/// The oldest Rust that edition 2024 compiles on.
const EDITION_2024: &str = "1.85";

/// A crate's `rust-version` is the true minimum: the newest `rust-version` among the locked
/// dependencies it builds (normal and build dependencies, transitively, and its own
/// dev-dependencies with theirs), and never less than its edition needs. Its own code is held
/// to it by clippy's `incompatible_msrv` lint (`-D warnings` in CI), which rejects any use of
/// the standard library newer than the declared version.
#[test]
fn rust_version_is_what_the_dependencies_need() {
    let output = demos::cargo()
        .current_dir(root())
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages: HashMap<&str, &serde_json::Value> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    // Each package's dependencies, with the kinds they are used as (null: normal).
    type Kinds<'a> = Vec<Option<&'a str>>;
    let mut deps: HashMap<&str, Vec<(&str, Kinds)>> = HashMap::new();
    for node in metadata["resolve"]["nodes"].as_array().unwrap() {
        let list = node["deps"].as_array().unwrap().iter().map(|d| {
            let kinds = d["dep_kinds"].as_array().unwrap();
            let kinds = kinds.iter().map(|k| k["kind"].as_str()).collect();
            (d["pkg"].as_str().unwrap(), kinds)
        });
        deps.insert(node["id"].as_str().unwrap(), list.collect());
    }
    let members = metadata["workspace_members"].as_array().unwrap();
    let mut wrong = Vec::new();
    for member in members.iter().map(|m| m.as_str().unwrap()) {
        let package = packages[member];
        let name = package["name"].as_str().unwrap();
        // Every package it builds: its normal, build and dev dependencies, then theirs
        // without their dev-dependencies, which are never built for it.
        let mut built = BTreeSet::new();
        let mut todo: Vec<&str> = deps[member].iter().map(|(id, _)| *id).collect();
        while let Some(id) = todo.pop() {
            if built.insert(id) {
                let used = deps[id]
                    .iter()
                    .filter(|(_, kinds)| kinds.iter().any(|k| *k != Some("dev")));
                todo.extend(used.map(|(id, _)| *id));
            }
        }
        let needs = built
            .iter()
            .filter_map(|id| {
                let v = packages[id]["rust_version"].as_str()?;
                Some((parse_version(v), packages[id]["name"].as_str().unwrap(), v))
            })
            .chain([(parse_version(EDITION_2024), "edition 2024", EDITION_2024)])
            .max()
            .unwrap();
        let declared = package["rust_version"].as_str().unwrap_or("none");
        let mut want = needs.0.clone();
        want.resize(3, 0);
        let mut have = parse_version(declared);
        have.resize(3, 0);
        if have != want {
            wrong.push(format!(
                "{name} says rust-version {declared}, but needs {} ({})",
                needs.2, needs.1
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The quick half of the copy-out check (`cargo xtask copy-out` is the whole one, in CI): a
/// crate copied out alone, as the README tells users, resolves its dependencies by itself
/// (here offline, with the workspace's lock file as the registry's cache allows), and none of
/// its files points outside it.
#[test]
fn every_demo_stands_alone_when_copied_out() {
    let out = std::env::temp_dir().join(format!("xtask-copy-out-{}", std::process::id()));
    for name in demos::discover().unwrap() {
        let dir = out.join(&name);
        crate::copy_out::copy_dir(&root().join(&name), &dir).unwrap();
        std::fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        // Only this machine's platform: a fresh machine's cache holds what a build here needs,
        // not the dependencies of other targets (`cargo fetch` would get those).
        let metadata = demos::cargo()
            .current_dir(&dir)
            .args(["metadata", "--offline", "--format-version", "1"])
            .args(["--filter-platform", &host()])
            .output()
            .unwrap();
        assert!(
            metadata.status.success(),
            "{name} does not resolve alone in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&metadata.stderr)
        );
        for file in rust_files(&dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            for outside in ["\"../../", "CARGO_WORKSPACE_DIR"] {
                assert!(
                    !text.contains(outside),
                    "{} reaches outside its crate ({outside})",
                    file.display()
                );
            }
        }
    }
    std::fs::remove_dir_all(&out).unwrap();
}

/// The platform this machine builds for, as `rustc -vV` names it.
fn host() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = std::process::Command::new(rustc)
        .arg("-vV")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let host = text.lines().find_map(|l| l.strip_prefix("host: "));
    host.expect("rustc -vV names the host").to_string()
}
