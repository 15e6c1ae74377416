"""Reading a segment back: fetch the object, check both hashes and the ledger, decrypt."""

from __future__ import annotations

import hashlib

from storage.envelope import SegmentContext, decrypt
from storage.errors import IntegrityError
from storage.index import Index, SegmentRow
from storage.keyring import Keyring
from storage.ledger import record_hash
from storage.objectstore import ObjectStore


def open_segment(store: ObjectStore, index: Index, keyring: Keyring, row: SegmentRow) -> bytes:
    """The original segment bytes, after every check passes (blocking: run it with ``store.run``).

    Checks, in order: the index row matches its ledger record; the stored
    object's SHA-256; GCM authentication of the ciphertext bound to camera,
    key and times; the plaintext SHA-256 the ledger recorded.
    """
    records = index.ledger_records(row.camera, row.seq, row.seq)
    if not records:
        raise IntegrityError(f"{row.id}: no ledger record for this segment", segment=row.id, check="ledger")
    record = records[0]
    if record_hash(record) != row.record_hash:
        raise IntegrityError(f"{row.id}: ledger record does not match its hash in the index", segment=row.id, check="ledger")
    for field in ("sha256", "object_key", "object_sha256", "size"):
        if record.get(field) != getattr(row, field):
            raise IntegrityError(f"{row.id}: index {field} differs from the ledger record", segment=row.id, check="ledger")
    blob = store.get(row.object_key, row.version_id)
    got = hashlib.sha256(blob).hexdigest()
    if got != record["object_sha256"]:
        raise IntegrityError(
            f"{row.id}: stored object SHA-256 is {got}, the ledger recorded {record['object_sha256']}",
            segment=row.id, check="object_sha256",
        )
    ctx = SegmentContext(camera=row.camera, object_key=row.object_key, start=record["start"], end=record["end"])
    try:
        plain = decrypt(blob, ctx, keyring.kek)
    except IntegrityError as e:
        raise IntegrityError(f"{row.id}: {e}", segment=row.id, check=e.check) from None
    got = hashlib.sha256(plain).hexdigest()
    if got != record["sha256"]:
        raise IntegrityError(
            f"{row.id}: decrypted SHA-256 is {got}, the ledger recorded {record['sha256']}",
            segment=row.id, check="sha256",
        )
    return plain
