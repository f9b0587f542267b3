#!/usr/bin/env bash
# Proves that memdi-core builds for the microcontroller target thumbv6m-none-eabi with no std
# and no alloc.
#
# - If rustup has the target installed, a plain `cargo build --target thumbv6m-none-eabi`.
#   (That proves no_std only: rustup's prebuilt sysroot ships alloc too.)
# - Otherwise (the usual case here: rustup cannot download targets), Debian's rustc-web/cargo-web
#   at /usr/bin, with RUSTC_BOOTSTRAP=1 and -Zbuild-std=core: only `core` (and
#   compiler_builtins) is built for the target, so any `extern crate alloc`/`std` anywhere in
#   memdi-core or its dependency graph fails the build. Installs the Debian packages if missing.
#   Uses its own target dir (target/thumbv6m) so it never invalidates the stable toolchain's cache.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

TARGET=thumbv6m-none-eabi

if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    echo "check-thumbv6m: path: rustup ($(rustc --version)), prebuilt $TARGET sysroot"
    cargo build --locked -p memdi-core --target "$TARGET" --release
    rlib="target/$TARGET/release/libmemdi_core.rlib"
else
    echo "check-thumbv6m: path: Debian toolchain with -Zbuild-std=core (rustup has no $TARGET)"
    ensure_debian_rust
    echo "check-thumbv6m: $("$DEBIAN_RUSTC" --version); $("$DEBIAN_CARGO" --version)"
    target_dir=target/thumbv6m
    # RUSTC: cargo-web would otherwise find rustup's rustc proxy first in PATH.
    # RUSTC_BOOTSTRAP=1: -Zbuild-std is unstable; Debian's toolchain is a stable release.
    # --locked: never let the Debian cargo rewrite the workspace's Cargo.lock.
    # RUSTC_WRAPPER/RUSTC_WORKSPACE_WRAPPER are cleared so a sccache set up for the stable
    # toolchain cannot mix the two compilers' outputs.
    env -u RUSTC_WRAPPER -u RUSTC_WORKSPACE_WRAPPER -u CARGO_BUILD_TARGET \
        RUSTC="$DEBIAN_RUSTC" RUSTC_BOOTSTRAP=1 \
        "$DEBIAN_CARGO" build --locked -p memdi-core --release \
        -Zbuild-std=core --target "$TARGET" --target-dir "$target_dir"
    rlib="$target_dir/$TARGET/release/libmemdi_core.rlib"
    # Belt and braces: nothing but core must have been built for the target.
    for f in "$target_dir/$TARGET/release/deps/"lib{alloc,std}-*; do
        if [ -e "$f" ]; then
            echo "check-thumbv6m: FAILED: alloc or std was built for $TARGET: $f" >&2
            exit 1
        fi
    done
fi

if [ ! -f "$rlib" ]; then
    echo "check-thumbv6m: FAILED: $rlib not produced" >&2
    exit 1
fi
size=$(stat -c %s "$rlib")
echo "check-thumbv6m: OK: $rlib is $size bytes ($(numfmt --to=iec-i --suffix=B "$size"), with metadata and debuginfo)"
# The machine code in it (non-generic code only; generics are compiled in the crate using them).
if command -v arm-none-eabi-size >/dev/null 2>&1; then
    totals=$(arm-none-eabi-size -t "$rlib" 2>/dev/null | awk '/\(TOTALS\)/ {print "text " $1 ", data " $2 ", bss " $3}') || true
    if [ -n "${totals:-}" ]; then
        echo "check-thumbv6m: object code in the rlib: $totals bytes"
    fi
fi
