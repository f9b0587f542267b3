# shellcheck shell=bash
# Helpers shared by scripts/*.sh. Source it; don't run it.

# rustup's cargo/rustc must win over Debian's /usr/bin/cargo and /usr/bin/rustc, which the
# thumbv6m check installs: on a fresh machine ~/.cargo/bin is not always first in PATH.
if [ -d "${CARGO_HOME:-$HOME/.cargo}/bin" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

# The Debian Rust toolchain used to build memdi-core for thumbv6m-none-eabi with -Zbuild-std
# (rustup here cannot add targets). It is a second, independent toolchain at /usr/bin.
DEBIAN_RUST_PACKAGES=(rustc-web cargo-web rust-web-src binutils-arm-none-eabi)
DEBIAN_RUSTC=/usr/bin/rustc
DEBIAN_CARGO=/usr/bin/cargo

log() { printf '%s\n' "$*" >&2; }

# True when the Debian toolchain, its library source (for -Zbuild-std) and the ARM binutils
# are all present.
debian_rust_present() {
    [ -x "$DEBIAN_RUSTC" ] && [ -x "$DEBIAN_CARGO" ] || return 1
    local sysroot
    sysroot="$("$DEBIAN_RUSTC" --print sysroot 2>/dev/null)" || return 1
    [ -f "$sysroot/lib/rustlib/src/rust/library/core/src/lib.rs" ] || return 1
    [ -f "$sysroot/lib/rustlib/src/rust/library/Cargo.lock" ] || return 1
    command -v arm-none-eabi-ld >/dev/null 2>&1 || return 1
}

# Installs the Debian packages above unless already present (apt-get update once, then install,
# non-interactive). Needs root, or sudo without a password.
ensure_debian_rust() {
    if debian_rust_present; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo -n)
        else
            log "error: need root (or sudo) to apt-get install ${DEBIAN_RUST_PACKAGES[*]}"
            return 1
        fi
    fi
    log "installing Debian packages: ${DEBIAN_RUST_PACKAGES[*]}"
    local apt_opts=(-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    local aptlog
    aptlog="$(mktemp)"
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=600 &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" \
            "${DEBIAN_RUST_PACKAGES[@]}"; } </dev/null >"$aptlog" 2>&1; then
        tail -n 40 "$aptlog" >&2
        rm -f "$aptlog"
        log "error: apt-get failed installing ${DEBIAN_RUST_PACKAGES[*]}"
        return 1
    fi
    rm -f "$aptlog"
    if ! debian_rust_present; then
        log "error: installed ${DEBIAN_RUST_PACKAGES[*]} but $DEBIAN_RUSTC, $DEBIAN_CARGO, its rust-src or arm-none-eabi-ld is still missing"
        return 1
    fi
}

# apt-get installs `$@` (update first, non-interactive, quiet; root or sudo without a
# password). Used for packages the tests need besides the Debian Rust toolchain.
apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo -n)
        else
            log "error: need root (or sudo) to apt-get install $*"
            return 1
        fi
    fi
    local aptlog
    aptlog="$(mktemp)"
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=600 &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 "$@"; } </dev/null >"$aptlog" 2>&1; then
        tail -n 40 "$aptlog" >&2
        rm -f "$aptlog"
        log "error: apt-get failed installing $*"
        return 1
    fi
    rm -f "$aptlog"
}
