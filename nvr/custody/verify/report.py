"""The verification report: per-segment statuses, ledger-wide problems, gaps, the verdict, JSON forms.

A segment is ``ok`` (every check passed and a valid checkpoint anchors its
record), ``unanchored`` (every check passed but no checkpoint covers it yet:
it is newer than the last checkpoint, or a hole in the chain cuts it off),
``tampered`` (the failed checks are listed, the first is ``check``),
``missing`` (object gone without a retention tombstone) or
``deleted-by-retention`` (with the tombstone's rule and time; the segment
record itself stays in the chain and must still verify).

Verdict: ``failed`` if any segment is tampered or missing or any problem was
found; else ``unanchored`` if some segment (or the tombstone of a deleted one)
is not covered by a checkpoint yet; else ``ok``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nvr.base.times import ms_to_rfc3339, now_ms

STATUS_OK = "ok"
STATUS_UNANCHORED = "unanchored"
STATUS_TAMPERED = "tampered"
STATUS_MISSING = "missing"
STATUS_DELETED = "deleted-by-retention"
STATUSES = (STATUS_OK, STATUS_UNANCHORED, STATUS_TAMPERED, STATUS_MISSING, STATUS_DELETED)

VERDICT_OK = "ok"
VERDICT_UNANCHORED = "unanchored"
VERDICT_FAILED = "failed"


@dataclass(frozen=True)
class Finding:
    """One failed check: its name (as reports show it) and what was seen."""

    check: str
    detail: str


@dataclass(frozen=True)
class SegmentResult:
    """The status of one segment in range, with every failed check."""

    id: str
    camera: str
    seq: int
    start_ms: int | None
    end_ms: int | None
    status: str
    failed: tuple[Finding, ...] = ()
    checkpoint: int | None = None  # seq of the signed checkpoint that anchors the record
    sha256: str | None = None
    size: int | None = None
    object_key: str | None = None
    rule: str | None = None
    deleted_at: str | None = None
    tombstone_seq: int | None = None
    tombstone_checkpoint: int | None = None

    @property
    def check(self) -> str | None:
        return self.failed[0].check if self.failed else None

    @property
    def checks(self) -> tuple[str, ...]:
        return tuple(f.check for f in self.failed)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "camera": self.camera, "seq": self.seq,
            "start": ms_to_rfc3339(self.start_ms) if self.start_ms is not None else None,
            "end": ms_to_rfc3339(self.end_ms) if self.end_ms is not None else None,
            "status": self.status, "check": self.check,
            "failed_checks": [{"check": f.check, "detail": f.detail} for f in self.failed],
            "checkpoint": self.checkpoint, "sha256": self.sha256, "size": self.size, "object_key": self.object_key,
        }
        if self.status == STATUS_DELETED or self.tombstone_seq is not None:
            out.update(rule=self.rule, deleted_at=self.deleted_at, tombstone_seq=self.tombstone_seq,
                       tombstone_checkpoint=self.tombstone_checkpoint)
        return out


@dataclass(frozen=True)
class Problem:
    """A finding about a camera's ledger as a whole (not one segment in range)."""

    camera: str
    check: str
    detail: str
    seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"camera": self.camera, "check": self.check, "seq": self.seq, "detail": self.detail}


@dataclass(frozen=True)
class Gap:
    """A hole in the recorded time of one camera."""

    camera: str
    start_ms: int
    end_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"camera": self.camera, "start": ms_to_rfc3339(self.start_ms), "end": ms_to_rfc3339(self.end_ms),
                "seconds": (self.end_ms - self.start_ms) / 1000}


@dataclass(frozen=True)
class VerifyReport:
    """Everything one verification found; ``verdict`` sums it up."""

    cameras: tuple[str, ...]
    start_ms: int
    end_ms: int
    segments: tuple[SegmentResult, ...]
    gaps: tuple[Gap, ...]
    problems: tuple[Problem, ...]
    checked_ms: int

    @property
    def verdict(self) -> str:
        if self.problems or any(s.status in (STATUS_TAMPERED, STATUS_MISSING) for s in self.segments):
            return VERDICT_FAILED
        if any(s.status == STATUS_UNANCHORED
               or (s.status == STATUS_DELETED and (s.checkpoint is None or s.tombstone_checkpoint is None))
               for s in self.segments):
            return VERDICT_UNANCHORED
        return VERDICT_OK

    @property
    def ok(self) -> bool:
        return self.verdict == VERDICT_OK

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for seg in self.segments:
            out[seg.status] += 1
        return out

    def by_id(self) -> dict[str, SegmentResult]:
        return {s.id: s for s in self.segments}

    def to_json(self) -> dict[str, Any]:
        return {
            "cameras": list(self.cameras), "start": ms_to_rfc3339(self.start_ms), "end": ms_to_rfc3339(self.end_ms),
            "checked_at": ms_to_rfc3339(self.checked_ms), "verdict": self.verdict,
            "summary": {**self.counts(), "segments": len(self.segments), "gaps": len(self.gaps),
                        "problems": len(self.problems)},
            "segments": [s.to_json() for s in self.segments],
            "gaps": [g.to_json() for g in self.gaps],
            "problems": [p.to_json() for p in self.problems],
        }

    def audit_detail(self) -> dict[str, Any]:
        """A compact form for the audit log: the verdict, counts, and what failed."""
        bad = [{"id": s.id, "status": s.status, "check": s.check} for s in self.segments
               if s.status in (STATUS_TAMPERED, STATUS_MISSING)]
        return {"start": ms_to_rfc3339(self.start_ms), "end": ms_to_rfc3339(self.end_ms), "verdict": self.verdict,
                "counts": self.counts(), "gaps": len(self.gaps), "failed": bad[:50],
                "problems": [{"check": p.check, "seq": p.seq} for p in self.problems][:50]}


def combine(reports: list[VerifyReport], start_ms: int, end_ms: int) -> VerifyReport:
    """One report over several cameras' reports."""
    return VerifyReport(
        cameras=tuple(c for r in reports for c in r.cameras), start_ms=start_ms, end_ms=end_ms,
        segments=tuple(s for r in reports for s in r.segments), gaps=tuple(g for r in reports for g in r.gaps),
        problems=tuple(p for r in reports for p in r.problems),
        checked_ms=max((r.checked_ms for r in reports), default=now_ms()),
    )
