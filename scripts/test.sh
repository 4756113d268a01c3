#!/usr/bin/env bash
# The project's test command (README "Test"; .ci/run calls exactly this).
# Formatting, lints, the Rust test suite, then the official OpenAI Python SDK
# against the proxy. Needs only the Rust toolchain and python3 with venv; the
# script installs the SDK into target/sdk-venv itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== cargo fmt --check"
cargo fmt --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

echo "== cargo test"
cargo test --quiet 2>&1

echo "== scripts/sdk-check.sh (official openai package)"
cargo build --bins --quiet
target="${CARGO_TARGET_DIR:-target}"
LLM_PROXY_BIN="$target/debug/llm-proxy" \
LLM_PROXY_MOCK_BIN="$target/debug/llm-proxy-mock" \
    scripts/sdk-check.sh
