#!/usr/bin/env bash
# Check llm-proxy with the official OpenAI Python SDK (scripts/sdk_check.py).
#
# Starts one mock upstream on a free port and the proxy on another, with a
# generated config, runs the checks, and stops both whatever happens. The
# mock speaks both APIs, so the config has two providers pointing at it: an
# openai one (models gpt-4o-mini, text-embedding-3-small for /v1/embeddings
# and gpt-3.5-turbo-instruct for /v1/completions) and an anthropic one (model
# claude-sonnet, translated by the proxy to and from /v1/messages).
#
#   scripts/sdk-check.sh
#
# Environment:
#   LLM_PROXY_BIN, LLM_PROXY_MOCK_BIN   use these binaries (no build when both are set)
#   SDK_VENV                            Python venv to use [default: target/sdk-venv]
#   SDK_CHECK_MODELS                    passed on to sdk_check.py [default: gpt-4o-mini,claude-sonnet]
#   SDK_CHECK_ONLY                      passed on: run only checks starting with these prefixes
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SDK_VENV:-$ROOT/target/sdk-venv}"
PY="$VENV/bin/python"
# The major version users get from `pip install openai` today.
SDK_SPEC='openai>=3,<4'

if [[ ! -x "$PY" ]]; then
    echo "sdk-check: creating $VENV"
    python3 -m venv "$VENV"
fi
# A no-op (and offline) when the venv already satisfies SDK_SPEC; replaces
# an older major left in the venv by a previous pin.
"$PY" -m pip install -q --disable-pip-version-check "$SDK_SPEC"


# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init sdk-check
lib_binaries

show_logs() {
    echo "--- mock log" >&2
    tail -n 20 "$WORK/mock.log" >&2 || true
    echo "--- proxy log" >&2
    tail -n 40 "$WORK/proxy.log" >&2 || true
}

# The mock picks its own port and reports it on its first stdout line.
if ! spawn_listening "$WORK/mock.log" "$MOCK" --name mock --port 0; then
    echo "sdk-check: the mock did not start" >&2
    show_logs
    exit 1
fi
MOCK_PORT="$PORT"

cat >"$WORK/config.yaml" <<EOF
failover:
  max_failures: 3
  cooldown: 600
providers:
  mock:
    type: openai
    api_key: mock-key
    base_url: http://127.0.0.1:$MOCK_PORT/v1
    timeout: 30
  mock-anthropic:
    type: anthropic
    api_key: mock-key
    base_url: http://127.0.0.1:$MOCK_PORT
    timeout: 30
models:
  gpt-4o-mini:
    providers:
      mock:
        priority: 0
        model_id: mock-model
  claude-sonnet:
    providers:
      mock-anthropic:
        priority: 0
        model_id: mock-claude
  text-embedding-3-small:
    providers:
      mock:
        priority: 0
        model_id: mock-embedding
  gpt-3.5-turbo-instruct:
    providers:
      mock:
        priority: 0
        model_id: mock-instruct
auth:
  keys:
    - name: sdk-check
      key: client-key
    - name: sdk-check-limited
      key: client-key-limited
      models: [gpt-4o-mini]
      rpm: 1
EOF

# Keep any HTTP proxy from the environment away from these loopback calls.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

# Port 0: the proxy picks a free port and logs it once it is listening.
if ! spawn_listening "$WORK/proxy.log" "$PROXY" --config "$WORK/config.yaml" --host 127.0.0.1 --port 0; then
    echo "sdk-check: the proxy did not start" >&2
    show_logs
    exit 1
fi

echo "sdk-check: proxy on port $PORT, mock on port $MOCK_PORT, openai $("$PY" -c 'import openai; print(openai.__version__)')"
set +e
SDK_CHECK_MODELS="${SDK_CHECK_MODELS:-gpt-4o-mini,claude-sonnet}" \
SDK_CHECK_LIMITED_KEY=client-key-limited \
OPENAI_BASE_URL="http://127.0.0.1:$PORT/v1" OPENAI_API_KEY=client-key "$PY" "$ROOT/scripts/sdk_check.py"
status=$?
set -e
if [[ $status -ne 0 ]]; then
    show_logs
fi
exit "$status"
