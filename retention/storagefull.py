"""Storage full: a sweep at once when the spool disk runs low, and an alarm when retention can't make room.

:meth:`StorageFull.check` is called after each spool-disk check with the free
bytes. When they are under ``min_free_bytes``, a sweep runs at once (trigger
``low_disk``). When the objects live on the spool's filesystem (the embedded
S3 under the data dir), it deletes, under the same rules plus an emergency
quota (``retention.policy.emergency_rules``), the oldest deletable footage
across cameras for the missing space (``min_free * 1.25 - free``), minus what
it already deleted in this low-disk episode (SeaweedFS returns space only when
it vacuums a volume, so free space lags deletions; without this the sweep
would delete again and again for the same shortfall). At most one such run per
``cooldown``. Held footage and footage younger than ``min_age`` are never
deleted for room.

When nothing (or not enough) can be freed, or the objects are elsewhere (a
remote S3: deleting them frees nothing on this disk), it says so: an ERROR
log line, :attr:`StorageFull.alarm` (in status, and
``nvr_retention_storage_full 1``) and a ``retention.storage_full`` audit event
once per episode. Recording is never stopped by retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from nvr.base.units import format_size
from retention.legalholds import AuditFn
from retention.sweep import SweepReport
from storage.audit import SYSTEM

log = logging.getLogger("nvr.retention")

RunFn = Callable[..., Awaitable[SweepReport]]  # (trigger, *, free_needed) -> report: the service's run_now


class StorageFull:
    """The low-disk episode: its sweeps, what they freed, and the alarm."""

    def __init__(self, *, run: RunFn, audit: AuditFn, min_free_bytes: int, cooldown: float,
                 frees_spool_disk: bool, on_change: Callable[[], None]):
        self._run = run
        self._audit = audit
        self.min_free_bytes = min_free_bytes
        self.cooldown = cooldown
        self.frees_spool_disk = frees_spool_disk
        self._on_change = on_change
        self._low = False
        self._freed_in_episode = 0
        self._last_run = -1e18  # time.monotonic() of the last low-disk sweep
        self._task: asyncio.Task | None = None
        self.alarm: str | None = None  # what the operator must know, while retention can't make room

    async def check(self, free_bytes: int) -> asyncio.Task | None:
        """Note the spool disk's free bytes; the task of the low-disk sweep this starts, if any."""
        floor = self.min_free_bytes
        if free_bytes >= floor:
            if self._low:
                self._low, self._freed_in_episode = False, 0
                if self.alarm is not None:
                    self.alarm = None
                    log.warning("storage full cleared: the spool disk has %s free", format_size(free_bytes))
                    await self._audit("retention.storage_full_cleared", "retention", {"free": free_bytes}, SYSTEM)
            return None
        if not self._low:
            self._low, self._freed_in_episode = True, 0
        busy = self._task is not None and not self._task.done()
        if busy or time.monotonic() - self._last_run < self.cooldown:
            return None
        self._last_run = time.monotonic()
        self._task = asyncio.create_task(self._free_space(free_bytes), name="retention-low-disk")
        return self._task

    async def stop(self) -> None:
        """Cancel a low-disk sweep in progress (the next run finishes what it left pending)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _free_space(self, free_bytes: int) -> SweepReport | None:
        floor = self.min_free_bytes
        need = floor + floor // 4 - free_bytes
        if self.frees_spool_disk:
            need -= self._freed_in_episode
        frees = need > 0 and self.frees_spool_disk
        log.warning("spool disk has %s free, under %s: retention sweep now%s", format_size(free_bytes),
                    format_size(floor), f" to free {format_size(need)}" if frees else "")
        try:
            report = await self._run("low_disk", free_needed=need if frees else None)
        except Exception:
            log.exception("storage-full sweep failed")
            report = None
        freed = report.deleted_bytes if report else 0
        self._freed_in_episode += freed
        if not self.frees_spool_disk:
            msg = (f"storage full: the spool disk has {format_size(free_bytes)} free, under {format_size(floor)}, "
                   "and deleting footage can't help (the objects are not on this disk): free disk space; "
                   "recording continues while the disk allows")
        elif need > 0 and freed < need:
            msg = (f"storage full: the spool disk has {format_size(free_bytes)} free, under {format_size(floor)}; "
                   f"retention could free only {format_size(freed)} of {format_size(need)}: the rest is held or "
                   "younger than min_age; recording continues while the disk allows")
        else:
            msg = None
        if msg is not None:
            log.error("%s", msg)
            if self.alarm is None:
                await self._audit("retention.storage_full", "retention", {
                    "free": free_bytes, "floor": floor, "needed": max(need, 0), "freed": freed}, SYSTEM)
            self.alarm = msg
        self._on_change()
        return report
