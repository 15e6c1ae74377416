"""Segment ingest: spool file → hash → encrypt → ledger record → PUT → index → spool removal.

One segment at a time per camera (the lanes of ``nvr.ingest.lanes`` call
:meth:`Ingestor.ingest` in ticket order, because each record links to the one
before it). The steps and what a crash at each step leaves are in
docs/segment-lifecycle.md.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from nvr.base.errors import Kind
from nvr.base.events import EventSink, no_event
from nvr.base.mp4 import Mp4Error, skeleton
from nvr.base.timeline import is_gap
from nvr.base.times import ms_to_datetime, ms_to_rfc3339, now_ms
from storage.chainlock import ChainLocks
from storage.envelope import SegmentContext, seal_buffer_size, seal_file, sha256_file
from storage.errors import StorageError
from storage.index import Index, SegmentRow
from storage.index.cluster import Fenced
from storage.keyring import Keyring
from storage.ledger import ChainHead, segment_record
from storage.objectstore import ObjectStore
from storage.spool import ClosedSegment, Spool

log = logging.getLogger("nvr.ingest")

# A hole this long between consecutive segments is reported as a gap (shorter is timestamp rounding).
# A seal buffer up to this size is kept for the next segment even when that one is much smaller.
BUFFER_KEEP = 64 * 1024 * 1024


def object_key(seg: ClosedSegment) -> str:
    """Time-sortable, deterministic key: ``<camera>/<YYYY>/<MM>/<DD>/<HH>/<start>_<run>-<n>.seg``."""
    t = ms_to_datetime(seg.start_ms)
    stamp = t.strftime("%Y%m%dT%H%M%S") + f"{seg.start_ms % 1000:03d}Z"
    return f"{seg.camera}/{t:%Y/%m/%d/%H}/{stamp}_{seg.stem}.seg"


class ChainConflict(StorageError):
    """The bucket holds an object for this segment that does not fit the index's chain head."""

    kind = Kind.CONFLICT


# Upper bounds (seconds) of the ingest-latency histogram buckets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@dataclass
class IngestStats:
    segments: int = 0
    bytes: int = 0
    object_bytes: int = 0
    latency_ms: list[int] = field(default_factory=list)  # closed → indexed, the last 1000, for percentiles
    latency_counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))  # cumulative per bucket
    latency_sum_ms: int = 0
    gaps: int = 0
    errors: int = 0

    def observe(self, row: SegmentRow, closed_ms: int) -> None:
        self.segments += 1
        self.bytes += row.size
        self.object_bytes += row.object_size
        latency = max(0, now_ms() - closed_ms)
        self.latency_ms.append(latency)
        del self.latency_ms[:-1000]
        self.latency_sum_ms += latency
        for i, bound in enumerate(LATENCY_BUCKETS):
            if latency <= bound * 1000:
                self.latency_counts[i] += 1


@dataclass(frozen=True)
class Reuse:
    """Step 6's answer: a stored record to index as it is, or none (with the stale version it replaces)."""

    record: dict[str, Any] | None = None
    version_id: str | None = None
    orphan: dict[str, Any] | None = None  # a version of this segment's bytes the chain moved past, never indexed


@dataclass(frozen=True)
class Stored:
    """What steps 4-10 did with one segment."""

    row: SegmentRow
    prev_end: int | None  # end of the camera's previous segment (the gap rule's left side)
    already: bool  # it was indexed before this attempt
    orphan: dict[str, Any] | None = None


class Ingestor:
    """Ingests one closed segment; every step is idempotent, so it can be re-run after any crash."""

    def __init__(
        self,
        *,
        store: ObjectStore,
        index: Index,
        keyring: Keyring,
        spool: Spool,
        node_id: str,
        lock_seconds: float = 0.0,
        on_event: EventSink | None = None,
        chain_locks: ChainLocks | None = None,
        on_stored: Callable[[SegmentRow], Awaitable[None]] | None = None,
        fence_skew_ms: int = 0,
    ):
        self.store = store
        self.index = index
        self.keyring = keyring
        self.spool = spool
        self.node_id = node_id
        self.lock_seconds = lock_seconds
        self.on_event = on_event or no_event
        # Shared with every other writer of a camera's chain (tombstones, exports): from reading the
        # head to committing the record, no other record may land in between.
        self.chain_locks = chain_locks or ChainLocks()
        self.on_stored = on_stored  # after each newly indexed segment (retention: legal holds of open holds)
        self.fence_skew_ms = fence_skew_ms  # in a cluster: the clock skew the lease fence allows
        self.fenced: list[tuple[str, str, str]] = []  # (camera, file, why) of segments the lease fence refused
        self.stats = IngestStats()
        self._buffers = threading.local()  # one seal buffer per S3 worker thread

    def _buffer(self, size: int) -> bytearray:
        """This S3 worker thread's seal buffer, reused across segments; (re)allocated to fit ``size``."""
        need = seal_buffer_size(size)
        buf = getattr(self._buffers, "buf", None)
        # Reallocate when too small, or when far too big (one huge partial segment must not pin memory).
        if buf is None or len(buf) < need or len(buf) > max(4 * need, BUFFER_KEEP):
            buf = self._buffers.buf = bytearray(need + need // 8)
        return buf

    def _reuse_stored(self, seg: ClosedSegment, key: str, head: ChainHead) -> Reuse:
        """Step 6: the record of an object an earlier attempt already PUT, if it continues the chain.

        Nothing to reuse when there is no object, or when it holds this file's bytes with a record the
        chain has since moved past (the earlier attempt's index commit never happened, and a tombstone
        or, in a cluster, another node's segments took its place): that version was never in the ledger,
        so the segment is sealed again and stored as a new version that continues the head.
        """
        stored = self.store.guarded(self.store.stat, key)
        if stored is None:
            return Reuse()
        rec = stored.record or {}
        sha = sha256_file(self.spool.path(seg))[0]
        if rec.get("sha256") != sha:
            raise ChainConflict(
                f"{key} already exists in the bucket with other bytes (SHA-256 {str(rec.get('sha256'))[:16]}…, "
                f"the spool file's is {sha[:16]}…); run `nvr reindex` to reconcile"
            )
        if rec.get("seq") != head.next_seq() or rec.get("prev") != head.hash:
            return Reuse(orphan={"version_id": stored.version_id, "seq": rec.get("seq"), "seq_now": head.next_seq()})
        return Reuse(record=rec, version_id=stored.version_id)  # crash after PUT, before indexing

    def _store_and_index(self, seg: ClosedSegment, key: str, fresh: bool) -> Stored:
        """Steps 4-10 of one segment, blocking, on an S3 worker thread; call holding the camera's chain lock.

        One hand-off per segment instead of one per step: each hop costs a
        worker wake-up and an event-loop wake-up.
        """
        done = self.index.segment_by_object_key(key)
        if done is not None:  # crash after indexing, before the spool file was removed
            self.spool.remove(seg)
            return Stored(done, None, already=True)
        path = self.spool.path(seg)
        if not path.exists():
            raise StorageError(f"{seg.camera}/{seg.file}: ticket without its segment file and not in the index")
        head = self.index.chain_head(seg.camera)
        prev_end = self.index.last_end_ms(seg.camera)
        start, end = ms_to_rfc3339(seg.start_ms), ms_to_rfc3339(seg.end_ms)

        skeleton = _skeleton(path, seg)
        # A ticket this process wrote, on its first attempt, cannot have an object in S3: no HEAD.
        reuse = Reuse() if fresh else self._reuse_stored(seg, key, head)
        if reuse.record is not None:
            record, version_id = reuse.record, reuse.version_id
        else:
            if seg.epoch is not None:
                problem = self.index.cluster.fence_problem(
                    {"camera": seg.camera, "epoch": seg.epoch, "node": self.node_id, "start": start}, self.fence_skew_ms)
                if problem is not None:  # checked before the PUT: a refused segment never reaches the bucket
                    raise Fenced(problem)
            key_id = self.keyring.current_kek_id
            ctx = SegmentContext(camera=seg.camera, object_key=key, start=start, end=end)
            sealed = seal_file(path, ctx, key_id, self.keyring.kek(key_id), self._buffer(path.stat().st_size))
            record = segment_record(
                head=head, start=start, end=end, partial=seg.partial, size=sealed.size, sha256=sealed.sha256,
                object_key=key, object_size=len(sealed.blob), object_sha256=sealed.object_sha256,
                key_id=key_id, node=self.node_id, clock=seg.clock, correction_ms=seg.correction_ms,
                audio_transcoded=seg.audio_transcoded, epoch=seg.epoch,
            )
            retain = ms_to_datetime(now_ms()) + timedelta(seconds=self.lock_seconds) if self.lock_seconds else None
            version_id = self.store.guarded(
                self.store.put, key, sealed.blob, record=record, sha256=sealed.object_sha256, retain_until=retain,
            )
        row = self.index.insert_segment(record, version_id=version_id, skeleton=skeleton,
                                        fence_skew_ms=self.fence_skew_ms)
        self.spool.remove(seg)
        return Stored(row, prev_end, already=False, orphan=reuse.orphan)

    async def ingest(self, seg: ClosedSegment) -> SegmentRow:
        """Store ``seg`` durably and index it, then remove it from the spool."""
        key = object_key(seg)
        fresh = self.spool.claim_fresh(seg)  # claimed before the attempt: a retry always HEADs
        try:
            async with self.chain_locks(seg.camera):
                done = await self.store.run_raw(self._store_and_index, seg, key, fresh)
        except Fenced as e:
            # Never dropped: kept aside where an operator sees it, audited, and the lane goes on.
            where = await asyncio.to_thread(self.spool.quarantine, seg, "fenced")
            self.fenced.append((seg.camera, seg.file, str(e)))
            del self.fenced[:-100]
            log.error("camera %s: %s refused by the lease fence (%s); kept in %s", seg.camera, seg.file, e, where)
            await self.on_event("segment.fenced", seg.camera, {"file": seg.file, "error": str(e), "kept": str(where)})
            raise
        row, prev_end = done.row, done.prev_end
        if done.already:
            return row
        if done.orphan is not None:  # loud: the bucket keeps a version no record names
            log.warning("camera %s: %s was stored before at seq %s, never indexed; stored again at seq %s",
                        seg.camera, key, done.orphan["seq"], row.seq)
            await self.on_event("segment.rechained", seg.camera, {"segment": row.id, "object_key": key,
                                                                        **done.orphan})
        self.stats.observe(row, seg.closed_ms)
        if self.on_stored is not None:
            await self.on_stored(row)

        start, end = ms_to_rfc3339(seg.start_ms), ms_to_rfc3339(seg.end_ms)
        if prev_end is not None and is_gap(prev_end, row.start_ms):
            self.stats.gaps += 1
            await self.on_event("recording.gap", seg.camera, {
                "from": ms_to_rfc3339(prev_end), "to": start, "seconds": (row.start_ms - prev_end) / 1000,
            })
        if seg.correction_ms:
            await self.on_event("recording.placement_corrected", seg.camera, {
                "segment": row.id, "start": start, "end": end, "correction_seconds": seg.correction_ms / 1000,
            })
        if seg.partial:
            await self.on_event("segment.partial", seg.camera, {"segment": row.id, "start": start, "end": end})
        return row


def _skeleton(path: Path, seg: ClosedSegment) -> bytes | None:
    """The segment's boxes without media (clips are planned from them); None if it is no readable fMP4.

    Read through a mapping: only the pages of its boxes are touched, not its media a second time (sealing
    read it already). Never a reason to hold a segment back: a clip of one without it reads it whole.
    """
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return skeleton(data, partial=seg.partial)
    except (Mp4Error, OSError, ValueError) as e:  # ValueError: an empty file can't be mapped
        log.warning("camera %s: %s: no clip skeleton (%s); clips will read it whole", seg.camera, seg.file, e)
        return None
