#!/usr/bin/env bash
# What deploy/install.sh must have left in a root (a board's / or the arm64 check's chroot):
#   scripts/arm64/verify-install.sh ROOT [SOCKET_USER]
# Prints "ok  <what>" or "FAIL <what>: <found>" per item; exits 1 when any failed.
set -uo pipefail
R="${1:?usage: verify-install.sh ROOT [SOCKET_USER]}"
SOCKET_USER="${2:-}"
fails=0

ok() { echo "ok   $1"; }
fail() { echo "FAIL $1: $2"; fails=$((fails + 1)); }
expect() { # expect WHAT FOUND WANTED
  if [ "$2" = "$3" ]; then ok "$1"; else fail "$1" "found '$2', want '$3'"; fi
}
# Numeric owners, mapped through the root's own files: the host may give the same ids other names.
mode_owner() {
  local m
  m=$(stat -c '%a %u:%g' "$R$1" 2>/dev/null) || { echo missing; return; }
  echo "$m" | awk -v users="$(awk -F: '{ printf "%s=%s ", $3, $1 }' "$R/etc/passwd")" \
    -v groups="$(awk -F: '{ printf "%s=%s ", $3, $1 }' "$R/etc/group")" '
    function name(id, list,   n, i, kv) { n = split(list, kv, " "); for (i = 1; i <= n; i++) if (index(kv[i], id "=") == 1) return substr(kv[i], length(id) + 2); return id }
    { split($2, o, ":"); print $1, name(o[1], users) ":" name(o[2], groups) }'
}
# Names resolved through the root's own passwd/group files (the host's may differ).
passwd_field() { awk -F: -v u="$1" -v f="$2" '$1 == u { print $f }' "$R/etc/passwd"; }

# Service user and group: a system account with no login shell; the socket user in its group.
uid=$(passwd_field bitad 3)
expect "user bitad exists" "${uid:+yes}" yes
[ -n "$uid" ] && { [ "$uid" -lt 1000 ] && ok "bitad is a system user (uid $uid)" || fail "bitad is a system user" "uid $uid"; }
expect "bitad has no login shell" "$(passwd_field bitad 7)" /usr/sbin/nologin
expect "group bitad exists" "$(awk -F: '$1 == "bitad" { print "yes" }' "$R/etc/group")" yes
if [ -n "$SOCKET_USER" ]; then
  members=$(awk -F: '$1 == "bitad" { print $4 }' "$R/etc/group")
  case ",$members," in *",$SOCKET_USER,"*) ok "$SOCKET_USER is in group bitad (may use the socket)" ;; *) fail "$SOCKET_USER in group bitad" "members '$members'" ;; esac
fi

# Code: root-owned, nobody else may write it; the compiled build is there, the dev tools are not.
bad=$(find "$R/opt/bitad" ! -type l \( ! -user 0 -o ! -group 0 -o -perm /022 \) 2>/dev/null | head -3)
[ -d "$R/opt/bitad" ] && [ -z "$bad" ] && ok "/opt/bitad is root-owned and not group/world-writable" ||
  fail "/opt/bitad root-owned, not group/world-writable" "${bad:-missing}"
[ -f "$R/opt/bitad/dist/src/cli/main.js" ] && ok "compiled dist/ built" || fail "compiled dist/ built" missing
[ -e "$R/opt/bitad/node_modules/onnxruntime-node" ] && ok "runtime dependencies installed" || fail "runtime dependencies installed" missing
[ ! -e "$R/opt/bitad/node_modules/typescript" ] && ok "dev dependencies pruned" || fail "dev dependencies pruned" "typescript present"
file -L "$R/opt/bitad/node_modules/better-sqlite3/build/Release/better_sqlite3.node" 2>/dev/null | grep -q 'ARM aarch64' &&
  ok "better-sqlite3 is an arm64 build" || fail "better-sqlite3 is an arm64 build" "$(file -L "$R/opt/bitad/node_modules/better-sqlite3/build/Release/better_sqlite3.node" 2>&1)"
expect "/usr/local/bin/bitad links to the installed CLI" "$(readlink "$R/usr/local/bin/bitad")" /opt/bitad/bin/bitad.js

# Config: private to root and the service group; the model path points into the install.
expect "/etc/bitad" "$(mode_owner /etc/bitad)" "750 root:bitad"
expect "/etc/bitad/bitad.yaml" "$(mode_owner /etc/bitad/bitad.yaml)" "640 root:bitad"
expect "/etc/bitad/bitad.env" "$(mode_owner /etc/bitad/bitad.env)" "640 root:bitad"
model=$(sed -n 's/^  path: //p' "$R/etc/bitad/bitad.yaml" | head -1)
expect "config serves the installed model" "$model" /opt/bitad/models/tinystories-bita
[ -f "$R$model/manifest.json" ] && ok "the model package is installed" || fail "the model package is installed" "no $model/manifest.json"

# The unit: installed as shipped and enabled (the symlink systemctl enable makes, offline too).
cmp -s "$R/etc/systemd/system/bitad.service" "$R/opt/bitad/systemd/bitad.service" &&
  ok "unit installed as shipped" || fail "unit installed as shipped" "differs or missing"
expect "unit enabled (multi-user.target.wants)" "$(readlink "$R/etc/systemd/system/multi-user.target.wants/bitad.service")" /etc/systemd/system/bitad.service
expect "unit runs as" "$(sed -n 's/^User=//p' "$R/etc/systemd/system/bitad.service")" bitad

[ "$fails" -eq 0 ]
