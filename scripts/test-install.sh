#!/usr/bin/env bash
# Test install.sh without touching the system: DESTDIR installs into
# temporary roots, checked for every file, mode and content; the staged unit
# through `systemd-analyze verify` and `systemd-analyze security --offline`;
# upgrade, uninstall, purge and the failure paths. Owners (root:llm-proxy)
# need a live install as root and are checked by hand (README "Deploying").
#
#   scripts/test-install.sh
#
# Environment:
#   LLM_PROXY_BIN   binary to install [default: cargo build --bin llm-proxy]
#   MAX_EXPOSURE    highest acceptable security score [default: 2.0]
# The checks are single-quoted `eval` strings, expanded when they run:
# shellcheck disable=SC2016
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -z "${LLM_PROXY_BIN:-}" ]]; then
    cargo build --quiet --bin llm-proxy
fi
BIN="${LLM_PROXY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/llm-proxy}"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
MAX_EXPOSURE="${MAX_EXPOSURE:-2.0}"

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init test-install
chmod 0755 "$WORK" # readable by `nobody` for the not-root case

mode_is() { [[ "$(stat -c %a "$1" 2>/dev/null)" == "$2" ]]; }
# run LOG ARGS...: install.sh with ARGS, output to LOG; returns its status.
run() {
    local log="$1"
    shift
    ./install.sh "$@" >"$log" 2>&1
}
show() { sed 's/^/        | /' "$1"; }

R="$WORK/root"
UNIT="$R/etc/systemd/system/llm-proxy.service"
CFG="$R/etc/llm-proxy/config.yaml"
ENVF="$R/etc/llm-proxy/env"

echo "test-install: fresh DESTDIR install"
if DESTDIR="$R" run "$WORK/fresh.log" --binary "$BIN"; then
    ok "exit 0"
else
    fail "exit 0"
    show "$WORK/fresh.log"
fi
check "binary /usr/local/bin/llm-proxy, 0755, the given binary" \
    eval 'mode_is "$R/usr/local/bin/llm-proxy" 755 && cmp -s "$BIN" "$R/usr/local/bin/llm-proxy"'
check "directory /etc/llm-proxy, 0750" mode_is "$R/etc/llm-proxy" 750
check "config /etc/llm-proxy/config.yaml, 0640, config/config.yaml" \
    eval 'mode_is "$CFG" 640 && cmp -s config/config.yaml "$CFG"'
check "env /etc/llm-proxy/env, 0600, OPENAI_API_KEY= line for the config's \${OPENAI_API_KEY}" \
    eval 'mode_is "$ENVF" 600 && grep -qx "OPENAI_API_KEY=" "$ENVF"'
check "unit /etc/systemd/system/llm-proxy.service, 0644, scripts/llm-proxy.service" \
    eval 'mode_is "$UNIT" 644 && cmp -s scripts/llm-proxy.service "$UNIT"'
check "parent directories 0755 (etc, usr/local/bin, etc/systemd/system)" \
    eval 'mode_is "$R/etc" 755 && mode_is "$R/usr/local/bin" 755 && mode_is "$R/etc/systemd/system" 755'
extra="$(cd "$R" && find . -mindepth 1 ! -type d | sort | tr '\n' ' ')"
check "no other files (got: $extra)" [ "$extra" == "./etc/llm-proxy/config.yaml ./etc/llm-proxy/env ./etc/systemd/system/llm-proxy.service ./usr/local/bin/llm-proxy " ]
check "the config was checked (--check-config output shown)" grep -q "config OK" "$WORK/fresh.log"
check "says what a packager must do (user, chown, systemctl)" \
    eval 'grep -q "useradd --system" "$WORK/fresh.log" && grep -q "chown root:llm-proxy" "$WORK/fresh.log"'
check "warns that the keys are empty" grep -q "empty in /etc/llm-proxy/env: ANTHROPIC_API_KEY OPENAI_API_KEY" "$WORK/fresh.log"

echo "test-install: the staged unit"
if command -v systemd-analyze >/dev/null; then
    # verify resolves ExecStart= and the targets the unit names under --root:
    # the staged tree plus a copy of this machine's stock units.
    V="$WORK/verify-root"
    cp -a "$R" "$V"
    stock=""
    for d in /usr/lib/systemd/system /lib/systemd/system; do
        if [[ -f "$d/multi-user.target" ]]; then
            stock="$d"
            break
        fi
    done
    if [[ -n "$stock" ]]; then
        mkdir -p "$V/usr/lib/systemd"
        cp -a "$stock" "$V/usr/lib/systemd/system"
        # ExecReload= runs /bin/sh, which every system has and the staged
        # tree does not.
        mkdir -p "$V/bin"
        cp -L /bin/sh "$V/bin/sh"
        out="$(systemd-analyze verify --root="$V" "$V/etc/systemd/system/llm-proxy.service" 2>&1)" || true
        if [[ -z "$out" ]]; then
            ok "systemd-analyze verify prints nothing"
        else
            fail "systemd-analyze verify prints nothing; it printed:"
            printf '%s\n' "$out" | show /dev/stdin
        fi
        # ...and would notice a problem: the same check without the binary.
        rm -f "$V/usr/local/bin/llm-proxy"
        out="$(systemd-analyze verify --root="$V" "$V/etc/systemd/system/llm-proxy.service" 2>&1)" || true
        check "systemd-analyze verify complains when the binary is missing" grep -q "not executable" <<<"$out"
    else
        skip "systemd-analyze verify: no stock units (multi-user.target) on this machine"
    fi
    # An old systemd (< 250) has no --offline; that is the tool missing too.
    if sec="$(systemd-analyze security --offline=yes "$UNIT" 2>&1)"; then
        line="$(grep "Overall exposure level" <<<"$sec" || true)"
        score="$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$line")"
        if [[ -n "$score" ]] && awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'; then
            ok "systemd-analyze security --offline=yes: ${line#*: } (<= $MAX_EXPOSURE)"
        else
            fail "systemd-analyze security --offline=yes <= $MAX_EXPOSURE: ${line:-no score in output}"
            grep '✗' <<<"$sec" | sed 's/^/        | /' || true
        fi
    else
        skip "systemd-analyze security --offline=yes: not supported by $(systemd-analyze --version | head -n 1)"
    fi
else
    skip "systemd-analyze verify and security: systemd-analyze not installed (apt-get install systemd)"
fi
check "unit: User=llm-proxy, Restart=on-failure, LimitNOFILE>=4096, EnvironmentFile=/etc/llm-proxy/env" \
    eval 'grep -qx "User=llm-proxy" "$UNIT" && grep -qx "Restart=on-failure" "$UNIT" &&
        [ "$(sed -n "s/^LimitNOFILE=//p" "$UNIT")" -ge 4096 ] && grep -qx "EnvironmentFile=/etc/llm-proxy/env" "$UNIT"'

echo "test-install: upgrade keeps an edited config and the env file"
echo "# edited by the admin" >>"$CFG"
sed -i 's/^OPENAI_API_KEY=$/OPENAI_API_KEY=sk-test-kept/' "$ENVF"
cp "$CFG" "$WORK/config-before"
cp "$ENVF" "$WORK/env-before"
# A different binary: the same program with a marker appended (still runs).
NEW="$WORK/llm-proxy-new"
cp "$BIN" "$NEW"
echo "upgrade-marker" >>"$NEW"
if DESTDIR="$R" run "$WORK/upgrade.log" --binary "$NEW"; then ok "exit 0"; else
    fail "exit 0"
    show "$WORK/upgrade.log"
fi
check "binary replaced by the new one" cmp -s "$NEW" "$R/usr/local/bin/llm-proxy"
check "edited config kept" cmp -s "$WORK/config-before" "$CFG"
check "env file kept (with its key), still 0600" eval 'cmp -s "$WORK/env-before" "$ENVF" && mode_is "$ENVF" 600'
check "says it kept config and env" eval 'grep -q "keeping existing .*config.yaml" "$WORK/upgrade.log" && grep -q "keeping existing .*env" "$WORK/upgrade.log"'
check "the key is not printed" eval '! grep -q sk-test-kept "$WORK/upgrade.log"'
check "no temporary files left" eval '[ -z "$(find "$R" -name ".*.new.*")" ]'

echo "test-install: an invalid config on upgrade changes nothing"
cp "$R/usr/local/bin/llm-proxy" "$WORK/installed-bin"
cp "$CFG" "$WORK/good-config"
echo "no_such_key: 1" >>"$CFG"
if DESTDIR="$R" run "$WORK/bad-upgrade.log" --binary "$BIN"; then fail "non-zero exit"; else ok "non-zero exit"; fi
check "names the problem (invalid config)" grep -q "invalid" "$WORK/bad-upgrade.log"
check "binary not replaced" cmp -s "$WORK/installed-bin" "$R/usr/local/bin/llm-proxy"
check "no temporary files left" eval '[ -z "$(find "$R" -name ".*.new.*")" ]'
cp "$WORK/good-config" "$CFG"

echo "test-install: the check uses the env file, not the caller's environment"
# shellcheck disable=SC2016 # a literal ${VAR} for the config
printf 'providers:\n  p:\n    type: openai\n    api_key: ${LLM_PROXY_TEST_KEY}\nmodels:\n  m:\n    providers:\n      p:\n        priority: 0\n' >"$WORK/needs-key.yaml"
R2="$WORK/root-key"
if LLM_PROXY_TEST_KEY=from-shell DESTDIR="$R2" run "$WORK/key1.log" --binary "$BIN" --config "$WORK/needs-key.yaml"; then
    ok "fresh install: the env file gets LLM_PROXY_TEST_KEY= and the check passes"
else
    fail "fresh install with a config needing LLM_PROXY_TEST_KEY"
    show "$WORK/key1.log"
fi
sed -i '/^LLM_PROXY_TEST_KEY=/d' "$R2/etc/llm-proxy/env"
if LLM_PROXY_TEST_KEY=from-shell DESTDIR="$R2" run "$WORK/key2.log" --binary "$BIN"; then
    fail "variable missing from the env file (but set in the shell): non-zero exit"
else
    check "variable missing from the env file (but set in the shell): non-zero exit, names it" \
        grep -q "LLM_PROXY_TEST_KEY is not set" "$WORK/key2.log"
fi

echo "test-install: uninstall keeps config, --purge removes it"
if DESTDIR="$R" run "$WORK/uninstall.log" --uninstall; then ok "--uninstall: exit 0"; else
    fail "--uninstall: exit 0"
    show "$WORK/uninstall.log"
fi
check "--uninstall: binary and unit removed" eval '[ ! -e "$R/usr/local/bin/llm-proxy" ] && [ ! -e "$UNIT" ]'
check "--uninstall: config and env kept" eval '[ -f "$CFG" ] && [ -f "$ENVF" ]'
if DESTDIR="$R" run "$WORK/purge.log" --uninstall --purge; then ok "--uninstall --purge: exit 0"; else
    fail "--uninstall --purge: exit 0"
    show "$WORK/purge.log"
fi
check "--uninstall --purge: /etc/llm-proxy removed" eval '[ ! -e "$R/etc/llm-proxy" ]'
check "--uninstall --purge: no files left" eval '[ -z "$(find "$R" ! -type d)" ]'

echo "test-install: failures"
R3="$WORK/root-invalid"
printf 'models: {}\nno_such_key: 1\n' >"$WORK/invalid.yaml"
if DESTDIR="$R3" run "$WORK/invalid.log" --binary "$BIN" --config "$WORK/invalid.yaml"; then
    fail "invalid config: non-zero exit"
else
    ok "invalid config: non-zero exit"
fi
check "invalid config: message names the config" grep -q "config .*invalid" "$WORK/invalid.log"
check "invalid config: nothing left behind (no $R3)" eval '[ ! -e "$R3" ]'

if PATH=/usr/bin:/bin command -v cargo >/dev/null; then
    skip "no cargo and no --binary: cargo is in /usr/bin or /bin here, cannot hide it"
else
    if env -u SUDO_USER PATH=/usr/bin:/bin DESTDIR="$WORK/root-nocargo" ./install.sh >"$WORK/nocargo.log" 2>&1; then
        fail "no cargo and no --binary: non-zero exit"
    else
        check "no cargo and no --binary: non-zero exit, says cargo not found and --binary" \
            eval 'grep -q "cargo not found" "$WORK/nocargo.log" && grep -q -- "--binary" "$WORK/nocargo.log"'
        check "no cargo and no --binary: nothing left behind" eval '[ ! -e "$WORK/root-nocargo" ]'
    fi
fi

check "--binary that is not an executable: non-zero exit" \
    eval '! DESTDIR="$WORK/root-nobin" ./install.sh --binary "$WORK/nope" >"$WORK/nobin.log" 2>&1 && grep -q "not an executable" "$WORK/nobin.log"'
check "unknown argument: exit 2" eval 'DESTDIR="$WORK/x" ./install.sh --bogus >/dev/null 2>&1; [ $? -eq 2 ]'

# Not root and no DESTDIR: must refuse before touching anything.
not_root=()
if [[ $EUID -ne 0 ]]; then
    not_root=(env -u DESTDIR)
elif command -v setpriv >/dev/null && id -u nobody >/dev/null 2>&1; then
    not_root=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups env -u DESTDIR HOME=/)
fi
if [[ ${#not_root[@]} -eq 0 ]]; then
    skip "not root: running as root and setpriv or the nobody user is missing"
elif ! "${not_root[@]}" bash -c '[ -r ./install.sh ]' 2>/dev/null; then
    skip "not root: the nobody user cannot read $ROOT/install.sh"
else
    if "${not_root[@]}" bash ./install.sh --binary "$BIN" >"$WORK/notroot.log" 2>&1; then
        fail "not root, no DESTDIR: non-zero exit"
    else
        check "not root, no DESTDIR: non-zero exit, says to run as root" grep -q "must run as root" "$WORK/notroot.log"
    fi
fi

summary
