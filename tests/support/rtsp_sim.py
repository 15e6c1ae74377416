#!/usr/bin/python3
"""RTSP camera simulator for the integration tests.

Serves one pre-encoded H.264 clip, looped forever, on several mounts::

    /usr/bin/python3 tests/support/rtsp_sim.py --port 8554 --clip clip.h264 \\
        --mounts cam1,cam2,cam3 [--fps 15]

Each mount is available at ``rtsp://127.0.0.1:PORT/<mount>`` (RTP over UDP or
interleaved TCP).  Nothing is decoded or re-encoded: ``multifilesrc loop=true``
reads the Annex-B elementary stream over and over, ``h264parse`` splits it
into access units and interpolates their timestamps from the framerate in the
caps, so timestamps keep increasing across loop boundaries, and the server's
sinks sync on the clock, which paces the stream in real time.  Media factories
are shared: each mount runs a single pipeline however many clients pull it.

Control protocol: one command per line on stdin, one answer line on stdout
(``ok ...`` or ``err ...``):

``drop MOUNT``
    Reset the connections of the mount's current clients and answer new
    requests for it with 404 until restored (a camera going offline).
``restore MOUNT``
    Serve the mount again.
``quit``
    Exit.

Once the server listens, the single line ``ready PORT`` is printed with the
bound port, so ``--port 0`` lets the kernel pick a free one.  The simulator
exits cleanly on ``quit``, on SIGTERM/SIGINT and when stdin is closed.

Runs with Debian's ``/usr/bin/python3`` (python3-gi and
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

ANNEX_B_START_CODES = (b"\x00\x00\x00\x01", b"\x00\x00\x01")


class ClipFactory(GstRtspServer.RTSPMediaFactory):
    """Shared media factory looping an Annex-B H.264 clip without re-encoding."""

    def __init__(self, clip: Path, fps: int) -> None:
        super().__init__()
        self._clip = clip
        self._fps = fps
        self.set_shared(True)

    def do_create_element(self, url):
        # Built element by element rather than from a launch string so that
        # the clip path needs no launch-syntax quoting.
        src = Gst.ElementFactory.make("multifilesrc", "src")
        # multifilesrc treats its location as a printf pattern.
        src.set_property("location", str(self._clip).replace("%", "%%"))
        src.set_property("loop", True)
        # h264parse needs the framerate to timestamp a raw elementary stream.
        src.set_property(
            "caps",
            Gst.Caps.from_string(
                f"video/x-h264,stream-format=byte-stream,framerate={self._fps}/1"
            ),
        )
        parse = Gst.ElementFactory.make("h264parse", "parse")
        # h264parse only interpolates DTS, but the payloader derives RTP
        # timestamps from PTS and the sinks pace on it.
        parse.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, _pts_from_dts)
        pay = Gst.ElementFactory.make("rtph264pay", "pay0")
        pay.set_property("pt", 96)
        # The clip carries SPS/PPS before every keyframe, as cameras do.  Having
        # the payloader insert more would be redundant, and it inserts them
        # before every IDR slice, which makes ffmpeg split multi-slice frames.
        pay.set_property("config-interval", 0)

        bin_ = Gst.Bin.new("clip")
        for element in (src, parse, pay):
            bin_.add(element)
        src.link(parse)
        parse.link(pay)
        return bin_


def _pts_from_dts(pad, info):
    """Pad probe: set PTS = DTS, which holds for clips without B-frames."""
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
            raise SystemExit(f"cannot listen on 127.0.0.1:{self.server.get_service()}")
        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, self._quit)
        stdin = GLib.IOChannel.unix_new(sys.stdin.fileno())
        # Non-blocking so that a partial line cannot stall the main loop.
        stdin.set_flags(GLib.IOFlags.NONBLOCK)
        GLib.io_add_watch(
            stdin, GLib.PRIORITY_DEFAULT, GLib.IOCondition.IN | GLib.IOCondition.HUP,
            self._on_stdin,
        )
        _reply(f"ready {self.server.get_bound_port()}")
        self.loop.run()

    def _quit(self) -> bool:
        self.loop.quit()
        return GLib.SOURCE_REMOVE

    def _on_stdin(self, channel, condition) -> bool:
        # The channel buffers what it reads, so drain every complete line now:
        # buffered lines would not wake the watch up again.
        while True:
            status, line, _, _ = channel.read_line()
            if status == GLib.IOStatus.EOF:
                # Nobody can control us anymore, the parent is gone.
                return self._quit()
            if status != GLib.IOStatus.NORMAL:
                return GLib.SOURCE_CONTINUE
            if not self._execute(line.split()):
                return self._quit()

    def _execute(self, words: list[str]) -> bool:
        """Run one command and answer it; returns False on ``quit``."""
        if not words:
            return True
        match words:
            case ["quit"]:
                _reply("ok quit")
                return False
            case ["drop" | "restore" as command, mount] if mount in self.factories:
                _reply(self._drop(mount) if command == "drop" else self._restore(mount))
            case ["drop" | "restore", mount]:
                _reply(f"err unknown mount: {mount}")
            case _:
                _reply(f"err unknown command: {' '.join(words)}")
        return True

    def _drop(self, mount: str) -> str:
        path = f"/{mount}"
        if mount not in self.dropped:
            # Without a factory, DESCRIBE and SETUP for the path fail with 404.
            self.mount_points.remove_factory(path)
            self.dropped.add(mount)
        clients = [
            client
            for client in self.server.client_filter(None)
            if any(_session_streams(s, path) for s in client.session_filter(None))
        ]
        # With RTP over UDP a session outlives its RTSP connection, and the
        # media would keep sending to the vanished client until it timed out.
        pool = self.server.get_session_pool()
        for session in pool.filter(None):
            if _session_streams(session, path):
                pool.remove(session)
        for client in clients:
            _reset_connection(client)
        return f"ok drop {mount} closed={len(clients)}"

    def _restore(self, mount: str) -> str:
        if mount in self.dropped:
            self.mount_points.add_factory(f"/{mount}", self.factories[mount])
            self.dropped.discard(mount)
        return f"ok restore {mount}"


def _reply(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _session_streams(session, path: str) -> bool:
    """Whether the RTSP ``session`` has set up the media at ``path``."""
    return any(media.matches(path)[0] for media in session.filter(None))


def _reset_connection(client) -> None:
    """Close ``client``'s connection with a TCP reset rather than a FIN.

    On an orderly close ffmpeg reports a plain end of file, as for a finished
    stream; a reset makes it report "Connection reset by peer", an I/O error
    like the ones a failing camera causes.
    """
    fd = client.get_connection().get_read_socket().get_fd()
    # SO_LINGER {on, 0 s} turns the close below into a reset.  Socket options
    # belong to the socket, so setting it through a duplicate is enough.
    with socket.socket(fileno=os.dup(fd)) as dup:
        dup.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port, 0 for a free one")
    parser.add_argument("--clip", type=Path, required=True, help="Annex-B H.264 clip")
    parser.add_argument("--mounts", required=True, help="comma-separated mount names")
    parser.add_argument("--fps", type=int, default=15, help="frame rate of the clip")
    args = parser.parse_args()

    mounts = [m for m in args.mounts.split(",") if m]
    if not mounts:
        parser.error("--mounts: at least one mount is required")
    try:
        with args.clip.open("rb") as clip:
            head = clip.read(4)
    except OSError as exc:
        parser.error(f"--clip: {exc}")
    # Containers such as MP4 would be read as garbage by h264parse.
    if not head.startswith(ANNEX_B_START_CODES):
        parser.error(f"--clip: {args.clip} is not an Annex-B H.264 stream (ffmpeg -f h264)")

    Gst.init(None)
    Simulator(args.port, args.clip.resolve(), mounts, args.fps).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
