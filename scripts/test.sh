#!/usr/bin/env bash
# The whole test suite, in order; stops at the first failing step and names it.
#   MEMDI_FUZZ_SECS: seconds per fuzz target (default 20).
#   MEMDI_SIM_SEEDS: seeds the cluster simulator runs (default 1000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

steps_passed=0

step() {
    local name="$1"
    shift
    local start=$SECONDS
    echo "==> [$(date -u +%H:%M:%S)] $name"
    if "$@"; then
        steps_passed=$((steps_passed + 1))
        echo "<== [$(date -u +%H:%M:%S)] $name: ok ($((SECONDS - start))s)"
    else
        local rc=$?
        echo "!!! [$(date -u +%H:%M:%S)] test.sh: step '$name' FAILED (exit $rc, after $((SECONDS - start))s)" >&2
        echo "steps: $steps_passed passed, 1 failed"
        exit 1
    fi
}

fmt_check() {
    # `cargo fmt --all` covers the main workspace only; the fuzz crate and the board firmware
    # are workspaces of their own.
    cargo fmt --all -- --check &&
        cargo fmt --manifest-path core/fuzz/Cargo.toml -- --check &&
        cargo fmt --manifest-path embedded-node/firmware-rp2040/Cargo.toml -- --check
}

step "fmt" fmt_check
step "clippy" cargo clippy --workspace --all-targets -- -D warnings
# The simulator runs MEMDI_SIM_SEEDS seeds (CI: 1,000).
export MEMDI_SIM_SEEDS="${MEMDI_SIM_SEEDS:-1000}"
step "test" cargo test --workspace --release
step "thumbv6m" bash scripts/check-thumbv6m.sh
# The RP2040 board firmware, within its flash and RAM budget.
step "firmware" bash scripts/build-firmware.sh
step "fuzz" bash scripts/fuzz.sh "${MEMDI_FUZZ_SECS:-20}"

echo "steps: $steps_passed passed, 0 failed"
