"""A real RTSP server (GStreamer's gst-rtsp-server) serving pre-encoded H.264 files.

Runs under Debian's ``/usr/bin/python3`` (which has the GObject bindings), so the
project's virtual environment needs none. Usage::

    /usr/bin/python3 rtsp_server.py --mount cam1=/path/a.mp4 --mount cam2=/path/b.mp4

Prints ``READY <port>`` once listening on 127.0.0.1 (port 0 = pick a free one). Each
mount uses a shared media factory, so every client sees one live pipeline, like a
camera. Files are served as they are (no re-encoding: 1-2% CPU per stream). With
``--audio`` every mount also carries a live audio track (G.711 silence) that goes on after
the file's video ends, like a camera whose video died while its audio did not.
"""

import argparse
import contextlib
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mount", action="append", required=True, help="NAME=FILE.mp4")
    parser.add_argument("--user", default="", help="require this user (basic auth)")
    parser.add_argument("--password", default="")
    parser.add_argument("--audio", action="store_true", help="add a live audio track that never ends")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    audio = ("audiotestsrc is-live=true wave=silence ! audio/x-raw,rate=8000,channels=1 ! mulawenc "
             "! rtppcmupay name=pay1 pt=0 " if args.audio else "")
    for spec in args.mount:
        name, _, path = spec.partition("=")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            f'( filesrc location="{path}" ! qtdemux ! h264parse config-interval=-1 '
            f"! rtph264pay name=pay0 pt=96 {audio})"
        )
        factory.set_shared(True)
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
        if args.user:
            factory.add_role_from_structure(
                Gst.Structure.new_from_string(
                    "user, media.factory.access=(boolean)true, "
                    "media.factory.construct=(boolean)true"
                )
            )
        mounts.add_factory(f"/{name}", factory)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
    if server.attach(None) == 0:
        print("ERROR cannot bind", flush=True)
        return 1
    print(f"READY {server.get_bound_port()}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
