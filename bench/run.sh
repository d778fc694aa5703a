#!/usr/bin/env bash
# Freeway load benchmark: the mock upstream measured directly and through Freeway, in one run.
#
#   bench/run.sh                 # from the repo root (or anywhere: it cd's to the repo)
#
# Writes bench/results/latest.md (also printed) and bench/results/latest.json.
# Everything listens on 127.0.0.1 (ephemeral ports); every load is bounded in time.
# Knobs (env, defaults in brackets):
#   BENCH_DURATION [10]      seconds of each throughput run (c=BENCH_CONCURRENCY), direct and via Freeway
#   BENCH_RATE_DURATION [20] seconds of each fixed-rate run
#   BENCH_C1_DURATION [10]   seconds of each concurrency-1 run
#   BENCH_CONCURRENCY [32]   BENCH_RATE [200]
#   BENCH_STREAMS [64]  BENCH_STREAM_ROUNDS [3]  BENCH_CHUNKS [20]  BENCH_CHUNK_DELAY_MS [10]
#   BENCH_HOLD_STREAMS [256] BENCH_HOLD_SECS [8]
#   BENCH_DRIVER [auto]      oha | wrk (wrk has no fixed-rate mode: test b is then skipped)
#   BENCH_SKIP_BUILD [0]     1 = use the binaries already in target/release
#   BENCH_PERF [0]           1 = perf-profile Freeway during its throughput run (needs `perf`)
#   BENCH_OUT [bench/results/latest.md]
#   BENCH_CLIENT_KEYS [0]    N > 0: N client keys configured, each with limits (SPEC 3.8)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=bench

DUR=${BENCH_DURATION:-10}
RATE_DUR=${BENCH_RATE_DURATION:-20}
C1_DUR=${BENCH_C1_DURATION:-10}
CONC=${BENCH_CONCURRENCY:-32}
RATE=${BENCH_RATE:-200}
STREAMS=${BENCH_STREAMS:-64}
STREAM_ROUNDS=${BENCH_STREAM_ROUNDS:-3}
CHUNKS=${BENCH_CHUNKS:-20}
CHUNK_DELAY=${BENCH_CHUNK_DELAY_MS:-10}
HOLD=${BENCH_HOLD_STREAMS:-256}
HOLD_SECS=${BENCH_HOLD_SECS:-8}
DRIVER=${BENCH_DRIVER:-auto}
OUT=${BENCH_OUT:-$ROOT/bench/results/latest.md}
mkdir -p "$(dirname "$OUT")"
KEY=fw-bench
BODY='{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'


command -v python3 >/dev/null || die "python3 is required (parses results)"

# ---------------------------------------------------------------- load driver
install_wrk() {
    command -v wrk >/dev/null && return 0
    log "installing wrk (apt-get) ..."
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get install -y wrk >&2 || { $sudo apt-get update >&2 && $sudo apt-get install -y wrk >&2; }
}
case "$DRIVER" in
    auto) if install_oha; then DRIVER=oha; else log "oha unavailable, falling back to wrk"; install_wrk; DRIVER=wrk; fi ;;
    oha) install_oha || die "cannot install oha" ;;
    wrk) install_wrk || die "cannot install wrk" ;;
    *) die "BENCH_DRIVER must be auto, oha or wrk" ;;
esac
if [ "$DRIVER" = oha ]; then
    if oha --help | grep -q -- '--output-format'; then OHA_FMT=(--output-format json)
    elif oha --help | grep -q -- '--json'; then OHA_FMT=(--json)
    else die "this oha has neither --output-format nor --json"; fi
    DRIVER_VERSION=$(oha --version 2>/dev/null | head -1)
else
    DRIVER_VERSION="wrk $( (wrk -v 2>&1 || true) | head -1 | awk '{print $2}')"
fi
log "load driver: $DRIVER_VERSION"

# ---------------------------------------------------------------- build
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release ..."
    cargo build --release --bin freeway --example mock_upstream --example stream_probe >&2
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FREEWAY=$TARGET_DIR/release/freeway
MOCK=$TARGET_DIR/release/examples/mock_upstream
PROBE=$TARGET_DIR/release/examples/stream_probe
for b in "$FREEWAY" "$MOCK" "$PROBE"; do [ -x "$b" ] || die "missing binary $b"; done

# ---------------------------------------------------------------- processes
new_workdir freeway-bench
R=$WORK/results
mkdir -p "$R"


"$MOCK" --port 0 --chunks "$CHUNKS" --chunk-delay-ms "$CHUNK_DELAY" \
    --slow-chunk-delay-ms 1000 --slow-chunks 100000 >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
MOCK_ADDR=$(wait_line "$WORK/mock.log" '^listening on ' 30 "$MOCK_PID" | sed 's/^listening on //')
log "mock upstream on $MOCK_ADDR (pid $MOCK_PID)"

# BENCH_CLIENT_KEYS=N: N client keys configured, each with limits (the bench key among them,
# with limits high enough never to refuse), so the client-key path (SPEC 3.8) is measured.
CLIENT_KEYS=${BENCH_CLIENT_KEYS:-0}
API_KEYS="\"$KEY\""
LIMITS=""
if [ "$CLIENT_KEYS" -gt 0 ]; then
    API_KEYS="{ name = \"bench\", key = \"$KEY\" }"
    LIMITS=$'[auth.limits.bench]\nrpm = 100000000\nrpd = 1000000000\ntpd = 100000000000\nconcurrent = 100000\nmodels = ["mock/*"]\n'
    for i in $(seq 2 "$CLIENT_KEYS"); do
        API_KEYS="$API_KEYS, { name = \"app-$i\", key = \"fw-bench-app-$i-0123456789abcdef0123456789abcdef\" }"
        LIMITS="$LIMITS"$'[auth.limits.app-'"$i"$']\nrpd = 500\nconcurrent = 4\n'
    done
    log "$CLIENT_KEYS client keys configured, each with limits"
fi
cat >"$WORK/freeway.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$WORK/data"
[auth]
api_keys = [$API_KEYS]
$LIMITS
[custom.mock]
base_url = "http://$MOCK_ADDR/v1"
models = [{ id = "mock-model", context = 131072 }, { id = "mock-slow", context = 131072 }, { id = "mock-embed", dims = 768, batch = 64 }]
[metrics]
public = true
EOF
# The same, with the answer cache on (phase g): a second process, so no other phase meets it.
sed -e "s|^data_dir = .*|data_dir = \"$WORK/data-cache\"|" "$WORK/freeway.toml" >"$WORK/freeway-cache.toml"
printf '[cache]\nenabled = true\n' >>"$WORK/freeway-cache.toml"
FREEWAY_LOG=warn "$FREEWAY" --config "$WORK/freeway.toml" >"$WORK/freeway.log" 2>&1 &
FW_PID=$!
PIDS+=("$FW_PID")
FW_ADDR=$(wait_line "$WORK/freeway.log" '^Freeway listening on http://' 60 "$FW_PID" | sed 's|^Freeway listening on http://||')
log "freeway on $FW_ADDR (pid $FW_PID)"

DIRECT_URL=http://$MOCK_ADDR/v1/chat/completions
FW_URL=http://$FW_ADDR/v1/chat/completions

http_check() { # url [key] [stream] -> prints "status body"
    python3 - "$@" <<'PY'
import sys, urllib.request, urllib.error
url = sys.argv[1]; key = sys.argv[2] if len(sys.argv) > 2 else ""
stream = len(sys.argv) > 3 and sys.argv[3] == "1"
body = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]' + (b',"stream":true}' if stream else b'}')
req = urllib.request.Request(url, data=body if "/livez" not in url else None,
                             headers={"Content-Type": "application/json", **({"Authorization": "Bearer " + key} if key else {})})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status, r.read(400).decode(errors="replace").replace("\n", "\\n"))
except urllib.error.HTTPError as e:
    print(e.code, e.read(400).decode(errors="replace").replace("\n", "\\n"))
except Exception as e:
    print(0, repr(e))
PY
}

# Readiness: /livez must answer 200.
for ((i = 0; i < 100; i++)); do
    [ "$(http_check "http://$FW_ADDR/livez" | cut -d' ' -f1)" = 200 ] && break
    sleep 0.1
done
[ "$(http_check "http://$FW_ADDR/livez" | cut -d' ' -f1)" = 200 ] || die "freeway /livez is not 200"

status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
CLK_TCK=$(getconf CLK_TCK)
# Wait (at most 15 s) until Freeway has been idle for 1 s — e.g. its request-log writer has
# drained what a saturation run queued — so one phase's leftovers don't land in the next.
settle() {
    local a b i
    for ((i = 0; i < 15; i++)); do
        a=$(cpu_ticks "$FW_PID"); sleep 1; b=$(cpu_ticks "$FW_PID")
        [ $((b - a)) -le $((CLK_TCK / 50)) ] && return 0
    done
    log "  (freeway still busy after 15 s: $((b - a)) ticks/s)"
}

sleep 1
status_kb "$FW_PID" VmRSS >"$R/rss_idle_start_kb"
log "freeway idle RSS at start: $(cat "$R/rss_idle_start_kb") kB"

# Sanity + "a few requests": each kind through both paths must be 200 (5 rounds = 10 requests
# through Freeway), then the idle RSS that the 15 MB target is about.
for ((i = 0; i < 5; i++)); do
    for u in "$DIRECT_URL" "$FW_URL"; do
        for s in 0 1; do
            out=$(http_check "$u" "$KEY" "$s")
            [ "${out%% *}" = 200 ] || die "sanity request to $u (stream=$s) failed: $out"
        done
    done
done
sleep 1
status_kb "$FW_PID" VmRSS >"$R/rss_idle_few_kb"
log "freeway idle RSS after 10 requests: $(cat "$R/rss_idle_few_kb") kB"

# ---------------------------------------------------------------- load helpers
# load NAME URL KEY ARGS... : runs the driver, writes $R/NAME.json normalised to
# {completed, duration_s, rps, p50_ms, p90_ms, p99_ms, statuses{}, errors{}}
load() {
    local name=$1 url=$2 key=$3; shift 3
    if [ "$DRIVER" = oha ]; then
        local auth=()
        [ -n "$key" ] && auth=(-H "Authorization: Bearer $key")
        [ -n "${LOAD_HEADER:-}" ] && auth+=(-H "$LOAD_HEADER")
        oha --no-tui "${OHA_FMT[@]}" "$@" -m POST -T application/json -d "$BODY" "${auth[@]}" \
            "$url" >"$R/$name.raw.json" 2>"$R/$name.err" || { cat "$R/$name.err" >&2; die "oha failed ($name)"; }
        python3 - "$R/$name.raw.json" >"$R/$name.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["summary"]; p = d.get("latencyPercentiles", {})
codes = {str(k): int(v) for k, v in d.get("statusCodeDistribution", {}).items()}
done = sum(codes.values())
ms = lambda v: None if v is None else v * 1000.0
print(json.dumps({"completed": done, "ok": codes.get("200", 0), "duration_s": s["total"],
                  "rps": done / s["total"] if s["total"] else 0.0,
                  "p50_ms": ms(p.get("p50")), "p90_ms": ms(p.get("p90")), "p99_ms": ms(p.get("p99")),
                  "statuses": codes, "errors": d.get("errorDistribution", {})}))
PY
    else
        # wrk: translate the oha-style arguments we use (-c N -z Ds).
        local c=1 z=10s
        while [ $# -gt 0 ]; do
            case "$1" in -c) c=$2; shift 2 ;; -z) z=$2; shift 2 ;; *) shift ;; esac
        done
        cat >"$R/$name.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
$( [ -n "$key" ] && echo "wrk.headers[\"Authorization\"] = \"Bearer $key\"" )
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"completed":%d,"duration_s":%f,"p50_ms":%f,"p90_ms":%f,"p99_ms":%f,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout))
end
EOF
        local threads=2
        [ "$c" -lt 2 ] && threads=1
        wrk -t"$threads" -c"$c" -d"$z" -s "$R/$name.lua" "$url" >"$R/$name.raw.txt" 2>&1 || die "wrk failed ($name)"
        python3 - "$R/$name.raw.txt" >"$R/$name.json" <<'PY'
import json, sys
line = [l for l in open(sys.argv[1]) if l.startswith("WRKJSON ")][0]
w = json.loads(line[len("WRKJSON "):])
errs = {k: w[k] for k in ("connect", "read", "write", "timeout") if w[k]}
ok = w["completed"] - w["non2xx"]
print(json.dumps({"completed": w["completed"], "ok": ok, "duration_s": w["duration_s"],
                  "rps": w["completed"] / w["duration_s"], "p50_ms": w["p50_ms"], "p90_ms": w["p90_ms"],
                  "p99_ms": w["p99_ms"], "statuses": {"200": ok, "non-2xx": w["non2xx"]}, "errors": errs}))
PY
    fi
    log "  $name: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("completed=%d rps=%.0f p50=%.3fms p99=%.3fms statuses=%s" % (d["completed"], d["rps"], d["p50_ms"] or 0, d["p99_ms"] or 0, d["statuses"]))' "$R/$name.json")"
}

# ---------------------------------------------------------------- warm-up
log "warm-up (3 s each path, c=8; connections pooled)"
load warm_direct "$DIRECT_URL" "" -c 8 -z 3s
load warm_freeway "$FW_URL" "$KEY" -c 8 -z 3s
"$PROBE" --url "$FW_URL" --key "$KEY" --concurrency 8 --warmup 0 >/dev/null
settle
status_kb "$FW_PID" VmRSS >"$R/rss_idle_warm_kb"

# ---------------------------------------------------------------- a + e: throughput, CPU
log "a) throughput c=$CONC, ${DUR}s each"
settle
load thr_direct "$DIRECT_URL" "" -c "$CONC" -z "${DUR}s"
settle
PERF_PID=""
if [ "${BENCH_PERF:-0}" = 1 ] && command -v perf >/dev/null; then
    # Optional profile of Freeway during the Freeway throughput run (perturbs that run a little).
    perf record -F 499 -g -p "$FW_PID" -o "$WORK/perf.data" -- sleep "$DUR" >"$WORK/perf.log" 2>&1 &
    PERF_PID=$!
    PIDS+=("$PERF_PID")
fi
cpu_ticks "$FW_PID" >"$R/cpu_before"
load thr_freeway "$FW_URL" "$KEY" -c "$CONC" -z "${DUR}s"
settle  # the request-log writer's work for this run counts too
cpu_ticks "$FW_PID" >"$R/cpu_after"
if [ -n "$PERF_PID" ]; then
    wait "$PERF_PID" || true
    perf report -i "$WORK/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null \
        | grep '%' | head -n 60 >"$(dirname "$OUT")/perf-latest.txt" || true
    log "perf profile of the Freeway throughput run: $(dirname "$OUT")/perf-latest.txt"
fi

# ---------------------------------------------------------------- b: fixed rate
if [ "$DRIVER" = oha ]; then
    log "b) fixed rate ${RATE}/s, ${RATE_DUR}s each"
    settle
    load rate_direct "$DIRECT_URL" "" -c 16 -q "$RATE" -z "${RATE_DUR}s"
    settle
    cpu_ticks "$FW_PID" >"$R/cpu_rate_before"
    load rate_freeway "$FW_URL" "$KEY" -c 16 -q "$RATE" -z "${RATE_DUR}s"
    settle  # the request-log writer's work for this run counts too
    cpu_ticks "$FW_PID" >"$R/cpu_rate_after"
else
    log "b) skipped: wrk has no fixed-rate mode"
fi

# ---------------------------------------------------------------- c: concurrency 1
log "c) concurrency 1, ${C1_DUR}s each"
settle
load c1_direct "$DIRECT_URL" "" -c 1 -z "${C1_DUR}s"
settle
load c1_freeway "$FW_URL" "$KEY" -c 1 -z "${C1_DUR}s"

# ---------------------------------------------------------------- d: streaming
log "d) $STREAMS concurrent streams x $CHUNKS chunks, ${CHUNK_DELAY} ms apart"
settle
"$PROBE" --url "$DIRECT_URL" --concurrency "$STREAMS" --warmup 1 --rounds "$STREAM_ROUNDS" --timeout-secs 60 >"$R/stream_direct.json"
settle
cpu_ticks "$FW_PID" >"$R/cpu_stream_before"
"$PROBE" --url "$FW_URL" --key "$KEY" --concurrency "$STREAMS" --warmup 1 --rounds "$STREAM_ROUNDS" --timeout-secs 60 >"$R/stream_freeway.json"
settle  # the request-log writer's work for this run counts too
cpu_ticks "$FW_PID" >"$R/cpu_stream_after"
for p in direct freeway; do
    log "  stream_$p: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("ok=%d/%d ttfb p50=%.2fms total p50=%.1fms gap p50=%.2f p99=%.2fms events=%s" % (d["ok"], d["streams"], d["ttfb_ms"]["p50"] or 0, d["total_ms"]["p50"] or 0, d["gap_ms"]["p50"] or 0, d["gap_ms"]["p99"] or 0, d["events_per_stream"]["p50"]))' "$R/stream_$p.json")"
done

# ------------------------------------------------------- d2: the other dialects' streams
# The same streams through /v1/messages and /v1/responses: translated event by event instead
# of passed through. Chat is measured again right before them, so the three compare within
# one stretch of time on this noisy machine.
for s in chat messages responses gemini; do
    case $s in
        chat) path=/v1/chat/completions ;;
        # Gemini's own API: the model and action are in the URL.
        gemini) path="/v1beta/models/mock-model:streamGenerateContent?alt=sse" ;;
        *) path=/v1/$s ;;
    esac
    settle
    cpu_ticks "$FW_PID" >"$R/cpu_surface_${s}_before"
    "$PROBE" --url "http://$FW_ADDR$path" --surface "$s" --key "$KEY" --concurrency "$STREAMS" --warmup 1 \
        --rounds "$STREAM_ROUNDS" --timeout-secs 60 >"$R/surface_$s.json"
    settle
    cpu_ticks "$FW_PID" >"$R/cpu_surface_${s}_after"
    log "  $path: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("ok=%d/%d ttfb p50=%.2fms events=%s" % (d["ok"], d["streams"], d["ttfb_ms"]["p50"] or 0, d["events_per_stream"]["p50"]))' "$R/surface_$s.json")"
done

# ---------------------------------------------------------------- g: embeddings, answer cache
# /v1/embeddings with a batch of 16 inputs against chat completions, each direct and through
# Freeway at c=8 in one stretch (added latency and CPU per request compare); then a second
# Freeway with the answer cache on: the same chat request answered from the cache (hits) and
# proxied (`Cache-Control: no-cache`), CPU per request of each.
if [ "$DRIVER" = oha ]; then
    CHAT_BODY=$BODY
    EMBED_BODY='{"model":"mock-embed","input":["the quick brown fox","jumps over","the lazy dog","a retrieval query","about free tiers","and their limits","stacked behind one endpoint","by Freeway","sixteen inputs","in one request","are split","into calls","of the batch size","and put back","in order","done"]}'
    G_DUR=${BENCH_API_DURATION:-$DUR}
    log "g) /v1/embeddings (16 inputs) vs chat, c=8, ${G_DUR}s each"
    for what in chat embeddings; do
        if [ "$what" = chat ]; then BODY=$CHAT_BODY; path=chat/completions; else BODY=$EMBED_BODY; path=embeddings; fi
        settle
        load "api_${what}_direct" "http://$MOCK_ADDR/v1/$path" "" -c 8 -z "${G_DUR}s"
        settle
        cpu_ticks "$FW_PID" >"$R/cpu_api_${what}_before"
        load "api_${what}_freeway" "http://$FW_ADDR/v1/$path" "$KEY" -c 8 -z "${G_DUR}s"
        settle
        cpu_ticks "$FW_PID" >"$R/cpu_api_${what}_after"
    done
    BODY=$CHAT_BODY
    FREEWAY_LOG=warn "$FREEWAY" --config "$WORK/freeway-cache.toml" >"$WORK/freeway-cache.log" 2>&1 &
    FWC_PID=$!
    PIDS+=("$FWC_PID")
    FWC_ADDR=$(wait_line "$WORK/freeway-cache.log" '^Freeway listening on http://' 60 "$FWC_PID" | sed 's|^Freeway listening on http://||')
    log "g) answer cache: hits vs proxied (no-cache), c=8, ${G_DUR}s each (freeway pid $FWC_PID)"
    http_check "http://$FWC_ADDR/v1/chat/completions" "$KEY" >/dev/null
    for what in hit proxied; do
        LOAD_HEADER=""
        [ "$what" = proxied ] && LOAD_HEADER="Cache-Control: no-cache"
        sleep 2
        cpu_ticks "$FWC_PID" >"$R/cpu_cache_${what}_before"
        load "cache_$what" "http://$FWC_ADDR/v1/chat/completions" "$KEY" -c 8 -z "${G_DUR}s"
        sleep 3
        cpu_ticks "$FWC_PID" >"$R/cpu_cache_${what}_after"
    done
    LOAD_HEADER=""
else
    log "g) skipped: needs oha"
fi

# ---------------------------------------------------------------- f: memory
settle
status_kb "$FW_PID" VmHWM >"$R/rss_peak_loads_kb"
log "f) holding $HOLD streams open for ${HOLD_SECS}s (mock chunk delay 1 s)"
"$PROBE" --url "$FW_URL" --key "$KEY" --model mock-slow --hold "$HOLD" --hold-secs "$HOLD_SECS" \
    --watch-pid "$FW_PID" >"$R/hold.json" 2>"$R/hold.err"
status_kb "$FW_PID" VmHWM >"$R/rss_peak_all_kb"
sleep 2
status_kb "$FW_PID" VmRSS >"$R/rss_after_kb"

# Request log: rows written vs dropped (the writer is batched in the background).
sleep 2
python3 - "http://$FW_ADDR/metrics" "$WORK/data/freeway.db" >"$R/reqlog.json" <<'PY' || echo '{}' >"$R/reqlog.json"
import json, re, sqlite3, sys, urllib.request
out = {}
try:
    text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
    m = re.search(r"^freeway_request_log_dropped_total (\d+)", text, re.M)
    out["dropped"] = int(m.group(1)) if m else None
except Exception as e:
    out["metrics_error"] = repr(e)
try:
    db = sqlite3.connect("file:" + sys.argv[2] + "?mode=ro", uri=True, timeout=10)
    out["rows"] = db.execute("SELECT count(*) FROM requests").fetchone()[0]
    out["rows_by_status"] = {str(k): v for k, v in db.execute("SELECT status, count(*) FROM requests GROUP BY status").fetchall()}
except Exception as e:
    out["db_error"] = repr(e)
print(json.dumps(out))
PY

# Freeway's own complaints during the run (FREEWAY_LOG=warn).
grep -cE '\b(WARN|ERROR)\b' "$WORK/freeway.log" >"$R/fw_warn_lines" || true
grep -E '\b(WARN|ERROR)\b' "$WORK/freeway.log" | head -n 5 >"$R/fw_warn_sample" || true
kill -0 "$FW_PID" 2>/dev/null || die "freeway died during the run"

# ---------------------------------------------------------------- report
mkdir -p "$(dirname "$OUT")"
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "nproc=$(nproc)"
    echo "cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -srm)"
    echo "driver=$DRIVER_VERSION"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "rustc=$(rustc --version 2>/dev/null || echo unknown)"
    echo "clk_tck=$CLK_TCK"
    echo "conc=$CONC"; echo "rate=$RATE"; echo "dur=$DUR"; echo "rate_dur=$RATE_DUR"; echo "c1_dur=$C1_DUR"
    echo "streams=$STREAMS"; echo "stream_rounds=$STREAM_ROUNDS"; echo "chunks=$CHUNKS"; echo "chunk_delay=$CHUNK_DELAY"
    echo "hold=$HOLD"; echo "hold_secs=$HOLD_SECS"
} >"$R/meta.txt"
python3 "$ROOT/bench/report.py" "$R" "$OUT" "${OUT%.md}.json"
# Phase g's table (the other APIs and the answer cache).
python3 - "$R" "$CLK_TCK" >>"$OUT" <<'PY' || true
import json, os, sys
r, tck = sys.argv[1], int(sys.argv[2])
def j(n):
    p = os.path.join(r, n + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
def cpu(n, done):
    try:
        b = int(open(os.path.join(r, f"cpu_{n}_before")).read()); a = int(open(os.path.join(r, f"cpu_{n}_after")).read())
    except OSError:
        return None
    return (a - b) / tck / done * 1000 if done else None
rows = []
for what in ("chat", "embeddings"):
    d, f = j(f"api_{what}_direct"), j(f"api_{what}_freeway")
    if not (d and f):
        continue
    name = "/v1/chat/completions" if what == "chat" else "/v1/embeddings (16 inputs)"
    rows.append((name, f["rps"], d["p50_ms"], f["p50_ms"], f["p50_ms"] - d["p50_ms"], cpu(f"api_{what}", f["completed"]), f["statuses"]))
for what in ("hit", "proxied"):
    f = j(f"cache_{what}")
    if f:
        rows.append((f"chat, answer cache {what}", f["rps"], None, f["p50_ms"], None, cpu(f"cache_{what}", f["completed"]), f["statuses"]))
if rows:
    print("\n## g) Other APIs and the answer cache (c=8)\n")
    print("| load | req/s | direct p50 ms | Freeway p50 ms | added p50 ms | CPU s / 1000 req | statuses |")
    print("|---|---:|---:|---:|---:|---:|---|")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    for name, rps, dp, fp, add, c, st in rows:
        print(f"| {name} | {rps:.0f} | {fmt(dp)} | {fmt(fp)} | {fmt(add)} | {fmt(c)} | {st} |")
    by = {r[0]: r for r in rows}
    chat, emb = by.get("/v1/chat/completions"), by.get("/v1/embeddings (16 inputs)")
    hit, prox = by.get("chat, answer cache hit"), by.get("chat, answer cache proxied")
    print()
    if chat and emb and chat[5] and chat[4]:
        print(f"- embeddings / chat: CPU per request {emb[5] / chat[5]:.2f}x, added p50 {emb[4] / chat[4]:.2f}x (goal: within 1.25x)")
    if hit and prox and prox[5]:
        print(f"- a cache hit costs {hit[5] / prox[5]:.2f}x the CPU of a proxied answer (goal: less than 1x)")
PY
cat "$OUT"
log "wrote $OUT"
