"""Where a live feed's bytes come from: the recorder's growing spool segment (no second camera connection).

:class:`SpoolTail` follows the newest segment file of a camera's spool
directory as ffmpeg writes it (each fragment is flushed when complete:
``flush_packets``), and moves on to the next file when one appears: ffmpeg's
segment muxer closes a file before it opens the next, so a newer file means the
current one is complete. The file is read through a descriptor opened once, so
ingest may upload and unlink it meanwhile: the bytes stay readable until the
tail closes it. Reads run in the feed's executor; the tail only ever reads,
so nothing it does can slow or block the recording.

The tail wakes when the directory changes (Linux inotify, :class:`DirWatch`),
not on a timer: ffmpeg writes once a fragment, so a watched camera costs a few
wake-ups a second instead of twenty polls (measured: 2.6 % of a core per
watched camera with 50 ms polls). Where inotify is missing it polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from nvr.base.pulse import wait_set
from nvr.live.boxstream import Unit, UnitParser
from storage.spool import SEGMENT_RE

POLL_S = 0.05  # without inotify, how often a watched file is looked at (a fragment waits at most this long)
SAFETY_S = 1.0  # with inotify, a look this often anyway (an event lost to a full queue costs at most this)
# ffmpeg writes a fragment in 32 KiB pieces, an event each: the tail looks once the burst is over.
COALESCE_S = 0.02
IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100


class DirWatch:
    """Wakes its waiter when a directory's files are written or created (inotify), or after ``timeout``."""

    def __init__(self, directory: Path):
        self.dir = directory
        self._fd: int | None = None
        self._event = asyncio.Event()
        self._wake: asyncio.TimerHandle | None = None
        self._libc = None
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            self._libc.inotify_init1  # noqa: B018 (only Linux has it)
        except (OSError, AttributeError):
            self._libc = None

    def _open(self) -> bool:
        if self._fd is not None:
            return True
        if self._libc is None:
            return False
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            self._libc = None
            return False
        mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        if self._libc.inotify_add_watch(fd, os.fsencode(self.dir), mask) < 0:  # no directory yet: poll for now
            os.close(fd)
            return False
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._readable)
        return True

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._fd, 65536):  # a few event records: the events themselves don't matter
                pass
        # One wake-up a burst: the waiter is woken once the burst is over, not at its first event.
        if self._wake is None and not self._event.is_set():
            self._wake = asyncio.get_running_loop().call_later(COALESCE_S, self._set)

    def _set(self) -> None:
        self._wake = None
        self._event.set()

    async def wait(self, poll: float) -> None:
        """Until the directory changes (at most ``SAFETY_S``), or ``poll`` seconds without inotify."""
        watched = self._open()
        try:
            await wait_set(self._event, SAFETY_S if watched else poll)
        finally:
            self._event.clear()

    def close(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
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


def _poll(fd: int, offset: int, camera_dir: Path, name: str) -> tuple[bytes, bool]:
    """New bytes of the file, and (when there are none) whether a newer file exists: one hand-off, not two."""
    data = os.pread(fd, READ_CHUNK, offset)
    return data, (not data and newest_segment(camera_dir) not in (name, None))


class SpoolTail:
    """The units of a camera's spool files as they are written, from the newest file's next fragment on."""

    def __init__(self, camera_dir: Path, executor: Executor, *, poll: float = POLL_S):
        self.dir = camera_dir
        self.executor = executor
        self.poll = poll
        self.file: str | None = None
        self.watch = DirWatch(camera_dir)

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
                    await self.watch.wait(self.poll)
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
            self.watch.close()
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
            data, newer = await self._run(_poll, fd, offset, self.dir, name)
            if data:
                offset += len(data)
                for unit in parser.feed(data):
                    yield unit
                if len(data) == READ_CHUNK:
                    continue  # there may be more already
                # Whatever ffmpeg wrote after this read woke the watch (cleared before the read): one hand-off
                # per fragment, not a second one to find nothing.
                await self.watch.wait(self.poll)
                continue
            if newer:
                # ffmpeg closed this file before it opened the newer one: one last read takes its end.
                while data := await self._run(_read, fd, offset):
                    offset += len(data)
                    for unit in parser.feed(data):
                        yield unit
                return
            await self.watch.wait(self.poll)
