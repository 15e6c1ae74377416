"""The checkpoint document: its signed body, and the checks a document from anywhere must pass.

A checkpoint body is a small JSON object::

    {"v": 1, "type": "checkpoint", "camera": "gate-north", "seq": 41,
     "head": "<hex SHA-256 of record 41>", "time": "2026-11-29T13:05:00.000Z",
     "key_id": "20261129T120000Z-1a2b3c4d", "node": "rec-01"}

The signature is Ed25519 over the body's canonical JSON (storage/ledger.py),
hex-encoded; the document is ``{"alg": "Ed25519", "body": {...}, "signature": "<hex>"}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nvr.base.times import ms_to_rfc3339, now_ms, parse_rfc3339
from storage.errors import IntegrityError
from storage.keyring import SigningKey
from storage.ledger import ChainHead, canonical_json

CHECKPOINT_VERSION = 1
ALGORITHM = "Ed25519"

# Names of the checks a checkpoint can fail (they appear in verification reports).
CHECK_FORMAT = "checkpoint_format"
CHECK_UNKNOWN_KEY = "checkpoint_unknown_key"
CHECK_SIGNATURE = "checkpoint_signature"
CHECK_ROLLBACK = "checkpoint_rollback"
CHECK_MISMATCH = "checkpoint_mismatch"


@dataclass(frozen=True)
class Checkpoint:
    """A signed checkpoint: ``key_id`` attests that ``head`` is the hash of ``camera``'s record ``seq``."""

    camera: str
    seq: int
    head: str
    time_ms: int
    key_id: str
    node: str
    body: dict[str, Any]
    signature: str  # hex

    def document(self) -> bytes:
        """The object stored in the bucket."""
        return canonical_json(self.to_json()) + b"\n"

    def to_json(self) -> dict[str, Any]:
        return {"alg": ALGORITHM, "body": self.body, "signature": self.signature}


class CheckpointError(IntegrityError):
    """A checkpoint is malformed, signed by an unknown key, badly signed, or not where it claims to be."""


def checkpoint_body(*, camera: str, seq: int, head: str, time_ms: int, key_id: str, node: str) -> dict[str, Any]:
    """The body that gets signed."""
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
    if not isinstance(doc, Mapping) or not isinstance(doc.get("body"), Mapping) or doc.get("alg") != ALGORITHM:
        raise CheckpointError(f"{where}: not a checkpoint document", check=CHECK_FORMAT)
    body, sig = dict(doc["body"]), doc.get("signature")
    try:
        cp_camera, cp_seq, head, key_id = body["camera"], body["seq"], body["head"], body["key_id"]
        time_ms = parse_rfc3339(body["time"])
        node = body.get("node", "")
        if body.get("type") != "checkpoint" or body.get("v") != CHECKPOINT_VERSION:
            raise ValueError("type/version")
        if not (isinstance(cp_seq, int) and not isinstance(cp_seq, bool) and cp_seq >= 0
                and isinstance(head, str) and re.fullmatch(r"[0-9a-f]{64}", head)
                and isinstance(key_id, str) and isinstance(cp_camera, str) and isinstance(sig, str)
                and isinstance(node, str)):
            raise ValueError("field types")
        raw_sig = bytes.fromhex(sig)
        signed = canonical_json(body)  # a lone surrogate has no UTF-8: UnicodeEncodeError, a ValueError
    except (KeyError, ValueError, TypeError, OverflowError) as e:
        raise CheckpointError(f"{where}: malformed ({e})", check=CHECK_FORMAT) from None
    if key_id not in trusted:
        raise CheckpointError(f"{where}: signed by key {key_id!r}, which is not one of this node's signing keys",
                              check=CHECK_UNKNOWN_KEY)
    try:
        trusted[key_id].verify(raw_sig, signed)
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
    """:func:`checkpoint_from_json` of a document's bytes (not JSON: ``checkpoint_format``)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {camera}:{seq}: not JSON ({e})", check=CHECK_FORMAT) from None
    return checkpoint_from_json(doc, trusted, camera=camera, seq=seq)
