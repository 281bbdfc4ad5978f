"""The Python side of demo-lock's measurements: multiprocessing.Lock.

- lock.uncontended: ns per acquire()+release() of a multiprocessing.Lock, one process.
- lock.4x10000: ms from the first start() to the last join() of 4 processes (fork) that
  each add 1 to a shared counter 10,000 times under the lock.

Prints bench<TAB>ID<TAB>python<TAB>VALUE<TAB>UNIT lines, medians over repeats;
BENCH_QUICK=1 for fewer repeats. Run with: python3 demo-lock/python/bench.py
"""

import multiprocessing as mp
import os
import statistics
import time

QUICK = os.environ.get("BENCH_QUICK") == "1"


def uncontended(lock, iters):
    acquire, release = lock.acquire, lock.release
    start = time.perf_counter()
    for _ in range(iters):
        acquire()
        release()
    return (time.perf_counter() - start) * 1e9 / iters


def add(counter, lock):
    for _ in range(10_000):
        with lock:
            counter.value += 1


def four_processes():
    counter, lock = mp.Value("q", 0, lock=False), mp.Lock()
    start = time.perf_counter()
    workers = [mp.Process(target=add, args=(counter, lock)) for _ in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join()
    took = (time.perf_counter() - start) * 1e3
    assert counter.value == 40_000
    return took


def main():
    repeats, iters = (3, 100_000) if QUICK else (9, 1_000_000)
    lock = mp.Lock()
    ns = statistics.median(uncontended(lock, iters) for _ in range(repeats))
    print(f"bench\tlock.uncontended\tpython\t{ns:.1f}\tns")
    ms = statistics.median(four_processes() for _ in range(3 if QUICK else 11))
    print(f"bench\tlock.4x10000\tpython\t{ms:.2f}\tms")


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
