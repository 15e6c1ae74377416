"""One viewer of a live feed: a bounded queue that never makes the feed wait, and the viewer's own timeline.

The feed offers every fragment to every viewer without waiting (:meth:`Viewer.offer`).
A viewer that does not keep up (a slow link, a tab in the background) finds its
queue full: everything queued is dropped and it goes on from the fragment just
offered. Each fragment starts at a keyframe, so the viewer skips to the latest
picture and decodes cleanly from there, and the feed, the recorder and the
other viewers never notice.

The viewer's timeline (:class:`Retimer`) starts at 0 and is continuous: a skip
closes up, so a player never meets a hole in its buffer and stays at the live
edge. What a frame's capture time was is in each fragment's ``prft`` box and in
the WebSocket message headers, never in its position on that timeline.
"""

from __future__ import annotations

import asyncio
import collections
from fractions import Fraction

from nvr.base.mp4.rewrite import prft, rewrite_moof
from nvr.base.pulse import wait_set
from nvr.live.units import LiveFragment

DEFAULT_QUEUE = 4  # fragments (GOPs) a viewer may fall behind before it skips: 4 s at a 1 s GOP


class Viewer:
    """A feed's handle for one viewer; the handler awaits :meth:`next` and writes what it gets."""

    def __init__(self, camera: str, key: str, *, queue: int = DEFAULT_QUEUE):
        self.camera = camera
        self.key = key  # whose viewer (the token's name): for the per-token limit and the audit
        self.max_queue = max(1, queue)
        self._queue: collections.deque[tuple[LiveFragment, bool]] = collections.deque()  # (fragment, after a skip)
        self._ready = asyncio.Event()
        self._dropping = False  # fell behind mid-GOP: drop until the next keyframe
        self.ended: str | None = None  # why the feed ended this viewer, once it did
        self.started = False  # a keyframe came: fragments before the first one are never queued
        self.skipped = 0  # fragments dropped because the viewer fell behind
        self.skips = 0  # times it fell behind
        self.sent_bytes = 0
        self.sent_fragments = 0

    def offer(self, fragment: LiveFragment) -> None:
        """Queue ``fragment`` (never waits); a full queue is dropped first, so the viewer skips ahead."""
        if self.ended is not None:
            return
        if not self.started:
            if not fragment.keyframe:
                return  # a viewer joins at the next keyframe
            self.started = True
        resync = False
        if self._dropping or len(self._queue) >= self.max_queue:
            if not fragment.keyframe:  # no picture can start here: drop until one can
                if not self._dropping:
                    self.skips += 1
                self._dropping = True
                self.skipped += 1
                return
            if not self._dropping:
                self.skips += 1
            self.skipped += len(self._queue)
            self._queue.clear()
            self._dropping, resync = False, True
        self._queue.append((fragment, resync))
        self._ready.set()

    def end(self, reason: str) -> None:
        """The feed is over (the camera stopped, the server shuts down): :meth:`next` returns None."""
        if self.ended is None:
            self.ended = reason
        self._ready.set()

    async def next(self, timeout: float | None = None) -> tuple[LiveFragment, bool] | None:
        """The next fragment and whether it follows a skip; None when the feed ended; ``TimeoutError``
        after ``timeout`` s without one."""
        while not self._queue:
            if self.ended is not None:
                return None
            self._ready.clear()
            if timeout is None:
                await self._ready.wait()
                continue
            await wait_set(self._ready, timeout)
            if not self._queue and self.ended is None:
                raise TimeoutError(f"no fragment in {timeout:g} s")
        return self._queue.popleft()


class Retimer:
    """A viewer's fragments rewritten onto its own continuous timeline (from 0), each with its ``prft``."""

    def __init__(self) -> None:
        self._offset: Fraction | None = None  # viewer time − feed time, seconds
        self._next = Fraction(0)  # where the viewer's video ends so far
        self._sequence = 0
        self.last_start_s = 0.0  # where the last fragment rendered starts on the viewer's timeline

    def parts(self, f: LiveFragment, *, resync: bool = False) -> tuple[bytes, bytes, memoryview]:
        """``f``'s bytes for this viewer: a prft, its moof with new decode times and sequence, and a view onto
        its mdat. Each door joins them with its own framing in one copy (a slice and two joins were three
        copies of a 1080p fragment)."""
        if self._offset is None or resync:
            self._offset = self._next - f.starts_s[f.lead]
        init = f.init.init
        decode = {tid: max(0, round((start + self._offset) * init.track(tid).timescale))
                  for tid, start in f.starts_s.items()}
        start = f.starts_s[f.lead] + self._offset
        self.last_start_s = float(start)
        if f.has_video:
            self._next = start + f.duration_s
        self._sequence += 1
        moof = rewrite_moof(f.data, f.fragment, decode, self._sequence, {})
        return prft(f.lead, f.wall_ms, decode[f.lead]), moof, memoryview(f.data)[f.fragment.moof_end:]

    @property
    def position_s(self) -> float:
        """How much media this viewer has been sent, seconds."""
        return float(self._next)
