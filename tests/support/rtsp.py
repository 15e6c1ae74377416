"""Test-side helpers for the RTSP camera simulator (``rtsp_sim.py``).

The simulator needs GStreamer's Python bindings, which exist only for Debian's
``/usr/bin/python3``, so it runs as a child process driven over stdin/stdout.
This module is stdlib-only and importable from the venv.  Frames of the
time-coded mounts are read back with ``tests.support.timecode``.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType

SYSTEM_PYTHON = "/usr/bin/python3"
# Debian's ffprobe, when installed: a build independent of the ffmpeg wheel the recorder runs.
SYSTEM_FFPROBE = "/usr/bin/ffprobe"
SYSTEM_FFMPEG = "/usr/bin/ffmpeg"


def independent_ffmpeg() -> str:
    """Debian's ffmpeg (scripts/test installs it), to check footage with a decoder nvr does not record with.

    Falls back to the wheel's build where Debian's is absent (a developer's machine without it).
    """
    return SYSTEM_FFMPEG if os.access(SYSTEM_FFMPEG, os.X_OK) else ffmpeg_exe()
SIM_SCRIPT = Path(__file__).with_name("rtsp_sim.py")
DEFAULT_MOUNTS = ("cam1", "cam2", "cam3")
# Codecs of the simulator's audio mounts (rtsp_sim.AUDIO_CODECS), with the
# GStreamer elements each needs and the name ffmpeg gives the codec.
AUDIO_CODECS = {
    "aac": (("audiotestsrc", "voaacenc", "rtpmp4gpay"), "aac"),
    "pcma": (("audiotestsrc", "alawenc", "rtppcmapay"), "pcm_alaw"),
    "pcmu": (("audiotestsrc", "mulawenc", "rtppcmupay"), "pcm_mulaw"),
}
TIMECODE_SIZE = (320, 240)

START_TIMEOUT = 20.0
COMMAND_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
STDERR_TAIL_LINES = 40


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped with the imageio-ffmpeg wheel."""
    # Imported here so that importing this module needs nothing but the stdlib.
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def probe_streams(source: str | Path, *, seconds: float = 1.0, timeout: float = 30) -> list[dict]:
    """The streams of a media file or RTSP URL (over TCP), each ``{"codec_type", "codec_name", ...}``.

    Read by Debian's ffprobe (``-show_streams``) when it is installed, else
    by the ffmpeg wheel, copying ``seconds`` of packets (a whole file is
    read to its end) into ``framecrc``, whose header names every stream's
    codec.  Either way a stream may also have ``sample_rate`` (int) and
    ``duration`` (float seconds; from the packets with ffmpeg).
    """
    source = str(source)
    net = ["-rtsp_transport", "tcp"] if source.startswith("rtsp") else []
    if os.access(SYSTEM_FFPROBE, os.X_OK):
        result = subprocess.run(
            [SYSTEM_FFPROBE, "-v", "error", *net, "-show_streams", "-of", "json", source],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"ffprobe {source} failed: {result.stderr}")
        streams = json.loads(result.stdout)["streams"]
        for stream in streams:
            for key, kind in (("sample_rate", int), ("duration", float)):
                if key in stream:
                    stream[key] = kind(stream[key])
        return streams
    limit = ["-t", f"{seconds:g}"] if net else []
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", *net, "-i", source, *limit,
         "-map", "0", "-c", "copy", "-f", "framecrc", "-"],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg reading {source} failed: {result.stderr}")
    return _framecrc_streams(result.stdout)


def _framecrc_streams(text: str) -> list[dict]:
    """ffprobe-like stream dicts from ffmpeg's ``framecrc`` output (a header, then a line per packet)."""
    header: dict[int, dict[str, str]] = {}
    spans: dict[int, list[int]] = {}  # stream -> [first pts, end of the last packet]
    for line in text.splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            name, _, index = key.rpartition(" ")
            if index.isdigit():
                header.setdefault(int(index), {})[name] = value.strip()
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4 or not fields[0].isdigit():
            continue
        stream, pts, duration = int(fields[0]), int(fields[2]), int(fields[3])
        span = spans.setdefault(stream, [pts, pts + duration])
        span[0], span[1] = min(span[0], pts), max(span[1], pts + duration)
    streams = []
    for index, fields in sorted(header.items()):
        if "media_type" not in fields:
            continue  # "#extradata N" alone
        stream = {"index": index, "codec_type": fields["media_type"], "codec_name": fields.get("codec_id")}
        if "sample_rate" in fields:
            stream["sample_rate"] = int(fields["sample_rate"])
        if index in spans and "tb" in fields:
            first, end = spans[index]
            stream["duration"] = float((end - first) * Fraction(fields["tb"]))
        streams.append(stream)
    return streams


def make_clip(
    path: Path,
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 15,
    seconds: int = 4,
    gop: int | None = None,
    bitrate: str = "800k",
) -> Path:
    """Encode a test clip the simulator can loop, unless ``path`` already exists.

    The clip is an Annex-B H.264 elementary stream of lavfi ``testsrc2`` (which
    shows a running frame counter and needs no fonts), with a keyframe every
    ``gop`` frames (default: one per second), no B-frames (the simulator sets
    PTS = DTS) and SPS/PPS repeated before every keyframe so clients can start
    decoding at any keyframe.  ``fps`` must match the simulator's ``--fps``.
    """
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Encode next to the target and rename, so an interrupted run never
    # leaves a truncated clip behind for the cache to pick up.
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}",
        "-t", str(seconds),
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
        "-profile:v", "baseline", "-pix_fmt", "yuv420p",
        "-g", str(gop or fps), "-bf", "0", "-b:v", bitrate,
        # One thread gives one slice per frame, like most cameras, and the same
        # bitstream whatever the machine's core count.
        "-threads", "1",
        "-x264-params", "repeat-headers=1",
        "-f", "h264", str(partial),
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
        partial.replace(path)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"ffmpeg failed to encode {path}:\n{exc.stderr}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return path


def gst_available(*, timecoded: bool = False, audio: Sequence[str] = ()) -> str | None:
    """None if the simulator can run here (with time-coded mounts and ``audio`` codecs if asked), else why not."""
    elements = ["multifilesrc", "h264parse", "rtph264pay"]
    if timecoded:
        elements += ["appsrc", "x264enc"]
    for codec in audio:
        elements += [e for e in AUDIO_CODECS[codec][0] if e not in elements]
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found"
    probe = (
        "import gi\n"
        "gi.require_version('Gst', '1.0')\n"
        "gi.require_version('GstRtspServer', '1.0')\n"
        "from gi.repository import Gst, GstRtspServer\n"
        "Gst.init(None)\n"
        f"missing = [e for e in {elements!r} if Gst.ElementFactory.find(e) is None]\n"
        "assert not missing, 'missing GStreamer elements: ' + ', '.join(missing)\n"
    )
    try:
        result = subprocess.run(
            [SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {SYSTEM_PYTHON}: {exc}"
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        return (
            "GStreamer RTSP server unavailable for /usr/bin/python3 (install python3-gi, "
            f"gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good/bad/ugly): {lines[-1]}"
        )
    return None


class RtspSimulatorError(RuntimeError):
    """The simulator failed to start or to carry out a command."""


class RtspSimulator:
    """Runs ``rtsp_sim.py`` and drives it over its stdin/stdout protocol.

    Usage::

        with RtspSimulator().start(clip=make_clip(tmp / "clip.h264")) as sim:
            url = sim.url("cam1")
            sim.drop("cam1")
            sim.restore("cam1")

        with RtspSimulator().start(mounts=(), timecoded=("tc1",)) as sim:
            sim.jump("tc1", -3)              # RTP time steps back 3 s
            sim.pause("tc1", 2, reset=True)  # 2 s without frames, then RTP time from 0
            sim.freeze("tc1", 5)             # 5 s without RTP or RTCP

        with RtspSimulator().start(mounts=(), clip=clip, audio={"door": "pcma"}) as sim:
            url = sim.url("door")            # the clip plus a G.711 A-law tone
    """

    def __init__(self) -> None:
        self.port: int | None = None
        self.mounts: tuple[str, ...] = ()
        self.timecoded: tuple[str, ...] = ()
        self.audio: dict[str, str] = {}  # audio mount -> codec
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._readers: list[threading.Thread] = []

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(
        self,
        port: int | None = None,
        mounts: Sequence[str] = DEFAULT_MOUNTS,
        clip: Path | None = None,
        fps: int = 15,
        timecoded: Sequence[str] = (),
        size: tuple[int, int] = TIMECODE_SIZE,
        audio: Mapping[str, str] = {},
    ) -> RtspSimulator:
        """Launch the simulator and wait until it listens.

        ``port=None`` lets the simulator bind an ephemeral loopback port
        itself (no window in which another process could take it); the port
        it reports is then in ``self.port``.  ``clip`` must be an Annex-B
        H.264 stream encoded at ``fps`` (see ``make_clip``); it is needed
        only when ``mounts`` is not empty.  ``timecoded`` names further
        mounts serving live time-coded frames of ``size`` at ``fps``, the
        only ones that take ``jump``, ``pause`` and ``freeze``.  ``audio``
        maps further mounts to an audio codec (``aac``, ``pcma`` or
        ``pcmu``, see ``AUDIO_CODECS``): they loop the clip too, with a live
        tone in that codec as a second stream.  ``self.mounts`` lists all
        mounts: clip, time-coded, then audio mounts.
        """
        if self._proc is not None:
            raise RtspSimulatorError("simulator already started")
        if clip is None and (mounts or audio):
            raise ValueError("clip is required for clip and audio mounts (see make_clip)")
        unknown = sorted(set(audio.values()) - set(AUDIO_CODECS))
        if unknown:
            raise ValueError(f"unknown audio codecs {unknown}, known: {list(AUDIO_CODECS)}")
        self.mounts = (*mounts, *timecoded, *audio)
        self.timecoded = tuple(timecoded)
        self.audio = dict(audio)
        self._lines = queue.Queue()
        self._stderr_tail.clear()
        args = [
            SYSTEM_PYTHON, str(SIM_SCRIPT), "--port", str(port or 0), "--fps", str(fps),
        ]  # fmt: skip
        if mounts or audio:
            args += ["--clip", str(clip)]
        if mounts:
            args += ["--mounts", ",".join(mounts)]
        if timecoded:
            args += ["--timecoded", ",".join(timecoded), "--size", "{}x{}".format(*size)]
        if audio:
            args += ["--audio", ",".join(f"{m}:{c}" for m, c in audio.items())]
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        # Reader threads keep both pipes drained (a full stderr pipe would
        # block the simulator) and let answers be awaited with a deadline.
        self._readers = [
            threading.Thread(target=self._pump_stdout, args=(self._proc,), daemon=True),
            threading.Thread(target=self._pump_stderr, args=(self._proc,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            line = self._next_line(START_TIMEOUT, "start")
            words = line.split()
            if len(words) != 2 or words[0] != "ready" or not words[1].isdigit():
                raise self._error(f"unexpected first line from simulator: {line!r}")
            self.port = int(words[1])
        except BaseException:
            self.stop()
            raise
        return self

    def url(self, mount: str) -> str:
        """RTSP URL of ``mount``."""
        if self.port is None:
            raise RtspSimulatorError("simulator not started")
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    def drop(self, mount: str) -> str:
        """Disconnect ``mount``'s clients and refuse new ones until restored."""
        return self._command(f"drop {mount}")

    def restore(self, mount: str) -> str:
        """Serve ``mount`` again after ``drop``."""
        return self._command(f"restore {mount}")

    def jump(self, mount: str, seconds: float) -> str:
        """Shift time-coded ``mount``'s RTP timestamps by ``seconds`` more (a camera clock step)."""
        return self._command(f"jump {mount} {seconds!r}")

    def pause(self, mount: str, seconds: float, *, reset: bool = False) -> str:
        """Send no frames of ``mount`` for ``seconds`` (RTP time restarting after it if ``reset``)."""
        return self._command(f"pause {mount} {seconds!r}" + (" reset" if reset else ""))

    def freeze(self, mount: str, seconds: float) -> str:
        """Send nothing of ``mount``, RTCP included, for ``seconds``; connections stay open."""
        return self._command(f"freeze {mount} {seconds!r}")

    def stop(self) -> None:
        """Stop the simulator: ask politely, then terminate, then kill."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.stdin.write("quit\n")
                proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # Already gone or stdin closed: escalate below.
        for escalate in (proc.terminate, proc.kill):
            try:
                proc.wait(timeout=STOP_TIMEOUT)
                break
            except subprocess.TimeoutExpired:
                escalate()
        else:
            proc.wait()  # SIGKILL cannot be ignored.
        for reader in self._readers:
            reader.join(timeout=STOP_TIMEOUT)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            try:
                pipe.close()
            except BrokenPipeError:
                pass  # Unflushed "quit" for a process that died meanwhile.
        self.port = None

    def __enter__(self) -> RtspSimulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _command(self, command: str) -> str:
        if self._proc is None:
            raise RtspSimulatorError("simulator not started")
        try:
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise self._error(f"simulator gone, cannot send {command!r}") from None
        answer = self._next_line(COMMAND_TIMEOUT, command)
        if not answer.startswith("ok"):
            raise self._error(f"{command!r} failed: {answer}")
        return answer

    def _next_line(self, timeout: float, what: str) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise self._error(f"no answer to {what!r} within {timeout:.0f} s") from None
        if line is None:
            # Its stdout is closed, so it is exiting: collect the exit status.
            try:
                self._proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass  # Reported as still running, which is also useful.
            raise self._error(f"simulator closed its stdout while waiting for {what!r}")
        return line

    def _pump_stdout(self, proc: subprocess.Popen[str]) -> None:
        for line in proc.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)  # EOF marker: wakes up any waiter.

    def _pump_stderr(self, proc: subprocess.Popen[str]) -> None:
        for line in proc.stderr:
            self._stderr_tail.append(line.rstrip("\n"))

    def _error(self, message: str) -> RtspSimulatorError:
        status = self._proc.poll() if self._proc else None
        if status is not None:
            message += f" (simulator exit status {status})"
            # Let the reader catch the last words of a dead simulator.
            self._readers[1].join(timeout=STOP_TIMEOUT)
        tail = "\n".join(self._stderr_tail) or "(empty)"
        return RtspSimulatorError(f"{message}\nsimulator stderr tail:\n{tail}")
