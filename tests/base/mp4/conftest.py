"""Segments made once per session (with their unsegmented reference encodes): a few seconds in all."""

from __future__ import annotations

import pytest

from tests.base.mp4 import media


@pytest.fixture(scope="session")
def made(tmp_path_factory) -> dict[str, list[media.Made]]:
    root = tmp_path_factory.mktemp("mp4")
    return {
        "av": media.make(root, "av", "h264", seconds=6, audio=True),  # 3 segments, H.264 with B-frames + AAC
        "h264": media.make(root, "h264", "h264"),  # 2 segments, video only
        "hevc": media.make(root, "hevc", "hevc"),
        "mjpeg": media.make(root, "mjpeg", "mjpeg"),
        "h264_big": media.make(root, "h264_big", "h264", seconds=2, size="192x144"),
        "inband": media.make(root, "inband", "h264", inband=True),
        "inband_big": media.make(root, "inband_big", "h264", seconds=2, size="192x144", inband=True),
    }
