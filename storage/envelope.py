"""Envelope encryption of one segment: a fresh AES-256-GCM data key, wrapped under a named KEK.

Stored object = header || ciphertext || 16-byte GCM tag. The header (all
integers big-endian)::

    offset  size  field
    0       4     magic b"NVRE"
    4       1     format version (1)
    5       1     key id length K
    6       K     key id of the KEK (ASCII)
    6+K     1     wrapped data key length W (40: RFC 3394 AES key wrap of 32 bytes)
    7+K     W     wrapped data key
    7+K+W   12    GCM nonce

The GCM associated data is the header followed by the canonical JSON of the
segment's context (camera, object key, start, end): swapping an object for
another camera's or another time's, or editing the header, fails
authentication. Each data key encrypts exactly one segment, so a random
nonce can never repeat under one key.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from storage.errors import IntegrityError
from storage.ledger import canonical_json

MAGIC = b"NVRE"
VERSION = 1
NONCE_LEN = 12
TAG_LEN = 16
MAX_HEADER_LEN = 6 + 255 + 1 + 255 + NONCE_LEN
# Chunk of the streaming seal: small enough to stay in L2 between the plaintext hash and the cipher.
SEAL_CHUNK = 256 * 1024


@dataclass(frozen=True)
class SegmentContext:
    """What the ciphertext is bound to; any change makes decryption fail."""

    camera: str
    object_key: str
    start: str
    end: str

    def aad(self, header: bytes) -> bytes:
        return header + canonical_json(
            {"camera": self.camera, "object_key": self.object_key, "start": self.start, "end": self.end}
        )


@dataclass(frozen=True)
class Header:
    key_id: str
    wrapped_key: bytes
    nonce: bytes
    raw: bytes


def _build_header(key_id: str, wrapped: bytes, nonce: bytes) -> bytes:
    kid = key_id.encode("ascii")
    return MAGIC + struct.pack(">BB", VERSION, len(kid)) + kid + struct.pack(">B", len(wrapped)) + wrapped + nonce


def parse_header(blob: bytes) -> Header:
    """Read the header of a stored object; raises IntegrityError when it is not one of ours."""
    if len(blob) < 7 or blob[:4] != MAGIC:
        raise IntegrityError("not an nvr encrypted segment (bad magic)", check="header")
    version, klen = struct.unpack(">BB", blob[4:6])
    if version != VERSION:
        raise IntegrityError(f"unsupported envelope version {version}", check="header")
    pos = 6 + klen
    if len(blob) < pos + 1:
        raise IntegrityError("truncated header", check="header")
    try:
        key_id = blob[6:pos].decode("ascii")
    except UnicodeDecodeError:
        raise IntegrityError("key id in header is not ASCII", check="header") from None
    (wlen,) = struct.unpack(">B", blob[pos : pos + 1])
    wrapped = blob[pos + 1 : pos + 1 + wlen]
    nonce = blob[pos + 1 + wlen : pos + 1 + wlen + NONCE_LEN]
    end = pos + 1 + wlen + NONCE_LEN
    if len(wrapped) != wlen or len(nonce) != NONCE_LEN or len(blob) < end + TAG_LEN:
        raise IntegrityError("truncated header", check="header")
    return Header(key_id=key_id, wrapped_key=wrapped, nonce=nonce, raw=blob[:end])


def encrypt(plaintext: bytes, context: SegmentContext, key_id: str, kek: bytes) -> bytes:
    """Encrypt one segment under a fresh data key wrapped by ``kek``."""
    data_key = AESGCM.generate_key(bit_length=256)
    wrapped = aes_key_wrap(kek, data_key)
    nonce = secrets.token_bytes(NONCE_LEN)
    header = _build_header(key_id, wrapped, nonce)
    return header + AESGCM(data_key).encrypt(nonce, plaintext, context.aad(header))


@dataclass(frozen=True)
class Sealed:
    """One segment sealed by :func:`seal_file`: the object bytes (a view into the caller's buffer) and hashes."""

    blob: memoryview
    size: int  # plaintext bytes
    sha256: str  # of the plaintext
    object_sha256: str  # of ``blob``
    key_id: str


def seal_buffer_size(plaintext_size: int) -> int:
    """Bytes of buffer :func:`seal_file` needs for a plaintext of this size."""
    return MAX_HEADER_LEN + plaintext_size + TAG_LEN + SEAL_CHUNK


def seal_file(path: Path, context: SegmentContext, key_id: str, kek: bytes, buf: bytearray) -> Sealed:
    """:func:`encrypt` of a file in one streaming pass, writing the object into ``buf``.

    Reads ``SEAL_CHUNK`` at a time, hashing the plaintext, encrypting into
    ``buf`` and hashing the output while each chunk is still in cache: no
    whole-segment copies and no fresh allocation per segment, which is most
    of what ingest costs beyond the crypto itself (docs/benchmarks.md). The
    bytes are exactly what :func:`encrypt` produces for the same key and nonce.
    ``buf`` must hold ``seal_buffer_size`` of the file's size; raises ValueError
    when the file does not fit (it grew after the caller sized the buffer).
    """
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(NONCE_LEN)
    header = _build_header(key_id, aes_key_wrap(kek, data_key), nonce)
    enc = Cipher(algorithms.AES(data_key), modes.GCM(nonce)).encryptor()
    enc.authenticate_additional_data(context.aad(header))
    h_plain, h_obj = hashlib.sha256(), hashlib.sha256(header)
    with memoryview(buf) as out, open(path, "rb", buffering=0) as f:
        limit = len(out) - SEAL_CHUNK - TAG_LEN  # the last SEAL_CHUNK bytes of buf are the read chunk
        chunk = out[limit + TAG_LEN :]
        out[: len(header)] = header
        pos = len(header)
        size = 0
        while n := f.readinto(chunk):
            if pos + n > limit:
                raise ValueError(f"{path} grew while being sealed (buffer of {len(out)} bytes)")
            piece = chunk[:n]
            h_plain.update(piece)
            w = enc.update_into(piece, out[pos : pos + n + 15])
            h_obj.update(out[pos : pos + w])
            pos += w
            size += n
        tail = enc.finalize()  # empty for GCM, kept in case
        for extra in (tail, enc.tag):
            out[pos : pos + len(extra)] = extra
            h_obj.update(extra)
            pos += len(extra)
    return Sealed(
        blob=memoryview(buf)[:pos], size=size, sha256=h_plain.hexdigest(), object_sha256=h_obj.hexdigest(),
        key_id=key_id,
    )


def sha256_stream(f: BinaryIO) -> tuple[str, int]:
    """(SHA-256 hex, bytes) of what is left to read in ``f``, read in chunks."""
    h, size = hashlib.sha256(), 0
    while block := f.read(SEAL_CHUNK):
        h.update(block)
        size += len(block)
    return h.hexdigest(), size


def sha256_file(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, bytes) of a file."""
    with open(path, "rb") as f:
        return sha256_stream(f)


def _data_key(header, kek_for) -> bytes:
    """The object's data key, unwrapped under the KEK its header names (a KeyringError goes to the caller)."""
    kek = kek_for(header.key_id)
    try:
        return aes_key_unwrap(kek, header.wrapped_key)
    except InvalidUnwrap:
        raise IntegrityError(
            f"data key does not unwrap under KEK {header.key_id}: header altered or wrong key", check="unwrap"
        ) from None


def decrypt(blob: bytes | memoryview, context: SegmentContext, kek_for) -> bytes:
    """Decrypt a stored object; ``kek_for(key_id)`` returns the KEK. Raises IntegrityError on any mismatch."""
    header = parse_header(blob)
    data_key = _data_key(header, kek_for)
    try:
        # A view, not a slice: a copy of the whole ciphertext would cost half as much as decrypting it.
        return AESGCM(data_key).decrypt(header.nonce, memoryview(blob)[len(header.raw) :], context.aad(header.raw))
    except InvalidTag:
        raise IntegrityError(
            "authentication failed: the object was altered, or belongs to another camera, key or time",
            check="decrypt",
        ) from None


class Opener:
    """:func:`decrypt` of an object fed in pieces as it downloads, into one buffer of the plaintext's known size.

    :meth:`feed` each piece in order; each is decrypted and its plaintext hashed at once, while
    it is in cache. :meth:`finish` checks the GCM tag (the last 16 bytes) and only then returns
    the plaintext; :meth:`sha256` is then its SHA-256. Every failure is the
    :class:`IntegrityError` :func:`decrypt` raises for the same object (``size`` is the
    plaintext length the ledger recorded: a longer or shorter object fails).
    """

    def __init__(self, context: SegmentContext, kek_for, size: int):
        self._context, self._kek_for, self._size = context, kek_for, size
        self._plain = bytearray(size)
        self._out = memoryview(self._plain)
        self._pos = 0
        self._head = bytearray()  # the object's first bytes until the header is read
        self._held = b""  # the last TAG_LEN bytes seen: the tag, if no more come
        self._dec = None
        self._hash = hashlib.sha256()
        self._done = False

    def feed(self, piece: bytes | memoryview) -> None:
        if self._dec is None:
            self._head += piece
            if len(self._head) < MAX_HEADER_LEN + TAG_LEN:
                return
            piece = self._start(bytes(self._head))
        self._update(piece)

    def finish(self) -> bytearray:
        if self._dec is None:
            self._update(self._start(bytes(self._head)))
        if self._pos != self._size or len(self._held) != TAG_LEN:
            raise _altered()
        try:
            self._dec.finalize_with_tag(self._held)
        except InvalidTag:
            raise _altered() from None
        self._done = True
        return self._plain

    def sha256(self) -> str:
        """The SHA-256 (hex) of the plaintext :meth:`finish` returned."""
        if not self._done:
            raise RuntimeError("the plaintext is not authenticated yet: finish() first")
        return self._hash.hexdigest()

    def _start(self, head: bytes) -> memoryview:
        header = parse_header(head)
        data_key = _data_key(header, self._kek_for)
        self._dec = Cipher(algorithms.AES(data_key), modes.GCM(header.nonce)).decryptor()
        self._dec.authenticate_additional_data(self._context.aad(header.raw))
        return memoryview(head)[len(header.raw):]

    def _update(self, piece: bytes | memoryview) -> None:
        start = self._pos
        if len(piece) >= TAG_LEN:
            self._decrypt(self._held)
            self._decrypt(memoryview(piece)[:-TAG_LEN])
            self._held = bytes(piece[-TAG_LEN:])
        else:
            both = self._held + bytes(piece)
            self._decrypt(both[:-TAG_LEN])
            self._held = both[-TAG_LEN:]
        self._hash.update(self._out[start:self._pos])

    def _decrypt(self, data: bytes | memoryview) -> None:
        room, n = self._size - self._pos, len(data)
        if n > room:
            raise _altered()  # longer than the plaintext the ledger recorded
        # update_into wants 15 bytes of room past its output: the buffer's last bytes come by update().
        direct = n if n + 15 <= room else max(0, room - 15)
        if direct:
            self._pos += self._dec.update_into(data[:direct], self._out[self._pos:self._pos + direct + 15])
        if direct < n:
            rest = self._dec.update(data[direct:])
            self._out[self._pos:self._pos + len(rest)] = rest
            self._pos += len(rest)


def _altered() -> IntegrityError:
    return IntegrityError(
        "authentication failed: the object was altered, or belongs to another camera, key or time", check="decrypt"
    )
