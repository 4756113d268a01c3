#!/usr/bin/env bash
# The project's test command (README "Test"; .ci/run calls exactly this).
# Formatting, lints, the Rust test suite, then the official OpenAI Python SDK
# against the proxy, install.sh in a DESTDIR root, the static release
# binary, the container image (a private dockerd) and install.sh with the
# unit under a real systemd (systemd-nspawn). Needs only the Rust toolchain,
# gcc and python3 with venv; the script installs the SDK into
# target/sdk-venv itself. shellcheck, systemd-analyze and valgrind (the
# stream cost check) are used when installed (skipped with a reason if
# not); as root with apt, the docker and nspawn steps install docker.io,
# systemd-container and debootstrap, and otherwise (or where dockerd or
# nspawn cannot run) skip with the reason.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The unit-file checks need systemd-analyze, the script lint shellcheck, the
# metrics check promtool. A
# fresh machine (CI) has neither: install them when we can (root with apt);
# otherwise those checks print a skip with the reason.
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v shellcheck >/dev/null || missing+=(shellcheck)
# promtool (tests/metrics.rs checks the /metrics scrape with it) comes with
# Debian's prometheus package (~96 MB installed).
command -v promtool >/dev/null || missing+=(prometheus)
# valgrind counts the instructions of a stream (scripts/stream_cost.py).
command -v valgrind >/dev/null || missing+=(valgrind)
if [[ ${#missing[@]} -gt 0 && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "== apt-get install ${missing[*]} (for the install and unit checks)"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null 2>&1 ||
        echo "could not install ${missing[*]}; their checks will be skipped"
fi

echo "== cargo fmt --check"
cargo fmt --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

echo "== cargo test"
cargo test --quiet 2>&1

# Every cargo-fuzz target for FUZZ_SECONDS, two at a time (README
# "Fuzzing"). Needs g++ for libFuzzer; the first run on a machine installs
# cargo-fuzz (about a minute) and builds the targets into a cache outside
# the checkout (about 4 minutes on 2 cores; seconds once warm).
fuzz_seconds="${FUZZ_SECONDS:-20}"
echo "== scripts/fuzz.sh $fuzz_seconds (every cargo-fuzz target, ${fuzz_seconds}s each)"
rc=0
scripts/fuzz.sh "$fuzz_seconds" || rc=$?
# 3: this toolchain cannot build the targets; fuzz.sh printed the reason.
[[ $rc -eq 0 || $rc -eq 3 ]] || exit "$rc"

echo "== scripts/sdk-check.sh (official openai package)"
cargo build --bins --quiet
target="${CARGO_TARGET_DIR:-target}"
LLM_PROXY_BIN="$target/debug/llm-proxy" \
LLM_PROXY_MOCK_BIN="$target/debug/llm-proxy-mock" \
    scripts/sdk-check.sh

# Instructions per stream event and per stream, counted under callgrind
# (exact counts, no timing): fails when either grew more than 10% over
# benchmarks/stream-cost.json. About 10 s after the release build.
echo "== scripts/stream_cost.py --check benchmarks/stream-cost.json (release build)"
if command -v valgrind >/dev/null; then
    cargo build --release --bins --quiet
    scripts/stream_cost.py --no-strace --check benchmarks/stream-cost.json \
        --proxy "$target/release/llm-proxy" --mock "$target/release/llm-proxy-mock"
else
    echo "skip: valgrind not installed"
fi

# Stack pages a stream keeps resident (page counts from smaps, no timing):
# fails when a frame on a stream's path grew (BENCHMARKS.md, "Memory at
# 1,000 streams"). A few seconds on the release build above.
echo "== scripts/stack_pages.py (release build)"
cargo build --release --bins --quiet
scripts/stack_pages.py --proxy "$target/release/llm-proxy" \
    --mock "$target/release/llm-proxy-mock"

echo "== shellcheck (install.sh, scripts/*.sh)"
if command -v shellcheck >/dev/null; then
    shellcheck -x install.sh scripts/*.sh .ci/run
else
    echo "skip: shellcheck not installed"
fi

echo "== scripts/test-install.sh (install.sh into a DESTDIR root)"
LLM_PROXY_BIN="$target/debug/llm-proxy" scripts/test-install.sh

echo "== scripts/test-static.sh (static release binary)"
LLM_PROXY_MOCK_BIN="$target/debug/llm-proxy-mock" scripts/test-static.sh

echo "== scripts/test-docker.sh (the container image, with a private dockerd)"
LLM_PROXY_MOCK_BIN="$target/debug/llm-proxy-mock" scripts/test-docker.sh

echo "== scripts/test-systemd.sh (install.sh and the unit under systemd, in nspawn)"
LLM_PROXY_MOCK_BIN="$target/debug/llm-proxy-mock" scripts/test-systemd.sh
