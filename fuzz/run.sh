#!/usr/bin/env bash
# Run Freeway's fuzz targets for a bounded time each.
#
#   fuzz/run.sh                 every target, FUZZ_SECONDS (default 60) each
#   FUZZ_RUNS=2000 fuzz/run.sh  every target, a fixed number of inputs each (what CI runs)
#   fuzz/run.sh sse             one target
#   fuzz/run.sh sse -runs=1000  extra arguments go to libFuzzer
#
# Works on stable Rust: `--sanitizer none` is the only cargo-fuzz setting that needs a nightly
# compiler otherwise (see fuzz/README.md). Starts from fuzz/corpus/<target>/ (kept in the
# repository, minimized) and fuzz/seeds/<target>/ (hand-written, read only); new inputs go to
# the corpus, crashes to fuzz/artifacts/<target>/ (git-ignored). With FUZZ_RUNS (the test
# suite), new inputs go to a temporary directory instead: a test run leaves the tree as it was.
set -uo pipefail

cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
if [ -n "${FUZZ_RUNS:-}" ]; then
    budget=(-runs="$FUZZ_RUNS")
    said="$FUZZ_RUNS inputs"
else
    budget=(-max_total_time="$seconds")
    said="${seconds}s"
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it" >&2
    cargo install cargo-fuzz --locked || exit 1
fi

if [ $# -gt 0 ]; then
    targets=("$1")
    shift
else
    mapfile -t targets < <(cargo fuzz list)
fi

# Build everything once up front so build time does not eat into the fuzzing time.
if [ ${#targets[@]} -eq 1 ]; then
    cargo fuzz build --sanitizer none "${targets[0]}" || exit 1
else
    cargo fuzz build --sanitizer none || exit 1
fi

scratch=""
if [ -n "${FUZZ_RUNS:-}" ]; then
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
fi

failed=()
for t in "${targets[@]}"; do
    echo "=== $t: $said ===" >&2
    mkdir -p "corpus/$t"
    # libFuzzer writes new inputs to the first directory only: the corpus, or the scratch one.
    dirs=("corpus/$t" "seeds/$t")
    if [ -n "$scratch" ]; then
        mkdir -p "$scratch/$t"
        dirs=("$scratch/$t" "${dirs[@]}")
    fi
    if ! cargo fuzz run --sanitizer none "$t" "${dirs[@]}" -- \
        "${budget[@]}" -timeout=10 -print_final_stats=1 "$@"; then
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/; replay with" \
        "cargo fuzz run --sanitizer none <target> <file>)" >&2
    exit 1
fi
echo "all targets ran $said without a crash: ${targets[*]}" >&2
