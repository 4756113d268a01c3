# Shared by the scripts that start processes and count checks: source it.
# shellcheck shell=bash

# lib_init NAME: a fresh work directory in $WORK, an empty PIDS list, and
# traps that stop every process in PIDS and remove $WORK on exit or Ctrl-C.
lib_init() {
    LIB_NAME="$1"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/llm-proxy-$1.XXXXXX")"
    PIDS=()
    trap lib_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
lib_cleanup() {
    # Background jobs of a script ignore SIGINT, so stop them explicitly.
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}

# shellcheck disable=SC2034 # PROXY and MOCK are for the sourcing script
# lib_binaries: set PROXY and MOCK to $LLM_PROXY_BIN and $LLM_PROXY_MOCK_BIN,
# or, unless both are given, build the release binaries and use those.
lib_binaries() {
    local root dir
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    dir="${CARGO_TARGET_DIR:-$root/target}/release"
    if [[ -z "${LLM_PROXY_BIN:-}" || -z "${LLM_PROXY_MOCK_BIN:-}" ]]; then
        echo "$LIB_NAME: building llm-proxy and llm-proxy-mock (cargo build --release --bins)"
        (cd "$root" && cargo build --release --bins --quiet)
    fi
    PROXY="${LLM_PROXY_BIN:-$dir/llm-proxy}"
    MOCK="${LLM_PROXY_MOCK_BIN:-$dir/llm-proxy-mock}"
}

# shellcheck disable=SC2034 # SPAWNED_PID is for the sourcing script
# spawn_listening LOG CMD...: start CMD in the background with its output in
# LOG and wait (10 s at most, polling) for its "listening on http://HOST:PORT"
# line, as llm-proxy and llm-proxy-mock print at start. Sets PORT and
# SPAWNED_PID and returns 0; returns 1 if CMD exits or never says so. (Call
# it directly, not in $(...): the pid must reach PIDS in this shell.)
spawn_listening() {
    local log="$1"
    shift
    : >"$log"
    "$@" >"$log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    SPAWNED_PID="$pid"
    PORT=""
    for _ in $(seq 100); do
        PORT="$(sed -n 's#.*listening on http://[^ ]*:\([0-9][0-9]*\).*#\1#p' "$log" | head -n 1)"
        [[ -n "$PORT" ]] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Check counters: ok/fail/skip DESCRIPTION, check DESCRIPTION CMD... (ok if
# CMD succeeds), and summary, which prints "NAME: N passed, N failed" and
# fails if anything did.
passed=0
failed=0
ok() {
    echo "  ok    $*"
    passed=$((passed + 1))
}
fail() {
    echo "  FAIL  $*"
    failed=$((failed + 1))
}
skip() { echo "  skip  $*"; }
check() {
    local what="$1"
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}
summary() {
    echo "$LIB_NAME: $passed passed, $failed failed"
    [[ $failed -eq 0 ]]
}

# Content events in a saved stream body (test-docker.sh, test-systemd.sh).
count_events() { grep -c '"content":"' "$1" || true; }
