"""Process start+join in Python, fork and spawn, for `cargo xtask bench`.

Prints `bench<TAB>id<TAB>python<TAB>median<TAB>unit` lines. BENCH_QUICK=1: fewer repeats.
"""
import multiprocessing as mp
import os
import statistics
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


def start_join(ctx):
    p = ctx.Process(target=noop)
    p.start()
    p.join()


if __name__ == "__main__":
    n = 50 if os.environ.get("BENCH_QUICK") else 300
    fork, spawn = mp.get_context("fork"), mp.get_context("spawn")
    print(f"bench\tprocess.fork\tpython\t{median(n, lambda: start_join(fork)) * 1e6:.3f}\tus")
    print(f"bench\tprocess.spawn\tpython\t{median(n // 10, lambda: start_join(spawn)) * 1e3:.3f}\tms")
