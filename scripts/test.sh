#!/usr/bin/env bash
# Set up a virtualenv and run the whole suite: lint, format, types, unit + integration tests.
# The README's second command; .ci/run calls exactly this. Installs through requirements.lock,
# so this runs with exactly the versions CI tested (refresh: python3 scripts/lock.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q -c requirements.lock pip
# llama-cpp-python compiles from source the first time (~15 min on 2 cores); pip caches the wheel.
.venv/bin/python -m pip install -q -c requirements.lock -e '.[all,test]'
# The chat page's browser tests drive Debian's Chromium (never a downloaded browser build).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "scripts/test.sh: the browser tests need Chromium: sudo apt-get install chromium" >&2
    exit 1
  fi
fi
# The shared rate-limit tests start Debian's redis-server (tests/integration/test_redis_limits.py).
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "scripts/test.sh: the rate-limit tests need Redis: sudo apt-get install redis-server" >&2
    exit 1
  fi
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
