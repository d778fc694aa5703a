#!/usr/bin/env bash
# Release archives: static Freeway binaries for x86-64 and aarch64 Linux (a Raspberry Pi 3, 4 or 5
# on a 64-bit OS), each packed with the README, the license, an example configuration, the
# deployment guide and the systemd unit, with SHA-256 checksums.
#
#   dist/build.sh                 # both targets
#   dist/build.sh aarch64         # or x86_64: one of them
#
# Writes target/dist/archives/freeway-VERSION-TRIPLE.tar.gz, one .sha256 beside each, and
# SHA256SUMS for all of them. Builds in target/dist (its own cargo lock: a build in target/ goes
# on untouched).
#
# x86-64 is built with the project's own toolchain (the `cargo` first on PATH). aarch64 is built
# with Debian 12's Rust (rustc-web, cargo-web and the arm64 standard library
# libstd-rust-web-dev:arm64, in /usr/bin) and the aarch64-linux-gnu cross gcc for the linker and
# the C code (SQLite, ring): no toolchain is downloaded. Missing Debian packages are installed
# with apt-get (as root, or through sudo).
#
# Both binaries are linked statically (-C target-feature=+crt-static, glibc's static libc): they
# run on any Linux of their architecture, whatever its glibc, and in a `FROM scratch` image.
set -euo pipefail
# shellcheck source=dist/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=build

TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(x86_64 aarch64)
VERSION=$(crate_version)
# Archives are reproducible: files sorted, owned by root, dated by the last commit.
EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)
mkdir -p "$DIST_TARGET_DIR" "$DIST_OUT"

export CARGO_TARGET_DIR=$DIST_TARGET_DIR
# Stripped in the archive (the release profile keeps symbols for local profiling).
export CARGO_PROFILE_RELEASE_STRIP=symbols
STATIC="-C target-feature=+crt-static"

build_x86_64() {
    local triple=x86_64-unknown-linux-gnu
    log "cargo build --release --target $triple ($(cargo --version))"
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$STATIC" \
        cargo build --release --locked --target "$triple" --bin freeway >&2
}

# Debian's rustc must be new enough for the crate (rust-version in Cargo.toml, edition 2024).
check_debian_rustc() {
    local need have
    need=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml")
    have=$(/usr/bin/rustc --version | awk '{print $2}')
    if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
        die "Debian's rustc is $have; the crate needs $need"
    fi
}

build_aarch64() {
    local triple=aarch64-unknown-linux-gnu
    if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/rustlib/$triple/lib ] \
        || ! command -v aarch64-linux-gnu-gcc >/dev/null || [ ! -e /usr/aarch64-linux-gnu/lib/libc.a ]; then
        apt_install "${DEPS_AARCH64[@]}" || die "cannot install ${DEPS_AARCH64[*]}"
    fi
    check_debian_rustc
    log "cargo build --release --target $triple ($(/usr/bin/cargo --version), $(/usr/bin/rustc --version))"
    # Debian's cargo would otherwise find the rustup `rustc` first on PATH.
    RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$STATIC" \
        CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
        AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
        /usr/bin/cargo build --release --locked --target "$triple" --bin freeway >&2
}

# pack ARCH: the archive and its checksum.
pack() {
    local arch=$1 triple="$1-unknown-linux-gnu" name stage bin
    name="freeway-$VERSION-$triple"
    bin="$DIST_TARGET_DIR/$triple/release/freeway"
    [ -x "$bin" ] || die "missing $bin"
    # Static means no program interpreter (no dynamic loader) in the ELF headers.
    if LC_ALL=C readelf -lW "$bin" | grep -q 'INTERP'; then
        die "$bin is not statically linked"
    fi
    stage=$(mktemp -d)
    mkdir "$stage/$name"
    install -m 0755 "$bin" "$stage/$name/freeway"
    install -m 0644 "$ROOT/README.md" "$ROOT/LICENSE" "$ROOT/deploy/freeway.example.toml" \
        "$ROOT/deploy/freeway.service" "$ROOT/docs/DEPLOY.md" "$stage/$name/"
    rm -f "$DIST_OUT/$name.tar.gz" "$DIST_OUT/$name.tar.gz.sha256"
    tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" \
        -cf - "$name" | gzip -n -9 >"$DIST_OUT/$name.tar.gz"
    rm -rf "$stage"
    (cd "$DIST_OUT" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
    log "$DIST_OUT/$name.tar.gz: $(human "$(stat -c %s "$DIST_OUT/$name.tar.gz")"), binary $(human "$(stat -c %s "$bin")")"
    echo "FIGURE ${arch}_archive_bytes=$(stat -c %s "$DIST_OUT/$name.tar.gz")"
    echo "FIGURE ${arch}_binary_bytes=$(stat -c %s "$bin")"
}

for arch in "${TARGETS[@]}"; do
    case "$arch" in
        x86_64 | aarch64) ;;
        *) die "unknown target $arch (x86_64 or aarch64)" ;;
    esac
    start=$(date +%s)
    "build_$arch"
    echo "FIGURE ${arch}_build_seconds=$(($(date +%s) - start))"
    pack "$arch"
done
(cd "$DIST_OUT" && cat "freeway-$VERSION-"*.tar.gz.sha256 >SHA256SUMS)
log "archives and checksums in $DIST_OUT:"
(cd "$DIST_OUT" && ls -l "freeway-$VERSION-"*.tar.gz* SHA256SUMS >&2)
