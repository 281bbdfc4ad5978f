"""Thread start+join in Python, for `cargo xtask bench`.

Prints `bench<TAB>id<TAB>python<TAB>median<TAB>unit` lines. BENCH_QUICK=1: fewer repeats.
"""
import os
import statistics
import threading
import time


def noop():
    pass


def median(n, f):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def start_join():
    t = threading.Thread(target=noop)
    t.start()
    t.join()


if __name__ == "__main__":
    n = 500 if os.environ.get("BENCH_QUICK") else 5000
    print(f"bench\tthread.start_join\tpython\t{median(n, start_join) * 1e6:.3f}\tus")
