"""Where a live feed's bytes come from: the recorder's growing spool segment (no second camera connection).

:class:`SpoolTail` follows the newest segment file of a camera's spool
directory as ffmpeg writes it (each fragment is flushed when complete:
``flush_packets``), and moves on to the next file when one appears: ffmpeg's
segment muxer closes a file before it opens the next, so a newer file means the
current one is complete. The file is read through a descriptor opened once, so
ingest may upload and unlink it meanwhile: the bytes stay readable until the
tail closes it. Reads run in the feed's executor; the tail only ever reads,
so nothing it does can slow or block the recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from nvr.live.boxstream import Unit, UnitParser
from storage.spool import SEGMENT_RE

POLL_S = 0.05  # how often a watched file is looked at: a fragment waits at most this long for its viewers
READ_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class SourceUnit:
    """A unit read from ``file`` (a new file starts with its init)."""

    file: str
    unit: Unit


def newest_segment(camera_dir: Path) -> str | None:
    """The name of the newest segment file in a camera's spool directory (run ids sort by time)."""
    try:
        names = [n for n in os.listdir(camera_dir) if SEGMENT_RE.match(n)]
    except FileNotFoundError:
        return None
    return max(names, default=None)


def _read(fd: int, offset: int) -> bytes:
    return os.pread(fd, READ_CHUNK, offset)


class SpoolTail:
    """The units of a camera's spool files as they are written, from the newest file's next fragment on."""

    def __init__(self, camera_dir: Path, executor: Executor, *, poll: float = POLL_S):
        self.dir = camera_dir
        self.executor = executor
        self.poll = poll
        self.file: str | None = None

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def units(self) -> AsyncIterator[SourceUnit]:
        """Every init and fragment from now on; fragments already in the newest file when it starts are
        passed over (a viewer joins at the next keyframe), those of later files are all delivered."""
        fd: int | None = None
        catch_up = True  # the first file: skip what was written before anyone watched
        try:
            while True:
                name = await self._run(newest_segment, self.dir)
                if name is None or name == self.file:
                    await asyncio.sleep(self.poll)
                    continue
                try:
                    new_fd = await self._run(os.open, str(self.dir / name), os.O_RDONLY)
                except FileNotFoundError:  # uploaded and removed between the listing and the open
                    continue
                if fd is not None:
                    await self._run(os.close, fd)
                fd, self.file = new_fd, name
                async for unit in self._follow(fd, name, skip_existing=catch_up):
                    yield SourceUnit(name, unit)
                catch_up = False
        finally:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def _follow(self, fd: int, name: str, *, skip_existing: bool) -> AsyncIterator[Unit]:
        """The units of one file until a newer file exists and this one is read to its end."""
        parser, offset = UnitParser(), 0
        if skip_existing:
            # What the file holds already: the init is needed, its fragments are the past.
            while data := await self._run(_read, fd, offset):
                offset += len(data)
                for unit in parser.feed(data):
                    if unit.kind == "init":
                        yield unit
        while True:
            data = await self._run(_read, fd, offset)
            if data:
                offset += len(data)
                for unit in parser.feed(data):
                    yield unit
                continue
            if await self._run(newest_segment, self.dir) not in (name, None):
                # ffmpeg closed this file before it opened the newer one: one last read takes its end.
                while data := await self._run(_read, fd, offset):
                    offset += len(data)
                    for unit in parser.feed(data):
                        yield unit
                return
            await asyncio.sleep(self.poll)
