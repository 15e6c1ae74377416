"""The custody fixture: the shared storage parts plus an ingestor, a checkpoint writer and its events.

Segments are real fragmented MP4 (H.264, made once per session with ffmpeg's
lavfi test source) fed through the real ingest pipeline into a SeaweedFS
bucket, so every test runs the same code path as recording, without waiting
for cameras.
"""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from minio import Minio

from nvr.base.ffmpeg import find_ffmpeg
from nvr.cli.main import run as run_cli
from nvr.custody.checkpoint import CheckpointWriter
from nvr.custody.verify import VerifyReport, verify_range
from storage.index import Index, SegmentRow
from storage.keyring import Keyring
from storage.objectstore import RECORD_META, ObjectStore
from tests.conftest import make_config
from tests.support.parts import SEG_MS, StorageParts, open_parts

T0 = 1_764_421_200_000
__all__ = ["SEG_MS", "T0", "Custody", "flip"]


def flip(data: bytes, at: int | None = None) -> bytes:
    """``data`` with one bit changed (in the middle unless ``at``)."""
    b = bytearray(data)
    b[len(b) // 2 if at is None else at] ^= 0x01
    return bytes(b)


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> list[bytes]:
    """Six real 1-second fragmented MP4 segments (H.264 320x240, 15 fps, keyframe every second)."""
    d = tmp_path_factory.mktemp("media")
    subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15", "-t", "6",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "15", "-f", "segment",
         "-segment_time", "1", "-segment_format", "mp4",
         "-segment_format_options", "movflags=+frag_keyframe+empty_moov+default_base_moof", "-reset_timestamps", "1",
         str(d / "seg%03d.mp4")],
        check=True, timeout=60, capture_output=True)
    segs = [p.read_bytes() for p in sorted(d.glob("seg*.mp4"))]
    assert len(segs) >= 5 and all(s[4:8] == b"ftyp" for s in segs)
    return segs


@dataclass
class Custody:
    """A data dir's storage (``parts``), the checkpoint writer over it, and the events the writer emitted."""

    parts: StorageParts
    writer: CheckpointWriter
    media: list[bytes]
    events: list

    @property
    def tmp(self) -> Path:
        return self.parts.tmp

    @property
    def store(self) -> ObjectStore:
        return self.parts.store

    @property
    def index(self) -> Index:
        return self.parts.index

    @property
    def keyring(self) -> Keyring:
        return self.parts.keyring

    @property
    def bucket(self) -> str:
        return self.parts.bucket

    def client(self) -> Minio:
        return self.parts.client()

    async def record(self, camera: str, ns) -> list[SegmentRow]:
        """Ingest segment number n of ``camera`` for each n (start T0 + n * 2 s), real MP4 payloads."""
        return await self.parts.put_segments(camera, T0, ns, payload=lambda n: self.media[n % len(self.media)],
                                             closed_ms=lambda n, end: T0)

    async def verify(self, camera: str, start: int = T0 - 1000, end: int = T0 + 60_000) -> VerifyReport:
        return await verify_range(self.store, self.index, self.keyring, camera, start, end)

    def reopen_index(self) -> None:
        self.parts.reopen_index()
        self.writer.index = self.index

    def row(self, sid: str) -> SegmentRow:
        row = self.index.segment(sid)
        assert row is not None
        return row

    def get(self, key: str) -> bytes:
        return self.client().get_object(self.bucket, key).read()

    def replace_object(self, key: str, data: bytes, metadata_from: str | None = None) -> None:
        """Put ``data`` at ``key`` with the ledger-record metadata of ``metadata_from`` (default: ``key``'s)."""
        client = self.client()
        meta = client.stat_object(self.bucket, metadata_from or key).metadata[f"x-amz-meta-{RECORD_META}"]
        client.put_object(self.bucket, key, io.BytesIO(data), len(data), metadata={RECORD_META: meta})

    def write_config(self) -> None:
        """``tmp/nvr.toml`` over the same bucket and data dir, for the CLI."""
        make_config(self.tmp, self.parts.s3, self.bucket, [])

    def cli(self, *argv: str) -> int:
        """Run an ``nvr`` command with ``tmp/nvr.toml`` in this process; its exit code."""
        return run_cli([*argv, "--config", str(self.tmp / "nvr.toml")])


@pytest.fixture
def custody(tmp_path, s3, bucket, media):
    parts = open_parts(tmp_path, s3, bucket)
    events: list = []

    async def on_event(action, target, detail):
        events.append((action, target, detail))

    writer = CheckpointWriter(store=parts.store, index=parts.index, keyring=parts.keyring, node_id="test",
                              interval=3600, on_event=on_event)
    c = Custody(parts, writer, media, events)
    yield c
    parts.close()
