"""The retention service: what the server, the API and the CLI use, over the stages behind it.

The stages: ``rules`` (the rules in force), ``legalholds`` (holds and S3 legal
holds), ``sweep`` (the deletion), ``scheduler`` (the periodic job) and
``storagefull`` (the low-disk sweep and alarm); ``store`` keeps their state in
the index. The service owns their lifecycle, runs one sweep at a time and
keeps the counters of status and metrics.

**One sweeper per data dir.** A server holds an exclusive ``flock`` on
``<data_dir>/retention.lock`` while its service runs; ``nvr retention run``
takes the same lock and refuses to run beside a live server, because ingest
and the sweep must not write a camera's ledger chain at the same time (within
the server, ``storage.chainlock.ChainLocks`` keeps them apart).

**The floor.** ``retention.min_age`` of the config (``RetentionSettings.
min_age_floor``) is footage that is never deleted whatever happens (see
``nvr.config.retention``). With object lock, ingest writes each segment with
GOVERNANCE retention for exactly that long, so every rule the service accepts
deletes only after S3 allows it (``bypass_governance_mode`` is never used).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nvr.base.errors import Kind, NvrError
from nvr.base.pulse import Pulse
from nvr.base.times import ms_to_rfc3339
from nvr.config.retention import DEFAULT_MIN_AGE, RuleSet, with_floor
from nvr.config.settings import Config
from retention.legalholds import HoldManager
from retention.rules import RulesInForce
from retention.scheduler import SweepScheduler
from retention.storagefull import StorageFull
from retention.store import RetentionStore, StoredRules
from retention.sweep import Fault, Preview, Sweeper, SweepReport
from storage.audit import AuditLog
from storage.chainlock import ChainLocks
from storage.index import Index, SegmentRow
from storage.objectstore import ObjectStore

if TYPE_CHECKING:
    from nvr.base.prometheus import Exposition

log = logging.getLogger("nvr.retention")

# The sweep's cluster lock is pinged while it runs; a node cut off from the index mid-sweep loses it this
# long after its last ping (the server ends the silent session), so the other nodes' sweeps wait no longer.
SWEEP_LAPSE_S = 15.0


class RetentionBusy(NvrError):
    """Another process (a server, or ``nvr retention run``) owns the sweep of this data dir."""

    kind = Kind.CONFLICT


@dataclass(frozen=True)
class RetentionSettings:
    """What the service needs from the config (see :meth:`from_config`)."""

    rules: RuleSet = RuleSet()  # the config file's rules
    min_age_floor: float = DEFAULT_MIN_AGE  # retention.min_age: never delete younger; the object-lock period
    sweep_interval: float = 600.0
    first_run_delay: float = 60.0
    min_free_bytes: int = 2 * 2**30  # storage-full trigger on the spool disk
    low_disk_cooldown: float = 300.0
    frees_spool_disk: bool = True  # deleting objects frees the spool disk (embedded S3 on the same filesystem)
    lock_seconds: float = 0.0  # GOVERNANCE retention ingest writes (0: no object lock)
    batch_size: int = 500

    @classmethod
    def from_config(cls, cfg: Config) -> RetentionSettings:
        """From the config: ``[retention]``, object lock, and where the spool and the embedded S3 live."""
        rt = cfg.retention
        floor = float(rt.min_age)
        interval = float(rt.sweep_interval)
        min_free = rt.min_free_bytes
        if min_free is None:  # not set: the spool alarm's floor
            min_free = cfg.recording.min_free_bytes
        embedded = not cfg.storage.endpoint
        return cls(
            rules=with_floor(rt.rules or RuleSet(), floor), min_age_floor=floor, sweep_interval=interval,
            first_run_delay=min(60.0, interval), min_free_bytes=int(min_free),
            low_disk_cooldown=min(300.0, interval),
            frees_spool_disk=embedded and same_filesystem(cfg.data_dir / "s3", cfg.spool_dir),
            lock_seconds=floor if cfg.storage.object_lock else 0.0,
        )


def same_filesystem(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` (or their nearest existing parents) are on one filesystem."""
    def dev(p: Path) -> int:
        p = p.absolute()
        while not p.exists() and p != p.parent:
            p = p.parent
        return os.stat(p).st_dev

    return dev(a) == dev(b)


class RetentionService:
    """Facade over the retention stages for one index and one bucket."""

    def __init__(self, *, index: Index, store: ObjectStore, node_id: str, audit: AuditLog,
                 settings: RetentionSettings, chain_locks: ChainLocks | None = None,
                 lock_file: Path | None = None, fault: Fault | None = None):
        self.index = index
        self.store = store
        self.settings = settings
        self._audit_log = audit
        self.chain_locks = chain_locks or ChainLocks()
        self.lock_file = lock_file
        self.gate = asyncio.Lock()  # hold placement, release and reconcile vs. a sweep's batch of deletes
        self.rstore: RetentionStore | None = None
        self.holds: HoldManager | None = None
        self.sweeper: Sweeper | None = None
        self._rules: RulesInForce | None = None
        self._node_id = node_id
        self._fault = fault
        self._sweep_lock = asyncio.Lock()
        self._scheduler: SweepScheduler | None = None
        self._lock_fd: int | None = None
        self.pulse = Pulse()  # fired after every run
        self.last_report: SweepReport | None = None
        self.sweeping = False
        self._full = StorageFull(run=self.run_now, audit=self._audit, min_free_bytes=settings.min_free_bytes,
                                 cooldown=settings.low_disk_cooldown, frees_spool_disk=settings.frees_spool_disk,
                                 on_change=self.pulse.fire)
        # metrics since start
        self.runs: Counter[str] = Counter()
        self.deleted_segments: Counter[str] = Counter()
        self.deleted_bytes: Counter[str] = Counter()
        self.delete_failures = 0
        self.pending = 0
        # In a cluster: whether this node holds the cluster-wide sweep's lease (scheduled sweeps run on
        # that node only); any node's sweep also takes the index's "retention-sweep" lock, one at a time.
        self.cluster_gate: Callable[[], bool] | None = None

    async def _audit(self, action: str, target: str, detail: dict[str, Any], actor: tuple[str, str]) -> None:
        await self._audit_log.record(action, target, detail, actor=actor)

    # ------------------------------------------------------------------ lifecycle

    async def open(self, *, exclusive: bool = True, import_config: bool = True) -> RetentionService:
        """Tables, the data-dir lock (``exclusive``), the rules in force; no scheduler."""
        if exclusive and self.lock_file is not None:
            self._take_lock()
        self.rstore = await asyncio.to_thread(RetentionStore, self.index)
        self.holds = HoldManager(store=self.store, rstore=self.rstore, audit=self._audit, gate=self.gate)
        self.sweeper = Sweeper(index=self.index, store=self.store, rstore=self.rstore, holds=self.holds,
                               audit=self._audit, node_id=self._node_id, gate=self.gate,
                               chain_locks=self.chain_locks, lock_seconds=self.settings.lock_seconds,
                               batch_size=self.settings.batch_size, fault=self._fault)
        rules = RulesInForce(self.rstore, config_rules=self.settings.rules, floor=self.settings.min_age_floor,
                             audit=self._audit)
        await rules.load(import_config=import_config)
        self._rules = rules  # only once loaded: status() before that says "no rules yet"
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

    async def stop_sweeps(self) -> None:
        """Stop the low-disk sweep and the scheduler (its sweep gets a grace period); the service stays open."""
        await self._full.stop()
        if self._scheduler is not None:
            await self._scheduler.stop()
            self._scheduler = None

    async def close(self) -> None:
        """Stop any sweep still running and release the data-dir lock (the counterpart of :meth:`open`)."""
        await self.stop_sweeps()  # a low-disk sweep may have started after stop_sweeps
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    async def stop(self) -> None:
        """:meth:`stop_sweeps` and :meth:`close`: for a service opened and started in one place."""
        await self.close()

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
                "(POST /api/v1/retention/run triggers it now)", lock_file=str(self.lock_file)) from None
        self._lock_fd = fd

    # ------------------------------------------------------------------ rules (see retention.rules)

    @property
    def stored(self) -> StoredRules:
        """The rules in force with their version and origin."""
        assert self._rules is not None, "RetentionService.open() first"
        return self._rules.stored

    @property
    def rules(self) -> RuleSet:
        """The rules in force."""
        return self.stored.rules

    def parse_rules(self, data: Mapping[str, Any]) -> RuleSet:
        """Validate a rule set in JSON form against the floor (raises RetentionRuleError naming the field)."""
        return self._rules.parse(data)

    async def set_rules(self, rules: RuleSet, actor: tuple[str, str]) -> StoredRules:
        """Make ``rules`` the rules in force (refused below the floor), audited."""
        return await self._rules.put(rules, actor)

    async def set_camera_rule(self, camera: str, rule_data: Mapping[str, Any], actor: tuple[str, str]) -> StoredRules:
        """Replace ``camera``'s override with ``rule_data`` (JSON form); validated in the context of the whole set."""
        return await self._rules.put_camera(camera, rule_data, actor)

    async def delete_camera_rule(self, camera: str, actor: tuple[str, str]) -> StoredRules:
        """Remove ``camera``'s override (``retention.rules.NoCameraRule``, a KeyError, when it has none)."""
        return await self._rules.delete_camera(camera, actor)

    # ------------------------------------------------------------------ sweeping

    async def preview(self, rules: RuleSet | None = None) -> Preview:
        """What a sweep would delete now under ``rules`` (default: the rules in force)."""
        return await self.sweeper.preview(self.rules if rules is None else rules)

    async def run_now(self, trigger: str = "manual", *, free_needed: int | None = None) -> SweepReport | None:
        """One sweep with the rules in force, after any sweep in progress (None: another node's turn)."""
        if trigger == "schedule" and self.cluster_gate is not None and not self.cluster_gate():
            return None  # the node holding the sweep's lease runs the scheduled sweep
        async with self._sweep_lock:
            self.sweeping = True
            held = self.index.hold("retention-sweep", wait=False, lapse_s=SWEEP_LAPSE_S, keepalive=True)
            try:
                got = await asyncio.to_thread(held.__enter__)
                try:
                    if not got:
                        raise RetentionBusy("a retention sweep is running on another node of the cluster; "
                                            "try again when it has finished")
                    report = await self.sweeper.run(self.rules, trigger=trigger, free_needed=free_needed)
                finally:
                    await asyncio.shield(asyncio.to_thread(held.__exit__, None, None, None))
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

    async def reload_rules(self) -> None:
        """Take up rules another node of the cluster stored."""
        if self._rules is not None:
            await self._rules.load(import_config=False)

    async def on_segment_stored(self, row: SegmentRow) -> None:
        """Ingest hook, after each new segment: legal hold when an active (open-ended) hold covers it."""
        try:
            await self.holds.on_segment_stored(row)
        except Exception:  # never fail ingest over this; the next sweep's reconcile retries
            log.exception("legal hold check of segment %s failed", row.id)

    async def on_spool_check(self, free_bytes: int) -> asyncio.Task | None:
        """Called after every spool-disk check with its free bytes; the storage-full sweep's task (see storagefull)."""
        return await self._full.check(free_bytes)

    # ------------------------------------------------------------------ status, metrics

    @property
    def storage_full(self) -> str | None:
        """Why retention can't make room on the spool disk, while that lasts."""
        return self._full.alarm

    @property
    def alarm(self) -> str | None:
        """The alarm this service adds to the server's status (storage full), or None."""
        return self._full.alarm

    def status(self) -> dict[str, Any]:
        """The ``retention`` part of the server's status and of ``GET /api/v1/retention``."""
        st = self._rules.stored if self._rules is not None else None
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
        """The ``nvr_retention_*`` metric families, into the server's exposition."""
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
