#!/usr/bin/env bash
# Builds the container image (deploy/Containerfile: FROM scratch, the static x86-64 binary) with
# podman and runs it:
#
#   dist/container.sh             # builds target/dist's x86-64 binary first if it is missing
#
# Checks: the image holds the binary alone and runs as a non-root numeric user, listening on
# 0.0.0.0:3001 with its data in the volume /data; run on the host's network (--network=host, so
# it reaches a mock upstream on the host's 127.0.0.1, named `localhost` to exercise the static
# binary's name lookup through the container's /etc/hosts), it answers /livez, proxies a chat,
# writes its database and key file into the volume as that user, and a second container on the
# same volume finds its data again. Removes its containers and volume; keeps the image
# (localhost/freeway:VERSION). Prints PASS:/FAIL: lines and FIGURE lines; exits 1 on a failure.
#
# This machine needs `podman run --runtime runc` and explicit ulimits (it cannot raise them);
# elsewhere podman's defaults do.
set -euo pipefail
# shellcheck source=dist/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=container

command -v curl >/dev/null || die "curl is required"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    apt_install "${DEPS_CONTAINER[@]}" || die "cannot install ${DEPS_CONTAINER[*]}"
fi
VERSION=$(crate_version)
BIN=$DIST_TARGET_DIR/x86_64-unknown-linux-gnu/release/freeway
[ -x "$BIN" ] || "$ROOT/dist/build.sh" x86_64 >&2
IMAGE=localhost/freeway:$VERSION
NAME=freeway-test-$$
VOLUME=freeway-test-data-$$
UID_GID=10001:10001
PODMAN_RUN=(podman run --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/freeway-container.XXXXXX")
cleanup() {
    timeout 60 podman rm -f -t 5 "$NAME" "$NAME-2" >/dev/null 2>&1 || true
    timeout 60 podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
    cleanup_pids
    rm -rf "$WORK"
}
trap cleanup EXIT

# ------------------------------------------------------------------ build
mkdir -p "$WORK/context/empty"
cp "$BIN" "$WORK/context/freeway"
start=$(date +%s)
old_id=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
# --layers=false: no intermediate image per instruction is kept.
if timeout 300 podman build -q --layers=false -f "$ROOT/deploy/Containerfile" \
    --build-arg "VERSION=$VERSION" -t "$IMAGE" "$WORK/context" >"$WORK/build.log" 2>&1; then
    pass "podman build (FROM scratch) makes $IMAGE"
    # The image this one replaces, now untagged.
    if [ -n "$old_id" ] && [ "$old_id" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
        podman rmi "$old_id" >/dev/null 2>&1 || true
    fi
else
    cat "$WORK/build.log" >&2
    fail "podman build (FROM scratch) makes $IMAGE"
    exit 1
fi
echo "FIGURE container_build_seconds=$(($(date +%s) - start))"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "FIGURE container_image_bytes=$size"
log "image $IMAGE: $(human "$size")"
config=$(podman image inspect --format '{{.Config.User}} {{join .Config.Env " "}} {{range $k, $v := .Config.Volumes}}{{$k}} {{end}}' "$IMAGE")
log "image config: $config"
check "the image runs as user $UID_GID" test "${config%% *}" = "$UID_GID"
image_defaults() {
    [[ " $config " == *" FREEWAY_LISTEN=0.0.0.0:3001 "* && " $config " == *" FREEWAY_DATA_DIR=/data "* \
        && " $config " == *" /data "* ]]
}
check "the image listens on 0.0.0.0:3001 with its data in the volume /data" image_defaults
layers=$(podman image inspect --format '{{len .RootFS.Layers}}' "$IMAGE")
check "the image is FROM scratch: its layers are the binary and two empty folders ($layers)" \
    test "$layers" -le 3

# ------------------------------------------------------------------ run
python3 "$ROOT/dist/mock_upstream.py" --exit-after 600 >"$WORK/mock.out" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
MOCK_ADDR=$(wait_line "$WORK/mock.out" '^listening on ' 30 "$MOCK_PID" | sed 's/^listening on //') \
    || die "the mock upstream did not start"
MOCK_PORT=${MOCK_ADDR##*:}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
KEY=fw-container-0123456789abcdefghijklmnopqrstuvwxyzABC
cat >"$WORK/freeway.toml" <<EOF
[auth]
api_keys = ["$KEY"]
[custom.mock]
base_url = "http://localhost:$MOCK_PORT/v1"
models = [{ id = "mock-model", context = 131072 }]
EOF
chmod 0644 "$WORK/freeway.toml"
timeout 60 podman volume create "$VOLUME" >/dev/null

# run_container NAME: start it detached and wait for the end of its banner (a blank line).
run_container() {
    local name=$1 i
    # With --network=host the image's 0.0.0.0:3001 would open the host's port 3001 on every
    # interface: the test keeps it on loopback, on a free port.
    timeout 120 "${PODMAN_RUN[@]}" -d --name "$name" --network=host \
        -e "FREEWAY_LISTEN=127.0.0.1:$PORT" -e FREEWAY_CONFIG=/etc/freeway/freeway.toml \
        -v "$WORK/freeway.toml:/etc/freeway/freeway.toml:ro" -v "$VOLUME:/data" \
        "$IMAGE" >/dev/null || return 1
    for ((i = 0; i < 300; i++)); do
        podman logs "$name" 2>/dev/null | grep -q '^$' && return 0
        [ "$(podman inspect --format '{{.State.Running}}' "$name" 2>/dev/null)" = true ] || break
        sleep 0.2
    done
    podman logs "$name" >&2 || true
    return 1
}

start=$(date +%s)
if run_container "$NAME"; then
    pass "podman run starts it (runc, --network=host)"
    echo "FIGURE container_start_seconds=$(($(date +%s) - start))"
    check "/livez answers ok" test "$(curl -sS --max-time 30 "http://127.0.0.1:$PORT/livez")" = ok
    answer=$(curl -sS --max-time 60 -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        -d '{"model":"mock-model","messages":[{"role":"user","content":"ping"}]}' \
        "http://127.0.0.1:$PORT/v1/chat/completions" || true)
    content=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])' \
        <<<"$answer" 2>/dev/null || true)
    check "proxies a chat to the mock upstream on the host, by name (\"$content\")" \
        test "$content" = "pong from mock"
    pid=$(podman inspect --format '{{.State.Pid}}' "$NAME")
    uids=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo unknown)
    check "the process runs as UID 10001 (real UID $uids)" test "$uids" = 10001
    check "the first start prints a client key" \
        grep -qE 'Your client key \(shown once, keep it\): fw-' <<<"$(podman logs "$NAME" 2>&1)"
    mount=$(podman volume inspect --format '{{.Mountpoint}}' "$VOLUME")
    ls -ln "$mount" >&2 || true
    owned() { # every file in the volume belongs to 10001, the key file has mode 0600
        local f key=""
        [ -n "$(ls -A "$mount")" ] || return 1
        for f in "$mount"/*; do
            [ "$(stat -c %u:%g "$f")" = "$UID_GID" ] || return 1
            [[ $(basename "$f") == *key* ]] && key=$f
        done
        [ -n "$key" ] && [ "$(stat -c %a "$key")" = 600 ]
    }
    check "its database and key file are in the volume, owned by 10001 (key file 0600)" owned
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    echo "FIGURE container_rss_kb=$rss"
    timeout 60 podman stop -t 20 "$NAME" >/dev/null 2>&1 || true
    code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
    check "podman stop ends it cleanly (exit code $code)" test "$code" = 0
    if run_container "$NAME-2"; then
        check "a new container on the same volume keeps its data (no new client key)" \
            test "$(podman logs "$NAME-2" 2>&1 | grep -c 'Your client key')" = 0
        check "and answers /livez" test "$(curl -sS --max-time 30 "http://127.0.0.1:$PORT/livez")" = ok
    else
        fail "a new container on the same volume starts"
    fi
else
    fail "podman run starts it (runc, --network=host)"
fi
stop_pid "$MOCK_PID" 5

log "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
