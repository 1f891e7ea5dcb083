#!/bin/sh
# Installs what tests/browser.py needs: headless Chromium and its chromedriver (Debian bookworm
# packages), driven over the W3C WebDriver protocol with the standard library only. Idempotent: when
# both are already installed it only runs dpkg-query and exits (well under a second), so CI can call
# it on every run.
set -eu

sh "$(dirname "$0")/apt-install.sh" install-browser chromium chromium-driver

# Prove both run, not only that packages exist.
chromium --version && chromedriver --version
