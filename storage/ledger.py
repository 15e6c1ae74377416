"""The per-camera ledger: records as canonical JSON, each chained to the previous by SHA-256.

Canonical JSON is ``json.dumps(record, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` encoded as UTF-8; a record's hash is the hex SHA-256 of
those bytes. Anyone can recompute it with any JSON library that sorts keys.
Record ``seq`` numbers start at 0 per camera; the first record's ``prev`` is
64 zeros. Later record types (tombstones, exports) chain the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nvr.base.ids import CAMERA_ID

GENESIS = "0" * 64
# A camera id, as it appears in records, object keys and the API (the one definition; anchor it to use it).
RECORD_VERSION = 1


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_record(text: str) -> dict[str, Any] | None:
    """A ledger record's JSON object from its stored text, or None when the text is not one (a tampered row)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def record_hash(record: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the record's canonical JSON."""
    return hashlib.sha256(canonical_json(record)).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    """The last record of a camera's chain (``seq`` -1 and the genesis hash when empty)."""

    camera: str
    seq: int = -1
    hash: str = GENESIS

    def next_seq(self) -> int:
        return self.seq + 1


def segment_record(
    *,
    head: ChainHead,
    start: str,
    end: str,
    partial: bool,
    size: int,
    sha256: str,
    object_key: str,
    object_size: int,
    object_sha256: str,
    key_id: str,
    node: str,
    clock: str = "camera",
    correction_ms: int = 0,
    audio_transcoded: bool = False,
    epoch: int | None = None,
) -> dict[str, Any]:
    """The ledger record of one stored segment, linked to ``head``.

    ``clock`` says whose clock placed it (docs/timing.md); ``placement_correction_ms`` (only when the run
    was re-anchored at this segment) by how much; ``audio`` (only when re-encoded) that the camera's
    audio is in AAC, not as the camera sent it; ``epoch`` (only in a cluster) the lease epoch of the camera
    the node recorded it under (docs/cluster.md).
    """
    extra: dict[str, Any] = {"clock": clock}
    if correction_ms:
        extra["placement_correction_ms"] = correction_ms
    if audio_transcoded:
        extra["audio"] = "transcoded to aac"
    if epoch is not None:
        extra["epoch"] = epoch
    return {
        "v": RECORD_VERSION,
        "type": "segment",
        "camera": head.camera,
        "seq": head.next_seq(),
        "prev": head.hash,
        "start": start,
        "end": end,
        "partial": partial,
        "size": size,
        "sha256": sha256,
        "object_key": object_key,
        "object_size": object_size,
        "object_sha256": object_sha256,
        "key_id": key_id,
        "node": node,
        **extra,
    }


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    problem: str


def verify_chain(camera: str, records: Iterable[Mapping[str, Any]], *, start: ChainHead | None = None) -> list[ChainBreak]:
    """Every place where ``records`` (in seq order) fail to form ``camera``'s chain; empty when intact."""
    head = start or ChainHead(camera)
    breaks: list[ChainBreak] = []
    for rec in records:
        seq = rec.get("seq")
        if rec.get("camera") != camera:
            breaks.append(ChainBreak(seq, f"record belongs to camera {rec.get('camera')!r}"))
        if seq != head.next_seq():
            breaks.append(ChainBreak(seq, f"expected seq {head.next_seq()}, found {seq}"))
        if rec.get("prev") != head.hash:
            breaks.append(ChainBreak(seq, "prev does not match the hash of the record before it"))
        head = ChainHead(camera, seq if isinstance(seq, int) else head.next_seq(), record_hash(rec))
    return breaks


def tombstone_record(
    *, head: ChainHead, segment_seq: int, segment_record_hash: str, object_key: str, rule: str, deleted_at: str,
    node: str,
) -> dict[str, Any]:
    """The ledger record saying a segment's object was deleted by retention (the segment record stays)."""
    return {
        "v": RECORD_VERSION,
        "type": "tombstone",
        "camera": head.camera,
        "seq": head.next_seq(),
        "prev": head.hash,
        "segment_seq": segment_seq,
        "segment_record": segment_record_hash,
        "object_key": object_key,
        "rule": rule,
        "deleted_at": deleted_at,
        "node": node,
    }


def export_record(
    *, head: ChainHead, export_id: str, case_id: str, manifest_sha256: str, start: str, end: str,
    first_seq: int | None, last_seq: int | None, segments: int, exported_by: str, exported_at: str, node: str,
) -> dict[str, Any]:
    """The ledger record saying an evidence bundle was exported from this camera's footage.

    ``manifest_sha256`` is the SHA-256 of the bundle's ``manifest.json`` bytes, so the ledger
    names exactly which bundle left the system; ``first_seq``/``last_seq`` bound the exported
    segment records (None when the range held none of this camera's segments).
    """
    return {
        "v": RECORD_VERSION,
        "type": "export",
        "camera": head.camera,
        "seq": head.next_seq(),
        "prev": head.hash,
        "export_id": export_id,
        "case_id": case_id,
        "manifest_sha256": manifest_sha256,
        "start": start,
        "end": end,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "segments": segments,
        "exported_by": exported_by,
        "exported_at": exported_at,
        "node": node,
    }


# ---------------------------------------------------------------- where the ledger lives in the bucket

LEDGER_PREFIX = "ledger/"
# A checkpoint of a camera's chain and the journal of the records it covers; seq zero-padded, so
# keys sort like seqs. (Written by the custody stage, read by it and by ingest's chain check.)
CHECKPOINT_KEY_RE = re.compile(rf"^ledger/(?P<camera>{CAMERA_ID})/(?P<seq>\d{{12}})\.json$")
JOURNAL_KEY_RE = re.compile(rf"^ledger/(?P<camera>{CAMERA_ID})/(?P<seq>\d{{12}})\.records\.jsonl$")


def checkpoint_key(camera: str, seq: int) -> str:
    return f"{LEDGER_PREFIX}{camera}/{seq:012d}.json"


def journal_key(camera: str, seq: int) -> str:
    return f"{LEDGER_PREFIX}{camera}/{seq:012d}.records.jsonl"
