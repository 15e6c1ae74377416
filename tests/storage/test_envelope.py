"""Envelope encryption of a segment: round trip, a fresh key each time, the streaming seal, tampering."""

import hashlib
import os

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


def _open(blob: bytes, size: int, piece: int, context: SegmentContext = CTX) -> bytearray:
    opener = envelope.Opener(context, kek_for, size)
    for at in range(0, len(blob), piece):
        opener.feed(blob[at:at + piece])
    return opener.finish()


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 545, 5000, 300_000])
def test_opener_in_any_pieces_is_decrypt(size):
    plain = os.urandom(size)
    blob = encrypt(plain, CTX, "k1", KEK)
    for piece in (1, 7, 16, 17, 4096, 1 << 20):
        if size > 10_000 and piece < 4096:
            continue  # byte by byte is slow and says nothing more
        assert _open(blob, size, piece) == plain, piece
        view = memoryview(blob)
        opener = envelope.Opener(CTX, kek_for, size)
        with pytest.raises(RuntimeError):
            opener.sha256()  # no hash of what is not authenticated yet
        for at in range(0, len(blob), piece):
            opener.feed(view[at:at + piece])
        assert opener.finish() == plain and opener.sha256() == hashlib.sha256(plain).hexdigest()


@pytest.mark.parametrize("position", [0, 10, 60, 2000, -1, -20])
def test_opener_fails_as_decrypt_does(position):
    blob = bytearray(encrypt(b"x" * 5000, CTX, "k1", KEK))
    blob[position] ^= 0x01
    with pytest.raises((IntegrityError, KeyringError)) as want:
        decrypt(bytes(blob), CTX, kek_for)
    for piece in (100, 1 << 20):
        with pytest.raises(type(want.value)) as got:
            _open(bytes(blob), 5000, piece)
        assert getattr(got.value, "check", None) == getattr(want.value, "check", None)


def test_opener_refuses_another_length_or_context():
    blob = encrypt(b"y" * 3000, CTX, "k1", KEK)
    for size in (2999, 3001, 0):
        with pytest.raises(IntegrityError, match="authentication failed"):
            _open(blob, size, 1000)
    with pytest.raises(IntegrityError, match="authentication failed"):
        _open(blob[:-1], 3000, 1000)  # the tag cut short
    other = SegmentContext(**{**CTX.__dict__, "camera": "other"})
    with pytest.raises(IntegrityError, match="authentication failed"):
        _open(blob, 3000, 1000, other)
