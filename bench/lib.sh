#!/usr/bin/env bash
# Shared by bench/run.sh and bench/floor.sh (sourced, not run): the repo root as working
# directory, logging, the load driver, a temporary work dir whose processes die with the script.
# The sourcing script sets LOG_TAG after sourcing (the prefix of its log lines).

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
export PATH="$HOME/.cargo/bin:$PATH"
LOG_TAG=bench

log() { printf '[%s %(%H:%M:%S)T] %s\n' "$LOG_TAG" -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# oha from crates.io when it is not installed yet; fails (returns 1) when it cannot be had.
install_oha() {
    command -v oha >/dev/null && return 0
    command -v cargo >/dev/null || return 1
    log "installing oha (cargo install oha --locked) ..."
    cargo install oha --locked >&2 || return 1
    command -v oha >/dev/null
}

# new_workdir PREFIX: a fresh $WORK; every pid added to PIDS is killed on exit; the work dir
# is removed on success and kept (with the tails of its logs printed) on failure.
new_workdir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=()
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$rc" -ne 0 ] && [ -d "$WORK" ]; then
        log "failed (rc=$rc); logs kept in $WORK"
        tail -n 20 "$WORK"/*.log 2>/dev/null >&2 || true
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}

# wait_line FILE PATTERN TIMEOUT_S PID: prints the first line of FILE matching PATTERN, waiting
# for it; dies if PID exits first or the time runs out.
wait_line() {
    local file=$1 pat=$2 t=$3 pid=$4 i
    for ((i = 0; i < t * 20; i++)); do
        if grep -m1 -- "$pat" "$file" 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; die "process $pid exited before '$pat'"; }
        sleep 0.05
    done
    die "timed out waiting for '$pat' in $file"
}
