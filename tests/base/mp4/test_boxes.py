"""Box headers and field reads: malformed input is an Mp4Error with a path and an offset, never IndexError."""

from __future__ import annotations

import struct

import pytest

from nvr.base.errors import Kind, NvrError
from nvr.base.mp4.boxes import (
    Box,
    Mp4Error,
    Reader,
    box,
    children,
    full_box,
    i32,
    iter_boxes,
    only,
    u32,
    u64,
)


def hdr(size: int, kind: bytes) -> bytes:
    return struct.pack(">I", size) + kind


def test_box_and_full_box_round_trip():
    data = box(b"moov", full_box(b"mvhd", 1, 0x000203, b"\x01\x02"), box(b"free"))
    (moov,) = iter_boxes(data, 0, len(data))
    assert (moov.type, moov.start, moov.header, moov.end, moov.path) == (b"moov", 0, 8, len(data), "moov")
    mvhd, free = children(data, moov)
    assert mvhd.path == "moov/mvhd" and free.size == 8
    r = Reader(data, mvhd)
    assert r.full_header() == (1, 0x000203)
    assert r.u16() == 0x0102 and r.remaining() == 0


def test_large_size_and_size_zero():
    big = struct.pack(">I4sQ", 1, b"mdat", 20) + b"abcd"
    (b,) = iter_boxes(big, 0, len(big))
    assert (b.header, b.size) == (16, 20)
    to_end = hdr(0, b"mdat") + b"xyz"
    (b,) = iter_boxes(to_end, 0, len(to_end))
    assert b.end == len(to_end)


@pytest.mark.parametrize(("data", "message"), [
    (b"\0\0\0", "3 stray bytes"),
    (hdr(4, b"free"), "smaller than its own header"),
    (hdr(16, b"free") + b"1234", "runs 4 bytes past"),
    (struct.pack(">I4s", 1, b"mdat") + b"\0\0\0", "64-bit size cut off"),
    (struct.pack(">I4sQ", 1, b"mdat", 12), "smaller than its own header"),
    (hdr(12, b"uuid") + b"\0" * 4, "smaller than its own header"),
])
def test_malformed_headers(data, message):
    with pytest.raises(Mp4Error, match=message) as err:
        list(iter_boxes(data, 0, len(data)))
    assert err.value.kind is Kind.DATA_LOSS and isinstance(err.value, NvrError)


def test_container_past_buffer_and_error_names_path_and_offset():
    with pytest.raises(Mp4Error, match="past the data"):
        list(iter_boxes(b"", 0, 8))
    data = box(b"moov", hdr(40, b"trak"))
    moov = next(iter_boxes(data, 0, len(data)))
    with pytest.raises(Mp4Error) as err:
        children(data, moov)
    assert "moov/trak" in str(err.value) and err.value.context["offset"] == 8


@pytest.mark.parametrize(("read", "n"), [("u8", 1), ("u16", 2), ("u24", 3), ("u32", 4), ("i32", 4), ("u64", 8),
                                         ("i64", 8)])
def test_reads_past_the_box_end(read, n):
    data = box(b"tfdt", b"\0" * (n - 1))
    b = next(iter_boxes(data, 0, len(data)))
    with pytest.raises(Mp4Error, match=f"field of {n} bytes runs past"):
        getattr(Reader(data, b), read)()


def test_signed_reads_and_full_header_version():
    data = box(b"trun", b"\x02\0\0\0", b"\xff\xff\xff\xfe", b"\xff" * 8)
    b = next(iter_boxes(data, 0, len(data)))
    r = Reader(data, b)
    with pytest.raises(Mp4Error, match="version 2 is not one of"):
        r.full_header()
    assert r.i32() == -2 and r.i64() == -1


def test_only():
    a = Box(b"tfhd", 0, 8, 8, "traf/tfhd")
    assert only([a], b"tfhd", "traf") is a
    assert only([], b"tfdt", "traf", required=False) is None
    with pytest.raises(Mp4Error, match="no tfdt box"):
        only([a], b"tfdt", "traf")
    with pytest.raises(Mp4Error, match="2 tfhd boxes"):
        only([a, a], b"tfhd", "traf")


def test_writers_refuse_out_of_range():
    assert u64(1 << 40) == b"\0\0\1\0\0\0\0\0" and i32(-1) == b"\xff" * 4
    for bad in (lambda: u32(-1), lambda: u32(1 << 32), lambda: u64(-1), lambda: i32(1 << 31)):
        with pytest.raises(Mp4Error, match="does not fit"):
            bad()
    with pytest.raises(ValueError):
        box(b"abc")
