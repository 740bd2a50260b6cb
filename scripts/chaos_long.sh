#!/usr/bin/env bash
# The long form of the chaos suite (docs/reliability.md's figures come from its output).
# Usage: scripts/chaos_long.sh OUTDIR [pytest args, e.g. tests/chaos/test_kill.py]
# Writes OUTDIR/pytest.log (the tests' printed figures), OUTDIR/loadavg.log (/proc/loadavg
# every 30 s during the run) and OUTDIR/machine.txt (nproc, CPU model, RAM, kernel, Python,
# Mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?OUTDIR}
shift
mkdir -p "$out"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "model: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "ram: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "python: $(.venv/bin/python -V 2>&1)"
  echo "mosquitto: $( (mosquitto -h 2>/dev/null || /usr/sbin/mosquitto -h 2>/dev/null || true) | head -1)"
} >"$out/machine.txt"
(
  while true; do
    echo "$(date -u +%H:%M:%S) $(cat /proc/loadavg)" >>"$out/loadavg.log"
    sleep 30
  done
) &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT
if [ "$#" -eq 0 ]; then set -- tests/chaos; fi
ACCESSGW_CHAOS_LONG=1 .venv/bin/python -m pytest -s -q -p no:cacheprovider --timeout 0 \
  -o log_cli=false "$@" 2>&1 | tee "$out/pytest.log"
echo "ended: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$out/machine.txt"
