#!/usr/bin/env bash
# npm run check:arm64 [-- --json]: bitad on arm64, under qemu user-mode emulation, as a board owner
# would install it. Not part of npm test (≈ 45 min the first time, most of it building the root;
# under 15 min with the cached root). Run as root on a Debian/Ubuntu x86_64 host.
# Two lanes run side by side, install → daemon and golden → tests: they share nothing (install
# writes /opt/bitad, /etc/bitad, /var/lib/bitad; daemon the check user's home; golden and tests
# read /srv/bitad-src), and under qemu each is mostly one busy thread, so both cores work
# (measured 2026-12-03: 1367 s in one lane; the lanes are balanced at ≈ 600 s of solo work each).
#
#   1. golden   12 prompts (test/arm64/golden.json), greedy, plain and tree: arm64 token ids must
#               equal the ones recorded on x86
#   2. daemon   bitad started in the root as an unprivileged user; `bitad ask` over the socket;
#               the request's SQLite row
#   3. install  deploy/install.sh run for real in the root (user, group, directories and modes,
#               root-owned code, unit installed and enabled, config placed), then the installed
#               daemon started from /opt/bitad as the service user, as the unit would, and asked
#   4. tests    the test files in scripts/arm64/tests.txt (no timing assertions, or ones that honour
#               NO_TIMING_ASSERTIONS=1 with a visible skip)
#
# The root (Debian 13 trixie, Node 20.19) lives outside the repository: $BITAD_ARM64_ROOT, default
# /var/cache/bitad-arm64/root. Every mount this script makes is undone on exit, also on Ctrl-C.
# Before each heavy stage it waits while /tmp/bench-quiet exists (someone is benchmarking).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
ROOT="${BITAD_ARM64_ROOT:-/var/cache/bitad-arm64/root}"
CACHE="$(dirname "$ROOT")"
JSON=0
[ "${1:-}" = --json ] && JSON=1
# shellcheck source=scripts/arm64/lib.sh
. "$REPO/scripts/arm64/lib.sh"

trap 'cleanup' EXIT
trap 'echo "check:arm64: interrupted" >&2; exit 130' INT TERM

stage host host_setup
stage root "$REPO/scripts/arm64/build-root.sh" "$ROOT"
mount_root
stage sqlite cross_build_sqlite
stage project install_project
ensure_check_user
(stage install run_install_check; stage daemon run_daemon_check) &
LANE_PID=$!
stage golden run_golden
stage tests run_tests
wait "$LANE_PID" || true
LANE_PID=
stage answers compare_answers
summary
