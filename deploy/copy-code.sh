#!/usr/bin/env bash
# Copies a bitad checkout to the install prefix as root-owned, not group/world-writable code: the
# service user must not be able to change what it runs. Sourced by install.sh; callable alone:
#   deploy/copy-code.sh SRC PREFIX
# `rsync -a` as root would keep the checkout's owner (often a login user) on every file.
copy_code() {
  local src="$1" prefix="$2"
  install -d -m 0755 -o root -g root "$prefix"
  rsync -rlt --delete --no-owner --no-group --chmod=Du=rwx,Dgo=rx,Fu=rw,Fgo=r,F+X \
    --exclude .git --exclude node_modules --exclude var --exclude .tap \
    --exclude models/_build --exclude __pycache__ --exclude dist "$src"/ "$prefix"/
  chown -R root:root "$prefix"
}
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  [ $# -eq 2 ] || { echo "usage: $0 SRC PREFIX" >&2; exit 2; }
  copy_code "$1" "$2"
fi
