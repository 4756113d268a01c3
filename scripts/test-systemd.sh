#!/usr/bin/env bash
# install.sh and the unit under a real systemd: a Debian 12 rootfs booted with
# systemd-nspawn (its own network namespace: loopback only). In it:
#   - install.sh --binary (the static binary) installs and starts the service
#   - /health, /health/ready, a completion and a stream, through the proxy,
#     from the mock (running in the container too)
#   - systemctl reload: the new config takes effect, the PID is unchanged
#   - a changed key in /etc/llm-proxy/env reaches the upstream after
#     systemctl restart, and the restart drains a stream in flight to [DONE]
#   - SIGHUP does not stop the service
#   - the unit's exposure (systemd-analyze security), live
#   - install.sh --uninstall --purge removes everything
#
#   scripts/test-systemd.sh
#
# The rootfs (debootstrap --variant=minbase: systemd, dbus) is built once and
# cached in target/systemd-rootfs; each run boots it with --volatile=overlay,
# so the cache is never changed. debootstrap and systemd-nspawn are installed
# with apt when missing (root). Where nspawn cannot boot, or the rootfs cannot
# be built, the checks are skipped with the reason (exit 0).
#
# Environment:
#   LLM_PROXY_MOCK_BIN   mock upstream to copy in [default: cargo build --bin llm-proxy-mock]
#   SYSTEMD_ROOTFS       rootfs cache [default: $CARGO_TARGET_DIR/systemd-rootfs]
#   DEBIAN_MIRROR        mirror for debootstrap [default: the one apt uses here]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
started_at=$SECONDS

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

skip_all() {
    echo "  skip  test-systemd: $*"
    echo "test-systemd: skipped"
    exit 0
}

[[ $(id -u) -eq 0 ]] || skip_all "booting a container with systemd-nspawn needs root"
[[ "$(uname -m)" == x86_64 ]] || skip_all "the rootfs and binaries are x86_64; this is $(uname -m)"

# --- tools: installed when missing and we can
missing=()
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v nsenter >/dev/null || missing+=(util-linux)
if [[ ${#missing[@]} -gt 0 ]]; then
    command -v apt-get >/dev/null || skip_all "${missing[*]} missing and no apt-get"
    echo "test-systemd: apt-get install ${missing[*]}"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null 2>&1 ||
        skip_all "apt-get install ${missing[*]} failed"
fi

# --- the rootfs, cached. The stamp names what it was built with; a change
# (or a half-built tree: no stamp) rebuilds it.
SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus
ROOTFS="${SYSTEMD_ROOTFS:-$TARGET_DIR/systemd-rootfs}"
STAMP="$ROOTFS/.llm-proxy-rootfs"
want_stamp="debootstrap --variant=minbase --include=$PACKAGES $SUITE; /etc/hosts"

# The Debian mirror apt uses here (deb822 URIs: or one-line deb), not -security.
apt_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r "$f" ]] || continue
        grep -hoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[a-z]+://[^[:space:]]+' "$f" |
            grep -oE '[a-z]+://[^[:space:]]+' | grep -E '/debian/?$' | head -n 1
    done | head -n 1
}

if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want_stamp" ]]; then
    mirror="${DEBIAN_MIRROR:-$(apt_mirror)}"
    mirror="${mirror:-http://deb.debian.org/debian}"
    echo "test-systemd: building the rootfs in $ROOTFS (debootstrap --variant=minbase $SUITE from $mirror)"
    t0=$SECONDS
    rm -rf "$ROOTFS" "$ROOTFS.tmp"
    mkdir -p "$(dirname "$ROOTFS")"
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS.tmp" "$mirror" \
        >"$TARGET_DIR/systemd-rootfs.log" 2>&1; then
        tail -n 5 "$TARGET_DIR/systemd-rootfs.log" >&2
        rm -rf "$ROOTFS.tmp"
        skip_all "debootstrap failed (log: $TARGET_DIR/systemd-rootfs.log)"
    fi
    # minbase writes no /etc/hosts: without one, `localhost` does not resolve.
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOTFS.tmp/etc/hosts"
    rm -rf "$ROOTFS.tmp"/var/cache/apt/archives/*.deb "$ROOTFS.tmp"/var/lib/apt/lists/*
    echo "$want_stamp" >"$ROOTFS.tmp/.llm-proxy-rootfs"
    mv "$ROOTFS.tmp" "$ROOTFS"
    echo "  info  rootfs built in $((SECONDS - t0)) s ($(du -sm "$ROOTFS" | cut -f1) MiB)"
else
    echo "test-systemd: using the cached rootfs $ROOTFS"
fi

# --- binaries: the static proxy, and the mock (dynamic: it needs a glibc no
# newer than Debian 12's 2.36, true of a Debian 12 build host)
echo "test-systemd: building the static binary (scripts/build-static.sh)"
scripts/build-static.sh >&2
BIN="$(scripts/build-static.sh --print-path)"
if [[ -z "${LLM_PROXY_MOCK_BIN:-}" ]]; then
    cargo build --quiet --bin llm-proxy-mock
fi
MOCK="${LLM_PROXY_MOCK_BIN:-$TARGET_DIR/debug/llm-proxy-mock}"

lib_init test-systemd
NSPAWN_PID=""
LEADER=""
MACHINE="llm-proxy-test-$$"
# Shared with the container as /t: binaries, configs, client output.
mkdir -p "$WORK/t"
cp "$BIN" "$WORK/t/llm-proxy"
cp "$MOCK" "$WORK/t/llm-proxy-mock"

# Stop our container (its nspawn, by PID) before the usual cleanup. nspawn
# halts the container's systemd on SIGTERM; its mounts (overlay, binds) live
# in its own mount namespace and go with it.
# shellcheck disable=SC2317 # invoked by the EXIT trap
nspawn_cleanup() {
    local status=$?
    if [[ -n "$NSPAWN_PID" ]] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        kill "$NSPAWN_PID" 2>/dev/null || true
        for _ in $(seq 200); do
            kill -0 "$NSPAWN_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$NSPAWN_PID" 2>/dev/null; then
            echo "test-systemd: systemd-nspawn $NSPAWN_PID did not stop in 20 s; killing it" >&2
            kill -KILL "$NSPAWN_PID" 2>/dev/null || true
        fi
    fi
    # nspawn cannot always remove its (empty) propagation directory on a
    # /run that is not tmpfs; it is ours, named after our machine.
    rmdir "/run/systemd/nspawn/propagate/$MACHINE" 2>/dev/null || true
    lib_cleanup
    exit "$status"
}
trap nspawn_cleanup EXIT

# --- boot
systemd-nspawn --quiet --boot --directory="$ROOTFS" --volatile=overlay \
    --private-network --register=no --keep-unit --console=passive \
    --machine="$MACHINE" \
    --bind-ro="$ROOT:/src" --bind="$WORK/t:/t" \
    >"$WORK/nspawn.log" 2>&1 &
NSPAWN_PID=$!
PIDS+=("$NSPAWN_PID")

# The container's init: the descendant of nspawn that is PID 1 in a new PID
# namespace (its NSpid line has two numbers, the last one 1).
find_leader() {
    local p kids
    kids="$(ps -o pid= --ppid "$NSPAWN_PID" 2>/dev/null || true)"
    for p in $kids $(for k in $kids; do ps -o pid= --ppid "$k" 2>/dev/null || true; done); do
        if grep -qE '^NSpid:[[:space:]]+[0-9]+[[:space:]]+1$' "/proc/$p/status" 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}
for _ in $(seq 100); do
    LEADER="$(find_leader || true)"
    [[ -n "$LEADER" ]] && break
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    sleep 0.1
done
# ct CMD...: run CMD in the container (all its namespaces, its PATH).
ct() { nsenter --target "$LEADER" --all -- /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
state=""
if [[ -n "$LEADER" ]]; then
    # Up to 60 s for the boot to finish ("running", or "degraded" when some
    # unit the test does not need failed).
    # Early on, systemctl cannot reach systemd yet: it prints nothing.
    boot_start=$SECONDS
    while [[ $((SECONDS - boot_start)) -lt 60 ]]; do
        state="$(timeout 60 nsenter --target "$LEADER" --all -- /usr/bin/systemctl is-system-running --wait 2>/dev/null || true)"
        [[ -z "$state" || "$state" == offline ]] || break
        kill -0 "$NSPAWN_PID" 2>/dev/null || break
        sleep 0.2
    done
fi
if [[ "$state" != running && "$state" != degraded ]]; then
    skip_all "systemd-nspawn could not boot the rootfs (state '${state:-none}'): $(grep -v '^$' "$WORK/nspawn.log" | tail -n 3 | tr '\n' ' ')"
fi
ok "booted a Debian 12 container with systemd $(ct systemctl --version | head -n 1 | cut -d' ' -f2) (state $state, $((SECONDS - started_at)) s so far)"
if [[ "$state" == degraded ]]; then
    echo "  info  failed units: $(ct systemctl --failed --plain --no-legend | cut -d' ' -f1 | tr '\n' ' ')"
fi

# --- HTTP from the host, inside the container's network namespace (the
# container has no client), to the proxy's port: client http|stream METHOD
# PATH [JSON] [OUT], as scripts/http_client.py takes a URL.
client() {
    local mode="$1" method="$2" path="$3"
    shift 3
    nsenter --target "$LEADER" --net -- \
        python3 "$ROOT/scripts/http_client.py" "$mode" "$method" "http://127.0.0.1:8000$path" "$@"
}
chat() { echo "{\"model\":\"$1\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}"; }
stream_req() { echo "{\"model\":\"$1\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}"; }
main_pid() { ct systemctl show -p MainPID --value llm-proxy; }

# --- two mocks in the container, as transient services: `open` needs no key
# and streams slowly (21 events, 150 ms apart); `keyed` accepts only the key
# the env file gets later.
ct systemd-run --quiet --unit=mock-open /t/llm-proxy-mock --name mock-open --port 9101 \
    --stream-interval-ms 150 --stream-chunks 20
ct systemd-run --quiet --unit=mock-keyed /t/llm-proxy-mock --name mock-keyed --port 9102 \
    --api-key key-two-secret

config() {
    cat <<YAML
server:
  host: 127.0.0.1
  port: 8000
  log_level: debug
providers:
  open:
    type: openai
    api_key: none
    base_url: http://localhost:9101/v1
  keyed:
    type: openai
    api_key: \${MOCK_KEY}
    base_url: http://localhost:9102/v1
models:
  m:
    providers:
      open:
        priority: 0
  k:
    providers:
      keyed:
        priority: 0
YAML
}
config >"$WORK/t/config.yaml"

# --- install
if ct /src/install.sh --binary /t/llm-proxy --config /t/config.yaml >"$WORK/install.log" 2>&1; then
    ok "install.sh --binary: installed and started ($(grep -c . "$WORK/install.log") lines of output)"
else
    fail "install.sh failed: $(tail -n 5 "$WORK/install.log")"
    ct journalctl -u llm-proxy -n 20 --no-pager >&2 || true
    summary || exit 1
fi
check "llm-proxy.service is active" ct systemctl is-active --quiet llm-proxy
check "runs as the llm-proxy user" test "$(ct ps -o user= -p "$(main_pid)" 2>/dev/null || ct stat -c %U "/proc/$(main_pid)")" = llm-proxy
exposure="$(ct systemd-analyze security llm-proxy.service 2>/dev/null | sed -n 's/.*Overall exposure level for llm-proxy.service: *\([0-9.]*\).*/\1/p')"
if [[ -n "$exposure" ]] && awk -v e="$exposure" 'BEGIN { exit !(e < 2.0) }'; then
    ok "systemd-analyze security (live): exposure $exposure"
else
    fail "systemd-analyze security (live): exposure '${exposure:-?}', want < 2.0"
fi

out="$(client http GET /health)"
check "GET /health -> 200 ($out)" test "${out%% *}" = 200
out="$(client http GET /health/ready)"
check "GET /health/ready -> 200 {\"status\":\"ready\"} (got: $out)" test "$out" = '200 {"status":"ready"}'
out="$(client http POST /v1/chat/completions "$(chat m)")"
if [[ "$out" == "200 "* && "$out" == *"Hello from mock-open"* ]]; then
    ok "completion -> 200 from mock-open"
else
    fail "completion -> $out"
fi
status="$(client stream POST /v1/chat/completions "$(stream_req m)" "$WORK/t/stream1.txt")"
if [[ "$status" == 200 ]] && grep -q '^data: \[DONE\]' "$WORK/t/stream1.txt"; then
    ok "stream -> 200, $(count_events "$WORK/t/stream1.txt") content events, [DONE]"
else
    fail "stream -> $status: $(tail -c 300 "$WORK/t/stream1.txt" 2>/dev/null)"
fi
out="$(client http POST /v1/chat/completions "$(chat k)")"
check "model k before the key is set: not 200 (${out:0:60}...)" test "${out%% *}" != 200

# --- systemctl reload: a new model appears, same PID
pid_before="$(main_pid)"
config >"$WORK/t/config2.yaml"
cat >>"$WORK/t/config2.yaml" <<YAML
  m2:
    providers:
      open:
        priority: 0
YAML
ct install -m 0640 -g llm-proxy /t/config2.yaml /etc/llm-proxy/config.yaml
if ct systemctl reload llm-proxy >"$WORK/reload.log" 2>&1; then
    ok "systemctl reload llm-proxy succeeded"
else
    fail "systemctl reload llm-proxy: $(tr '\n' ' ' <"$WORK/reload.log")"
fi
out="$(client http POST /v1/chat/completions "$(chat m2)")"
check "after reload, the new model m2 answers 200 (got ${out:0:80})" test "${out%% *}" = 200
pid_after="$(main_pid)"
check "after reload, same PID ($pid_before -> $pid_after) and active" \
    test "$pid_before" = "$pid_after" -a "$(ct systemctl is-active llm-proxy)" = active

# --- env file: new key, systemctl restart during a stream
ct systemctl start llm-proxy 2>/dev/null || true # in case reload took it down
pid_before="$(main_pid)"
client stream POST /v1/chat/completions "$(stream_req m)" "$WORK/t/stream2.txt" >"$WORK/stream2.status" &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")
for _ in $(seq 100); do
    grep -q '"content":"' "$WORK/t/stream2.txt" 2>/dev/null && break
    sleep 0.1
done
before="$(count_events "$WORK/t/stream2.txt")"
ct sh -c 'printf "MOCK_KEY=key-two-secret\n" >/etc/llm-proxy/env'
restart_start=$SECONDS
if ct systemctl restart llm-proxy >"$WORK/restart.log" 2>&1; then
    ok "systemctl restart llm-proxy ($((SECONDS - restart_start)) s)"
else
    fail "systemctl restart llm-proxy: $(tr '\n' ' ' <"$WORK/restart.log")"
fi
wait "$CLIENT_PID" || true
events="$(count_events "$WORK/t/stream2.txt")"
if [[ "$(cat "$WORK/stream2.status")" == 200 ]] && grep -q '^data: \[DONE\]' "$WORK/t/stream2.txt"; then
    ok "restart during a stream (at event $before of 21): drained, $events events and [DONE]"
else
    fail "restart during a stream (at event $before of 21): cut after $events events, no [DONE] (status $(cat "$WORK/stream2.status"))"
fi
pid_after="$(main_pid)"
check "restart started a new process ($pid_before -> $pid_after)" test "$pid_before" != "$pid_after" -a "$pid_after" != 0
for _ in $(seq 50); do
    [[ "$(client http GET /health)" == "200 "* ]] && break
    sleep 0.1
done
out="$(client http POST /v1/chat/completions "$(chat k)")"
if [[ "$out" == "200 "* && "$out" == *"Hello from mock-keyed"* ]]; then
    ok "the changed key in /etc/llm-proxy/env reached the upstream after the restart"
else
    fail "model k after the new key and a restart -> ${out:0:200}"
fi

# --- SIGHUP: the service keeps running, same PID (watched for 2 s)
pid_before="$(main_pid)"
ct systemctl kill -s HUP --kill-whom=main llm-proxy
alive=1
for _ in $(seq 20); do
    if [[ "$(ct systemctl is-active llm-proxy)" != active || "$(main_pid)" != "$pid_before" ]]; then
        alive=0
        break
    fi
    sleep 0.1
done
out="$(client http GET /health)"
if [[ $alive -eq 1 && "$out" == "200 "* ]]; then
    ok "SIGHUP: still active, same PID $pid_before, /health 200"
else
    fail "SIGHUP: service $(ct systemctl is-active llm-proxy || true), PID $pid_before -> $(main_pid), /health -> ${out:0:40} ($(ct systemctl show -p Result --value llm-proxy))"
fi

# --- no key anywhere in the journal
if ct journalctl -u llm-proxy --no-pager -o cat | grep -q key-two-secret; then
    fail "the upstream key appears in the journal"
else
    ok "the upstream key is not in the journal (debug level, $(ct journalctl -u llm-proxy --no-pager -o cat | wc -l) lines)"
fi

# --- uninstall --purge
if ct /src/install.sh --uninstall --purge >"$WORK/uninstall.log" 2>&1; then
    ok "install.sh --uninstall --purge: $(grep removed: "$WORK/uninstall.log" | sed 's/^install.sh: //')"
else
    fail "install.sh --uninstall --purge: $(tail -n 3 "$WORK/uninstall.log")"
fi
left=""
for f in /etc/systemd/system/llm-proxy.service /usr/local/bin/llm-proxy /etc/llm-proxy; do
    if ct test -e "$f"; then left+=" $f"; fi
done
ct id -u llm-proxy >/dev/null 2>&1 && left+=" user llm-proxy"
ct systemctl is-active --quiet llm-proxy && left+=" (service still active)"
check "nothing left after --purge${left:+:$left}" test -z "$left"

echo "  info  test-systemd took $((SECONDS - started_at)) s"
if ! summary; then
    echo "--- journal of llm-proxy (tail)" >&2
    ct journalctl -u llm-proxy -n 30 --no-pager >&2 || true
    exit 1
fi
