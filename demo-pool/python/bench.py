"""Python's multiprocessing.Pool, measured in the same shape as examples/bench.rs.

Prints `bench<TAB>ID<TAB>python<TAB>VALUE<TAB>UNIT` lines; BENCH_QUICK=1 for a short run.
Run with: python3 demo-pool/python/bench.py
"""
import os
import statistics
import time
from multiprocessing import Pool


def noop(x):
    return x


def median(repeats, measure):
    return statistics.median(measure() for _ in range(repeats))


def report(bench_id, value, unit):
    print(f"bench\t{bench_id}\tpython\t{value:.3f}\t{unit}", flush=True)


def main():
    quick = os.environ.get("BENCH_QUICK") == "1"
    repeats = 3 if quick else 7
    tasks = 5_000 if quick else 20_000
    items = 200_000 if quick else 1_000_000

    # First, while this process is small, as in examples/bench.rs.
    def create_join():
        start = time.perf_counter()
        pool = Pool(4)
        pool.close()
        pool.join()
        return (time.perf_counter() - start) * 1e3

    report("pool.create_join", median(repeats * 3, create_join), "ms")

    with Pool(4) as pool:
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


if __name__ == "__main__":
    main()
