"""The retention service: rules in force, holds, the sweep and its scheduler, storage-full, status and metrics.

This is what the server, the API and the CLI use; the stages behind it are
``store`` (persistence), ``holds`` (holds and S3 legal holds), ``sweep`` (the
deletion) and ``scheduler`` (the periodic job).

**The floor.** ``retention.min_age`` of the config (``RetentionSettings.
min_age_floor``) is footage that is never deleted whatever happens: it is the
default rule's ``min_age`` when a rule set does not give one, and a rule set
whose ``min_age`` (default or any camera) is below it is refused, naming the
field. With object lock, ingest writes each segment with GOVERNANCE retention
for exactly that long, so every rule the service accepts deletes only after
S3 allows it (``bypass_governance_mode`` is never used).

**Rules precedence**: the latest change wins (see ``store``). Stored rules that
no longer pass the floor (the config's ``min_age`` was raised since) are
replaced by the config file's rules, loudly (log + ``retention.rules.reset``
audit event).

**One sweeper per data dir.** A server holds an exclusive ``flock`` on
``<data_dir>/retention.lock`` while its service runs; ``nvr retention run``
takes the same lock and refuses to run beside a live server, because ingest
and the sweep must not write a camera's ledger chain at the same time (within
the server, ``storage.chainlock.ChainLocks`` keeps them apart).

**Storage full** (``on_spool_check``, called after each spool-disk check): when
free space on the spool disk is under ``min_free_bytes``, a sweep runs at once
(trigger ``low_disk``). When the objects live on the spool's filesystem (the
embedded S3 under the data dir), it deletes, under the same rules plus an
emergency quota, the oldest deletable footage across cameras for the missing
space (``floor * 1.25 - free``), minus what it already deleted in this low-disk
episode (SeaweedFS returns space only when it vacuums a volume, so free space
lags deletions; without this the sweep would delete again and again for the
same shortfall). At most one such run per ``low_disk_cooldown``. Held footage
and footage younger than ``min_age`` are never deleted for room. When nothing
(or not enough) can be freed, or the objects are elsewhere (a remote S3:
deleting them frees nothing on this disk), the service says so: an ERROR log
line, the ``alarm`` in status, ``nvr_retention_storage_full 1`` and a
``retention.storage_full`` audit event once per episode. Recording is never
stopped by retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nvr.base.errors import Kind, NvrError
from nvr.base.pulse import Pulse
from nvr.base.times import ms_to_rfc3339, now_ms
from nvr.base.units import format_size
from nvr.config.retention import RetentionRuleError, RuleSet, parse_rules, rules_to_dict, with_floor
from retention.holds import SYSTEM, HoldManager
from retention.scheduler import SweepScheduler
from retention.store import RetentionStore, StoredRules
from retention.sweep import Fault, Preview, Sweeper, SweepReport
from storage.chainlock import ChainLocks
from storage.index import Index, SegmentRow
from storage.objectstore import ObjectStore

if TYPE_CHECKING:
    from nvr.base.prometheus import Exposition

log = logging.getLogger("nvr.retention")


class RetentionBusy(NvrError):
    """Another process (a server, or ``nvr retention run``) owns the sweep of this data dir."""

    kind = Kind.CONFLICT


@dataclass(frozen=True)
class RetentionSettings:
    """What the service needs from the config (see :meth:`from_config`)."""

    rules: RuleSet = RuleSet()  # the config file's rules
    min_age_floor: float = 86400.0  # retention.min_age: never delete younger; the object-lock period
    sweep_interval: float = 600.0
    first_run_delay: float = 60.0
    min_free_bytes: int = 2 * 2**30  # storage-full trigger on the spool disk
    low_disk_cooldown: float = 300.0
    frees_spool_disk: bool = True  # deleting objects frees the spool disk (embedded S3 on the same filesystem)
    lock_seconds: float = 0.0  # GOVERNANCE retention ingest writes (0: no object lock)
    batch_size: int = 500

    @classmethod
    def from_config(cls, cfg: Any) -> RetentionSettings:
        """From an ``nvr.config.Config``; keys the config does not have yet fall back to their defaults."""
        rt = cfg.retention
        floor = float(rt.min_age)
        rules = getattr(rt, "rules", None) or RuleSet()
        interval = float(getattr(rt, "sweep_interval", 600.0))
        min_free = getattr(rt, "min_free_bytes", None)
        if min_free is None:  # not set: the spool alarm's floor
            min_free = cfg.recording.min_free_bytes
        embedded = not cfg.storage.endpoint
        return cls(
            rules=with_floor(rules, floor), min_age_floor=floor, sweep_interval=interval,
            first_run_delay=min(60.0, interval), min_free_bytes=int(min_free),
            low_disk_cooldown=min(300.0, interval),
            frees_spool_disk=embedded and same_filesystem(cfg.data_dir / "s3", cfg.spool_dir),
            lock_seconds=floor if cfg.storage.object_lock else 0.0,
        )


def same_filesystem(a: Path, b: Path) -> bool:
    def dev(p: Path) -> int:
        p = p.absolute()
        while not p.exists() and p != p.parent:
            p = p.parent
        return os.stat(p).st_dev

    return dev(a) == dev(b)


class RetentionService:
    """Facade over the retention stages for one index and one bucket."""

    def __init__(self, *, index: Index, store: ObjectStore, node_id: str, audit: Any,
                 settings: RetentionSettings, chain_locks: ChainLocks | None = None,
                 lock_file: Path | None = None, fault: Fault | None = None):
        self.index = index
        self.store = store
        self.settings = settings
        self._audit_log = audit
        self.chain_locks = chain_locks or ChainLocks()
        self.lock_file = lock_file
        self.gate = asyncio.Lock()
        self.rstore: RetentionStore | None = None
        self.holds: HoldManager | None = None
        self.sweeper: Sweeper | None = None
        self._node_id = node_id
        self._fault = fault
        self._stored: StoredRules | None = None
        self._rules_lock = asyncio.Lock()
        self._sweep_lock = asyncio.Lock()
        self._scheduler: SweepScheduler | None = None
        self._lock_fd: int | None = None
        self.pulse = Pulse()  # fired after every run
        self.last_report: SweepReport | None = None
        self.sweeping = False
        # storage full
        self._low = False
        self._freed_in_episode = 0
        self._last_emergency = -1e18
        self._emergency: asyncio.Task | None = None
        self.storage_full: str | None = None
        # metrics since start
        self.runs: Counter[str] = Counter()
        self.deleted_segments: Counter[str] = Counter()
        self.deleted_bytes: Counter[str] = Counter()
        self.delete_failures = 0
        self.pending = 0

    async def _audit(self, action: str, target: str, detail: dict[str, Any], actor: tuple[str, str]) -> None:
        await self._audit_log.record(action, target, detail, actor=actor)

    # ------------------------------------------------------------------ lifecycle

    async def open(self, *, exclusive: bool = True, import_config: bool = True) -> RetentionService:
        """Tables, the data-dir lock (``exclusive``), the rules in force; no scheduler."""
        if exclusive and self.lock_file is not None:
            self._take_lock()
        self.rstore = await asyncio.to_thread(RetentionStore, self.index)
        self.holds = HoldManager(store=self.store, rstore=self.rstore, audit=self._audit,
                                 gate=self.gate)
        self.sweeper = Sweeper(index=self.index, store=self.store, rstore=self.rstore, holds=self.holds,
                               audit=self._audit, node_id=self._node_id, gate=self.gate,
                               chain_locks=self.chain_locks, lock_seconds=self.settings.lock_seconds,
                               batch_size=self.settings.batch_size, fault=self._fault)
        await self._load_rules(import_config)
        self.pending = await asyncio.to_thread(self.rstore.pending_count)
        return self

    async def start(self) -> RetentionService:
        """:meth:`open` plus the periodic sweep."""
        if self.rstore is None:
            await self.open()
        self._scheduler = SweepScheduler(self.run_now, interval=self.settings.sweep_interval,
                                         first_run_delay=self.settings.first_run_delay)
        await self._scheduler.start()
        return self

    async def stop(self) -> None:
        if self._emergency is not None and not self._emergency.done():
            self._emergency.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._emergency
        if self._scheduler is not None:
            await self._scheduler.stop()
            self._scheduler = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _take_lock(self) -> None:
        assert self.lock_file is not None
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RetentionBusy(
                f"another nvr process holds {self.lock_file}: a running server sweeps this data dir itself "
                "(POST /api/v1/retention/run triggers it now)") from None
        self._lock_fd = fd

    async def _load_rules(self, import_config: bool) -> None:
        floor = self.settings.min_age_floor
        cfg_rules = with_floor(self.settings.rules, floor)
        if import_config:
            old, cur = await asyncio.to_thread(self.rstore.import_config_rules, cfg_rules, now_ms=now_ms())
            if cur is not old:
                await self._audit("retention.rules.update", "retention", {
                    "source": "config file", "old": rules_to_dict(old.rules) if old else None,
                    "new": rules_to_dict(cur.rules), "version": cur.version}, SYSTEM)
        else:
            cur = await asyncio.to_thread(self.rstore.current_rules)
            if cur is None:
                self._stored = StoredRules(cfg_rules, 0, "config", now_ms(), "config file", None)
                return
        try:
            with_floor(cur.rules, floor)
        except RetentionRuleError as e:
            log.error("the retention rules in force (version %d, %s) fail the config's retention.min_age "
                      "floor (%s); the config file's rules replace them", cur.version, cur.source, e)
            old, cur = await asyncio.to_thread(self.rstore.put_rules, cfg_rules, actor="config file",
                                               now_ms=now_ms(), source="config")
            await self._audit("retention.rules.reset", "retention", {
                "error": str(e), "old": rules_to_dict(old.rules) if old else None,
                "new": rules_to_dict(cur.rules), "version": cur.version}, SYSTEM)
        self._stored = cur

    # ------------------------------------------------------------------ rules

    @property
    def stored(self) -> StoredRules:
        assert self._stored is not None, "RetentionService.open() first"
        return self._stored

    @property
    def rules(self) -> RuleSet:
        return self.stored.rules

    def parse_rules(self, data: Mapping[str, Any]) -> RuleSet:
        """Validate a rule set in JSON form against the floor (raises RetentionRuleError naming the field)."""
        return parse_rules(data, self.settings.min_age_floor)

    async def set_rules(self, rules: RuleSet, actor: tuple[str, str]) -> StoredRules:
        rules = with_floor(rules, self.settings.min_age_floor)
        async with self._rules_lock:
            old, new = await asyncio.to_thread(self.rstore.put_rules, rules, actor=actor[0], now_ms=now_ms())
            self._stored = new
        await self._audit("retention.rules.update", "retention", {
            "old": rules_to_dict(old.rules) if old else None, "new": rules_to_dict(new.rules),
            "version": new.version}, actor)
        return new

    async def set_camera_rule(self, camera: str, rule_data: Mapping[str, Any], actor: tuple[str, str]) -> StoredRules:
        """Replace ``camera``'s override with ``rule_data`` (JSON form); validated in the context of the whole set."""
        async with self._rules_lock:
            cur = self.stored
            data = rules_to_dict(cur.rules)
            old = data["cameras"].get(camera)
            data["cameras"][camera] = rule_data
            rules = self.parse_rules(data)
            _, new = await asyncio.to_thread(self.rstore.put_rules, rules, actor=actor[0], now_ms=now_ms())
            self._stored = new
        await self._audit("retention.rules.camera", camera, {
            "old": old, "new": rules_to_dict(new.rules)["cameras"].get(camera), "version": new.version}, actor)
        return new

    async def delete_camera_rule(self, camera: str, actor: tuple[str, str]) -> StoredRules:
        """Remove ``camera``'s override (KeyError when it has none)."""
        async with self._rules_lock:
            cur = self.stored
            if camera not in cur.rules.cameras:
                raise KeyError(camera)
            data = rules_to_dict(cur.rules)
            old = data["cameras"].pop(camera)
            rules = self.parse_rules(data)
            _, new = await asyncio.to_thread(self.rstore.put_rules, rules, actor=actor[0], now_ms=now_ms())
            self._stored = new
        await self._audit("retention.rules.camera", camera, {"old": old, "new": None, "version": new.version},
                          actor)
        return new

    # ------------------------------------------------------------------ sweeping

    async def preview(self, rules: RuleSet | None = None) -> Preview:
        return await self.sweeper.preview(self.rules if rules is None else rules)

    async def run_now(self, trigger: str = "manual", *, free_needed: int | None = None) -> SweepReport:
        """One sweep with the rules in force, after any sweep in progress."""
        async with self._sweep_lock:
            self.sweeping = True
            try:
                report = await self.sweeper.run(self.rules, trigger=trigger, free_needed=free_needed)
            finally:
                self.sweeping = False
                self.pending = await asyncio.to_thread(self.rstore.pending_count)
        self.last_report = report
        self.runs[trigger] += 1
        for cam, c in report.deleted.items():
            self.deleted_segments[cam] += c.segments
            self.deleted_bytes[cam] += c.bytes
        self.delete_failures += len(report.failed)
        self.pulse.fire()
        return report

    async def on_segment_stored(self, row: SegmentRow) -> None:
        """Ingest hook, after each new segment: legal hold when an active (open-ended) hold covers it."""
        try:
            await self.holds.on_segment_stored(row)
        except Exception:  # never fail ingest over this; the next sweep's reconcile retries
            log.exception("legal hold check of segment %s failed", row.id)

    # ------------------------------------------------------------------ storage full

    async def on_spool_check(self, free_bytes: int) -> asyncio.Task | None:
        """Called after every spool-disk check with its free bytes (see module doc); the storage-full sweep's task."""
        floor = self.settings.min_free_bytes
        if free_bytes >= floor:
            if self._low:
                self._low, self._freed_in_episode = False, 0
                if self.storage_full is not None:
                    self.storage_full = None
                    log.warning("storage full cleared: the spool disk has %s free", format_size(free_bytes))
                    await self._audit("retention.storage_full_cleared", "retention", {"free": free_bytes}, SYSTEM)
            return None
        if not self._low:
            self._low, self._freed_in_episode = True, 0
        busy = self._emergency is not None and not self._emergency.done()
        if busy or time.monotonic() - self._last_emergency < self.settings.low_disk_cooldown:
            return None
        self._last_emergency = time.monotonic()
        self._emergency = asyncio.create_task(self._free_space(free_bytes), name="retention-low-disk")
        return self._emergency

    async def _free_space(self, free_bytes: int) -> SweepReport | None:
        floor = self.settings.min_free_bytes
        need = floor + floor // 4 - free_bytes
        if self.settings.frees_spool_disk:
            need -= self._freed_in_episode
        log.warning("spool disk has %s free, under %s: retention sweep now%s", format_size(free_bytes),
                    format_size(floor), f" to free {format_size(need)}" if need > 0 and self.settings.frees_spool_disk
                    else "")
        try:
            report = await self.run_now("low_disk",
                                        free_needed=need if need > 0 and self.settings.frees_spool_disk else None)
        except Exception:
            log.exception("storage-full sweep failed")
            report = None
        freed = report.deleted_bytes if report else 0
        self._freed_in_episode += freed
        if not self.settings.frees_spool_disk:
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
            if self.storage_full is None:
                await self._audit("retention.storage_full", "retention", {
                    "free": free_bytes, "floor": floor, "needed": max(need, 0), "freed": freed}, SYSTEM)
            self.storage_full = msg
        self.pulse.fire()
        return report

    # ------------------------------------------------------------------ status, metrics

    @property
    def alarm(self) -> str | None:
        return self.storage_full

    def status(self) -> dict[str, Any]:
        st = self._stored
        last = self.last_report
        next_run = self._scheduler.next_run if self._scheduler else None
        return {
            "rules_version": st.version if st else None, "rules_source": st.source if st else None,
            "sweep_interval": self.settings.sweep_interval, "running": self.sweeping,
            "next_run": next_run.astimezone().isoformat() if next_run else None,
            "last_run": {"run": last.run_id, "trigger": last.trigger, "finished": ms_to_rfc3339(last.finished_ms),
                         "deleted_segments": last.deleted_segments, "deleted_bytes": last.deleted_bytes,
                         "failed": len(last.failed), "pending_left": last.pending_left,
                         "quota_unmet": last.quota_unmet} if last else None,
            "pending": self.pending, "storage_full": self.storage_full, "object_lock": bool(self.store.object_lock),
            "min_age_floor": self.settings.min_age_floor,
        }

    def write_metrics(self, exp: Exposition) -> None:
        """The ``nvr_retention_*`` metric families, into ``nvr.metrics``' exposition."""
        metric = exp.metric
        last = self.last_report
        metric("nvr_retention_sweeps_total", "counter", "Retention sweeps run since start, by trigger",
               [({"trigger": t}, float(n)) for t, n in sorted(self.runs.items())])
        metric("nvr_retention_deleted_segments_total", "counter", "Segments deleted by retention since start",
               [({"camera": c}, float(n)) for c, n in sorted(self.deleted_segments.items())])
        metric("nvr_retention_deleted_bytes_total", "counter", "Object bytes deleted by retention since start",
               [({"camera": c}, float(n)) for c, n in sorted(self.deleted_bytes.items())])
        metric("nvr_retention_delete_failures_total", "counter",
               "Object deletions S3 refused (the segment stays pending and is retried)",
               [({}, float(self.delete_failures))])
        metric("nvr_retention_pending_segments", "gauge", "Segments marked for deletion and not yet deleted",
               [({}, float(self.pending))])
        metric("nvr_retention_usage_bytes", "gauge", "Bytes in the bucket per the index, after the last sweep",
               [({}, float(last.usage_after))] if last else [])
        metric("nvr_retention_last_sweep_timestamp_seconds", "gauge", "When the last sweep finished",
               [({}, last.finished_ms / 1000)] if last else [])
        metric("nvr_retention_quota_unmet", "gauge", "1 when the last sweep could not bring usage under the quota",
               [({}, 1.0 if last and last.quota_unmet else 0.0)])
        metric("nvr_retention_storage_full", "gauge",
               "1 while the spool disk is under retention's floor and retention can't free enough",
               [({}, 1.0 if self.storage_full else 0.0)])
