#!/usr/bin/env bash
# Quota yield (SPEC 8): one simulated day of traffic through Freeway against mock providers that
# enforce their own free-tier caps, with routing.pacing off and even.
#
#   bench/yield.sh                # from anywhere: it cd's to the repo
#   bench/yield.sh --clients two  # two client keys (interactive + batch), fairness off and
#                                 # weighted: writes bench/results/yield-clients.md
#   bench/yield.sh --profiles     # every pacing (off, even, demand) on every profile (office,
#                                 # night, flat, bursty): one report per profile
#                                 # (bench/results/yield-PROFILE.md) and one table of them all,
#                                 # bench/results/yield-profiles.md. About 4 × 3 minutes.
#
# Builds examples/yield.rs in release mode and runs it: Freeway in-process on a simulated clock,
# the mocks and Freeway on 127.0.0.1 (ephemeral ports), nothing else on the network. Writes
# bench/results/yield.md (also printed). About a minute and a half plus the build on 2 cores.
# Knobs (env, defaults in brackets):
#   YIELD_PACING [both]      off | even | demand | both | all   (--profiles: all)
#   YIELD_PROFILE [office]   office | night | flat | bursty | a file of 24 requests per hour
#                            (--profiles: YIELD_PROFILES ["office night flat bursty"])
#   YIELD_START [2026-12-01] the simulated day (Berlin)
#   YIELD_HISTORY_DAYS [7]   prior days written to the request log for pacing demand
#   YIELD_SHARE [0.9]        requests offered, as a share of the keys' theoretical daily capacity
#   YIELD_CONCURRENCY [8]    requests in flight at once within a simulated second
#   YIELD_SEED [2026]        the trace's seed
#   BENCH_SKIP_BUILD [0]     1 = use the example already in target/release
#   YIELD_OUT [bench/results/yield.md]
#   YIELD_DEBUG [unset]      1 = explain every request refused while a key had room (stderr)
# With --clients two (the working day as the client key `interactive`, a `batch` key asking
# for as much as it can from 06:00; four days, about 5 minutes plus the build on 2 cores):
#   YIELD_PACING [both]      as above; each pacing runs with fairness off and weighted
#   YIELD_FAIRNESS [both]    off | weighted | both (routing.fairness)
#   YIELD_BATCH_RATE [3]     the batch key's requests per second, 06:00 to midnight
#   YIELD_WEIGHTS [1:1]      weights interactive:batch ([auth.limits.NAME] weight)
#   YIELD_OUT [bench/results/yield-clients.md]
set -euo pipefail

CLIENTS=one
PROFILES=0
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) CLIENTS=${2:-}; shift 2 ;;
        --clients=*) CLIENTS=${1#--clients=}; shift ;;
        --profiles) PROFILES=1; shift ;;
        *) echo "usage: bench/yield.sh [--clients one|two] [--profiles]" >&2; exit 2 ;;
    esac
done
case "$CLIENTS" in
    one|two) ;;
    *) echo "--clients $CLIENTS: must be one or two" >&2; exit 2 ;;
esac

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=yield

if [ "$CLIENTS" = two ]; then
    OUT=${YIELD_OUT:-$ROOT/bench/results/yield-clients.md}
else
    OUT=${YIELD_OUT:-$ROOT/bench/results/yield.md}
fi
mkdir -p "$(dirname "$OUT")"

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release --example yield ..."
    cargo build --release --example yield >&2
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
YIELD=$TARGET_DIR/release/examples/yield
[ -x "$YIELD" ] || die "missing binary $YIELD"

CPU=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || true)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml 2>/dev/null)" ]; then
    COMMIT="$COMMIT with local changes"
fi
MACHINE="$(nproc) cores, ${CPU:-unknown CPU}; Freeway $COMMIT; $(date -u +%Y-%m-%d)"

if [ "$PROFILES" = 1 ]; then
    TABLE=${YIELD_OUT:-$ROOT/bench/results/yield-profiles.md}
    SUMMARY=$(mktemp)
    trap 'rm -f "$SUMMARY"' EXIT
    for P in ${YIELD_PROFILES:-office night flat bursty}; do
        NAME=$(basename "${P%.*}")
        log "simulating profile $P (pacing ${YIELD_PACING:-all}) ..."
        "$YIELD" --pacing "${YIELD_PACING:-all}" --profile "$P" \
            --start "${YIELD_START:-2026-12-01}" --history-days "${YIELD_HISTORY_DAYS:-7}" \
            --share "${YIELD_SHARE:-0.9}" --concurrency "${YIELD_CONCURRENCY:-8}" \
            --seed "${YIELD_SEED:-2026}" --machine "$MACHINE" \
            --out "$ROOT/bench/results/yield-$NAME.md" --summary "$SUMMARY" >/dev/null
    done
    {
        echo "# Quota yield on every profile"
        echo
        echo "\`bench/yield.sh --profiles\` ($MACHINE). Seed ${YIELD_SEED:-2026}, day ${YIELD_START:-2026-12-01} (Berlin), share ${YIELD_SHARE:-0.9} of the keys' capacity; pacing \`demand\` learned from ${YIELD_HISTORY_DAYS:-7} prior days of the same profile (bench/README.md). One report per profile: \`bench/results/yield-PROFILE.md\`."
        echo
        echo "Goal (issue 23): pacing \`demand\` serves ≥ 99 % of servable, with zero overshoot 429s, and the strongest daily-capped model still serves in the last busy hour."
        echo
        echo "| profile | pacing | served / servable | overshoot 429s | last busy hour | strongest capped model in it | its last serving hour | goal |"
        echo "|---|---|---:|---:|---:|---:|---:|---|"
        awk -F'\t' '{
            pct = ($4 > 0) ? 100 * $3 / $4 : 0
            ok = (pct >= 99 && $5 == 0 && $7 > 0) ? "met" : "**not met**"
            if ($2 == "off") ok = "– (not paced)"
            printf "| %s | %s | %d / %d (%.2f %%) | %d | %s:00 | %d | %s | %s |\n", $1, $2, $3, $4, pct, $5, $6, $7, ($8 == "-" ? "never" : $8 ":00"), ok
        }' "$SUMMARY"
    } > "$TABLE"
    cat "$TABLE"
    log "wrote $TABLE"
    exit 0
fi

ARGS=(
    --pacing "${YIELD_PACING:-both}"
    --profile "${YIELD_PROFILE:-office}"
    --start "${YIELD_START:-2026-12-01}"
    --history-days "${YIELD_HISTORY_DAYS:-7}"
    --share "${YIELD_SHARE:-0.9}"
    --concurrency "${YIELD_CONCURRENCY:-8}"
    --seed "${YIELD_SEED:-2026}"
    --machine "$MACHINE"
    --out "$OUT"
)
if [ "$CLIENTS" = two ]; then
    ARGS+=(
        --clients two
        --fairness "${YIELD_FAIRNESS:-both}"
        --batch-rate "${YIELD_BATCH_RATE:-3}"
        --weights "${YIELD_WEIGHTS:-1:1}"
    )
fi
log "simulating a day (clients $CLIENTS, pacing ${YIELD_PACING:-both}) ..."
"$YIELD" "${ARGS[@]}"
log "wrote $OUT"
