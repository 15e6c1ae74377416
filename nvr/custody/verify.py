"""Verification of stored footage against the ledger and its signed checkpoints.

Two layers, so the rules can be tested without S3:

* :func:`assess` is pure: given one camera's ledger records (by the seq the
  index stores them at), its index rows, its tombstones, the signed checkpoints
  and what fetching each object showed, it names every failed check.
* :func:`verify_range` / :func:`verify_segment` gather those facts from the
  index and the bucket (blocking work on the store's thread pool), then call it.

What is checked, per segment in range (names as they appear in reports):

``ledger_record``  the index holds no record at this seq, or one whose hash is
                   not what the signed chain attests (walking back from a
                   checkpoint: checkpoint head → record → its ``prev`` → …)
``ledger_seq``     the record stored at seq N says another seq (reordered)
``ledger_link``    the record's ``prev`` is not the hash of the record before it
                   (only blamed on records no checkpoint attests: when a signed
                   record's ``prev`` disagrees, its predecessor is the culprit)
``index_row``      the segment row (hashes, key, times, record hash) disagrees
                   with the ledger record, or is missing
``object_version`` the indexed version is gone and another object sits at the key
``record_metadata`` the record in the object's S3 metadata is not the ledger record
``object_sha256``  SHA-256 (or size) of the stored object differs
``header``/``unwrap``/``decrypt``  envelope checks (``decrypt``: GCM
                   authentication, which also fails for another camera's or
                   another time's object: the AAD binds camera, key and times)
``sha256``         SHA-256 (or size) of the decrypted segment differs
``tombstone``      a tombstone names this seq but another record, or is itself
                   not what the chain attests
``kek``            the key-encryption key is not in the keyring

A segment is then ``ok`` (every check passed and a valid checkpoint anchors its
record), ``unanchored`` (every check passed but no checkpoint covers it yet:
it is newer than the last checkpoint, or a hole in the chain cuts it off),
``tampered`` (the failed checks are listed, the first is ``check``),
``missing`` (object gone without a retention tombstone) or
``deleted-by-retention`` (with the tombstone's rule and time; the segment
record itself stays in the chain and must still verify).

Ledger-wide problems (the verdict fails on any): ``ledger_gap`` (records
missing from the index), ``checkpoint_format``, ``checkpoint_unknown_key``,
``checkpoint_signature`` (a checkpoint object that does not verify with the
node's keys), ``checkpoint_rollback`` (the index chain ends before a signed
checkpoint, a checkpoint the index recorded is gone from the bucket, or a
checkpoint object holds an older checkpoint), ``checkpoint_mismatch`` (a
checkpoint attests a different record than the index holds, or two
checkpoints attest different histories), plus any record flag outside the range.

Verdict: ``failed`` if any segment is tampered or missing or any problem was
found; else ``unanchored`` if some segment (or the tombstone of a deleted one)
is not covered by a checkpoint yet; else ``ok``.

Gaps are holes of more than ``GAP_THRESHOLD_MS`` in the *recorded* time
(segment records, deleted ones included: deleted footage is listed as such,
not as a gap).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nvr.base import timeline
from nvr.base.errors import NotFound
from nvr.base.ids import segment_id
from nvr.base.times import ms_to_rfc3339, now_ms, parse_rfc3339
from nvr.custody.checkpoint import (
    CHECK_MISMATCH,
    CHECK_ROLLBACK,
    Checkpoint,
    CheckpointError,
    checkpoint_from_json,
    checkpoint_key,
    ensure_tables,
    get_bytes,
    indexed_checkpoints,
    latest_indexed_checkpoint,
    list_checkpoint_seqs,
    parse_checkpoint,
    trusted_keys,
)
from storage.envelope import SegmentContext, decrypt
from storage.errors import IntegrityError, KeyringError
from storage.index import Index, SegmentRow
from storage.keyring import Keyring
from storage.ledger import GENESIS, canonical_json, record_hash
from storage.objectstore import ObjectStore

STATUS_OK = "ok"
STATUS_UNANCHORED = "unanchored"
STATUS_TAMPERED = "tampered"
STATUS_MISSING = "missing"
STATUS_DELETED = "deleted-by-retention"
STATUSES = (STATUS_OK, STATUS_UNANCHORED, STATUS_TAMPERED, STATUS_MISSING, STATUS_DELETED)

VERDICT_OK = "ok"
VERDICT_UNANCHORED = "unanchored"
VERDICT_FAILED = "failed"


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class Finding:
    check: str
    detail: str


@dataclass(frozen=True)
class SegmentResult:
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
    camera: str
    start_ms: int
    end_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"camera": self.camera, "start": ms_to_rfc3339(self.start_ms), "end": ms_to_rfc3339(self.end_ms),
                "seconds": (self.end_ms - self.start_ms) / 1000}


@dataclass(frozen=True)
class VerifyReport:
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


# ---------------------------------------------------------------------- the pure core


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


def _times(rec: Mapping[str, Any] | None, row: SegmentRow | None) -> tuple[int | None, int | None]:
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
    start, end = _times(rec, None)
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
        start, end = _times(rec, row)
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


# ---------------------------------------------------------------------- object checks (blocking)

PlaintextSink = Callable[[Mapping[str, Any], bytes], None]


def check_object(store: ObjectStore, keyring: Keyring, record: Mapping[str, Any], version_id: str | None,
                 sink: PlaintextSink | None = None) -> ObjectCheck:
    """Fetch one segment's object and run every object-level check (blocking: run it with ``store.run``).

    ``sink(record, plaintext)`` receives the decrypted bytes when every check passed.
    """
    key = record["object_key"]
    failed: list[Finding] = []
    st = store.stat(key, version_id)
    if st is None and version_id is not None:
        st = store.stat(key)
        if st is not None:
            failed.append(Finding("object_version", f"version {version_id} of {key} is gone; another object "
                                                    "now sits at the key"))
    if st is None:
        return ObjectCheck(present=False)
    if st.record is None or canonical_json(st.record) != canonical_json(dict(record)):
        failed.append(Finding("record_metadata", "the ledger record in the object's metadata differs from the "
                                                 "index's (another segment's object, or a rewritten one)"))
    blob = store.get(key, st.version_id)
    got = hashlib.sha256(blob).hexdigest()
    if got != record.get("object_sha256") or len(blob) != record.get("object_size"):
        failed.append(Finding("object_sha256", f"stored object SHA-256 is {got} ({len(blob)} bytes), the ledger "
                                               f"recorded {record.get('object_sha256')} ({record.get('object_size')})"))
    ctx = SegmentContext(camera=record["camera"], object_key=key, start=record["start"], end=record["end"])
    try:
        plain = decrypt(blob, ctx, keyring.kek)
    except IntegrityError as e:
        failed.append(Finding(e.check or "decrypt", str(e)))
        return ObjectCheck(present=True, failed=tuple(failed))
    except KeyringError as e:
        failed.append(Finding("kek", str(e)))
        return ObjectCheck(present=True, failed=tuple(failed))
    del blob
    got = hashlib.sha256(plain).hexdigest()
    if got != record.get("sha256") or len(plain) != record.get("size"):
        failed.append(Finding("sha256", f"decrypted SHA-256 is {got} ({len(plain)} bytes), the ledger recorded "
                                        f"{record.get('sha256')} ({record.get('size')})"))
    if not failed and sink is not None:
        sink(record, plain)
    return ObjectCheck(present=True, failed=tuple(failed))


# ---------------------------------------------------------------------- gathering (index + bucket)


@dataclass(frozen=True)
class Evidence:
    """The chain material that proves a camera's verified segments (what an export bundle carries)."""

    camera: str
    records: tuple[dict[str, Any], ...]  # span_from..span_to, in seq order
    checkpoints: tuple[Checkpoint, ...]  # valid checkpoints within the span


def _json_or_none(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


_FIELD = "CASE WHEN json_valid(record) THEN json_extract(record, ?) END"


def _gather_index(index: Index, camera: str, start_ms: int, end_ms: int, only_seq: int | None):
    """Rows and in-range seqs (from the rows *and* the ledger), tombstones and the head (blocking)."""
    ensure_tables(index)
    if only_seq is not None:
        row = index.segment(segment_id(camera, only_seq))
        rows = {only_seq: row} if row is not None else {}
        seqs = {only_seq}
    else:
        rows = {r.seq: r for r in index.segments(camera, start_ms, end_ms)}
        found = index.query(
            f"SELECT seq FROM ledger WHERE camera = ? AND {_FIELD} = 'segment' AND {_FIELD} > ? AND {_FIELD} < ?",
            (camera, "$.type", "$.end", ms_to_rfc3339(start_ms), "$.start", ms_to_rfc3339(end_ms)))
        seqs = set(rows) | {r[0] for r in found}
    tombstones: dict[int, tuple[int, dict[str, Any]]] = {}
    if seqs:
        lo, hi = min(seqs), max(seqs)
        for seq, text in index.query(
                f"SELECT seq, record FROM ledger WHERE camera = ? AND type = 'tombstone' "
                f"AND {_FIELD} BETWEEN ? AND ? ORDER BY seq", (camera, "$.segment_seq", lo, hi)):
            rec = _json_or_none(text)
            if rec is not None and rec.get("segment_seq") in seqs:
                tombstones.setdefault(rec["segment_seq"], (seq, rec))
    return rows, seqs, tombstones, index.chain_head(camera).seq


def _load_records(index: Index, camera: str, lo: int, hi: int) -> dict[int, dict[str, Any] | None]:
    rows = index.query("SELECT seq, record FROM ledger WHERE camera = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                       (camera, lo, hi))
    return {seq: _json_or_none(text) for seq, text in rows}


class _Checkpoints:
    """Loads and checks the camera's checkpoints from the bucket, remembering the problems found."""

    def __init__(self, store: ObjectStore, camera: str, trusted: Mapping[str, Ed25519PublicKey]):
        self.store, self.camera, self.trusted = store, camera, trusted
        self.valid: dict[int, Checkpoint] = {}
        self.loaded: set[int] = set()
        self.absent: set[int] = set()
        self.problems: list[Problem] = []

    async def load(self, seq: int) -> Checkpoint | None:
        if seq not in self.loaded:
            self.loaded.add(seq)
            data = await self.store.run(get_bytes, self.store, checkpoint_key(self.camera, seq))
            if data is None:
                self.absent.add(seq)
            else:
                try:
                    self.valid[seq] = parse_checkpoint(data, self.trusted, camera=self.camera, seq=seq)
                except CheckpointError as e:
                    self.problems.append(Problem(self.camera, e.check or "checkpoint_format", str(e), seq))
        return self.valid.get(seq)


async def _verify_camera(store: ObjectStore, index: Index, keyring: Keyring, camera: str, start_ms: int,
                         end_ms: int, *, only_seq: int | None = None, sink: PlaintextSink | None = None,
                         concurrency: int = 4) -> tuple[VerifyReport, Evidence]:
    rows, seqs, tombstones, head_seq = await asyncio.to_thread(_gather_index, index, camera, start_ms, end_ms,
                                                               only_seq)
    trusted = trusted_keys(keyring)
    if seqs:
        lo = min(seqs)
        hi = max([*seqs, *(t[0] for t in tombstones.values())])
    else:
        lo = hi = head_seq + 1
    cps = _Checkpoints(store, camera, trusted)
    problems: list[Problem] = []

    # Checkpoints in the bucket: those inside the range, the first valid one at or after its end (it
    # anchors the range), and any newer than the index's latest (the bucket's newest must not be ahead
    # of the index chain). Listing is bounded to those, never the camera's whole history.
    idx_latest = await asyncio.to_thread(latest_indexed_checkpoint, index, camera)
    for seq in await store.run(list_checkpoint_seqs, store, camera, lo, hi):
        await cps.load(seq)
    cover, after = None, hi
    while cover is None:
        batch = await store.run(list_checkpoint_seqs, store, camera, after, None, 8)
        for seq in batch:
            if await cps.load(seq) is not None:
                cover = seq
                break
        if len(batch) < 8:
            break
        after = batch[-1] + 1
    tail_from = max(idx_latest.seq if idx_latest is not None else 0, cover if cover is not None else hi)
    tail = await store.run(list_checkpoint_seqs, store, camera, tail_from)
    if tail:
        await cps.load(tail[-1])

    # What the index remembers having signed (in the span, and its latest) must still be in the bucket.
    idx_cps = await asyncio.to_thread(indexed_checkpoints, index, camera, lo, cover if cover is not None else hi)
    remembered = {c.seq: c for c in idx_cps}
    if idx_latest is not None:
        remembered[idx_latest.seq] = idx_latest
    for seq, mine in sorted(remembered.items()):
        try:
            checkpoint_from_json(mine.to_json(), trusted, camera=camera, seq=seq)
        except CheckpointError as e:
            problems.append(Problem(camera, e.check or "checkpoint_format", f"(index copy) {e}", seq))
            continue
        theirs = await cps.load(seq)
        if seq in cps.absent:
            problems.append(Problem(camera, CHECK_ROLLBACK, f"checkpoint {seq} (signed {ms_to_rfc3339(mine.time_ms)}) "
                                                            "is recorded in the index but gone from the bucket", seq))
            cps.valid.setdefault(seq, mine)  # still signed: it may anchor records
            if cover is None and seq >= hi:
                cover = seq
            continue
        if theirs is not None and theirs.head != mine.head:
            problems.append(Problem(camera, CHECK_ROLLBACK, f"the bucket's checkpoint {seq} attests another record "
                                                            "than the one this node signed", seq))
    if idx_latest is not None and idx_latest.seq > head_seq:
        problems.append(Problem(camera, CHECK_ROLLBACK, f"the index chain ends at seq {head_seq} but checkpoint "
                                                        f"{idx_latest.seq} was signed: records were removed",
                                idx_latest.seq))
    latest = max(cps.valid.values(), key=lambda c: c.seq, default=None)
    if latest is not None and latest.seq > head_seq:
        problems.append(Problem(camera, CHECK_ROLLBACK, f"the index chain ends at seq {head_seq} but checkpoint "
                                                        f"{latest.seq} (signed {ms_to_rfc3339(latest.time_ms)}) attests "
                                                        "a longer chain: records were removed or the index rolled back",
                                latest.seq))

    span_from = max(lo - 1, 0)
    span_to = max(hi, cover if cover is not None else head_seq)
    if not seqs:
        span_from, span_to = 0, -1
    records = await asyncio.to_thread(_load_records, index, camera, span_from, span_to) if seqs else {}
    if latest is not None and span_to < latest.seq <= head_seq:
        far = await asyncio.to_thread(_load_records, index, camera, latest.seq, latest.seq)
        rec = far.get(latest.seq)
        if rec is None or record_hash(rec) != latest.head:
            problems.append(Problem(camera, CHECK_MISMATCH, f"checkpoint {latest.seq} attests another record than "
                                                            f"the index holds at seq {latest.seq}", latest.seq))

    # Objects of the segments that should still exist.
    sem = asyncio.Semaphore(concurrency)
    objects: dict[int, ObjectCheck] = {}

    async def fetch(seq: int, rec: Mapping[str, Any]) -> None:
        async with sem:
            row = rows.get(seq)
            objects[seq] = await store.run(check_object, store, keyring, rec, row.version_id if row else None, sink)

    jobs = []
    for seq in sorted(seqs):
        rec = records.get(seq)
        if seq in tombstones or rec is None or rec.get("type") != "segment" or rec.get("seq") != seq:
            continue
        if not isinstance(rec.get("object_key"), str) or rec.get("camera") != camera:
            continue
        jobs.append(fetch(seq, rec))
    await asyncio.gather(*jobs)

    view = LedgerView(
        camera=camera, start_ms=start_ms, end_ms=end_ms, in_range=tuple(sorted(seqs)), span_from=span_from,
        span_to=span_to, records=records, rows=rows, tombstones=tombstones,
        checkpoints=tuple(cps.valid[s] for s in sorted(cps.valid)), objects=objects,
        problems=tuple(cps.problems + problems), gaps=only_seq is None,
    )
    report = assess(view)
    evidence = Evidence(
        camera=camera,
        records=tuple(r for _, r in sorted(records.items()) if r is not None),
        checkpoints=tuple(cps.valid[s] for s in sorted(cps.valid) if span_from <= s <= span_to),
    )
    return report, evidence


async def verify_range(store: ObjectStore, index: Index, keyring: Keyring, camera: str, start_ms: int, end_ms: int,
                       *, sink: PlaintextSink | None = None, concurrency: int = 4) -> VerifyReport:
    """Verify every segment of ``camera`` overlapping [start_ms, end_ms)."""
    report, _ = await _verify_camera(store, index, keyring, camera, start_ms, end_ms, sink=sink,
                                     concurrency=concurrency)
    return report


async def verify_with_evidence(store: ObjectStore, index: Index, keyring: Keyring, camera: str, start_ms: int,
                               end_ms: int, *, sink: PlaintextSink | None = None,
                               concurrency: int = 4) -> tuple[VerifyReport, Evidence]:
    """:func:`verify_range` plus the records and checkpoints that prove the result (for exports)."""
    return await _verify_camera(store, index, keyring, camera, start_ms, end_ms, sink=sink, concurrency=concurrency)


class UnknownSegment(NotFound):
    """Neither the index rows nor the ledger know this segment."""


async def verify_segment(store: ObjectStore, index: Index, keyring: Keyring, sid: str) -> VerifyReport:
    """Verify one segment (``camera:seq``) with the same checks as a range."""
    camera, _, raw = sid.rpartition(":")
    if not camera or not raw.isdigit():
        raise UnknownSegment(f"{sid!r} is not a segment id (camera:seq)")
    seq = int(raw)
    row = await asyncio.to_thread(index.segment, sid)
    recs = await asyncio.to_thread(_load_records, index, camera, seq, seq)
    rec = recs.get(seq)
    if row is None and (rec is None or rec.get("type") != "segment"):
        raise UnknownSegment(f"no segment {sid!r} in the index")
    start, end = _times(rec if rec and rec.get("type") == "segment" else None, row)
    if start is None or end is None:
        start = end = 0
    report, _ = await _verify_camera(store, index, keyring, camera, start, max(end, start + 1), only_seq=seq)
    return report
