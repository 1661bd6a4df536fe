#!/usr/bin/env bash
# Installs bitad as a systemd service on Raspberry Pi OS (arm64), Ubuntu on Jetson (arm64) or
# Debian/Ubuntu x86_64. Run as root from a checkout:   sudo deploy/install.sh [options]
#
#   --prefix DIR          where the code goes (default /opt/bitad; the unit expects /opt/bitad)
#   --skip-node           do not install Node.js (node >= 20 must be on /usr/bin/node)
#   --model DIR           model package the placed config serves (default: the bundled one); the
#                         disk and memory estimate is for this model
#   --with-mosquitto      install mosquitto on this board with a password file and a topic ACL,
#                         and point bitad at it (default: bitad's embedded broker on 127.0.0.1)
#   --socket-user USER    add USER to the bitad group so `bitad ask` can use the socket
#   --no-start            install and enable, but do not start
#   -h, --help
set -euo pipefail

PREFIX=/opt/bitad
SKIP_NODE=0
WITH_MOSQUITTO=0
SOCKET_USER=""
START=1
NODE_MAJOR=20
MODEL=""

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="$2"; shift 2 ;;
    --skip-node) SKIP_NODE=1; shift ;;
    --model) MODEL="$2"; shift 2 ;;
    --with-mosquitto) WITH_MOSQUITTO=1; shift ;;
    --socket-user) SOCKET_USER="$2"; shift 2 ;;
    --no-start) START=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo)" >&2; exit 1; }
SRC="$(cd "$(dirname "$0")/.." && pwd)"
ARCH="$(uname -m)"
# The model the config will serve: a package inside the checkout is copied under PREFIX with it.
MODEL="${MODEL:-$SRC/models/tinystories-bita}"
MODEL="$(cd "$MODEL" 2>/dev/null && pwd)" || { echo "install.sh: no model package at $MODEL" >&2; exit 1; }
case "$MODEL/" in
  "$SRC"/*) MODEL_PATH="$PREFIX/${MODEL#"$SRC"/}" ;;
  *) MODEL_PATH="$MODEL" ;;
esac
# shellcheck disable=SC1091
. /etc/os-release
echo "bitad install: $PRETTY_NAME on $ARCH, code from $SRC to $PREFIX"
# 0. What this board needs (64-bit userland, Node >= 20, disk and memory), before anything changes.
# shellcheck source=deploy/preflight.sh
. "$SRC/deploy/preflight.sh"
preflight "$MODEL" "$PREFIX" "$SKIP_NODE" || exit 1
if [ -r /etc/nv_tegra_release ]; then
  echo "  Jetson detected: onnxruntime-node runs on the CPU here (there is no arm64 CUDA build);"
  echo "  the unit's PrivateDevices=yes also hides /dev/nvhost*. See docs/daemon.md."
fi
export DEBIAN_FRONTEND=noninteractive

# 1. Packages: a compiler for better-sqlite3 (its prebuilt binary is not always available).
apt-get update -qq
apt-get install -y -qq --no-install-recommends ca-certificates curl gnupg build-essential python3 rsync >/dev/null

# 2. Node.js >= 20 at /usr/bin/node (Debian 12 ships 18, Ubuntu 22.04 on Jetson ships 12).
node_ok() { preflight_node >/dev/null 2>&1; }
if [ "$SKIP_NODE" -eq 0 ] && ! node_ok; then
  echo "  installing Node.js $NODE_MAJOR from NodeSource"
  install -d -m 0755 /etc/apt/keyrings
  curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key | gpg --dearmor --yes -o /etc/apt/keyrings/nodesource.gpg
  echo "deb [signed-by=/etc/apt/keyrings/nodesource.gpg] https://deb.nodesource.com/node_$NODE_MAJOR.x nodistro main" >/etc/apt/sources.list.d/nodesource.list
  apt-get update -qq
  apt-get install -y -qq nodejs >/dev/null
fi
preflight_node required || exit 1

# 3. A dedicated system user; members of its group may use the socket (mode 0660).
if ! id bitad >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/bitad --no-create-home --shell /usr/sbin/nologin --user-group bitad
fi
[ -n "$SOCKET_USER" ] && usermod -aG bitad "$SOCKET_USER"

# 4. Code and dependencies (root-owned, read-only to the service).
# shellcheck source=deploy/copy-code.sh
. "$SRC/deploy/copy-code.sh"
copy_code "$SRC" "$PREFIX"
# onnxruntime-node's postinstall downloads CUDA binaries (fails offline; the CPU build ships inside).
# Build the compiled dist/ (the unit runs it: about 70 MB less RSS than through tsx), then drop
# the build-only packages.
(cd "$PREFIX" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund && npm run -s build && npm prune --omit=dev --no-audit --no-fund)
chmod 0755 "$PREFIX/bin/bitad.js"
chown -R root:root "$PREFIX" # npm ran as root; make sure nothing the checkout's owner owns remains
ln -sf "$PREFIX/bin/bitad.js" /usr/local/bin/bitad

# 5. Config: /etc/bitad/bitad.yaml (kept if present), secrets in bitad.env (root:bitad 0640).
install -d -m 0750 -o root -g bitad /etc/bitad
touch /etc/bitad/bitad.env
chown root:bitad /etc/bitad/bitad.env
chmod 0640 /etc/bitad/bitad.env
if [ ! -e /etc/bitad/bitad.yaml ]; then
  if [ "$WITH_MOSQUITTO" -eq 1 ]; then MQTT_BLOCK="mqtt:
  embedded: false
  host: 127.0.0.1
  port: 1883
  protocol_version: 5
  username: bitad            # password: BITAD_MQTT_PASSWORD in /etc/bitad/bitad.env"
  else MQTT_BLOCK="mqtt:
  embedded: true             # aedes on 127.0.0.1:1883 (MQTT 3.1.1)"
  fi
  cat >/etc/bitad/bitad.yaml <<YAML
# bitad config; every key and its default: $PREFIX/deploy/bitad.example.yaml
model:
  path: $MODEL_PATH
$MQTT_BLOCK
YAML
  chown root:bitad /etc/bitad/bitad.yaml
  chmod 0640 /etc/bitad/bitad.yaml
fi

# 6. Optional local mosquitto with a password file and a topic ACL.
if [ "$WITH_MOSQUITTO" -eq 1 ]; then
  apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients >/dev/null
  PW_FILE=/etc/mosquitto/bitad.passwd
  if [ ! -e "$PW_FILE" ]; then
    BITAD_PW="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    APP_PW="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    touch "$PW_FILE"
    mosquitto_passwd -b "$PW_FILE" bitad "$BITAD_PW"
    mosquitto_passwd -b "$PW_FILE" app "$APP_PW"
    chown mosquitto:mosquitto "$PW_FILE" 2>/dev/null || true
    chmod 0600 "$PW_FILE"
    grep -q '^BITAD_MQTT_PASSWORD=' /etc/bitad/bitad.env || echo "BITAD_MQTT_PASSWORD=$BITAD_PW" >>/etc/bitad/bitad.env
    echo "  mosquitto users: bitad (password in /etc/bitad/bitad.env), app (password: $APP_PW — store it now)"
  fi
  install -m 0644 "$PREFIX/deploy/mosquitto/bitad.acl" /etc/mosquitto/bitad.acl
  cat >/etc/mosquitto/conf.d/bitad.conf <<CONF
# bitad: authenticated broker. Loopback only; add a TLS listener for other hosts
# (listener 8883, certfile/keyfile/cafile) rather than opening 1883.
listener 1883 127.0.0.1
allow_anonymous false
password_file $PW_FILE
acl_file /etc/mosquitto/bitad.acl
# Nagle off: with it a QoS 1 round trip on loopback costs 44-88 ms (docs/daemon.md).
set_tcp_nodelay true
CONF
  systemctl enable mosquitto >/dev/null
  systemctl restart mosquitto
fi

# 7. The unit.
install -m 0644 "$PREFIX/systemd/bitad.service" /etc/systemd/system/bitad.service
if [ "$PREFIX" != /opt/bitad ]; then
  sed -i "s#/opt/bitad#$PREFIX#g" /etc/systemd/system/bitad.service
fi
# Without a running systemd (a chroot, a container, an image being prepared) systemctl still
# enables the unit offline (the wants/ symlink), but cannot start anything.
systemd_running() { [ -d /run/systemd/system ]; }
systemd_running && systemctl daemon-reload
systemctl enable bitad >/dev/null 2>&1 || systemctl enable bitad
if [ "$START" -eq 1 ] && ! systemd_running; then
  echo "bitad installed and enabled; systemd is not running here, so it starts at the next boot"
  echo "  (or by hand: runuser -u bitad -- /usr/bin/node $PREFIX/bin/bitad.js start --config /etc/bitad/bitad.yaml)"
elif [ "$START" -eq 1 ]; then
  systemctl restart bitad
  echo "bitad started: systemctl status bitad; journalctl -u bitad -f; bitad status --socket /run/bitad/bitad.sock"
else
  echo "bitad installed and enabled (not started)"
fi
