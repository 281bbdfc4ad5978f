"""Pipe round trip and throughput at sizes from 16 B to 16 MiB in Python, for `cargo xtask bench`.

Prints `bench<TAB>id<TAB>python<TAB>median<TAB>unit` lines. BENCH_QUICK=1: fewer repeats.
The same shapes as examples/bench_pipe.rs: [42, None, 'hello'] sent and echoed back; a child
sending bytes objects of each size that the parent asked for, with send/recv (pickled, as ours
are encoded).
"""
import multiprocessing as mp
import os
import statistics
import time

MIB = 1 << 20
MAX = 16 * MIB
SIZES = [("pipe.16b", 16), ("pipe.4kib", 4 << 10), ("pipe.64kib", 64 << 10),
         ("pipe.1mib", MIB), ("pipe.16mib", MAX)]


def echo(conn, parents_end):
    # The fork copied the parent's end too: close it, or the parent's close never reaches us.
    parents_end.close()
    try:
        while True:
            conn.send(conn.recv())
    except EOFError:
        pass


def sender(conn, parents_end):
    parents_end.close()
    data = b"\x07" * MAX
    try:
        while True:
            size, n = conn.recv()
            # A bytes object of its own per size, made before the parent's clock counts.
            message = data[:size]
            for _ in range(n):
                conn.send(message)
    except EOFError:
        pass


def start(target):
    parent_conn, child_conn = mp.Pipe()
    p = mp.Process(target=target, args=(child_conn, parent_conn))
    p.start()
    child_conn.close()
    return parent_conn, p


def main():
    quick = os.environ.get("BENCH_QUICK")
    repeats, trips = (5, 500) if quick else (15, 2000)
    mp.set_start_method("fork")

    # On one CPU, as the Rust side: a round trip otherwise measures the scheduler.
    all_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(all_cpus)})
    conn, p = start(echo)
    figures = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(trips):
            conn.send([42, None, 'hello'])
            conn.recv()
        figures.append((time.perf_counter() - t) * 1e6 / trips)
    conn.close()
    p.join()
    print(f"bench\tpipe.roundtrip\tpython\t{statistics.median(figures):.3f}\tus")
    os.sched_setaffinity(0, all_cpus)

    conn, p = start(sender)
    for row, size in SIZES:
        # About 32 MiB per figure (8 MiB quick), and never fewer than 8 messages.
        n = min(max((8 if quick else 32) * MIB // size, 8), 20_000)
        figures = []
        for _ in range(repeats):
            t = time.perf_counter()
            conn.send((size, n))
            for _ in range(n):
                assert len(conn.recv()) == size
            figures.append(n * size / (time.perf_counter() - t) / 1e9)
        print(f"bench\t{row}\tpython\t{statistics.median(figures):.6f}\tGB/s")
    conn.close()
    p.join()


if __name__ == "__main__":
    main()
