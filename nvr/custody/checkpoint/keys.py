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
import re

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from storage.keyring import KEY_ID_RE, Keyring

log = logging.getLogger("nvr.checkpoint")


def fingerprint(key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo: ``openssl pkey -pubin -in k.pem -outform DER | sha256sum``."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """A fingerprint as :func:`fingerprint` writes it (64 lower-case hex digits) from how a person may copy it.

    Case, colons and white space are ignored; ValueError for anything else.
    """
    hexed = re.sub(r"[\s:]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", hexed):
        raise ValueError(f"{text!r} is not a SHA-256 key fingerprint (64 hex digits)")
    return hexed


def load_public_pem(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from its PEM (ValueError for anything else)."""
    try:
        key = serialization.load_pem_public_key(data)
    except UnsupportedAlgorithm as e:  # a key type this OpenSSL can't load is still "not an Ed25519 key"
        raise ValueError(f"not an Ed25519 public key: {e}") from None
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
