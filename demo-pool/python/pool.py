"""进程池 (the process pool): the note's Pool example, then map, imap, starmap, a task that
raises, a worker killed in the middle of a task, a task that never ends, terminate.

Prints the same lines as `cargo run -p demo-pool`. DEMO_TIME_SCALE multiplies every sleep.
--start-method fork|spawn|forkserver starts the workers that way (get_context(method)).
Run with: python3 demo-pool/python/pool.py [--start-method spawn]
"""
import multiprocessing
import os
import random
import signal
import socket
import sys
import threading
import time


def time_scale():
    value = os.environ.get("DEMO_TIME_SCALE", "1")
    try:
        scale = float(value)
    except ValueError:
        scale = -1.0
    if not 0 < scale < float("inf"):
        print(f"pool.py: DEMO_TIME_SCALE must be a number > 0, not {value!r}", file=sys.stderr)
        sys.exit(2)
    return scale


SCALE = time_scale()


def start_method(argv):
    """The value of --start-method (or --start-method=VALUE); Python's default when not given.
    Anything else on the command line, or a bad value, is one line on stderr and exit code 2."""
    method, rest = None, list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--start-method" and rest and not rest[0].startswith("-"):
            method = rest.pop(0)
        elif arg.startswith("--start-method="):
            method = arg.split("=", 1)[1]
        else:
            print(f"pool.py: unexpected argument {arg!r} (--start-method fork|spawn|forkserver)",
                  file=sys.stderr)
            sys.exit(2)
    if method not in (None, "fork", "spawn", "forkserver"):
        print(f"pool.py: unknown start method {method!r} (fork, spawn or forkserver)",
              file=sys.stderr)
        sys.exit(2)
    return method


def say(message):
    # One write per line: print() writes the text and the newline apart, and another
    # process's line could come between them.
    sys.stdout.write(f"[pid {os.getpid()}] {message}\n")
    sys.stdout.flush()


def run(name):
    say(f"task {name} starts")
    start = time.time()
    # Python reseeds `random` in each forked worker, so the workers draw different numbers.
    time.sleep(random.choice([1, 2, 3, 4]) * SCALE)
    end = time.time()
    say(f"task {name} ends, took {end - start:.2f} s")


def square(x):
    return x * x


def crash(_):
    raise RuntimeError("a task that panics")


def wait_to_be_killed(parent):
    say("a task starts, tells the parent its pid, and waits")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as tell:
        tell.sendto(str(os.getpid()).encode(), parent)
    threading.Event().wait()  # Until SIGKILL.


def never_ends(parent):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as tell:
        tell.sendto(str(os.getpid()).encode(), parent)
    threading.Event().wait()  # For ever: nothing in Python's pool stops it.


def past_its_deadline(pool):
    """Python's pool has no deadline for a task. get(timeout) gives up waiting, but the task
    runs on, and its worker stays busy with it for ever (until terminate())."""
    timeout = 0.5 * SCALE
    say(f"a task that never ends, with apply_async(..).get(timeout={timeout}), beside 5 others")
    name = f"\0demo-pool-late-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as started:
        started.bind(name)
        started.settimeout(30)
        late = pool.apply_async(never_ends, (name,))
        others = [pool.apply_async(square, (x,)) for x in range(5)]
        pid = int(started.recv(16))
    try:
        late.get(timeout=timeout)
    except multiprocessing.TimeoutError:
        say(f"get(timeout={timeout}) of the task past its deadline: TimeoutError, and the task runs on")
    say(f"its worker: pid {pid} busy with it for ever")
    say(f"the other tasks completed: {[r.get(timeout=30) for r in others]}")


def kill_a_worker(pool, failed):
    """A worker killed in the middle of a task. Python's pool replaces the worker and runs the
    other tasks, but it never settles the killed task's result: its get() would wait for ever
    (bpo-22393), and so would join(). Here get() is asked with a timeout."""
    # The task tells the parent when it has started, on a socket in Linux's abstract namespace.
    name = f"\0demo-pool-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as started:
        started.bind(name)
        started.settimeout(30)
        workers = [w.pid for w in pool._pool]
        victim = pool.apply_async(wait_to_be_killed, (name,))
        others = [pool.apply_async(square, (x,)) for x in range(5)]
        pid = int(started.recv(16))
    say(f"kill -9 {pid}, the worker running that task")
    os.kill(pid, signal.SIGKILL)
    try:
        victim.get(timeout=1)
        failed.append("the killed task should not have returned")
    except multiprocessing.TimeoutError:
        say("get(timeout=1) of the killed task: TimeoutError; the result never comes (bpo-22393)")
    # The pool's handler thread looks for dead workers every 0.1 s; there is nothing to wait on.
    deadline = time.monotonic() + 10
    while not (new := [w.pid for w in pool._pool if w.pid not in workers]):
        if time.monotonic() > deadline:
            failed.append("the killed worker was not replaced")
            break
        time.sleep(0.01)
    else:
        say(f"a new worker took its place: pid {new[0]}")
    say(f"the other tasks completed: {[r.get(timeout=30) for r in others]}")


def main():
    ctx = multiprocessing.get_context(start_method(sys.argv[1:]))
    say("parent starts")
    p = ctx.Pool(4)
    results = [p.apply_async(run, args=(i,)) for i in range(10)]
    p.close()
    p.join()
    say("parent ends")
    p.terminate()
    # apply_async drops a task's exception unless someone asks: ask every result.
    failed = [f"task {i} failed: {r._value!r}" for i, r in enumerate(results) if not r.successful()]

    say("the rest of Pool, on Pool(2):")
    pool = ctx.Pool(2)
    say(f"map(square, range(10)) = {pool.map(square, range(10))}")
    # imap takes the whole input at once, in a thread of the pool, and gives results as they come.
    say(f"list(imap(square, range(10), chunksize=3)) = {list(pool.imap(square, range(10), chunksize=3))}")
    say(f"starmap(pow, [(2, 10), (3, 2), (10, 3)]) = {pool.starmap(pow, [(2, 10), (3, 2), (10, 3)])}")
    try:
        pool.apply_async(crash, (None,)).get()
        failed.append("crash should have raised")
    except RuntimeError as e:
        say(f"apply_async(crash).get() failed: {e}")
    say(f"apply(square, 7) = {pool.apply(square, (7,))}, the pool goes on")
    kill_a_worker(pool, failed)
    past_its_deadline(pool)

    # Unlike the Rust pool, these results are never settled: their get() would wait for ever.
    sleepers = [pool.apply_async(time.sleep, (60 * SCALE,)) for _ in range(2)]
    workers = list(pool._pool)
    pool.terminate()
    alive = sum(w.is_alive() for w in workers)
    say(f"terminate() with {len(sleepers)} tasks running: {len(workers)} workers stopped at once, {alive} alive")
    for f in failed:
        print(f"pool.py: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
