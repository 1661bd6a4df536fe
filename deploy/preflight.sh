#!/usr/bin/env bash
# What a board needs, checked before deploy/install.sh changes anything: a 64-bit userland, Node.js
# >= 20 at /usr/bin/node (what the unit runs), and the disk and memory the chosen model needs.
# Sourced by install.sh; callable alone (prints the same report, changes nothing):
#   deploy/preflight.sh [--model DIR] [--prefix DIR] [--skip-node]
# Every reading goes through a variable so test/deploy/install-checks.test.ts can feed a 32-bit
# Raspberry Pi OS, an old Node or a small disk without owning one:
#   PREFLIGHT_NODE (default /usr/bin/node), PREFLIGHT_UNAME_M (uname -m),
#   PREFLIGHT_LONG_BIT (getconf LONG_BIT), PREFLIGHT_DPKG_ARCH (dpkg --print-architecture),
#   PREFLIGHT_MEM_MB (MemTotal), PREFLIGHT_FREE_MB (free MB where PREFIX goes).
NODE_MAJOR_MIN=20

# Measured on the install of the bundled model (x86 and arm64 alike): npm ci peaks at ≈ 550 MB of
# node_modules (onnxruntime-node alone ships ≈ 290 MB of CPU binaries for every platform) plus
# ≈ 200 MB of npm cache, ≈ 360 MB after the prune; the daemon's RSS is ≈ 140 MB serving the
# 0.46 M-parameter bundled model, of which the weights are ≈ 2 MB.
INSTALL_PEAK_MB=800
INSTALLED_MB=360
DATA_MB=100
DAEMON_BASE_RSS_MB=140

preflight_fail() {
  echo "install.sh: $*" >&2
  return 1
}

# A 32-bit userland on a 64-bit kernel (Raspberry Pi OS 32-bit on a Pi 4/5 boots a 64-bit kernel by
# default) reports `uname -m` aarch64, so the userland is asked too: getconf and dpkg are userland.
preflight_arch() {
  local machine long_bit dpkg_arch
  machine="${PREFLIGHT_UNAME_M:-$(uname -m)}"
  long_bit="${PREFLIGHT_LONG_BIT:-$(getconf LONG_BIT 2>/dev/null || echo 64)}"
  dpkg_arch="${PREFLIGHT_DPKG_ARCH:-$(dpkg --print-architecture 2>/dev/null || echo unknown)}"
  case "$machine:$long_bit:$dpkg_arch" in
    *:32:* | armv6l:* | armv7l:* | armv8l:* | *:armhf | *:armel | *:i386)
      preflight_fail "this is a 32-bit userland ($machine, $long_bit-bit, dpkg $dpkg_arch): bitad needs a 64-bit one.
  onnxruntime-node ships no 32-bit ARM (or x86) binary, so the engine cannot load here.
  On a Raspberry Pi 4/5 (or 3, Zero 2 W): flash \"Raspberry Pi OS (64-bit)\" with Raspberry Pi Imager
  (the 32-bit image runs armhf programs even on a 64-bit kernel). On a Jetson: use JetPack's
  Ubuntu (arm64). Then run deploy/install.sh again."
      return ;;
    aarch64:*:* | arm64:*:* | x86_64:*:*) return 0 ;;
    *) preflight_fail "unsupported architecture $machine: bitad runs on arm64 (aarch64) and x86_64 only" ;;
  esac
}

preflight_node_version() {
  local node="${PREFLIGHT_NODE:-/usr/bin/node}"
  [ -x "$node" ] || command -v "$node" >/dev/null 2>&1 || return 0
  "$node" -p process.versions.node 2>/dev/null || true
}

# How to get Node >= 20, per distribution: said in full because the usual board images ship older.
preflight_node_help() {
  cat <<'HELP'
  bitad needs Node.js >= 20 at /usr/bin/node (the systemd unit runs that one; a node from nvm or
  /usr/local is not seen). Raspberry Pi OS and Debian 12 (bookworm) ship 18, Ubuntu 22.04 (JetPack 6)
  ships 12, Ubuntu 20.04 (JetPack 5) 10. Get 20 one of these ways, then run deploy/install.sh again:
    - let the install do it: run it without --skip-node (adds NodeSource's Node 20 apt repository);
    - by hand, NodeSource: curl -fsSL https://deb.nodesource.com/setup_20.x | sudo bash - && sudo apt-get install -y nodejs
    - Debian 13 (trixie) and later: sudo apt-get install nodejs   (20.19)
HELP
}

# Returns 0 when node >= 20 is there, 1 with the help text when an old one is, 2 when there is none
# (install.sh then installs it unless --skip-node).
preflight_node() {
  local version major
  version="$(preflight_node_version)"
  if [ -z "$version" ]; then
    [ "${1:-}" = required ] || return 2
    preflight_fail "no Node.js at ${PREFLIGHT_NODE:-/usr/bin/node}."
    preflight_node_help >&2
    return 1
  fi
  major="${version%%.*}"
  if ! [ "$major" -ge "$NODE_MAJOR_MIN" ] 2>/dev/null; then
    preflight_fail "Node.js $version at ${PREFLIGHT_NODE:-/usr/bin/node} is too old."
    preflight_node_help >&2
    return 1
  fi
  echo "  node $version: ok (>= $NODE_MAJOR_MIN)"
}

# Size of what the engine holds for a model package, in MB: the fp32 weights (int8w is rebuilt to
# fp32 at load, so the fp32 graph's size is what lands in memory; without it, 4x the int8 graph)
# plus the KV cache at full context (2 x layers x positions x kv heads x head dim x 4 bytes).
# Prints "<memory MB> <disk MB>".
preflight_model_mb() {
  local dir="$1" fp32 int8 kv
  fp32=$(stat -c %s "$dir/model.onnx" 2>/dev/null || echo 0)
  if [ "$fp32" -eq 0 ]; then
    int8=$(stat -c %s "$dir/model.int8w.onnx" 2>/dev/null || stat -c %s "$dir/model.int8.onnx" 2>/dev/null || echo 0)
    fp32=$((int8 * 4))
  fi
  kv=$(python3 - "$dir/manifest.json" <<'PY' 2>/dev/null || echo 0
import json, sys
a = json.load(open(sys.argv[1]))["architecture"]
print(2 * a["n_layers"] * a["max_positions"] * a["n_kv_heads"] * a["head_dim"] * 4)
PY
)
  echo "$(( (fp32 + kv + 1048575) / 1048576 )) $(( ($(du -sk "$dir" | cut -f1) + 1023) / 1024 ))"
}

# The nearest existing directory at or above PREFIX: where the code will land.
preflight_existing_parent() {
  local d="$1"
  while [ ! -d "$d" ]; do d="$(dirname "$d")"; done
  echo "$d"
}

preflight_resources() {
  local model="$1" prefix="$2" weights_mb dir_mb need_disk need_ram mem free
  read -r weights_mb dir_mb <<<"$(preflight_model_mb "$model")"
  need_disk=$((INSTALL_PEAK_MB + dir_mb + DATA_MB))
  # ORT keeps the initializers and its pre-packed copy: count the weights twice.
  need_ram=$((DAEMON_BASE_RSS_MB + 2 * weights_mb))
  mem="${PREFLIGHT_MEM_MB:-$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)}"
  free="${PREFLIGHT_FREE_MB:-$(df -Pm "$(preflight_existing_parent "$prefix")" | awk 'NR == 2 { print $4 }')}"
  echo "  model $(basename "$model"): $dir_mb MB on disk, ≈ $weights_mb MB of weights and KV cache in memory"
  echo "  estimate: disk $need_disk MB during the install (≈ $((INSTALLED_MB + dir_mb + DATA_MB)) MB after), memory ≈ $need_ram MB for the daemon"
  echo "  this board: $free MB free for $prefix, $mem MB of memory"
  if [ "$free" -lt "$need_disk" ]; then
    preflight_fail "not enough disk: $free MB free where $prefix goes, the install needs ≈ $need_disk MB.
  Free some space (sudo apt-get clean; journalctl --vacuum-size=50M) or install elsewhere with --prefix."
    return
  fi
  if [ "$mem" -lt "$need_ram" ]; then
    echo "  warning: $mem MB of memory is less than the ≈ $need_ram MB this model needs; expect swapping or the" >&2
    echo "  kernel's OOM killer. Choose a smaller model (model.path) or a board with more memory." >&2
  fi
  return 0
}

# All checks, in the order a board owner should fix them. $1 model dir, $2 prefix, $3 1 = --skip-node.
preflight() {
  local model="$1" prefix="$2" skip_node="${3:-0}" rc=0
  echo "bitad preflight:"
  preflight_arch || return 1
  if [ "$skip_node" -eq 1 ]; then
    preflight_node required || return 1
  else
    preflight_node || rc=$?
    if [ "$rc" -eq 1 ]; then
      echo "  (without --skip-node, install.sh now installs Node $NODE_MAJOR_MIN from NodeSource)" >&2
    elif [ "$rc" -eq 2 ]; then
      echo "  no node at ${PREFLIGHT_NODE:-/usr/bin/node}: install.sh installs Node $NODE_MAJOR_MIN from NodeSource"
    fi
  fi
  preflight_resources "$model" "$prefix"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  here="$(cd "$(dirname "$0")/.." && pwd)"
  model="$here/models/tinystories-bita" prefix=/opt/bitad skip=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --model) model="$2"; shift 2 ;;
      --prefix) prefix="$2"; shift 2 ;;
      --skip-node) skip=1; shift ;;
      *) echo "usage: $0 [--model DIR] [--prefix DIR] [--skip-node]" >&2; exit 2 ;;
    esac
  done
  preflight "$model" "$prefix" "$skip"
fi
