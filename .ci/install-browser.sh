#!/bin/sh
# Installs what tests/browser.py needs: headless Chromium and its chromedriver (Debian bookworm
# packages), driven over the W3C WebDriver protocol with the standard library only. Idempotent: when
# both are already installed it only runs dpkg-query and exits (well under a second), so CI can call
# it on every run.
set -eu

PKGS="chromium chromium-driver"

missing=""
for p in $PKGS; do
    # "install ok installed" is the only status that means the package is really there.
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-browser: all packages already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "install-browser: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# Package lists may be absent (slim images delete them) or stale: refresh once, then install.
if ! $SUDO apt-get install -y --no-install-recommends $missing; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends $missing
fi

# Prove both run, not only that packages exist.
chromium --version && chromedriver --version
