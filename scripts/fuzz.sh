#!/usr/bin/env bash
# Usage: scripts/fuzz.sh [SECS]   (default 20)
#
# Runs EVERY target that `cargo fuzz list` reports for core/fuzz, SECS seconds each, one after
# the other, with the rustup nightly toolchain. Fails if any target fails to build or finds a
# crash/leak/timeout/OOM. libFuzzer's output goes to core/fuzz/target/fuzz-logs/TARGET.log; its
# tail is printed on failure, and the crashing input is left in core/fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

secs="${1:-20}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [SECS]  (SECS: a whole number >= 1)" >&2
    exit 2
fi

cd core
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is not installed (run scripts/setup.sh)" >&2
    exit 1
fi

mapfile -t targets < <(cargo +nightly fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz: FAILED: \`cargo fuzz list\` found no fuzz targets in core/fuzz" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s): ${targets[*]}; ${secs}s each"

# Build all targets first, so that a target that does not compile fails fast and clearly.
if ! cargo +nightly fuzz build; then
    echo "fuzz: FAILED: the fuzz targets do not build" >&2
    exit 1
fi

logdir=fuzz/target/fuzz-logs
mkdir -p "$logdir"
failed=()
for t in "${targets[@]}"; do
    log_file="$logdir/$t.log"
    start=$SECONDS
    # -timeout: one input running longer than this is reported as a hang (libFuzzer's default,
    # 1200 s, would let a hang eat the whole CI run).
    if cargo +nightly fuzz run "$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
        </dev/null >"$log_file" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log_file" | tail -n 1)
        cov=$(grep -Eo 'cov: [0-9]+' "$log_file" | tail -n 1 || true)
        echo "fuzz: $t: ok in $((SECONDS - start))s (${runs:-?} runs, ${cov:-cov: ?})"
    else
        echo "fuzz: $t: FAILED after $((SECONDS - start))s; last lines of core/$log_file:" >&2
        tail -n 60 "$log_file" >&2
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in core/fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: all ${#targets[@]} target(s) ran ${secs}s without a failure"
