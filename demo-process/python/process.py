"""多进程: the note's multiprocessing.Process example under each start method, printing the same
lines as the Rust demo.

Run with: python3 demo-process/python/process.py
"""
import multiprocessing as mp
import os
import sys
import time


def say(text):
    # One write per line: print() writes the text and the newline apart, and another
    # process's line could come between them.
    sys.stdout.write(f"[pid {os.getpid()}] {text}\n")
    sys.stdout.flush()


def f(name):
    say(f"hello {name}")


def sleeper(seconds):
    time.sleep(seconds * SCALE)


def crash(_):
    raise RuntimeError("a target that panics")


def time_scale():
    value = os.environ.get("DEMO_TIME_SCALE", "1")
    try:
        scale = float(value)
    except ValueError:
        scale = -1.0
    if not scale > 0 or scale == float("inf"):
        print(f"process.py: DEMO_TIME_SCALE must be a number > 0, not {value!r}", file=sys.stderr)
        sys.exit(2)
    return scale


SCALE = time_scale()


HOW = {
    "fork": "the child is a copy of this process",
    "spawn": "the child runs this program again, told what to run by a socket",
    "forkserver": "a server, spawned once, forks the child",
}


def main():
    # One context per start method. A context's processes are named ForkProcess-1,
    # SpawnProcess-2, ForkServerProcess-3: one counter for all, as in the Rust demo.
    for method in ("fork", "spawn", "forkserver"):
        say(f"start method {method}: {HOW[method]}")
        p = mp.get_context(method).Process(target=f, args=("john",))
        p.start()
        say(f"started {p.name} with pid {p.pid}")
        p.join()
        say(f"joined {p.name}: exitcode {p.exitcode}")

    # Python 3.14 made forkserver the default on Linux; the note's runs used fork. (force:
    # starting a context's process has already fixed the default.)
    mp.set_start_method("fork", force=True)
    p = mp.Process(target=sleeper, args=(60.0,))
    p.start()
    p.join(0.5 * SCALE)
    say(f"{p.name} sleeps 60 s; after join_timeout(0.5 s), exitcode {p.exitcode}, is_alive {str(p.is_alive()).lower()}")
    p.terminate()
    p.join()
    say(f"terminate(): {p.name} exitcode {p.exitcode} (minus SIGTERM)")

    for method in ("fork", "spawn", "forkserver"):
        p = mp.get_context(method).Process(target=crash, args=((),))
        p.start()
        p.join()
        say(f"{p.name} panicked: exitcode {p.exitcode}, its message is on stderr")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        if sys.argv[1] in ("--help", "-h"):
            print("Usage: process.py [--help]")
            sys.exit(0)
        print(f"process.py: unknown flag {sys.argv[1]} (try --help)", file=sys.stderr)
        sys.exit(2)
    main()
