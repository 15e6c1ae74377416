"""Where checkpoints are kept: the bucket's ``ledger/`` objects and the index's ``checkpoints`` table.

In the bucket (blocking calls: run them with ``store.run``)::

    ledger/<camera>/<seq, 12 digits>.json           the checkpoint document (document.py)
    ledger/<camera>/<seq, 12 digits>.records.jsonl  the ledger records since the previous checkpoint
                                                    (canonical JSON, one a line): the journal that lets
                                                    ``nvr reindex`` restore tombstones, exports and the
                                                    records of deleted segments from the bucket alone
    ledger/keys/<key_id>.pem                        every signing public key (SubjectPublicKeyInfo PEM)

Camera ids may be ``keys``: names are told apart by their shape (12 digits +
``.json`` is a checkpoint, a key id + ``.pem`` is a key), never by prefix.

Each checkpoint is also kept in the index (table ``checkpoints``,
``storage/index/checkpoints.py``), which is how a rolled-back or deleted
checkpoint in the bucket is noticed: the index remembers what was signed.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from minio.error import S3Error

from nvr.custody.checkpoint.document import Checkpoint
from nvr.custody.checkpoint.keys import trusted_keys
from storage.index import CheckpointRow, Index
from storage.keyring import Keyring, public_pem
from storage.ledger import (
    CHECKPOINT_KEY_RE,
    LEDGER_PREFIX,
    canonical_json,
    checkpoint_key,
    journal_key,
)
from storage.objectstore import GONE_CODES, ObjectStore

log = logging.getLogger("nvr.checkpoint")

KEYS_PREFIX = "ledger/keys/"


def key_object_key(key_id: str) -> str:
    return f"{KEYS_PREFIX}{key_id}.pem"


def journal_bytes(records: Iterable[Mapping[str, Any]]) -> bytes:
    """A journal: the records' canonical JSON, one a line."""
    return b"".join(canonical_json(r) + b"\n" for r in records)


def parse_journal(data: bytes) -> list[dict[str, Any]] | None:
    """The records of a journal, or None when it is not one (not UTF-8, a line not a JSON object)."""
    try:
        recs = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError):
        return None
    return recs if all(isinstance(r, dict) for r in recs) else None


# ---------------------------------------------------------------------- index table

def _from_row(row: CheckpointRow) -> Checkpoint:
    b = json.loads(row.body)
    return Checkpoint(row.camera, row.seq, row.head, row.time_ms, row.key_id, b.get("node", ""), b, row.signature)


def checkpoint_row(cp: Checkpoint) -> CheckpointRow:
    """The index row of ``cp`` (its body as the canonical JSON that was signed)."""
    return CheckpointRow(cp.camera, cp.seq, cp.head, cp.time_ms, cp.key_id, canonical_json(cp.body).decode("utf-8"),
                         cp.signature)


def record_checkpoint(index: Index, cp: Checkpoint) -> None:
    """Remember a checkpoint that is in the bucket (a repeat is a no-op)."""
    index.checkpoints.insert([checkpoint_row(cp)])


def indexed_checkpoints(index: Index, camera: str, from_seq: int = 0, to_seq: int | None = None) -> list[Checkpoint]:
    """The checkpoints the index remembers for ``camera`` in [from_seq, to_seq], by seq."""
    return [_from_row(r) for r in index.checkpoints.between(camera, from_seq, to_seq)]


def latest_indexed_checkpoint(index: Index, camera: str) -> Checkpoint | None:
    """The newest checkpoint the index remembers for ``camera``."""
    row = index.checkpoints.latest(camera)
    return _from_row(row) if row else None


# ---------------------------------------------------------------------- bucket access (blocking: use store.run)


def get_bytes(store: ObjectStore, key: str) -> bytes | None:
    """The object's bytes, or None when there is no such object."""
    try:
        return store.get(key)
    except S3Error as e:
        if e.code in GONE_CODES:
            return None
        raise


def put_bytes(store: ObjectStore, key: str, data: bytes, content_type: str) -> None:
    store.client.put_object(store.bucket, key, io.BytesIO(data), len(data), content_type=content_type)


def put_checkpoint(store: ObjectStore, cp: Checkpoint, records: Iterable[Mapping[str, Any]]) -> None:
    """Write the journal of ``records``, then the checkpoint document that attests them.

    In this order a crash between the two PUTs leaves a journal without its checkpoint (the next
    round signs again), never a checkpoint whose records are nowhere in the bucket.
    """
    put_bytes(store, journal_key(cp.camera, cp.seq), journal_bytes(records), "application/x-ndjson")
    put_bytes(store, checkpoint_key(cp.camera, cp.seq), cp.document(), "application/json")


def list_checkpoint_seqs(store: ObjectStore, camera: str, from_seq: int = 0, to_seq: int | None = None,
                         limit: int | None = None) -> list[int]:
    """Seqs of the camera's checkpoint objects in [from_seq, to_seq], ascending, at most ``limit``.

    Keys sort like their zero-padded seqs, so the listing starts at ``from_seq`` and stops early.
    """
    prefix = f"{LEDGER_PREFIX}{camera}/"
    after = f"{prefix}{from_seq:012d}" if from_seq > 0 else None
    out: list[int] = []
    for obj in store.client.list_objects(store.bucket, prefix=prefix, recursive=False, start_after=after):
        m = CHECKPOINT_KEY_RE.match(obj.object_name or "")
        if not m or m.group("camera") != camera or int(m.group("seq")) < from_seq:
            continue
        seq = int(m.group("seq"))
        if to_seq is not None and seq > to_seq:
            break
        out.append(seq)
        if limit is not None and len(out) >= limit:
            break
    return out


def publish_keys(store: ObjectStore, keyring: Keyring) -> list[str]:
    """Write every trusted public key to ``ledger/keys/<key_id>.pem`` when missing; returns the ids written."""
    written = []
    for key_id, key in trusted_keys(keyring).items():
        pem = public_pem(key)
        have = get_bytes(store, key_object_key(key_id))
        if have == pem:
            continue
        if have is not None:
            log.error("%s in the bucket is not this node's public key %s; replacing it", key_object_key(key_id), key_id)
        put_bytes(store, key_object_key(key_id), pem, "application/x-pem-file")
        written.append(key_id)
    return written
