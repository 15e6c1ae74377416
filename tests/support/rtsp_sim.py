#!/usr/bin/python3
"""RTSP camera simulator for the integration tests.

One module: it is a script run by Debian's ``/usr/bin/python3``, outside the
project's packages, and imports only ``timecode.py`` next to it.

Serves one pre-encoded H.264 clip, looped forever, on several mounts, the
same clip with a live audio track on others, and live time-coded H.264 on
others still::

    /usr/bin/python3 tests/support/rtsp_sim.py --port 8554 --clip clip.h264 \\
        --mounts cam1,cam2,cam3 [--fps 15] [--timecoded tc1,tc2 [--size 320x240]] \\
        [--audio acam:aac,pcma:pcma,pcmu:pcmu]

Each mount is available at ``rtsp://127.0.0.1:PORT/<mount>`` (RTP over UDP or
interleaved TCP).  Media factories are shared: each mount runs a single
pipeline however many clients pull it.

Clip mounts (``--mounts``): nothing is decoded or re-encoded.
``multifilesrc loop=true`` reads the Annex-B elementary stream over and over,
``h264parse`` splits it into access units and interpolates their timestamps
from the framerate in the caps, so timestamps keep increasing across loop
boundaries, and the server's sinks sync on the clock, which paces the stream
in real time.

Audio mounts (``--audio NAME:CODEC,...``): the clip as on a clip mount,
plus a second stream (``pay1``) of a live 440 Hz sine, mono, in CODEC:

``aac``
    16 kHz, ``voaacenc`` at 32 kbit/s, sent as RFC 3640 ``mpeg4-generic``
    (``rtpmp4gpay``), as cameras send AAC.
``pcma`` / ``pcmu``
    G.711 A-law / mu-law at 8 kHz (``alawenc``/``mulawenc``,
    ``rtppcmapay``/``rtppcmupay``, static payload types 8 and 0), which
    MP4 cannot carry: what makes a recorder transcode.

``audiotestsrc is-live=true`` stamps the tone with the pipeline's running
time, so it is paced by the clock as the clip is, and both tracks start
together.  Audio mounts drop and restore like the others; they take no
fault commands.

Time-coded mounts (``--timecoded``, no clip needed): a thread per pipeline
draws ``--fps`` frames a second, each showing its capture wall time as
blocks (``timecode.py``, next to this script, holds the layout and its
decoder), timestamped with the pipeline's running time at capture, and
``x264enc`` encodes them live (zero latency, no B-frames, a keyframe every
second, one slice per frame).  Only these mounts take the fault commands.

Control protocol: one command per line on stdin, one answer line on stdout
(``ok ...`` or ``err ...``):

``drop MOUNT``
    Reset the connections of the mount's current clients and answer new
    requests for it with 404 until restored (a camera going offline).
``restore MOUNT``
    Serve the mount again.
``jump MOUNT SECONDS``
    From now on shift the mount's RTP timestamps by SECONDS (negative: back),
    on top of earlier jumps, while frames keep showing the true wall time and
    keep being sent in real time: a camera whose clock steps.
``pause MOUNT SECONDS [reset]``
    Send no frames for SECONDS, connections kept open and RTCP still flowing,
    then go on with frames of the time it is then (an encoder stalling); the
    timestamps show the gap, or with ``reset`` restart from where the mount's
    stream began (a camera rebooting its clock).
``freeze MOUNT SECONDS``
    Send nothing at all for SECONDS, neither RTP nor RTCP, connections kept
    open and RTSP requests still answered (a camera whose streaming hangs);
    unlike ``drop`` no connection closes.
``quit``
    Exit.

Once the server listens, the single line ``ready PORT`` is printed with the
bound port, so ``--port 0`` lets the kernel pick a free one.  The simulator
exits cleanly on ``quit``, on SIGTERM/SIGINT and when stdin is closed.

Runs with Debian's ``/usr/bin/python3`` (python3-gi and
gir1.2-gst-rtsp-server-1.0; x264enc comes with gstreamer1.0-plugins-ugly,
voaacenc with -bad, the G.711 encoders and all payloaders with -good);
uses nothing outside the stdlib, ``gi`` and ``timecode.py``.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import gi
from timecode import COLS, ROWS, i420_frame  # the script's own directory is on sys.path

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

ANNEX_B_START_CODES = (b"\x00\x00\x00\x01", b"\x00\x00\x01")
DEFAULT_SIZE = (320, 240)
DEFAULT_BITRATE_KBPS = 500
# Added to the timestamps the payloader turns into RTP time, so that a jump
# back soon after the stream starts still gives a valid (unsigned) timestamp.
RTP_TIME_BASE_NS = 24 * 3600 * Gst.SECOND
RTCP_INTERVAL_NS = Gst.SECOND


class ClipFactory(GstRtspServer.RTSPMediaFactory):
    """Shared media factory looping an Annex-B H.264 clip without re-encoding."""

    def __init__(self, clip: Path, fps: int) -> None:
        super().__init__()
        self._clip = clip
        self._fps = fps
        self.set_shared(True)

    def do_create_element(self, url):
        bin_ = Gst.Bin.new("clip")
        self._add_clip(bin_)
        return bin_

    def _add_clip(self, bin_) -> None:
        """Add the clip's chain, ending in the payloader ``pay0``, to ``bin_``."""
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
        _add_chain(bin_, (src, parse, pay))
        # The mount is shared and the looped file seekable: left so, a second
        # client's PLAY would restart it for every client.
        _make_unseekable(pay)


# Audio codec of an --audio mount: (sample rate, encoder, its properties, payloader, payload type).
# AAC goes out as RFC 3640 mpeg4-generic (rtpmp4gpay), what cameras send and
# ffmpeg's RTSP demuxer reads; G.711 with its static payload types (RFC 3551).
AUDIO_CODECS: dict[str, tuple[int, str, dict[str, object], str, int]] = {
    "aac": (16000, "voaacenc", {"bitrate": 32000}, "rtpmp4gpay", 97),
    "pcma": (8000, "alawenc", {}, "rtppcmapay", 8),
    "pcmu": (8000, "mulawenc", {}, "rtppcmupay", 0),
}
AUDIO_TONE_HZ = 440.0
# 20 ms of audio a buffer and so an RTP packet, the usual ptime of cameras.
AUDIO_BUFFER_MS = 20


class AudioClipFactory(ClipFactory):
    """Shared media factory: the looped clip as ``pay0`` plus a live sine tone as ``pay1``."""

    def __init__(self, clip: Path, fps: int, codec: str) -> None:
        super().__init__(clip, fps)
        self._codec = codec

    def do_create_element(self, url):
        bin_ = Gst.Bin.new("audioclip")
        self._add_clip(bin_)
        rate, encoder, props, payloader, pt = AUDIO_CODECS[self._codec]
        src = Gst.ElementFactory.make("audiotestsrc", "asrc")
        # Live, so it is timestamped with the running time and paced like the
        # clip, whose buffers the server's sinks sync on the same clock.
        src.set_property("is-live", True)
        src.set_property("freq", AUDIO_TONE_HZ)
        src.set_property("volume", 0.3)
        src.set_property("samplesperbuffer", rate * AUDIO_BUFFER_MS // 1000)
        caps = Gst.ElementFactory.make("capsfilter", "acaps")
        caps.set_property(
            "caps", Gst.Caps.from_string(f"audio/x-raw,format=S16LE,rate={rate},channels=1")
        )
        enc = Gst.ElementFactory.make(encoder, "aenc")
        for name, value in props.items():
            enc.set_property(name, value)
        pay = Gst.ElementFactory.make(payloader, "pay1")
        pay.set_property("pt", pt)
        _add_chain(bin_, (src, caps, enc, pay))
        # pay0, the clip, was made unseekable by _add_clip; audiotestsrc seeks too.
        _make_unseekable(pay)
        return bin_


def _make_unseekable(pay) -> None:
    """Make the stream of payloader ``pay`` in a shared mount unseekable, as a live camera's is.

    A live camera cannot seek.  Left seekable (a looped clip and audiotestsrc
    both are), the media obeys the "Range: npt=0-" of every PLAY: a client
    joining the shared media restarted it for all its clients, resetting the
    running time, so the RTCP sender reports mapped RTP time to wall time a
    few seconds off from then on, and ffmpeg, which times a multi-stream
    session by those reports, jumped ahead by as much.  Failing the seeking
    query makes the media not seekable, so PLAY leaves it alone.
    """
    pay.get_static_pad("src").add_probe(Gst.PadProbeType.QUERY_UPSTREAM, _refuse_seeking)


def _refuse_seeking(pad, info):
    """Pad probe: fail SEEKING queries, so that the server takes the media for unseekable."""
    if info.get_query().type == Gst.QueryType.SEEKING:
        return Gst.PadProbeReturn.DROP
    return Gst.PadProbeReturn.OK


def _add_chain(bin_, chain: Sequence) -> None:
    """Add the elements of ``chain`` to ``bin_`` and link them in order."""
    for element in chain:
        bin_.add(element)
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        if not upstream.link(downstream):
            raise RuntimeError(f"cannot link {upstream.get_name()} to {downstream.get_name()}")


def _pts_from_dts(pad, info):
    """Pad probe: set PTS = DTS, which holds for clips without B-frames."""
    buffer = info.get_buffer()
    buffer.pts = buffer.dts
    return Gst.PadProbeReturn.OK


class Faults:
    """What a time-coded mount's camera is doing wrong; outlives the mount's successive pipelines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0  # ns added to the RTP time, the sum of the jumps
        self._hold_until = 0.0  # time.monotonic() until which no frame is sent
        self._frozen = False  # the hold also silences RTCP
        self._reset = False  # restart the RTP time with the first frame after the hold

    def jump(self, seconds: float) -> float:
        """Shift the RTP time by ``seconds`` more; returns the total shift in seconds."""
        with self._lock:
            offset = self._offset + round(seconds * Gst.SECOND)
            if offset <= -RTP_TIME_BASE_NS:
                raise ValueError(f"cannot jump back beyond {RTP_TIME_BASE_NS // Gst.SECOND} s")
            self._offset = offset
            return offset / Gst.SECOND

    def hold(self, seconds: float, *, frozen: bool, reset: bool = False) -> None:
        """Send no frames for ``seconds`` from now (and no RTCP if ``frozen``)."""
        with self._lock:
            self._hold_until = time.monotonic() + seconds
            self._frozen = frozen
            self._reset = reset

    def holding(self) -> bool:
        """Whether frames are being held back now."""
        return time.monotonic() < self._hold_until

    def frozen(self) -> bool:
        """Whether everything, RTCP included, is being held back now."""
        return self._frozen and self.holding()

    def rtp_shift(self, pts: int, origin: int) -> int:
        """ns to add to a frame's ``pts`` (pipeline running time) to get its RTP time.

        ``origin`` is the pts of the pipeline's first frame: a reset takes the
        RTP time back to where it was then.
        """
        with self._lock:
            if self._reset and not self.holding():
                self._reset = False
                self._offset = origin - pts
            return RTP_TIME_BASE_NS + self._offset


class Retimer:
    """Pad probes around the payloader shifting the timestamps it turns into RTP time.

    Before the payloader the shift is added, after it taken off again: the RTP
    timestamps carry the camera's (faulty) clock, while the server's sinks and
    RTCP keep the true running time, so the stream stays paced in real time.
    The payloader pushes a frame's packets from within its chain function, so
    the shift applied on the way in is the one to undo on the way out.
    """

    def __init__(self, faults: Faults) -> None:
        self._faults = faults
        self._applied = 0
        self._origin: int | None = None

    def attach(self, pay) -> None:
        """Install the probes on the payloader ``pay``."""
        pay.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self._shift)
        pay.get_static_pad("src").add_probe(
            Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST, self._unshift
        )

    def _shift(self, pad, info):
        buffer = info.get_buffer()
        if buffer.pts != Gst.CLOCK_TIME_NONE:
            if self._origin is None:
                self._origin = buffer.pts
            shifted = max(0, buffer.pts + self._faults.rtp_shift(buffer.pts, self._origin))
            self._applied = shifted - buffer.pts
            _move(buffer, self._applied)
        return Gst.PadProbeReturn.OK

    def _unshift(self, pad, info):
        if info.type & Gst.PadProbeType.BUFFER_LIST:
            buffers = info.get_buffer_list()
            for i in range(buffers.length()):
                _move(buffers.get(i), -self._applied)
        else:
            _move(info.get_buffer(), -self._applied)
        return Gst.PadProbeReturn.OK


def _move(buffer, delta: int) -> None:
    """Shift ``buffer``'s PTS and DTS by ``delta`` ns.

    Only metadata changes, which is why the buffer needs not be writable.
    """
    if buffer.pts != Gst.CLOCK_TIME_NONE:
        buffer.pts += delta
    if buffer.dts != Gst.CLOCK_TIME_NONE:
        buffer.dts += delta


class Camera:
    """The thread drawing a time-coded mount's frames and pushing them into its appsrc."""

    def __init__(self, src, faults: Faults, fps: int, size: tuple[int, int]) -> None:
        self._src = src
        self._faults = faults
        self._fps = fps
        self._size = size
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *_args) -> None:
        """Stop drawing (used as a signal handler, hence the ignored arguments)."""
        self._stopped.set()

    def _run(self) -> None:
        period = 1 / self._fps
        due = time.monotonic()
        while not self._stopped.wait(max(0.0, due - time.monotonic())):
            due += period
            late = time.monotonic() - due
            if late > 0:
                # Fell behind by a whole frame (a busy machine): skip the
                # missed frames, as a camera would, instead of bursting.
                due += math.ceil(late / period) * period
            if not self._faults.holding():
                self._capture()

    def _capture(self) -> None:
        src = self._src
        clock = src.get_clock()
        # Before PLAYING the running time is unknown and frames would queue up stale.
        if clock is None or src.get_state(0)[1] != Gst.State.PLAYING:
            return
        running = clock.get_time() - src.get_base_time()
        wall_ms = time.time_ns() // 1_000_000
        buffer = Gst.Buffer.new_wrapped(i420_frame(wall_ms, *self._size))
        buffer.pts = buffer.dts = running
        buffer.duration = Gst.SECOND // self._fps
        src.emit("push-buffer", buffer)


class TimecodeFactory(GstRtspServer.RTSPMediaFactory):
    """Shared media factory encoding live time-coded frames, with the mount's fault state."""

    def __init__(self, fps: int, size: tuple[int, int], bitrate_kbps: int) -> None:
        super().__init__()
        self._fps = fps
        self._size = size
        self._bitrate = bitrate_kbps
        self.faults = Faults()
        self.set_shared(True)
        self.connect("media-configure", self._on_media_configure)

    def do_create_element(self, url):
        width, height = self._size
        src = Gst.ElementFactory.make("appsrc", "src")
        src.set_property(
            "caps",
            Gst.Caps.from_string(
                f"video/x-raw,format=I420,width={width},height={height},"
                f"framerate={self._fps}/1"
            ),
        )
        src.set_property("format", Gst.Format.TIME)
        src.set_property("is-live", True)
        # Until a client plays the media its pipeline is blocked: keep only the
        # newest frames rather than send a burst of stale ones later.
        src.set_property("max-buffers", 2)
        Gst.util_set_object_arg(src, "leaky-type", "downstream")
        enc = Gst.ElementFactory.make("x264enc", "enc")
        Gst.util_set_object_arg(enc, "tune", "zerolatency")
        Gst.util_set_object_arg(enc, "speed-preset", "ultrafast")
        enc.set_property("bitrate", self._bitrate)
        enc.set_property("key-int-max", self._fps)  # a GOP is one second
        enc.set_property("bframes", 0)
        # One thread gives one slice per frame, like most cameras; without
        # scene cuts keyframes come exactly once a second.
        enc.set_property("threads", 1)
        enc.set_property("option-string", "scenecut=0")
        caps = Gst.ElementFactory.make("capsfilter", "h264caps")
        caps.set_property("caps", Gst.Caps.from_string("video/x-h264,profile=constrained-baseline"))
        parse = Gst.ElementFactory.make("h264parse", "parse")
        # SPS/PPS before every keyframe, as cameras send them.
        parse.set_property("config-interval", -1)
        pay = Gst.ElementFactory.make("rtph264pay", "pay0")
        pay.set_property("pt", 96)
        pay.set_property("config-interval", 0)
        Retimer(self.faults).attach(pay)

        bin_ = Gst.Bin.new("timecode")
        chain = (src, enc, caps, parse, pay)
        for element in chain:
            bin_.add(element)
        for upstream, downstream in zip(chain, chain[1:], strict=False):
            upstream.link(downstream)
        return bin_

    def _on_media_configure(self, factory, media) -> None:
        camera = Camera(media.get_element().get_by_name("src"), self.faults, self._fps, self._size)
        media.connect("prepared", self._on_media_prepared)
        media.connect("unprepared", camera.stop)
        camera.start()

    def _on_media_prepared(self, media) -> None:
        # RTCP once a second rather than every 5 s, so that during a pause
        # something still flows on the connection while a freeze is silent.
        media.get_stream(0).get_rtpsession().set_property("rtcp-min-interval", RTCP_INTERVAL_NS)
        # The media's rtpbin, which sends RTCP, exists only once it is prepared.
        rtpbin = _find_element(media.get_element().get_parent(), "rtpbin")
        if rtpbin is None:
            return
        for pad in _pads(rtpbin):
            if pad.get_name().startswith("send_rtcp_src"):
                pad.add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST, self._drop_rtcp)

    def _drop_rtcp(self, pad, info):
        return Gst.PadProbeReturn.DROP if self.faults.frozen() else Gst.PadProbeReturn.OK


def _find_element(bin_, factory_name: str):
    """The first element of ``bin_`` made by the factory ``factory_name``, or None."""
    iterator = bin_.iterate_elements()
    while True:
        result, element = iterator.next()
        if result != Gst.IteratorResult.OK:
            return None
        if element.get_factory().get_name() == factory_name:
            return element


def _pads(element) -> list:
    """``element``'s pads (Gst.Iterator is not a Python iterable without gst-python)."""
    pads, iterator = [], element.iterate_src_pads()
    while True:
        result, pad = iterator.next()
        if result != Gst.IteratorResult.OK:
            return pads
        pads.append(pad)


class Simulator:
    """RTSP server with one shared media factory per mount and a stdin console."""

    def __init__(
        self,
        port: int,
        clip: Path | None,
        mounts: list[str],
        fps: int,
        timecoded: Sequence[str] = (),
        size: tuple[int, int] = DEFAULT_SIZE,
        bitrate_kbps: int = DEFAULT_BITRATE_KBPS,
        audio: dict[str, str] | None = None,
    ) -> None:
        self.loop = GLib.MainLoop()
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address("127.0.0.1")
        self.server.set_service(str(port))
        self.mount_points = self.server.get_mount_points()
        self.factories = {m: ClipFactory(clip, fps) for m in mounts}
        self.factories.update({m: TimecodeFactory(fps, size, bitrate_kbps) for m in timecoded})
        self.factories.update({m: AudioClipFactory(clip, fps, c) for m, c in (audio or {}).items()})
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
            case ["jump" | "pause" | "freeze" as command, mount, seconds, *rest]:
                _reply(self._fault(command, mount, seconds, rest))
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

    def _fault(self, command: str, mount: str, seconds: str, rest: list[str]) -> str:
        factory = self.factories.get(mount)
        if factory is None:
            return f"err unknown mount: {mount}"
        if not isinstance(factory, TimecodeFactory):
            return f"err not a time-coded mount: {mount}"
        try:
            value = float(seconds)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or (command != "jump" and value < 0):
            return f"err bad seconds: {seconds}"
        if rest not in ([], ["reset"]) or (rest and command != "pause"):
            return f"err unknown arguments: {' '.join(rest)}"
        if command == "jump":
            try:
                total = factory.faults.jump(value)
            except ValueError as exc:
                return f"err {exc}"
            return f"ok jump {mount} offset={total:.3f}"
        factory.faults.hold(value, frozen=command == "freeze", reset=bool(rest))
        return " ".join([f"ok {command} {mount} {value:.3f}", *rest])


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
    parser.add_argument("--clip", type=Path, help="Annex-B H.264 clip (needed for --mounts)")
    parser.add_argument("--mounts", default="", help="comma-separated mount names looping the clip")
    parser.add_argument("--fps", type=int, default=15, help="frame rate of the clip and time codes")
    parser.add_argument("--timecoded", default="", help="comma-separated time-coded mount names")
    parser.add_argument("--size", default="x".join(map(str, DEFAULT_SIZE)), help="time-code frame size")
    parser.add_argument(
        "--bitrate", type=int, default=DEFAULT_BITRATE_KBPS, help="time-code bitrate, kbit/s"
    )
    parser.add_argument(
        "--audio", default="",
        help=f"comma-separated NAME:CODEC clip mounts with audio, CODEC one of {', '.join(AUDIO_CODECS)}",
    )
    args = parser.parse_args()

    mounts = [m for m in args.mounts.split(",") if m]
    timecoded = [m for m in args.timecoded.split(",") if m]
    audio = _parse_audio(parser, args.audio)
    names = mounts + timecoded + list(audio)
    if not names:
        parser.error("--mounts, --timecoded, --audio: at least one mount is required")
    if len(set(names)) != len(names) or len(audio) != len([a for a in args.audio.split(",") if a]):
        parser.error("--mounts, --timecoded, --audio: mount names must be unique")
    if args.fps <= 0:
        parser.error("--fps: must be positive")
    size = _parse_size(parser, args.size)
    clip = None
    if mounts or audio:
        if args.clip is None:
            parser.error("--clip: required with --mounts and --audio")
        try:
            with args.clip.open("rb") as f:
                head = f.read(4)
        except OSError as exc:
            parser.error(f"--clip: {exc}")
        # Containers such as MP4 would be read as garbage by h264parse.
        if not head.startswith(ANNEX_B_START_CODES):
            parser.error(f"--clip: {args.clip} is not an Annex-B H.264 stream (ffmpeg -f h264)")
        clip = args.clip.resolve()

    Gst.init(None)
    for codec in set(audio.values()):
        _, encoder, _, payloader, _ = AUDIO_CODECS[codec]
        missing = [e for e in (encoder, payloader) if Gst.ElementFactory.find(e) is None]
        if missing:
            parser.error(f"--audio: {codec} needs the GStreamer elements {', '.join(missing)}")
    Simulator(args.port, clip, mounts, args.fps, timecoded, size, args.bitrate, audio).run()
    return 0


def _parse_audio(parser: argparse.ArgumentParser, text: str) -> dict[str, str]:
    """NAME:CODEC,... as {mount: codec}."""
    audio = {}
    for item in filter(None, text.split(",")):
        mount, sep, codec = item.partition(":")
        if not mount or not sep or codec not in AUDIO_CODECS:
            parser.error(f"--audio: {item!r} is not NAME:CODEC with CODEC one of {', '.join(AUDIO_CODECS)}")
        audio[mount] = codec
    return audio


def _parse_size(parser: argparse.ArgumentParser, text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT, even and divisible into the time code's cells."""
    try:
        width, height = (int(n) for n in text.lower().split("x"))
    except ValueError:
        parser.error(f"--size: {text!r} is not WIDTHxHEIGHT")
    if width % (2 * COLS) or height % (2 * ROWS) or width <= 0 or height <= 0:
        parser.error(f"--size: width must be a multiple of {2 * COLS}, height of {2 * ROWS}")
    return width, height


if __name__ == "__main__":
    sys.exit(main())
