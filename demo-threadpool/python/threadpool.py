"""线程池: the note's multiprocessing.dummy.Pool example, printing the same lines as the Rust demo.

Run with: python3 demo-threadpool/python/threadpool.py [URL...]

Standard library only: urllib.request stands in for requests, and with no URL a small
http.server on 127.0.0.1 stands in for the note's five sites (each answers after 0.1 to 0.5 s).
Exit code 1 if a fetch failed, 2 for a malformed URL (nothing is fetched then).
"""
import http.server
import ipaddress
import itertools
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from multiprocessing.dummy import Pool as ThreadPool

SITES = [
    ("www.baidu.com", 0.5),
    ("www.sina.com.cn", 0.2),
    ("www.163.com", 0.4),
    ("www.qq.com", 0.1),
    ("www.taobao.com", 0.3),
]


def say(text):
    name = threading.current_thread().name
    who = f"[pid {os.getpid()}]" if name == "MainThread" else f"[pid {os.getpid()} {name}]"
    # One write per line: print() writes the text and the newline separately, and another
    # thread's line could come between them.
    sys.stdout.write(f"{who} {text}\n")
    sys.stdout.flush()


def fail(message):
    print(f"threadpool.py: {message}", file=sys.stderr)
    sys.exit(2)


def time_scale():
    value = os.environ.get("DEMO_TIME_SCALE", "1")
    try:
        scale = float(value)
    except ValueError:
        scale = -1.0
    if not scale > 0 or scale == float("inf"):
        fail(f"DEMO_TIME_SCALE must be a number > 0, not {value!r}")
    return scale


def page(site):
    return f"<html><title>{site}</title><p>{site}, served by the demo on 127.0.0.1</p></html>\n".encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        delays = dict(SITES)
        site = self.path.lstrip("/")
        if site in delays:
            time.sleep(delays[site] * SCALE)
            self.send_response(200)
            body = page(site)
        else:
            self.send_response(404)
            body = b""
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def check(url):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"malformed URL {url!r}: want http://host/… or https://host/…")


def is_loopback(host):
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# A proxy cannot reach this machine's loopback: requests to it go direct.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
PROXIED = urllib.request.build_opener()


def fetch(url):
    """requests.get(url): the final url, the status and the size, or the error as text."""
    opener = DIRECT if is_loopback(urllib.parse.urlsplit(url).hostname) else PROXIED
    try:
        with opener.open(url, timeout=20) as r:
            return r.geturl(), r.status, len(r.read())
    except urllib.error.HTTPError as e:  # a 404 is a response, as in requests
        return e.geturl(), e.code, len(e.read())
    except Exception as e:
        return e


def get(url):
    say(f"get {url}")
    return fetch(url)


NUMBERS = itertools.count(1)


def name_worker():
    """Names each pool thread pool-1, pool-2, …, as the Rust pool does: every line says which
    thread printed it."""
    threading.current_thread().name = f"pool-{next(NUMBERS)}"


def main():
    global SCALE
    args = sys.argv[1:]
    if "--help" in args or "-h" in args:
        print(__doc__)
        return 0
    SCALE = time_scale()
    for a in args:
        if a.startswith("-"):
            fail(f"unknown flag {a} (try --help)")
    for url in args:
        check(url)

    server = None
    urls = args
    if not urls:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, name="server", daemon=True).start()
    try:
        return fetch_all(urls, server)
    finally:
        if server:
            server.shutdown()
            server.server_close()


def fetch_all(urls, server):
    if server:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        say(f"serving the note's five sites on {base}")
        urls = [base + site for site, _ in SITES]

    pool = ThreadPool(4, initializer=name_worker)
    start = time.perf_counter()
    results = pool.map(get, urls)
    pooled = (time.perf_counter() - start) * 1e3
    pool.close()
    pool.join()

    failed = 0
    for url, result in zip(urls, results):
        if isinstance(result, Exception):
            failed += 1
            say(f"{url} failed: {result}")
        else:
            say(f"{result[0]} {result[1]} {result[2]} bytes")

    start = time.perf_counter()
    for url in urls:
        fetch(url)
    serial = (time.perf_counter() - start) * 1e3
    say(f"all fetches through a pool of 4 threads: {pooled:.0f} ms; one by one: {serial:.0f} ms")
    if failed:
        print(f"threadpool.py: fetches failed: {failed}", file=sys.stderr)
        return 1
    return 0

SCALE = 1.0

if __name__ == "__main__":
    sys.exit(main())
