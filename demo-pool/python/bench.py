"""Python's multiprocessing.Pool, measured in the same shape as examples/bench_pool.rs.

Prints `bench<TAB>ID<TAB>python<TAB>VALUE<TAB>UNIT` lines; BENCH_QUICK=1 for a short run.
Pool(4) create+close+join is measured under each start method (get_context(method)), or under
the one that `--start-method fork|spawn|forkserver` names; `--create-join` measures only that,
under each method (`cargo xtask bench` runs it in turns with the Rust bench's `--create-join`).
Run with: python3 demo-pool/python/bench.py [--start-method spawn | --create-join]
"""
import multiprocessing
import os
import statistics
import sys
import time

METHODS = ("fork", "spawn", "forkserver")


def noop(x):
    return x


def current_cpu():
    """The CPU this process runs on now (field 39 of /proc/self/stat)."""
    with open("/proc/self/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[36])


def median(repeats, measure):
    return statistics.median(measure() for _ in range(repeats))


def report(bench_id, value, unit):
    print(f"bench\t{bench_id}\tpython\t{value:.3f}\t{unit}", flush=True)


def methods(argv):
    """The start methods to measure, and whether create+close+join alone: all and everything,
    the one --start-method names, or all with --create-join (exit 2 if bad)."""
    if not argv:
        return METHODS, False
    if argv == ["--create-join"]:
        return METHODS, True
    if len(argv) == 2 and argv[0] == "--start-method" and argv[1] in METHODS:
        return (argv[1],), True
    print(
        "bench.py: usage: bench.py [--start-method fork|spawn|forkserver | --create-join]",
        file=sys.stderr,
    )
    sys.exit(2)


def main():
    measured, create_join_only = methods(sys.argv[1:])
    quick = os.environ.get("BENCH_QUICK") == "1"
    repeats = 3 if quick else 7
    tasks = 5_000 if quick else 20_000
    items = 200_000 if quick else 1_000_000

    # First, while this process is small, as in examples/bench_pool.rs.
    for method in measured:
        ctx = multiprocessing.get_context(method)

        def create_join():
            start = time.perf_counter()
            pool = ctx.Pool(4)
            pool.close()
            pool.join()
            return (time.perf_counter() - start) * 1e3

        bench_id = "pool.create_join" if method == "fork" else f"pool.create_join.{method}"
        report(bench_id, median(repeats * 3, create_join), "ms")

    if create_join_only:
        return
    with multiprocessing.get_context("fork").Pool(4) as pool:
        def apply_async():
            start = time.perf_counter()
            results = [pool.apply_async(noop, (i,)) for i in range(tasks)]
            for r in results:
                r.get()
            return tasks / (time.perf_counter() - start)

        report("pool.apply_async", median(repeats, apply_async), "tasks/s")

        def map_items():
            start = time.perf_counter()
            assert len(pool.map(noop, range(items))) == items
            return items / (time.perf_counter() - start)

        report("pool.map", median(repeats, map_items), "items/s")

        def imap_unordered():
            start = time.perf_counter()
            assert sum(1 for _ in pool.imap_unordered(noop, range(tasks))) == tasks
            return tasks / (time.perf_counter() - start)

        report("pool.imap_unordered", median(repeats, imap_unordered), "items/s")

    # Last, as in examples/bench_pool.rs: one apply at a time, with this process and the pool
    # it starts now held to the CPU it runs on, so that a round trip measures the mechanism
    # rather than where the scheduler put the processes.
    os.sched_setaffinity(0, {current_cpu()})
    with multiprocessing.get_context("fork").Pool(4) as pool:
        def apply():
            round_trips = tasks // 4
            start = time.perf_counter()
            for i in range(round_trips):
                pool.apply(noop, (i,))
            return (time.perf_counter() - start) * 1e6 / round_trips

        report("pool.apply", median(repeats, apply), "us")


if __name__ == "__main__":
    main()
