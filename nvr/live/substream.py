"""A camera's second, low-resolution stream (``live_url``) for walls of tiles, opened only while watched.

The main stream is the recorded one and is never opened twice (live view reads
the recorder's spool). A wall of 16 tiles would pull 16 full streams through
the server and the browsers, so a camera may declare a substream: its ffmpeg
copies it (never transcodes) into fragmented MP4 on a pipe while someone
watches, and the hub stops it a while after the last viewer left. It opens
the URL under the recorder's rules (``nvr.recording.command``): only the
camera's own protocols, credentials in a private file rather than in argv,
every log line redacted, and ffmpeg dies with nvr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from nvr.base.errors import NvrError
from nvr.base.ffmpeg import FMP4_FLAGS
from nvr.base.redact import redact_text, url_secrets
from nvr.config.settings import CameraConfig
from nvr.config.sources import scheme_of
from nvr.live.boxstream import UnitParser
from nvr.live.sources import SourceUnit
from nvr.recording.command import hidden_input, input_options
from nvr.recording.process import die_with_parent, write_private

log = logging.getLogger("nvr.live")

READ_CHUNK = 256 * 1024
STOP_GRACE_S = 2.0


class SubstreamEnded(NvrError):
    """The substream's ffmpeg ended (the camera closed it, or refused it); the hub retries with a back-off."""


def substream_argv(ffmpeg: str, camera: CameraConfig, *, connect_timeout: float, input_list: Path | None) -> list[str]:
    """ffmpeg copying ``camera.live_url``'s video into fragmented MP4 on stdout, one fragment per keyframe."""
    sub = replace(camera, url=camera.live_url)
    opts = input_options(sub, connect_timeout)
    if scheme_of(camera.live_url) == "lavfi":
        raise ValueError("a lavfi source can't be a substream: it would be encoded, not copied")
    head = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning"]
    if input_list is not None:
        source = ["-f", "concat", "-safe", "0", "-protocol_whitelist", f"file,{opts['protocol_whitelist']}",
                  "-i", str(input_list)]
    else:
        source = [arg for k, v in opts.items() for arg in (f"-{k}", str(v))] + ["-i", camera.live_url]
    return [*head, *source, "-map", "0:v:0", "-c:v", "copy", "-an", "-f", "mp4",
            "-movflags", FMP4_FLAGS.split("=", 1)[1], "-flush_packets", "1", "pipe:1"]


class Substream:
    """The units of one camera's substream while :meth:`units` is iterated (its ffmpeg stops with it)."""

    def __init__(self, camera: CameraConfig, ffmpeg: str, private_dir: Path, *, connect_timeout: float):
        self.camera, self.ffmpeg, self.dir, self.timeout = camera, ffmpeg, private_dir, connect_timeout
        self._secrets = url_secrets(camera.live_url)
        self.pid: int | None = None

    async def units(self) -> AsyncIterator[SourceUnit]:
        listed = hidden_input(replace(self.camera, url=self.camera.live_url), self.timeout)
        input_list = None
        if listed is not None:
            input_list = self.dir / ".live.ffconcat"
            await asyncio.to_thread(write_private, input_list, listed)
        argv = substream_argv(self.ffmpeg, self.camera, connect_timeout=self.timeout, input_list=input_list)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, preexec_fn=die_with_parent)
        self.pid = proc.pid
        last: list[str] = []
        errors = asyncio.create_task(self._stderr(proc, last), name=f"live:sub:{self.camera.id}:stderr")
        parser, name = UnitParser(), f"sub-{proc.pid}"
        log.info("camera %s: substream opened (pid %d)", self.camera.id, proc.pid)
        try:
            assert proc.stdout is not None
            while data := await proc.stdout.read(READ_CHUNK):
                for unit in parser.feed(data):
                    yield SourceUnit(name, unit)
            code = await proc.wait()
            raise SubstreamEnded(f"camera {self.camera.id}: the substream's ffmpeg exited with {code}: "
                                 f"{last[-1] if last else '(no message)'}")
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            errors.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await errors
            self.pid = None
            if input_list is not None:
                with contextlib.suppress(OSError):
                    os.unlink(input_list)
            log.info("camera %s: substream closed", self.camera.id)

    async def _stderr(self, proc: asyncio.subprocess.Process, last: list[str]) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = redact_text(line.decode("utf-8", "replace").strip(), self._secrets)
            if text:
                log.debug("camera %s: substream ffmpeg: %s", self.camera.id, text)
                last[:] = [text[:500]]
