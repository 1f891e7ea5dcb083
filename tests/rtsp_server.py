#!/usr/bin/python3
"""A live H.264 RTSP test stream on loopback, for tests/test_source_rtsp.py.

Run with the *system* interpreter (``/usr/bin/python3``): GStreamer's Python bindings come from
Debian packages (``.ci/install-rtsp.sh``), not pip. Prints ``READY <port>`` on stdout once it serves,
so a test knows when to connect. Killing the process is how tests simulate a camera outage.

    /usr/bin/python3 tests/rtsp_server.py --port 0 --width 320 --height 240 --fps 15
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

ENCODERS = {
    # zerolatency keeps x264 from holding frames back (no B-frames, no lookahead), and a short GOP
    # lets a reconnecting reader find a keyframe quickly.
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
    "! rtph264pay name=pay0 pt=96 config-interval=1",
    "vp8": "vp8enc deadline=1 keyframe-max-dist={fps} ! rtpvp8pay name=pay0 pt=96",
}


def pipeline(width: int, height: int, fps: int, codec: str = "h264") -> str:
    # is-live makes the source run at wall-clock speed like a camera.
    return (
        f"( videotestsrc is-live=true pattern=ball "
        f"! video/x-raw,width={width},height={height},framerate={fps}/1 "
        f"! videoconvert ! {ENCODERS[codec].format(fps=fps)} )"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port (printed on READY)")
    ap.add_argument("--path", default="/test")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--codec", choices=sorted(ENCODERS), default="h264")
    ap.add_argument("--user", default="", help="require HTTP basic auth with this user")
    ap.add_argument("--password", default="")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(pipeline(args.width, args.height, args.fps, args.codec))
    factory.set_shared(True)  # one encoder for all readers, like a camera
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, args.user)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role(args.user, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.add_permission_for_role(args.user, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(perms)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot bind {args.host}:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
