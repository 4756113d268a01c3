#!/usr/bin/env bash
# Run llm-proxy in front of two mock upstreams and print curl commands to try.
#
#   scripts/demo.sh                 proxy on 127.0.0.1:8000, mocks on 9001 and 9002
#   PORT=8080 MOCK_A_PORT=9101 MOCK_B_PORT=9102 scripts/demo.sh
#   PORT=0 MOCK_A_PORT=0 MOCK_B_PORT=0 scripts/demo.sh    any free ports
#
# mock-a fails every 3rd request (HTTP 503), so `gpt-4o-mini` answers
# sometimes come from mock-b: the proxy failing over. Ctrl-C stops everything.
# Set LLM_PROXY_BIN and LLM_PROXY_MOCK_BIN to skip the build and use those binaries.
#
# A port that something else already listens on stops the demo with a
# message: the proxy counts as running only once it said it listens, not
# when some server answers on its port. So its log level is at least info
# (LLM_PROXY_LOG=debug or trace is kept).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# spawn_listening (scripts/lib.sh) sets PORT, so the proxy port has its own name.
PROXY_PORT="${PORT:-8000}"
export MOCK_A_PORT="${MOCK_A_PORT:-9001}" MOCK_B_PORT="${MOCK_B_PORT:-9002}"
case "${LLM_PROXY_LOG:-}" in
debug | trace) ;;
*) export LLM_PROXY_LOG=info ;;
esac

# refuse_taken_port VARIABLE PORT: fail, saying so, if something on this
# machine accepts connections on 127.0.0.1:PORT (0: any free port, fine).
refuse_taken_port() {
    [[ "$2" == 0 ]] && return 0
    # bash's /dev/tcp: connecting succeeds only if something listens.
    if (: <"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
        echo "demo: 127.0.0.1:$2 is already in use by another program (a demo still running?);" >&2
        echo "demo: stop it, or pick another port: $1=N scripts/demo.sh ($1=0: any free port)" >&2
        exit 1
    fi
}
refuse_taken_port PORT "$PROXY_PORT"
refuse_taken_port MOCK_A_PORT "$MOCK_A_PORT"
refuse_taken_port MOCK_B_PORT "$MOCK_B_PORT"


# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init demo
lib_binaries

# start_mock NAME VARIABLE [ARGS...]: start a mock on the port in $VARIABLE,
# wait for its "listening" line, and put the port it got in $VARIABLE
# (config/demo.yaml reads it from there).
start_mock() {
    local name="$1" var="$2" log="$WORK/$1.log"
    shift 2
    if ! spawn_listening "$log" "$MOCK" --name "$name" --port "${!var}" "$@"; then
        echo "demo: mock $name did not start:" >&2
        cat "$log" >&2
        exit 1
    fi
    export "$var=$PORT"
    echo "demo: $(grep "listening on" "$log")"
}

start_mock mock-a MOCK_A_PORT --fail-every 3
start_mock mock-b MOCK_B_PORT

# Running means: this proxy process said it listens (a port taken since the
# check above makes it exit instead), and then answered /health.
if ! spawn_listening "$WORK/proxy.log" "$PROXY" --config "$ROOT/config/demo.yaml" --port "$PROXY_PORT"; then
    echo "demo: llm-proxy did not start:" >&2
    cat "$WORK/proxy.log" >&2
    exit 1
fi
PROXY_PID="$SPAWNED_PID"
PROXY_PORT="$PORT"
URL="http://127.0.0.1:$PROXY_PORT"
if ! curl -fsS -o /dev/null --max-time 5 "$URL/health"; then
    echo "demo: llm-proxy does not answer $URL/health:" >&2
    cat "$WORK/proxy.log" >&2
    exit 1
fi
# Its log, from the start, on this terminal (stderr) as it grows.
tail -n +1 -f "$WORK/proxy.log" >&2 &
PIDS+=("$!")

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
