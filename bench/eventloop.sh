#!/usr/bin/env bash
# Event loop under admin work: builds freeway, examples/fill_log and examples/mock_upstream in
# release mode (BENCH_SKIP_BUILD=1 skips that), then runs bench/eventloop.py with the arguments
# given (binary path, --only A|B, --out PATH); see its docstring for what is measured.
#
#   bench/eventloop.sh                                  # writes bench/results/eventloop.md
#   bench/eventloop.sh /tmp/freeway-before --out bench/results/eventloop-before.md
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=eventloop

command -v python3 >/dev/null || die "python3 is required"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release ..."
    cargo build --release --bin freeway --example fill_log --example mock_upstream >&2
fi
exec python3 "$ROOT/bench/eventloop.py" "$@"
