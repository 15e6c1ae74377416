"""The periodic sweep: one APScheduler 3.x ``AsyncIOScheduler`` job, on the server's event loop.

The job runs every ``interval`` seconds, first ``first_run_delay`` after start
(so pending deletions of a crashed run are finished soon after a restart). It
is added with ``max_instances=1`` (never two at once), ``coalesce=True`` (runs
missed while the loop was busy or the host asleep collapse into one) and
``misfire_grace_time`` of one interval (a late run still runs rather than
being skipped). Manual and storage-full runs go through the same
``run_now`` callable, which the service serializes with a lock, so a
scheduled run that fires during a manual one waits and then runs.

The sweep itself runs in a task owned here, shielded from the scheduler:
APScheduler's shutdown cancels its job futures at once, but a sweep is
better left to finish its batch; :meth:`stop` waits ``stop_grace`` seconds for
it and only then cancels it (which is safe: the next run finishes whatever a
cancelled one left pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger("nvr.retention.scheduler")

JOB_ID = "retention-sweep"


class SweepScheduler:
    """Owns the ``AsyncIOScheduler`` and the task of the sweep it started."""

    def __init__(self, run: Callable[[str], Awaitable[Any]], *, interval: float, first_run_delay: float = 60.0,
                 stop_grace: float = 10.0):
        if interval <= 0:
            raise ValueError("sweep interval must be positive")
        self._run = run
        self.interval = interval
        self.first_run_delay = first_run_delay
        self.stop_grace = stop_grace
        self._scheduler: AsyncIOScheduler | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        sched = AsyncIOScheduler(timezone=UTC)
        sched.add_job(
            self._job, "interval", seconds=self.interval, id=JOB_ID, name="retention sweep",
            max_instances=1, coalesce=True, misfire_grace_time=max(1, int(self.interval)),
            next_run_time=datetime.now(UTC) + timedelta(seconds=self.first_run_delay),
        )
        sched.start()
        self._scheduler = sched
        log.info("retention sweep every %g s, first in %g s", self.interval, self.first_run_delay)

    @property
    def next_run(self) -> datetime | None:
        job = self._scheduler.get_job(JOB_ID) if self._scheduler is not None else None
        return job.next_run_time if job is not None else None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _job(self) -> None:
        if self.running:  # max_instances=1 already prevents this; a manual trigger may not
            return
        self._task = asyncio.create_task(self._guarded(), name="retention-sweep")
        await asyncio.shield(self._task)

    async def _guarded(self) -> None:
        try:
            await self._run("schedule")
        except Exception:
            log.exception("retention sweep failed; its pending deletions are finished by the next run")

    async def stop(self) -> None:
        if self._scheduler is not None:
            with contextlib.suppress(Exception):
                self._scheduler.shutdown(wait=False)
            self._scheduler = None
        task, self._task = self._task, None
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=self.stop_grace)
            if not done:
                log.warning("stopping: the retention sweep in progress is cancelled; the next run finishes it")
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
