"""Pipe: the note's multiprocessing.Pipe example, printing the same lines as the Rust demo.

Run with: python3 demo-pipe/python/pipe.py
"""
import multiprocessing as mp
import os
import sys


def say(text):
    # One write per line: print() writes the text and the newline apart, and another
    # process's line could come between them.
    sys.stdout.write(f"[pid {os.getpid()}] {text}\n")
    sys.stdout.flush()


def f(conn):
    conn.send([42, None, 'hello'])
    conn.close()


def ask(conn):
    say(f"child sends {[42, None, 'hello']}")
    conn.send([42, None, 'hello'])
    reply = conn.recv()
    say(f"child got the reply {reply!r}")


def time_scale():
    value = os.environ.get("DEMO_TIME_SCALE", "1")
    try:
        scale = float(value)
    except ValueError:
        scale = -1.0
    if not scale > 0 or scale == float("inf"):
        print(f"pipe.py: DEMO_TIME_SCALE must be a number > 0, not {value!r}", file=sys.stderr)
        sys.exit(2)
    return scale


SCALE = time_scale()


def main():
    # Python 3.14 made forkserver the default on Linux; the note's runs used fork.
    mp.set_start_method("fork")
    parent_conn, child_conn = mp.Pipe()
    p = mp.Process(target=f, args=(child_conn,))
    p.start()
    say(f"started {p.name} with pid {p.pid}")
    # The parent closes its copy of the child's end, or recv below would wait for ever
    # instead of raising EOFError. (The Rust Process drops it when it starts the child.)
    child_conn.close()
    say(parent_conn.recv())
    p.join()
    try:
        parent_conn.recv()
    except EOFError:
        say("recv() again: EOFError, the child closed its end")

    say("duplex: the same connection carries the answer back")
    parent_conn, child_conn = mp.Pipe()
    p = mp.Process(target=ask, args=(child_conn,))
    p.start()
    got = parent_conn.recv()
    say(f"parent got {got} and answers")
    parent_conn.send("thanks, 3 items")
    p.join()

    say("Pipe(duplex=False): the first end only receives, the second only sends")
    reader, writer = mp.Pipe(duplex=False)
    waited = reader.poll(0.1 * SCALE)
    say(f"poll(0.1) with nothing sent: {waited}")
    writer.send(7)
    ready = reader.poll(0.1 * SCALE)
    say(f"poll(0.1) after a send: {ready}, recv() gives {reader.recv()}")
    try:
        reader.send(8)
    except OSError as e:
        say(f"reader.send(8): error: {e}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        if sys.argv[1] in ("--help", "-h"):
            print("Usage: pipe.py [--help]")
            sys.exit(0)
        print(f"pipe.py: unknown flag {sys.argv[1]} (try --help)", file=sys.stderr)
        sys.exit(2)
    main()
