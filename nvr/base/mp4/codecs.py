"""RFC 6381 codec strings of sample entries: what ``MediaSource.isTypeSupported`` and a live client are told.

Pure: a sample entry's bytes (as ``Track.entries`` holds them) in, a string out.
An entry this module can't read is named by its four-character code alone, which
a browser refuses cleanly (MJPEG, for one, has no MSE codec string at all).
"""

from __future__ import annotations

from nvr.base.mp4.boxes import Mp4Error, fourcc, iter_boxes
from nvr.base.mp4.moov import Init, Track

VISUAL_ENTRY = 8 + 78  # box header + VisualSampleEntry fields, then its child boxes (avcC, hvcC, btrt…)
AUDIO_ENTRY = 8 + 28  # box header + AudioSampleEntry fields, then esds
_HEVC_SPACE = ("", "A", "B", "C")


def _child(entry: bytes, skip: int, kind: bytes) -> bytes | None:
    """The body of ``entry``'s child box ``kind`` (after the sample entry's own ``skip`` bytes), if any."""
    try:
        for b in iter_boxes(entry, skip, len(entry)):
            if b.type == kind:
                return entry[b.body:b.end]
    except Mp4Error:
        return None
    return None


def _avc(code: str, entry: bytes) -> str:
    cfg = _child(entry, VISUAL_ENTRY, b"avcC")
    if cfg is None or len(cfg) < 4:
        return code
    return f"{code}.{cfg[1]:02x}{cfg[2]:02x}{cfg[3]:02x}"  # profile, constraint flags, level


def _hevc(code: str, entry: bytes) -> str:
    cfg = _child(entry, VISUAL_ENTRY, b"hvcC")
    if cfg is None or len(cfg) < 13:
        return code
    space, tier, profile = cfg[1] >> 6, (cfg[1] >> 5) & 1, cfg[1] & 0x1F
    # The compatibility flags are written in reverse bit order (ISO/IEC 14496-15 E.3).
    compat = int(f"{int.from_bytes(cfg[2:6], 'big'):032b}"[::-1], 2)
    constraints = cfg[6:12].rstrip(b"\x00")
    parts = [code, f"{_HEVC_SPACE[space]}{profile}", f"{compat:x}", f"{'LH'[tier]}{cfg[12]}"]
    parts += [f"{b:x}" for b in constraints]
    return ".".join(parts)


def _descriptor(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, body start, body end) of the MPEG-4 descriptor at ``at`` (sizes in 7-bit groups)."""
    tag, at, size = data[at], at + 1, 0
    for _ in range(4):
        b = data[at]
        at += 1
        size = (size << 7) | (b & 0x7F)
        if not b & 0x80:
            break
    return tag, at, at + size


def _mp4a(entry: bytes) -> str:
    esds = _child(entry, AUDIO_ENTRY, b"esds")
    try:
        tag, at, end = _descriptor(esds, 4)  # after the full box header: ES_Descriptor
        if tag != 3:
            return "mp4a"
        flags = esds[at + 2]
        at += 3 + (2 if flags & 0x80 else 0) + (1 + esds[at + 3] if flags & 0x40 else 0) + (2 if flags & 0x20 else 0)
        tag, at, end = _descriptor(esds, at)  # DecoderConfigDescriptor
        if tag != 4:
            return "mp4a"
        oti = esds[at]
        if oti != 0x40:  # not MPEG-4 audio: the object type alone names it
            return f"mp4a.{oti:x}"
        tag, dsi, _ = _descriptor(esds, at + 13)  # DecoderSpecificInfo: the AudioSpecificConfig
        aot = esds[dsi] >> 3 if tag == 5 else 2
        if aot == 31:
            aot = 32 + (((esds[dsi] & 0x07) << 3) | (esds[dsi + 1] >> 5))
        return f"mp4a.40.{aot}"
    except (IndexError, TypeError):
        return "mp4a"


def codec_string(track: Track) -> str:
    """The RFC 6381 codec string of a track's first sample entry (``avc1.42c01e``, ``mp4a.40.2``…)."""
    entry = track.entries[0]
    code = fourcc(entry[4:8])
    if code in ("avc1", "avc3"):
        return _avc(code, entry)
    if code in ("hvc1", "hev1"):
        return _hevc(code, entry)
    if code == "mp4a":
        return _mp4a(entry)
    return code


def mime_type(init: Init) -> str:
    """``video/mp4; codecs="…"`` of every track of an init, as a SourceBuffer is created with."""
    return f'video/mp4; codecs="{",".join(codec_string(t) for t in init.tracks)}"'
