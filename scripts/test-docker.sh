#!/usr/bin/env bash
# Build the container image (Dockerfile) with a private dockerd and run it
# against the repo's mock: /health, a completion, a stream, and `docker stop`
# during a stream, which must drain it to [DONE] and exit 0.
#
#   scripts/test-docker.sh
#
# The dockerd is this script's own: data root, exec root, pid file and socket
# in a temp dir, --bridge=none --iptables=false --ip6tables=false, so it
# creates no network and touches no firewall; the container uses the host's
# network (--network host) and listens on 127.0.0.1 only. Nothing is pulled
# (the image is FROM scratch). As root with apt and no dockerd, docker.io is
# installed first. Where dockerd cannot start, the checks are skipped with
# the reason (exit 0).
#
# Environment:
#   LLM_PROXY_MOCK_BIN   mock upstream to use [default: cargo build --bin llm-proxy-mock]
#   DOCKER_START_TIMEOUT seconds to wait for dockerd [default: 60]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
started_at=$SECONDS

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

skip_all() {
    echo "  skip  test-docker: $*"
    echo "test-docker: skipped"
    exit 0
}

# --- dockerd: installed when missing and we can
if ! command -v dockerd >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "test-docker: apt-get install docker.io"
        { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io; } >/dev/null 2>&1 ||
            skip_all "dockerd missing and apt-get install docker.io failed"
    else
        skip_all "dockerd not installed (install docker.io, or run as root with apt)"
    fi
fi
command -v docker >/dev/null || skip_all "docker (the client) not installed"
[[ $(id -u) -eq 0 ]] || skip_all "a private dockerd needs root"

echo "test-docker: building the static binary (scripts/build-static.sh)"
scripts/build-static.sh >&2
BIN="$(scripts/build-static.sh --print-path)"
BIN_REL="${BIN#"$ROOT"/}"
if [[ "$BIN_REL" == /* ]]; then
    # CARGO_TARGET_DIR outside the tree: the build context cannot reach it.
    # Copied to the one other path .dockerignore lets in.
    mkdir -p "$ROOT/target/docker"
    cp "$BIN" "$ROOT/target/docker/llm-proxy"
    BIN_REL=target/docker/llm-proxy
fi
if [[ -z "${LLM_PROXY_MOCK_BIN:-}" ]]; then
    cargo build --quiet --bin llm-proxy-mock
fi
MOCK="${LLM_PROXY_MOCK_BIN:-$TARGET_DIR/debug/llm-proxy-mock}"

lib_init test-docker
DOCKERD_PID=""
CONTAINER=""
CONTAINER_DEFAULT="llm-proxy-test-default-$$"
export DOCKER_HOST="unix://$WORK/docker.sock"

# Stop our container and our dockerd (by PID), unmount anything left under
# $WORK, then the usual cleanup (mocks, $WORK).
# shellcheck disable=SC2317 # invoked by the EXIT trap
docker_cleanup() {
    local status=$?
    local c
    for c in "$CONTAINER" "$CONTAINER_DEFAULT"; do
        if [[ -n "$c" ]]; then docker rm -f "$c" >/dev/null 2>&1 || true; fi
    done
    if [[ -n "$DOCKERD_PID" ]] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        for _ in $(seq 150); do
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$DOCKERD_PID" 2>/dev/null; then
            echo "test-docker: dockerd $DOCKERD_PID did not stop in 15 s; killing it" >&2
            kill -KILL "$DOCKERD_PID" 2>/dev/null || true
        fi
    fi
    # Mounts dockerd left behind (deepest first), so rm -rf stays in $WORK.
    local m
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r)
    lib_cleanup
    exit "$status"
}
trap docker_cleanup EXIT

# --- a private dockerd
mkdir -p "$WORK/data" "$WORK/exec"
dockerd --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    -H "$DOCKER_HOST" --bridge=none --iptables=false --ip6tables=false \
    >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
up=0
for _ in $(seq $((${DOCKER_START_TIMEOUT:-60} * 10))); do
    if docker version >/dev/null 2>&1; then
        up=1
        break
    fi
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ $up -eq 0 ]]; then
    reason="$(grep -iE 'level=(fatal|error)|failed' "$WORK/dockerd.log" | tail -n 3 | tr '\n' ' ')"
    skip_all "dockerd did not start: ${reason:-no error logged; see its log}"
fi
echo "  info  dockerd $(docker version -f '{{.Server.Version}}' 2>/dev/null), storage driver $(docker info -f '{{.Driver}}' 2>/dev/null)"

# --- build the image (classic builder when buildx is absent)
if ! docker buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=0; fi
IMAGE="llm-proxy-test:$$"
build_start=$SECONDS
if docker build -q -t "$IMAGE" --build-arg "BINARY=$BIN_REL" . >"$WORK/build.log" 2>&1; then
    ok "docker build ($((SECONDS - build_start)) s)"
else
    fail "docker build"
    cat "$WORK/build.log" >&2
    summary || exit 1
fi
size="$(docker image inspect -f '{{.Size}}' "$IMAGE")"
echo "  info  image size: $size bytes ($(((size + 524288) / 1048576)) MiB)"
# What the issue asks of the image itself.
user="$(docker image inspect -f '{{.Config.User}}' "$IMAGE")"
if [[ "$user" =~ ^[1-9][0-9]*(:[0-9]+)?$ ]]; then
    ok "image runs as a numeric non-root user ($user)"
else
    fail "image user is '$user', not a numeric non-root user"
fi
check "image STOPSIGNAL is SIGTERM" test "$(docker image inspect -f '{{.Config.StopSignal}}' "$IMAGE")" = SIGTERM
layers="$(docker history -q "$IMAGE" | wc -l)"
echo "  info  $layers layers; files: $(docker image inspect -f '{{json .Config.Entrypoint}} {{json .Config.Cmd}}' "$IMAGE")"

# --- the image as shipped: its own config and CMD (0.0.0.0:8000), in a
# container with no network but loopback (--network none), reached from
# inside that network namespace. The bundled config needs its keys set.
docker run -d --name "$CONTAINER_DEFAULT" --network none \
    -e OPENAI_API_KEY=sk-docker-default-secret -e ANTHROPIC_API_KEY=sk-ant-docker-default-secret \
    "$IMAGE" >/dev/null
listening=""
for _ in $(seq 100); do
    listening="$(docker logs "$CONTAINER_DEFAULT" 2>&1 | grep -o 'listening on http://[^ ]*' | head -n 1 || true)"
    [[ -n "$listening" ]] && break
    [[ "$(docker inspect -f '{{.State.Running}}' "$CONTAINER_DEFAULT")" == true ]] || break
    sleep 0.1
done
check "defaults: reads /etc/llm-proxy/config.yaml, $listening (want http://0.0.0.0:8000)" \
    test "$listening" = "listening on http://0.0.0.0:8000"
cpid="$(docker inspect -f '{{.State.Pid}}' "$CONTAINER_DEFAULT")"
if [[ "$cpid" =~ ^[1-9][0-9]*$ ]]; then
    out="$(nsenter --target "$cpid" --net -- python3 -c '
import urllib.request
o = urllib.request.build_opener(urllib.request.ProxyHandler({}))
r = o.open("http://127.0.0.1:8000/health", timeout=10)
print(r.status, r.read().decode())' 2>&1 || true)"
    check "defaults: GET /health on port 8000 in the container -> 200 ($out)" test "${out%% *}" = 200
else
    fail "defaults: the container is not running: $(docker logs "$CONTAINER_DEFAULT" 2>&1 | tail -n 3)"
fi
if docker logs "$CONTAINER_DEFAULT" 2>&1 | grep -q docker-default-secret; then
    fail "defaults: a key from -e appears in the log"
fi
docker rm -f "$CONTAINER_DEFAULT" >/dev/null

# --- the mock on the host, the proxy in the container (host network).
# The stream is slow (20 events, 150 ms apart: 3 s) so `docker stop` lands
# in the middle of one.
if ! spawn_listening "$WORK/mock.log" "$MOCK" --name mock-docker --port 0 \
    --stream-interval-ms 150 --stream-chunks 20 --api-key docker-test-key; then
    fail "mock did not start: $(cat "$WORK/mock.log")"
    summary || exit 1
fi
MOCK_PORT="$PORT"
cat >"$WORK/config.yaml" <<YAML
server:
  log_level: debug
providers:
  mock:
    type: openai
    api_key: \${MOCK_KEY}
    base_url: http://127.0.0.1:$MOCK_PORT/v1
models:
  m:
    providers:
      mock:
        priority: 0
YAML
chmod 0644 "$WORK/config.yaml"

# The image's own CMD listens on 0.0.0.0:8000; on the host network this test
# binds 127.0.0.1 and a free port instead (the arguments replace CMD only).
CONTAINER="llm-proxy-test-$$"
docker run -d --name "$CONTAINER" --network host -e MOCK_KEY=docker-test-key \
    -v "$WORK/config.yaml:/etc/llm-proxy/config.yaml:ro" \
    "$IMAGE" --host 127.0.0.1 --port 0 >/dev/null
PROXY_PORT=""
for _ in $(seq 100); do
    PROXY_PORT="$(docker logs "$CONTAINER" 2>&1 | sed -n 's#.*listening on http://[^ ]*:\([0-9][0-9]*\).*#\1#p' | head -n 1)"
    [[ -n "$PROXY_PORT" ]] && break
    [[ "$(docker inspect -f '{{.State.Running}}' "$CONTAINER")" == true ]] || break
    sleep 0.1
done
if [[ -z "$PROXY_PORT" ]]; then
    fail "the container did not start listening: $(docker logs "$CONTAINER" 2>&1 | tail -n 5)"
    summary || exit 1
fi
ok "container started as user $(docker inspect -f '{{.Config.User}}' "$CONTAINER"), listening on 127.0.0.1:$PROXY_PORT"
URL="http://127.0.0.1:$PROXY_PORT"

# client http|stream METHOD URL [JSON] [OUT] (python3: curl may be missing).
client() { python3 "$ROOT/scripts/http_client.py" "$@"; }
CHAT='{"model":"m","messages":[{"role":"user","content":"Hello"}]}'
STREAM='{"model":"m","stream":true,"messages":[{"role":"user","content":"Hello"}]}'

out="$(client http GET "$URL/health")"
check "GET /health -> 200 ($out)" test "${out%% *}" = 200
out="$(client http GET "$URL/health/ready")"
check "GET /health/ready -> 200 {\"status\":\"ready\"} (got: $out)" \
    test "$out" = '200 {"status":"ready"}'
out="$(client http POST "$URL/v1/chat/completions" "$CHAT")"
if [[ "$out" == "200 "* && "$out" == *"Hello from mock-docker"* ]]; then
    ok "POST /v1/chat/completions -> 200 from the mock (key from -e reached it)"
else
    fail "POST /v1/chat/completions -> $out"
fi
status="$(client stream POST "$URL/v1/chat/completions" "$STREAM" "$WORK/stream1.txt")"
if [[ "$status" == 200 ]] && grep -q '^data: \[DONE\]' "$WORK/stream1.txt"; then
    ok "stream -> 200, $(count_events "$WORK/stream1.txt") content events, ends with [DONE]"
else
    fail "stream -> $status: $(tail -c 300 "$WORK/stream1.txt" 2>/dev/null)"
fi
if grep -q docker-test-key < <(docker logs "$CONTAINER" 2>&1); then
    fail "the upstream key appears in the container's log"
else
    ok "the upstream key is not in the container's log (debug level)"
fi

# --- docker stop during a stream: drained to [DONE], exit 0
client stream POST "$URL/v1/chat/completions" "$STREAM" "$WORK/stream2.txt" >"$WORK/stream2.status" &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")
for _ in $(seq 100); do
    [[ -s "$WORK/stream2.txt" ]] && grep -q '"content":"' "$WORK/stream2.txt" && break
    sleep 0.1
done
before="$(count_events "$WORK/stream2.txt")"
# Grace period: the stream needs 3 s; a proxy that ignores SIGTERM (as PID 1
# without a handler does) is killed when it runs out.
GRACE=15
stop_start=$SECONDS
docker stop -t "$GRACE" "$CONTAINER" >/dev/null
stop_secs=$((SECONDS - stop_start))
wait "$CLIENT_PID" || true
events="$(count_events "$WORK/stream2.txt")"
code="$(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER")"
if [[ "$(cat "$WORK/stream2.status")" == 200 ]] && grep -q '^data: \[DONE\]' "$WORK/stream2.txt"; then
    ok "docker stop during a stream (at event $before of 21): the stream got all $events events and [DONE]"
else
    fail "docker stop during a stream (at event $before of 21): cut after $events events, no [DONE] (status $(cat "$WORK/stream2.status"))"
fi
if [[ "$code" == 0 && $stop_secs -lt $GRACE ]]; then
    ok "the container exited 0 on SIGTERM, after the drain (${stop_secs} s)"
else
    fail "the container exited $code after ${stop_secs} s of a ${GRACE} s grace period$([[ "$code" == 137 ]] && echo ': SIGTERM did not stop it, docker killed it')"
fi

echo "  info  test-docker took $((SECONDS - started_at)) s"
if ! summary; then
    echo "--- container log (tail)" >&2
    docker logs "$CONTAINER" 2>&1 | tail -n 20 >&2
    exit 1
fi
