#!/usr/bin/env bash
# Install kws-edge as a systemd service on Raspberry Pi OS / Debian 12 (run from a checkout, as root).
#
#   sudo deploy/install.sh               install or upgrade, enable and (re)start the service
#   sudo deploy/install.sh --uninstall   stop and remove the service and /opt/kws-edge
#                                        (keeps /etc/kws-edge and /var/lib/kws-edge; add --purge to drop
#                                        them and the kws-edge user)
#
# Idempotent: running it again upgrades the code and keeps an existing /etc/kws-edge/config.toml.
# Staging/testing options: --root DIR (install under DIR; implies --no-apt --no-user --no-systemd),
# --no-apt, --no-user, --no-venv, --no-systemd, --no-start.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="" APT=1 MKUSER=1 VENV=1 SYSTEMD=1 START=1 ACTION=install PURGE=0
SVC_USER=kws-edge
APT_PACKAGES=(python3-venv python3-dev build-essential pkg-config libsystemd-dev libportaudio2)

usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; }
say() { printf 'kws-edge install: %s\n' "$*"; }
die() { printf 'kws-edge install: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --uninstall) ACTION=uninstall ;;
        --purge) PURGE=1 ;;
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$(realpath -m "$2")"; shift
                APT=0 MKUSER=0 SYSTEMD=0 ;;
        --no-apt) APT=0 ;;
        --no-user) MKUSER=0 ;;
        --no-venv) VENV=0 ;;
        --no-systemd) SYSTEMD=0 ;;
        --no-start) START=0 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

PREFIX="$ROOT/opt/kws-edge"
ETC="$ROOT/etc/kws-edge"
STATE="$ROOT/var/lib/kws-edge"
SHARE="$ROOT/usr/share/kws-edge"
UNIT="$ROOT/etc/systemd/system/kws-edge.service"

if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    die "run as root: sudo $0 $*"
fi
# Without systemd as PID 1 (containers, chroots) systemctl cannot enable or start anything.
if [ "$SYSTEMD" = 1 ] && [ ! -d /run/systemd/system ]; then
    say "systemd is not running here: installing files only (enable the unit on the target)"
    SYSTEMD=0
fi
# Owner options for install(1): root:kws-edge when we manage the user, the caller's otherwise (--root).
own_opts() { if [ "$MKUSER" = 1 ]; then printf -- '-o root -g %s' "$SVC_USER"; fi; }

install_packages() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

create_user() {
    if ! id "$SVC_USER" >/dev/null 2>&1; then
        say "creating system user $SVC_USER"
        useradd --system --user-group --home-dir /var/lib/kws-edge --no-create-home \
            --shell /usr/sbin/nologin --comment "kws-edge keyword spotting" "$SVC_USER"
    fi
    usermod -a -G audio,dialout "$SVC_USER"  # microphone and the Nano's serial port, nothing else
}

install_code() {
    install -d -m 0755 "$PREFIX" "$SHARE/models"
    if [ "$VENV" = 1 ]; then
        [ -x "$PREFIX/.venv/bin/python" ] || python3 -m venv "$PREFIX/.venv"
        "$PREFIX/.venv/bin/python" -m pip install -q --upgrade pip
        "$PREFIX/.venv/bin/python" -m pip install -q --upgrade "$SRC[pi]"
    fi
    install -m 0644 "$SRC/README.md" "$PREFIX/README.md" 2>/dev/null || true
    local n=0
    for manifest in "$SRC"/models/*.json; do
        [ -e "$manifest" ] || continue
        case "$manifest" in *.report.json) continue ;; esac
        local model="${manifest%.json}.tflite"
        [ -e "$model" ] || continue
        install -m 0644 "$manifest" "$model" "$SHARE/models/"
        n=$((n + 1))
    done
    say "installed code in $PREFIX and $n model(s) in $SHARE/models"
}

install_config() {
    # shellcheck disable=SC2046  # own_opts is empty or four words on purpose
    install -d -m 0750 $(own_opts) "$ETC"
    if [ -e "$ETC/config.toml" ]; then
        say "kept the existing $ETC/config.toml (the new example is $ETC/config.toml.example)"
    else
        # shellcheck disable=SC2046
        install -m 0640 $(own_opts) "$SRC/deploy/kws-edge.toml" "$ETC/config.toml"
        say "installed the example config $ETC/config.toml: edit [mqtt] url and credentials"
    fi
    install -m 0644 "$SRC/deploy/kws-edge.toml" "$ETC/config.toml.example"
    install -d -m 0755 "$(dirname "$UNIT")"
    install -m 0644 "$SRC/deploy/kws-edge.service" "$UNIT"
}

start_service() {
    systemctl daemon-reload
    if [ "$START" = 1 ]; then
        systemctl enable kws-edge.service
        systemctl restart kws-edge.service
        say "service running: systemctl status kws-edge; journalctl -u kws-edge -f"
    else
        systemctl enable kws-edge.service
        say "service enabled; start it with: systemctl start kws-edge"
    fi
}

uninstall() {
    if [ "$SYSTEMD" = 1 ]; then
        systemctl disable --now kws-edge.service 2>/dev/null || true
    fi
    rm -f "$UNIT"
    [ "$SYSTEMD" = 1 ] && systemctl daemon-reload
    rm -rf "$PREFIX" "$SHARE"
    if [ "$PURGE" = 1 ]; then
        rm -rf "$ETC" "$STATE"
        if [ "$MKUSER" = 1 ] && id "$SVC_USER" >/dev/null 2>&1; then
            userdel "$SVC_USER"
        fi
        say "removed kws-edge, its config, its queued detections and its user"
    else
        say "removed kws-edge; kept $ETC and $STATE (use --purge to remove them)"
    fi
}

if [ "$ACTION" = uninstall ]; then
    uninstall
    exit 0
fi
[ "$APT" = 1 ] && install_packages
[ "$MKUSER" = 1 ] && create_user
install_code
install_config
if [ "$SYSTEMD" = 1 ]; then
    start_service
else
    say "files installed under ${ROOT:-/}; systemd not touched"
fi
