#!/bin/sh
# Usage: apt-install.sh NAME PKG...  Installs the Debian packages that are missing. Idempotent: when
# all are installed it only runs dpkg-query (well under a second), so CI can call it on every run.
set -eu
name=$1
shift

missing=""
for p in "$@"; do
    # "install ok installed" is the only status that means the package is really there.
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "$name: all packages already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "$name: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# Package lists may be absent (slim images delete them) or stale: refresh once, then install.
if ! $SUDO apt-get install -y --no-install-recommends $missing; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends $missing
fi
