"""Rebuilding the segment index and the ledger from the bucket alone (``nvr reindex``).

Sources, all in the bucket:

* the ledger record in each segment object's metadata (``x-amz-meta-nvr-record``);
* the checkpoint journals ``ledger/<camera>/<seq>.records.jsonl`` (every record
  up to each checkpoint: tombstones, exports and the records of segments whose
  objects retention deleted exist nowhere else);
* the checkpoints ``ledger/<camera>/<seq>.json``, checked against the local
  keyring's public keys.

When both a journal and an object carry a record for the same seq they must be
identical; a disagreement is reported and the journal's (covered by a signed
checkpoint) is used. An object whose metadata record names another object key
(a copied or moved object) is reported and ignored. Records after the last
checkpoint are in no journal: a tombstone or export appended since, or the
record of a segment whose object is gone, is only in the old index. The report
lists them as dropped, and the CLI keeps a copy of the old index
(``VACUUM INTO``) before replacing it.

Segment rows are derived from the segment records: ``state`` is ``deleted`` for
a segment a tombstone names, else ``stored``; ``version_id`` is the version of
the object that carries the record; ``ingested_ms`` is the object's
Last-Modified (the record's end time when the object is gone).

The rebuilt ledger, segments and checkpoints replace the old ones in one
transaction, so a failure leaves the old index untouched. A non-empty index is
only replaced with ``force``. Run it with the server stopped.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from nvr.base.errors import Kind
from nvr.base.ids import segment_id
from nvr.base.times import parse_rfc3339
from nvr.custody.checkpoint import (
    CHECKPOINT_KEY_RE,
    JOURNAL_KEY_RE,
    LEDGER_PREFIX,
    Checkpoint,
    CheckpointError,
    checkpoint_row,
    get_bytes,
    parse_checkpoint,
    parse_journal,
    trusted_keys,
)
from storage.errors import StorageError
from storage.index import Index
from storage.keyring import Keyring
from storage.ledger import GENESIS, canonical_json, record_hash
from storage.objectstore import ObjectStore

SAMPLE = 20  # items listed per kind of finding (the counts are complete)


class ReindexRefused(StorageError):
    """The index is not empty and ``force`` was not given."""

    kind = Kind.CONFLICT


@dataclass
class Finding:
    """A kind of finding with its full count and the first few examples."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.examples) < SAMPLE:
            self.examples.append(text)

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "examples": self.examples}


@dataclass
class ReindexReport:
    cameras: dict[str, dict[str, int]] = field(default_factory=dict)  # camera -> records, segments, deleted, ...
    lacked: Finding = field(default_factory=Finding)  # in the bucket, not in the old index
    contradicted: Finding = field(default_factory=Finding)  # both, but different
    dropped: Finding = field(default_factory=Finding)  # in the old index only
    problems: Finding = field(default_factory=Finding)  # the bucket is inconsistent in itself
    objects: int = 0
    written: bool = False

    @property
    def ok(self) -> bool:
        return self.problems.count == 0

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "written": self.written, "objects": self.objects, "cameras": self.cameras,
                "lacked": self.lacked.to_json(), "contradicted": self.contradicted.to_json(),
                "dropped": self.dropped.to_json(), "problems": self.problems.to_json()}


@dataclass(frozen=True)
class _Listed:
    key: str
    last_modified_ms: int | None


def _list_bucket(store: ObjectStore) -> list[_Listed]:
    out = []
    for obj in store.client.list_objects(store.bucket, recursive=True):
        lm = obj.last_modified
        out.append(_Listed(obj.object_name, int(lm.timestamp() * 1000) if lm is not None else None))
    return out


_ROW_FIELDS = ("camera", "seq", "start_ms", "end_ms", "partial", "size", "sha256", "object_key", "object_size",
               "object_sha256", "version_id", "key_id", "record_hash", "state")


def _existing(index: Index) -> tuple[dict[tuple[str, int], str], dict[str, dict[str, Any]], set[tuple[str, int]]]:
    ledger = {}
    for camera, seq, text in index.maintenance.ledger_texts():
        try:
            ledger[(camera, seq)] = record_hash(json.loads(text))
        except ValueError:
            ledger[(camera, seq)] = "(not JSON)"
    rows = {}
    for r in index.maintenance.segment_rows():
        rows[r[0]] = dict(zip(_ROW_FIELDS, r[1:15], strict=True))
        rows[r[0]]["partial"] = bool(rows[r[0]]["partial"])
    return ledger, rows, index.checkpoints.keys()


async def reindex(store: ObjectStore, index: Index, keyring: Keyring, *, force: bool = False,
                  concurrency: int = 8) -> ReindexReport:
    """Rebuild ledger, segments and checkpoints of ``index`` from the bucket; see the module doc."""
    n_ledger, n_segments = await asyncio.to_thread(index.maintenance.counts)
    if (n_ledger or n_segments) and not force:
        raise ReindexRefused(f"the index already holds {n_ledger} ledger record(s) and {n_segments} segment(s); "
                             "pass --force to replace them with what the bucket holds")
    report = ReindexReport()
    trusted = trusted_keys(keyring)
    listing = await store.run(_list_bucket, store)
    report.objects = len(listing)

    journals: list[tuple[str, int, str]] = []
    checkpoint_objs: list[tuple[str, int, str]] = []
    segment_objs: list[_Listed] = []
    for item in listing:
        if item.key.startswith(LEDGER_PREFIX):
            m = CHECKPOINT_KEY_RE.match(item.key)
            if m:
                checkpoint_objs.append((m.group("camera"), int(m.group("seq")), item.key))
                continue
            m = JOURNAL_KEY_RE.match(item.key)
            if m:
                journals.append((m.group("camera"), int(m.group("seq")), item.key))
            continue  # keys and anything else under ledger/
        segment_objs.append(item)

    sem = asyncio.Semaphore(concurrency)

    async def limited(fn, *args):
        async with sem:
            return await store.run(fn, *args)

    # Records from the journals.
    records: dict[str, dict[int, dict[str, Any]]] = {}
    source: dict[tuple[str, int], str] = {}
    datas = await asyncio.gather(*(limited(get_bytes, store, key) for _, _, key in journals))
    for (camera, _seq, key), data in zip(journals, datas, strict=True):
        recs = parse_journal(data) if data is not None else None
        if recs is None:
            report.problems.add(f"{key}: not a readable journal")
            continue
        for rec in recs:
            seq = rec.get("seq")
            if rec.get("camera") != camera or not isinstance(seq, int):
                report.problems.add(f"{key}: holds a record of {rec.get('camera')!r} seq {seq!r}")
                continue
            have = records.setdefault(camera, {}).get(seq)
            if have is not None and canonical_json(have) != canonical_json(rec):
                report.problems.add(f"{camera}:{seq}: two journals disagree about this record")
                continue
            records[camera][seq] = rec
            source[(camera, seq)] = key

    # Records from the segment objects' metadata.
    stats = await asyncio.gather(*(limited(store.stat, item.key) for item in segment_objs))
    object_of: dict[tuple[str, int], tuple[str, str | None, int | None]] = {}  # -> key, version, last_modified
    for item, st in zip(segment_objs, stats, strict=True):
        if st is None:
            continue  # deleted while listing
        rec = st.record
        if not isinstance(rec, dict) or rec.get("type") != "segment" or not isinstance(rec.get("seq"), int):
            report.problems.add(f"{item.key}: object without a ledger record in its metadata")
            continue
        camera, seq = rec.get("camera"), rec["seq"]
        if rec.get("object_key") != item.key:
            report.problems.add(f"{item.key}: carries the record of {rec.get('object_key')} ({camera}:{seq}); ignored")
            continue
        have = records.setdefault(camera, {}).get(seq)
        if have is not None and canonical_json(have) != canonical_json(rec):
            report.problems.add(f"{camera}:{seq}: the object's metadata record differs from "
                                f"{source.get((camera, seq), 'another object')}; the journal's is kept")
            continue  # this object does not carry the kept record, so it is not that segment's object
        records[camera][seq] = rec
        source.setdefault((camera, seq), item.key)
        object_of[(camera, seq)] = (item.key, st.version_id, item.last_modified_ms)

    # Checkpoints, checked against the keyring.
    cp_datas = await asyncio.gather(*(limited(get_bytes, store, key) for _, _, key in checkpoint_objs))
    checkpoints: list[Checkpoint] = []
    for (camera, seq, key), data in zip(checkpoint_objs, cp_datas, strict=True):
        try:
            cp = parse_checkpoint(data or b"", trusted, camera=camera, seq=seq)
        except CheckpointError as e:
            report.problems.add(f"{key}: {e} ({e.check})")
            continue
        rec = records.get(camera, {}).get(seq)
        if rec is None or record_hash(rec) != cp.head:
            report.problems.add(f"{key}: attests a record the bucket does not hold at {camera}:{seq}")
            continue
        checkpoints.append(cp)

    # Chains: holes and broken links are reported; everything found is restored.
    ledger_rows, segment_rows = [], []
    for camera in sorted(records):
        chain = records[camera]
        seqs = sorted(chain)
        missing = sorted(set(range(seqs[-1] + 1)) - set(seqs))
        if missing:
            report.problems.add(f"{camera}: {len(missing)} ledger record(s) not in the bucket (first: seq "
                                f"{missing[0]}); the rebuilt chain has holes")
        hashes = {s: record_hash(r) for s, r in chain.items()}
        for s in seqs:
            want = GENESIS if s == 0 else hashes.get(s - 1)
            if want is not None and chain[s].get("prev") != want:
                report.problems.add(f"{camera}:{s}: prev is not the hash of record {s - 1}")
        tombstoned = {(r.get("segment_seq"), r.get("segment_record")) for r in chain.values()
                      if r.get("type") == "tombstone"}
        deleted = 0
        for s in seqs:
            rec = chain[s]
            ledger_rows.append((camera, s, rec.get("type", ""), canonical_json(rec).decode("utf-8"), hashes[s],
                                rec.get("prev", "")))
            if rec.get("type") != "segment":
                continue
            obj = object_of.get((camera, s))
            state = "deleted" if (s, hashes[s]) in tombstoned else "stored"
            deleted += state == "deleted"
            try:
                start, end = parse_rfc3339(rec["start"]), parse_rfc3339(rec["end"])
            except (KeyError, ValueError) as e:
                report.problems.add(f"{camera}:{s}: segment record without valid times ({e})")
                continue
            segment_rows.append((
                segment_id(camera, s), camera, s, start, end, int(bool(rec.get("partial"))), rec.get("size"),
                rec.get("sha256"), rec.get("object_key"), rec.get("object_size"), rec.get("object_sha256"),
                obj[1] if obj else None, rec.get("key_id"), hashes[s], state,
                (obj[2] if obj and obj[2] is not None else end),
            ))
        report.cameras[camera] = {
            "records": len(chain), "head": seqs[-1], "segments": sum(1 for r in chain.values()
                                                                     if r.get("type") == "segment"),
            "deleted": deleted, "checkpoints": sum(1 for c in checkpoints if c.camera == camera),
        }

    # What the old index lacked, contradicted or had that the bucket does not.
    old_ledger, old_rows, old_cps = await asyncio.to_thread(_existing, index)
    new_ledger = {(r[0], r[1]): r[4] for r in ledger_rows}
    for key, h in sorted(new_ledger.items()):
        if key not in old_ledger:
            report.lacked.add(f"ledger record {key[0]}:{key[1]}")
        elif old_ledger[key] != h:
            report.contradicted.add(f"ledger record {key[0]}:{key[1]} differs from the bucket's")
    for key in sorted(set(old_ledger) - set(new_ledger)):
        report.dropped.add(f"ledger record {key[0]}:{key[1]} (not in the bucket)")
    for row in segment_rows:
        new = dict(zip(_ROW_FIELDS, row[1:15], strict=True))
        new["partial"] = bool(new["partial"])
        old = old_rows.pop(row[0], None)
        if old is None:
            report.lacked.add(f"segment {row[0]}")
        elif old != new:
            diff = sorted(k for k in new if old.get(k) != new[k])
            report.contradicted.add(f"segment {row[0]}: {', '.join(diff)} differ")
    for sid in sorted(old_rows):
        report.dropped.add(f"segment {sid} (no record in the bucket)")
    new_cps = {(c.camera, c.seq) for c in checkpoints}
    for key in sorted(new_cps - old_cps):
        report.lacked.add(f"checkpoint {key[0]}:{key[1]}")
    for key in sorted(old_cps - new_cps):
        report.dropped.add(f"checkpoint {key[0]}:{key[1]} (not valid in the bucket)")

    def write() -> None:
        index.maintenance.replace_chains(ledger_rows, segment_rows, [checkpoint_row(cp) for cp in checkpoints])

    await asyncio.to_thread(write)
    report.written = True
    return report


def summarize(report: ReindexReport) -> list[str]:
    """Human-readable lines for the CLI."""
    lines = [f"bucket: {report.objects} object(s); {len(report.cameras)} camera(s)"]
    for camera, c in sorted(report.cameras.items()):
        lines.append(f"  {camera}: {c['records']} records (head seq {c['head']}), {c['segments']} segments "
                     f"({c['deleted']} deleted by retention), {c['checkpoints']} checkpoints")
    for name, f in (("the index lacked", report.lacked), ("the index contradicted", report.contradicted),
                    ("only in the old index (dropped)", report.dropped), ("PROBLEMS in the bucket", report.problems)):
        if f.count:
            lines.append(f"{name}: {f.count}")
            lines += [f"  {e}" for e in f.examples]
            if f.count > len(f.examples):
                lines.append(f"  … and {f.count - len(f.examples)} more")
    return lines
