#!/usr/bin/env bash
# The floor under the two latency targets: what a proxy that does nothing adds on this machine.
#
#   bench/floor.sh               # from anywhere: it cd's to the repo
#
# Interleaves, round after round, the same two loads against the mock upstream directly, three
# do-nothing proxies (examples/bare_proxy.rs: a byte relay, a bare hyper proxy with hyper-util's
# pooled client, a bare hyper proxy driving one own upstream connection per client connection)
# and Freeway, then reports medians over the rounds:
#   - 64 concurrent streams (20 chunks, 10 ms apart): time to first byte p50 / p99;
#   - a fixed 200 requests/s, non-streaming: latency p50 / p99.
# Writes bench/results/floor.md (also printed). Knobs (env, defaults in brackets):
#   FLOOR_ROUNDS [5]  FLOOR_RATE_SECS [6]  FLOOR_STREAMS [64]  BENCH_SKIP_BUILD [0]
#   FLOOR_OUT [bench/results/floor.md]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=floor
ROUNDS=${FLOOR_ROUNDS:-5}
RATE_SECS=${FLOOR_RATE_SECS:-6}
STREAMS=${FLOOR_STREAMS:-64}
OUT=${FLOOR_OUT:-$ROOT/bench/results/floor.md}
KEY=fw-bench
BODY='{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'

command -v python3 >/dev/null || die "python3 is required (parses results)"
install_oha || die "cannot install oha"

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release ..."
    cargo build --release --bin freeway --example mock_upstream --example stream_probe \
        --example bare_proxy >&2
fi
T=${CARGO_TARGET_DIR:-$ROOT/target}/release
for b in freeway examples/mock_upstream examples/stream_probe examples/bare_proxy; do
    [ -x "$T/$b" ] || die "missing binary $T/$b"
done

new_workdir freeway-floor

declare -A ADDR
# start NAME PATTERN CMD... : runs CMD in the background; ADDR[NAME] = the address it announces.
start() {
    local name=$1 pat=$2 pid; shift 2
    "$@" >"$WORK/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    ADDR[$name]=$(wait_line "$WORK/$name.log" "$pat" 30 "$pid" | sed "s|$pat||")
}

start direct '^listening on ' "$T/examples/mock_upstream" --port 0 --chunks 20 --chunk-delay-ms 10
for mode in relay hyper hyper-conn; do
    start "$mode" '^listening on ' "$T/examples/bare_proxy" "$mode" "${ADDR[direct]}"
done
cat >"$WORK/freeway.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$WORK/data"
[auth]
api_keys = ["$KEY"]
[custom.mock]
base_url = "http://${ADDR[direct]}/v1"
models = [{ id = "mock-model", context = 131072 }]
EOF
FREEWAY_LOG=warn start freeway '^Freeway listening on http://' "$T/freeway" --config "$WORK/freeway.toml"
NAMES=(direct relay hyper hyper-conn freeway)
for n in "${NAMES[@]}"; do log "$n on ${ADDR[$n]}"; done

for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r / $ROUNDS"
    for n in "${NAMES[@]}"; do
        url="http://${ADDR[$n]}/v1/chat/completions"
        "$T/examples/stream_probe" --url "$url" --key "$KEY" --concurrency "$STREAMS" \
            --warmup 1 --rounds 3 >"$WORK/$n.stream.$r.json"
        oha --no-tui --output-format json -q 200 -z "${RATE_SECS}s" -m POST -T application/json \
            -d "$BODY" -H "Authorization: Bearer $KEY" "$url" >"$WORK/$n.rate.$r.json"
    done
done

python3 - "$WORK" "$ROUNDS" "$STREAMS" "$RATE_SECS" "$OUT" "${NAMES[@]}" <<'PY'
import json, os, platform, statistics as st, subprocess, sys, time
work, rounds, streams, rate_secs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
names = sys.argv[6:]
label = {"direct": "mock upstream, direct", "relay": "byte relay (no HTTP)",
         "hyper": "bare hyper proxy, pooled client", "hyper-conn": "bare hyper proxy, own connection",
         "freeway": "Freeway"}
fig = {}
for n in names:
    t50, t99, r50, r99, bad = [], [], [], [], 0
    for r in range(1, rounds + 1):
        s = json.load(open(f"{work}/{n}.stream.{r}.json"))
        t50.append(s["ttfb_ms"]["p50"]); t99.append(s["ttfb_ms"]["p99"]); bad += s.get("failed", 0)
        o = json.load(open(f"{work}/{n}.rate.{r}.json"))
        p = o["latencyPercentiles"]
        r50.append(p["p50"] * 1e3); r99.append(p["p99"] * 1e3)
        codes = o.get("statusCodeDistribution", {})
        bad += sum(int(v) for k, v in codes.items() if str(k) != "200")
    fig[n] = dict(t50=st.median(t50), t99=st.median(t99), r50=st.median(r50), r99=st.median(r99),
                  t50_range=(min(t50), max(t50)), bad=bad)
d = fig["direct"]
cpu = "unknown CPU"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
lines = [
    "# The floor: what a proxy that does nothing adds on this machine",
    "",
    f"- date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
    f"- machine: {os.cpu_count()} CPUs, {cpu}, {platform.system()} {platform.release()}",
    f"- {rounds} interleaved rounds; each round: {streams} concurrent streams × 20 chunks 10 ms apart "
    f"(1 warm-up + 3 measured rounds), then {rate_secs} s at 200 requests/s; medians over the rounds",
    "- added = median − direct median; targets (issue 5): stream TTFB p50 ≤ +1 ms, 200 req/s p50 ≤ +0.1 ms / p99 ≤ +0.5 ms",
    "",
    "| path | TTFB p50 (ms) | added | TTFB p99 (ms) | 200 req/s p50 (ms) | added | 200 req/s p99 (ms) | added | failed |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for n in names:
    f = fig[n]
    add = lambda k: "" if n == "direct" else f"{f[k] - d[k]:+.2f}"
    add3 = lambda k: "" if n == "direct" else f"{f[k] - d[k]:+.3f}"
    lines.append(f"| {label.get(n, n)} | {f['t50']:.2f} ({f['t50_range'][0]:.2f}–{f['t50_range'][1]:.2f}) | {add('t50')} "
                 f"| {f['t99']:.2f} | {f['r50']:.3f} | {add3('r50')} | {f['r99']:.3f} | {add3('r99')} | {f['bad']} |")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
json.dump(fig, open(os.path.splitext(out)[0] + ".json", "w"), indent=1)
print(text)
PY
