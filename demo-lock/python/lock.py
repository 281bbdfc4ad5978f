"""进程锁 and 线程锁: the Python that demo-lock translates, printing the same lines.

Where Python lacks what Rust gives, this script does it by hand, as a careful Python program
must: in part 3 Python's Lock stays taken when its holder dies (python/cpython gh-88304), so
the parent, which killed the holder, repairs the data and releases the lock on its behalf; in
part 4 Python has no poisoning, so a flag is kept by hand.

Run with: python3 demo-lock/python/lock.py [--no-lock] [--holder-dies] [--threads]
"""

import multiprocessing as mp
import os
import sys
import threading

SCALE = float(os.environ.get("DEMO_TIME_SCALE", "1"))
WORKERS, N = 4, 10_000
TOTAL = WORKERS * N


def say(*args):
    name = threading.current_thread().name
    who = f"[pid {os.getpid()}]" if name == "MainThread" else f"[pid {os.getpid()} {name}]"
    # One write per line, so that lines from several processes never run into each other.
    sys.stdout.write(" ".join([who, *map(str, args)]) + "\n")
    sys.stdout.flush()


def note_lines():
    say("1. the note: l = mp.Lock(); l.acquire(); l.release()")
    l = mp.Lock()
    l.acquire()
    say("acquire(): the lock is taken")
    p = mp.Process(target=try_to_acquire, args=(l,))
    p.start()
    p.join()
    l.release()
    say("release(): the lock is free")


def try_to_acquire(l):
    got = lambda taken: "True" if taken else "False, busy"
    say("acquire(False) returns", got(l.acquire(False)))
    say("acquire(timeout=0.2) returns", got(l.acquire(timeout=0.2 * SCALE)))


def add_unlocked(counter, go):
    go.wait()
    for _ in range(N):
        # counter.value += 1, with the CPU given up between the read and the write, so that
        # another process writes in between on every run, on one core as on many.
        value = counter.value
        os.sched_yield()
        counter.value = value + 1


def add_locked(counter, lock, go):
    go.wait()
    for _ in range(N):
        with lock:
            value = counter.value
            os.sched_yield()
            counter.value = value + 1


def run_workers(target, *args):
    """Starts the workers, which wait for each other at a barrier and start together, as the
    Rust demo's do."""
    go = mp.Barrier(WORKERS)
    workers = [mp.Process(target=target, args=(*args, go)) for _ in range(WORKERS)]
    for p in workers:
        p.start()
    for p in workers:
        p.join()


def no_lock():
    say(f"2. {WORKERS} processes add 1 to a counter in shared memory {N} times each, no lock")
    counter = mp.Value("q", 0, lock=False)
    run_workers(add_unlocked, counter)
    say(f"counter = {counter.value} (expected {TOTAL})")
    say("the same with each increment under the lock")
    counter, lock = mp.Value("q", 0, lock=False), mp.Lock()
    run_workers(add_locked, counter, lock)
    say(f"counter = {counter.value} (expected {TOTAL})")
    assert counter.value == TOTAL


def hold_until_killed(value, lock, tell):
    lock.acquire()
    value[0] += 5  # Half an update, not committed.
    say(f"holding the lock in the middle of an update: counter {value[0]}, committed {value[1]}")
    tell.send(True)
    threading.Event().wait()  # Until SIGKILL.


def add_committed(value, lock, go):
    go.wait()
    for _ in range(N):
        with lock:
            value[0] += 1
            value[1] = value[0]


def holder_dies():
    say("3. a child takes the lock and is killed while it holds it")
    value, lock = mp.Array("q", [0, 0], lock=False), mp.Lock()
    holding, tell = mp.Pipe()
    holder = mp.Process(target=hold_until_killed, args=(value, lock, tell))
    holder.start()
    holding.recv()
    say(f"killing {holder.name} with SIGKILL while it holds the lock")
    say("Python would hang here: a Lock whose holder died stays taken for ever")
    holder.kill()
    holder.join()
    # Nothing tells a waiter that the holder died: acquire() would wait for ever. The parent
    # knows, since it killed the holder, so it repairs the data and releases the lock on the
    # dead holder's behalf (a semaphore may be released by any process); Rust's lock tells the
    # next acquirer by itself.
    say(f"the lock's owner died in the middle: counter {value[0]} rolled back to {value[1]}")
    value[0] = value[1]
    lock.release()
    run_workers(add_committed, value, lock)
    say(f"{holder.name} exitcode {holder.exitcode}; the {WORKERS} workers went on")
    say(f"counter = {value[0]} (expected {TOTAL})")
    assert value[0] == TOTAL


def threads():
    say("4. the note's threading.Lock: std::sync::Mutex")
    mutex = threading.Lock()
    if mutex.acquire(1):
        say("执行操作")
        say("acquire(False) is try_lock:", "taken" if mutex.acquire(False) else "busy")
    mutex.release()

    counter, lock, poisoned = 0, threading.Lock(), False

    def holder():
        nonlocal counter, poisoned
        with lock:
            try:
                counter += 1  # The first half of an update.
                raise RuntimeError("a holder panics while it holds the lock")
            except BaseException:
                poisoned = True  # By hand: Rust's Mutex marks itself poisoned.
                raise

    t = threading.Thread(target=holder, name="holder")
    t.start()
    t.join()
    if poisoned:
        say(f"after a holder panicked: the mutex is poisoned, counter {counter}; repaired to 0")
        counter, poisoned = 0, False

    def add():
        nonlocal counter
        for _ in range(N):
            with lock:
                counter += 1

    workers = [threading.Thread(target=add, name=f"thread-{i}") for i in range(1, WORKERS + 1)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    say(f"{WORKERS} threads: counter = {counter} (expected {TOTAL})")
    assert counter == TOTAL


def main():
    flags = sys.argv[1:]
    if "--help" in flags or "-h" in flags:
        print(__doc__, end="")
        return 0
    parts = {"--no-lock": no_lock, "--holder-dies": holder_dies, "--threads": threads}
    for flag in flags:
        if flag not in parts:
            print(f"lock.py: unknown flag {flag} (try --help)", file=sys.stderr)
            return 2
    if not flags:
        note_lines()
    for flag, part in parts.items():
        if not flags or flag in flags:
            part()
    return 0


if __name__ == "__main__":
    mp.set_start_method("fork")
    sys.exit(main())
