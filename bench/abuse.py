#!/usr/bin/env python3
"""Freeway under abuse, measured: slow clients, huge bodies, a crash right after a cap filled.

    bench/abuse.py [path/to/freeway] [--only slowloris|silent|crash|memory]

Starts the given release binary (default target/release/freeway) with a fresh data directory
and a mock upstream (Python, on 127.0.0.1), and prints one markdown table:

- slowloris: with the open-file limit at 1,024 (prlimit) and 1,100 connections that send a
  partial request line and then a byte a second, how long a fresh client waits for /livez;
- silent: 500 connections that send nothing; how many the server has closed after 25 s;
- crash: a model capped at 100 requests a day, requests at 50 req/s until the first 429, kill -9,
  restart, 100 more requests at 50 req/s: how many got through (the overshoot);
- memory: peak RSS for one 23 MB body of ~780k tiny messages, for four at once, for invalid
  JSON of the same size, and RSS 5 s after the four.

Uses only the Python standard library and `prlimit` (util-linux). Not a test: no assertions.
"""

import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "freeway")
CLIENT_KEY = "fw-abuse-bench"


class Mock(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible upstream that answers every chat request at once."""

    protocol_version = "HTTP/1.1"
    calls = 0

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        remaining = length
        while remaining > 0:
            remaining -= len(self.rfile.read(min(remaining, 1 << 20)))
        Mock.calls += 1
        body = json.dumps({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": "mock-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_mock():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mock)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


class Freeway:
    def __init__(self, binary, data_dir, config, prefix=()):
        os.makedirs(data_dir, exist_ok=True)
        path = os.path.join(data_dir, "..", os.path.basename(data_dir) + ".toml")
        with open(path, "w") as f:
            f.write(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FREEWAY_")}
        env.update(FREEWAY_LISTEN="127.0.0.1:0", FREEWAY_DATA_DIR=data_dir,
                   FREEWAY_CONFIG=path, FREEWAY_LOG="warn")
        self.proc = subprocess.Popen([*prefix, binary, "serve"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, text=True)
        self.addr = None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("Freeway listening on http://"):
                self.addr = line.split("http://", 1)[1]
            if "OpenAI base URL" in line and self.addr:
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        host, port = self.addr.rsplit(":", 1)
        self.host, self.port = host, int(port)

    def rss(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def chat(self, body, timeout=120):
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        c.request("POST", "/v1/chat/completions", body=body,
                  headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"})
        r = c.getresponse()
        r.read()
        c.close()
        return r.status

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.kill9()


def config(mock_port, extra_model=""):
    return (f'[auth]\napi_keys = ["{CLIENT_KEY}"]\n[custom.mock]\n'
            f'base_url = "http://127.0.0.1:{mock_port}/v1"\nkeys = ["sk-mock"]\n'
            f'models = [{{ id = "mock-model", context = 100000000 {extra_model} }}]\n')


def slowloris(binary, tmp, mock_port):
    fw = Freeway(binary, os.path.join(tmp, "slow"), config(mock_port),
                 prefix=("prlimit", "--nofile=1024:1024"))
    conns = []
    for _ in range(1100):
        try:
            s = socket.create_connection((fw.host, fw.port), timeout=0.5)
            s.sendall(b"GET /livez HTTP/1.1\r\nHos")
            conns.append(s)
        except OSError:
            pass
    stop = threading.Event()

    def drip():
        while not stop.is_set():
            for s in conns:
                try:
                    s.sendall(b"t")
                except OSError:
                    pass
            stop.wait(1)

    threading.Thread(target=drip, daemon=True).start()
    t0 = time.monotonic()
    waited = None
    try:
        c = http.client.HTTPConnection(fw.host, fw.port, timeout=60)
        c.request("GET", "/livez")
        if c.getresponse().status == 200:
            waited = time.monotonic() - t0
    except OSError:
        pass
    stop.set()
    for s in conns:
        s.close()
    fw.stop()
    shown = f"{waited:.2f} s" if waited is not None else "not served within 60 s"
    return [("fresh client served, 1,100 slow connections, 1,024-file limit", shown)]


def silent(binary, tmp, mock_port):
    fw = Freeway(binary, os.path.join(tmp, "silent"), config(mock_port))
    conns = [socket.create_connection((fw.host, fw.port)) for _ in range(500)]
    time.sleep(25)
    closed = 0
    for s in conns:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    fw.stop()
    return [("silent connections closed after 25 s", f"{closed} / 500")]


def at_rate(fw, body, n, rate, stop_at_429=False):
    served = 0
    for i in range(n):
        t = time.monotonic()
        status = fw.chat(body)
        if status == 200:
            served += 1
        elif status == 429 and stop_at_429:
            return served, i + 1
        time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - t)))
    return served, n


def crash(binary, tmp, mock_port):
    data = os.path.join(tmp, "crash")
    body = json.dumps({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]})
    fw = Freeway(binary, data, config(mock_port, ", rpd = 100"))
    before, _ = at_rate(fw, body, 200, 50, stop_at_429=True)
    fw.kill9()
    fw = Freeway(binary, data, config(mock_port, ", rpd = 100"))
    after, _ = at_rate(fw, body, 100, 50)
    fw.stop()
    return [("requests served before the first 429 (cap 100/day)", str(before)),
            ("served after kill -9 and restart, 100 sent at 50 req/s (overshoot)", str(after))]


def big_body(valid=True):
    message = b'{"role":"user","content":"x"},'
    n = 23_000_000 // len(message)
    body = b'{"model":"mock-model","messages":[' + message * (n - 1) + b'{"role":"user","content":"x"}]}'
    if not valid:
        body = body[:-2] + b"}}"
    return body, n


def memory(binary, tmp, mock_port):
    rows = []
    body, n = big_body()
    bad, _ = big_body(valid=False)
    mb = len(body) / 1e6
    for name, bodies in [("one", [body]), ("four at once", [body] * 4), ("invalid JSON", [bad])]:
        fw = Freeway(binary, os.path.join(tmp, "mem-" + name.replace(" ", "-")), config(mock_port))
        idle = fw.rss("VmRSS")
        statuses = []
        threads = [threading.Thread(target=lambda b=b: statuses.append(fw.chat(b))) for b in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = fw.rss("VmHWM")
        rows.append((f"peak RSS, {name} ({mb:.1f} MB body, {n} messages; answers {sorted(statuses)})",
                     f"{peak:.0f} MB (idle {idle:.0f} MB)"))
        if len(bodies) == 4:
            time.sleep(5)
            rows.append(("RSS 5 s after the four", f"{fw.rss('VmRSS'):.0f} MB"))
        fw.stop()
    return rows


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--only")]
    only = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--only=")]
    binary = os.path.abspath(args[0]) if args else BIN
    mock_port = start_mock()
    parts = {"slowloris": slowloris, "silent": silent, "crash": crash, "memory": memory}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, part in parts.items():
            if only and name not in only:
                continue
            print(f"[abuse] {name} ...", file=sys.stderr, flush=True)
            rows.extend(part(binary, tmp, mock_port))
    print(f"\nFreeway under abuse: {binary}\n")
    print("| measure | result |")
    print("|---|---|")
    for what, result in rows:
        print(f"| {what} | {result} |")


if __name__ == "__main__":
    main()
