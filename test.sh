#!/usr/bin/env bash
# The whole test suite, from a fresh machine: formatting, lints, then every test.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo nextest run --locked --no-fail-fast
