"""Key-encryption keys (AES-256, by id) and the node's Ed25519 signing keys, in files of mode 0600.

Layout of the keyring directory (mode 0700)::

    kek/<id>.key          32 raw random bytes, one file per KEK
    signing/<id>.pem      Ed25519 private key, PKCS#8 PEM
    signing/<id>.pub.pem  its public key, SubjectPublicKeyInfo PEM

Ids are ``YYYYMMDDTHHMMSSZ-<8 hex>``: they sort by creation time, so the newest
KEK (the one new segments use) is the greatest id. Old keys are never removed:
segments encrypted under them stay readable after a rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from storage.errors import KeyringError

log = logging.getLogger("nvr.keys")

KEY_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def new_key_id(now: datetime | None = None, *, after: str | None = None) -> str:
    """A fresh, time-sortable key id, strictly greater than ``after`` (two rotations in one second)."""
    now = now or datetime.now(UTC)
    if after is not None:
        floor = datetime.strptime(after[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        now = max(now, floor + timedelta(seconds=1))
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def _write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the first byte on (never world-readable, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyringError(f"{path} has mode {mode:04o}; keys must be readable by the owner only (chmod 600)")


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def public_pem(self) -> bytes:
        return public_pem(self.public)


def public_pem(key: Ed25519PublicKey) -> bytes:
    """The SubjectPublicKeyInfo PEM of a public key (what ``openssl pkey -pubin`` reads)."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class Keyring:
    """Loads every KEK and signing key of a directory; creates the first ones when it is empty."""

    def __init__(self, directory: Path):
        self.dir = directory
        self._keks: dict[str, bytes] = {}
        self._signing: dict[str, SigningKey] = {}

    # ------------------------------------------------------------------ loading

    @classmethod
    def open(cls, directory: Path, *, create: bool = True) -> Keyring:
        """Open the keyring, generating a first KEK and signing key when none exist (if ``create``)."""
        ring = cls(directory)
        kek_dir, sig_dir = directory / "kek", directory / "signing"
        if create:
            for d in (directory, kek_dir, sig_dir):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
        ring._load()
        if not ring._keks:
            if not create:
                raise KeyringError(f"no key-encryption key in {kek_dir}")
            key_id = ring.rotate_kek()
            log.warning("generated the first key-encryption key %s in %s (mode 0600): back this directory up, "
                        "footage can't be decrypted without it", key_id, kek_dir)
        if not ring._signing and create:
            key_id = ring.rotate_signing_key()
            log.warning("generated the node's Ed25519 signing key %s in %s (mode 0600)", key_id, sig_dir)
        return ring

    def _load(self) -> None:
        kek_dir, sig_dir = self.dir / "kek", self.dir / "signing"
        if kek_dir.is_dir():
            for path in sorted(kek_dir.glob("*.key")):
                key_id = path.stem
                if not KEY_ID_RE.match(key_id):
                    raise KeyringError(f"{path}: file name is not a key id (YYYYMMDDTHHMMSSZ-xxxxxxxx.key)")
                _check_private(path)
                data = path.read_bytes()
                if len(data) != 32:
                    raise KeyringError(f"{path}: a KEK is 32 bytes, this file has {len(data)}")
                self._keks[key_id] = data
        if sig_dir.is_dir():
            for path in sorted(sig_dir.glob("*.pem")):
                if path.name.endswith(".pub.pem"):
                    continue
                _check_private(path)
                try:
                    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
                except ValueError as e:
                    raise KeyringError(f"{path}: not a PEM private key: {e}") from None
                if not isinstance(key, Ed25519PrivateKey):
                    raise KeyringError(f"{path}: not an Ed25519 key")
                self._signing[path.stem] = SigningKey(path.stem, key)

    # ------------------------------------------------------------------ rotation

    def rotate_kek(self) -> str:
        """Create a new KEK; it becomes the one new segments are encrypted under."""
        key_id = new_key_id(after=max(self._keks, default=None))
        _write_secret(self.dir / "kek" / f"{key_id}.key", secrets.token_bytes(32))
        self._keks[key_id] = (self.dir / "kek" / f"{key_id}.key").read_bytes()
        return key_id

    def rotate_signing_key(self) -> str:
        """Create a new Ed25519 signing key; old public keys stay for verification."""
        key_id = new_key_id(after=max(self._signing, default=None))
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_secret(self.dir / "signing" / f"{key_id}.pem", pem)
        key = SigningKey(key_id, private)
        (self.dir / "signing" / f"{key_id}.pub.pem").write_bytes(key.public_pem())
        self._signing[key_id] = key
        return key_id

    # ------------------------------------------------------------------ lookup

    @property
    def current_kek_id(self) -> str:
        return max(self._keks)

    def kek(self, key_id: str) -> bytes:
        try:
            return self._keks[key_id]
        except KeyError:
            raise KeyringError(
                f"key-encryption key {key_id!r} is not in {self.dir / 'kek'}; restore it from backup"
            ) from None

    def kek_checks(self) -> dict[str, str]:
        """KEK id → a check value (HMAC of a fixed text): nodes compare keys by it without showing them."""
        return {k: hmac.new(v, b"nvr kek check", hashlib.sha256).hexdigest()[:32] for k, v in self._keks.items()}

    def add_public(self, key_id: str, pem: bytes) -> bool:
        """Trust another node's signing key: its public PEM as ``signing/<id>.pub.pem``; False if present."""
        if not KEY_ID_RE.match(key_id):
            raise KeyringError(f"{key_id!r} is not a key id")
        path = self.dir / "signing" / f"{key_id}.pub.pem"
        if path.exists() or key_id in self._signing:
            return False
        _write_secret(path, pem)
        return True

    @property
    def kek_ids(self) -> list[str]:
        return sorted(self._keks)

    @property
    def signing_key(self) -> SigningKey:
        if not self._signing:
            raise KeyringError(f"no signing key in {self.dir / 'signing'}")
        return self._signing[max(self._signing)]

    @property
    def signing_keys(self) -> list[SigningKey]:
        return [self._signing[k] for k in sorted(self._signing)]
