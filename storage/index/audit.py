"""The audit log: one hash chain of every access, change, loss, gap and deletion."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nvr.base.times import now_ms
from storage.index._engine import Engine
from storage.index.segments import select
from storage.ledger import GENESIS, canonical_json, record_hash


@dataclass(frozen=True)
class AuditEntry:
    id: int
    ts_ms: int
    actor: str
    role: str
    action: str
    target: str
    detail: dict[str, Any]
    prev: str
    hash: str


class AuditTables:
    """The ``audit`` table (a part of :class:`storage.index.Index`)."""

    _engine: Engine

    def append_audit(
        self, *, actor: str, role: str, action: str, target: str, detail: Mapping[str, Any], ts_ms: int | None = None
    ) -> AuditEntry:
        """Append one hash-chained audit entry."""
        ts = ts_ms if ts_ms is not None else now_ms()
        with self._engine.write() as tx:
            tx.lock("audit")  # the id and prev of the next entry are read from the last one
            last = tx.one("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
            new_id, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            body = {
                "id": new_id, "ts_ms": ts, "actor": actor, "role": role, "action": action,
                "target": target, "detail": dict(detail), "prev": prev,
            }
            h = record_hash(body)
            tx.execute(
                "INSERT INTO audit (id, ts_ms, actor, role, action, target, detail, prev, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new_id, ts, actor, role, action, target, canonical_json(dict(detail)).decode("utf-8"), prev, h),
            )
        return AuditEntry(new_id, ts, actor, role, action, target, dict(detail), prev, h)

    def audit_entries(
        self,
        *,
        action: str | None = None,
        target: str | None = None,
        actor: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        after_id: int | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Audit entries matching every given filter, oldest first."""
        sql, args = select(
            "SELECT id, ts_ms, actor, role, action, target, detail, prev, hash FROM audit",
            [("actor = ?", actor), ("ts_ms >= ?", start_ms), ("ts_ms < ?", end_ms), ("id > ?", after_id),
             ("action = ?", action), ("target = ?", target)],
            order="id", limit=limit,
        )
        return [
            AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8])
            for r in self._engine.all(sql, args)
        ]
