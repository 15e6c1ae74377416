"""ffmpeg command lines (built with ffmpeg-python, never through a shell) and small probes."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import ffmpeg as ffmpeg_python

from .config import CameraConfig

FMP4_FLAGS = "movflags=+frag_keyframe+empty_moov+default_base_moof"


def find_ffmpeg(override: str = "") -> str:
    """The ffmpeg to run: the configured path, else the imageio-ffmpeg wheel's static build, else PATH."""
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise FileNotFoundError(f"recording.ffmpeg = {override!r} is not an executable file")
        return override
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if not found:
            raise FileNotFoundError("no ffmpeg: install imageio-ffmpeg or set recording.ffmpeg") from None
        return found


def record_command(
    ffmpeg: str,
    camera: CameraConfig,
    out_pattern: Path,
    *,
    segment_seconds: float,
    connect_timeout: float,
) -> list[str]:
    """The argv of one recording run: copy the camera's streams into fragmented-MP4 segments.

    The segment list goes to stdout as CSV (``file,start,end`` in stream
    seconds), one line the moment each segment is closed.
    """
    scheme = camera.url.split(":", 1)[0].lower()
    if scheme == "lavfi":
        # The synthetic demo source has no encoded stream to copy, so it is encoded here (small and fast).
        graph = camera.url.split(":", 1)[1]
        src = ffmpeg_python.input(graph, f="lavfi", re=None)
        codec = {
            "vcodec": "libx264", "preset": "ultrafast", "tune": "zerolatency", "pix_fmt": "yuv420p",
            # A keyframe every second whatever the frame rate, so segments cut on time.
            "force_key_frames": "expr:gte(t,n_forced*1)", "b:v": "400k", "threads": 1,
        }
    else:
        in_opts: dict[str, object] = {}
        if scheme in ("rtsp", "rtsps"):
            in_opts["rtsp_transport"] = camera.rtsp_transport
            in_opts["timeout"] = int(connect_timeout * 1_000_000)  # socket I/O timeout, microseconds
        elif scheme in ("http", "https", "tcp", "rtmp", "rtmps"):
            in_opts["rw_timeout"] = int(connect_timeout * 1_000_000)
        src = ffmpeg_python.input(camera.url, **in_opts)
        codec = {"c": "copy"}
    streams = [src["v"], src["a?"]] if camera.audio else [src["v"]]
    out = ffmpeg_python.output(
        *streams,
        str(out_pattern),
        f="segment",
        segment_time=f"{segment_seconds:g}",
        segment_format="mp4",
        segment_format_options=FMP4_FLAGS,
        segment_list="pipe:1",
        segment_list_type="csv",
        reset_timestamps=1,
        **codec,
    )
    return ffmpeg_python.compile(out.global_args("-hide_banner", "-nostats", "-loglevel", "warning"), cmd=ffmpeg)


async def probe_duration(ffmpeg: str, path: Path) -> float | None:
    """Seconds of media ffmpeg can read from ``path`` (a partial fragmented MP4 included); None if unreadable."""
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-nostats", "-v", "error", "-i", str(path), "-map", "0:v", "-c", "copy",
        "-f", "null", "-progress", "pipe:1", "-",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    last = None
    for line in out.decode("ascii", "replace").splitlines():
        if line.startswith("out_time_us="):
            value = line.split("=", 1)[1].strip()
            if value.lstrip("-").isdigit():
                last = int(value)
    if last is None or last < 0:
        return None
    return last / 1_000_000
