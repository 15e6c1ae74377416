"""Checks and small tools the end-to-end tests share: the CLI as a subprocess, bucket listings, free ports."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.conftest import minio_client


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nvr.cli", *args], capture_output=True, text=True, timeout=timeout)


def assert_contiguous(rows, *, allow_gaps: bool = False) -> None:
    """Segments of a camera never overlap; without restarts they touch exactly."""
    for a, b in zip(rows, rows[1:], strict=False):
        assert b.start_ms >= a.end_ms, f"{b.id} starts before {a.id} ends"
        if not allow_gaps:
            assert b.start_ms == a.end_ms, f"hole between {a.id} and {b.id}"


def bucket_keys(ep, bucket: str, prefix: str) -> list[str]:
    return sorted(o.object_name for o in minio_client(ep).list_objects(bucket, prefix=prefix, recursive=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
