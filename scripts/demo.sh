#!/usr/bin/env bash
# Install the gateway and run the demo: the gateway on simulated hardware (readers, relays, central).
source "$(dirname "$0")/_setup.sh" "python3-venv mosquitto" "osdp"
exec .venv/bin/accessgw demo "$@"
