"""The live WebSocket's messages: a few header lines, a blank line, then MP4 bytes (pure).

Each binary message is one unit a Media Source Extensions client appends as
it is, preceded by headers that tell it what it is::

    Type: init                                   (or: media)
    Content-Type: video/mp4; codecs="avc1.42c01e"
    X-Init: 1                                    (the configuration; a new one means: new SourceBuffer)
    X-Sequence: 42                               (media: the feed's fragment number)
    X-Wall-Clock: 2026-12-02T16:01:02.345Z       (media: capture time of its first frame)
    X-Wall-Clock-Source: recorder                (or: arrival)
    X-Media-Time: 12.5                           (media: where it starts on this viewer's timeline, s)
    X-Skipped: 3                                 (media: fragments dropped before it, the viewer fell behind)

Lines end with CRLF, the header block with an empty line (as in HTTP), so a
client finds the bytes at the first ``\\r\\n\\r\\n``. A text message is a JSON
object, sent once, just before the server closes: ``{"end": "<why>"}``.
"""

from __future__ import annotations

from collections.abc import Mapping

SEPARATOR = b"\r\n\r\n"
MAX_HEADER = 4096


def encode(headers: Mapping[str, str], *body: bytes | memoryview) -> bytes:
    """One message: ``headers`` (names and values without CR or LF) and ``body`` (its pieces, joined)."""
    lines = []
    for name, value in headers.items():
        if "\r" in name or "\n" in name or ":" in name or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} can't be framed")
        lines.append(f"{name}: {value}")
    return b"".join(("\r\n".join(lines).encode("utf-8"), SEPARATOR, *body))


def decode(message: bytes) -> tuple[dict[str, str], bytes]:
    """The headers and body of one message (what a client does; the tests use it)."""
    end = message.find(SEPARATOR, 0, MAX_HEADER)
    if end < 0:
        raise ValueError("no header block in a live message")
    headers = {}
    for line in message[:end].decode("utf-8").split("\r\n"):
        name, sep, value = line.partition(": ")
        if not sep:
            raise ValueError(f"unreadable header line {line!r}")
        headers[name] = value
    return headers, message[end + len(SEPARATOR):]
