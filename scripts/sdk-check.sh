#!/usr/bin/env bash
# Check llm-proxy with the official OpenAI Python SDK (scripts/sdk_check.py).
#
# Starts two mock upstreams on free ports and the proxy on another, with a
# generated config, runs the checks, and stops all three whatever happens.
# The first mock speaks every API, so the config has three providers
# pointing at it: an openai one (models gpt-4o-mini, text-embedding-3-small
# for /v1/embeddings and gpt-3.5-turbo-instruct for /v1/completions; its
# /v1/responses are translated to chat by the proxy), an anthropic one (model
# claude-sonnet, translated by the proxy to and from /v1/messages) and a
# native Responses one (model gpt-4.1-native). The second mock fails every
# Responses request with an in-band insufficient_quota before its first
# output event (model resp-failover: it, then the anthropic provider); a
# provider on a closed port comes first in resp-failover-down. The Responses
# and openai-agents checks run on gpt-4o-mini, gpt-4.1-native and
# claude-sonnet.
#
#   scripts/sdk-check.sh
#
# Environment:
#   LLM_PROXY_BIN, LLM_PROXY_MOCK_BIN   use these binaries (no build when both are set)
#   SDK_VENV                            Python venv to use [default: target/sdk-venv]
#   SDK_CHECK_MODELS                    passed on to sdk_check.py [default: gpt-4o-mini,claude-sonnet]
#   SDK_CHECK_ONLY                      passed on: run only checks starting with these prefixes
#   SDK_CHECK_RESPONSES_MODELS          passed on [default: gpt-4o-mini,gpt-4.1-native,claude-sonnet]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SDK_VENV:-$ROOT/target/sdk-venv}"
PY="$VENV/bin/python"
# The major version users get from `pip install openai` today, and the
# agent framework that speaks Responses by default (it requires openai 3).
SDK_SPEC='openai>=3,<4'
AGENTS_SPEC='openai-agents==0.24.0'

if [[ ! -x "$PY" ]]; then
    echo "sdk-check: creating $VENV"
    python3 -m venv "$VENV"
fi
# A no-op (and offline) when the venv already satisfies SDK_SPEC; replaces
# an older major left in the venv by a previous pin.
"$PY" -m pip install -q --disable-pip-version-check "$SDK_SPEC" "$AGENTS_SPEC"


# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init sdk-check
lib_binaries

show_logs() {
    echo "--- mock log" >&2
    tail -n 20 "$WORK/mock.log" >&2 || true
    echo "--- mock-quota log" >&2
    tail -n 20 "$WORK/mock-quota.log" >&2 || true
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
if ! spawn_listening "$WORK/mock-quota.log" "$MOCK" --name mock-quota --port 0 \
    --responses-error-first insufficient_quota; then
    echo "sdk-check: the second mock did not start" >&2
    show_logs
    exit 1
fi
QUOTA_PORT="$PORT"
# A port nothing listens on: bound, then released.
DOWN_PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

cat >"$WORK/config.yaml" <<EOF
failover:
  max_failures: 3
  cooldown: 600
providers:
  # First in config order, so that responses.retrieve asks it (404) before
  # mock-native (200).
  mock-quota:
    type: openai
    responses: native
    api_key: mock-key
    base_url: http://127.0.0.1:$QUOTA_PORT/v1
    timeout: 30
    max_failures: 100
  mock:
    type: openai
    api_key: mock-key
    base_url: http://127.0.0.1:$MOCK_PORT/v1
    timeout: 30
  mock-native:
    type: openai
    responses: native
    api_key: mock-key
    base_url: http://127.0.0.1:$MOCK_PORT/v1
    timeout: 30
  mock-anthropic:
    type: anthropic
    api_key: mock-key
    base_url: http://127.0.0.1:$MOCK_PORT
    timeout: 30
  # Last in config order: responses.retrieve finds its ids before it.
  mock-down:
    type: openai
    responses: native
    api_key: mock-key
    base_url: http://127.0.0.1:$DOWN_PORT/v1
    timeout: 5
    max_failures: 100
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
  gpt-4.1-native:
    providers:
      mock-native:
        priority: 0
        model_id: mock-native-model
  resp-failover:
    providers:
      mock-quota:
        priority: 0
        model_id: mock-quota-model
      mock-anthropic:
        priority: 1
        model_id: mock-claude
  resp-failover-down:
    providers:
      mock-down:
        priority: 0
        model_id: mock-down-model
      mock:
        priority: 1
        model_id: mock-model
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

echo "sdk-check: proxy on port $PORT, mocks on ports $MOCK_PORT and $QUOTA_PORT, openai $("$PY" -c 'import openai; print(openai.__version__)'), openai-agents $("$PY" -c 'from importlib.metadata import version; print(version("openai-agents"))')"
set +e
SDK_CHECK_MODELS="${SDK_CHECK_MODELS:-gpt-4o-mini,claude-sonnet}" \
SDK_CHECK_LIMITED_KEY=client-key-limited \
SDK_CHECK_RESPONSES_MODELS="${SDK_CHECK_RESPONSES_MODELS:-gpt-4o-mini,gpt-4.1-native,claude-sonnet}" \
SDK_CHECK_RESPONSES_NATIVE=gpt-4.1-native \
SDK_CHECK_RESPONSES_TRANSLATED=gpt-4o-mini,claude-sonnet \
SDK_CHECK_FAILOVER=resp-failover=mock-anthropic,resp-failover-down=mock \
OPENAI_BASE_URL="http://127.0.0.1:$PORT/v1" OPENAI_API_KEY=client-key "$PY" "$ROOT/scripts/sdk_check.py"
status=$?
set -e
if [[ $status -ne 0 ]]; then
    show_logs
fi
exit "$status"
