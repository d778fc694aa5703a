#!/usr/bin/env python3
"""Freeway's event loop under admin work, measured: a heavy admin page and a login storm.

    bench/eventloop.py [path/to/freeway] [--only A|B] [--out PATH]
                       [--fill PATH/fill_log] [--mock PATH/mock_upstream]

(bench/eventloop.sh builds the binaries first and runs this.) Starts the given release binary
(default target/release/freeway) on 127.0.0.1 and writes one markdown table to
bench/results/eventloop.md (also printed):

- A, event loop vs admin pages: a data dir with 1,000,000 logged requests over 30 days
  (examples/fill_log; the filled dir is cached under /tmp/freeway-eventloop-cache for 6 hours
  and copied for each run), a mock upstream (examples/mock_upstream, or a Python one in a
  subprocess when that binary is missing) and the admin password from the config. (1) a fixed
  200 req/s open-loop load of non-streaming POST /v1/chat/completions for 15 s; (2) the same
  while one logged-in session GETs /admin/analytics?window=30d every 250 ms (start to start).
  Latency is taken from each request's scheduled send time (so a stalled server or a queue in
  the client counts, no coordinated omission) and, beside it, from the actual send.
- B, login storm: a fresh data dir, the password set through the printed setup link (argon2),
  then 3,000 wrong-password POST /admin/api/login from 600 loopback source addresses
  (127.0.0.2 ...), 5 each, 64 at a time, one connection each; meanwhile VmRSS is read every
  50 ms and GET /livez timed every 100 ms.

Python standard library only. Every loop is bounded in count and time; processes and temp dirs
are removed at exit. Not a test: no assertions on the figures.
"""

import collections
import http.client
import http.server
import json
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT_KEY = "fw-eventloop-bench"
ADMIN_PASSWORD = "eventloop-bench-password"
CACHE = os.path.join(tempfile.gettempdir(), "freeway-eventloop-cache")
CACHE_MAX_AGE_S = 6 * 3600
FILL_REQUESTS, FILL_DAYS = 1_000_000, 30

RATE, LOAD_SECONDS, LOAD_THREADS = 200, 15, 32
PAGE = "/admin/analytics?window=30d"
PAGE_EVERY_S = 0.25
STORM_ADDRESSES, STORM_EACH, STORM_CONCURRENCY = 600, 5, 64
STORM_DEADLINE_S = 150
RSS_EVERY_S, LIVEZ_EVERY_S = 0.05, 0.1

BODY = json.dumps({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]})
V1_HEADERS = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}


def log(msg):
    print(f"[eventloop {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes


def _die_with_parent():
    """In the child: SIGKILL when this script dies, even by SIGKILL (Linux prctl)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Proc:
    """A child process, killed at exit; its stdout lines go to a queue (and a log file)."""

    live = []

    def __init__(self, argv, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, env=env,
                                     text=True, start_new_session=True, preexec_fn=_die_with_parent)
        Proc.live.append(self)
        self.lines = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_until(self, pred, timeout):
        """Stdout lines up to and including the first for which pred is true."""
        got, deadline = [], time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"timed out; output so far: {got}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"exited with {self.proc.wait()}; output: {got}; "
                                   f"stderr in {self.log_path}")
            got.append(line)
            if pred(line):
                return got

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self in Proc.live:
            Proc.live.remove(self)


def stop_all():
    for p in list(Proc.live):
        try:
            p.stop()
        except Exception:
            pass


def start_mock(path, tmp):
    if path and os.access(path, os.X_OK):
        argv, kind = [path, "--port", "0"], "examples/mock_upstream"
    else:
        argv, kind = [sys.executable, os.path.abspath(__file__), "--serve-mock"], "Python mock"
        log(f"no {path}: using the slower Python mock (cargo build --release --example mock_upstream)")
    p = Proc(argv, os.path.join(tmp, "mock.log"))
    line = p.read_until(lambda l: l.startswith("listening on "), 30)[-1]
    return p, line.split("listening on ", 1)[1], kind


class Freeway:
    def __init__(self, binary, tmp, name, config):
        path = os.path.join(tmp, name + ".toml")
        with open(path, "w") as f:
            f.write(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FREEWAY_")}
        env.update(FREEWAY_LOG="warn", BENCH_ADMIN_PASSWORD=ADMIN_PASSWORD)
        self.p = Proc([binary, "--config", path], os.path.join(tmp, name + ".log"), env=env)
        # The banner ends with a blank line.
        self.banner = self.p.read_until(lambda l: l.strip() == "", 180)
        addr = next(l for l in self.banner if l.startswith("Freeway listening on http://"))
        host, port = addr.split("http://", 1)[1].rsplit(":", 1)
        self.host, self.port, self.pid = host, int(port), self.p.proc.pid

    def status_kb(self, field):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def conn(self, timeout=30, source=None):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout,
                                          source_address=source)


# ---------------------------------------------------------------------------------------------
# Figures


def pct(sorted_xs, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_xs:
        return float("nan")
    k = max(0, min(len(sorted_xs) - 1, int(round(p / 100.0 * len(sorted_xs) + 0.5)) - 1))
    return sorted_xs[k]


def ms3(xs):
    xs = sorted(xs)
    return f"{pct(xs, 50):.2f} / {pct(xs, 99):.2f} / {xs[-1]:.2f}" if xs else "–"


def counts(statuses):
    c = collections.Counter(str(s) for s in statuses)
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(c.items()))


# ---------------------------------------------------------------------------------------------
# A: the /v1 load alone and beside the Analytics page


def open_loop(fw, rate, seconds, threads, side=None):
    """rate req/s for seconds, scheduled at fixed times; threads workers with a keep-alive
    connection each take the next due request from a queue. Returns (sched, sent, done, status)
    per request. side (optional) is started at t0 with the stop time."""
    n = int(rate * seconds)
    q = queue.Queue()
    results = [None] * n
    ready = threading.Barrier(threads + 1, timeout=60)

    def worker():
        conn = fw.conn()
        try:  # one warm-up request opens the connection
            conn.request("POST", "/v1/chat/completions", body=BODY, headers=V1_HEADERS)
            conn.getresponse().read()
        except Exception:
            conn.close()
        ready.wait()
        while True:
            item = q.get()
            if item is None:
                break
            i, sched = item
            sent = time.perf_counter()
            try:
                conn.request("POST", "/v1/chat/completions", body=BODY, headers=V1_HEADERS)
                r = conn.getresponse()
                r.read()
                status = r.status
                if r.will_close:
                    conn.close()
            except Exception as e:
                status = type(e).__name__
                conn.close()
            results[i] = (sched, sent, time.perf_counter(), status)
        conn.close()

    ws = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for w in ws:
        w.start()
    ready.wait()
    t0 = time.perf_counter() + 0.2
    side_thread = None
    if side:
        side_thread = threading.Thread(target=side, args=(t0, t0 + seconds), daemon=True)
        side_thread.start()
    for i in range(n):
        sched = t0 + i / rate
        delay = sched - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        q.put((i, sched))
    for _ in ws:
        q.put(None)
    for w in ws:
        w.join(timeout=60)
    if side_thread:
        side_thread.join(timeout=120)
    return [r for r in results if r is not None], n


def login_cookie(fw, password):
    c = fw.conn()
    c.request("POST", "/admin/api/login", body=json.dumps({"password": password}),
              headers={"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status != 200:
        raise RuntimeError(f"login: {r.status} {data[:200]!r}")
    return r.getheader("set-cookie").split(";")[0]


def get_page(conn, cookie):
    t = time.perf_counter()
    conn.request("GET", PAGE, headers={"cookie": cookie})
    r = conn.getresponse()
    data = r.read()
    return (time.perf_counter() - t) * 1000, r.status, len(data)


def load_rows(label, results, n):
    by_sched = [(d - s) * 1000 for s, _, d, st in results if st == 200]
    by_send = [(d - t) * 1000 for _, t, d, st in results if st == 200]
    late = sum(1 for s, t, _, _ in results if t - s > 0.005)
    span = (max(d for *_, d, _ in results) - min(s for s, *_ in results)) if results else 0
    return [
        (f"{label}: /v1 p50 / p99 / max, ms from scheduled send", ms3(by_sched)),
        (f"{label}: /v1 p50 / p99 / max, ms from actual send", ms3(by_send)),
        (f"{label}: /v1 answers ({n:,} scheduled; sends > 5 ms late: {late:,}; "
         f"all done in {span:.1f} s)", counts(st for *_, st in results) or "none"),
    ]


def measure_a(binary, tmp, fill, mock_path):
    data = os.path.join(tmp, "data-a")
    filled = filled_dir(fill)
    log(f"copying {filled} ...")
    shutil.copytree(filled, data, ignore=lambda d, names: [n for n in names if n == "FILLED"])
    with open(os.path.join(filled, "FILLED")) as f:
        fill_note = f.read().strip()
    mock, mock_addr, mock_kind = start_mock(mock_path, tmp)
    fw = Freeway(binary, tmp, "freeway-a", f"""listen = "127.0.0.1:0"
data_dir = "{data}"
[auth]
api_keys = ["{CLIENT_KEY}"]
admin_password = "env:BENCH_ADMIN_PASSWORD"
[custom.mock]
base_url = "http://{mock_addr}/v1"
models = [{{ id = "mock-model", context = 131072 }}]
""")
    log(f"freeway on {fw.host}:{fw.port} (pid {fw.pid}), mock ({mock_kind}) on {mock_addr}")
    cookie = login_cookie(fw, ADMIN_PASSWORD)
    c = fw.conn(timeout=120)
    warm = get_page(c, cookie)  # warm-up: the page cache and the first query plans
    c.close()
    if warm[1] != 200:
        raise RuntimeError(f"{PAGE}: {warm[1]}")
    log(f"warm-up page load {warm[0]:.0f} ms, {warm[2]:,} bytes")

    rows = []
    log(f"A1: {RATE} req/s for {LOAD_SECONDS} s, alone ...")
    res, n = open_loop(fw, RATE, LOAD_SECONDS, LOAD_THREADS)
    rows += load_rows("A1 alone", res, n)

    pages = []

    def pager(t0, stop):
        conn = fw.conn(timeout=60)
        k = 0
        while k < 1000:
            due = t0 + k * PAGE_EVERY_S
            if due >= stop:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                pages.append(get_page(conn, cookie))
            except Exception as e:
                pages.append((None, type(e).__name__, 0))
                conn.close()
            k += 1
        conn.close()

    log(f"A2: {RATE} req/s for {LOAD_SECONDS} s, with {PAGE} every {PAGE_EVERY_S * 1000:.0f} ms ...")
    res, n = open_loop(fw, RATE, LOAD_SECONDS, LOAD_THREADS, side=pager)
    rows += load_rows("A2 with the page", res, n)
    times = [t for t, st, _ in pages if st == 200]
    rows.append((f"A2: Analytics page 30d, mean / max ms ({len(pages)} loads, "
                 f"{pages[-1][2] if pages else 0:,} bytes; {counts(st for _, st, _ in pages)})",
                 f"{statistics.mean(times):.1f} / {max(times):.1f}" if times else "–"))
    # A3, the floor: the same load while another process (not Freeway) burns the CPU the page
    # took, on the same schedule. What A2 adds beyond this is Freeway's; what this adds to A1
    # is two cores shared with the page's work, which no event-loop design removes.
    if times:
        burn_ms = statistics.mean(times)
        burner_code = (
            "import sys, time\n"
            "ms, every, secs = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])\n"
            "t0 = time.perf_counter(); k = 0\n"
            "while True:\n"
            "    due = t0 + k * every\n"
            "    if due - t0 >= secs: break\n"
            "    d = due - time.perf_counter()\n"
            "    if d > 0: time.sleep(d)\n"
            "    end = time.perf_counter() + ms / 1000\n"
            "    while time.perf_counter() < end: pass\n"
            "    k += 1\n"
        )

        def burner(t0, stop):
            proc = subprocess.Popen(
                [sys.executable, "-c", burner_code, f"{burn_ms}", f"{PAGE_EVERY_S}",
                 f"{max(stop - time.perf_counter(), 0.0)}"])
            try:
                proc.wait(timeout=LOAD_SECONDS + 30)
            except subprocess.TimeoutExpired:
                proc.kill()

        log(f"A3: {RATE} req/s for {LOAD_SECONDS} s, beside another process burning "
            f"{burn_ms:.0f} ms of CPU every {PAGE_EVERY_S * 1000:.0f} ms (the floor) ...")
        res, n = open_loop(fw, RATE, LOAD_SECONDS, LOAD_THREADS, side=burner)
        rows += load_rows(f"A3 floor: beside {burn_ms:.0f} ms of CPU burnt elsewhere", res, n)
    if not fw.p.alive():
        rows.append(("A: freeway", f"exited with {fw.p.proc.returncode} during the run"))
    fw.p.stop()
    mock.stop()
    head = (f"A: {fill_note}; mock upstream: {mock_kind}; {LOAD_THREADS} client threads, "
            f"one keep-alive connection each")
    return rows, head


def filled_dir(fill):
    """The cached filled data dir, filled again when missing or older than CACHE_MAX_AGE_S."""
    path = os.path.join(CACHE, f"fill-{FILL_REQUESTS}x{FILL_DAYS}d")
    marker = os.path.join(path, "FILLED")
    if os.path.exists(marker) and time.time() - os.path.getmtime(marker) < CACHE_MAX_AGE_S:
        log(f"reusing {path}")
        return path
    if not (fill and os.access(fill, os.X_OK)):
        raise RuntimeError(f"no fill_log binary at {fill}: cargo build --release --example fill_log")
    os.makedirs(CACHE, exist_ok=True)
    shutil.rmtree(path, ignore_errors=True)
    part = tempfile.mkdtemp(prefix="fill-", dir=CACHE)
    try:
        log(f"filling {FILL_REQUESTS:,} requests over {FILL_DAYS} days ...")
        out = subprocess.run([fill, os.path.join(part, "d"), str(FILL_REQUESTS), str(FILL_DAYS)],
                             capture_output=True, text=True, timeout=600, check=True).stdout
        with open(os.path.join(part, "d", "FILLED"), "w") as f:
            f.write(f"{out.strip()} (filled {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
        os.rename(os.path.join(part, "d"), path)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return path


# ---------------------------------------------------------------------------------------------
# B: the login storm


def storm_addresses(n):
    out, k = [], 2
    while len(out) < n:
        a, b, c = (k >> 16) & 255, (k >> 8) & 255, k & 255
        if c not in (0, 255):
            out.append(f"127.{a}.{b}.{c}")
        k += 1
    return out


def measure_b(binary, tmp):
    data = os.path.join(tmp, "data-b")
    fw = Freeway(binary, tmp, "freeway-b", f"""listen = "127.0.0.1:0"
data_dir = "{data}"
""")
    log(f"freeway on {fw.host}:{fw.port} (pid {fw.pid})")
    link = next((l for l in fw.banner if "/admin/setup?token=" in l), None)
    if not link:
        raise RuntimeError(f"no setup link in the banner: {fw.banner}")
    token = re.search(r"token=(\S+)", link).group(1)
    c = fw.conn()
    c.request("POST", "/admin/api/setup", body=json.dumps({"token": token, "password": ADMIN_PASSWORD}),
              headers={"content-type": "application/json"})
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.status != 200:
        raise RuntimeError(f"setup: {r.status} {body[:200]!r}")
    time.sleep(1)
    rss_before = fw.status_kb("VmRSS")

    stop = threading.Event()
    rss, livez = [], []

    def sample_rss():
        while not stop.is_set() and len(rss) < 20_000:
            v = fw.status_kb("VmRSS")
            if v is not None:
                rss.append((time.perf_counter(), v))
            stop.wait(RSS_EVERY_S)

    def probe_livez():
        conn, k, t0 = fw.conn(timeout=30), 0, time.perf_counter()
        while not stop.is_set() and k < 10_000:
            t = time.perf_counter()
            try:
                conn.request("GET", "/livez")
                resp = conn.getresponse()
                resp.read()
                livez.append(((time.perf_counter() - t) * 1000, resp.status))
            except Exception as e:
                livez.append(((time.perf_counter() - t) * 1000, type(e).__name__))
                conn.close()
            k += 1
            stop.wait(max(0.0, t0 + k * LIVEZ_EVERY_S - time.perf_counter()))
        conn.close()

    addrs = storm_addresses(STORM_ADDRESSES)
    tasks = [(addrs[i], r) for r in range(STORM_EACH) for i in range(len(addrs))]
    statuses = [None] * len(tasks)
    next_task = iter(range(len(tasks)))
    lock = threading.Lock()
    deadline = time.perf_counter() + STORM_DEADLINE_S

    def attacker():
        while True:
            with lock:
                i = next(next_task, None)
            if i is None:
                return
            if time.perf_counter() > deadline:
                statuses[i] = "not sent (time limit)"
                continue
            ip, r = tasks[i]
            conn = fw.conn(timeout=60, source=(ip, 0))
            try:
                conn.request("POST", "/admin/api/login",
                             body=json.dumps({"password": f"wrong-password-{r}"}),
                             headers={"content-type": "application/json", "connection": "close"})
                resp = conn.getresponse()
                resp.read()
                statuses[i] = resp.status
            except Exception as e:
                statuses[i] = type(e).__name__
            finally:
                conn.close()

    side = [threading.Thread(target=f, daemon=True) for f in (sample_rss, probe_livez)]
    for t in side:
        t.start()
    time.sleep(0.5)  # a few idle samples first
    log(f"B: {len(tasks):,} wrong-password logins from {len(addrs)} addresses, "
        f"{STORM_CONCURRENCY} at a time ...")
    t0 = time.perf_counter()
    ws = [threading.Thread(target=attacker, daemon=True) for _ in range(STORM_CONCURRENCY)]
    for w in ws:
        w.start()
    for w in ws:
        w.join(timeout=STORM_DEADLINE_S + 90)
    took = time.perf_counter() - t0
    rss_end = fw.status_kb("VmRSS")
    time.sleep(0.5)
    stop.set()
    for t in side:
        t.join(timeout=40)
    hwm = fw.status_kb("VmHWM")
    alive = fw.p.alive()
    fw.p.stop()

    if os.environ.get("EVENTLOOP_DEBUG"):
        for k in range(0, len(rss), 20):
            log(f"rss at {rss[k][0] - t0:6.1f} s: {rss[k][1] / 1024:.0f} MB")
        for t, st in livez:
            if t > 100:
                log(f"slow /livez: {t:.0f} ms ({st})")
    lt = sorted(t for t, st in livez if st == 200)
    peak_at, peak = max(rss, key=lambda x: x[1]) if rss else (t0, 0)
    rows = [
        ("B: peak RSS, MB (sampled every 50 ms; VmHWM; before the storm; right after it)",
         f"{peak / 1024:.0f} ({(hwm or 0) / 1024:.0f}; {(rss_before or 0) / 1024:.0f}; "
         f"{(rss_end or 0) / 1024:.0f}), peak {peak_at - t0:.0f} s into the storm"),
        (f"B: /livez median / max ms ({len(livez)} probes, every 100 ms; {counts(st for _, st in livez)})",
         f"{statistics.median(lt):.2f} / {lt[-1]:.2f} ({sum(t > 100 for t in lt)} over 100 ms)"
         if lt else "–"),
        ("B: storm took", f"{took:.1f} s"),
        ("B: login answers by status", counts(statuses)),
    ]
    if not alive:
        rows.append(("B: freeway", "exited during the storm"))
    return rows


# ---------------------------------------------------------------------------------------------


class MockHandler(http.server.BaseHTTPRequestHandler):
    """The fallback upstream: one fixed chat.completion, written in one send, no Nagle."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    body = json.dumps({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": "mock-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()
    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
              b"content-length: %d\r\n\r\n" % len(body)) + body

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.wfile.write(self.answer)

    def log_message(self, *args):
        pass


def serve_mock():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MockHandler)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


def main():
    argv = sys.argv[1:]
    if argv == ["--serve-mock"]:
        return serve_mock()
    opts, pos, i = {}, [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            k, _, v = a[2:].partition("=")
            if not v:
                i += 1
                v = argv[i] if i < len(argv) else ""
            opts[k] = v
        else:
            pos.append(a)
        i += 1
    binary = os.path.abspath(pos[0]) if pos else os.path.join(ROOT, "target", "release", "freeway")
    only = opts.get("only", "").upper()
    out = opts.get("out", os.path.join(ROOT, "bench", "results", "eventloop.md"))
    examples = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                            "release", "examples")
    fill = opts.get("fill", os.path.join(examples, "fill_log"))
    mock = opts.get("mock", os.path.join(examples, "mock_upstream"))
    if only not in ("", "A", "B"):
        sys.exit("--only A or --only B")
    if not os.access(binary, os.X_OK):
        sys.exit(f"no binary at {binary}")

    sys.setswitchinterval(0.0005)  # threads waiting for the GIL would add to the latencies
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    rows, heads = [], []
    tmp = tempfile.mkdtemp(prefix="freeway-eventloop.")
    ok = False
    try:
        if only in ("", "A"):
            a_rows, head = measure_a(binary, tmp, fill, mock)
            rows += a_rows
            heads.append(head)
        if only in ("", "B"):
            rows += measure_b(binary, tmp)
        ok = True
    finally:
        stop_all()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"failed; logs kept in {tmp}")

    lines = [
        "# Event loop under admin work",
        "",
        f"`bench/eventloop.py {binary}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load} at the start, "
        f"{time.monotonic() - started:.0f} s in all.",
        "",
        *[f"{h}." for h in heads],
        "" if heads else None,
        "| measure | result |",
        "|---|---|",
        *[f"| {what} | {result} |" for what, result in rows],
    ]
    text = "\n".join(l for l in lines if l is not None) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
