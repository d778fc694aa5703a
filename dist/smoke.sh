#!/usr/bin/env bash
# Smoke test of one Freeway binary, as a person trying a downloaded archive would use it:
#
#   dist/smoke.sh BINARY
#
# An aarch64 binary runs under qemu-aarch64-static (without -L: a static binary needs no
# libraries, and with the arm64 libc installed -L mixes two glibc builds); an x86_64 one runs as
# it is. In a fresh temporary directory:
#   1. `--version` names the version, the commit and the binary's target;
#   2. with no configuration file and no arguments it starts (on 127.0.0.1:3001 when that port is
#      free, else FREEWAY_LISTEN=127.0.0.1:0), prints a client key and a setup link, creates
#      ./freeway-data (0700) with its key file (0600), answers /livez, serves the dashboard's
#      login page (the setup hint), and reports its idle memory; SIGTERM stops it cleanly;
#   3. with a ./freeway.toml naming a mock upstream (dist/mock_upstream.py) it proxies a chat and
#      a stream, serves the login page, logs in behind X-Forwarded-Proto: https (the cookie gets
#      Secure), and reports its idle memory again.
# Prints PASS:/FAIL: lines, then `FIGURE name=value` lines (RSS in kB); exits 1 if a check failed.
# Knobs: SMOKE_IDLE_SECS [5] how long it idles before its RSS is read; SMOKE_START_SECS [90].
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=smoke

[ $# -eq 1 ] || die "usage: dist/smoke.sh BINARY"
BIN=$(realpath "$1")
[ -x "$BIN" ] || die "$BIN is not an executable file"
IDLE=${SMOKE_IDLE_SECS:-5}
START_SECS=${SMOKE_START_SECS:-90}
command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"

ARCH=$(elf_arch "$BIN")
RUNNER=()
if [ "$ARCH" != "$(uname -m)" ]; then
    [ "$ARCH" = aarch64 ] || die "cannot run a $ARCH binary here"
    command -v qemu-aarch64-static >/dev/null \
        || die "qemu-aarch64-static is missing (apt-get install qemu-user-static)"
    RUNNER=(qemu-aarch64-static)
fi
TRIPLE="$ARCH-unknown-linux-gnu"
log "$BIN ($ARCH${RUNNER:+, under ${RUNNER[*]}})"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/freeway-smoke.XXXXXX")
trap 'cleanup_pids; rm -rf "$WORK"' EXIT
mkdir "$WORK/run"
cd "$WORK/run"

# ------------------------------------------------------------------ 1. --version
version_out=$("${RUNNER[@]}" "$BIN" --version 2>&1 || true)
log "--version: $version_out"
re="^freeway $(crate_version) \(commit [0-9a-z]+, $TRIPLE\)$"
check "--version names version, commit and target ($version_out)" \
    grep -qE "$re" <<<"$version_out"

# ------------------------------------------------------------------ helpers
FW_PID=
FW_ADDR=
# start_freeway NAME [ENV...]: start the binary in ./ with the given environment, wait for its
# banner (ended by a blank line). Sets FW_PID and FW_ADDR.
start_freeway() {
    local name=$1 line i
    shift
    env "$@" "${RUNNER[@]}" "$BIN" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    FW_PID=$!
    PIDS+=("$FW_PID")
    if ! line=$(wait_line "$WORK/$name.out" '^Freeway listening on http://' "$START_SECS" "$FW_PID"); then
        log "it did not start; stdout and stderr:"
        cat "$WORK/$name.out" "$WORK/$name.err" >&2
        return 1
    fi
    FW_ADDR=${line#Freeway listening on http://}
    # The banner ends with a blank line.
    for ((i = 0; i < 100; i++)); do
        grep -q '^$' "$WORK/$name.out" && return 0
        sleep 0.1
    done
    return 1
}

# idle_rss NAME: wait IDLE seconds, then report VmRSS (and, under emulation, an estimate of the
# guest's share).
idle_rss() {
    local name=$1 kb
    sleep "$IDLE"
    kb=$(rss_kb "$FW_PID")
    echo "FIGURE ${name}_rss_kb=$kb"
    if [ ${#RUNNER[@]} -gt 0 ]; then
        # Under qemu-user the guest lives in the emulator's process: VmRSS counts the guest's
        # memory plus qemu's own code and data and its cache of translated code (its
        # read-write-execute mapping). Both are counted apart; what is left is the guest's memory
        # plus qemu's heap (a trivial static program idles at about 2 MB of that).
        python3 - "$FW_PID" "$name" <<'PY'
import re, sys
pid, name = sys.argv[1], sys.argv[2]
cache = qemu = total = 0
perm = path = ""
head = re.compile(r"^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$")
with open(f"/proc/{pid}/smaps") as f:
    for line in f:
        m = head.match(line)
        if m:
            perm, path = m.group(1), m.group(2)
        elif line.startswith("Rss:"):
            kb = int(line.split()[1])
            total += kb
            if perm.startswith("rwx"):
                cache += kb
            elif "qemu" in path:
                qemu += kb
print(f"FIGURE {name}_qemu_code_cache_kb={cache}")
print(f"FIGURE {name}_qemu_binary_kb={qemu}")
print(f"FIGURE {name}_guest_estimate_kb={total - cache - qemu}")
PY
    fi
    [ -n "$kb" ]
}

# ------------------------------------------------------------------ 2. no configuration
ENV1=()
if python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 3001))' 2>/dev/null; then
    log "run 1: no configuration file, no arguments, no environment (127.0.0.1:3001)"
else
    log "run 1: no configuration file, no arguments; 3001 is taken: FREEWAY_LISTEN=127.0.0.1:0"
    ENV1=(FREEWAY_LISTEN=127.0.0.1:0)
fi
if start_freeway bare "${ENV1[@]}"; then
    pass "starts with no configuration (on $FW_ADDR)"
    check "first start prints a client key" \
        grep -qE '^  Your client key \(shown once, keep it\): fw-[A-Za-z0-9]{43,}$' "$WORK/bare.out"
    check "first start prints the one-time setup link" \
        grep -qE "/admin/setup\?token=[A-Za-z0-9_-]+" "$WORK/bare.out"
    check "./freeway-data is created with mode 0700" \
        test "$(stat -c %a freeway-data 2>/dev/null)" = 700
    key_file=$(find freeway-data -maxdepth 1 -name '*key*' -type f | head -1)
    check "the generated key file has mode 0600" \
        test -n "$key_file" -a "$(stat -c %a "${key_file:-/nonexistent}" 2>/dev/null)" = 600
    check "/livez answers ok" \
        test "$(curl -sS --max-time 30 "http://$FW_ADDR/livez")" = ok
    page=$(curl -sS --max-time 30 -w '\n%{http_code}' "http://$FW_ADDR/admin/login" || true)
    check "/admin/login serves the setup hint (no password yet)" \
        grep -q 'Set up Freeway' <<<"$page"
    check "idle memory is readable" idle_rss idle_first_start
    stop_pid "$FW_PID" 30
    check "SIGTERM stops it (exit status $STOP_STATUS)" test "$STOP_STATUS" = 0
else
    fail "starts with no configuration"
fi

# ------------------------------------------------------------------ 3. through a mock upstream
python3 "$ROOT/dist/mock_upstream.py" --exit-after 600 >"$WORK/mock.out" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
MOCK_ADDR=$(wait_line "$WORK/mock.out" '^listening on ' 30 "$MOCK_PID" | sed 's/^listening on //') \
    || die "the mock upstream did not start"
KEY=fw-smoke-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG
PASSWORD=smoke-admin-password
cat >freeway.toml <<EOF
listen = "127.0.0.1:0"
[auth]
api_keys = ["$KEY"]
admin_password = "$PASSWORD"
[custom.mock]
base_url = "http://$MOCK_ADDR/v1"
models = [{ id = "mock-model", context = 131072 }]
EOF
log "run 2: ./freeway.toml with a mock upstream on $MOCK_ADDR"
if start_freeway mock; then
    pass "starts again with ./freeway.toml (on $FW_ADDR)"
    check "a later start prints no client key" \
        test "$(grep -c 'Your client key' "$WORK/mock.out")" = 0
    chat() { # BODY -> the response body
        curl -sS --max-time 60 -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
            -d "$1" "http://$FW_ADDR/v1/chat/completions"
    }
    answer=$(chat '{"model":"mock-model","messages":[{"role":"user","content":"ping"}]}' || true)
    content=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])' \
        <<<"$answer" 2>/dev/null || true)
    check "proxies a chat to the mock upstream (\"$content\")" test "$content" = "pong from mock"
    chat '{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"ping"}]}' \
        >"$WORK/stream.txt" || true
    streamed=$(python3 - "$WORK/stream.txt" <<'PY' 2>/dev/null || true
import json, sys
text, done = "", False
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("data:"):
        continue
    data = line[5:].strip()
    if data == "[DONE]":
        done = True
        continue
    for c in json.loads(data).get("choices", []):
        text += (c.get("delta") or {}).get("content") or ""
print(text + ("|DONE" if done else "|no [DONE]"))
PY
    )
    check "proxies a stream to the mock upstream (\"$streamed\")" test "$streamed" = "pong from mock|DONE"
    stats=$(curl -sS --max-time 10 "http://$MOCK_ADDR/stats" || true)
    check "the mock upstream saw the chat and the stream ($stats)" \
        python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(not (s["chat"] >= 1 and s["stream"] >= 1))' <<<"$stats"
    page=$(curl -sS --max-time 30 "http://$FW_ADDR/admin/login" || true)
    check "/admin/login serves the login form" grep -q 'Admin password' <<<"$page"
    headers=$(curl -sS --max-time 60 -D - -o "$WORK/login.json" -H 'Content-Type: application/json' \
        -H 'X-Forwarded-Proto: https' -d "{\"password\":\"$PASSWORD\"}" \
        "http://$FW_ADDR/admin/api/login" || true)
    cookie=$(grep -i '^set-cookie: freeway_session=' <<<"$headers" | tr -d '\r' || true)
    secure_login() {
        [[ $cookie == *"; Secure"* && $cookie == *HttpOnly* ]] && grep -q csrf_token "$WORK/login.json"
    }
    check "admin login behind X-Forwarded-Proto: https gives a Secure, HttpOnly cookie" secure_login
    check "idle memory is readable after serving" idle_rss idle_after_traffic
    stop_pid "$FW_PID" 30
    check "SIGTERM stops it (exit status $STOP_STATUS)" test "$STOP_STATUS" = 0
else
    fail "starts again with ./freeway.toml"
fi
stop_pid "$MOCK_PID" 5

log "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
