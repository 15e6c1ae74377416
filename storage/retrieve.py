"""Reading a segment back: fetch the object, check its ledger record, decrypt and authenticate it, check the plaintext hash."""

from __future__ import annotations

import hashlib

from storage.envelope import Opener, SegmentContext
from storage.errors import IntegrityError, KeyringError
from storage.index import Index, SegmentRow
from storage.keyring import Keyring
from storage.ledger import record_hash
from storage.objectstore import ObjectStore

# Bytes of the object decrypted and hashed at a time, as they arrive. Measured (docs/playback.md): 1 MiB
# beat 256 KiB and 2 MiB, and hashing on a thread of its own beat nothing (the cores are busy anyway).
CHUNK = 1 << 20


def open_segment(store: ObjectStore, index: Index, keyring: Keyring, row: SegmentRow) -> bytearray:
    """The original segment bytes, after every check passes (blocking: run it with ``store.run``).

    Checks, in order: the index row matches its ledger record; GCM
    authentication of the ciphertext (its key unwrapped under the KEK), bound
    to camera, key and times; the plaintext SHA-256 the ledger recorded. The
    stored object's SHA-256 is not computed when those pass: an object that
    authenticates and decrypts to the recorded plaintext is the recorded
    footage whatever its bytes (only a holder of the KEK can make another),
    and the hash would cost as much as the plaintext's again. It is computed
    when decryption fails, so a changed object is reported as ``object_sha256``
    (docs/playback.md, "Reading a segment"); ``nvr verify`` checks it always.
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
    ctx = SegmentContext(camera=row.camera, object_key=row.object_key, start=record["start"], end=record["end"])
    opener = Opener(ctx, keyring.kek, record["size"])
    chunks = store.get_chunks(row.object_key, row.version_id, CHUNK)
    try:
        # Each piece is decrypted and hashed as it arrives, while it is still in cache: one pass over
        # the bytes instead of three (download, decrypt, hash), and no whole-segment copies.
        for chunk in chunks:
            opener.feed(chunk)
        plain = opener.finish()
    except (IntegrityError, KeyringError) as e:
        # Only now the object's own hash (of the object read again: keeping each piece as it came
        # cost more than hashing it), so a changed object fails as what it is, not the object
        # recorded, as when this hash was checked first; an intact one fails by its own check.
        chunks.close()
        got = hashlib.sha256(store.get(row.object_key, row.version_id)).hexdigest()
        if got != record["object_sha256"]:
            raise IntegrityError(
                f"{row.id}: stored object SHA-256 is {got}, the ledger recorded {record['object_sha256']}",
                segment=row.id, check="object_sha256",
            ) from None
        if isinstance(e, KeyringError):
            raise
        raise IntegrityError(f"{row.id}: {e}", segment=row.id, check=e.check) from None
    finally:
        chunks.close()
    got = opener.sha256()
    if got != record["sha256"]:
        raise IntegrityError(
            f"{row.id}: decrypted SHA-256 is {got}, the ledger recorded {record['sha256']}",
            segment=row.id, check="sha256",
        )
    return plain

