"""Watches spool size and free disk: raises the alarm loudly while either is past its limit."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nvr.base.units import format_size
from storage.audit import AuditLog
from storage.spool import Spool

log = logging.getLogger("nvr.spool")


@dataclass
class SpoolStatus:
    bytes: int = 0
    files: int = 0
    limit_bytes: int = 0
    free_bytes: int = 0
    min_free_bytes: int = 0
    over_limit: bool = False
    low_disk: bool = False

    @property
    def alarm(self) -> str | None:
        if self.over_limit:
            return (f"spool holds {format_size(self.bytes)} in {self.files} segments, over its limit of "
                    f"{format_size(self.limit_bytes)}: S3 uploads are behind; recording continues")
        if self.low_disk:
            return (f"spool disk has {format_size(self.free_bytes)} free, under the floor of "
                    f"{format_size(self.min_free_bytes)}; recording continues while the disk allows")
        return None


class SpoolWatch:
    """Periodic check; logs an ERROR on entering an alarm, every ``repeat`` seconds while in it, and on clearing."""

    def __init__(self, spool: Spool, audit: AuditLog, *, limit_bytes: int, min_free_bytes: int,
                 interval: float = 5.0, repeat: float = 60.0,
                 on_check: Callable[[SpoolStatus], Awaitable[object]] | None = None):
        self.spool = spool
        self.audit = audit
        self.interval = interval
        self.repeat = repeat
        self.on_check = on_check  # after every check (retention: the storage-full sweep)
        self.status = SpoolStatus(limit_bytes=limit_bytes, min_free_bytes=min_free_bytes)
        self._last_alarm: str | None = None
        self._last_log = 0.0

    def _measure(self) -> tuple[int, int, int]:
        used, files = self.spool.usage()
        self.spool.root.mkdir(parents=True, exist_ok=True)
        return used, files, shutil.disk_usage(self.spool.root).free

    async def check(self) -> SpoolStatus:
        s = self.status
        s.bytes, s.files, s.free_bytes = await asyncio.to_thread(self._measure)
        s.over_limit = s.bytes > s.limit_bytes
        s.low_disk = s.free_bytes < s.min_free_bytes
        alarm = s.alarm
        kind = "over_limit" if s.over_limit else "low_disk" if s.low_disk else None
        now = asyncio.get_running_loop().time()
        if kind != self._last_alarm:
            if kind:
                log.error("SPOOL ALARM: %s", alarm)
                await self.audit.system("spool.alarm", "spool", {"kind": kind, "bytes": s.bytes, "free": s.free_bytes})
            else:
                log.warning("spool alarm cleared: %s in %d segments", format_size(s.bytes), s.files)
                await self.audit.system("spool.alarm_cleared", "spool", {"bytes": s.bytes, "free": s.free_bytes})
            self._last_alarm = kind
            self._last_log = now
        elif kind and now - self._last_log >= self.repeat:
            log.error("SPOOL ALARM (continuing): %s", alarm)
            self._last_log = now
        if self.on_check is not None:
            await self.on_check(s)
        return s

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except OSError as e:
                log.error("spool check failed: %s", e)
            await asyncio.sleep(self.interval)
