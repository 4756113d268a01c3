#!/usr/bin/env bash
# The benchmark harness (BENCHMARKS.md explains method and reading).
#
#   scripts/bench.sh            quick mode: 1 run per scenario, 3 s each (~2 min)
#   scripts/bench.sh --full     full mode: 3 runs per scenario, 6 s each (~10 min)
#   scripts/bench.sh --only 'json c1,stream c1'   a subset (names as in the table)
#   extra arguments go to scripts/bench.py (--repeat N, --duration S)
#
# Loopback only. Builds the release binaries, installs the load generator
# `oha` into target/tools if it is not on PATH (a one-off `cargo install`,
# several minutes, not counted in the modes' times), starts two mock
# upstreams and the proxy, and stops all of them on exit. The proxy logs at
# its default level (info, one line per request) to a file in the results
# directory, as it would to journald. Results: target/bench/<time>/bench.md
# and bench.json, and the table on stdout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=quick
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --full) mode=full ;;
        --quick) mode=quick ;;
        *) args+=("$1") ;;
    esac
    shift
done

command -v python3 >/dev/null || { echo "bench: python3 is required" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-target}"

oha="$(command -v oha || true)"
if [ -z "$oha" ] && [ -x "$target/tools/bin/oha" ]; then
    oha="$target/tools/bin/oha"
fi
if [ -z "$oha" ]; then
    echo "bench: installing the load generator: cargo install oha --locked --root $target/tools" >&2
    cargo install oha --locked --root "$target/tools" >&2 || {
        echo "bench: could not install oha; install it yourself (cargo install oha) and rerun" >&2
        exit 1
    }
    oha="$target/tools/bin/oha"
fi

echo "bench: cargo build --release --bins" >&2
cargo build --release --bins --quiet

out="$target/bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
# bench.py stops everything it started on exit, SIGINT and SIGTERM.
exec python3 scripts/bench.py --mode "$mode" \
    --proxy "$target/release/llm-proxy" \
    --mock "$target/release/llm-proxy-mock" \
    --oha "$oha" \
    --out "$out" \
    ${args[@]+"${args[@]}"}
