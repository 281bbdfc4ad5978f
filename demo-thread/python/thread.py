"""多线程: the note's threading.Thread examples, printing the same lines as the Rust demo.

Run with: python3 demo-thread/python/thread.py

The threads are named thread-1, thread-2, ... as the Rust demo numbers them (Python's own
names would be Thread-1 (run), Thread-2 (run), ...). The sum is CPU-bound: under the GIL the
threads take turns, so splitting it gains nothing (compare with the Rust demo).
"""
import os
import sys
import threading
import time

N = 20_000_000
COUNT = 0


def say(text):
    name = threading.current_thread().name
    who = f"[pid {os.getpid()}]" if name == "MainThread" else f"[pid {os.getpid()} {name}]"
    # One write per line: print() writes the text and the newline separately, and another
    # thread's line could come between them.
    sys.stdout.write(f"{who} {text}\n")
    sys.stdout.flush()


def next_name():
    global COUNT
    COUNT += 1
    return f"thread-{COUNT}"


def time_scale():
    # This demo has no sleeps, but a bad value is still an error, as in every demo.
    value = os.environ.get("DEMO_TIME_SCALE", "1")
    try:
        scale = float(value)
    except ValueError:
        scale = -1.0
    if not scale > 0 or scale == float("inf"):
        print(f"thread.py: DEMO_TIME_SCALE must be a number > 0, not {value!r}", file=sys.stderr)
        sys.exit(2)
    return scale


def run(n):
    say(f"current task: {n}")


class MyThread(threading.Thread):
    def __init__(self, n):
        super().__init__(name=next_name())
        self.n = n

    def run(self):
        say(f"current task: {self.n}")


class PartialSum(threading.Thread):
    """join() returns None in Python: the result is kept on the thread object."""

    def __init__(self, lo, hi):
        super().__init__(name=next_name())
        self.lo, self.hi, self.result = lo, hi, None

    def run(self):
        self.result = total(self.lo, self.hi)


def total(lo, hi):
    return sum(i * i % 1000003 for i in range(lo, hi))


class Crash(threading.Thread):
    """An exception in a thread is printed by threading.excepthook; join() does not see it."""

    def __init__(self):
        super().__init__(name=next_name())
        self.error = None

    def run(self):
        say("about to divide by zero")
        try:
            1 // 0
        except ZeroDivisionError as e:
            self.error = e
            raise


def main():
    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(__doc__)
        return
    time_scale()
    say("function threads: Thread(target=run, args=(n,)) is Thread::new(move || run(n))")
    t1 = threading.Thread(target=run, args=("thread 1",), name=next_name())
    t2 = threading.Thread(target=run, args=("thread 2",), name=next_name())
    t1.start()
    t2.start()
    t1.join()
    t2.join()

    say("class threads: a struct with a run method, started and joined by Thread")
    t1 = MyThread("thread 1")
    t2 = MyThread("thread 2")
    t1.start()
    t2.start()
    t1.join()
    t2.join()
    say(f"joined {t1.name} and {t2.name}")

    start = time.perf_counter()
    s = total(0, N)
    serial = (time.perf_counter() - start) * 1e3
    say(f"sum of i*i % 1000003 for i below {N}, serially: {s} in {serial:.0f} ms")

    cores = os.cpu_count() or 2
    start = time.perf_counter()
    parts = [PartialSum(N * k // cores, N * (k + 1) // cores) for k in range(cores)]
    for t in parts:
        t.start()
    for t in parts:
        t.join()
    s = sum(t.result for t in parts)
    parallel = (time.perf_counter() - start) * 1e3
    say(f"split over {cores} threads, join returning each part: {s} in {parallel:.0f} ms")
    say(f"{serial / parallel:.1f}x as fast: Rust threads run in parallel; Python's take turns (the GIL)")

    t = Crash()
    t.start()
    t.join()  # returns None either way: the error was kept by run() itself
    if t.error is not None:
        say(f"join reports: {t.name} panicked: attempt to divide by zero (its message is on stderr)")


if __name__ == "__main__":
    main()
