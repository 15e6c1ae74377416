"""The pure assessment: one camera's records, rows, tombstones, checkpoints and object checks in,
every failed check named out. No I/O, so the rules can be tested without S3.

The checks, by the names reports use:

``ledger_record``  the index holds no record at this seq, or one whose hash is
                   not what the signed chain attests (walking back from a
                   checkpoint: checkpoint head → record → its ``prev`` → …)
``ledger_seq``     the record stored at seq N says another seq (reordered)
``ledger_link``    the record's ``prev`` is not the hash of the record before it
                   (only blamed on records no checkpoint attests: when a signed
                   record's ``prev`` disagrees, its predecessor is the culprit)
``index_row``      the segment row (hashes, key, times, record hash) disagrees
                   with the ledger record, or is missing
``tombstone``      a tombstone names this seq but another record, or is itself
                   not what the chain attests
``object_missing`` (with other findings) the object is gone and no tombstone says why

plus the object checks of ``objects.py``. Ledger-wide problems: ``ledger_gap``
(records missing from the index), ``checkpoint_mismatch`` (two checkpoints attest
different histories), any flag on a record outside the range, and whatever the
gathering found in the bucket.

Gaps are holes of more than ``GAP_THRESHOLD_MS`` in the *recorded* time
(segment records, deleted ones included: deleted footage is listed as such,
not as a gap).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nvr.base import timeline
from nvr.base.ids import segment_id
from nvr.base.times import now_ms, parse_rfc3339
from nvr.custody.checkpoint import CHECK_MISMATCH, Checkpoint
from nvr.custody.verify.report import (
    STATUS_DELETED,
    STATUS_MISSING,
    STATUS_OK,
    STATUS_TAMPERED,
    STATUS_UNANCHORED,
    Finding,
    Gap,
    Problem,
    SegmentResult,
    VerifyReport,
)
from storage.index import SegmentRow
from storage.ledger import GENESIS, record_hash


@dataclass(frozen=True)
class ObjectCheck:
    """What fetching one segment's object showed."""

    present: bool
    failed: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class LedgerView:
    """Everything gathered about one camera for :func:`assess`."""

    camera: str
    start_ms: int
    end_ms: int
    in_range: tuple[int, ...]  # seqs of the segments in range (from records and from rows)
    span_from: int  # records[span_from..span_to] were loaded
    span_to: int
    records: Mapping[int, Mapping[str, Any] | None]  # seq the index stores it at -> record (None: not JSON)
    rows: Mapping[int, SegmentRow] = field(default_factory=dict)
    tombstones: Mapping[int, tuple[int, Mapping[str, Any]]] = field(default_factory=dict)  # seg seq -> (seq, rec)
    checkpoints: tuple[Checkpoint, ...] = ()  # valid (signature checked) checkpoints
    objects: Mapping[int, ObjectCheck] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()  # found while gathering (bucket-side checkpoint problems)
    gaps: bool = True  # report recording gaps (False when verifying one segment)


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return [(a, b) for a, b in out]


def segment_times(rec: Mapping[str, Any] | None, row: SegmentRow | None) -> tuple[int | None, int | None]:
    """Start and end of a segment: the record's when it has valid times, else the row's."""
    if rec is not None:
        try:
            return parse_rfc3339(rec["start"]), parse_rfc3339(rec["end"])
        except (KeyError, TypeError, ValueError):
            pass
    if row is not None:
        return row.start_ms, row.end_ms
    return None, None


def _row_findings(rec: Mapping[str, Any], rhash: str, row: SegmentRow | None) -> list[Finding]:
    if row is None:
        return [Finding("index_row", "the index has no segment row for this ledger record")]
    start, end = segment_times(rec, None)
    differ = [name for name, ours in (
        ("record_hash", rhash), ("sha256", rec.get("sha256")), ("size", rec.get("size")),
        ("object_key", rec.get("object_key")), ("object_sha256", rec.get("object_sha256")),
        ("object_size", rec.get("object_size")), ("key_id", rec.get("key_id")), ("partial", rec.get("partial")),
        ("start_ms", start), ("end_ms", end),
    ) if getattr(row, name) != ours]
    if differ:
        return [Finding("index_row", f"the index row's {', '.join(differ)} differ from the ledger record")]
    return []


def assess(view: LedgerView) -> VerifyReport:
    """Name every failed check of one camera's segments in range (pure)."""
    cam, records = view.camera, view.records
    flags: dict[int, list[Finding]] = {}
    problems: list[Problem] = list(view.problems)

    def flag(seq: int, check: str, detail: str) -> None:
        flags.setdefault(seq, []).append(Finding(check, detail))

    hashes = {s: record_hash(r) for s, r in records.items() if r is not None}
    by_hash = {h: s for s, h in hashes.items()}

    # 1. Structure: every seq of the span present, parseable, in its place, of this camera.
    missing = [s for s in range(view.span_from, view.span_to + 1) if s not in records]
    for a, b in _ranges(missing):
        what = f"record {a}" if a == b else f"records {a}-{b}"
        problems.append(Problem(cam, "ledger_gap", f"ledger {what} missing from the index", a))
    for s, rec in records.items():
        if rec is None:
            flag(s, "ledger_record", f"the record stored at seq {s} is not valid JSON")
            continue
        if rec.get("seq") != s:
            flag(s, "ledger_seq", f"the record stored at seq {s} says seq {rec.get('seq')!r} (reordered)")
        if rec.get("camera") != cam:
            flag(s, "ledger_record", f"the record stored at seq {s} belongs to camera {rec.get('camera')!r}")

    # 2. Anchoring: walk back from each valid checkpoint, following the attested prev hashes.
    anchored: dict[int, int] = {}
    cps: dict[int, Checkpoint] = {}
    for cp in view.checkpoints:
        if view.span_from <= cp.seq <= view.span_to and cp.camera == cam:
            cps.setdefault(cp.seq, cp)
    prev_cp: Checkpoint | None = None
    for cp in (cps[s] for s in sorted(cps)):
        stop = prev_cp.seq if prev_cp is not None else view.span_from - 1
        attested: Any = cp.head
        pos, broken = cp.seq, False
        while pos > stop:
            rec = records.get(pos)
            if rec is None:
                broken = True
                break
            if hashes[pos] == attested:
                anchored[pos] = cp.seq
                attested = rec.get("prev")
            else:
                alt = by_hash.get(attested) if isinstance(attested, str) else None
                where = f" (that record is stored at seq {alt})" if alt is not None else ""
                flag(pos, "ledger_record",
                     f"record {pos} is not the record the signed chain attests (checkpoint {cp.seq}){where}")
                attested = records[alt].get("prev") if alt is not None else rec.get("prev")  # type: ignore[union-attr]
            pos -= 1
        if prev_cp is not None and not broken and attested != prev_cp.head:
            problems.append(Problem(cam, CHECK_MISMATCH,
                                    f"checkpoints {prev_cp.seq} and {cp.seq} attest different histories", cp.seq))
        prev_cp = cp

    # 3. Links, forward; a break is blamed on the later record only when no checkpoint attests it.
    for s in range(view.span_from, view.span_to + 1):
        rec = records.get(s)
        if rec is None or s in anchored:
            continue
        if s == 0:
            want = GENESIS
        elif s - 1 in hashes:
            want = hashes[s - 1]
        else:
            continue  # predecessor missing (a gap problem) or not loaded
        if rec.get("prev") != want:
            flag(s, "ledger_link", f"record {s}'s prev is not the hash of record {s - 1}")

    # 4. Segments in range.
    results: list[SegmentResult] = []
    in_range = set(view.in_range)
    tomb_seqs = {t[0] for t in view.tombstones.values()}
    for seq in sorted(in_range):
        rec = records.get(seq)
        row = view.rows.get(seq)
        findings = list(flags.get(seq, []))
        rhash = hashes.get(seq)
        if seq not in records:
            findings.append(Finding("ledger_record", f"the index holds no ledger record at seq {seq}"))
        elif rec is not None and rec.get("type") != "segment":
            findings.append(Finding("ledger_record", f"the record at seq {seq} is a {rec.get('type')!r} record, "
                                                     "not this segment's"))
        elif rec is not None and rhash is not None:
            findings += _row_findings(rec, rhash, row)
        start, end = segment_times(rec, row)
        tomb = view.tombstones.get(seq)
        missing_obj = False
        rule = deleted_at = None
        tomb_seq = tomb_cp = None
        if tomb is not None:
            tomb_seq, trec = tomb
            rule, deleted_at = trec.get("rule"), trec.get("deleted_at")
            tomb_cp = anchored.get(tomb_seq)
            if rhash is not None and trec.get("segment_record") != rhash:
                findings.append(Finding("tombstone", f"tombstone {tomb_seq} names another record for seq {seq}"))
            for f in flags.get(tomb_seq, []):
                findings.append(Finding("tombstone", f"tombstone {tomb_seq}: {f.detail}"))
        else:
            obj = view.objects.get(seq)
            if obj is not None and not obj.present:
                missing_obj = True
            elif obj is not None:
                findings += obj.failed
        if findings and missing_obj:
            findings.append(Finding("object_missing", "the object is gone and no retention tombstone says why"))
        if findings:
            status = STATUS_TAMPERED
        elif missing_obj:
            status = STATUS_MISSING
        elif tomb is not None:
            status = STATUS_DELETED
        elif seq not in anchored:
            status = STATUS_UNANCHORED
        else:
            status = STATUS_OK
        src = rec if rec is not None else {}
        results.append(SegmentResult(
            id=segment_id(cam, seq), camera=cam, seq=seq, start_ms=start, end_ms=end, status=status,
            failed=tuple(findings), checkpoint=anchored.get(seq),
            sha256=src.get("sha256", row.sha256 if row else None), size=src.get("size", row.size if row else None),
            object_key=src.get("object_key", row.object_key if row else None),
            rule=rule, deleted_at=deleted_at, tombstone_seq=tomb_seq, tombstone_checkpoint=tomb_cp,
        ))

    # 5. Flags on records outside the range (other segments, tombstones, exports in the span) are problems.
    for s in sorted(flags):
        if s in in_range or s in tomb_seqs:
            continue
        for f in flags[s]:
            problems.append(Problem(cam, f.check, f.detail, s))

    gaps: list[Gap] = []
    if view.gaps:
        spans = sorted((r.start_ms, r.end_ms) for r in results if r.start_ms is not None and r.end_ms is not None)
        gaps = [Gap(cam, s, e) for s, e in timeline.gaps(spans, view.start_ms, view.end_ms)]

    seen: set[tuple[str, int | None, str]] = set()
    unique = []
    for p in problems:
        key = (p.check, p.seq, p.detail)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return VerifyReport(cameras=(cam,), start_ms=view.start_ms, end_ms=view.end_ms, segments=tuple(results),
                        gaps=tuple(gaps), problems=tuple(unique), checked_ms=now_ms())
