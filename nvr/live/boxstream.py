"""Complete MP4 units out of bytes that arrive in pieces (a growing spool file, a pipe). Pure, no I/O.

A recorder's ffmpeg writes a segment file as ``ftyp``, ``moov`` (an empty
moov: the fragments carry every sample) and then one ``moof`` + ``mdat`` per
keyframe, each flushed when complete. :class:`UnitParser` turns those bytes,
fed in any pieces, into :class:`Unit`\\ s: one ``init`` (ftyp + moov) and then
``fragment``\\ s (moof + mdat), in file order. Anything else at the top level
(``free``, an ``mfra`` at the end) is dropped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from nvr.base.mp4.boxes import Mp4Error, fourcc

MAX_BOX = 256 * 1024 * 1024  # a fragment of a 1 s GOP at 100 Mbit/s is 12.5 MB; far past that is garbage
_SKIPPED = (b"free", b"skip", b"mfra", b"sidx", b"styp", b"prft", b"uuid")


@dataclass(frozen=True)
class Unit:
    """``init`` (ftyp + moov bytes) or ``fragment`` (moof + mdat bytes)."""

    kind: str
    data: bytes


class UnitParser:
    """Feed bytes in order; get back each unit the moment its last byte arrived."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._ftyp: bytes | None = None
        self._moof: bytes | None = None
        self.consumed = 0  # bytes of the input made into units or dropped so far

    def feed(self, data: bytes) -> list[Unit]:
        """The units completed by ``data``; a malformed box is an :class:`Mp4Error`."""
        self._buf += data
        out: list[Unit] = []
        pos = 0
        while len(self._buf) - pos >= 8:
            size, kind = struct.unpack_from(">I4s", self._buf, pos)
            header = 8
            if size == 1:
                if len(self._buf) - pos < 16:
                    break
                size, header = struct.unpack_from(">Q", self._buf, pos + 8)[0], 16
            if size < header or size > MAX_BOX:
                raise Mp4Error(f"a top-level box of {size} bytes", where=fourcc(kind), offset=self.consumed + pos)
            if len(self._buf) - pos < size:
                break
            box = bytes(self._buf[pos:pos + size])
            pos += size
            unit = self._box(kind, box)
            if unit is not None:
                out.append(unit)
        del self._buf[:pos]
        self.consumed += pos
        return out

    def _box(self, kind: bytes, box: bytes) -> Unit | None:
        if kind == b"ftyp":
            self._ftyp, self._moof = box, None
            return None
        if kind == b"moov":
            if self._ftyp is None:
                raise Mp4Error("a moov without an ftyp before it", where="moov")
            return Unit("init", self._ftyp + box)
        if kind == b"moof":
            if self._moof is not None:
                raise Mp4Error("a moof without its mdat", where="moof")
            self._moof = box
            return None
        if kind == b"mdat":
            if self._moof is None:
                raise Mp4Error("an mdat outside any fragment", where="mdat")
            moof, self._moof = self._moof, None
            return Unit("fragment", moof + box)
        if kind in _SKIPPED:
            return None
        raise Mp4Error(f"unexpected top-level box {fourcc(kind)} in a live stream", where=fourcc(kind))
