//! The spawn start method: the child is this program started again, which finds its target by
//! name, as Python's spawn re-imports `__main__` and looks the target up there.
//!
//! Fork can run any closure because the child is a copy of the parent's memory. A fresh
//! program shares nothing with its parent, so a spawned child needs two things it can rebuild
//! on its own: the target, named in a list that `main` hands to `run_if_spawned`, and the
//! arguments, sent as JSON on its command line (Python pickles them through a pipe).

use std::ffi::OsString;
use std::io;
use std::panic::AssertUnwindSafe;
use std::process::Command;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::process::Process;

/// The first argument of a spawned child, as in Python (`--multiprocessing-fork`).
const SPAWNED: &str = "--multiprocessing-fork";

/// A function that a spawned child can find by name. Make one with `target!(f)`.
pub struct Target<A> {
    pub name: &'static str,
    pub run: fn(A),
}

/// `target!(f)`: the function `f` with its own name, so that the name cannot be misspelt.
macro_rules! target {
    ($f:ident) => {
        $crate::spawn::Target {
            name: stringify!($f),
            run: $f,
        }
    };
}
pub(crate) use target;

/// A target of any argument type, as `run_if_spawned`'s list needs.
pub trait Spawnable {
    fn name(&self) -> &'static str;
    fn run_json(&self, args: &str) -> serde_json::Result<()>;
}

impl<A: DeserializeOwned> Spawnable for Target<A> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn run_json(&self, args: &str) -> serde_json::Result<()> {
        (self.run)(serde_json::from_str(args)?);
        Ok(())
    }
}

impl Process {
    /// Python's `get_context('spawn').Process(target=f, args=(x,))`. The target must be in
    /// the list that `main` gives `run_if_spawned`.
    pub fn spawn<A: Serialize>(target: Target<A>, args: &A) -> io::Result<Process> {
        let mut command = Command::new(std::env::current_exe()?);
        command.args([SPAWNED, target.name, &serde_json::to_string(args)?]);
        Ok(Process::command(command))
    }
}

/// Call first thing in `main`. In a spawned child it runs the named target and exits
/// (0, or 1 if the target panicked); in any other run it returns at once.
pub fn run_if_spawned(targets: &[&dyn Spawnable]) {
    // Arguments that are not UTF-8 are not a spawned child's: `Args::parse` refuses them.
    let args = std::env::args_os().skip(1).map(OsString::into_string);
    let Ok(args) = args.collect::<Result<Vec<String>, _>>() else {
        return;
    };
    let [flag, name, json] = args.as_slice() else {
        return;
    };
    if flag != SPAWNED {
        return;
    }
    let Some(target) = targets.iter().find(|t| t.name() == name) else {
        eprintln!("spawned child: no target named {name:?} in run_if_spawned's list");
        std::process::exit(1);
    };
    let code = match std::panic::catch_unwind(AssertUnwindSafe(|| target.run_json(json))) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("spawned child: bad arguments for {name}: {e}");
            1
        }
        Err(_) => 1,
    };
    std::process::exit(code);
}
