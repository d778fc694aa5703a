#!/usr/bin/env bash
# The deployment tests (SPEC section 9), end to end; the last step of ./test.sh.
#
#   dist/test.sh
#
# Installs the Debian packages it needs (the aarch64 cross toolchain and Debian's Rust, qemu-user,
# podman and runc, systemd), then:
#   1. dist/build.sh: both release archives; each archive verifies with sha256sum -c, holds the
#      binary (statically linked), README, LICENSE, example config, deployment guide and unit;
#   2. dist/smoke.sh on the x86-64 binary and, under qemu-aarch64-static, the aarch64 binary,
#      both as unpacked from their archives;
#   3. dist/service.sh: systemd-analyze verify and security, and a run the unit's way;
#   4. dist/container.sh: the FROM scratch image, built and run with podman.
# Each check prints PASS: or FAIL:; the measured figures go to target/dist/figures.txt. The last
# line is `N passed, N failed`; the exit status is 1 if any check failed.
# The two release builds take most of the time (about 7 minutes each from a cold target/dist on
# 2 cores; seconds when nothing changed).
set -uo pipefail
# shellcheck source=dist/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=dist-test
cd "$ROOT" || exit 1

mkdir -p "$DIST_TARGET_DIR"
FIGURES=$DIST_TARGET_DIR/figures.txt
LOGS=$DIST_TARGET_DIR/logs
mkdir -p "$LOGS"
: >"$FIGURES"
T0=$(date +%s)

# step NAME COMMAND...: run a dist script, echo its PASS/FAIL lines, count them, keep its FIGURE
# lines. A script that fails without a FAIL line of its own counts as one failure.
step() {
    local name=$1 rc=0 p f start
    shift
    start=$(date +%s)
    log "== $name: $*"
    "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err" || rc=$?
    grep -E '^(PASS|FAIL): ' "$LOGS/$name.out" || true
    sed -n 's/^FIGURE /'"$name"' /p' "$LOGS/$name.out" >>"$FIGURES"
    p=$(grep -c '^PASS: ' "$LOGS/$name.out" || true)
    f=$(grep -c '^FAIL: ' "$LOGS/$name.out" || true)
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        fail "$name exited with status $rc"
    fi
    if [ "$rc" -ne 0 ]; then
        log "$name failed; the end of its log ($LOGS/$name.err):"
        tail -40 "$LOGS/$name.err" >&2
    fi
    log "$name took $(($(date +%s) - start)) s"
    return "$rc"
}

# static_elf FILE ARCH: FILE is an ARCH executable with no program interpreter and no shared
# library (static or static-pie).
static_elf() {
    local machine
    machine=$(LC_ALL=C readelf -h "$1" | sed -n 's/^ *Machine: *//p')
    case "$2" in
        x86_64) [ "$machine" = "Advanced Micro Devices X86-64" ] || return 1 ;;
        aarch64) [ "$machine" = AArch64 ] || return 1 ;;
    esac
    ! LC_ALL=C readelf -lW "$1" | grep -q INTERP && ! LC_ALL=C readelf -dW "$1" | grep -q NEEDED
}

# page_aligned FILE: every LOAD segment of FILE is aligned to at least 64 KiB.
page_aligned() {
    local align n=0
    for align in $(LC_ALL=C readelf -lW "$1" | awk '$1 == "LOAD" {print $NF}'); do
        [ $((align)) -ge 65536 ] || return 1
        n=$((n + 1))
    done
    [ "$n" -gt 0 ]
}

# ------------------------------------------------------------------ packages
if apt_install "${DEPS_AARCH64[@]}" "${DEPS_CONTAINER[@]}" "${DEPS_SERVICE[@]}" curl file binutils \
    >"$LOGS/apt.log" 2>&1; then
    pass "the Debian packages are installed"
else
    tail -20 "$LOGS/apt.log" >&2
    fail "the Debian packages are installed (see $LOGS/apt.log)"
fi

# ------------------------------------------------------------------ 1. archives
VERSION=$(crate_version)
UNPACKED=$DIST_TARGET_DIR/unpacked
if step build "$ROOT/dist/build.sh"; then
    pass "dist/build.sh builds both archives"
    sums() { (cd "$DIST_OUT" && sha256sum -c --quiet --strict "$1"); }
    check "the archives verify with sha256sum -c SHA256SUMS" sums SHA256SUMS
    rm -rf "$UNPACKED"
    mkdir -p "$UNPACKED"
    for arch in x86_64 aarch64; do
        name=freeway-$VERSION-$arch-unknown-linux-gnu
        check "$name.tar.gz verifies with its own .sha256" sums "$name.tar.gz.sha256"
        tar -C "$UNPACKED" -xzf "$DIST_OUT/$name.tar.gz"
        contents=$(cd "$UNPACKED/$name" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort | tr '\n' ' ')
        check "$name.tar.gz holds the binary, README, LICENSE, example config, guide and unit ($contents)" \
            test "$contents" = "DEPLOY.md LICENSE README.md freeway freeway.example.toml freeway.service "
        check "its binary is a static $arch executable" static_elf "$UNPACKED/$name/freeway" "$arch"
        if [ "$arch" = aarch64 ]; then
            check "its segments are 64 KiB aligned: it loads on 4, 16 (Pi 5) and 64 KiB page kernels" \
                page_aligned "$UNPACKED/$name/freeway"
        fi
    done
else
    fail "dist/build.sh builds both archives"
fi

# ------------------------------------------------------------------ 2. smoke tests
for arch in x86_64 aarch64; do
    bin=$UNPACKED/freeway-$VERSION-$arch-unknown-linux-gnu/freeway
    if [ -x "$bin" ]; then
        step "smoke-$arch" "$ROOT/dist/smoke.sh" "$bin" || true
    else
        fail "smoke test of the $arch binary: no binary to test"
    fi
done

# ------------------------------------------------------------------ 3, 4. service, container
step service "$ROOT/dist/service.sh" || true
step container "$ROOT/dist/container.sh" || true

log "figures ($FIGURES):"
sed 's/^/    /' "$FIGURES" >&2
log "dist/test.sh took $(($(date +%s) - T0)) s"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
