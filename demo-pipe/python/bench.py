"""Pipe round trip and 1 MiB throughput in Python, for `cargo xtask bench`.

Prints `bench<TAB>id<TAB>python<TAB>median<TAB>unit` lines. BENCH_QUICK=1: fewer repeats.
The same shapes as examples/bench.rs: [42, None, 'hello'] sent and echoed back; a child
sending 1 MiB bytes objects that the parent asked for, with send/recv (pickled, as ours are
encoded).
"""
import multiprocessing as mp
import os
import statistics
import time

MIB = 1 << 20


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
    data = b"\x07" * MIB
    try:
        while True:
            for _ in range(conn.recv()):
                conn.send(data)
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
    repeats, trips, messages = (5, 500, 16) if quick else (15, 2000, 64)
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
    figures = []
    for _ in range(repeats):
        t = time.perf_counter()
        conn.send(messages)
        for _ in range(messages):
            assert len(conn.recv()) == MIB
        figures.append(messages * MIB / (time.perf_counter() - t) / 1e9)
    conn.close()
    p.join()
    print(f"bench\tpipe.1mib\tpython\t{statistics.median(figures):.3f}\tGB/s")


if __name__ == "__main__":
    main()
