"""multiprocessing.Queue and queue.Queue in Python, for `cargo xtask bench`.

Prints `bench<TAB>id<TAB>python<TAB>median<TAB>unit` lines. BENCH_QUICK=1: fewer repeats.
The same shapes as examples/bench_queue.rs: small ints from a writer process to this one,
bytes of 16 B, 4 KiB and 64 KiB the same way, and small ints from a producer thread to this one.
"""
import multiprocessing as mp
import os
import queue
import statistics
import threading
import time


def put_range(q, n):
    for i in range(n):
        q.put(i)


def processes(n):
    q = mp.get_context("fork").Queue()
    start = time.perf_counter()
    p = mp.get_context("fork").Process(target=put_range, args=(q, n))
    p.start()
    total = sum(q.get() for _ in range(n))
    rate = n / (time.perf_counter() - start)
    p.join()
    assert total == n * (n - 1) // 2
    return rate


def put_value(q, value, n):
    for _ in range(n):
        q.put(value)


def values(size, n):
    value = b"\x07" * size
    q = mp.get_context("fork").Queue()
    start = time.perf_counter()
    p = mp.get_context("fork").Process(target=put_value, args=(q, value, n))
    p.start()
    for _ in range(n):
        last = q.get()
    rate = n / (time.perf_counter() - start)
    p.join()
    assert last == value
    return rate


def threads(n):
    q = queue.Queue()
    start = time.perf_counter()
    t = threading.Thread(target=put_range, args=(q, n))
    t.start()
    total = sum(q.get() for _ in range(n))
    rate = n / (time.perf_counter() - start)
    t.join()
    assert total == n * (n - 1) // 2
    return rate


if __name__ == "__main__":
    repeats, n = (3, 50_000) if os.environ.get("BENCH_QUICK") == "1" else (7, 200_000)
    rate = statistics.median(processes(n) for _ in range(repeats))
    print(f"bench\tqueue.processes\tpython\t{rate:.0f}\tmsg/s")
    for row, size, count in [("queue.16b", 16, n), ("queue.4kib", 4 << 10, n // 3),
                             ("queue.64kib", 64 << 10, n // 15)]:
        rate = statistics.median(values(size, count) for _ in range(repeats))
        print(f"bench\t{row}\tpython\t{rate:.0f}\tmsg/s")
    rate = statistics.median(threads(n) for _ in range(repeats))
    print(f"bench\tqueue.threads\tpython\t{rate:.0f}\titems/s")
