"""Gathering the facts for the assessment from the index and the bucket, and the entry points.

:func:`verify_range` / :func:`verify_segment` read one camera's rows, records,
tombstones and checkpoints (blocking work in threads and on the store's pool),
run the object checks, then call :func:`~nvr.custody.verify.assess.assess`.
Bucket-side checkpoint problems found here: ``checkpoint_format``,
``checkpoint_unknown_key``, ``checkpoint_signature`` (a checkpoint object that
does not verify with the node's keys), ``checkpoint_rollback`` (the index chain
ends before a signed checkpoint, a checkpoint the index recorded is gone from
the bucket or differs from it, or a checkpoint object holds an older
checkpoint) and ``checkpoint_mismatch`` (the newest checkpoint attests a
different record than the index holds).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nvr.base.errors import NotFound
from nvr.base.ids import segment_id
from nvr.base.times import ms_to_rfc3339, parse_rfc3339
from nvr.custody.checkpoint import (
    CHECK_MISMATCH,
    CHECK_ROLLBACK,
    Checkpoint,
    CheckpointError,
    checkpoint_from_json,
    checkpoint_key,
    get_bytes,
    indexed_checkpoints,
    latest_indexed_checkpoint,
    list_checkpoint_seqs,
    parse_checkpoint,
    trusted_keys,
)
from nvr.custody.verify.assess import LedgerView, ObjectCheck, assess, segment_times
from nvr.custody.verify.objects import PlaintextSink, check_object
from nvr.custody.verify.report import Problem, VerifyReport
from storage.index import Index
from storage.keyring import Keyring
from storage.ledger import parse_record, record_hash
from storage.objectstore import ObjectStore


@dataclass(frozen=True)
class Evidence:
    """The chain material that proves a camera's verified segments (what an export bundle carries)."""

    camera: str
    records: tuple[dict[str, Any], ...]  # span_from..span_to, in seq order
    checkpoints: tuple[Checkpoint, ...]  # valid checkpoints within the span



def _gather_index(index: Index, camera: str, start_ms: int, end_ms: int, only_seq: int | None):
    """Rows and in-range seqs (from the rows *and* the ledger), tombstones and the head (blocking)."""
    if only_seq is not None:
        row = index.segment(segment_id(camera, only_seq))
        rows = {only_seq: row} if row is not None else {}
        seqs = {only_seq}
    else:
        rows = {r.seq: r for r in index.segments(camera, start_ms, end_ms)}
        seqs = set(rows) | set(index.segment_record_seqs(camera, start_ms, end_ms))
    tombstones: dict[int, tuple[int, dict[str, Any]]] = {}
    if seqs:
        lo, hi = min(seqs), max(seqs)
        for seq, text in index.tombstones(camera, lo, hi):
            rec = parse_record(text)
            if rec is not None and rec.get("segment_seq") in seqs:
                tombstones.setdefault(rec["segment_seq"], (seq, rec))
    return rows, seqs, tombstones, index.chain_head(camera).seq


def _load_records(index: Index, camera: str, lo: int, hi: int) -> dict[int, dict[str, Any] | None]:
    return {seq: parse_record(text) for seq, text in index.ledger_texts(camera, lo, hi)}


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

    if records:
        epochs = await asyncio.to_thread(index.cluster.epochs, camera)
        problems += epoch_problems(camera, records, {e: n for e, n, _, _ in epochs})

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


# Segments recorded by two nodes may touch at a handover, never overlap by more than the clock skew allowed.
OVERLAP_TOLERANCE_MS = 2_000
CHECK_EPOCH = "lease_epoch"


def epoch_problems(camera: str, records: Mapping[int, Mapping[str, Any] | None],
                   epochs: Mapping[int, str]) -> list[Problem]:
    """The cluster's chain rule (docs/cluster.md): each record's lease epoch was its node's, and footage
    recorded under different epochs never overlaps in time (records sit in arrival order, placed by time)."""
    out = []
    placed = []
    for seq, rec in sorted(records.items()):
        if rec is None or rec.get("type") != "segment" or "epoch" not in rec:
            continue
        epoch, node = rec.get("epoch"), rec.get("node")
        if epochs.get(epoch) != node:
            out.append(Problem(camera, CHECK_EPOCH, f"record {seq} names lease epoch {epoch} of node {node}, but "
                                                    f"the index granted that epoch to {epochs.get(epoch)}", seq))
        try:
            placed.append((parse_rfc3339(rec["start"]), parse_rfc3339(rec["end"]), epoch, seq))
        except (KeyError, TypeError, ValueError):
            continue
    placed.sort()
    for (_, end_a, ep_a, seq_a), (start_b, _, ep_b, seq_b) in zip(placed, placed[1:], strict=False):
        if ep_a != ep_b and end_a - start_b > OVERLAP_TOLERANCE_MS:
            out.append(Problem(camera, CHECK_EPOCH, f"records {seq_a} (epoch {ep_a}) and {seq_b} (epoch {ep_b}) "
                                                    f"overlap by {(end_a - start_b) / 1000:.1f} s: two nodes recorded "
                                                    "the camera at once", seq_b))
    return out


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
    start, end = segment_times(rec if rec and rec.get("type") == "segment" else None, row)
    if start is None or end is None:
        start = end = 0
    report, _ = await _verify_camera(store, index, keyring, camera, start, max(end, start + 1), only_seq=seq)
    return report
