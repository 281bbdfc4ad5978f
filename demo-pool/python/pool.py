"""进程池 (the process pool): the note's Pool example, then map, a task that raises, terminate.

Prints the same lines as `cargo run -p demo-pool`. DEMO_TIME_SCALE multiplies every sleep.
Run with: python3 demo-pool/python/pool.py
"""
import os
import random
import sys
import time
from multiprocessing.pool import Pool


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


def main():
    say("parent starts")
    p = Pool(4)
    results = [p.apply_async(run, args=(i,)) for i in range(10)]
    p.close()
    p.join()
    say("parent ends")
    p.terminate()
    # apply_async drops a task's exception unless someone asks: ask every result.
    failed = [f"task {i} failed: {r._value!r}" for i, r in enumerate(results) if not r.successful()]

    say("the rest of Pool, on Pool(2):")
    pool = Pool(2)
    say(f"map(square, range(10)) = {pool.map(square, range(10))}")
    try:
        pool.apply_async(crash, (None,)).get()
        failed.append("crash should have raised")
    except RuntimeError as e:
        say(f"apply_async(crash).get() failed: {e}")
    say(f"apply(square, 7) = {pool.apply(square, (7,))}, the pool goes on")

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
