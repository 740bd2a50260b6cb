#!/usr/bin/env bash
# Regenerate requirements.lock: every package the appliance installs (the gateway's
# dependencies with the osdp and gpio extras), pinned, with the hashes of every file
# PyPI has for that version, for any platform (x86_64, aarch64) on Python 3.11+.
# Run it after changing dependencies in pyproject.toml; CI fails while the lock is stale
# (scripts/check_lock.py). Needs PyPI; uses uv, installed into .venv on first use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install -q --index-url https://pypi.org/simple "uv>=0.5,<1"
fi
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
.venv/bin/uv pip compile pyproject.toml --extra osdp --extra gpio \
  --universal --python-version 3.11 --generate-hashes --no-header --quiet \
  --index-url https://pypi.org/simple --no-config -o "$tmp"
{
  echo "# requirements.lock: the appliance's dependencies, pinned with hashes."
  echo "# Regenerate with scripts/lock.sh; install with"
  echo "#   pip install --require-hashes --no-deps -r requirements.lock"
  .venv/bin/python scripts/check_lock.py --digest-line
  cat "$tmp"
} > requirements.lock
.venv/bin/python scripts/check_lock.py
