#!/usr/bin/env bash
# Installs what a fresh machine needs for scripts/test.sh. Idempotent; quiet when all is present.
#
# - Debian's rustc-web, cargo-web, rust-web-src, binutils-arm-none-eabi (thumbv6m check),
# - cargo-fuzz (fuzzing, with the rustup nightly toolchain),
# - iptables (the fault test cuts links between network namespaces with DROP rules),
# - Debian's redis-server and redis-tools, and redis-py from PyPI (the RESP tests drive
#   memdi with redis-cli, redis-benchmark and redis-py; bench/compare-redis.sh runs
#   redis-server),
# - checks that rustup has a nightly toolchain and that stable has rustfmt and clippy
#   (rustup cannot download anything here, so these can only be reported, not installed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

ok=1

ensure_debian_rust

if ! command -v redis-cli >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1 ||
    ! command -v redis-server >/dev/null 2>&1; then
    log "setup: installing redis-server and redis-tools (apt-get)"
    apt_install redis-server redis-tools || ok=0
fi

if ! command -v iptables-restore >/dev/null 2>&1; then
    log "setup: installing iptables (apt-get), for the fault test's partitions"
    apt_install iptables || ok=0
fi

if ! python3 -c 'import redis' >/dev/null 2>&1; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        log "setup: installing python3 and pip (apt-get), for redis-py"
        apt_install python3 python3-pip || ok=0
    fi
    log "setup: installing redis-py (pip install redis)"
    # --break-system-packages: Debian's own python3 refuses a plain pip install (PEP 668);
    # pip versions that do not know the flag are tried without it.
    python3 -m pip install --quiet redis ||
        python3 -m pip install --quiet --break-system-packages redis ||
        { log "setup: ERROR: pip install redis failed"; ok=0; }
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    log "setup: installing cargo-fuzz (cargo install --locked cargo-fuzz)"
    cargo install --locked --quiet cargo-fuzz
fi

if ! command -v rustup >/dev/null 2>&1; then
    log "setup: ERROR: rustup not found (expected at ~/.cargo/bin/rustup)"
    ok=0
elif ! rustup toolchain list | grep -q '^nightly'; then
    log "setup: ERROR: no nightly toolchain in \`rustup toolchain list\`; cargo fuzz needs one"
    log "       (install it with \`rustup toolchain install nightly\` where the rustup server is reachable)"
    ok=0
fi

for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        log "setup: ERROR: \`cargo $tool\` is missing from the stable toolchain (rustup component add ${tool/fmt/rustfmt})"
        ok=0
    fi
done

[ "$ok" = 1 ]
