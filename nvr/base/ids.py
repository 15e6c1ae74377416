"""The one rule for camera and segment ids, used by the config, the API, the ledger and the bucket keys."""

from __future__ import annotations

import re

# 1-63 of a-z, 0-9, '_', '-', starting with a letter or digit: safe in S3 keys, paths and URLs.
CAMERA_ID = r"[a-z0-9][a-z0-9_-]{0,62}"
CAMERA_ID_HINT = "1-63 of a-z, 0-9, '_', '-', starting with a letter or digit"
# seq has at most 12 digits: the bucket's zero-padded key width.
SEGMENT_ID = rf"({CAMERA_ID}):(\d{{1,12}})"
_CAMERA = re.compile(CAMERA_ID)
_SEGMENT = re.compile(SEGMENT_ID)


def is_camera_id(value: object) -> bool:
    """True for a string that is a camera id as a whole (no trailing newline, no prefix match)."""
    return isinstance(value, str) and _CAMERA.fullmatch(value) is not None


def segment_id(camera: str, seq: int) -> str:
    """The id of a camera's segment, as the API and the CLI show it."""
    return f"{camera}:{seq}"


def parse_segment_id(value: str) -> tuple[str, int] | None:
    """(camera, seq) of a segment id, or None when ``value`` is not one as a whole."""
    m = _SEGMENT.fullmatch(value)
    return (m.group(1), int(m.group(2))) if m else None
