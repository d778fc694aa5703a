# Shared by the dist/ scripts (sourced, not run).
# shellcheck shell=bash
#
# Checks print one line each, `PASS: what` or `FAIL: what (why)`; dist/test.sh counts them.
# Every wait is bounded; every process a script starts is remembered and ended by its id.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIST_TARGET_DIR=${DIST_TARGET_DIR:-$ROOT/target/dist}
DIST_OUT=${DIST_OUT:-$DIST_TARGET_DIR/archives}
PASSED=0
FAILED=0
PIDS=()

log() { echo "[${LOG_TAG:-dist}] $*" >&2; }
die() { log "error: $*"; exit 1; }
pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }
# check DESCRIPTION COMMAND...: PASS when the command succeeds.
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# The version in Cargo.toml.
crate_version() { sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1; }

sudo_cmd() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# apt_install PACKAGE...: install the Debian packages not yet installed (one apt-get update).
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || { log "no apt-get: install ${missing[*]} by hand"; return 1; }
    log "installing ${missing[*]} (apt-get)"
    if printf '%s\n' "${missing[@]}" | grep -q ':arm64$' \
        && ! dpkg --print-foreign-architectures | grep -qx arm64; then
        sudo_cmd dpkg --add-architecture arm64 || return 1
    fi
    sudo_cmd apt-get update -q >&2 || return 1
    DEBIAN_FRONTEND=noninteractive sudo_cmd apt-get install -y -q "${missing[@]}" >&2
}

# The Debian packages each part needs.
# shellcheck disable=SC2034 # used by the scripts that source this file
DEPS_AARCH64=(rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu
    libc6-dev-arm64-cross qemu-user-static)
# shellcheck disable=SC2034
DEPS_CONTAINER=(podman runc)
# shellcheck disable=SC2034
DEPS_SERVICE=(systemd)

# wait_line FILE REGEX SECONDS PID: print the first line of FILE matching REGEX, waiting at most
# SECONDS; fails early if PID dies.
wait_line() {
    local file=$1 re=$2 secs=$3 pid=$4 line i
    for ((i = 0; i < secs * 10; i++)); do
        line=$(grep -m1 -E "$re" "$file" 2>/dev/null || true)
        if [ -n "$line" ]; then
            echo "$line"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# stop_pid PID [SECONDS]: SIGTERM, then SIGKILL after SECONDS (10). Sets STOP_STATUS to the exit
# status, or "killed". Not in a subshell: only the shell that started PID can wait for it.
# shellcheck disable=SC2034 # read by the callers
STOP_STATUS=
stop_pid() {
    local pid=$1 secs=${2:-10} i
    STOP_STATUS=0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        # A child that has exited stays a zombie, still "alive" for kill -0, until waited for.
        [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo gone)" = Z ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        STOP_STATUS=killed
        return 0
    fi
    # shellcheck disable=SC2034
    wait "$pid" 2>/dev/null || STOP_STATUS=$?
}

cleanup_pids() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# rss_kb PID: the resident set size (VmRSS) of a process, in kB.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

# elf_arch FILE: x86_64 or aarch64 (from the ELF header's e_machine).
elf_arch() {
    python3 - "$1" <<'PY'
import struct, sys
with open(sys.argv[1], "rb") as f:
    head = f.read(20)
if head[:4] != b"\x7fELF":
    sys.exit("not an ELF file")
machine = struct.unpack("<H", head[18:20])[0]
print({62: "x86_64", 183: "aarch64"}.get(machine, f"machine-{machine}"))
PY
}

# Human sizes for the reports: 1234567 -> 1.2 MiB.
human() { numfmt --to=iec-i --suffix=B --format=%.1f "$1"; }
