"""The retention tests' data dir: storage parts with object lock (``tests.support.parts``), retention on top.

Segments are made fast without ffmpeg: random payloads spooled and ingested
with back-dated times (``StorageParts.put_segments``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from nvr.base.prometheus import Exposition
from nvr.config.retention import Rule, RuleSet
from retention.service import RetentionService, RetentionSettings
from storage.audit import AuditLog
from storage.chainlock import ChainLocks
from storage.index import AuditEntry, Index, SegmentRow
from storage.ledger import verify_chain
from storage.objectstore import ObjectStore
from tests.support.parts import StorageParts, open_parts
from tests.support.rawsql import sql_rows

MIN = 60_000
H = 60 * MIN
ONE_MINUTE = RuleSet(default=Rule(max_age=60.0, min_age=60.0))


class Crash(Exception):
    """Stands for the process dying at this point."""


@dataclass
class RetentionEnv:
    """A data dir's storage, its audit log, and the retention services opened on it (stopped at the end)."""

    parts: StorageParts
    audit: AuditLog
    services: list[RetentionService] = field(default_factory=list)

    @property
    def store(self) -> ObjectStore:
        return self.parts.store

    @property
    def index(self) -> Index:
        return self.parts.index

    async def add(self, camera: str, start_ms: int, count: int, *, lock_seconds: float = 0.0,
                  svc: RetentionService | None = None) -> list[SegmentRow]:
        """``count`` contiguous 2 s segments from ``start_ms``, stored and indexed (the ingest hook called)."""
        return await self.parts.put_segments(
            camera, start_ms, range(count), payload=lambda n: os.urandom(3000),
            ingestor=self.parts.ingestor(lock_seconds=lock_seconds),
            on_stored=svc.on_segment_stored if svc is not None else None)

    async def service(self, rules: RuleSet = ONE_MINUTE, *, floor: float = 60.0, lock_seconds: float = 0.0,
                      fault=None, **settings) -> RetentionService:
        s = RetentionSettings(rules=rules, min_age_floor=floor, lock_seconds=lock_seconds,
                              sweep_interval=settings.pop("sweep_interval", 3600.0),
                              first_run_delay=settings.pop("first_run_delay", 3600.0), **settings)
        return await self._open(s, fault)

    async def _open(self, settings: RetentionSettings, fault) -> RetentionService:
        svc = RetentionService(index=self.index, store=self.store, node_id="test", audit=self.audit,
                               settings=settings, chain_locks=ChainLocks(),
                               lock_file=self.parts.data_dir / "retention.lock", fault=fault)
        await svc.open()
        self.services.append(svc)
        return svc

    async def restart(self, svc: RetentionService, fault=None) -> RetentionService:
        """The same service after a crash: a new one on the same index (the lock of the dead one released)."""
        await svc.stop()
        return await self._open(svc.settings, fault)

    async def crash_after_marking(self, svc: RetentionService) -> RetentionService:
        """Restart ``svc`` with a fault at the end of the sweep's step 2 and run it into the crash."""

        def crash(at: str, segment: str | None) -> None:
            if at == "marked":
                raise Crash(at)

        crashing = await self.restart(svc, fault=crash)
        with pytest.raises(Crash):
            await crashing.run_now("test")
        return crashing

    def rows(self, camera: str) -> list[SegmentRow]:
        return self.index.segments(camera)

    def versions(self) -> set[tuple[str, str]]:
        return {(o.object_name, o.version_id) for o in self.store.client.list_objects(
            self.store.bucket, recursive=True, include_version=True)}

    def tombstones(self, camera: str) -> list[dict]:
        return [r for r in self.index.ledger_records(camera) if r["type"] == "tombstone"]

    def legal_hold(self, row: SegmentRow) -> bool:
        st = self.store.stat(row.object_key, row.version_id)
        assert st is not None, f"{row.id} is gone from the bucket"
        return st.legal_hold

    def actions(self, action: str) -> list[AuditEntry]:
        return self.index.audit_entries(action=action)

    def assert_consistent(self, *cameras: str) -> None:
        """No pending row, one tombstone per deleted segment, bucket == stored rows, chains intact."""
        stored, deleted = set(), []
        for cam in cameras:
            for r in self.rows(cam):
                assert r.state in ("stored", "deleted"), r
                if r.state == "stored":
                    stored.add((r.object_key, r.version_id))
                else:
                    deleted.append(r)
            assert verify_chain(cam, self.index.ledger_records(cam)) == []
            stones = [t["segment_seq"] for t in self.tombstones(cam)]
            assert sorted(stones) == sorted(r.seq for r in deleted if r.camera == cam)
        assert self.versions() == stored  # nothing orphaned, nothing missing
        assert sql_rows(self.index, "SELECT COUNT(*) FROM retention_pending")[0][0] == 0


def metrics_text(svc: RetentionService) -> str:
    exp = Exposition()
    svc.write_metrics(exp)
    return exp.text()


@pytest.fixture
async def env(tmp_path, s3, bucket):
    parts = open_parts(tmp_path, s3, bucket, object_lock=True)
    e = RetentionEnv(parts, AuditLog(parts.index))
    yield e
    for svc in e.services:
        await svc.stop()
    parts.close()
