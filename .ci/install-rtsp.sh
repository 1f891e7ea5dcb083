#!/bin/sh
# Installs what tests/rtsp_server.py needs: gst-rtsp-server through Python GI, run with the system
# /usr/bin/python3 (Debian bookworm packages). Idempotent: when everything is already installed it
# only runs dpkg-query and exits (well under a second), so CI can call it on every run.
set -eu

PKGS="gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base \
gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-libav python3-gi"

missing=""
for p in $PKGS; do
    # "install ok installed" is the only status that means the package is really there.
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-rtsp: all packages already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "install-rtsp: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# Package lists may be absent (slim images delete them) or stale: refresh once, then install.
if ! $SUDO apt-get install -y --no-install-recommends $missing; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends $missing
fi

# Prove the server can actually be built, not only that packages exist.
/usr/bin/python3 -c "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer" \
    && echo "install-rtsp: gst-rtsp-server importable from /usr/bin/python3"
