# Stage functions for scripts/check-arm64.sh (sourced; expects REPO, ROOT, CACHE, JSON).
# Each stage runs in a subshell with errexit on, so a failing command fails its stage; results go
# through files in $WORK because a subshell cannot set the caller's variables.

WORK="$(mktemp -d /tmp/bitad-arm64-check.XXXXXX)"
MOUNTS=()
BINFMT_MOUNTED=0
SUMMARY_DONE=0
T_START=$(date +%s.%N)
CHECK_USER=bitadcheck
IN_ROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# A 64-token greedy answer is enough to show the whole path works; under emulation it takes seconds.
ASK_TOKENS=32

log() { echo "check:arm64: $*" >&2; }

# Someone benchmarking asks heavy work to wait (the 2 cores are shared).
wait_quiet() {
  while [ -e /tmp/bench-quiet ]; do
    log "waiting: /tmp/bench-quiet exists (a benchmark is running)"
    sleep 30
  done
}

# stage NAME CMD...: runs CMD in a subshell with errexit, records its wall time and outcome in
# $WORK/stages (a file, not a variable: stages also run in a background lane).
stage() {
  local name="$1" t0 rc
  shift
  wait_quiet
  log "stage $name ..."
  t0=$(date +%s.%N)
  set +e
  (set -e; "$@")
  rc=$?
  set -e
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
  echo "$name:$secs:$rc" >>"$WORK/stages"
  if [ "$rc" -eq 0 ]; then
    log "stage $name: ok (${secs} s)"
  else
    log "stage $name: FAILED (exit $rc, ${secs} s)"
    # Without a root, node modules or the project copy, later stages cannot mean anything.
    case "$name" in host | root | sqlite | project) exit 1 ;; esac
  fi
}

# The command inside the root with a clean environment: HOME, PATH, the host's CA bundle (HTTPS to
# the npm registry goes through the host's trust store) and node-gyp's headers at /usr.
in_root() {
  chroot "$ROOT" /usr/bin/env -i HOME=/root PATH="$IN_ROOT_PATH" LANG=C.UTF-8 TERM=dumb \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/host-ca-certificates.crt npm_config_nodedir=/usr \
    ${EXTRA_ENV:+$EXTRA_ENV} bash -c "$1"
}

# as_user USER: sets AS_USER to the command prefix that runs a command in the root as USER. chroot,
# setpriv and env each exec the next, so a background "${AS_USER[@]}" node … & has node as its $!
# (a function run in the background would be a subshell with node as its child).
as_user() {
  AS_USER=(chroot "$ROOT" setpriv --reuid="$1" --regid="$1" --init-groups
    /usr/bin/env -i HOME="/home/$1" PATH="$IN_ROOT_PATH" LANG=C.UTF-8)
}

host_setup() {
  local need=() p
  for p in qemu-user-static binfmt-support mmdebstrap arch-test g++-aarch64-linux-gnu rsync; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  [ "$(id -u)" -eq 0 ] || { log "run as root (chroot, mounts)"; return 1; }
}

# binfmt_misc lets the kernel hand arm64 binaries to qemu-aarch64-static ('F': opened at
# registration, so it works inside the chroot without a copy of qemu there).
binfmt_setup() {
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    BINFMT_MOUNTED=1
  fi
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
  grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 || { log "qemu-aarch64 is registered without the F flag"; return 1; }
}

# proc and dev only: with the host's (x86) /sys mounted, onnxruntime's cpuinfo parses it under
# qemu and segfaults on load; without it cpuinfo warns and the CPU provider works. The daemon's
# sensors then find no thermal zones, which it reports as readings the board does not have.
mount_root() {
  binfmt_setup
  local m
  for m in proc dev; do
    mountpoint -q "$ROOT/$m" && continue
    case "$m" in
      proc) mount -t proc proc "$ROOT/proc" ;;
      dev) mount --rbind /dev "$ROOT/dev" && mount --make-rslave "$ROOT/dev" ;;
    esac
    MOUNTS+=("$ROOT/$m")
  done
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/host-ca-certificates.crt"
  [ "$(in_root 'node -p process.arch')" = arm64 ] || { log "node in the root is not arm64"; return 1; }
}

# Every process whose root directory is the arm64 root (daemons, npm, tap and their children, from
# either lane): nothing started in the root may outlive the check or hold its mounts.
pids_in_root() {
  local p real
  real=$(realpath "$ROOT")
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$real" ] && echo "${p#/proc/}"
  done
  return 0
}

cleanup() {
  local rc=$? i sig
  # An early failure or Ctrl-C still gets the report of what ran.
  [ "$SUMMARY_DONE" -eq 1 ] || summary || true
  [ -n "${LANE_PID:-}" ] && kill -TERM "$LANE_PID" 2>/dev/null
  for sig in TERM KILL; do
    # shellcheck disable=SC2046 # one pid per word
    kill -"$sig" $(pids_in_root) 2>/dev/null || true
    sleep 0.5
  done
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount -R "${MOUNTS[i]}" 2>/dev/null || umount -R -l "${MOUNTS[i]}" || log "could not unmount ${MOUNTS[i]}"
  done
  [ "$BINFMT_MOUNTED" -eq 1 ] && umount /proc/sys/fs/binfmt_misc 2>/dev/null
  log "mounts undone; logs in $WORK"
  return "$rc"
}

# better-sqlite3 has no prebuilt binary reachable here, and compiling SQLite under emulation takes
# ≈ 45 min; cross-compiled on the host it takes ≈ 2 min. Packed the way prebuild-install names its
# downloads, it is what a board fetches from better-sqlite3's releases, served from a local folder
# (npm_config_better_sqlite3_local_prebuilds) instead of the network.
cross_build_sqlite() {
  local ver abi name src
  ver=$(node -p "require('$REPO/package-lock.json').packages['node_modules/better-sqlite3'].version")
  abi=$(in_root 'node -p process.versions.modules')
  name="better-sqlite3-v$ver-node-v$abi-linux-arm64.tar.gz"
  mkdir -p "$CACHE/prebuilds"
  echo "$name" >"$WORK/sqlite-prebuild"
  if [ -f "$CACHE/prebuilds/$name" ]; then
    log "better-sqlite3: cached $CACHE/prebuilds/$name"
    return 0
  fi
  src="$CACHE/build/better-sqlite3-$ver"
  rm -rf "$src"
  mkdir -p "$src"
  (cd "$src" && npm pack -q "better-sqlite3@$ver" >/dev/null && tar xzf "better-sqlite3-$ver.tgz" --strip-components=1)
  (cd "$src" && CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ AR=aarch64-linux-gnu-ar LINK=aarch64-linux-gnu-g++ \
    node "$(dirname "$(command -v npm)")/../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js" \
    rebuild --release --arch=arm64 --nodedir="$ROOT/usr" -j 2 >"$WORK/sqlite-build.log" 2>&1) ||
    { tail -20 "$WORK/sqlite-build.log" >&2; return 1; }
  file "$src/build/Release/better_sqlite3.node" | grep -q 'ARM aarch64' || { log "not an arm64 binary"; return 1; }
  tar czf "$CACHE/prebuilds/$name" -C "$src" build/Release/better_sqlite3.node
}

# The checkout copied to /srv/bitad-src in the root (as a board owner's git clone) and `npm ci` run
# there; node_modules is kept while package-lock.json and the better-sqlite3 binary are unchanged.
install_project() {
  local dst="$ROOT/srv/bitad-src" stamp
  mkdir -p "$dst" "$ROOT/srv/prebuilds"
  cp "$CACHE/prebuilds/$(cat "$WORK/sqlite-prebuild")" "$ROOT/srv/prebuilds/"
  rsync -a --delete --exclude .git --exclude node_modules --exclude /var --exclude /dist --exclude .tap \
    --exclude models/_build --exclude models/stories260K-bita --exclude __pycache__ "$REPO"/ "$dst"/
  stamp="$(sha256sum "$REPO/package-lock.json" | cut -c1-16) $(cat "$WORK/sqlite-prebuild")"
  if [ -f "$dst/node_modules/.bitad-arm64-stamp" ] && [ "$(cat "$dst/node_modules/.bitad-arm64-stamp")" = "$stamp" ]; then
    log "node_modules: cached"
  else
    EXTRA_ENV="npm_config_better_sqlite3_local_prebuilds=/srv/prebuilds" \
      in_root 'cd /srv/bitad-src && npm ci --no-audit --no-fund' >"$WORK/npm-ci.log" 2>&1 ||
      { tail -30 "$WORK/npm-ci.log" >&2; return 1; }
    echo "$stamp" >"$dst/node_modules/.bitad-arm64-stamp"
  fi
  in_root "cd /srv/bitad-src && node -e \"new (require('better-sqlite3'))(':memory:'); require('onnxruntime-node'); console.log('native modules load:', process.arch)\"" 2>&1 |
    grep -vE 'Unknown CPU vendor|cpuinfo' >&2
}

run_golden() {
  in_root 'cd /srv/bitad-src && node --import tsx scripts/arm64/golden.ts check --json' 2>"$WORK/golden.err" | tee "$WORK/golden.out" >&2
  tail -n 1 "$WORK/golden.out" >"$WORK/golden.json"
  node -e "process.exit(JSON.parse(require('fs').readFileSync('$WORK/golden.json','utf8')).ok ? 0 : 1)"
}

# wait_socket PATH PID SECONDS: until the daemon's socket exists (model load is slow under qemu).
wait_socket() {
  local sock="$1" pid="$2" left="$3"
  while [ ! -S "$ROOT$sock" ]; do
    kill -0 "$pid" 2>/dev/null || { log "the daemon exited before its socket appeared"; return 1; }
    [ "$left" -gt 0 ] || { log "no socket at $sock after the wait"; return 1; }
    sleep 1
    left=$((left - 1))
  done
}

# runs_as PID USER: the process's uid is USER's in the root (the host has no such name).
runs_as() {
  local uid
  uid=$(in_root "id -u $2")
  [ "$(stat -c %u "/proc/$1")" = "$uid" ] && log "pid $1 runs as $2 (uid $uid)" && return 0
  log "pid $1 runs as uid $(stat -c %u "/proc/$1"), not $2 ($uid)"
  return 1
}

stop_daemon() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
  log "daemon $pid did not stop within 30 s of SIGTERM"
  return 1
}

# The newest request row from a daemon's database, as JSON, read with the root's better-sqlite3.
last_row() {
  local db="$1" modules="$2"
  in_root "node -e \"const D=require('$modules/better-sqlite3');const r=new D('$db',{readonly:true}).prepare('SELECT transport,kind,model,prompt_tokens,output_tokens,ttft_ms,total_ms,tokens_per_s,mean_accepted_tokens,finish_reason,outcome,error_code FROM requests ORDER BY id DESC LIMIT 1').get();console.log(JSON.stringify(r))\""
}

# ask_and_check NAME BITAD_JS SOCKET DB MODULES: one `bitad ask` as the check user, its row checked.
ask_and_check() {
  local name="$1" bitad="$2" sock="$3" db="$4" modules="$5"
  as_user "$CHECK_USER"
  "${AS_USER[@]}" /usr/bin/node "$bitad" ask "Once upon a time" --socket "$sock" --max-tokens "$ASK_TOKENS" \
    >"$WORK/$name-ask.out" 2>&1 || { cat "$WORK/$name-ask.out" >&2; return 1; }
  cat "$WORK/$name-ask.out" >&2
  last_row "$db" "$modules" | tail -n 1 >"$WORK/$name-row.json"
  log "$name row: $(cat "$WORK/$name-row.json")"
  node -e "
    const r = JSON.parse(require('fs').readFileSync('$WORK/$name-row.json', 'utf8'));
    const ok = r.transport === 'socket' && r.outcome === 'ok' && r.output_tokens === $ASK_TOKENS && r.finish_reason === 'length';
    if (!ok) { console.error('unexpected row'); process.exit(1); }"
  grep -q "^Once upon a time" "$WORK/$name-ask.out"
}

ensure_check_user() {
  in_root "id $CHECK_USER >/dev/null 2>&1 || useradd --create-home --shell /bin/bash $CHECK_USER"
}

run_daemon_check() {
  local home="/home/$CHECK_USER" pid
  rm -rf "$ROOT$home/var"
  # MQTT on a free port: the host's network is the root's, and 1883 may be in use out here.
  printf 'data_dir: %s/var\nmqtt:\n  port: 0\n' "$home" >"$ROOT$home/bitad.yaml"
  as_user "$CHECK_USER"
  "${AS_USER[@]}" /usr/bin/node /srv/bitad-src/bin/bitad.js start --config "$home/bitad.yaml" \
    >"$WORK/daemon.log" 2>&1 &
  pid=$!
  # A failing check ends this stage's subshell: the daemon must not outlive it.
  trap "kill -TERM $pid 2>/dev/null || true" EXIT
  wait_socket "$home/var/bitad.sock" "$pid" 300 || { tail -20 "$WORK/daemon.log" >&2; return 1; }
  runs_as "$pid" "$CHECK_USER"
  ask_and_check daemon /srv/bitad-src/bin/bitad.js "$home/var/bitad.sock" "$home/var/bitad.db" /srv/bitad-src/node_modules
  stop_daemon "$pid"
}

# Leaves the root as a board before its first install: each run installs afresh.
uninstall_previous() {
  in_root 'rm -rf /opt/bitad /etc/bitad /var/lib/bitad /run/bitad /usr/local/bin/bitad \
    /etc/systemd/system/bitad.service /etc/systemd/system/multi-user.target.wants/bitad.service
    if id bitad >/dev/null 2>&1; then userdel bitad; fi
    if getent group bitad >/dev/null; then groupdel bitad; fi'
}

run_install_check() {
  uninstall_previous
  # install.sh as a board owner runs it, except that better-sqlite3's binary comes from the local
  # folder rather than its GitHub release (no network beyond the registries here).
  EXTRA_ENV="npm_config_better_sqlite3_local_prebuilds=/srv/prebuilds" \
    in_root "cd /srv/bitad-src && bash deploy/install.sh --socket-user $CHECK_USER" >"$WORK/install.log" 2>&1 ||
    { tail -30 "$WORK/install.log" >&2; return 1; }
  grep -E '^(bitad|  )' "$WORK/install.log" >&2 || true
  bash "$REPO/scripts/arm64/verify-install.sh" "$ROOT" "$CHECK_USER" | tee "$WORK/install-checks.txt" >&2
  ! grep -q '^FAIL' "$WORK/install-checks.txt"
  start_installed_daemon
}

# The installed daemon as its unit starts it: User=, WorkingDirectory=, Environment= and ExecStart=
# read from the installed unit, the directories systemd would create (StateDirectory,
# RuntimeDirectory) made with the unit's modes. Only the MQTT port differs (free, not 1883).
start_installed_daemon() {
  local unit="$ROOT/etc/systemd/system/bitad.service" user wd exec env pid
  user=$(sed -n 's/^User=//p' "$unit")
  wd=$(sed -n 's/^WorkingDirectory=//p' "$unit")
  exec=$(sed -n 's/^ExecStart=//p' "$unit")
  env=$(sed -n 's/^Environment=//p' "$unit" | tr '\n' ' ')
  install -d -m 0750 -o "$(in_root "id -u $user")" -g "$(in_root "id -g $user")" "$ROOT/var/lib/bitad" "$ROOT/run/bitad"
  # shellcheck disable=SC2086 # the unit's Environment= words and ExecStart= words, split as systemd does
  chroot "$ROOT" setpriv --reuid="$user" --regid="$user" --init-groups \
    /usr/bin/env -i PATH="$IN_ROOT_PATH" $env BITAD_MQTT_PORT=0 \
    bash -c "cd $wd && set -a && . /etc/bitad/bitad.env && set +a && exec $exec" >"$WORK/installed-daemon.log" 2>&1 &
  pid=$!
  # A failing check ends this stage's subshell: the daemon must not outlive it.
  trap "kill -TERM $pid 2>/dev/null || true" EXIT
  wait_socket /run/bitad/bitad.sock "$pid" 300 || { tail -20 "$WORK/installed-daemon.log" >&2; return 1; }
  log "installed daemon: $(tr '\0' ' ' <"/proc/$pid/cmdline")"
  runs_as "$pid" "$user"
  ask_and_check installed /usr/local/bin/bitad /run/bitad/bitad.sock /var/lib/bitad/bitad.db /opt/bitad/node_modules
  stop_daemon "$pid"
}

# Same model, greedy: the installed daemon must say exactly what the checkout's daemon said (after
# both lanes, since the two daemons run in different ones).
compare_answers() {
  cmp <(grep -v "^\[" "$WORK/daemon-ask.out") <(grep -v "^\[" "$WORK/installed-ask.out") >&2 ||
    { log "the installed daemon's answer differs from the checkout's"; return 1; }
}

run_tests() {
  local files
  files=$(grep -vE '^\s*(#|$)' "$REPO/scripts/arm64/tests.txt" | tr '\n' ' ')
  in_root "cd /srv/bitad-src && NO_TIMING_ASSERTIONS=1 npx tap --disable-coverage $files" >"$WORK/tests.log" 2>&1 || true
  grep -E '^# \{ total' "$WORK/tests.log" | tail -n 1 | tee "$WORK/tests-summary.txt" >&2
  grep -E 'NO_TIMING_ASSERTIONS' "$WORK/tests.log" | sort -u | head -20 >&2 || true
  grep -E '^not ok' "$WORK/tests.log" >&2 && return 1
  grep -qE 'fail: 0|\{ total: [0-9]+, pass: [0-9]+(, skip: [0-9]+)? \}' "$WORK/tests-summary.txt"
}

# The report; fails when a stage failed (summary.mjs exits 1 unless every stage ran and passed).
summary() {
  SUMMARY_DONE=1
  local wall
  wall=$(awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
  node "$REPO/scripts/arm64/summary.mjs" "$WORK" "$JSON" "$wall"
}
