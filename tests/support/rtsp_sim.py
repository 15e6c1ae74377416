#!/usr/bin/python3
"""RTSP camera simulator for the integration tests.

Serves one pre-encoded H.264 clip, looped forever, on several mounts::

    /usr/bin/python3 tests/support/rtsp_sim.py --port 8554 --clip clip.h264 \
        --mounts cam1,cam2,cam3 [--fps 15]

Each mount is available at ``rtsp://127.0.0.1:PORT/<mount>`` (RTP over UDP or
interleaved TCP).  Nothing is re-encoded: the Annex-B elementary stream is
read by ``multifilesrc loop=true`` and split into access units by
``h264parse``, which interpolates timestamps from the framerate in the caps,
so they keep increasing across loop boundaries.  The RTSP server's sinks sync
on the pipeline clock, which paces the stream in real time.  Media factories
are shared, so each mount runs one pipeline however many clients pull it.

Control protocol: one command per line on stdin, one answer line on stdout
(``ok ...`` or ``err ...``):

``drop MOUNT``
    Disconnect the mount's current clients and answer new requests for it
    with 404 until restored (a camera falling off the network).
``restore MOUNT``
    Serve the mount again.
``quit``
    Exit.

Once the server listens, the single line ``ready PORT`` is printed (with the
bound port, so ``--port 0`` picks a free one).  The simulator exits cleanly on
``quit``, on SIGTERM/SIGINT and when stdin is closed.

Runs with Debian's ``/usr/bin/python3`` (needs PyGObject and
gir1.2-gst-rtsp-server-1.0); uses nothing outside the stdlib and ``gi``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


class ClipFactory(GstRtspServer.RTSPMediaFactory):
    """Media factory that loops an Annex-B H.264 clip without re-encoding."""

    def __init__(self, clip: Path, fps: int) -> None:
        super().__init__()
        self._clip = clip
        self._fps = fps
        # One pipeline per mount, whatever the number of clients.
        self.set_shared(True)

    def do_create_element(self, url):
        # Built programmatically rather than from a launch string so that the
        # clip path needs no launch-syntax quoting.
        src = Gst.ElementFactory.make("multifilesrc", "src")
        # multifilesrc treats its location as a printf pattern.
        src.set_property("location", str(self._clip).replace("%", "%%"))
        src.set_property("loop", True)
        # Without a framerate h264parse cannot interpolate timestamps.
        src.set_property(
            "caps",
            Gst.Caps.from_string(
                f"video/x-h264,stream-format=byte-stream,framerate={self._fps}/1"
            ),
        )
        parse = Gst.ElementFactory.make("h264parse", "parse")
        pay = Gst.ElementFactory.make("rtph264pay", "pay0")
        pay.set_property("pt", 96)
        # Send SPS/PPS with every keyframe so late joiners can decode at once.
        pay.set_property("config-interval", 0)

        # h264parse only interpolates DTS; the payloader and the server's sinks
        # need PTS (RTP timestamps, real-time pacing).  The clip has no
        # B-frames, so presentation order is decode order and PTS == DTS.
        parse.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, _pts_from_dts)

        bin_ = Gst.Bin.new("clip")
        for element in (src, parse, pay):
            bin_.add(element)
        src.link(parse)
        parse.link(pay)
        return bin_


def _pts_from_dts(pad, info):
    buffer = info.get_buffer()
    buffer.pts = buffer.dts
    return Gst.PadProbeReturn.OK


class Simulator:
    """RTSP server with one shared clip factory per mount and a stdin console."""

    def __init__(self, port: int, clip: Path, mounts: list[str], fps: int) -> None:
        self.loop = GLib.MainLoop()
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address("127.0.0.1")
        self.server.set_service(str(port))
        self.mount_points = self.server.get_mount_points()
        self.factories = {m: ClipFactory(clip, fps) for m in mounts}
        self.dropped: set[str] = set()
        for mount, factory in self.factories.items():
            self.mount_points.add_factory(f"/{mount}", factory)

    def run(self) -> None:
        """Listen, announce readiness and serve until told to stop."""
        if self.server.attach(None) == 0:
            raise RuntimeError(f"cannot listen on 127.0.0.1:{self.server.get_service()}")
        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, self._quit)
        stdin = GLib.IOChannel.unix_new(sys.stdin.fileno())
        GLib.io_add_watch(
            stdin, GLib.PRIORITY_DEFAULT, GLib.IOCondition.IN | GLib.IOCondition.HUP,
            self._on_stdin,
        )
        self._reply(f"ready {self.server.get_bound_port()}")
        self.loop.run()

    def _quit(self) -> bool:
        self.loop.quit()
        return GLib.SOURCE_REMOVE

    def _reply(self, line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def _on_stdin(self, channel, condition) -> bool:
        # A plain os-level readline: stdin is line-buffered by the parent and
        # each command fits in one line, so this never blocks for long.
        line = sys.stdin.readline()
        if not line:  # EOF: the parent is gone, nobody can control us anymore.
            return self._quit()
        words = line.split()
        if not words:
            return GLib.SOURCE_CONTINUE
        command, args = words[0], words[1:]
        handler = {"drop": self._drop, "restore": self._restore}.get(command)
        if command == "quit" and not args:
            self._reply("ok quit")
            return self._quit()
        if handler is None or len(args) != 1:
            self._reply(f"err unknown command: {line.strip()}")
        elif args[0] not in self.factories:
            self._reply(f"err unknown mount: {args[0]}")
        else:
            self._reply(handler(args[0]))
        return GLib.SOURCE_CONTINUE

    def _drop(self, mount: str) -> str:
        if mount not in self.dropped:
            # Unmounting makes DESCRIBE/SETUP of new clients fail with 404.
            self.mount_points.remove_factory(f"/{mount}")
            self.dropped.add(mount)
        closed = 0
        for client in self.server.client_filter(None):
            if self._client_uses(client, f"/{mount}"):
                _reset_connection(client)
                closed += 1
        return f"ok drop {mount} closed={closed}"

    def _restore(self, mount: str) -> str:
        if mount in self.dropped:
            self.mount_points.add_factory(f"/{mount}", self.factories[mount])
            self.dropped.discard(mount)
        return f"ok restore {mount}"

    @staticmethod
    def _client_uses(client, path: str) -> bool:
        """Whether any RTSP session of ``client`` streams the media at ``path``."""
        for session in client.session_filter(None):
            for session_media in session.filter(None):
                matches, _ = session_media.matches(path)
                if matches:
                    return True
        return False


def _reset_connection(client) -> None:
    """Close ``client``'s connection with a TCP reset instead of a FIN.

    On an orderly close ffmpeg just sees end-of-stream and exits 0, like a
    finished file; a reset makes it fail with an I/O error, as when a real
    camera drops off the network and reboots.
    """
    sock = client.get_connection().get_read_socket()
    # SO_LINGER {on, 0 s} turns the close below into an RST.  The option lives
    # on the socket, so setting it through a duplicate descriptor is enough.
    with socket.socket(fileno=os.dup(sock.get_fd())) as dup:
        dup.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port, 0 for any free one")
    parser.add_argument("--clip", type=Path, required=True, help="Annex-B H.264 clip (.h264)")
    parser.add_argument("--mounts", required=True, help="comma-separated mount names")
    parser.add_argument("--fps", type=int, default=15, help="frame rate of the clip")
    args = parser.parse_args()

    mounts = [m for m in args.mounts.split(",") if m]
    if not mounts:
        parser.error("--mounts: at least one mount is required")
    if not args.clip.is_file():
        parser.error(f"--clip: no such file: {args.clip}")

    Gst.init(None)
    Simulator(args.port, args.clip.resolve(), mounts, args.fps).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
