"""Key trust: which public keys a checkpoint may be signed with, and their fingerprints.

Trust comes from the local keyring only (its signing keys plus any public-only
``signing/<id>.pub.pem`` of a retired key): a key that merely appears in the
bucket's ``ledger/keys/`` is *not* trusted, since anyone with bucket write
access could put one there. Old keys are never dropped, so checkpoints stay
verifiable after a rotation.
"""

from __future__ import annotations

import hashlib
import logging

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from storage.keyring import KEY_ID_RE, Keyring

log = logging.getLogger("nvr.checkpoint")


def fingerprint(key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo: ``openssl pkey -pubin -in k.pem -outform DER | sha256sum``."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def load_public_pem(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from its PEM (ValueError for anything else)."""
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
