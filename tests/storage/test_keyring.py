"""The keyring: private key files, rotation, and clear errors for unsafe or missing keys."""

import stat

import pytest

from storage.envelope import (
    SegmentContext,
    decrypt,
    encrypt,
)
from storage.errors import KeyringError
from storage.keyring import Keyring

CTX = SegmentContext(camera="cam1", object_key="cam1/2026/11/29/13/x.seg", start="2026-11-29T13:00:00.000Z",
                     end="2026-11-29T13:00:10.000Z")


def test_keyring_creates_private_keys_and_rotates(tmp_path):
    ring = Keyring.open(tmp_path / "kr")
    kek_files = list((tmp_path / "kr" / "kek").glob("*.key"))
    assert len(kek_files) == 1
    for f in kek_files + list((tmp_path / "kr" / "signing").glob("*[!b].pem")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "kr").stat().st_mode) == 0o700
    first = ring.current_kek_id
    blob = encrypt(b"old footage", CTX, first, ring.kek(first))
    second = ring.rotate_kek()
    reopened = Keyring.open(tmp_path / "kr")
    assert reopened.current_kek_id == second != first
    assert decrypt(blob, CTX, reopened.kek) == b"old footage"
    assert reopened.signing_key.key_id == ring.signing_key.key_id


def test_keyring_refuses_world_readable_key(tmp_path):
    Keyring.open(tmp_path / "kr")
    key = next((tmp_path / "kr" / "kek").glob("*.key"))
    key.chmod(0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        Keyring.open(tmp_path / "kr")


def test_missing_kek_is_a_clear_error(tmp_path):
    ring = Keyring.open(tmp_path / "kr")
    with pytest.raises(KeyringError, match="restore it from backup"):
        ring.kek("20200101T000000Z-deadbeef")
