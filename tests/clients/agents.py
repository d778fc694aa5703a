#!/usr/bin/env python3
"""Claude Code, Codex CLI and the Gemini CLI, offline, against Freeway and the scripted mock
upstream.

Usage: agents.py --freeway BIN [--npm PREFIX] [--only claude|codex|gemini] [--keep]
  BIN     the freeway binary.
  PREFIX  where `npm install --prefix` put @anthropic-ai/claude-code, @openai/codex and
          @google/gemini-cli (default: target/clients/npm beside this repository; ./test.sh
          installs them).
  --keep  keep the temporary directory (configs, logs, the agents' homes) and print its path.

Everything runs in a network namespace that has only a loopback interface: started
elsewhere, the script re-runs itself under `unshare -n` (root, or a user namespace, needed)
and brings `lo` up. Inside, it starts tests/clients/mock_upstream.py and Freeway (a fixed
client key, `[custom.mock]` pointing at the mock), then for each agent a one-turn task
("say hi") and a tool-using turn ("please run the command": the mock asks for
`echo hello-from-tool`, the agent runs it, the mock answers "done: hello-from-tool"). Each
run gets a throwaway HOME, has every retry off, and Claude Code has its non-streaming fallback
off, so a broken stream fails loudly instead of being papered over.
Prints one line per step (`ok   ...` / `FAIL ...`, with the agent's output on failure) and
exits 1 if any step failed.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from stack import CLIENT_KEY, HERE, Stack, tail  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
TEXT = "hi there from mock"
MARKER = "hello-from-tool"
TOOL_ANSWER = "done: " + MARKER
AGENT_TIMEOUT = 90
NETNS_MARK = "FREEWAY_AGENTS_NETNS"

failures = []


def say(line):
    print(line, flush=True)


def report(ok, step, detail, evidence=""):
    say(("ok   " if ok else "FAIL ") + step + ": " + detail)
    if not ok:
        failures.append(step)
        if evidence:
            say("  | " + evidence.rstrip().replace("\n", "\n  | "))


def ensure_loopback_only_netns(argv):
    """Re-run under `unshare -n` unless this namespace already has nothing but `lo`."""
    with open("/proc/self/net/dev") as f:  # per network namespace, unlike /sys/class/net
        names = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    others = [i for i in names if i != "lo"]
    if others:
        if os.environ.get(NETNS_MARK):
            sys.exit(f"still see network interfaces {others} after unshare -n")
        unshare = shutil.which("unshare")
        if not unshare:
            sys.exit("`unshare` is missing (util-linux): ./test.sh installs it")
        env = dict(os.environ, **{NETNS_MARK: "1"})
        cmd = [unshare, "-n"]
        if os.geteuid() != 0:
            cmd += ["-r"]  # a user namespace, so an unprivileged user may make the netns
        os.execve(unshare, cmd + [sys.executable, os.path.abspath(__file__)] + argv, env)
    ip = shutil.which("ip") or "/usr/sbin/ip"
    if not os.path.exists(ip):
        sys.exit("`ip` is missing (iproute2): ./test.sh installs it")
    subprocess.run([ip, "link", "set", "lo", "up"], check=True)


def upstream_log(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


def upstream_tool_messages(path, since_index):
    """Tool-role messages the mock upstream received in chat requests after `since_index`."""
    found = []
    for e in upstream_log(path)[since_index:]:
        body = e.get("body")
        if isinstance(body, dict):
            for m in body.get("messages") or []:
                if m.get("role") == "tool":
                    found.append(m)
    return found


def run_agent(name, cmd, env, cwd, tmp):
    out = os.path.join(tmp, name + ".stdout")
    err = os.path.join(tmp, name + ".stderr")
    t0 = time.time()
    try:
        rc = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=open(out, "w"),
                            stderr=open(err, "w"), timeout=AGENT_TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    with open(out, errors="replace") as f:
        stdout = f.read()
    evidence = f"exit {rc} after {time.time() - t0:.1f}s\nstdout:\n{stdout[-3000:]}\nstderr:\n{tail(err, 40)}"
    return rc, stdout, evidence, time.time() - t0


def fresh_dir(tmp, prefix):
    return tempfile.mkdtemp(prefix=prefix, dir=tmp)


# ---------------------------------------------------------------- Claude Code

def claude_env(stack, home, auth_var):
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": stack.url,
        auth_var: CLIENT_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        # A broken stream must fail, not be retried without streaming.
        "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }


def claude_result(stdout):
    """The `result` object of `--output-format json` (the last JSON line)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return None


def claude(stack, npm):
    exe = os.path.join(npm, "node_modules", ".bin", "claude")
    if not os.path.exists(exe):
        report(False, "claude", f"{exe} is missing: ./test.sh installs @anthropic-ai/claude-code with npm")
        return
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin", "HOME": fresh_dir(stack.tmp, "cc-home-")})
    say(f"claude --version: {version.stdout.strip() or version.stderr.strip()}")

    # 1. One turn, the default (claude-*) model mapped by Freeway, the key as ANTHROPIC_API_KEY (x-api-key).
    work = fresh_dir(stack.tmp, "cc-work-")
    env = claude_env(stack, fresh_dir(stack.tmp, "cc-home-"), "ANTHROPIC_API_KEY")
    rc, stdout, evidence, secs = run_agent("claude-say-hi", [exe, "-p", "say hi", "--output-format", "json"],
                                           env, work, stack.tmp)
    res = claude_result(stdout)
    ok = rc == 0 and res is not None and not res.get("is_error") and res.get("result") == TEXT
    report(ok, "claude -p 'say hi' (default model, ANTHROPIC_API_KEY)",
           f"result {res.get('result')!r} in {secs:.1f}s" if res else f"exit {rc}, no JSON result",
           evidence + "\nFreeway:\n" + stack.freeway_output())

    # 2. A tool-using turn: Bash runs `echo hello-from-tool`; the key as ANTHROPIC_AUTH_TOKEN (Bearer).
    work = fresh_dir(stack.tmp, "cc-work-")
    env = claude_env(stack, fresh_dir(stack.tmp, "cc-home-"), "ANTHROPIC_AUTH_TOKEN")
    before = len(upstream_log(stack.mock_log))
    rc, stdout, evidence, secs = run_agent(
        "claude-tool", [exe, "-p", "please run the command", "--model", "mock-model", "--allowedTools", "Bash",
                        "--output-format", "json"], env, work, stack.tmp)
    res = claude_result(stdout)
    tools = upstream_tool_messages(stack.mock_log, before)
    saw_output = any(MARKER in json.dumps(m.get("content")) for m in tools)
    ok = (rc == 0 and res is not None and not res.get("is_error") and TOOL_ANSWER in (res.get("result") or "")
          and saw_output and (res.get("num_turns") or 0) >= 2)
    detail = (f"result {res.get('result')!r}, {res.get('num_turns')} turns, upstream saw {len(tools)} tool "
              f"message(s){' with the output' if saw_output else ' WITHOUT the command output'} in {secs:.1f}s"
              if res else f"exit {rc}, no JSON result")
    report(ok, "claude -p 'please run the command' (Bash tool, --model mock-model, ANTHROPIC_AUTH_TOKEN)",
           detail, evidence + "\nupstream tool messages: " + json.dumps(tools)[:1000] +
           "\nFreeway:\n" + stack.freeway_output())


# ---------------------------------------------------------------- Codex CLI

def codex_binary(npm):
    native = sorted(glob.glob(os.path.join(npm, "node_modules", "@openai", "codex-linux-*", "vendor", "*", "bin",
                                           "codex")))
    if native:
        return native[0]
    wrapper = os.path.join(npm, "node_modules", ".bin", "codex")
    return wrapper if os.path.exists(wrapper) else None


def codex_home(stack):
    home = fresh_dir(stack.tmp, "codex-home-")
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(f'''model = "mock-model"
model_provider = "freeway"

[model_providers.freeway]
name = "Freeway"
base_url = "{stack.url}/v1"
env_key = "FREEWAY_API_KEY"
wire_api = "responses"
# A broken stream must fail at once, not be retried.
stream_max_retries = 0
request_max_retries = 0

[analytics]
enabled = false

[features]
plugins = false
''')
    return home


def codex(stack, npm):
    exe = codex_binary(npm)
    if not exe:
        report(False, "codex", f"no codex under {npm}/node_modules: ./test.sh installs @openai/codex with npm")
        return
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin", "HOME": fresh_dir(stack.tmp, "codex-h-")})
    say(f"codex --version: {version.stdout.strip() or version.stderr.strip()}")
    base = [exe, "exec", "--skip-git-repo-check", "--ephemeral"]

    def env(home):
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": fresh_dir(stack.tmp, "codex-h-"),
                "CODEX_HOME": home, "FREEWAY_API_KEY": CLIENT_KEY, "TERM": "dumb"}

    # 1. One turn.
    home = codex_home(stack)
    last = os.path.join(stack.tmp, "codex-say-hi.last")
    rc, stdout, evidence, secs = run_agent("codex-say-hi", base + ["-o", last, "say hi"], env(home),
                                           fresh_dir(stack.tmp, "codex-work-"), stack.tmp)
    answer = open(last).read().strip() if os.path.exists(last) else None
    report(rc == 0 and answer == TEXT, "codex exec 'say hi'", f"exit {rc}, answer {answer!r} in {secs:.1f}s",
           evidence + "\nFreeway:\n" + stack.freeway_output())

    # 2. A tool-using turn: exec_command runs `echo hello-from-tool`.
    home = codex_home(stack)
    last = os.path.join(stack.tmp, "codex-tool.last")
    before = len(upstream_log(stack.mock_log))
    rc, stdout, evidence, secs = run_agent("codex-tool", base + ["-o", last, "please run the command"], env(home),
                                           fresh_dir(stack.tmp, "codex-work-"), stack.tmp)
    answer = open(last).read().strip() if os.path.exists(last) else None
    tools = upstream_tool_messages(stack.mock_log, before)
    saw_output = any(MARKER in json.dumps(m.get("content")) for m in tools)
    ok = rc == 0 and answer is not None and TOOL_ANSWER in answer and saw_output
    report(ok, "codex exec 'please run the command' (exec_command tool)",
           f"exit {rc}, answer {answer!r}, upstream saw {len(tools)} tool message(s)"
           f"{' with the output' if saw_output else ' WITHOUT the command output'} in {secs:.1f}s",
           evidence + "\nupstream tool messages: " + json.dumps(tools)[:1000] + "\nFreeway:\n" + stack.freeway_output())


# ---------------------------------------------------------------- Gemini CLI

def gemini_home(stack):
    """A HOME whose settings pick the API-key auth (else "Invalid auth method selected", exit
    41) and send nothing anywhere but Freeway."""
    home = fresh_dir(stack.tmp, "gemini-home-")
    os.makedirs(os.path.join(home, ".gemini"))
    with open(os.path.join(home, ".gemini", "settings.json"), "w") as f:
        json.dump({
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "privacy": {"usageStatisticsEnabled": False},
            "telemetry": {"enabled": False},
            "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
        }, f)
    return home


def gemini_env(stack, home):
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TERM": "dumb",
        "GOOGLE_GEMINI_BASE_URL": stack.url,
        "GEMINI_API_KEY": CLIENT_KEY,
        # Else the CLI refuses an untrusted folder in a non-interactive run (exit 55).
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "NO_COLOR": "1",
    }


def gemini_result(stdout):
    """The object `--output-format json` prints (`response`, `stats`)."""
    start = stdout.find("{")
    while start != -1:
        try:
            return json.loads(stdout[start:])
        except ValueError:
            start = stdout.find("{", start + 1)
    return None


def gemini(stack, npm):
    exe = os.path.join(npm, "node_modules", ".bin", "gemini")
    if not os.path.exists(exe):
        report(False, "gemini", f"{exe} is missing: ./test.sh installs @google/gemini-cli with npm")
        return
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": fresh_dir(stack.tmp, "gemini-h-")})
    say(f"gemini --version: {version.stdout.strip() or version.stderr.strip()}")

    # 1. One turn, the CLI's default (gemini-*) model mapped by Freeway's [gemini_api].
    env = gemini_env(stack, gemini_home(stack))
    rc, stdout, evidence, secs = run_agent("gemini-say-hi", [exe, "-p", "say hi", "--output-format", "json"],
                                           env, fresh_dir(stack.tmp, "gemini-work-"), stack.tmp)
    res = gemini_result(stdout)
    answer = (res or {}).get("response")
    report(rc == 0 and answer is not None and answer.strip() == TEXT, "gemini -p 'say hi' (default model)",
           f"exit {rc}, response {answer!r} in {secs:.1f}s", evidence + "\nFreeway:\n" + stack.freeway_output())

    # 2. A tool-using turn: run_shell_command runs `echo hello-from-tool` (--yolo: no one is
    # there to approve it).
    env = gemini_env(stack, gemini_home(stack))
    before = len(upstream_log(stack.mock_log))
    rc, stdout, evidence, secs = run_agent(
        "gemini-tool", [exe, "-p", "please run the command", "--yolo", "--output-format", "json"],
        env, fresh_dir(stack.tmp, "gemini-work-"), stack.tmp)
    res = gemini_result(stdout)
    answer = (res or {}).get("response") or ""
    tools = upstream_tool_messages(stack.mock_log, before)
    saw_output = any(MARKER in json.dumps(m.get("content")) for m in tools)
    # The CLI frames a command's output ("Output: hello-from-tool"); the mock answers its line.
    ok = rc == 0 and answer.startswith("done: ") and MARKER in answer and saw_output
    report(ok, "gemini -p 'please run the command' (run_shell_command tool, --yolo)",
           f"exit {rc}, response {answer!r}, upstream saw {len(tools)} tool message(s)"
           f"{' with the output' if saw_output else ' WITHOUT the command output'} in {secs:.1f}s",
           evidence + "\nupstream tool messages: " + json.dumps(tools)[:1000] + "\nFreeway:\n" + stack.freeway_output())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--freeway", required=True)
    p.add_argument("--npm", default=os.path.join(REPO, "target", "clients", "npm"))
    p.add_argument("--only", choices=["claude", "codex", "gemini"])
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    args.freeway = os.path.abspath(args.freeway)
    args.npm = os.path.abspath(args.npm)
    ensure_loopback_only_netns(sys.argv[1:])
    if not os.access(args.freeway, os.X_OK):
        sys.exit(f"no freeway binary at {args.freeway}")
    tmp = tempfile.mkdtemp(prefix="freeway-agents-")
    stack = None
    try:
        stack = Stack(args.freeway, tmp)
        say(f"mock upstream on 127.0.0.1:{stack.mock_port}, Freeway on {stack.url}")
        if args.only in (None, "claude"):
            claude(stack, args.npm)
        if args.only in (None, "codex"):
            codex(stack, args.npm)
        if args.only in (None, "gemini"):
            gemini(stack, args.npm)
    finally:
        if stack:
            stack.close()
        if args.keep or failures:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    say("agents: " + ("all steps ok" if not failures else f"{len(failures)} step(s) FAILED: {failures}"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
