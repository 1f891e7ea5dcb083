#!/bin/sh
# Installs what tests/rtsp_server.py needs: gst-rtsp-server through Python GI, run with the system
# /usr/bin/python3 (Debian bookworm packages). Idempotent: when everything is already installed it
# only runs dpkg-query and exits (well under a second), so CI can call it on every run.
set -eu

sh "$(dirname "$0")/apt-install.sh" install-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-libav python3-gi

# Prove the server can actually be built, not only that packages exist.
/usr/bin/python3 -c "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer" \
    && echo "install-rtsp: gst-rtsp-server importable from /usr/bin/python3"
