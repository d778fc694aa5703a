#!/usr/bin/env python3
"""The scripted mock upstream and Freeway in front of it, for the client tests.

Usage: stack.py --freeway BIN [--keep] [-- COMMAND ARGS...]
Starts tests/clients/mock_upstream.py and Freeway (a fixed client key, `[custom.mock]` with
`mock-model` pointing at the mock) in a temporary directory, then runs COMMAND with
FREEWAY_URL (Freeway's root), FREEWAY_KEY and MOCK_LOG (the mock's request log) in its
environment and exits with its status; without COMMAND, prints those and waits for Ctrl-C.
Example:
  python3 tests/clients/stack.py --freeway target/debug/freeway -- \
      target/clients/venv/bin/python tests/clients/sdk_anthropic.py
"""
import argparse
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_KEY = "fw-test"


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def wait_for_line(proc, pattern, timeout, what, log_path=None):
    """Wait until `proc`'s stdout (a byte pipe) prints a line matching `pattern`; returns the match.
    Reads the pipe directly, so the pipe can be handed on afterwards with nothing lost but
    the lines read here."""
    deadline = time.time() + timeout
    fd = proc.stdout.fileno()
    buf = b""
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            m = re.search(pattern, buf.decode(errors="replace"))
            if m:
                return m
        elif proc.poll() is not None:
            break
    print(buf.decode(errors="replace"), flush=True)
    if log_path:
        print(tail(log_path), flush=True)
    raise RuntimeError(f"{what} did not start (no line matching {pattern!r} within {timeout}s)")


class Stack:
    """The mock upstream and Freeway, in a temporary directory."""

    def __init__(self, freeway, tmp):
        self.tmp = tmp
        self.procs = []
        try:
            self._start(freeway, tmp)
        except BaseException:
            self.close()
            raise

    def _start(self, freeway, tmp):
        self.mock_log = os.path.join(tmp, "upstream.jsonl")
        mock = subprocess.Popen([sys.executable, os.path.join(HERE, "mock_upstream.py"), "0", self.mock_log],
                                stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "mock.err"), "w"))
        self.procs.append(mock)
        port = wait_for_line(mock, r"listening on 127\.0\.0\.1:(\d+)", 10, "the mock upstream").group(1)
        config = os.path.join(tmp, "freeway.toml")
        with open(config, "w") as f:
            f.write(f'''listen = "127.0.0.1:0"
data_dir = "{os.path.join(tmp, 'freeway-data')}"

[auth]
api_keys = ["{CLIENT_KEY}"]

[custom.mock]
base_url = "http://127.0.0.1:{port}/v1"
keys = ["sk-mock-upstream"]
models = [{{ id = "mock-model", context = 131072, tools = true, vision = true }}]
''')
        env = {k: v for k, v in os.environ.items() if not k.startswith("FREEWAY_")}
        self.freeway_log = os.path.join(tmp, "freeway.log")
        fw = subprocess.Popen([freeway, "serve", "--config", config], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=open(self.freeway_log, "w"))
        self.procs.append(fw)
        self.fw = fw
        m = wait_for_line(fw, r"Freeway listening on (http://[0-9.]+:\d+)", 30, "Freeway", self.freeway_log)
        self.url = m.group(1)
        # Keep draining Freeway's stdout (its logs) into a file so it never blocks on the pipe.
        self.drain = subprocess.Popen(["cat"], stdin=fw.stdout, stdout=open(os.path.join(tmp, "freeway.out"), "w"))
        self.procs.append(self.drain)
        self.mock_port = int(port)

    def freeway_output(self):
        return (tail(os.path.join(self.tmp, "freeway.out"), 30) + "\n" + tail(self.freeway_log, 30)
                + "\nmock upstream:\n" + tail(os.path.join(self.tmp, "mock.err"), 10))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--freeway", required=True)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    tmp = tempfile.mkdtemp(prefix="freeway-stack-")
    rc = 0
    try:
        with Stack(os.path.abspath(args.freeway), tmp) as stack:
            env = dict(os.environ, FREEWAY_URL=stack.url, FREEWAY_KEY=CLIENT_KEY, MOCK_LOG=stack.mock_log)
            print(f"FREEWAY_URL={stack.url} FREEWAY_KEY={CLIENT_KEY} MOCK_LOG={stack.mock_log}", flush=True)
            if command:
                rc = subprocess.run(command, env=env).returncode
                if rc:
                    print("Freeway and the mock upstream said:\n" + stack.freeway_output(), flush=True)
            else:
                try:
                    while stack.fw.poll() is None:
                        time.sleep(1)
                except KeyboardInterrupt:
                    pass
    finally:
        if args.keep or rc:
            print(f"kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
