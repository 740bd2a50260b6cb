#!/usr/bin/env bash
# Install what the tests need (Debian packages, a virtualenv) and run lint + the whole test suite.
source "$(dirname "$0")/_setup.sh" \
  "python3-venv mosquitto mosquitto-clients libnfc-bin libnfc6 libfreefare-dev socat systemd chromium" \
  "dev,osdp,libnfc,gpio"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
