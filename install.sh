#!/usr/bin/env bash
# Install, upgrade or remove llm-proxy as a systemd service.
#
#   sudo ./install.sh                      build (cargo), install, enable, start
#   sudo ./install.sh --binary PATH        install that binary instead of building
#   sudo ./install.sh                      again: upgrade (binary, unit; restart),
#                                          config and env kept
#   sudo ./install.sh --uninstall          remove service and binary, keep config
#   sudo ./install.sh --uninstall --purge  ...and config, env and the user
#   DESTDIR=/tmp/root ./install.sh --binary PATH
#                                          stage the files under /tmp/root only
#
# Installs:
#   /usr/local/bin/llm-proxy                   0755 root:root
#   /etc/llm-proxy/                            0750 root:llm-proxy
#   /etc/llm-proxy/config.yaml                 0640 root:llm-proxy  (never overwritten)
#   /etc/llm-proxy/env                         0600 root:root       (never overwritten;
#                                                  API keys, read by systemd itself)
#   /etc/systemd/system/llm-proxy.service      0644 root:root
# and a system user and group `llm-proxy` (no shell, no home).
#
# Any failure exits non-zero and undoes what this run did.
set -euo pipefail
umask 022

NAME=llm-proxy
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    cat <<EOF
Usage: sudo ./install.sh [--binary PATH] [--config PATH] [--no-start]
       sudo ./install.sh --uninstall [--purge]

  --binary PATH   install this llm-proxy binary (default: build it with
                  cargo build --release; scripts/build-static.sh makes one
                  that runs on any x86_64 Linux)
  --config PATH   the config to install when /etc/llm-proxy/config.yaml does
                  not exist yet [default: config/config.yaml]; an existing one
                  is never overwritten
  --no-start      enable the service but do not start or restart it
  --uninstall     stop and disable the service, remove it and the binary;
                  config, env file and user stay
  --purge         with --uninstall: also remove /etc/llm-proxy and the user
  -h, --help      this help

Environment:
  DESTDIR         stage every file under this directory instead of /, for
                  packaging: no user is created, nothing is chowned, systemd
                  is not touched, root is not required
EOF
}

indent() { sed 's/^/    /'; }
say() { echo "install.sh: $*"; }
die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

binary=""
config_src="$SRC/config/config.yaml"
mode=install
purge=0
start=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --binary | --config)
            [[ $# -ge 2 && -n "$2" ]] || {
                echo "install.sh: $1 needs a value (try --help)" >&2
                exit 2
            }
            if [[ "$1" == --binary ]]; then binary="$2"; else config_src="$2"; fi
            shift 2
            ;;
        --binary=* | --config=*)
            v="${1#*=}"
            [[ -n "$v" ]] || {
                echo "install.sh: ${1%%=*} needs a value (try --help)" >&2
                exit 2
            }
            if [[ "$1" == --binary=* ]]; then binary="$v"; else config_src="$v"; fi
            shift
            ;;
        --uninstall) mode=uninstall && shift ;;
        --purge) purge=1 && shift ;;
        --no-start) start=0 && shift ;;
        -h | --help) usage && exit 0 ;;
        *)
            echo "install.sh: unknown argument: $1 (try --help)" >&2
            exit 2
            ;;
    esac
done
if [[ $purge -eq 1 && $mode != uninstall ]]; then
    echo "install.sh: --purge only goes with --uninstall" >&2
    exit 2
fi

DESTDIR="${DESTDIR:-}"
DESTDIR="${DESTDIR%/}"
if [[ -n "$DESTDIR" ]]; then
    [[ "$DESTDIR" == /* ]] || DESTDIR="$PWD/$DESTDIR"
    staged=1
else
    staged=0
    [[ $EUID -eq 0 ]] || die "must run as root (sudo ./install.sh ...); to stage files for a package instead, set DESTDIR"
fi

BIN="$DESTDIR/usr/local/bin/$NAME"
ETC="$DESTDIR/etc/$NAME"
CONFIG="$ETC/config.yaml"
ENVFILE="$ETC/env"
UNIT="$DESTDIR/etc/systemd/system/$NAME.service"
# The paths the unit and the service see, whatever DESTDIR is.
LIVE_CONFIG="/etc/$NAME/config.yaml"
LIVE_ENV="/etc/$NAME/env"

# systemd is only touched on a live install on a machine booted with it.
systemd_up=0
if [[ $staged -eq 0 && -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemd_up=1
fi

# --- undo log: every change this run makes is recorded, so a failure can put
# the system back as it was. Entries are undone in reverse order.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/llm-proxy-install.XXXXXX")"
UNDO=()
done_ok=0
restart_on_undo=0
undo() { UNDO+=("$*"); }
# shellcheck disable=SC2317 # invoked by the EXIT trap
finish() {
    local status=$?
    if [[ $done_ok -eq 0 && ${#UNDO[@]} -gt 0 ]]; then
        echo "install.sh: failed; undoing the changes of this run" >&2
        local i
        for ((i = ${#UNDO[@]} - 1; i >= 0; i--)); do
            eval "${UNDO[$i]}" 2>/dev/null || echo "install.sh: could not undo: ${UNDO[$i]}" >&2
        done
    fi
    if [[ $done_ok -eq 0 && ${#UNDO[@]} -gt 0 && $systemd_up -eq 1 ]]; then
        # systemd must see the unit as it is again (restored or gone)...
        systemctl daemon-reload || true
        if [[ $restart_on_undo -eq 1 ]]; then
            # ...and the old binary and unit are back: run the old version.
            systemctl restart "$NAME.service" ||
                echo "install.sh: could not restart the previous version" >&2
        fi
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# mkdir_p DIR MODE: create DIR with MODE (missing parents: 0755), recording
# each new directory for undo.
mkdir_p() {
    local dir="$1" mode="$2" missing=() d
    d="$dir"
    while [[ ! -d "$d" ]]; do
        missing=("$d" "${missing[@]}")
        d="$(dirname "$d")"
    done
    for d in "${missing[@]}"; do
        if [[ "$d" == "$dir" ]]; then mkdir -m "$mode" "$d"; else mkdir -m 0755 "$d"; fi
        undo "rmdir $(printf %q "$d")"
    done
}

# put SRC DEST MODE: install SRC as DEST with MODE, atomically (a temp file in
# the same directory, then rename), so a running process or a concurrent
# reader never sees half a file. An existing DEST is backed up for undo.
put() {
    local src="$1" dest="$2" mode="$3" tmp
    tmp="$(dirname "$dest")/.$(basename "$dest").new.$$"
    undo "rm -f $(printf %q "$tmp")"
    install -m "$mode" "$src" "$tmp"
    if [[ -e "$dest" ]]; then
        local backup
        backup="$WORK/backup.$(basename "$dest")"
        cp -p "$dest" "$backup"
        mv -f "$tmp" "$dest"
        undo "cp -p $(printf %q "$backup") $(printf %q "$dest")"
    else
        mv -f "$tmp" "$dest"
        undo "rm -f $(printf %q "$dest")"
    fi
}

# The variables an env file sets, as NAME=VALUE words for env(1). systemd
# reads the file (EnvironmentFile=); this reads the same simple form:
# NAME=VALUE lines, optional quotes, # comments. It never runs the file.
env_assignments() {
    local line name value
    while IFS= read -r line || [[ -n "$line" ]]; do
        [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
        if [[ "$line" =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
            name="${BASH_REMATCH[2]}"
            value="${BASH_REMATCH[3]}"
            if [[ "$value" =~ ^\"(.*)\"[[:space:]]*$ || "$value" =~ ^\'(.*)\'[[:space:]]*$ ]]; then
                value="${BASH_REMATCH[1]}"
            fi
            printf '%s=%s\0' "$name" "$value"
        fi
    done <"$1"
}

# ------------------------------------------------------------------ uninstall
if [[ $mode == uninstall ]]; then
    if [[ $systemd_up -eq 1 ]]; then
        if systemctl list-unit-files "$NAME.service" >/dev/null 2>&1; then
            systemctl disable --now "$NAME.service" 2>/dev/null || true
        fi
    fi
    removed=()
    for f in "$UNIT" "$BIN"; do
        if [[ -e "$f" ]]; then
            rm -f "$f"
            removed+=("$f")
        fi
    done
    if [[ $systemd_up -eq 1 ]]; then systemctl daemon-reload; fi
    if [[ $purge -eq 1 ]]; then
        if [[ -e "$ETC" ]]; then
            rm -rf "$ETC"
            removed+=("$ETC")
        fi
        if [[ $staged -eq 0 ]] && id -u "$NAME" >/dev/null 2>&1; then
            userdel "$NAME"
            getent group "$NAME" >/dev/null && groupdel "$NAME"
            removed+=("user and group $NAME")
        fi
    fi
    done_ok=1
    if [[ ${#removed[@]} -eq 0 ]]; then
        say "nothing to remove: llm-proxy is not installed${DESTDIR:+ under $DESTDIR}"
    else
        say "removed: ${removed[*]}"
    fi
    if [[ $purge -eq 0 && -e "$ETC" ]]; then
        say "kept $ETC (config and env) and the $NAME user; --uninstall --purge removes them"
    fi
    exit 0
fi

# -------------------------------------------------------------------- install
[[ -f "$SRC/scripts/$NAME.service" ]] || die "$SRC/scripts/$NAME.service not found: run install.sh from the llm-proxy source tree"

# 1. The binary: given, or built from this tree.
if [[ -n "$binary" ]]; then
    [[ -f "$binary" && -x "$binary" ]] || die "--binary $binary: not an executable file"
else
    cargo="$(command -v cargo || true)"
    build_user=""
    # Under sudo, when the invoking user owns this tree: build as that user
    # (target/ is not left owned by root) with their rustup install, which
    # sudo's reset PATH hides.
    if [[ -n "${SUDO_USER:-}" && "$SUDO_USER" != root && "$(stat -c %U "$SRC")" == "$SUDO_USER" ]]; then
        user_home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
        if [[ -x "$user_home/.cargo/bin/cargo" ]]; then
            cargo="$user_home/.cargo/bin/cargo"
            build_user="$SUDO_USER"
        elif [[ -n "$cargo" && "$cargo" != /root/* ]]; then
            build_user="$SUDO_USER"
        fi
    fi
    [[ -n "$cargo" ]] || die "cargo not found and no --binary given: install the Rust toolchain (https://rustup.rs) or pass --binary PATH (scripts/build-static.sh builds a portable one)"
    say "building: cargo build --release --bin $NAME (in $SRC)"
    if [[ -n "$build_user" ]]; then
        runuser -u "$build_user" -- env HOME="$user_home" PATH="$(dirname "$cargo"):$PATH" \
            "$cargo" build --release --bin "$NAME" --manifest-path "$SRC/Cargo.toml" ||
            die "cargo build failed"
    else
        "$cargo" build --release --bin "$NAME" --manifest-path "$SRC/Cargo.toml" || die "cargo build failed"
    fi
    binary="${CARGO_TARGET_DIR:-$SRC/target}/release/$NAME"
fi
version="$("$binary" --version 2>/dev/null)" || die "$binary does not run (--version failed)"
[[ "$version" == "$NAME "* ]] || die "$binary is not llm-proxy (--version said: $version)"

if [[ ! -e "$CONFIG" ]]; then
    [[ -f "$config_src" ]] || die "--config $config_src: no such file"
fi

# 2. The user the service runs as.
if [[ $staged -eq 0 ]] && ! id -u "$NAME" >/dev/null 2>&1; then
    command -v useradd >/dev/null || die "useradd not found"
    nologin="$(command -v nologin || echo /usr/sbin/nologin)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell "$nologin" --comment "llm-proxy service" "$NAME"
    undo "userdel $NAME; ! getent group $NAME >/dev/null || groupdel $NAME"
    say "created system user $NAME (no shell, no home)"
fi
# owner FILE USER:GROUP: chown on a live install; packagers do it themselves.
owner() { if [[ $staged -eq 0 ]]; then chown "$2" "$1"; fi; }

# 3. The new binary, staged next to the old one under a temporary name. It is
# renamed into place only after the config has been checked with it.
mkdir_p "$(dirname "$BIN")" 0755
new_bin="$(dirname "$BIN")/.$NAME.new.$$"
undo "rm -f $(printf %q "$new_bin")"
install -m 0755 "$binary" "$new_bin"
owner "$new_bin" root:root

# 4. Config directory, config and env file: created once, never overwritten.
mkdir_p "$ETC" 0750
owner "$ETC" "root:$NAME"
chmod 0750 "$ETC"
if [[ -e "$CONFIG" ]]; then
    say "keeping existing $CONFIG"
else
    put "$config_src" "$CONFIG" 0640
    owner "$CONFIG" "root:$NAME"
    say "installed $CONFIG (from $config_src)"
fi
if [[ -e "$ENVFILE" ]]; then
    say "keeping existing $ENVFILE"
else
    # One line per variable the config uses (outside comments): NAME= for
    # each ${NAME}, a commented NAME=default for each ${NAME:-default}.
    {
        echo "# Environment for llm-proxy: API keys and other values the config"
        echo "# refers to as \${NAME}. Read by systemd (EnvironmentFile=), so only root"
        echo "# can read this file. After editing: systemctl restart llm-proxy"
        # shellcheck disable=SC2016 # a literal ${, not an expansion
        sed -e '/^[[:space:]]*#/d' -e 's/[[:space:]]#.*$//' "$CONFIG" |
            grep -o '\${[A-Za-z_][A-Za-z0-9_]*\(:-[^}]*\)\?}' | sort -u |
            sed -e 's/^\${\([A-Za-z0-9_]*\)}$/\1=/' -e 's/^\${\([A-Za-z0-9_]*\):-\(.*\)}$/# \1=\2/' || true
    } >"$WORK/env"
    put "$WORK/env" "$ENVFILE" 0600
    owner "$ENVFILE" root:root
    say "installed $ENVFILE (mode 0600): put your API keys there"
fi

# 5. Check the config with the new binary, with exactly the environment the
# service will have (the env file, nothing from this shell), and on a live
# install as the service user, so unreadable files show up now.
env_words=()
while IFS= read -r -d '' w; do env_words+=("$w"); done < <(env_assignments "$ENVFILE")
as_user=()
if [[ $staged -eq 0 ]] && command -v setpriv >/dev/null; then
    as_user=(setpriv --reuid="$NAME" --regid="$NAME" --init-groups)
fi
if ! check_out="$("${as_user[@]}" env -i PATH=/usr/bin:/bin "${env_words[@]}" \
    "$new_bin" --config "$CONFIG" --check-config 2>&1)"; then
    printf '%s\n' "$check_out" | indent >&2
    die "the config $CONFIG is invalid (checked with the variables in $ENVFILE); nothing was changed"
fi
printf '%s\n' "$check_out" | indent
empty=()
for w in "${env_words[@]}"; do
    if [[ "$w" == *= ]] && grep -qF "\${${w%=}}" "$CONFIG"; then empty+=("${w%=}"); fi
done

# 6. The unit, then the binary: both atomic renames.
mkdir_p "$(dirname "$UNIT")" 0755
put "$SRC/scripts/$NAME.service" "$UNIT" 0644
owner "$UNIT" root:root
upgrade=0
[[ -e "$BIN" ]] && upgrade=1
if [[ $upgrade -eq 1 ]]; then
    cp -p "$BIN" "$WORK/old-bin"
    undo "cp -p $(printf %q "$WORK/old-bin") $(printf %q "$BIN")"
else
    undo "rm -f $(printf %q "$BIN")"
fi
mv -f "$new_bin" "$BIN"
say "installed $BIN ($version)"

# 7. systemd.
if [[ $systemd_up -eq 1 ]]; then
    systemctl daemon-reload
    was_enabled=0
    systemctl is-enabled --quiet "$NAME.service" 2>/dev/null && was_enabled=1
    systemctl enable --quiet "$NAME.service"
    [[ $was_enabled -eq 1 ]] || undo "systemctl disable --quiet $NAME.service"
    since="$(date '+%Y-%m-%d %H:%M:%S')"
    if [[ $start -eq 0 ]]; then
        say "enabled $NAME.service; not started (--no-start): systemctl start $NAME"
    elif systemctl is-active --quiet "$NAME.service"; then
        # On failure the undo puts the old binary and unit back, then the
        # old version is restarted (finish).
        restart_on_undo=1
        systemctl restart "$NAME.service" || die "restart failed; see: journalctl -u $NAME -n 50"
        say "restarted $NAME.service"
    else
        undo "systemctl stop $NAME.service"
        systemctl start "$NAME.service" || die "start failed; see: journalctl -u $NAME -n 50"
        say "started $NAME.service"
    fi
    # Type=exec: "started" means exec'd; a bind error shows a moment later.
    # Wait (up to 5 s) for the "listening on" log line or for the service to stop.
    for _ in $(seq 50); do
        [[ $start -eq 1 ]] || break
        systemctl is-active --quiet "$NAME.service" || break
        journalctl -u "$NAME" --since "$since" -q -o cat 2>/dev/null | grep -q "listening on" && break
        sleep 0.1
    done
    if [[ $start -eq 1 ]] && ! systemctl is-active --quiet "$NAME.service"; then
        die "$NAME.service is not running; see: journalctl -u $NAME -n 50"
    fi
fi
done_ok=1

# 8. What next.
if [[ ${#empty[@]} -gt 0 ]]; then
    say "warning: empty in $LIVE_ENV: ${empty[*]}; providers using them get no key until you set them"
fi
if [[ $staged -eq 1 ]]; then
    cat <<EOF
install.sh: staged under $DESTDIR. A package must also, at install time:
  - create the system user and group: useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin $NAME
  - chown root:$NAME /etc/$NAME /etc/$NAME/config.yaml  (files were written with their final modes)
  - systemctl daemon-reload && systemctl enable --now $NAME
EOF
elif [[ $systemd_up -eq 1 ]]; then
    say "done. Status: systemctl status $NAME; logs: journalctl -u $NAME -f"
    say "config: $LIVE_CONFIG; keys: $LIVE_ENV; after editing either: systemctl restart $NAME"
else
    cat <<EOF
install.sh: done, but systemd is not running on this machine, so the service
was not enabled or started. On a machine booted with systemd:
    systemctl daemon-reload && systemctl enable --now $NAME
To run it here in the foreground, as the $NAME user with the env file:
    sudo sh -c 'set -a; . $LIVE_ENV; exec setpriv --reuid=$NAME --regid=$NAME --init-groups /usr/local/bin/$NAME --config $LIVE_CONFIG'
EOF
fi
