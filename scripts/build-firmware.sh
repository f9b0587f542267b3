#!/usr/bin/env bash
# Builds the RP2040 + W5500 board firmware (embedded-node/firmware-rp2040) for
# thumbv6m-none-eabi, prints its flash and static RAM use, and fails if they are over budget
# (flash 192 KiB, static RAM 128 KiB: the RP2040 has 2 MiB and 264 KiB; the rest of the RAM is
# the stack's, and the flash's is room to grow).
#
# The board's settings come from embedded-node/firmware-rp2040/memdi-board.toml, each key
# overridable by MEMDI_<KEY> (MEMDI_NODE_ID=4 MEMDI_IP=192.168.1.54 bash scripts/build-firmware.sh).
#
# - If rustup has the target installed, a plain `cargo build --release` in the firmware crate
#   (its .cargo/config.toml names the target; `cargo run --release` there flashes a board).
# - Otherwise (the usual case here: rustup cannot download targets), Debian's rustc-web/cargo-web
#   at /usr/bin with RUSTC_BOOTSTRAP=1 and -Zbuild-std=core,alloc, which builds the target's
#   sysroot from Debian's rust-web-src, linked by binutils' arm-none-eabi-ld (Debian's rustc
#   has no rust-lld). Installs the Debian packages if missing. Its target dir is
#   target/firmware, so it never invalidates the other toolchain's cache.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

TARGET=thumbv6m-none-eabi
CRATE=embedded-node/firmware-rp2040
BIN=memdi-firmware-rp2040
FLASH_BUDGET=$((192 * 1024))
RAM_BUDGET=$((128 * 1024))
root=$PWD

cd "$CRATE"
if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    echo "build-firmware: path: rustup ($(rustc --version)), prebuilt $TARGET sysroot"
    # --locked: the firmware's own Cargo.lock is committed.
    cargo build --locked --release
    target_dir=${CARGO_TARGET_DIR:-target}
else
    echo "build-firmware: path: Debian toolchain with -Zbuild-std=core,alloc (rustup has no $TARGET)"
    ensure_debian_rust
    echo "build-firmware: $("$DEBIAN_RUSTC" --version); $("$DEBIAN_CARGO" --version)"
    target_dir=$root/target/firmware
    # RUSTC: cargo-web would otherwise find rustup's rustc proxy first in PATH.
    # RUSTC_BOOTSTRAP=1: -Zbuild-std is unstable; Debian's toolchain is a stable release.
    # --locked: never let the Debian cargo rewrite the firmware's Cargo.lock.
    # RUSTC_WRAPPER/RUSTC_WORKSPACE_WRAPPER are cleared so a sccache set up for the stable
    # toolchain cannot mix the two compilers' outputs; CARGO_BUILD_TARGET and
    # CARGO_TARGET_DIR so that only the flags below decide.
    # The linker: the target's default, rust-lld, is not shipped by Debian's rustc;
    # arm-none-eabi-ld (binutils-arm-none-eabi) reads the same linker scripts.
    env -u RUSTC_WRAPPER -u RUSTC_WORKSPACE_WRAPPER -u CARGO_BUILD_TARGET -u CARGO_TARGET_DIR \
        RUSTC="$DEBIAN_RUSTC" RUSTC_BOOTSTRAP=1 \
        "$DEBIAN_CARGO" build --locked --release \
        -Zbuild-std=core,alloc --target "$TARGET" --target-dir "$target_dir" \
        --config "target.$TARGET.linker='arm-none-eabi-ld'"
fi

elf=$target_dir/$TARGET/release/$BIN
if [ ! -f "$elf" ]; then
    echo "build-firmware: FAILED: $elf not produced" >&2
    exit 1
fi
elf=$(realpath "$elf")
echo "build-firmware: $elf"

# Berkeley format: text (code, read-only data, vector table, boot loader), data (initialised
# statics: in flash, copied to RAM at start), bss (zeroed statics). defmt's strings are in a
# section that is not loaded: they stay on the host.
arm-none-eabi-size "$elf"
read -r text data bss < <(arm-none-eabi-size "$elf" | awk 'NR == 2 {print $1, $2, $3}')
flash=$((text + data))
ram=$((data + bss))
kib() { awk -v n="$1" 'BEGIN {printf "%.1f KiB", n / 1024}'; }
echo "build-firmware: flash $flash bytes ($(kib "$flash")) of a $(kib "$FLASH_BUDGET") budget"
echo "build-firmware: static RAM $ram bytes ($(kib "$ram")) of a $(kib "$RAM_BUDGET") budget (the stack is the rest of the 256 KiB)"

over=0
if [ "$flash" -gt "$FLASH_BUDGET" ]; then
    echo "build-firmware: FAILED: flash over budget" >&2
    over=1
fi
if [ "$ram" -gt "$RAM_BUDGET" ]; then
    echo "build-firmware: FAILED: static RAM over budget" >&2
    over=1
fi
if [ "$over" -ne 0 ]; then
    # awk rather than head: head would close the pipe early, and pipefail would end the
    # script there with SIGPIPE's status.
    echo "build-firmware: the largest statics in RAM (address, size in hex, type, name):" >&2
    arm-none-eabi-nm --size-sort --reverse-sort -S -C "$elf" | awk '$3 ~ /^[bBdD]$/ && n++ < 20' >&2
    echo "build-firmware: the largest symbols in flash:" >&2
    arm-none-eabi-nm --size-sort --reverse-sort -S -C "$elf" | awk '$3 ~ /^[tTrR]$/ && n++ < 20' >&2
    exit 1
fi
echo "build-firmware: OK"
