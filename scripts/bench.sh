#!/usr/bin/env bash
# The benchmark harness (BENCHMARKS.md explains method and reading).
#
#   scripts/bench.sh            quick mode: 1 run per scenario, 3 s each (~2 min)
#   scripts/bench.sh --full     full mode: 3 runs per scenario, 6 s each (~10 min)
#   scripts/bench.sh --only 'json c1,stream c1'   a subset (names as in the table)
#   scripts/bench.sh --no-nginx leave out the nginx column
#   extra arguments go to scripts/bench.py (--repeat N, --duration S)
#
# Loopback only. Builds the release binaries, installs the load generator
# `oha` into target/tools if it is not on PATH (a one-off `cargo install`,
# several minutes, not counted in the modes' times), starts two mock
# upstreams, the proxy and nginx (a plain `proxy_pass` in front of the same
# mocks, measured in the same run as the one-hop floor), and stops all of
# them on exit. nginx comes from Debian: when it is missing and we are root
# with apt, the script installs nginx-light (or nginx) first, which starts no
# service here; if it cannot, the nginx column is skipped with a message.
# nginx's config, logs and temp files go to the results directory. The proxy logs at
# its default level (info, one line per request) to a file in the results
# directory, as it would to journald. Results: target/bench/<time>/bench.md
# and bench.json, and the table on stdout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=quick
use_nginx=1
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --full) mode=full ;;
        --quick) mode=quick ;;
        --no-nginx) use_nginx=0 ;;
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

nginx=""
if [ "$use_nginx" = 1 ]; then
    nginx="$(command -v nginx || true)"
    [ -z "$nginx" ] && [ -x /usr/sbin/nginx ] && nginx=/usr/sbin/nginx
    if [ -z "$nginx" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "bench: installing nginx for the one-hop floor: apt-get install nginx-light" >&2
        # bookworm has nginx-light; later releases fold it into nginx.
        { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light ||
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx; }; } >/dev/null 2>&1 || true
        nginx="$(command -v nginx || true)"
        [ -z "$nginx" ] && [ -x /usr/sbin/nginx ] && nginx=/usr/sbin/nginx
    fi
    if [ -z "$nginx" ]; then
        echo "bench: nginx is not installed and could not be; the nginx column is skipped" >&2
    else
        args+=(--nginx "$nginx")
    fi
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
