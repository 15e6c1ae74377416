"""Export jobs as the service sees them: the index's ``exports`` rows (``storage/index/exports.py``) as frozen dataclasses.

A row goes ``queued`` → ``running`` → ``done`` or ``failed``. A ``done`` job's
bundle is the file ``bundle`` under the exports directory until it expires:
then ``bundle`` is cleared and ``expired_ms`` set (the row stays, so its
status and hashes remain answerable; the download is gone).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from nvr.base.times import ms_to_rfc3339
from storage.index import ExportRow, Index


@dataclass(frozen=True)
class ExportJob(ExportRow):
    """One job, with its API form."""

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


def _job(row: ExportRow | None) -> ExportJob | None:
    return ExportJob(**{f.name: getattr(row, f.name) for f in fields(ExportRow)}) if row is not None else None


def get(index: Index, export_id: str) -> ExportJob | None:
    return _job(index.exports.get(export_id))


def usage(index: Index, actor: str, *, excluding: str | None = None) -> Usage:
    """The bundles ``actor``'s exports keep or are making, and the bytes of the kept ones."""
    return Usage(*index.exports.usage(actor, excluding=excluding))


def kept(index: Index) -> list[ExportJob]:
    """Every done job whose bundle is still on disk, oldest first."""
    return [_job(r) for r in index.exports.kept()]  # type: ignore[misc]
