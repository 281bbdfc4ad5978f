"""Process start+join in Python under each start method, for `cargo xtask bench`.

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
    fork, spawn, forkserver = (mp.get_context(m) for m in ("fork", "spawn", "forkserver"))
    print(f"bench\tprocess.fork\tpython\t{median(n, lambda: start_join(fork)) * 1e6:.3f}\tus")
    print(f"bench\tprocess.spawn\tpython\t{median(n // 10, lambda: start_join(spawn)) * 1e3:.3f}\tms")
    # The first start also starts the server: measured apart from the rest, as in ours.
    start_join(forkserver)
    print(f"bench\tprocess.forkserver\tpython\t{median(n, lambda: start_join(forkserver)) * 1e6:.3f}\tus")
