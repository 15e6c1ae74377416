"""Real segments made with ffmpeg's segment muxer (the recorder's flags), and ffmpeg as the independent checker."""

from __future__ import annotations

import csv
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

from nvr.base.ffmpeg import FMP4_FLAGS
from nvr.base.mp4 import PlacedSegment, parse_segment

ENCODER = imageio_ffmpeg.get_ffmpeg_exe()
# Debian's ffmpeg checks the output when installed: a build other than the one that wrote the segments.
CHECKER = "/usr/bin/ffmpeg" if os.access("/usr/bin/ffmpeg", os.X_OK) else ENCODER
# Packet timelines and reported starts depend on how a demuxer applies edit lists and AAC priming, which
# changed between ffmpeg 5.1 (Debian 12) and the wheel's 9.0: those are compared against the wheel's.
TIMELINE = ENCODER
W0 = 1_700_000_000_000  # wall clock of the first test segment, Unix ms

# One keyframe a second, like the recorder's lavfi source, so 2-second segments cut on time.
KEYS = ["-force_key_frames", "expr:gte(t,n_forced*1)"]
CODECS = {
    # B-frames: composition offsets and a first presentation time after the first decode time.
    "h264": ["-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
             *KEYS, "-threads", "1"],
    "hevc": ["-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-x265-params",
             "log-level=error:keyint=10:min-keyint=10:open-gop=0:scenecut=0:bframes=2:pools=1:frame-threads=1"],
    "mjpeg": ["-c:v", "mjpeg", "-q:v", "12", "-pix_fmt", "yuvj420p"],
}


@dataclass(frozen=True)
class Made:
    """One segment file ffmpeg wrote, with its bounds in stream seconds from the segment list."""

    path: Path
    start_s: float
    end_s: float

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


def _encode(codec: str, seconds: float, size: str, audio: bool, inband: bool) -> list[str]:
    cmd = [ENCODER, "-hide_banner", "-nostdin", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=10"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "anoisesrc=seed=7:sample_rate=16000:amplitude=0.2"]
    cmd += ["-t", str(seconds), *CODECS[codec]]
    if inband:  # parameter sets repeated before every keyframe, as RTSP cameras send them
        cmd += ["-bsf:v", "dump_extra=freq=keyframe"]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "32k"]
    return cmd


def make(out: Path, name: str, codec: str, *, seconds: float = 4, size: str = "160x120", audio: bool = False,
         inband: bool = False) -> list[Made]:
    """Encode a testsrc2 clip (and a noise track as AAC: every packet differs) into fragmented-MP4 segments of 2 s.

    The same encode is also written whole to ``<name>.whole.mp4``: the reference timeline
    (the encoder is deterministic, so its frames are the segments' frames, bit for bit).
    """
    out.mkdir(parents=True, exist_ok=True)
    listing = out / f"{name}.csv"
    cmd = _encode(codec, seconds, size, audio, inband)
    subprocess.run([*cmd, "-f", "segment", "-segment_time", "2", "-segment_format", "mp4",
                    "-segment_format_options", FMP4_FLAGS, "-reset_timestamps", "1",
                    "-segment_list", str(listing), "-segment_list_type", "csv", str(out / f"{name}-%d.mp4")],
                   check=True, capture_output=True, timeout=60)
    subprocess.run([*cmd, "-movflags", FMP4_FLAGS.split("=", 1)[1], "-y", str(out / f"{name}.whole.mp4")],
                   check=True, capture_output=True, timeout=60)
    with listing.open() as f:
        return [Made(out / row[0], float(row[1]), float(row[2])) for row in csv.reader(f)]


def whole(made: list[Made]) -> Path:
    """The unsegmented encode of a set of segments."""
    return made[0].path.with_name(made[0].path.name.rsplit("-", 1)[0] + ".whole.mp4")


def placed(made: list[Made], holes_ms: list[int] | None = None, at: int = W0) -> list[PlacedSegment]:
    """The segments on the wall clock as the recorder places them: contiguous, plus the given holes before each."""
    out = []
    for i, m in enumerate(made):
        at += (holes_ms or [0] * len(made))[i]
        length = round((m.end_s - m.start_s) * 1000)
        out.append(PlacedSegment(at, at + length, parse_segment(m.data)))
        at += length
    return out


@dataclass(frozen=True)
class Frame:
    pts: float  # seconds, as ffmpeg's decoder output carries it (-copyts: the file's own timeline)
    checksum: str
    size: str


def frames(path: Path, *, stream: str = "0:v") -> list[Frame]:
    """The decoded frames of a file, per ffmpeg's showinfo filter."""
    proc = subprocess.run([CHECKER, "-hide_banner", "-nostdin", "-nostats", "-copyts", "-i", str(path), "-map",
                           stream, "-vf", "showinfo", "-f", "null", "-"], capture_output=True, text=True, timeout=60)
    found = re.findall(r"pts_time:(-?[0-9.]+).*? s:(\d+x\d+).*? checksum:([0-9A-F]+)", proc.stderr)
    return [Frame(float(t), c, s) for t, s, c in found]


def warnings(path: Path) -> str:
    """Everything ffmpeg says at level warning or worse while demuxing and decoding every stream of a file."""
    proc = subprocess.run([CHECKER, "-hide_banner", "-nostdin", "-nostats", "-v", "warning", "-i", str(path),
                           "-map", "0", "-f", "null", "-"], capture_output=True, text=True, timeout=60)
    return proc.stderr.strip() + ("" if proc.returncode == 0 else f"\nexit {proc.returncode}")


@dataclass(frozen=True)
class Probe:
    duration: float
    start: float
    streams: tuple[str, ...]


def probe(path: Path) -> Probe:
    """Duration, start and stream lines as ffmpeg reports them for a file."""
    proc = subprocess.run([TIMELINE, "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, text=True,
                          timeout=60)
    m = re.search(r"Duration: (\d+):(\d+):([\d.]+), start: (-?[\d.]+)", proc.stderr)
    assert m, proc.stderr
    h, mi, s, start = m.groups()
    streams = tuple(line.strip() for line in proc.stderr.splitlines() if line.strip().startswith("Stream #"))
    return Probe(int(h) * 3600 + int(mi) * 60 + float(s), float(start), streams)


@dataclass(frozen=True)
class Packet:
    stream: int
    dts: int  # in the stream's timebase (the track's timescale for MP4)
    pts: int
    duration: int
    size: int
    key: bool
    checksum: str


def packets(path: Path) -> list[Packet]:
    """Every packet of a file as ffmpeg's demuxer reads it (framecrc of a stream copy), in file order.

    Times are in the stream's timebase, on ffmpeg's timeline for the file (edit lists applied).
    """
    proc = subprocess.run([TIMELINE, "-hide_banner", "-nostdin", "-v", "error", "-copyts", "-i", str(path), "-map",
                           "0", "-c", "copy", "-f", "framecrc", "-"], capture_output=True, text=True, timeout=60,
                          check=True)
    out = []
    for line in proc.stdout.splitlines():
        if line.startswith("#"):
            continue
        p = [x.strip() for x in line.split(",")]
        out.append(Packet(int(p[0]), int(p[1]), int(p[2]), int(p[3]), int(p[4]), "F=0x0" not in p[6:], p[5]))
    return out
