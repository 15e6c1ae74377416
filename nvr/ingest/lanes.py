"""The ingest lanes: one owned task per camera draining its spool tickets in order, and the S3 outage.

A lane never drops a segment: every failure keeps the ticket and is retried.
What differs is how a failure is reported and paced:

* S3 did not answer or answered 5xx (``TransientStorageError``): the outage is
  one state of the service (``storage_error``, with its cause), audited when it
  starts and when it ends. Lanes back off (capped at ``retry_max``), and a probe
  asks S3 every ``probe_interval`` seconds, so the backlog starts to drain
  within seconds of S3 coming back instead of after a lane's back-off.
* S3 refused (denied, full, another 4xx) or anything else went wrong with one
  segment: the camera's lane error, reported once per distinct message,
  retried every ``retry_max``. A denial or a full bucket is also the service's
  storage error: it stops every lane's uploads, not just one segment's.

The lane task is owned (``nvr.base.tasks.TaskOwner``): if it ever ends, the
owner reports it and starts it again. A report that fails (the audit log's
disk is full too) is logged and never ends a lane.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from nvr.base.tasks import TaskOwner
from nvr.base.times import now_ms
from nvr.ingest.pipeline import Ingestor, IngestStats
from storage.errors import Cause, StorageError, TransientStorageError
from storage.index.cluster import Fenced

log = logging.getLogger("nvr.ingest")

# A lane with tickets and no upload for this long is stalled, whatever the reason.
STALL_SECONDS = 60.0


@dataclass(frozen=True)
class StorageProblem:
    """Why uploads stopped: the cause in words an alarm uses, and S3's own message."""

    cause: Cause
    error: str
    since_ms: int

    def alarm(self) -> str:
        words = {
            Cause.UNREACHABLE: "S3 unavailable (unreachable)", Cause.FAILING: "S3 unavailable (answering 5xx)",
            Cause.DENIED: "S3 denies access",
            Cause.FULL: "S3 is full", Cause.REFUSED: "S3 refuses uploads",
        }[self.cause]
        return f"{words}: {self.error}; segments wait in the spool"


class IngestService:
    """Owns one lane per camera; lanes wake on a notification, a periodic rescan or S3 coming back."""

    def __init__(
        self,
        ingestor: Ingestor,
        *,
        retry_max: float = 60.0,
        rescan_seconds: float = 15.0,
        probe_interval: float = 2.0,
        on_change: Callable[[], None] | None = None,
    ):
        self.ingestor = ingestor
        self.on_change = on_change or (lambda: None)
        self.spool = ingestor.spool
        self.retry_max = retry_max
        self.rescan_seconds = rescan_seconds
        self.probe_interval = probe_interval
        self._tasks = TaskOwner("ingest", on_event=ingestor.on_event, on_change=self.on_change)
        self._wake: dict[str, asyncio.Event] = {}
        self._idle: dict[str, asyncio.Event] = {}
        self._storage_back = asyncio.Event()
        self._started = False
        self.problem: StorageProblem | None = None  # set while S3 takes no uploads
        self.lane_errors: dict[str, str] = {}
        self._last_upload: dict[str, float] = {}  # camera -> monotonic time of its last success

    @property
    def stats(self) -> IngestStats:
        return self.ingestor.stats

    @property
    def storage_error(self) -> str | None:
        """S3's message while uploads are stopped by S3, else None."""
        return self.problem.error if self.problem else None

    def notify(self, camera: str) -> None:
        """A ticket was written for ``camera``: wake (or start) its lane."""
        if camera not in self._wake:
            self._wake[camera] = asyncio.Event()
            self._idle[camera] = asyncio.Event()
            self._last_upload[camera] = time.monotonic()
            if self._started:
                self._spawn(camera)
        self._idle[camera].clear()
        self._wake[camera].set()

    def _spawn(self, camera: str) -> None:
        self._tasks.spawn(f"lane:{camera}", lambda: self._lane(camera), initial=1.0, maximum=self.retry_max)

    async def start(self) -> None:
        """Start lanes for every camera notified so far and every one with tickets waiting in the spool."""
        for camera in await asyncio.to_thread(self.spool.cameras):
            self.notify(camera)
        self._started = True
        for camera in list(self._wake):
            self._spawn(camera)
        self._tasks.spawn("probe", self._probe, initial=1.0, maximum=self.probe_interval * 5)

    def stalled(self) -> list[str]:
        """Cameras whose lane has tickets but uploaded nothing for STALL_SECONDS."""
        now = time.monotonic()
        return sorted(c for c, idle in self._idle.items()
                      if not idle.is_set() and now - self._last_upload.get(c, now) > STALL_SECONDS)

    async def _report(self, action: str, target: str, detail: dict) -> None:
        try:
            await self.ingestor.on_event(action, target, detail)
        except Exception as e:  # the audit log may fail with the same disk; the lane goes on
            log.error("ingest: can't record %s for %s (%s: %s)", action, target, type(e).__name__, e)

    async def _outage(self, e: StorageError) -> None:
        if self.problem is None or self.problem.cause != e.cause:
            first = self.problem is None
            self.problem = StorageProblem(e.cause, str(e), now_ms())
            self._storage_back.clear()
            log.error("%s", self.problem.alarm())
            await self._report("storage.outage" if first else "storage.outage_changed", "s3",
                               {"cause": str(e.cause), "error": str(e)})
        else:
            self.problem = StorageProblem(e.cause, str(e), self.problem.since_ms)
        self.on_change()

    async def _restored(self) -> None:
        problem, self.problem = self.problem, None
        if problem is None:
            return
        seconds = (now_ms() - problem.since_ms) / 1000
        log.warning("S3 takes uploads again after %.0f s (%s); uploading the spool backlog", seconds, problem.cause)
        self._storage_back.set()
        await self._report("storage.restored", "s3", {"cause": str(problem.cause), "seconds": seconds})
        self.on_change()

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if S3 comes back meanwhile."""
        try:
            await asyncio.wait_for(self._storage_back.wait(), seconds)
        except TimeoutError:
            pass

    async def _probe(self) -> None:
        """While S3 takes no uploads, ask it every probe_interval; its answer ends the outage at once."""
        store = self.ingestor.store
        while True:
            await asyncio.sleep(self.probe_interval)
            if self.problem is None or self.problem.cause not in (Cause.UNREACHABLE, Cause.FAILING):
                continue  # a denial or a full bucket is only known to be over when an upload succeeds
            try:
                await store.run(store.client.bucket_exists, store.bucket)
            except StorageError:
                continue
            await self._restored()

    async def _lane(self, camera: str) -> None:
        delay = 0.5
        wake, idle = self._wake[camera], self._idle[camera]
        while True:
            seg = await asyncio.to_thread(self.spool.next_ticket, camera)
            if seg is None:
                wake.clear()
                idle.set()
                self._last_upload[camera] = time.monotonic()
                try:
                    await asyncio.wait_for(wake.wait(), self.rescan_seconds)
                except TimeoutError:
                    pass
                continue
            idle.clear()
            try:
                await self.ingestor.ingest(seg)
            except Fenced:
                self.ingestor.stats.errors += 1
                self.on_change()
                continue  # set aside and reported by the ingestor; the next segment may be in its lease
            except TransientStorageError as e:
                self.ingestor.stats.errors += 1
                self.lane_errors[camera] = str(e)
                await self._outage(e)
                await self._pause(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.retry_max)
                continue
            except Exception as e:  # a permanent problem with this segment: never drop it, alarm and retry slowly
                self.ingestor.stats.errors += 1
                msg = f"{type(e).__name__}: {e}"
                if self.lane_errors.get(camera) != msg:
                    log.error("camera %s: segment %s can't be ingested, kept in the spool: %s", camera, seg.file, msg)
                    await self._report("ingest.error", camera, {"file": seg.file, "error": msg})
                self.lane_errors[camera] = msg
                if isinstance(e, StorageError) and e.cause in (Cause.DENIED, Cause.FULL):
                    await self._outage(e)
                self.on_change()
                await self._pause(self.retry_max)
                continue
            self._last_upload[camera] = time.monotonic()
            if self.problem is not None:
                await self._restored()
            self.lane_errors.pop(camera, None)
            delay = 0.5
            self.on_change()

    async def drain(self, timeout: float) -> bool:
        """Wait until every lane has emptied its spool queue (True) or ``timeout`` passes (False).

        Returns at once while S3 takes no uploads: nothing could drain, and shutdown must not wait on it.
        """
        if self.problem is not None:
            return all(ev.is_set() for ev in self._idle.values())
        for camera in list(self._wake):
            self.notify(camera)
        waits = [asyncio.create_task(ev.wait()) for ev in self._idle.values()]
        if not waits:
            return True
        done, pending = await asyncio.wait(waits, timeout=timeout)
        for t in pending:
            t.cancel()
        return not pending

    async def stop(self) -> None:
        """Cancel every lane and wait for it; tickets left behind are ingested at the next start."""
        await self._tasks.stop()
