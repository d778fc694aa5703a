#!/usr/bin/env bash
# The whole test suite, from a fresh machine: formatting, lints, every test, then every fuzz
# target for a bounded number of inputs. Installs what it needs (cargo-nextest, cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
# Debian packages some tests need, installed with apt-get when missing (one `apt-get update`
# for all of them). If one cannot be installed, the tests that need it fail and say so.
# - The dashboard's browser tests drive Debian's Chromium through ChromeDriver.
# - The replica tests run a real Redis (tests/it/redis_server.rs) on a loopback port.
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
apt_updated=0
apt_install() { # what-for PACKAGE...
  local what=$1; shift
  { [ "$apt_updated" = 1 ] || { $sudo apt-get update -q && apt_updated=1; }; } \
    && $sudo apt-get install -y -q "$@" \
    || echo "could not install $*: the $what tests will fail" >&2
}
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt_install browser chromium chromium-driver
fi
if [ ! -x /usr/bin/redis-server ]; then
  apt_install replica redis-server
fi
# The store tests (tests/it/store.rs) start a throwaway PostgreSQL (initdb, pg_ctl): from the
# machine, or Debian's postgresql package. If it cannot be installed, those tests fail and say so.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q && $sudo apt-get install -y -q postgresql \
    || echo "could not install postgresql: the PostgreSQL store tests will fail" >&2
fi
# The client tests (tests/it/clients.rs) drive Freeway with the official clients: the anthropic
# and openai Python SDKs in a venv, Claude Code and Codex CLI from the npm registry, run offline
# in a loopback-only network namespace (unshare, ip). Installed once under target/clients and
# reinstalled only when a pinned version changes. If an install fails, those tests fail and say so.
tests/clients/setup.sh || echo "could not install the clients of tests/clients: the client tests will fail" >&2
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo nextest run --locked --no-fail-fast
# Fuzzing keeps running: each target replays its corpus (fuzz/corpus, kept in the repository)
# and tries FUZZ_RUNS new inputs.
FUZZ_RUNS="${FUZZ_RUNS:-20000}" fuzz/run.sh
dist/test.sh
