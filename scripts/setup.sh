#!/usr/bin/env bash
# Installs what the tests and the model toolchain need on a fresh Debian 12 machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
# chromium: headless browser for the dashboard test (test/dashboard/browser.test.ts, playwright-core).
for p in python3-torch python3-onnx python3-numpy python3-sentencepiece mosquitto rsync chromium; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# onnxruntime-node's postinstall downloads CUDA binaries, which fails offline; CPU ships inside.
export ONNXRUNTIME_NODE_INSTALL=skip
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
