"""Envelope encryption, the ledger chain and the keyring: pure logic and local files."""

import hashlib
import json
import os
import stat

import pytest

import storage.envelope as envelope
from storage.envelope import (
    SEAL_CHUNK,
    SegmentContext,
    decrypt,
    encrypt,
    parse_header,
    seal_buffer_size,
    seal_file,
)
from storage.errors import IntegrityError, KeyringError
from storage.keyring import Keyring
from storage.ledger import (
    GENESIS,
    ChainHead,
    canonical_json,
    record_hash,
    segment_record,
    verify_chain,
)

CTX = SegmentContext(camera="cam1", object_key="cam1/2026/11/29/13/x.seg", start="2026-11-29T13:00:00.000Z",
                     end="2026-11-29T13:00:10.000Z")
KEK = bytes(range(32))


def kek_for(key_id):
    if key_id != "k1":
        raise KeyringError(f"no {key_id}")
    return KEK


def test_roundtrip_and_ciphertext_hides_plaintext():
    plain = b"\x00\x00\x00\x01\x67" + os.urandom(5000) + b"\x00\x00\x00\x01\x65" * 10
    blob = encrypt(plain, CTX, "k1", KEK)
    assert b"\x00\x00\x00\x01\x65" not in blob
    assert decrypt(blob, CTX, kek_for) == plain
    hdr = parse_header(blob)
    assert hdr.key_id == "k1" and len(hdr.wrapped_key) == 40 and len(hdr.nonce) == 12


def test_fresh_data_key_per_segment():
    a, b = encrypt(b"same", CTX, "k1", KEK), encrypt(b"same", CTX, "k1", KEK)
    assert parse_header(a).wrapped_key != parse_header(b).wrapped_key and a != b


@pytest.mark.parametrize("size", [0, 1, SEAL_CHUNK, SEAL_CHUNK + 1, 3 * SEAL_CHUNK - 7])
def test_streaming_seal_writes_exactly_what_encrypt_writes(tmp_path, monkeypatch, size):
    plain = os.urandom(size)
    path = tmp_path / "seg.mp4"
    path.write_bytes(plain)
    # The same data key and nonce for both, so the bytes can be compared.
    monkeypatch.setattr(envelope.AESGCM, "generate_key", staticmethod(lambda bit_length: b"\x07" * 32))
    monkeypatch.setattr(envelope.secrets, "token_bytes", lambda n: b"\x09" * n)
    buf = bytearray(seal_buffer_size(size))
    sealed = seal_file(path, CTX, "k1", KEK, buf)
    expected = encrypt(plain, CTX, "k1", KEK)
    assert bytes(sealed.blob) == expected
    assert sealed.size == size and sealed.key_id == "k1"
    assert sealed.sha256 == hashlib.sha256(plain).hexdigest()
    assert sealed.object_sha256 == hashlib.sha256(expected).hexdigest()
    assert decrypt(bytes(sealed.blob), CTX, kek_for) == plain


def test_streaming_seal_refuses_a_file_that_outgrew_its_buffer(tmp_path):
    path = tmp_path / "seg.mp4"
    path.write_bytes(os.urandom(1000))
    buf = bytearray(seal_buffer_size(1000))
    path.write_bytes(os.urandom(1000 + len(buf)))  # grew after the buffer was sized
    with pytest.raises(ValueError, match="grew while being sealed"):
        seal_file(path, CTX, "k1", KEK, buf)


@pytest.mark.parametrize("position", [0, 10, 60, -1, -20])
def test_any_flipped_byte_fails(position):
    blob = bytearray(encrypt(b"x" * 1000, CTX, "k1", KEK))
    blob[position] ^= 0x01
    with pytest.raises((IntegrityError, KeyringError)):
        decrypt(bytes(blob), CTX, kek_for)


@pytest.mark.parametrize("field", ["camera", "object_key", "start", "end"])
def test_object_moved_to_another_camera_or_time_fails(field):
    blob = encrypt(b"frame data", CTX, "k1", KEK)
    other = SegmentContext(**{**CTX.__dict__, field: "other"})
    with pytest.raises(IntegrityError, match="authentication failed") as err:
        decrypt(blob, other, kek_for)
    assert err.value.check == "decrypt"


def test_canonical_json_and_record_hash_are_reproducible_with_plain_json():
    rec = {"b": 1, "a": "é", "c": [1, {"y": 2, "x": 1}]}
    assert canonical_json(rec) == '{"a":"é","b":1,"c":[1,{"x":1,"y":2}]}'.encode()
    expected = hashlib.sha256(json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    assert record_hash(rec) == expected


def _chain(n, camera="cam1"):
    head, out = ChainHead(camera), []
    for i in range(n):
        rec = segment_record(head=head, start=f"t{i}", end=f"t{i + 1}", partial=False, size=i, sha256="a" * 64,
                             object_key=f"k{i}", object_size=i + 60, object_sha256="b" * 64, key_id="k1", node="n")
        out.append(rec)
        head = ChainHead(camera, rec["seq"], record_hash(rec))
    return out


def test_chain_links_and_detects_edit_removal_reorder():
    recs = _chain(5)
    assert recs[0]["prev"] == GENESIS and recs[0]["seq"] == 0
    assert verify_chain("cam1", recs) == []
    edited = [dict(r) for r in recs]
    edited[2]["size"] = 999
    assert [b.seq for b in verify_chain("cam1", edited)] == [3]
    assert verify_chain("cam1", recs[:2] + recs[3:])
    assert verify_chain("cam1", [recs[1], recs[0]] + recs[2:])
    assert verify_chain("cam2", recs)


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
