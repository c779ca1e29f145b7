#!/usr/bin/env bash
# Idempotent setup: torch pinned first (an unpinned torch pulls GBs of CUDA wheels), then tasu and its deps.
#   bash launch/setup.sh          runtime
#   bash launch/setup.sh --dev    + test and lint tools
#   bash launch/setup.sh --demo   + what `tasu demo` needs: the demo extras and the real assets (install_assets.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev]"; fi
if [ "${1:-}" = "--demo" ]; then extras="[demo]"; fi
python3 -m pip install -q --disable-pip-version-check "torch==2.13.0"
python3 -m pip install -q --disable-pip-version-check -e ".${extras}"
if [ "${1:-}" = "--dev" ] && ! command -v shellcheck >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  # the launch-script lint test runs only where shellcheck exists; a failed apt step must not block the tests
  { apt-get update -qq && apt-get install -y -qq shellcheck; } >/dev/null 2>&1 || echo "setup: shellcheck not installed" >&2
fi
if [ "${1:-}" = "--demo" ]; then
  bash launch/install_assets.sh
fi
