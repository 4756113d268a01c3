#!/usr/bin/env bash
# Build a fully static x86_64 Linux llm-proxy: no dynamic loader, no shared
# libraries, so the one file runs on any x86_64 Linux (copy it and start it).
#
#   scripts/build-static.sh            build, check, print the path and size
#
# Uses the musl target when it is installed (rustup target add
# x86_64-unknown-linux-musl); otherwise static glibc (crt-static), which needs
# only the toolchain and gcc's libc6-dev. The explicit --target keeps build
# scripts and proc-macros dynamic, as they must be.
#
# TLS is rustls (no OpenSSL to link). DNS: with static glibc (>= 2.34),
# getaddrinfo reads /etc/hosts and queries the servers in /etc/resolv.conf
# with code built into the binary; NSS modules other than `files` and `dns` in
# /etc/nsswitch.conf (mdns, myhostname, sss...) are not used. See README
# "Deploying".
#
# Environment:
#   CARGO_TARGET_DIR   as for cargo [default: target]
#   STATIC_TARGET      force x86_64-unknown-linux-musl or x86_64-unknown-linux-gnu
#
# The last line of output is the binary's path; `--print-path` prints only it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

print_path_only=0
case "${1:-}" in
    --print-path) print_path_only=1 ;;
    "") ;;
    -h | --help)
        sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "build-static: unknown argument: $1 (try --help)" >&2
        exit 2
        ;;
esac

if [[ "$(uname -m)" != x86_64 ]]; then
    echo "build-static: this script builds x86_64 binaries on an x86_64 host; this is $(uname -m)" >&2
    exit 1
fi
command -v cargo >/dev/null || {
    echo "build-static: cargo not found (install the Rust toolchain: https://rustup.rs)" >&2
    exit 1
}

MUSL=x86_64-unknown-linux-musl
GNU=x86_64-unknown-linux-gnu
if [[ -z "${STATIC_TARGET:-}" ]]; then
    if [[ -d "$(rustc --print sysroot)/lib/rustlib/$MUSL/lib" ]]; then
        STATIC_TARGET=$MUSL
    else
        STATIC_TARGET=$GNU
    fi
fi
case "$STATIC_TARGET" in
    "$MUSL") flags="-C target-feature=+crt-static" ;; # musl's default, stated anyway
    "$GNU")
        flags="-C target-feature=+crt-static"
        libc_a="$(gcc -print-file-name=libc.a 2>/dev/null || true)"
        if [[ "$libc_a" != /* || ! -e "$libc_a" ]]; then
            echo "build-static: static glibc (libc.a) not found; install libc6-dev" >&2
            exit 1
        fi
        ;;
    *)
        echo "build-static: STATIC_TARGET must be $MUSL or $GNU, not $STATIC_TARGET" >&2
        exit 2
        ;;
esac

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/$STATIC_TARGET/release/llm-proxy"

log() { if [[ $print_path_only -eq 0 ]]; then echo "build-static: $*" >&2; fi; }

log "cargo build --release --bin llm-proxy --target $STATIC_TARGET (RUSTFLAGS=$flags)"
# Link warnings are kept in a log: static glibc warns that getaddrinfo "requires
# at runtime the shared libraries from the glibc version used for linking".
# That is about NSS modules other than files/dns (see above); shown once here.
build_log="$(mktemp "${TMPDIR:-/tmp}/llm-proxy-build-static.XXXXXX")"
trap 'rm -f "$build_log"' EXIT
if ! RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }$flags" \
    cargo build --release --bin llm-proxy --target "$STATIC_TARGET" --quiet 2>"$build_log"; then
    cat "$build_log" >&2
    echo "build-static: build failed" >&2
    exit 1
fi
if grep -q "getaddrinfo" "$build_log"; then
    log "note: the linker warned that static getaddrinfo loads NSS modules other than files/dns from the host's glibc; /etc/hosts and DNS work without them"
fi

# Static means: no program interpreter (dynamic loader) and no needed libraries.
if ! command -v readelf >/dev/null; then
    echo "build-static: readelf (binutils) not found; cannot check $BIN" >&2
    exit 1
fi
if readelf -lW "$BIN" | grep -q 'INTERP'; then
    echo "build-static: $BIN has a program interpreter: it is not static" >&2
    readelf -lW "$BIN" | grep -A1 INTERP >&2
    exit 1
fi
if readelf -dW "$BIN" | grep -q '(NEEDED)'; then
    echo "build-static: $BIN needs shared libraries: it is not static" >&2
    readelf -dW "$BIN" | grep '(NEEDED)' >&2
    exit 1
fi

if [[ $print_path_only -eq 1 ]]; then
    echo "$BIN"
    exit 0
fi
size_bytes="$(stat -c %s "$BIN")"
log "static ($STATIC_TARGET): no INTERP header, no NEEDED libraries"
if command -v file >/dev/null; then
    log "file: $(file -b "$BIN")"
fi
echo "size: $size_bytes bytes ($(((size_bytes + 524288) / 1048576)) MiB)"
echo "$BIN"
