"""The index table ``exports``: one row per job, the job as a frozen dataclass, and the queries of the service.

A row goes ``queued`` → ``running`` → ``done`` or ``failed``. A ``done`` job's
bundle is the file ``bundle`` under the exports directory until it expires:
then ``bundle`` is cleared and ``expired_ms`` set (the row stays, so its
status and hashes remain answerable; the download is gone).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nvr.base.times import ms_to_rfc3339
from storage.index import Index

EXPORT_SCHEMA = """
CREATE TABLE IF NOT EXISTS exports (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,            -- queued, running, done, failed
    cameras TEXT NOT NULL,          -- JSON array
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    case_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    bundle TEXT,                    -- file name under the exports directory; NULL once removed
    size INTEGER,
    sha256 TEXT,                    -- of the zip
    manifest_sha256 TEXT,
    summary TEXT,                   -- JSON: counts, verdict, excluded, gaps
    error TEXT,
    expired_ms INTEGER              -- when the bundle was removed (kept past exports.keep)
)
"""
# Added after the first release: an index made before has the table without it.
_ADDED_COLUMNS = {"expired_ms": "INTEGER"}
_COLUMNS = ("id, state, cameras, start_ms, end_ms, case_id, reason, actor, role, created_ms, started_ms, "
            "finished_ms, bundle, size, sha256, manifest_sha256, summary, error, expired_ms")
# The jobs that hold (or will hold) a bundle on disk.
_KEPT = "((state = 'done' AND bundle IS NOT NULL) OR state IN ('queued', 'running'))"


@dataclass(frozen=True)
class ExportJob:
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

    def to_json(self) -> dict[str, Any]:
        t = lambda ms: ms_to_rfc3339(ms) if ms is not None else None  # noqa: E731
        return {
            "id": self.id, "state": self.state, "cameras": list(self.cameras), "start": t(self.start_ms),
            "end": t(self.end_ms), "case_id": self.case_id, "reason": self.reason, "requested_by": self.actor,
            "created": t(self.created_ms), "started": t(self.started_ms), "finished": t(self.finished_ms),
            "size": self.size, "sha256": self.sha256, "manifest_sha256": self.manifest_sha256,
            "summary": self.summary, "error": self.error, "expired": t(self.expired_ms),
            "status_url": f"/api/v1/exports/{self.id}",
            "bundle_url": f"/api/v1/exports/{self.id}/bundle" if self.state == "done" and self.bundle else None,
        }


@dataclass(frozen=True)
class Usage:
    """What one requester's exports hold: bundles kept or being made, and the bytes of those kept."""

    bundles: int
    bytes: int


def _job(r: tuple) -> ExportJob:
    (eid, state, cams, start, end, case, reason, actor, role, created, started, finished, bundle, size, sha,
     msha, summary, error, expired) = r
    return ExportJob(eid, state, tuple(json.loads(cams)), start, end, case, reason, actor, role, created, started,
                     finished, bundle, size, sha, msha, json.loads(summary) if summary else None, error, expired)


def ensure(index: Index) -> None:
    """Create the table, or add the columns a table of an older release lacks."""
    with index.transaction() as db:
        db.execute(EXPORT_SCHEMA)
        have = {row[1] for row in db.execute("PRAGMA table_info(exports)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in have:
                db.execute(f"ALTER TABLE exports ADD COLUMN {column} {kind}")


def fail_unfinished(index: Index, now: int, error: str) -> list[str]:
    """Mark every queued or running job failed (the server stopped under them); their ids."""
    with index.transaction() as db:
        stale = [r[0] for r in db.execute("SELECT id FROM exports WHERE state IN ('queued', 'running')")]
        db.execute("UPDATE exports SET state = 'failed', finished_ms = ?, error = ? "
                   "WHERE state IN ('queued', 'running')", (now, error))
    return stale


def insert(index: Index, *, eid: str, cameras: list[str], start_ms: int, end_ms: int, case_id: str, reason: str,
           actor: tuple[str, str], now: int) -> None:
    with index.transaction() as db:
        db.execute(
            "INSERT INTO exports (id, state, cameras, start_ms, end_ms, case_id, reason, actor, role, "
            "created_ms) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
            (eid, json.dumps(cameras), start_ms, end_ms, case_id, reason, actor[0], actor[1], now))


def get(index: Index, export_id: str) -> ExportJob | None:
    rows = index.query(f"SELECT {_COLUMNS} FROM exports WHERE id = ?", (export_id,))
    return _job(rows[0]) if rows else None


def update(index: Index, export_id: str, **fields: Any) -> None:
    cols = ", ".join(f"{k} = ?" for k in fields)
    with index.transaction() as db:
        db.execute(f"UPDATE exports SET {cols} WHERE id = ?", (*fields.values(), export_id))


def usage(index: Index, actor: str, *, excluding: str | None = None) -> Usage:
    """The bundles ``actor``'s exports keep or are making, and the bytes of the kept ones."""
    rows = index.query(f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = 'done' THEN size END), 0) FROM exports "
                       f"WHERE actor = ? AND id != ? AND {_KEPT}", (actor, excluding or ""))
    return Usage(rows[0][0], rows[0][1])


def kept(index: Index) -> list[ExportJob]:
    """Every done job whose bundle is still on disk, oldest first."""
    rows = index.query(f"SELECT {_COLUMNS} FROM exports WHERE state = 'done' AND bundle IS NOT NULL "
                       "ORDER BY finished_ms, id")
    return [_job(r) for r in rows]


def bundle_names(index: Index) -> set[str]:
    """The file names of every bundle a done job still points to."""
    return {r[0] for r in index.query("SELECT bundle FROM exports WHERE state = 'done' AND bundle IS NOT NULL")}
