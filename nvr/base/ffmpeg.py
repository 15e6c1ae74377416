"""Finding ffmpeg, the fragmented-MP4 flags every writer uses, and a duration probe."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

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
