"""进程间通信 Queue and 线程通信 队列: the note's writer/reader processes with
multiprocessing.Queue, then producer/consumer threads with queue.Queue, printing the same
lines as the Rust demo.

Run with: python3 demo-queue/python/queue_demo.py
(Named queue_demo.py, not queue.py: a queue.py here would shadow the standard module.)
"""
import multiprocessing as mp
import os
import queue
import random
import sys
import threading
import time


def say(text):
    name = threading.current_thread().name
    who = f"[pid {os.getpid()}]" if name == "MainThread" else f"[pid {os.getpid()} {name}]"
    # One write per line: print() writes the text and the newline apart, and two threads'
    # lines could mix.
    sys.stdout.write(f"{who} {text}\n")
    sys.stdout.flush()


def time_scale():
    value = os.environ.get("DEMO_TIME_SCALE", "1")
    try:
        scale = float(value)
    except ValueError:
        scale = -1.0
    if not scale > 0 or scale == float("inf"):
        print(f"queue_demo.py: DEMO_TIME_SCALE must be a number > 0, not {value!r}", file=sys.stderr)
        sys.exit(2)
    return scale


SCALE = time_scale()


def write(q):
    say(f"Process to write: {os.getpid()}")
    # multiprocessing reseeds `random` in a forked child (os.register_at_fork).
    for value in ["A", "B", "C"]:
        say(f"Put {value} to queue...")
        q.put(value)
        time.sleep(random.random() * SCALE)


def read(q):
    say(f"Process to read: {os.getpid()}")
    while True:
        value = q.get(True)
        if value is None:  # The sentinel: Python's queue cannot tell that its writers are gone.
            break
        say(f"Get {value} from queue.")
    say("The queue is closed and drained: the reader ends.")


def producer(q, waits):
    for item in range(5):
        say(f"Put {item} to queue...")
        try:
            q.put_nowait(item)
        except queue.Full:
            waits.append(item)
            q.put(item)  # Blocks until the consumer takes one.
    q.put(None)


def consumer(q):
    while (item := q.get()) is not None:
        say(f"Get {item} from queue.")
        time.sleep(0.2 * SCALE)


def main():
    # Python 3.14 made forkserver the default on Linux; the note's runs used fork.
    mp.set_start_method("fork")
    say("1. Python's way: join the writer, then terminate the reader")
    q = mp.Queue()
    pw = mp.Process(target=write, args=(q,))
    pr = mp.Process(target=read, args=(q,))
    pw.start()
    pr.start()
    pw.join()
    pr.terminate()
    pr.join()
    left = 0
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            break
        left += 1
    say(f"Reader terminated, exitcode {pr.exitcode}; left unread: {left} (terminate may lose some)")

    say("2. The clean way: the queue closes when its last writer ends")
    q = mp.Queue()
    pw = mp.Process(target=write, args=(q,))
    pr = mp.Process(target=read, args=(q,))
    pw.start()
    pr.start()
    pw.join()
    q.put(None)  # The writer has ended: tell the reader, which gets it after every value.
    pr.join()
    say(f"Reader ended by itself, exitcode {pr.exitcode}: it got every value, nothing is lost")

    say("3. Threads: queue.Queue(maxsize=2) is a bounded crossbeam channel")
    q = queue.Queue(maxsize=2)
    waits = []
    threads = [
        threading.Thread(target=producer, args=(q, waits), name="producer"),
        threading.Thread(target=consumer, args=(q,), name="consumer"),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    say(f"The producer waited {len(waits)} times for room; the items moved, nothing was serialized")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        if sys.argv[1] in ("--help", "-h"):
            print("Usage: queue_demo.py [--help]")
            sys.exit(0)
        print(f"queue_demo.py: unknown flag {sys.argv[1]} (try --help)", file=sys.stderr)
        sys.exit(2)
    main()
