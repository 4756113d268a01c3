#!/usr/bin/env bash
# Build the static binary (scripts/build-static.sh), check that it is static,
# and run it: on config/demo.yaml in front of two mock upstreams, then on a
# config whose upstream is `localhost`, which only works if name resolution
# works in the static binary. Each run must answer 200 on /health and on a
# chat completion that the mock produced.
#
#   scripts/test-static.sh
#
# Environment:
#   LLM_PROXY_MOCK_BIN   mock upstream to use [default: cargo build --bin llm-proxy-mock]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

echo "test-static: building (scripts/build-static.sh)"
scripts/build-static.sh >&2
BIN="$(scripts/build-static.sh --print-path)"
if [[ -z "${LLM_PROXY_MOCK_BIN:-}" ]]; then
    cargo build --quiet --bin llm-proxy-mock
fi
MOCK="${LLM_PROXY_MOCK_BIN:-$TARGET_DIR/debug/llm-proxy-mock}"

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init test-static

# --- static linkage, checked three ways where the tools exist
if readelf -lW "$BIN" | grep -q INTERP; then
    fail "no program interpreter (readelf -l shows INTERP)"
else
    ok "no program interpreter (readelf -l)"
fi
if readelf -dW "$BIN" | grep -q '(NEEDED)'; then
    fail "no shared libraries needed: $(readelf -dW "$BIN" | grep '(NEEDED)' | tr -s ' ')"
else
    ok "no shared libraries needed (readelf -d)"
fi
if command -v ldd >/dev/null; then
    out="$(ldd "$BIN" 2>&1 || true)"
    if [[ "$out" == *"statically linked"* || "$out" == *"not a dynamic executable"* ]]; then
        ok "ldd: $(echo "$out" | tr -s ' \t' ' ' | sed 's/^ //')"
    else
        fail "ldd lists libraries: $out"
    fi
else
    skip "ldd: not installed"
fi
if command -v file >/dev/null; then
    echo "  info  file: $(file -b "$BIN")"
fi
echo "  info  size: $(stat -c %s "$BIN") bytes"

# start NAME CMD...: start a server logging to $WORK/NAME.log and set PORT to
# the port it reports, or end the test run.
start() {
    local name="$1"
    shift
    if ! spawn_listening "$WORK/$name.log" "$@"; then
        echo "test-static: $name did not start:" >&2
        cat "$WORK/$name.log" >&2
        exit 1
    fi
}

# http METHOD URL [JSON]: print "STATUS BODY" (python3: curl may be missing).
http() {
    python3 - "$@" <<'EOF'
import sys, urllib.request, urllib.error
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(url, data=data, method=method,
                             headers={"Content-Type": "application/json"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(req, timeout=10) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except OSError as e:
    print(0, e)
EOF
}

CHAT='{"model":"MODEL","messages":[{"role":"user","content":"Hello"}]}'

# check_proxy LABEL PORT MODEL MOCKNAME: /health and one completion.
check_proxy() {
    local label="$1" port="$2" model="$3" mock="$4" out
    out="$(http GET "http://127.0.0.1:$port/health")"
    if [[ "$out" == "200 "* ]]; then
        ok "$label: GET /health -> 200"
    else
        fail "$label: GET /health -> $out"
    fi
    out="$(http POST "http://127.0.0.1:$port/v1/chat/completions" "${CHAT/MODEL/$model}")"
    if [[ "$out" == "200 "* && "$out" == *"Hello from $mock"* ]]; then
        ok "$label: POST /v1/chat/completions -> 200 from $mock"
    else
        fail "$label: POST /v1/chat/completions -> $out"
    fi
}

# --- on the demo config, both mocks on free ports
start mock-a "$MOCK" --name mock-a --port 0
export MOCK_A_PORT="$PORT"
start mock-b "$MOCK" --name mock-b --port 0
export MOCK_B_PORT="$PORT"
start proxy-demo "$BIN" --config config/demo.yaml --host 127.0.0.1 --port 0
check_proxy "demo config" "$PORT" only-b mock-b

# --- upstream named `localhost`: getaddrinfo in the static binary
cat >"$WORK/localhost.yaml" <<EOF
providers:
  mock:
    type: openai
    api_key: test-key
    base_url: http://localhost:$MOCK_A_PORT/v1
models:
  m:
    providers:
      mock:
        priority: 0
EOF
start proxy-localhost "$BIN" --config "$WORK/localhost.yaml" --host 127.0.0.1 --port 0
check_proxy "upstream http://localhost:$MOCK_A_PORT" "$PORT" m mock-a

if ! summary; then
    for f in "$WORK"/*.log; do
        echo "--- $f" >&2
        tail -n 20 "$f" >&2
    done
    exit 1
fi
