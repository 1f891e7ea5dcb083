#!/bin/sh
# Installs the real services the delivery tests run against: the Mosquitto MQTT broker (Debian
# package; tests/mqtt_broker.py starts its own instance on a free loopback port, never the system
# service). Idempotent: when it is already installed it only runs dpkg-query and exits, so CI can call
# it on every run. Tests skip with a reason when mosquitto is absent.
set -eu

sh "$(dirname "$0")/apt-install.sh" install-services mosquitto mosquitto-clients

# Prove the broker runs, not only that the package exists.
/usr/sbin/mosquitto -h 2>&1 | head -1
