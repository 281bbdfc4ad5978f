"""multiprocessing.dummy.Pool(4).map over no-op items, for `cargo xtask bench`.

Prints `bench<TAB>id<TAB>python<TAB>median<TAB>unit` lines. BENCH_QUICK=1: fewer repeats.
"""
import os
import statistics
import time
from multiprocessing.dummy import Pool as ThreadPool


def noop(x):
    return x


def median_rate(n, items, f):
    rates = []
    for _ in range(n):
        start = time.perf_counter()
        f()
        rates.append(items / (time.perf_counter() - start))
    return statistics.median(rates)


if __name__ == "__main__":
    repeats, items = (5, 100_000) if os.environ.get("BENCH_QUICK") else (21, 1_000_000)
    with ThreadPool(4) as pool:
        rate = median_rate(repeats, items, lambda: pool.map(noop, range(items)))
    print(f"bench\tthreadpool.map\tpython\t{rate:.0f}\titems/s")
