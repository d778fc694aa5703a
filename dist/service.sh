#!/usr/bin/env bash
# Checks the systemd unit (deploy/freeway.service) without starting anything under systemd:
#
#   dist/service.sh [BINARY]      # default: target/dist's x86-64 binary (built if missing)
#
#   1. `systemd-analyze verify` in a scratch root tree holding the unit, the binary at its
#      ExecStart path and the distribution's own units: it must exit 0 and print nothing (it
#      exits 0 with a warning for an unknown key, so any output fails the check); two negative
#      controls show the check would catch an unknown key and a missing binary;
#   2. `systemd-analyze security --offline=true`: the exposure score (the lower the better, 0-10)
#      must be at most SERVICE_MAX_EXPOSURE (2.0);
#   3. the binary runs the way the unit runs it, as far as can be done here without systemd:
#      as an unprivileged user with no new privileges, umask 0077, the example configuration
#      (deploy/freeway.example.toml) as FREEWAY_CONFIG and a state directory as FREEWAY_DATA_DIR
#      and working directory; it starts, answers /livez, and its files are private (0600).
# Prints PASS:/FAIL: lines and FIGURE lines; exits 1 on a failure.
set -euo pipefail
# shellcheck source=dist/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=service

MAX_EXPOSURE=${SERVICE_MAX_EXPOSURE:-2.0}
UNIT=$ROOT/deploy/freeway.service
command -v systemd-analyze >/dev/null || apt_install "${DEPS_SERVICE[@]}" \
    || die "cannot install ${DEPS_SERVICE[*]}"
[ -d /usr/lib/systemd/system ] || die "no /usr/lib/systemd/system to take the standard units from"
BIN=${1:-$DIST_TARGET_DIR/x86_64-unknown-linux-gnu/release/freeway}
if [ ! -x "$BIN" ] && [ $# -eq 0 ]; then "$ROOT/dist/build.sh" x86_64 >&2; fi
[ -x "$BIN" ] || die "no binary at $BIN"
BIN=$(realpath "$BIN")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/freeway-service.XXXXXX")
trap 'cleanup_pids; rm -rf "$WORK"' EXIT
ROOTFS=$WORK/root
exec_start=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$UNIT")
mkdir -p "$ROOTFS/etc/systemd/system" "$ROOTFS/usr/lib/systemd" "$ROOTFS$(dirname "$exec_start")"
cp -a /usr/lib/systemd/system "$ROOTFS/usr/lib/systemd/"
install -m 0755 "$BIN" "$ROOTFS$exec_start"
log "$(systemd-analyze --version | head -1); unit $UNIT; ExecStart binary $exec_start"

# verify_unit FILE: systemd-analyze verify's exit status and output, for FILE installed as
# freeway.service in the scratch root.
verify_unit() {
    install -m 0644 "$1" "$ROOTFS/etc/systemd/system/freeway.service"
    VERIFY_OUT=$(timeout 60 systemd-analyze verify --root="$ROOTFS" --man=no freeway.service 2>&1) \
        && VERIFY_RC=0 || VERIFY_RC=$?
}

verify_unit "$UNIT"
[ -z "$VERIFY_OUT" ] || printf '%s\n' "$VERIFY_OUT" >&2
check "systemd-analyze verify accepts the unit with no warning (exit $VERIFY_RC)" \
    test "$VERIFY_RC" = 0 -a -z "$VERIFY_OUT"

sed 's/^PrivateTmp=yes$/PrivateTmp=yes\nNoSuchKey=yes/' "$UNIT" >"$WORK/bad.service"
verify_unit "$WORK/bad.service"
check "negative control: an unknown key is reported (and would fail the check)" \
    grep -q "NoSuchKey" <<<"$VERIFY_OUT"
mv "$ROOTFS$exec_start" "$WORK/moved"
verify_unit "$UNIT"
check "negative control: a missing ExecStart binary makes verify exit non-zero ($VERIFY_RC)" \
    test "$VERIFY_RC" != 0
mv "$WORK/moved" "$ROOTFS$exec_start"
install -m 0644 "$UNIT" "$ROOTFS/etc/systemd/system/freeway.service"

# ------------------------------------------------------------------ security
timeout 60 systemd-analyze security --offline=true --root="$ROOTFS" --no-pager freeway.service \
    >"$WORK/security.txt" 2>&1 || true
grep -v '^✓' "$WORK/security.txt" >&2 || true
score=$(sed -n 's/.*Overall exposure level for freeway.service: \([0-9.]*\) \(.*\)$/\1 \2/p' "$WORK/security.txt")
echo "FIGURE service_exposure=${score%% *}"
check "systemd-analyze security --offline=true: exposure $score (at most $MAX_EXPOSURE)" \
    python3 -c 'import sys; sys.exit(not (float(sys.argv[1]) <= float(sys.argv[2])))' \
    "${score%% *}" "$MAX_EXPOSURE"

# ------------------------------------------------------------------ run it the unit's way
# What systemd would give it: a user of its own (here nobody), no new privileges, umask 0077,
# the state directory as FREEWAY_DATA_DIR and working directory, the config as a credential.
STATE=$WORK/state/freeway
CRED=$WORK/credentials
mkdir -p "$STATE" "$CRED"
install -m 0644 "$ROOT/deploy/freeway.example.toml" "$CRED/freeway.toml"
chmod 0755 "$WORK" "$WORK/state"
chmod 0700 "$STATE"
runas=()
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
    chown 65534:65534 "$STATE"
    runas=(setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs)
fi
(
    cd "$STATE"
    umask 0077
    exec env -i PATH=/usr/bin:/bin FREEWAY_CONFIG="$CRED/freeway.toml" FREEWAY_DATA_DIR="$STATE" \
        FREEWAY_LISTEN=127.0.0.1:0 "${runas[@]}" "$BIN" serve
) >"$WORK/unit.out" 2>"$WORK/unit.err" &
PID=$!
PIDS+=("$PID")
if line=$(wait_line "$WORK/unit.out" '^Freeway listening on http://' 60 "$PID"); then
    addr=${line#Freeway listening on http://}
    pass "starts as the unit runs it (${runas:+uid 65534, no new privileges, }umask 0077, the example config)"
    check "/livez answers ok" test "$(curl -sS --max-time 30 "http://$addr/livez")" = ok
    private() { # every file the service made in its state directory is 0600
        local f n=0
        for f in "$STATE"/*; do
            [ -f "$f" ] || continue
            n=$((n + 1))
            [ "$(stat -c %a "$f")" = 600 ] || return 1
        done
        [ "$n" -gt 0 ]
    }
    check "its files in the state directory are 0600" private
    stop_pid "$PID" 30
    check "SIGTERM (systemctl stop) ends it cleanly (exit status $STOP_STATUS)" test "$STOP_STATUS" = 0
else
    cat "$WORK/unit.out" "$WORK/unit.err" >&2
    fail "starts as the unit runs it"
fi

log "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
