#!/usr/bin/env bash
# Run llm-proxy in front of two mock upstreams and print curl commands to try.
#
#   scripts/demo.sh                 proxy on 127.0.0.1:8000, mocks on 9001 and 9002
#   PORT=8080 MOCK_A_PORT=9101 MOCK_B_PORT=9102 scripts/demo.sh
#
# mock-a fails every 3rd request (HTTP 503), so `gpt-4o-mini` answers
# sometimes come from mock-b: the proxy failing over. Ctrl-C stops everything.
# Set LLM_PROXY_BIN and LLM_PROXY_MOCK_BIN to skip the build and use those binaries.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# spawn_listening (scripts/lib.sh) sets PORT, so the proxy port has its own name.
PROXY_PORT="${PORT:-8000}"
export MOCK_A_PORT="${MOCK_A_PORT:-9001}" MOCK_B_PORT="${MOCK_B_PORT:-9002}"


# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init demo
lib_binaries

# start_mock NAME PORT [ARGS...]: start a mock and wait for its "listening" line.
start_mock() {
    local name="$1" port="$2" log="$WORK/$1.log"
    shift 2
    if ! spawn_listening "$log" "$MOCK" --name "$name" --port "$port" "$@"; then
        echo "demo: mock $name did not start:" >&2
        cat "$log" >&2
        exit 1
    fi
    echo "demo: $(grep "listening on" "$log")"
}

start_mock mock-a "$MOCK_A_PORT" --fail-every 3
start_mock mock-b "$MOCK_B_PORT"

"$PROXY" --config "$ROOT/config/demo.yaml" --port "$PROXY_PORT" &
PROXY_PID=$!
PIDS+=("$PROXY_PID")

URL="http://127.0.0.1:$PROXY_PORT"
for _ in $(seq 100); do # up to 10 s
    curl -fsS -o /dev/null "$URL/health" 2>/dev/null && break
    if ! kill -0 "$PROXY_PID" 2>/dev/null; then
        echo "demo: llm-proxy exited during startup" >&2
        exit 1
    fi
    sleep 0.1
done

cat <<EOF

llm-proxy is running on $URL (config/demo.yaml). Try, in another terminal:

  # the models the proxy serves
  curl -s $URL/v1/models

  # a completion; the content names the mock that answered
  curl -s $URL/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello!"}]}'

  # the same, streamed (-N: print each event as it arrives)
  curl -sN $URL/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hello!"}]}'

  # failover: mock-a fails every 3rd request, mock-b steps in
  for i in 1 2 3 4 5 6; do curl -s $URL/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}' | grep -o 'Hello from mock-.'; done

  # an unknown model: 404 with an OpenAI-style error
  curl -s $URL/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"no-such-model","messages":[{"role":"user","content":"Hi"}]}'

  # health
  curl -s $URL/health

Press Ctrl-C to stop the proxy and both mocks.

EOF

# The proxy runs in the background only so that this script keeps control
# and its traps can stop the mocks; its output still goes to this terminal.
set +e
wait "$PROXY_PID"
status=$?
set -e
exit "$status"
