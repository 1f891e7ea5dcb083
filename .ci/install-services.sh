#!/bin/sh
# Installs the real services the delivery tests run against: the Mosquitto MQTT broker (Debian
# package; tests/mqtt_broker.py starts its own instance on a free loopback port, never the system
# service). Idempotent: when it is already installed it only runs dpkg-query and exits, so CI can call
# it on every run. Tests skip with a reason when mosquitto is absent.
set -eu

PKGS="mosquitto mosquitto-clients"

missing=""
for p in $PKGS; do
    # "install ok installed" is the only status that means the package is really there.
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-services: all packages already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "install-services: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# Package lists may be absent (slim images delete them) or stale: refresh once, then install.
if ! $SUDO apt-get install -y --no-install-recommends $missing; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends $missing
fi

# Prove the broker runs, not only that the package exists.
/usr/sbin/mosquitto -h 2>&1 | head -1
