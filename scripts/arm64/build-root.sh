#!/usr/bin/env bash
# Builds (or reuses) the cached Debian 13 (trixie) arm64 root that scripts/check-arm64.sh runs
# bitad in under qemu user-mode emulation. Outside the repository: the root is ~1 GB and takes
# ≈15 min to build (most of it dpkg running under emulation).
#   scripts/arm64/build-root.sh [ROOT]      (default $BITAD_ARM64_ROOT or /var/cache/bitad-arm64/root)
# Trixie, not bookworm: bookworm's arm64 nodejs is 18 and bitad needs >= 20 (trixie ships 20.19).
# The host's apt sources list bookworm only, but its keyring holds trixie's keys, so mmdebstrap can
# fetch trixie from the same Debian mirror.
set -euo pipefail
ROOT="${1:-${BITAD_ARM64_ROOT:-/var/cache/bitad-arm64/root}}"
MIRROR="${BITAD_ARM64_MIRROR:-http://deb.debian.org/debian}"
# What the check needs in the root: node/npm (the runtime), g++/make/python3 (node-gyp, in case a
# native module must build there), systemd (so install.sh's `systemctl enable` really enables the
# unit, offline), rsync/curl/gnupg/build-essential (what install.sh installs itself, preinstalled
# so its apt step is a quick no-op rather than minutes of emulated dpkg).
PACKAGES="nodejs,npm,g++,make,python3,ca-certificates,systemd,rsync,curl,gnupg,build-essential,procps"
STAMP="$ROOT/.bitad-arm64-root"
want="trixie arm64 $PACKAGES"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "arm64 root: cached at $ROOT"
  exit 0
fi
for tool in mmdebstrap arch-test qemu-aarch64-static; do
  command -v "$tool" >/dev/null || { echo "build-root: $tool missing: apt-get install mmdebstrap arch-test qemu-user-static binfmt-support" >&2; exit 1; }
done
# Build next to the final place and move it in, so an interrupted build never looks cached.
parent="$(dirname "$ROOT")"
mkdir -p "$parent"
tmp="$parent/.building-$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$ROOT"
mmdebstrap --arch=arm64 --variant=apt --include="$PACKAGES" trixie "$tmp" "$MIRROR"
echo "$want" >"$tmp/.bitad-arm64-root"
mv "$tmp" "$ROOT"
trap - EXIT
echo "arm64 root: built at $ROOT"
