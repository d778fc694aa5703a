#!/usr/bin/env bash
# Analytics at scale: a data dir with a million logged requests over 30 days, and how long the
# analytics API and page take for each window.
#
#   bench/analytics.sh            # from anywhere: it cd's to the repo
#
# Fills a fresh data dir with examples/fill_log.rs (the request log's own write path, so the
# hourly rollups are kept as a running Freeway keeps them), starts Freeway on it, logs in to the
# admin API and times, ANALYTICS_ROUNDS times each after one warm-up, GET /admin/api/analytics
# for 24h, 7d and 30d, the Analytics page for 30d and GET /admin/api/requests (newest 50).
# Writes bench/results/analytics.md (also printed). Knobs (env, defaults in brackets):
#   ANALYTICS_REQUESTS [1000000]  ANALYTICS_DAYS [30]  ANALYTICS_ROUNDS [5]  BENCH_SKIP_BUILD [0]
#   ANALYTICS_OUT [bench/results/analytics.md]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=analytics
REQUESTS=${ANALYTICS_REQUESTS:-1000000}
DAYS=${ANALYTICS_DAYS:-30}
ROUNDS=${ANALYTICS_ROUNDS:-5}
OUT=${ANALYTICS_OUT:-$ROOT/bench/results/analytics.md}
PASSWORD=bench-password-123

command -v python3 >/dev/null || die "python3 is required (times the API)"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release ..."
    cargo build --release --bin freeway --example fill_log >&2
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FREEWAY=$TARGET_DIR/release/freeway
FILL=$TARGET_DIR/release/examples/fill_log
for b in "$FREEWAY" "$FILL"; do [ -x "$b" ] || die "missing binary $b"; done

new_workdir freeway-analytics
log "filling $REQUESTS requests over $DAYS days ..."
FILLED=$("$FILL" "$WORK/data" "$REQUESTS" "$DAYS")
log "$FILLED"
DB_MB=$(du -sm "$WORK/data" | cut -f1)

cat >"$WORK/freeway.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$WORK/data"
[auth]
api_keys = ["fw-bench"]
admin_password = "env:BENCH_ADMIN_PASSWORD"
EOF
BENCH_ADMIN_PASSWORD=$PASSWORD FREEWAY_LOG=warn "$FREEWAY" --config "$WORK/freeway.toml" \
    >"$WORK/freeway.log" 2>&1 &
FW_PID=$!
PIDS+=("$FW_PID")
FW_ADDR=$(wait_line "$WORK/freeway.log" '^Freeway listening on http://' 120 "$FW_PID" | sed 's|^Freeway listening on http://||')
log "freeway on $FW_ADDR (pid $FW_PID)"

python3 - "$FW_ADDR" "$PASSWORD" "$ROUNDS" "$REQUESTS" "$DAYS" "$DB_MB" "$FILLED" "$OUT" <<'PY'
import http.client, json, platform, statistics, sys, time
addr, password, rounds, requests, days, db_mb, filled, out = sys.argv[1:]
rounds = int(rounds)
host, port = addr.rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port), timeout=120)

def call(method, path, body=None, cookie=None):
    headers = {"content-type": "application/json"}
    if cookie:
        headers["cookie"] = cookie
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = conn.getresponse()
    data = r.read()
    return r, data

r, data = call("POST", "/admin/api/login", {"password": password})
assert r.status == 200, (r.status, data)
cookie = r.getheader("set-cookie").split(";")[0]

rows = []
for label, path in [
    ("analytics API, 24h", "/admin/api/analytics?window=24h"),
    ("analytics API, 7d", "/admin/api/analytics?window=7d"),
    ("analytics API, 30d", "/admin/api/analytics?window=30d"),
    ("Analytics page, 30d (HTML, with recent requests)", "/admin/analytics?window=30d"),
    ("requests API, newest 50", "/admin/api/requests?limit=50"),
]:
    times = []
    for i in range(rounds + 1):
        t0 = time.perf_counter()
        r, data = call("GET", path, cookie=cookie)
        dt = (time.perf_counter() - t0) * 1000
        assert r.status == 200, (path, r.status, data[:300])
        if i:
            times.append(dt)
    extra = ""
    if path.startswith("/admin/api/analytics"):
        total = json.loads(data)["totals"]["requests"]
        extra = f"{total:,} requests in the window"
    rows.append((label, min(times), statistics.median(times), max(times), len(data), extra))

lines = [
    "# Analytics at scale",
    "",
    f"`bench/analytics.sh`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
    f"{platform.machine()}, {rounds} timed rounds after one warm-up each.",
    "",
    f"Data: {int(requests):,} logged requests over {days} days ({filled.strip()}); "
    f"data dir {db_mb} MB.",
    "",
    "| what | min ms | median ms | max ms | bytes | |",
    "|---|---:|---:|---:|---:|---|",
]
for label, lo, med, hi, size, extra in rows:
    lines.append(f"| {label} | {lo:.1f} | {med:.1f} | {hi:.1f} | {size:,} | {extra} |")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
PY
kill -0 "$FW_PID" 2>/dev/null || die "freeway died during the run"
