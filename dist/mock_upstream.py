#!/usr/bin/env python3
"""A tiny OpenAI-dialect upstream for the deployment smoke tests (stdlib only).

    python3 dist/mock_upstream.py [--host 127.0.0.1] [--port 0] [--exit-after SECONDS]

Prints `listening on HOST:PORT` as its first line, then serves:
  POST /v1/chat/completions   a fixed answer "pong from mock"; with "stream": true the same
                              text as SSE chunks ("pong", " from", " mock"), a usage chunk, [DONE]
  GET  /v1/models             one model, mock-model
  GET  /stats                 {"chat": N, "stream": N, "auth": [the last Authorization header]}
It exits by itself after --exit-after seconds (default 900), so a test that dies leaves nothing
running for long.
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TEXT = ["pong", " from", " mock"]
STATS = {"chat": 0, "stream": 0, "auth": []}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.endswith("/models"):
            self.send_json(200, {"object": "list", "data": [
                {"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]})
        elif self.path == "/stats":
            with LOCK:
                self.send_json(200, STATS)
        else:
            self.send_json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            req = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self.send_json(400, {"error": {"message": "bad json"}})
            return
        if not self.path.endswith("/chat/completions"):
            self.send_json(404, {"error": {"message": "not found"}})
            return
        model = req.get("model", "mock-model")
        stream = bool(req.get("stream"))
        with LOCK:
            STATS["stream" if stream else "chat"] += 1
            STATS["auth"] = STATS["auth"][-9:] + [self.headers.get("Authorization", "")]
        usage = {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
        if not stream:
            self.send_json(200, {
                "id": "chatcmpl-mock", "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(TEXT)}}],
                "usage": usage})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(obj):
            data = obj if isinstance(obj, str) else json.dumps(obj)
            frame = f"data: {data}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()

        base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}
        for i, piece in enumerate(TEXT):
            delta = {"content": piece}
            if i == 0:
                delta["role"] = "assistant"
            event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            time.sleep(0.02)
        event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        event({**base, "choices": [], "usage": usage})
        event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--exit-after", type=float, default=900)
    args = ap.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    timer = threading.Timer(args.exit_after, server.shutdown)
    timer.daemon = True
    timer.start()
    server.serve_forever()


if __name__ == "__main__":
    main()
