"""The recorder's child process and private files: ffmpeg dies with nvr; a credentials file is 0600 from birth."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Runs in the child before exec: ffmpeg gets SIGKILL if nvr dies, so no orphan writes into the spool."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, mode 0600 from the first byte (it holds a camera's credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
