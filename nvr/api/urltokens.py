"""Signed, short-lived URL tokens: what a player that can't send an Authorization header carries instead.

A URL token is a grant made by one API token: footage of one camera over one
range, until an expiry. It is ``base64url(payload || mac)`` (no padding, so
it sits in a query string as it is)::

    payload = version u8 (1) | signer's created_ms u64 | expires_ms u64 | start_ms u64 | end_ms u64
              | len u8 | signer's token name | len u8 | camera id
    mac     = HMAC-SHA256(secret, "nvr-url-token\\0" || payload)

The secret is 32 random bytes kept in the server's private data dir, so a
token is valid only on the server that signed it. The signer is named by its
token name *and* creation time: a token re-created under a revoked one's name
does not bring the old links back. Whether the signer still exists and is not
revoked is not known here; the caller checks that on every use
(``nvr.api.auth``), so revoking an API token stops every link it signed.

Pure: bytes and integers in, a ``Grant`` or a ``BadUrlToken`` out; the time is
passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass, field

VERSION = 1
SECRET_BYTES = 32
DEFAULT_TTL_MS = 600_000  # how long a link lives: long enough to start playing, short enough to leak little
_DOMAIN = b"nvr-url-token\x00"  # so this MAC can never be confused with another use of the secret
_FIXED = struct.Struct(">BQQQQ")
_MAC_BYTES = 32
MAX_CHARS = 512  # longest token accepted: two 255-byte names fit; anything longer is not one of ours
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,512}")


@dataclass(frozen=True)
class Grant:
    """What a URL token allows: ``camera``'s footage overlapping ``[start_ms, end_ms)`` until ``expires_ms``."""

    signer: str  # the name of the API token that signed it
    signer_created_ms: int  # that token's creation time: which token of that name
    camera: str
    start_ms: int
    end_ms: int
    expires_ms: int

    def covers(self, camera: str, start_ms: int, end_ms: int) -> bool:
        """Whether footage of ``camera`` spanning ``[start_ms, end_ms)`` lies in this grant (overlaps its range)."""
        return camera == self.camera and end_ms > self.start_ms and start_ms < self.end_ms


class BadUrlToken(Exception):
    """A token that is not valid; ``reason`` is ``malformed``, ``forged`` or ``expired``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class UrlSigner:
    """Signs and verifies URL tokens with one secret; ``ttl_ms`` is how long a new one lives."""

    secret: bytes = field(repr=False)  # never in a repr, not even in a traceback's locals
    ttl_ms: int = DEFAULT_TTL_MS

    def __post_init__(self) -> None:
        if len(self.secret) != SECRET_BYTES:
            raise ValueError(f"a URL token secret is {SECRET_BYTES} bytes, not {len(self.secret)}")
        if self.ttl_ms <= 0:
            raise ValueError("a URL token must live a positive time")

    @classmethod
    def ephemeral(cls) -> UrlSigner:
        """A signer with a fresh random secret: its links die with the process (for APIs built without one)."""
        return cls(secrets.token_bytes(SECRET_BYTES))

    def grant(self, *, signer: str, signer_created_ms: int, camera: str, start_ms: int, end_ms: int,
              now_ms: int) -> Grant:
        """A grant of ``camera`` over ``[start_ms, end_ms)`` by ``signer``, for ``ttl_ms`` plus the range's length.

        The range's length on top: a player fetches segments while it plays, so a link to an hour of
        footage must outlive an hour of playing at 1x; ``ttl_ms`` is the time allowed to start.
        """
        return Grant(signer, signer_created_ms, camera, start_ms, end_ms,
                     now_ms + self.ttl_ms + max(0, end_ms - start_ms))

    def sign(self, g: Grant) -> str:
        """The URL token of ``g``."""
        payload = _payload(g)
        return _b64(payload + self._mac(payload))

    def verify(self, token: str, now_ms: int) -> Grant:
        """The grant ``token`` carries, if this secret signed it and it has not expired (else ``BadUrlToken``)."""
        if len(token) > MAX_CHARS or not _TOKEN_RE.fullmatch(token):
            raise BadUrlToken("malformed", "the URL token is not one this server makes")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise BadUrlToken("malformed", "the URL token is not one this server makes") from None
        if len(raw) <= _MAC_BYTES:
            raise BadUrlToken("malformed", "the URL token is not one this server makes")
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        # Checked before anything in the payload is believed, in constant time.
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise BadUrlToken("forged", "the URL token was not signed by this server (or was altered)")
        g = _parse(payload)
        if g is None:  # signed but unreadable: only a future version's token could be
            raise BadUrlToken("malformed", "the URL token has a layout this server does not know")
        if now_ms >= g.expires_ms:
            raise BadUrlToken("expired", f"the link expired {(now_ms - g.expires_ms) // 1000} s ago; "
                                         "ask for a new one")
        return g

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.secret, _DOMAIN + payload, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _name(text: str) -> bytes:
    raw = text.encode("utf-8")
    if not 0 < len(raw) < 256:
        raise ValueError(f"{text!r}: a name in a URL token is 1-255 bytes")
    return bytes([len(raw)]) + raw


def _payload(g: Grant) -> bytes:
    for value in (g.signer_created_ms, g.expires_ms, g.start_ms, g.end_ms):
        if not 0 <= value < 1 << 64:
            raise ValueError(f"{value} does not fit a URL token's time field")
    return (_FIXED.pack(VERSION, g.signer_created_ms, g.expires_ms, g.start_ms, g.end_ms)
            + _name(g.signer) + _name(g.camera))


def _parse(payload: bytes) -> Grant | None:
    if len(payload) < _FIXED.size or payload[0] != VERSION:
        return None
    _, created, expires, start, end = _FIXED.unpack_from(payload)
    names, at = [], _FIXED.size
    for _ in range(2):
        if at >= len(payload):
            return None
        size = payload[at]
        raw = payload[at + 1:at + 1 + size]
        if size == 0 or len(raw) != size:
            return None
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return None
        at += 1 + size
    if at != len(payload):
        return None
    return Grant(names[0], created, names[1], start, end, expires)
