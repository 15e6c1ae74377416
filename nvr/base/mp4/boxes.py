"""ISO BMFF boxes: reading headers and fields strictly, and writing boxes and full boxes.

Every read is bounds-checked against the box it belongs to, so a truncated or
lying file gives an :class:`Mp4Error` naming the box path and the offset, never
an ``IndexError`` or ``struct.error`` from deep inside a parser.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from typing import NamedTuple

from nvr.base.errors import Kind, NvrError

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Mp4Error(NvrError):
    """Bytes that are not the fragmented MP4 they claim to be (or use a feature this library refuses)."""

    # A stored segment is verified against the ledger before it gets here, so bytes that do not
    # parse are footage that cannot be served as recorded: data loss, not a caller's mistake.
    kind = Kind.DATA_LOSS

    def __init__(self, message: str, *, where: str = "", offset: int | None = None):
        full = f"{where}: {message}" if where else message
        if offset is not None:
            full = f"{full} (at byte {offset})"
        super().__init__(full, where=where, offset=offset)


class Box(NamedTuple):
    """One box of a buffer: its type, where it starts, how long its header is, where it ends.

    A named tuple (made several times faster than a dataclass): a parse meets hundreds of boxes.
    """

    type: bytes
    start: int
    header: int
    end: int
    path: str  # e.g. "moof/traf/trun", for error messages

    @property
    def body(self) -> int:
        """Offset of the first byte after the header."""
        return self.start + self.header

    @property
    def size(self) -> int:
        return self.end - self.start


@functools.lru_cache(maxsize=1024)  # a parse names every box it meets: the same few dozen types, over and over
def fourcc(value: bytes) -> str:
    """A four-character code as text, escaping bytes that are not printable ASCII."""
    return "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in value)


def iter_boxes(buf: bytes | memoryview, start: int, end: int, parent: str = "") -> Iterator[Box]:
    """The boxes laid end to end in ``buf[start:end]``; a box that overruns ``end`` is an error."""
    if end > len(buf):
        raise Mp4Error(f"container ends at {end} past the data's {len(buf)} bytes", where=parent or "file")
    pos = start
    while pos < end:
        where = parent or "file"
        if end - pos < 8:
            raise Mp4Error(f"{end - pos} stray bytes where a box header (8) should be", where=where, offset=pos)
        size, kind = _U32.unpack_from(buf, pos)[0], bytes(buf[pos + 4:pos + 8])
        path = f"{parent}/{fourcc(kind)}" if parent else fourcc(kind)
        header = 8
        if size == 1:
            if end - pos < 16:
                raise Mp4Error("64-bit size cut off", where=path, offset=pos)
            size = _U64.unpack_from(buf, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos  # "extends to the end of the file": only legal last, which this makes it
        if kind == b"uuid":
            header += 16
        if size < header:
            raise Mp4Error(f"size {size} is smaller than its own header ({header})", where=path, offset=pos)
        if pos + size > end:
            raise Mp4Error(f"size {size} runs {pos + size - end} bytes past its container", where=path, offset=pos)
        yield Box(kind, pos, header, pos + size, path)
        pos += size


def children(buf: bytes | memoryview, box: Box, skip: int = 0) -> list[Box]:
    """The child boxes of a container box, after ``skip`` bytes of its own fields."""
    if box.body + skip > box.end:
        raise Mp4Error(f"{skip} bytes of fields do not fit", where=box.path, offset=box.start)
    return list(iter_boxes(buf, box.body + skip, box.end, box.path))


def only(boxes: list[Box], kind: bytes, where: str, *, required: bool = True) -> Box | None:
    """The single child of type ``kind``: two is an error, none is one when ``required``."""
    found = [b for b in boxes if b.type == kind]
    if len(found) > 1:
        raise Mp4Error(f"{len(found)} {fourcc(kind)} boxes where one is allowed", where=where)
    if not found:
        if required:
            raise Mp4Error(f"no {fourcc(kind)} box", where=where)
        return None
    return found[0]


class Reader:
    """Big-endian fields read in order from one box's body; reading past its end is an :class:`Mp4Error`."""

    def __init__(self, buf: bytes | memoryview, box: Box, offset: int | None = None):
        self.buf = buf
        self.box = box
        self.pos = box.body if offset is None else offset

    def _take(self, n: int) -> int:
        at = self.pos
        if at + n > self.box.end:
            raise Mp4Error(f"field of {n} bytes runs past the box end ({self.box.end})", where=self.box.path,
                           offset=at)
        self.pos = at + n
        return at

    def u8(self) -> int:
        return self.buf[self._take(1)]

    def u16(self) -> int:
        at = self._take(2)
        return (self.buf[at] << 8) | self.buf[at + 1]

    def u24(self) -> int:
        at = self._take(3)
        return (self.buf[at] << 16) | (self.buf[at + 1] << 8) | self.buf[at + 2]

    def u32(self) -> int:
        return _U32.unpack_from(self.buf, self._take(4))[0]

    def i32(self) -> int:
        value = self.u32()
        return value - (1 << 32) if value & 0x80000000 else value

    def u64(self) -> int:
        return _U64.unpack_from(self.buf, self._take(8))[0]

    def i64(self) -> int:
        value = self.u64()
        return value - (1 << 64) if value & (1 << 63) else value

    def uint(self, wide: bool) -> int:
        """A field that is 64-bit in version 1 boxes and 32-bit in version 0 ones."""
        return self.u64() if wide else self.u32()

    def raw(self, n: int) -> bytes:
        at = self._take(n)
        return bytes(self.buf[at:at + n])

    def skip(self, n: int) -> None:
        self._take(n)

    def full_header(self, versions: tuple[int, ...] = (0, 1)) -> tuple[int, int]:
        """(version, flags) of a full box; an unknown version is an error, its layout being unknown."""
        version, flags = self.u8(), self.u24()
        if version not in versions:
            raise Mp4Error(f"version {version} is not one of {versions}", where=self.box.path, offset=self.box.start)
        return version, flags

    def remaining(self) -> int:
        return self.box.end - self.pos


def box(kind: bytes, *payload: bytes) -> bytes:
    """A box of type ``kind`` around ``payload``, with a 64-bit size only when 32 bits do not hold it."""
    if len(kind) != 4:
        raise ValueError(f"box type {kind!r} is not four bytes")
    length = sum(len(p) for p in payload)
    if length + 8 <= 0xFFFFFFFF:
        return b"".join((_U32.pack(length + 8), kind, *payload))
    return b"".join((_U32.pack(1), kind, _U64.pack(length + 16), *payload))


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """A full box: version and 24-bit flags, then ``payload``."""
    return box(kind, bytes((version,)) + (flags & 0xFFFFFF).to_bytes(3, "big"), *payload)


def u32(value: int) -> bytes:
    """``value`` as a big-endian unsigned 32-bit field; out of range is an :class:`Mp4Error`."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise Mp4Error(f"{value} does not fit an unsigned 32-bit field")
    return _U32.pack(value)


def u64(value: int) -> bytes:
    """``value`` as a big-endian unsigned 64-bit field; out of range is an :class:`Mp4Error`."""
    if not 0 <= value < 1 << 64:
        raise Mp4Error(f"{value} does not fit an unsigned 64-bit field")
    return _U64.pack(value)


def i32(value: int) -> bytes:
    """``value`` as a big-endian signed 32-bit field."""
    if not -(1 << 31) <= value < 1 << 31:
        raise Mp4Error(f"{value} does not fit a signed 32-bit field")
    return _U32.pack(value & 0xFFFFFFFF)


def i64(value: int) -> bytes:
    """``value`` as a big-endian signed 64-bit field."""
    if not -(1 << 63) <= value < 1 << 63:
        raise Mp4Error(f"{value} does not fit a signed 64-bit field")
    return _U64.pack(value & 0xFFFFFFFFFFFFFFFF)
