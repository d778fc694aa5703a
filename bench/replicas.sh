#!/usr/bin/env bash
# Freeway as several replicas (SPEC 5.1, 8): one replica on SQLite, one on PostgreSQL + Redis,
# and three sharing both, each against the same mock upstream in one run.
#
#   bench/replicas.sh            # from anywhere: it cd's to the repo
#
# Starts a throwaway PostgreSQL (initdb into the work dir, as user nobody when run as root) and
# a throwaway redis-server on loopback ports, the mock upstream, and Freeway replicas:
#   (a) one replica on SQLite (the default store, local ledger);
#   (b) one replica with [store] url (PostgreSQL) and [cluster] redis_url (Redis);
#   (c) three replicas sharing that PostgreSQL and Redis. The load is spread round-robin by
#       client connection: one oha per replica, each with a third of the connections (and a
#       third of the rate), all started together; their per-request timings are merged.
# and measures:
#   1. throughput at BENCH_CONCURRENCY connections, with latency, CPU per 1000 requests (summed
#      over the replicas; PostgreSQL's and Redis's own CPU beside it) and memory;
#   2. a fixed BENCH_RATE req/s, interleaved rounds of direct, (a), (b), (c): added latency
#      p50/p99 over the mock direct (medians over the rounds); the bar (issue 22): (b)'s added
#      p50 at most 0.3 ms above (a)'s;
#   3. a capped model (`mock-capped`, rpd = REPL_CAP) asked for twice its cap over the three
#      replicas at once: the requests the mock received for it must not exceed the cap.
# Every Freeway model of the mock has caps (mock-model: rpm and rpd far above the load), so each
# request reserves a ledger pool: in (b) and (c) that is a Redis round trip.
#
# Writes bench/results/replicas.md (also printed). Knobs (env, defaults in brackets):
#   BENCH_DURATION [10]  BENCH_CONCURRENCY [30]  BENCH_RATE [200]  BENCH_RATE_DURATION [10]
#   REPL_RATE_ROUNDS [3]  REPL_CAP [300]  REPL_CAP_CONCURRENCY [30]  BENCH_SKIP_BUILD [0]
#   REPL_OUT [bench/results/replicas.md]
#   REPL_STORE [postgres]   sqlite = (b) and (c) share Redis only, each replica on its own
#                     SQLite (the ledger is what caps and the 0.3 ms bar are about); the report
#                     says so
#   REPL_SHARED [1]   0 = a dry run of the script itself: (b) and (c) run on SQLite, each
#                     replica with its own data dir and ledger (nothing shared, so the cap is
#                     exceeded); the report says so and goes to bench/results/replicas-dry.md.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=replicas

DUR=${BENCH_DURATION:-10}
CONC=${BENCH_CONCURRENCY:-30}
RATE=${BENCH_RATE:-200}
RATE_DUR=${BENCH_RATE_DURATION:-10}
ROUNDS=${REPL_RATE_ROUNDS:-3}
CAP=${REPL_CAP:-300}
CAP_CONC=${REPL_CAP_CONCURRENCY:-30}
SHARED=${REPL_SHARED:-1}
STORE=${REPL_STORE:-postgres}
case "$STORE" in postgres | sqlite) ;; *) die "REPL_STORE must be postgres or sqlite" ;; esac
[ "$SHARED" = 1 ] || STORE=sqlite
REPLICAS=3
if [ "$SHARED" = 1 ] && [ "${REPL_STORE:-postgres}" = sqlite ]; then
    OUT=${REPL_OUT:-$ROOT/bench/results/replicas-redis.md}
elif [ "$SHARED" = 1 ]; then
    OUT=${REPL_OUT:-$ROOT/bench/results/replicas.md}
else
    OUT=${REPL_OUT:-$ROOT/bench/results/replicas-dry.md}
fi
KEY=fw-bench
BODY='{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'
CAP_BODY='{"model":"mock-capped","messages":[{"role":"user","content":"hi"}]}'

command -v python3 >/dev/null || die "python3 is required (parses results)"
install_oha || die "cannot install oha"
[ $((CONC % REPLICAS)) -eq 0 ] || die "BENCH_CONCURRENCY must be a multiple of $REPLICAS"

# ---------------------------------------------------------------- build (each target once)
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release ..."
    cargo build --release --bin freeway --example mock_upstream >&2
fi
T=${CARGO_TARGET_DIR:-$ROOT/target}/release
FREEWAY=$T/freeway
MOCK=$T/examples/mock_upstream
for b in "$FREEWAY" "$MOCK"; do [ -x "$b" ] || die "missing binary $b"; done

new_workdir freeway-replicas
R=$WORK/results
mkdir -p "$R"
# The servers below are stopped before lib.sh's cleanup removes their directories.
trap 'rc=$?; stop_servers; (exit $rc); cleanup' EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- PostgreSQL
PG_DIR=""
PG_PID=""
REDIS_PID=""
stop_servers() {
    if [ -n "$PG_DIR" ] && [ -f "$PG_DIR/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
}
# PostgreSQL refuses to run as root: as root, its files belong to nobody and it runs as nobody.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
    else
        "$@"
    fi
}
PG_BIN=""
if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    PG_BIN=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
else
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [ "$STORE" = postgres ]; then
    [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] \
        || die "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): apt-get install postgresql"
    chmod 0711 "$WORK"  # nobody must reach its directory inside
    PG_DIR=$WORK/pg
    mkdir -p "$PG_DIR"
    [ "$(id -u)" -eq 0 ] && chown 65534:65534 "$PG_DIR"
    as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U freeway --auth=trust -E UTF8 >"$WORK/initdb.log" 2>&1 \
        || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
    PG_PORT=$(free_port)
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" \
        -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" -w start >"$WORK/pg_ctl.log" 2>&1 \
        || { cat "$WORK/pg_ctl.log" "$PG_DIR/log" >&2; die "PostgreSQL did not start"; }
    PG_PID=$(head -n 1 "$PG_DIR/data/postmaster.pid")
    as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U freeway freeway_bench \
        || die "createdb failed"
    PG_VERSION=$("$PG_BIN/postgres" --version)
    STORE_URL="postgres://freeway@127.0.0.1:$PG_PORT/freeway_bench"
    [ "$("$PG_BIN/psql" "$STORE_URL" -Atc 'SELECT 1' 2>&1)" = 1 ] || die "PostgreSQL does not answer at $STORE_URL"
    log "PostgreSQL on 127.0.0.1:$PG_PORT (pid $PG_PID, $PG_VERSION)"
fi

# ---------------------------------------------------------------- Redis
if [ "$SHARED" = 1 ]; then
    [ -x /usr/bin/redis-server ] || command -v redis-server >/dev/null \
        || die "redis-server is not installed: apt-get install redis-server (./test.sh installs it)"
    REDIS_BIN=$(command -v redis-server || echo /usr/bin/redis-server)
    REDIS_PORT=$(free_port)
    "$REDIS_BIN" --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$WORK" \
        --daemonize no --logfile "" >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    redis_ping() {
        local line=""
        { exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT"; } 2>/dev/null || return 1
        printf 'PING\r\n' >&3
        read -r -t 2 line <&3 || true
        exec 3<&-
        [ "${line%$'\r'}" = "+PONG" ]
    }
    for ((i = 0; i < 200; i++)); do
        redis_ping && break
        kill -0 "$REDIS_PID" 2>/dev/null || { cat "$WORK/redis.log" >&2; die "redis-server exited"; }
        sleep 0.05
    done
    redis_ping || die "redis-server does not answer PING"
    REDIS_VERSION=$("$REDIS_BIN" --version | awk '{print $3}')
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
    log "Redis on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID, $REDIS_VERSION)"
fi

# PostgreSQL's CPU: the postmaster, its reaped children (cutime, cstime) and its live children.
pg_ticks() {
    [ -n "$PG_PID" ] || { echo 0; return; }
    local t c v
    t=$(sed 's/^.*) //' "/proc/$PG_PID/stat" | awk '{print $12 + $13 + $14 + $15}')
    for c in $(pgrep -P "$PG_PID" || true); do
        v=$(cpu_ticks "$c" 2>/dev/null || true)  # a backend may have exited meanwhile
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
redis_ticks() { if [ -n "$REDIS_PID" ]; then cpu_ticks "$REDIS_PID"; else echo 0; fi; }

# ---------------------------------------------------------------- the mock upstream
"$MOCK" --port 0 --count-model mock-capped >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
MOCK_ADDR=$(wait_line "$WORK/mock.log" '^listening on ' 30 "$MOCK_PID" | sed 's/^listening on //')
log "mock upstream on $MOCK_ADDR (pid $MOCK_PID)"
DIRECT_URL=http://$MOCK_ADDR/v1/chat/completions

# ---------------------------------------------------------------- Freeway replicas
# Every replica of a shared store must open the same sealed keys: one encryption key for all.
export FREEWAY_ENCRYPTION_KEY
FREEWAY_ENCRYPTION_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
# config NAME SHARED: writes $WORK/NAME.toml (its own data dir; the shared engines when SHARED=1).
config() {
    local name=$1 shared=$2
    cat >"$WORK/$name.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$WORK/data-$name"
[auth]
api_keys = ["$KEY"]
[routing]
pacing = "off"   # the capped model may use its whole cap within the run
[custom.mock]
base_url = "http://$MOCK_ADDR/v1"
models = [
  { id = "mock-model", context = 131072, rpm = 100000000, rpd = 1000000000 },
  { id = "mock-capped", context = 131072, rpd = $CAP },
]
[metrics]
public = true
EOF
    if [ "$shared" = 1 ] && [ "$STORE" = postgres ]; then
        printf '[store]\nurl = "%s"\n' "$STORE_URL" >>"$WORK/$name.toml"
    fi
    if [ "$shared" = 1 ]; then
        printf '[cluster]\nredis_url = "%s"\n' "$REDIS_URL" >>"$WORK/$name.toml"
    fi
}
declare -A ADDR PID
# start NAME: starts the replica of $WORK/NAME.toml, waits for its address and a 200 on /livez.
start() {
    local name=$1 pid
    FREEWAY_LOG=warn "$FREEWAY" --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    PID[$name]=$pid
    ADDR[$name]=$(wait_line "$WORK/$name.log" '^Freeway listening on http://' 60 "$pid" \
        | sed 's|^Freeway listening on http://||') || {
        grep -qE 'unknown field `(store|cluster)`' "$WORK/$name.log" \
            && die "this Freeway does not know [store] url / [cluster] redis_url yet (issue 22): (b) and (c) need them (REPL_STORE=sqlite runs without [store] url, REPL_SHARED=0 without either)"
        die "replica $name did not start"
    }
    for ((i = 0; i < 100; i++)); do
        [ "$(curl_status "http://${ADDR[$name]}/livez")" = 200 ] && break
        sleep 0.1
    done
    log "replica $name on ${ADDR[$name]} (pid $pid)"
}
curl_status() { # url [body] -> the HTTP status (000 when unreachable)
    python3 - "$@" <<'PY'
import sys, urllib.request, urllib.error
url = sys.argv[1]; body = sys.argv[2].encode() if len(sys.argv) > 2 else None
req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", "Authorization": "Bearer fw-bench"})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
}
readyz() { # NAME -> /readyz's status and body on one line
    python3 - "http://${ADDR[$1]}/readyz" <<'PY'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        print(r.status, r.read(300).decode(errors="replace").replace("\n", " "))
except urllib.error.HTTPError as e:
    print(e.code, e.read(300).decode(errors="replace").replace("\n", " "))
except Exception as e:
    print(0, repr(e))
PY
}

# The replicas of each setup: a = SQLite; b = one shared; c1..c3 = three shared.
config a 0
config b "$SHARED"
for i in 1 2 3; do config "c$i" "$SHARED"; done
SETUPS=(a b c)
members() { case $1 in a) echo a ;; b) echo b ;; c) echo c1 c2 c3 ;; esac; }
for n in a b c1 c2 c3; do start "$n"; done
for n in a b c1 c2 c3; do
    out=$(curl_status "http://${ADDR[$n]}/v1/chat/completions" "$BODY")
    [ "$out" = 200 ] || die "sanity request through replica $n answered $out"
done
for n in a b c1; do
    echo "$(readyz "$n")" >"$R/readyz_$n"
    log "replica $n /readyz: $(cat "$R/readyz_$n")"
done

# Wait (at most 15 s) until every process named has been idle for 1 s (the request-log
# writers have drained what a run queued), so one phase's leftovers don't land in the next.
settle() {
    local i p a b busy
    for ((i = 0; i < 15; i++)); do
        a=0; for p in "$@"; do a=$((a + $(cpu_ticks "$p"))); done
        sleep 1
        b=0; for p in "$@"; do b=$((b + $(cpu_ticks "$p"))); done
        busy=$((b - a))
        [ "$busy" -le $((CLK_TCK / 50)) ] && return 0
    done
    log "  (still busy after 15 s: $busy ticks/s)"
}
ALL_PIDS=("$MOCK_PID" "${PID[a]}" "${PID[b]}" "${PID[c1]}" "${PID[c2]}" "${PID[c3]}")
[ -n "$REDIS_PID" ] && ALL_PIDS+=("$REDIS_PID")
[ -n "$PG_PID" ] && ALL_PIDS+=("$PG_PID")

# load NAME URL... -- OHA_ARGS: one oha per URL, all at once (the arguments' -c and -q are
# split between them), each writing per-request CSV; then $R/NAME.json summarises them merged.
load() {
    local name=$1 urls=() args=() i=0 c=1 q="" z="" n="" body=$BODY pids=()
    shift
    while [ "$1" != -- ]; do urls+=("$1"); shift; done
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            -c) c=$2; shift 2 ;; -q) q=$2; shift 2 ;; -z) z=$2; shift 2 ;; -n) n=$2; shift 2 ;;
            --body) body=$2; shift 2 ;;
            *) die "load: unknown argument $1" ;;
        esac
    done
    local k=${#urls[@]}
    for url in "${urls[@]}"; do
        args=(-c $(((c + k - 1 - i) / k)))
        [ -n "$q" ] && args+=(-q "$(python3 -c "print($q / $k)")")
        [ -n "$z" ] && args+=(-z "$z")
        [ -n "$n" ] && args+=(-n $(((n + k - 1 - i) / k)))
        oha --no-tui --output-format csv "${args[@]}" -m POST -T application/json -d "$body" \
            -H "Authorization: Bearer $KEY" "$url" >"$R/$name.$i.csv" 2>"$R/$name.$i.err" &
        pids+=($!)
        i=$((i + 1))
    done
    for p in "${pids[@]}"; do wait "$p" || die "oha failed ($name): $(cat "$R/$name".*.err)"; done
    python3 "$ROOT/bench/replicas.py" summarize "$R/$name".*.csv >"$R/$name.json"
    log "  $name: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("completed=%d rps=%.0f p50=%.3fms p99=%.3fms statuses=%s" % (d["completed"], d["rps"], d["p50_ms"], d["p99_ms"], d["statuses"]))' "$R/$name.json")"
}
urls_of() { local n; for n in $(members "$1"); do echo "http://${ADDR[$n]}/v1/chat/completions"; done; }
pids_of() { local n; for n in $(members "$1"); do echo "${PID[$n]}"; done; }
# measure NAME SETUP LOAD_ARGS...: a load through SETUP's replicas with their CPU (and the
# engines') counted from before the load until they have settled after it.
measure() {
    local name=$1 setup=$2 p t=0; shift 2
    local pids
    mapfile -t pids < <(pids_of "$setup")
    settle "${ALL_PIDS[@]}"
    for p in "${pids[@]}"; do t=$((t + $(cpu_ticks "$p"))); done
    echo "$t $(pg_ticks) $(redis_ticks)" >"$R/$name.cpu_before"
    mapfile -t urls < <(urls_of "$setup")
    load "$name" "${urls[@]}" -- "$@"
    settle "${ALL_PIDS[@]}"
    t=0
    for p in "${pids[@]}"; do t=$((t + $(cpu_ticks "$p"))); done
    echo "$t $(pg_ticks) $(redis_ticks)" >"$R/$name.cpu_after"
    t=0
    for p in "${pids[@]}"; do t=$((t + $(status_kb "$p" VmRSS))); done
    echo "$t" >"$R/$name.rss_kb"
}

# ---------------------------------------------------------------- warm-up
log "warm-up (3 s through every replica, c=6)"
load warm_direct "$DIRECT_URL" -- -c 6 -z 3s
for s in "${SETUPS[@]}"; do mapfile -t urls < <(urls_of "$s"); load "warm_$s" "${urls[@]}" -- -c 6 -z 3s; done
for n in a b c1 c2 c3; do status_kb "${PID[$n]}" VmRSS >"$R/rss_idle_$n"; done

# ---------------------------------------------------------------- 1: throughput
log "1) throughput, c=$CONC, ${DUR}s each"
settle "${ALL_PIDS[@]}"
load thr_direct "$DIRECT_URL" -- -c "$CONC" -z "${DUR}s"
for s in "${SETUPS[@]}"; do measure "thr_$s" "$s" -c "$CONC" -z "${DUR}s"; done

# ---------------------------------------------------------------- 2: fixed rate
log "2) fixed rate ${RATE}/s, ${RATE_DUR}s each, $ROUNDS interleaved rounds"
for ((r = 1; r <= ROUNDS; r++)); do
    settle "${ALL_PIDS[@]}"
    load "rate_direct.r$r" "$DIRECT_URL" -- -c 18 -q "$RATE" -z "${RATE_DUR}s"
    for s in "${SETUPS[@]}"; do measure "rate_$s.r$r" "$s" -c 18 -q "$RATE" -z "${RATE_DUR}s"; done
done

# ---------------------------------------------------------------- 3: a capped model
OFFER=$((2 * CAP))
log "3) capped model: rpd = $CAP, $OFFER requests over the $REPLICAS replicas of (c), c=$CAP_CONC"
mock_stats() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "http://$MOCK_ADDR/stats"; }
mock_stats >"$R/cap_stats_before"
measure cap c -c "$CAP_CONC" -n "$OFFER" --body "$CAP_BODY"
mock_stats >"$R/cap_stats_after"
CAP_RECEIVED=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[2]))["chat_requests"] - json.load(open(sys.argv[1]))["chat_requests"])' "$R/cap_stats_before" "$R/cap_stats_after")
echo "$CAP_RECEIVED" >"$R/cap_received"
log "cap $CAP, upstream received $CAP_RECEIVED"

for n in a b c1 c2 c3; do
    kill -0 "${PID[$n]}" 2>/dev/null || die "replica $n died during the run"
    grep -cE '\b(WARN|ERROR)\b' "$WORK/$n.log" >"$R/warn_$n" || true
    status_kb "${PID[$n]}" VmHWM >"$R/hwm_$n"
done
for n in a b c1; do echo "$(readyz "$n")" >"$R/readyz_end_$n"; done

# ---------------------------------------------------------------- report
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "nproc=$(nproc)"
    echo "cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -srm)"
    echo "driver=$(oha --version 2>/dev/null | head -1)"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "postgres=${PG_VERSION:-none}"
    echo "redis=${REDIS_VERSION:-none}"
    echo "clk_tck=$CLK_TCK"
    echo "shared=$SHARED"; echo "store=$STORE"; echo "conc=$CONC"; echo "dur=$DUR"; echo "rate=$RATE"; echo "rate_dur=$RATE_DUR"
    echo "rounds=$ROUNDS"; echo "cap=$CAP"; echo "cap_offer=$OFFER"; echo "cap_conc=$CAP_CONC"
} >"$R/meta.txt"
mkdir -p "$(dirname "$OUT")"
python3 "$ROOT/bench/replicas.py" report "$R" >"$OUT"
cat "$OUT"
log "wrote $OUT"
if [ "$CAP_RECEIVED" -gt "$CAP" ]; then
    log "the capped model's upstream received $CAP_RECEIVED requests, over its cap of $CAP"
    # Shared replicas must hold the cap; in a dry run nothing is shared, so this is expected.
    [ "$SHARED" = 1 ] && exit 1
fi
exit 0
