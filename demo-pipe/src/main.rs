//! Pipe: Python's `multiprocessing.Pipe`, two connected ends that carry typed values between
//! processes, both ways.
//!
//! The note's Python:
//!
//! ```python
//! from multiprocessing import Process, Pipe
//! def f(conn):
//!     conn.send([42, None, 'hello'])
//!     conn.close()
//!
//! if __name__ == '__main__':
//!     parent_conn, child_conn = Pipe()
//!     p = Process(target=f, args=(child_conn,))
//!     p.start()
//!     print(parent_conn.recv())   # prints "[42, None, 'hello']"
//!     p.join()
//! ```
//!
//! Run with: `cargo run -p demo-pipe`

mod demo;

use std::io;
use std::process::ExitCode;

use demo::{Args, say};
use demo_pipe::pipe::{self, Connection, pipe, pipe_duplex};
use demo_pipe::value::Value;
use demo_pipe::{Process, run_if_spawned};

const USAGE: &str = "\
Usage: demo-pipe [--help]

Runs the note's Pipe example: a child sends [42, None, 'hello'] and the parent prints it.
Then the same connection used both ways (duplex), the end-of-file a closed end gives, and
poll and a one-way pipe. Every line starts with the pid that printed it.

Environment: DEMO_TIME_SCALE multiplies every sleep (default 1).
";

fn hello() -> Value {
    Value::List(vec![42.into(), Value::None, "hello".into()])
}

fn f(mut conn: Connection) {
    conn.send(&hello()).unwrap();
    conn.close();
}

/// Duplex: the child sends, then waits for the parent's answer on the same connection.
fn ask(mut conn: Connection) {
    say!("child sends {}", hello());
    conn.send(&hello()).unwrap();
    let reply: Value = conn.recv().unwrap();
    say!("child got the reply {reply}");
}

fn main() -> ExitCode {
    // Python's `if __name__ == "__main__":`. A child started by spawn or forkserver is this
    // program run again: here it runs its target instead of the rest of main.
    run_if_spawned();
    Args::parse(USAGE).finish();
    demo::exit_code(try_main())
}

fn try_main() -> io::Result<()> {
    let (mut parent_conn, child_conn) = pipe()?;
    let mut p = Process::new(f, child_conn);
    p.start()?;
    say!("started {} with pid {}", p.name(), p.pid().unwrap());
    // The value really crossed: the child encoded it, the parent decoded a new one.
    say!("{}", parent_conn.recv::<Value>()?);
    p.join()?;
    // Python raises EOFError here; Rust returns it, so the program decides what it means.
    match parent_conn.recv::<Value>() {
        Err(pipe::Error::Eof) => say!("recv() again: EOFError, the child closed its end"),
        other => say!("recv() again: unexpected {other:?}"),
    }

    say!("duplex: the same connection carries the answer back");
    let (mut parent_conn, child_conn) = pipe()?;
    let mut p = Process::new(ask, child_conn);
    p.start()?;
    let got: Value = parent_conn.recv()?;
    say!("parent got {got} and answers");
    parent_conn.send(&Value::from("thanks, 3 items"))?;
    p.join()?;

    say!("Pipe(duplex=False): the first end only receives, the second only sends");
    let (mut reader, mut writer) = pipe_duplex(false)?;
    let waited = reader.poll(demo::scaled(0.1))?;
    say!("poll(0.1) with nothing sent: {}", Value::Bool(waited));
    writer.send(&Value::Int(7))?;
    let ready = reader.poll(demo::scaled(0.1))?;
    say!(
        "poll(0.1) after a send: {}, recv() gives {}",
        Value::Bool(ready),
        reader.recv::<Value>()?
    );
    if let Err(e) = reader.send(&Value::Int(8)) {
        say!("reader.send(8): error: {e}");
    }
    Ok(())
}
