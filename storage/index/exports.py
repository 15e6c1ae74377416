"""The ``exports`` table: one row per evidence export job (``queued`` → ``running`` → ``done`` | ``failed``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage.index._engine import Engine


@dataclass(frozen=True)
class ExportRow:
    id: str
    state: str
    cameras: tuple[str, ...]
    start_ms: int
    end_ms: int
    case_id: str
    reason: str
    actor: str
    role: str
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    bundle: str | None
    size: int | None
    sha256: str | None
    manifest_sha256: str | None
    summary: dict[str, Any] | None
    error: str | None
    expired_ms: int | None = None


_COLUMNS = ("id, state, cameras, start_ms, end_ms, case_id, reason, actor, role, created_ms, started_ms, "
            "finished_ms, bundle, size, sha256, manifest_sha256, summary, error, expired_ms")
# Columns a job's progress may set (``update``); a name not listed is a bug, never SQL.
UPDATABLE = frozenset({"state", "started_ms", "finished_ms", "bundle", "size", "sha256", "manifest_sha256",
                       "summary", "error", "expired_ms"})
# The jobs that hold (or will hold) a bundle on disk.
_KEPT = "((state = 'done' AND bundle IS NOT NULL) OR state IN ('queued', 'running'))"


def _row(r: Sequence[Any]) -> ExportRow:
    (eid, state, cams, start, end, case, reason, actor, role, created, started, finished, bundle, size, sha,
     msha, summary, error, expired) = r
    return ExportRow(eid, state, tuple(json.loads(cams)), start, end, case, reason, actor, role, created, started,
                     finished, bundle, size, sha, msha, json.loads(summary) if summary else None, error, expired)


class Exports:
    """``index.exports``."""

    def __init__(self, engine: Engine):
        self._engine = engine

    def fail_unfinished(self, now: int, error: str) -> list[str]:
        """Mark every queued or running job failed (the server stopped under them); their ids."""
        with self._engine.write() as tx:
            stale = [r[0] for r in tx.all("SELECT id FROM exports WHERE state IN ('queued', 'running') ORDER BY id")]
            tx.execute("UPDATE exports SET state = 'failed', finished_ms = ?, error = ? "
                       "WHERE state IN ('queued', 'running')", (now, error))
        return stale

    def insert(self, *, eid: str, cameras: list[str], start_ms: int, end_ms: int, case_id: str, reason: str,
               actor: tuple[str, str], now: int) -> None:
        with self._engine.write() as tx:
            tx.execute(
                "INSERT INTO exports (id, state, cameras, start_ms, end_ms, case_id, reason, actor, role, "
                "created_ms) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                (eid, json.dumps(cameras), start_ms, end_ms, case_id, reason, actor[0], actor[1], now))

    def get(self, export_id: str) -> ExportRow | None:
        row = self._engine.one(f"SELECT {_COLUMNS} FROM exports WHERE id = ?", (export_id,))
        return _row(row) if row else None

    def update(self, export_id: str, **fields: Any) -> None:
        """Set the named columns of one job (``summary`` as its JSON text)."""
        bad = set(fields) - UPDATABLE
        if bad:
            raise ValueError(f"not export columns: {sorted(bad)}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._engine.write() as tx:
            tx.execute(f"UPDATE exports SET {cols} WHERE id = ?", (*fields.values(), export_id))

    def usage(self, actor: str, *, excluding: str | None = None) -> tuple[int, int]:
        """(bundles, bytes): what ``actor``'s exports keep or are making, and the bytes of the kept ones."""
        row = self._engine.one(
            f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = 'done' THEN size END), 0) FROM exports "
            f"WHERE actor = ? AND id != ? AND {_KEPT}", (actor, excluding or ""))
        return int(row[0]), int(row[1])

    def kept(self) -> list[ExportRow]:
        """Every done job whose bundle is still on disk, oldest first."""
        return [_row(r) for r in self._engine.all(
            f"SELECT {_COLUMNS} FROM exports WHERE state = 'done' AND bundle IS NOT NULL ORDER BY finished_ms, id")]

    def bundle_names(self) -> set[str]:
        """The file names of every bundle a done job still points to."""
        return {r[0] for r in self._engine.all("SELECT bundle FROM exports WHERE state = 'done' AND bundle IS NOT NULL")}
