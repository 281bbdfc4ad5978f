//! `cargo xtask copy-out`: each demo crate copied out alone, as its README tells users
//! (`cp -r demo-pool ~/work/`, without the workspace's `Cargo.lock`), its dependencies resolved
//! afresh to the newest compatible versions, and `cargo test` run in the copy: a crate passes
//! when its own tests pass there.
//!
//! The copies go to a folder of their own under the system's temporary folder (a copy inside
//! the workspace's folder would be taken for a part of the workspace), and what they build to
//! `copy-out/` in the target directory cargo was given (`CARGO_TARGET_DIR`, or the workspace's
//! `target/`). Resolving needs the registry; CI has it.

use std::io;
use std::path::Path;
use std::time::Instant;

use crate::demos;

/// Copies, tests and reports each demo of `names`; prints `N passed, N failed`. True when
/// all passed.
pub fn copy_out(names: &[String]) -> Result<bool, String> {
    let dir = std::env::temp_dir().join(format!("xtask-copy-out-{}", std::process::id()));
    let target = demos::target_dir().join("copy-out");
    let (mut passed, mut failed) = (0, 0);
    for name in names {
        let copy = dir.join(name);
        copy_dir(&demos::root().join(name), &copy).map_err(|e| format!("{name}: {e}"))?;
        println!("{name}: cargo test in {}", copy.display());
        let started = Instant::now();
        let status = demos::cargo()
            .current_dir(&copy)
            .arg("test")
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        let took = started.elapsed().as_secs_f64();
        if status.success() {
            println!("{name} ... ok ({took:.0} s)");
            passed += 1;
        } else {
            println!(
                "{name} ... FAILED: cargo test {status} in {}",
                copy.display()
            );
            failed += 1;
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(failed == 0)
}

/// `cp -r from to`, as a user copies a crate: everything but a `target/` folder and a lock
/// file, which the user does not have.
pub fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (path, name) = (entry.path(), entry.file_name());
        if name == "target" || name == "Cargo.lock" {
            continue;
        }
        if path.is_dir() {
            copy_dir(&path, &to.join(name))?;
        } else {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    Ok(())
}
