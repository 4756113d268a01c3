#!/usr/bin/env bash
# Fuzz the parsers that read hostile bytes: scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each cargo-fuzz target in fuzz/ (all of them if none is named) for
# SECONDS (default 600), FUZZ_JOBS (default 2) at a time, starting from the
# committed corpus in fuzz/corpus/TARGET/ and replaying every input in
# fuzz/regressions/TARGET/ first. New inputs that reach new code go to
# target/fuzz/corpus/TARGET/ (kept between runs, never committed); with
# FUZZ_MERGE=1 the ones that add coverage are then merged into
# fuzz/corpus/TARGET/ (libFuzzer -merge=1) for committing.
# Each run is bounded: one input may take 10 s, one allocation 256 MiB, the
# process 2 GiB. Exits 1 if any target crashed, leaked, hung or ran out of
# memory (the input is in fuzz/artifacts/TARGET/, the log is printed), 3 with
# a "skip:" line if this machine cannot build the targets, else 0.
#
# FUZZ_KEEP_GOING=1: fork mode that records a crash and goes on (for long
# campaigns while a known crash is being fixed).
#
# Needs stable Rust, where RUSTC_BOOTSTRAP=1 gives cargo-fuzz the nightly
# flags it uses, and a C++ compiler (libfuzzer-sys builds libFuzzer from
# source). cargo-fuzz is installed with `cargo install` (into ~/.cargo/bin,
# about a minute) when missing. The targets are built into a cache outside
# the checkout, $FUZZ_TARGET_DIR (default ~/.cache/llm-proxy/fuzz-target;
# about 4 minutes the first time on 2 cores, seconds after that), so a fresh
# clone on the same machine (CI) does not rebuild every instrumented crate.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

seconds="${1:-600}"
[[ $# -gt 0 ]] && shift
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/fuzz.sh [seconds-per-target] [target...]" >&2
    exit 2
fi
all=(sse_reader anthropic_request anthropic_response anthropic_stream config retry_after)
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${all[@]}")
for t in "${targets[@]}"; do
    [[ -f "fuzz/fuzz_targets/$t.rs" ]] || {
        echo "unknown target $t (known: ${all[*]})" >&2
        exit 2
    }
done
jobs="${FUZZ_JOBS:-2}"

skip() {
    echo "skip: $*"
    exit 3
}

# What the toolchain must offer; anything else that fails below is a failure.
host="$(rustc -vV | sed -n 's/^host: //p')"
case "$host" in
x86_64-unknown-linux-gnu | aarch64-unknown-linux-gnu) ;;
*) skip "cargo-fuzz's AddressSanitizer build is not set up for $host" ;;
esac
cxx="${CXX:-c++}"
command -v "$cxx" >/dev/null || skip "no C++ compiler ($cxx) to build libFuzzer"
export RUSTC_BOOTSTRAP=1
echo 'fn main() {}' | rustc -Zsanitizer=address --crate-name probe -o /dev/null - 2>/dev/null ||
    skip "rustc does not accept -Zsanitizer=address even with RUSTC_BOOTSTRAP=1"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== cargo install cargo-fuzz (into ~/.cargo/bin, once per machine)"
    cargo install --quiet --locked cargo-fuzz ||
        skip "cargo install cargo-fuzz failed (no network to crates.io?)"
fi
build="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-proxy/fuzz-target}"
mkdir -p "$build"

echo "== cargo fuzz build (into $build)"
(cd fuzz && cargo fuzz build --target-dir "$build" 2>&1) | { grep -v '^ *Compiling' || true; }
bin="$build/$host/release"
for t in "${targets[@]}"; do
    [[ -x "$bin/$t" ]] || {
        echo "cargo fuzz build did not produce $bin/$t" >&2
        exit 1
    }
done

logs="$(mktemp -d "${TMPDIR:-/tmp}/llm-proxy-fuzz.XXXXXX")"
pids=()
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

flags=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256
    -print_final_stats=1)
[[ "${FUZZ_KEEP_GOING:-0}" == 1 ]] && flags+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)

run() {
    local t="$1" work="$root/target/fuzz/corpus/$1"
    mkdir -p "$work" "fuzz/corpus/$t" "fuzz/regressions/$t" "fuzz/artifacts/$t"
    # The first directory receives new inputs; the others are only read.
    "$bin/$t" "${flags[@]}" -artifact_prefix="fuzz/artifacts/$t/" \
        "$work" "fuzz/corpus/$t" "fuzz/regressions/$t" >"$logs/$t.log" 2>&1
}

echo "== fuzzing ${targets[*]}: ${seconds}s each, $jobs at a time"
declare -A status
queue=("${targets[@]}")
running=()
while [[ ${#queue[@]} -gt 0 || ${#running[@]} -gt 0 ]]; do
    while [[ ${#queue[@]} -gt 0 && ${#running[@]} -lt $jobs ]]; do
        t="${queue[0]}"
        queue=("${queue[@]:1}")
        run "$t" &
        pids+=($!)
        running+=("$t:$!")
    done
    wait -n || true
    still=()
    for tp in "${running[@]}"; do
        t="${tp%%:*}"
        pid="${tp##*:}"
        if kill -0 "$pid" 2>/dev/null; then
            still+=("$tp")
        else
            rc=0
            wait "$pid" || rc=$?
            status[$t]=$rc
        fi
    done
    running=("${still[@]+"${still[@]}"}")
done

bad=0
passed=0
for t in "${targets[@]}"; do
    log="$logs/$t.log"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    if [[ -z "$execs" ]]; then # fork mode prints no final stats
        execs="$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')"
    fi
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    rss="$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)"
    found="$(grep -c '^==[0-9]*== ERROR\|^SUMMARY: libFuzzer\|deadly signal' "$log" || true)"
    if [[ "${status[$t]}" -eq 0 ]]; then
        printf '  ok    %-20s %s execs, %s/s, peak RSS %s MB\n' "$t" "${execs:-?}" "${rate:-?}" "${rss:-?}"
        passed=$((passed + 1))
    else
        printf '  FAIL  %-20s exit %s after %s execs (%s findings):\n' "$t" "${status[$t]}" "${execs:-?}" "$found"
        grep -A1 'panicked at' "$log" | head -n 6 | sed 's/^/        /'
        grep 'ERROR: \|^SUMMARY\|Test unit written' "$log" | head -n 6 | sed 's/^/        /'
        bad=1
    fi
done
if [[ "${FUZZ_MERGE:-0}" == 1 ]]; then
    for t in "${targets[@]}"; do
        before="$(find "fuzz/corpus/$t" -type f | wc -l)"
        "$bin/$t" -merge=1 -rss_limit_mb=2048 -malloc_limit_mb=256 \
            "fuzz/corpus/$t" "$root/target/fuzz/corpus/$t" >"$logs/$t.merge.log" 2>&1 || {
            echo "  FAIL  merging $t's new inputs into fuzz/corpus/$t (log below)"
            tail -n 20 "$logs/$t.merge.log"
            bad=1
            continue
        }
        echo "  merged $t: fuzz/corpus/$t has $before -> $(find "fuzz/corpus/$t" -type f | wc -l) inputs"
    done
fi
echo "fuzz: $passed passed, $((${#targets[@]} - passed)) failed"
exit "$bad"
