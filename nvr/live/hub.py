"""The live hub: one feed per watched camera and stream, shared by all its viewers, started on the first and
stopped a while after the last.

A feed of the main stream reads the camera's spool (:class:`~nvr.live.sources.SpoolTail`) once,
whatever the number of viewers, places each fragment
(:class:`~nvr.live.units.FeedTimeline`) and offers it to every viewer without
waiting (:class:`~nvr.live.viewer.Viewer`). Feeds run as owned tasks
(``nvr.base.tasks``): one that fails (an unreadable spool file) is reported and
restarted, its viewers keep their place. A feed of the substream (``live_url``)
runs its own ffmpeg (:class:`~nvr.live.substream.Substream`), so it lingers
longer: a wall that reloads must not reconnect sixteen cameras.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from nvr.base.events import EventSink, no_event
from nvr.base.prometheus import Exposition
from nvr.base.tasks import TaskOwner
from nvr.base.times import now_ms
from nvr.live.sources import POLL_S, SpoolTail
from nvr.live.substream import Substream
from nvr.live.units import FeedTimeline, LiveFragment
from nvr.live.viewer import DEFAULT_QUEUE, Viewer
from storage.spool import Spool

log = logging.getLogger("nvr.live")

LINGER_S = 3.0  # a spool feed outlives its last viewer this long: a page reload doesn't restart it
SUB_LINGER_S = 30.0  # a substream's connection to the camera outlives its last viewer this long
READERS = 4  # threads reading spool files for every feed of this server
WallStart = Callable[[str, str], "int | None"]  # (camera, spool file) -> wall ms of the file's media time 0
SubstreamFactory = Callable[[str], "Substream | None"]  # camera -> its substream source, None without live_url
STREAMS = ("main", "sub")


@dataclass
class FeedStats:
    """What ``/metrics`` shows of one camera's live feed (counters survive its viewers)."""

    viewers: int = 0
    sessions: int = 0
    bytes_sent: int = 0
    fragments: int = 0  # fragments the feed read from the spool
    skipped: int = 0  # fragments viewers dropped because they fell behind


@dataclass
class Feed:
    camera: str
    stream: str = "main"
    viewers: set[Viewer] = field(default_factory=set)
    latest: LiveFragment | None = None
    stats: FeedStats = field(default_factory=FeedStats)
    reaper: asyncio.TimerHandle | None = None
    running: bool = False


class LiveHub:
    """Live feeds by camera; :meth:`watch` gives a viewer, :meth:`close` ends them all."""

    def __init__(self, spool: Spool, *, wall_start: WallStart | None = None, substream: SubstreamFactory | None = None,
                 on_event: EventSink = no_event, queue: int = DEFAULT_QUEUE, linger: float = LINGER_S,
                 sub_linger: float = SUB_LINGER_S, poll: float = POLL_S):
        self.spool = spool
        self.wall_start = wall_start or (lambda camera, file: None)
        self.substream = substream or (lambda camera: None)
        self.queue, self.linger, self.sub_linger, self.poll = queue, linger, sub_linger, poll
        self.tasks = TaskOwner("live", on_event=on_event)
        self.executor = ThreadPoolExecutor(READERS, thread_name_prefix="nvr-live")
        self.feeds: dict[tuple[str, str], Feed] = {}  # by (camera, stream)
        self.stats: dict[str, FeedStats] = {}  # by camera, kept after a feed stops (Prometheus counters)
        self._closing = False

    @contextlib.asynccontextmanager
    async def watch(self, camera: str, key: str, stream: str = "main") -> AsyncIterator[Viewer]:
        """A viewer of ``camera``'s feed of ``stream`` (started if it isn't) until the block ends."""
        if self._closing:
            raise RuntimeError("the live hub is closing")
        feed = self.feeds.get((camera, stream))
        if feed is None:
            feed = self.feeds[camera, stream] = Feed(camera, stream, stats=self.stats.setdefault(camera, FeedStats()))
        if feed.reaper is not None:
            feed.reaper.cancel()
            feed.reaper = None
        viewer = Viewer(camera, key, queue=self.queue)
        feed.viewers.add(viewer)
        feed.stats.viewers = len(feed.viewers)
        feed.stats.sessions += 1
        if not feed.running:
            feed.running = True
            self.tasks.spawn(f"feed:{camera}:{stream}", lambda: self._run(feed), initial=0.5, maximum=5.0,
                             healthy_after=30.0)
        try:
            yield viewer
        finally:
            feed.viewers.discard(viewer)
            feed.stats.viewers = len(feed.viewers)
            feed.stats.skipped += viewer.skipped
            if not feed.viewers and not self._closing:
                linger = self.sub_linger if stream == "sub" else self.linger
                feed.reaper = asyncio.get_running_loop().call_later(linger, self._reap, camera, stream)

    def _reap(self, camera: str, stream: str) -> None:
        feed = self.feeds.get((camera, stream))
        if feed is None or feed.viewers:
            return
        feed.reaper = None
        self.feeds.pop((camera, stream), None)
        feed.running = False
        # cancel() only cancels and awaits the feed's task, which ends at its next await: it can't hang.
        task = asyncio.get_running_loop().create_task(self.tasks.cancel(f"feed:{camera}:{stream}"),
                                                      name=f"live:reap:{camera}:{stream}")
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _run(self, feed: Feed) -> None:
        """One feed: the spool tail's units placed and offered to the viewers of the moment."""
        timeline = FeedTimeline()
        if feed.stream == "sub":
            source = self.substream(feed.camera)
            if source is None:
                raise RuntimeError(f"camera {feed.camera} declares no live_url")
        else:
            source = SpoolTail(self.spool.camera_dir(feed.camera), self.executor, poll=self.poll)
        async for su in source.units():
            if su.unit.kind == "init":
                timeline.new_file(su.unit.data)
                continue
            wall = self.wall_start(feed.camera, su.file) if feed.stream == "main" else None
            fragment = timeline.fragment(su.unit.data, wall_start_ms=wall, arrived_ms=now_ms())
            feed.latest = fragment
            feed.stats.fragments += 1
            for viewer in list(feed.viewers):
                viewer.offer(fragment)

    def sent(self, camera: str, size: int) -> None:
        """Count ``size`` bytes sent to a viewer of ``camera``."""
        self.stats.setdefault(camera, FeedStats()).bytes_sent += size

    def snapshot(self) -> dict[str, FeedStats]:
        """Every camera's counters now (its streams together), the skips of viewers still watching included."""
        out = {}
        for camera, stats in self.stats.items():
            watching = [v for s in STREAMS if (f := self.feeds.get((camera, s))) is not None for v in f.viewers]
            out[camera] = FeedStats(len(watching), stats.sessions, stats.bytes_sent, stats.fragments,
                                    stats.skipped + sum(v.skipped for v in watching))
        return out

    def write_metrics(self, exp: Exposition) -> None:
        """The ``nvr_live_*`` families: viewers now, sessions, bytes sent and skips, per camera."""
        snap = sorted(self.snapshot().items())
        exp.metric("nvr_live_viewers", "gauge", "Live viewers watching now, per camera",
                   [({"camera": c}, float(s.viewers)) for c, s in snap])
        exp.metric("nvr_live_sessions_total", "counter", "Live sessions started since start, per camera",
                   [({"camera": c}, float(s.sessions)) for c, s in snap])
        exp.metric("nvr_live_sent_bytes_total", "counter", "Bytes of live video sent to viewers, per camera",
                   [({"camera": c}, float(s.bytes_sent)) for c, s in snap])
        exp.metric("nvr_live_skipped_fragments_total", "counter",
                   "Fragments (GOPs) viewers skipped because they fell behind, per camera",
                   [({"camera": c}, float(s.skipped)) for c, s in snap])
        exp.metric("nvr_live_fragments_total", "counter", "Fragments the live feeds read from the spool, per camera",
                   [({"camera": c}, float(s.fragments)) for c, s in snap])

    async def close(self) -> None:
        """End every viewer and feed (shutdown): viewers get their end first, then the feeds stop."""
        self._closing = True
        for feed in self.feeds.values():
            if feed.reaper is not None:
                feed.reaper.cancel()
            for viewer in list(feed.viewers):
                viewer.end("the server is shutting down")
        await self.tasks.stop()
        self.feeds.clear()
        self.executor.shutdown(wait=True, cancel_futures=True)
