"""The weed child process: its environment, a death signal tied to the parent, signals to its group."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

from storage.errors import EmbeddedS3Error

PR_SET_PDEATHSIG = 1


def weed_env(tmpdir: Path) -> dict[str, str]:
    """Our environment minus what would reconfigure weed behind our back."""
    env = {
        k: v
        for k, v in os.environ.items()
        # WEED_* override any TOML key; S3_EXTERNAL_URL changes signature checks; AWS_*
        # credentials could add identities.
        if not (k.startswith("WEED_") or k.startswith("AWS_") or k == "S3_EXTERNAL_URL")
    }
    env["TMPDIR"] = str(tmpdir)
    return env


def pdeathsig_preexec():
    """A preexec_fn making the child get SIGKILL when its parent dies (Linux), else None.

    SIGKILL rather than SIGTERM: a clean stop takes ~17 s during which the lock and ports
    would stay busy and block the restart of the parent; acknowledged writes are on disk
    either way.  Note the signal fires when the *thread* that forked exits: start weed from
    the thread that runs the event loop for the life of the server (asyncio does).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    """Send ``sig`` to the process group weed leads, if it has not been reaped."""
    # weed leads its own process group (start_new_session); signalling the group also
    # reaches anything it may have spawned.  A pid not yet reaped cannot have been reused.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


async def kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group and reap it (bounded)."""
    signal_group(proc, signal.SIGKILL)
    try:
        await asyncio.wait_for(proc.wait(), 10.0)
    except TimeoutError:
        raise EmbeddedS3Error(f"weed (pid {proc.pid}) did not die after SIGKILL") from None
