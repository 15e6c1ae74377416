"""Signed ledger checkpoints: the node's Ed25519 key attests each camera's chain head.

A checkpoint body is a small JSON object::

    {"v": 1, "type": "checkpoint", "camera": "gate-north", "seq": 41,
     "head": "<hex SHA-256 of record 41>", "time": "2026-11-29T13:05:00.000Z",
     "key_id": "20261129T120000Z-1a2b3c4d", "node": "rec-01"}

The signature is Ed25519 over the body's canonical JSON (storage/ledger.py),
hex-encoded. In the bucket, under ``ledger/``::

    ledger/<camera>/<seq, 12 digits>.json           {"alg": "Ed25519", "body": {...}, "signature": "<hex>"}
    ledger/<camera>/<seq, 12 digits>.records.jsonl  the ledger records since the previous checkpoint
                                                    (canonical JSON, one a line): the journal that lets
                                                    ``nvr reindex`` restore tombstones, exports and the
                                                    records of deleted segments from the bucket alone
    ledger/keys/<key_id>.pem                        every signing public key (SubjectPublicKeyInfo PEM)

Camera ids may be ``keys``: names are told apart by their shape (12 digits +
``.json`` is a checkpoint, a key id + ``.pem`` is a key), never by prefix.

Trust comes from the local keyring only (its signing keys plus any public-only
``signing/<id>.pub.pem`` of a retired key): a key that merely appears in
``ledger/keys/`` is *not* trusted, since anyone with bucket write access could
put one there. Old keys are never dropped, so checkpoints stay verifiable after
a rotation.

Each checkpoint is also kept in the index (table ``checkpoints``, created here
with ``CREATE TABLE IF NOT EXISTS``), which is how a rolled-back or deleted
checkpoint in the bucket is noticed: the index remembers what was signed.

:class:`CheckpointWriter` signs every camera whose head moved, every
``interval`` seconds and once more when stopped (after ingest drained). Before
signing it checks that the records since the previous checkpoint link to it, so
it never attests a chain that was edited behind its back; a refusal is an
audit event (``ledger.checkpoint_refused``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from minio.error import S3Error

from nvr.base.errors import Kind
from nvr.base.events import EventSink, no_event
from nvr.base.ids import CAMERA_ID
from nvr.base.times import ms_to_rfc3339, now_ms, parse_rfc3339
from storage.chainlock import ChainLocks
from storage.errors import IntegrityError, StorageError, TransientStorageError
from storage.index import Index
from storage.keyring import KEY_ID_RE, Keyring, SigningKey, public_pem
from storage.ledger import (
    ChainBreak,
    ChainHead,
    canonical_json,
    record_hash,
    verify_chain,
)
from storage.objectstore import GONE_CODES, ObjectStore

log = logging.getLogger("nvr.checkpoint")

CHECKPOINT_VERSION = 1
ALGORITHM = "Ed25519"
DEFAULT_INTERVAL = 300.0
LEDGER_PREFIX = "ledger/"
KEYS_PREFIX = "ledger/keys/"

CHECKPOINT_KEY_RE = re.compile(rf"^ledger/(?P<camera>{CAMERA_ID})/(?P<seq>\d{{12}})\.json$")
JOURNAL_KEY_RE = re.compile(rf"^ledger/(?P<camera>{CAMERA_ID})/(?P<seq>\d{{12}})\.records\.jsonl$")

CHECKPOINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    camera TEXT NOT NULL,
    seq INTEGER NOT NULL,
    head TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    body TEXT NOT NULL,            -- canonical JSON, exactly the signed bytes
    signature TEXT NOT NULL,       -- hex
    PRIMARY KEY (camera, seq)
) WITHOUT ROWID
"""

# Names of the checks a checkpoint can fail (they appear in verification reports).
CHECK_FORMAT = "checkpoint_format"
CHECK_UNKNOWN_KEY = "checkpoint_unknown_key"
CHECK_SIGNATURE = "checkpoint_signature"
CHECK_ROLLBACK = "checkpoint_rollback"
CHECK_MISMATCH = "checkpoint_mismatch"


def checkpoint_key(camera: str, seq: int) -> str:
    return f"{LEDGER_PREFIX}{camera}/{seq:012d}.json"


def journal_key(camera: str, seq: int) -> str:
    return f"{LEDGER_PREFIX}{camera}/{seq:012d}.records.jsonl"


def key_object_key(key_id: str) -> str:
    return f"{KEYS_PREFIX}{key_id}.pem"


def fingerprint(key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo: ``openssl pkey -pubin -in k.pem -outform DER | sha256sum``."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def load_public_pem(data: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def trusted_keys(keyring: Keyring) -> dict[str, Ed25519PublicKey]:
    """Every signing public key of the local keyring by id, retired public-only keys included."""
    keys = {k.key_id: k.public for k in keyring.signing_keys}
    sig_dir = keyring.dir / "signing"
    if sig_dir.is_dir():
        for path in sorted(sig_dir.glob("*.pub.pem")):
            key_id = path.name[: -len(".pub.pem")]
            if key_id in keys or not KEY_ID_RE.match(key_id):
                continue
            try:
                keys[key_id] = load_public_pem(path.read_bytes())
            except ValueError as e:
                log.warning("%s: ignored, not an Ed25519 public key: %s", path, e)
    return keys


# ---------------------------------------------------------------------- the checkpoint itself


@dataclass(frozen=True)
class Checkpoint:
    camera: str
    seq: int
    head: str
    time_ms: int
    key_id: str
    node: str
    body: dict[str, Any]
    signature: str  # hex

    @property
    def object_key(self) -> str:
        return checkpoint_key(self.camera, self.seq)

    def document(self) -> bytes:
        """The object stored in the bucket."""
        return canonical_json(self.to_json()) + b"\n"

    def to_json(self) -> dict[str, Any]:
        return {"alg": ALGORITHM, "body": self.body, "signature": self.signature}


class CheckpointError(IntegrityError):
    """A checkpoint is malformed, signed by an unknown key, badly signed, or not where it claims to be."""


def checkpoint_body(*, camera: str, seq: int, head: str, time_ms: int, key_id: str, node: str) -> dict[str, Any]:
    return {
        "v": CHECKPOINT_VERSION, "type": "checkpoint", "camera": camera, "seq": seq, "head": head,
        "time": ms_to_rfc3339(time_ms), "key_id": key_id, "node": node,
    }


def sign_checkpoint(key: SigningKey, head: ChainHead, *, node: str, time_ms: int | None = None) -> Checkpoint:
    """Sign ``head`` (a camera's last record) with ``key``."""
    t = time_ms if time_ms is not None else now_ms()
    body = checkpoint_body(camera=head.camera, seq=head.seq, head=head.hash, time_ms=t, key_id=key.key_id, node=node)
    sig = key.private.sign(canonical_json(body)).hex()
    return Checkpoint(head.camera, head.seq, head.hash, t, key.key_id, node, body, sig)


def checkpoint_from_json(doc: Mapping[str, Any], trusted: Mapping[str, Ed25519PublicKey], *,
                         camera: str | None = None, seq: int | None = None) -> Checkpoint:
    """Check a checkpoint document; raises :class:`CheckpointError` naming the failed check.

    ``camera``/``seq`` are where it was found (its object key): a body naming
    another place is a moved or replayed checkpoint.
    """
    where = f"checkpoint {camera}:{seq}" if camera is not None else "checkpoint"
    if not isinstance(doc, Mapping) or not isinstance(doc.get("body"), Mapping):
        raise CheckpointError(f"{where}: not a checkpoint document", check=CHECK_FORMAT)
    body, sig = dict(doc["body"]), doc.get("signature")
    try:
        cp_camera, cp_seq, head, key_id = body["camera"], body["seq"], body["head"], body["key_id"]
        time_ms = parse_rfc3339(body["time"])
        node = body.get("node", "")
        if body.get("type") != "checkpoint" or body.get("v") != CHECKPOINT_VERSION:
            raise ValueError("type/version")
        if not (isinstance(cp_seq, int) and isinstance(head, str) and re.fullmatch(r"[0-9a-f]{64}", head)
                and isinstance(key_id, str) and isinstance(cp_camera, str) and isinstance(sig, str)):
            raise ValueError("field types")
        raw_sig = bytes.fromhex(sig)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: malformed ({e})", check=CHECK_FORMAT) from None
    if key_id not in trusted:
        raise CheckpointError(f"{where}: signed by key {key_id!r}, which is not one of this node's signing keys",
                              check=CHECK_UNKNOWN_KEY)
    try:
        trusted[key_id].verify(raw_sig, canonical_json(body))
    except InvalidSignature:
        raise CheckpointError(f"{where}: the Ed25519 signature does not verify with key {key_id}",
                              check=CHECK_SIGNATURE) from None
    if camera is not None and cp_camera != camera:
        raise CheckpointError(f"{where}: the signed body is camera {cp_camera!r}'s checkpoint", check=CHECK_ROLLBACK)
    if seq is not None and cp_seq != seq:
        raise CheckpointError(
            f"{where}: the signed body is the checkpoint of seq {cp_seq} (an older checkpoint put in its place)"
            if cp_seq < seq else f"{where}: the signed body is the checkpoint of seq {cp_seq}",
            check=CHECK_ROLLBACK)
    return Checkpoint(cp_camera, cp_seq, head, time_ms, key_id, node, body, sig)


def parse_checkpoint(data: bytes, trusted: Mapping[str, Ed25519PublicKey], *,
                     camera: str | None = None, seq: int | None = None) -> Checkpoint:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {camera}:{seq}: not JSON ({e})", check=CHECK_FORMAT) from None
    return checkpoint_from_json(doc, trusted, camera=camera, seq=seq)


# ---------------------------------------------------------------------- index table


def ensure_tables(index: Index) -> None:
    with index.transaction() as db:
        db.execute(CHECKPOINT_SCHEMA)


def _from_row(row: tuple) -> Checkpoint:
    camera, seq, head, time_ms, key_id, body, sig = row
    b = json.loads(body)
    return Checkpoint(camera, seq, head, time_ms, key_id, b.get("node", ""), b, sig)


_CP_COLUMNS = "camera, seq, head, time_ms, key_id, body, signature"


def record_checkpoint(index: Index, cp: Checkpoint) -> None:
    """Remember a checkpoint that is in the bucket (a repeat is a no-op)."""
    with index.transaction() as db:
        db.execute(
            f"INSERT INTO checkpoints ({_CP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (cp.camera, cp.seq, cp.head, cp.time_ms, cp.key_id, canonical_json(cp.body).decode("utf-8"),
             cp.signature),
        )


def indexed_checkpoints(index: Index, camera: str, from_seq: int = 0, to_seq: int | None = None) -> list[Checkpoint]:
    sql = f"SELECT {_CP_COLUMNS} FROM checkpoints WHERE camera = ? AND seq >= ?"
    args: tuple = (camera, from_seq)
    if to_seq is not None:
        sql += " AND seq <= ?"
        args += (to_seq,)
    return [_from_row(r) for r in index.query(sql + " ORDER BY seq", args)]


def latest_indexed_checkpoint(index: Index, camera: str) -> Checkpoint | None:
    rows = index.query(f"SELECT {_CP_COLUMNS} FROM checkpoints WHERE camera = ? ORDER BY seq DESC LIMIT 1", (camera,))
    return _from_row(rows[0]) if rows else None


def ledger_cameras(index: Index) -> list[str]:
    return [r[0] for r in index.query("SELECT DISTINCT camera FROM ledger ORDER BY camera")]


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


# ---------------------------------------------------------------------- the writer

class CheckpointRefused(StorageError):
    """The writer would not sign: the chain does not continue the last checkpoint, or the bucket disagrees."""

    kind = Kind.DATA_LOSS


class CheckpointWriter:
    """Signs each camera's chain head every ``interval`` seconds and at stop, when it moved."""

    def __init__(self, *, store: ObjectStore, index: Index, keyring: Keyring, node_id: str,
                 interval: float = DEFAULT_INTERVAL, on_event: EventSink | None = None):
        self.store = store
        self.index = index
        self.keyring = keyring
        self.node_id = node_id
        self.interval = interval
        self.on_event = on_event or no_event
        self.rounds = 0  # completed rounds (tests wait on it)
        self.last_error: str | None = None
        self._locks = ChainLocks()  # one signer per camera at a time (not the ledger's chain locks)
        self._published: set[str] = set()
        self._refused: dict[str, str] = {}  # camera -> last refusal message (audited once)
        self._task: asyncio.Task | None = None
        self._round = asyncio.Condition()
        self._tables: Index | None = None  # the index whose tables exist

    async def _ensure_tables(self) -> None:
        if self._tables is not self.index:
            await asyncio.to_thread(ensure_tables, self.index)
            self._tables = self.index

    async def start(self) -> None:
        await self._ensure_tables()
        with contextlib.suppress(StorageError):
            await self.publish_keys()
        self._task = asyncio.create_task(self._loop(), name="ledger-checkpoints")

    async def stop(self) -> None:
        """Stop the loop, then sign every head that moved (call after ingest drained)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            written = await self.write_all()
            log.info("shutdown checkpoint: %d camera(s) signed", len(written))
        except StorageError as e:
            log.error("shutdown checkpoint not written (the next start signs the heads): %s", e)

    async def publish_keys(self) -> None:
        written = await self.store.run(publish_keys, self.store, self.keyring)
        self._published.update(trusted_keys(self.keyring))
        for key_id in written:
            log.info("published signing public key %s to %s", key_id, key_object_key(key_id))

    async def _loop(self) -> None:
        while True:
            try:
                await self.write_all()
                self.last_error = None
            except TransientStorageError as e:
                self.last_error = str(e)
                log.warning("checkpoints postponed, S3 unavailable: %s", e)
            except Exception as e:  # keep signing the other rounds; the failure is logged loudly
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("checkpoint round failed")
            await asyncio.sleep(self.interval)

    async def wait_rounds(self, count: int, timeout: float) -> None:
        """Return once ``count`` rounds completed (TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout), self._round:
            await self._round.wait_for(lambda: self.rounds >= count)

    async def write_all(self) -> list[Checkpoint]:
        """Sign every camera whose head moved since its last checkpoint; returns the new checkpoints."""
        written: list[Checkpoint] = []
        try:
            await self._ensure_tables()
            for camera in await asyncio.to_thread(ledger_cameras, self.index):
                try:
                    cp = await self._write(camera)
                except CheckpointRefused:
                    continue
                if cp is not None:
                    written.append(cp)
        finally:
            async with self._round:
                self.rounds += 1
                self._round.notify_all()
        return written

    async def write_now(self, camera: str) -> Checkpoint | None:
        """Make sure ``camera``'s current head is covered; returns the covering checkpoint (None: empty chain).

        Raises :class:`CheckpointRefused` when the chain can't be signed.
        """
        await self._write(camera)
        head = await asyncio.to_thread(self.index.chain_head, camera)
        last = await asyncio.to_thread(latest_indexed_checkpoint, self.index, camera)
        return last if last is not None and last.seq == head.seq else None

    async def _refuse(self, camera: str, message: str, action: str = "ledger.checkpoint_refused") -> None:
        if self._refused.get(camera) != message:
            self._refused[camera] = message
            log.error("camera %s: checkpoint refused: %s", camera, message)
            await self.on_event(action, camera, {"error": message})
        raise CheckpointRefused(message)

    async def _write(self, camera: str) -> Checkpoint | None:
        """Sign ``camera``'s head if it moved; returns the new checkpoint or None."""
        await self._ensure_tables()
        async with self._locks(camera):
            head = await asyncio.to_thread(self.index.chain_head, camera)
            if head.seq < 0:
                return None
            last = await asyncio.to_thread(latest_indexed_checkpoint, self.index, camera)
            if last is not None and last.seq == head.seq and last.head == head.hash:
                return None
            if last is not None and last.seq == head.seq:
                await self._refuse(camera, f"the head record {head.seq} is not the one checkpoint {last.seq} "
                                           "attests: it was edited in the index")
            if last is not None and last.seq > head.seq:
                await self._refuse(camera, f"the index chain ends at seq {head.seq} but checkpoint {last.seq} was "
                                           "already signed: records were removed or the index was rolled back",
                                   action="ledger.rollback")
            first = last.seq + 1 if last is not None else 0
            records = await asyncio.to_thread(self.index.ledger_records, camera, first, head.seq)
            start = ChainHead(camera, last.seq, last.head) if last is not None else None
            breaks = verify_chain(camera, records, start=start)
            if not breaks and (not records or record_hash(records[-1]) != head.hash
                               or records[-1].get("seq") != head.seq):
                breaks = [ChainBreak(head.seq, "the chain head does not match its last record")]
            if breaks:
                since = f"checkpoint {last.seq}" if last is not None else "genesis"
                await self._refuse(camera, f"records since {since} do not link: seq {breaks[0].seq}: "
                                           f"{breaks[0].problem}")
            key = self.keyring.signing_key
            if key.key_id not in self._published:
                await self.publish_keys()
            cp = sign_checkpoint(key, head, node=self.node_id)
            existing = await self.store.run(get_bytes, self.store, cp.object_key)
            if existing is not None:
                # A crash after the PUT, or another writer: adopt it if it attests the same head.
                try:
                    found = parse_checkpoint(existing, trusted_keys(self.keyring), camera=camera, seq=head.seq)
                except CheckpointError as e:
                    await self._refuse(camera, f"{cp.object_key} exists and is not a valid checkpoint: {e}")
                if found.head != head.hash:
                    await self._refuse(camera, f"{cp.object_key} already attests a different record at seq "
                                               f"{head.seq}: the index and the bucket have forked (nvr reindex)")
                await asyncio.to_thread(record_checkpoint, self.index, found)
                return found
            journal = b"".join(canonical_json(r) + b"\n" for r in records)
            await self.store.run(put_bytes, self.store, journal_key(camera, head.seq), journal, "application/x-ndjson")
            await self.store.run(put_bytes, self.store, cp.object_key, cp.document(), "application/json")
            await asyncio.to_thread(record_checkpoint, self.index, cp)
            self._refused.pop(camera, None)
            log.debug("checkpoint %s:%d signed with %s", camera, head.seq, key.key_id)
            return cp
