"""The local spool: segment files ffmpeg wrote, and the tickets that say a segment is closed.

The spool directory is the ingest queue, so it survives any crash::

    <spool>/<camera>/<run>-<n>.mp4          written by ffmpeg
    <spool>/<camera>/t<start_ms>-<run>-<n>.json   ticket: the segment is closed, with its wall-clock times
    <spool>/<camera>/<run>.lease            in a cluster: the lease epoch the run recorded under

A ticket is written atomically (temp file, fsync, rename) when the recorder
learns a segment closed, or by crash recovery for a file left without one
(marked partial). Ticket names sort by start time, so the oldest segment of a
camera is always ingested first. A segment leaves the spool (file, then ticket)
only after it is durable in S3 and indexed.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from nvr.base.times import now_ms

SEGMENT_RE = re.compile(r"^(?P<run>r\d{13})-(?P<n>\d{6})\.mp4$")
TICKET_RE = re.compile(r"^t(?P<start>\d{13})-(?P<stem>r\d{13}-\d{6})\.json$")


@dataclass(frozen=True)
class ClosedSegment:
    """A finished segment file waiting in the spool, with its place on the wall clock."""

    camera: str
    file: str  # name inside the camera's spool directory
    run: str
    n: int
    start_ms: int
    end_ms: int
    partial: bool
    closed_ms: int
    # How it was placed (docs/timing.md): whose clock timed the frames, and by how much the run was
    # re-anchored at this segment (0: not). Tickets of older releases lack them: the defaults.
    clock: str = "camera"
    correction_ms: int = 0
    audio_transcoded: bool = False  # the camera's audio was re-encoded to AAC (mp4 can't carry G.711)
    epoch: int | None = None  # in a cluster: the camera's lease epoch this node recorded it under

    @property
    def stem(self) -> str:
        return f"{self.run}-{self.n:06d}"

    @property
    def ticket_name(self) -> str:
        return f"t{self.start_ms:013d}-{self.stem}.json"


def run_id(start_ms: int) -> str:
    """Run ids are the run's start time, so file names sort by time."""
    return f"r{start_ms:013d}"


class Spool:
    """Directory operations on the spool; all blocking (call from a thread)."""

    def __init__(self, root: Path):
        self.root = root
        # Tickets this process wrote and ingest has not tried yet: nothing can be in S3 under their
        # keys, so ingest skips the HEAD for them (docs/segment-lifecycle.md, step 6).
        self._fresh: set[tuple[str, str]] = set()
        self._fresh_lock = threading.Lock()

    def camera_dir(self, camera: str) -> Path:
        d = self.root / camera
        d.mkdir(parents=True, exist_ok=True)
        return d

    def path(self, seg: ClosedSegment) -> Path:
        return self.root / seg.camera / seg.file

    def write_ticket(self, seg: ClosedSegment) -> Path:
        """Atomically record that ``seg`` is closed."""
        d = self.camera_dir(seg.camera)
        final = d / seg.ticket_name
        tmp = d / f".{seg.ticket_name}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(asdict(seg), f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(d)
        with self._fresh_lock:
            self._fresh.add((seg.camera, seg.file))
        return final

    def write_run_lease(self, camera: str, run: str, epoch: int) -> None:
        """Record, before the run's first byte, the lease epoch it records under (crash recovery reads it)."""
        d = self.camera_dir(camera)
        tmp = d / f".{run}.lease.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"epoch": epoch}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d / f"{run}.lease")
        _fsync_dir(d)

    def run_epoch(self, camera: str, run: str) -> int | None:
        """The lease epoch a run recorded under (None: recorded outside a cluster)."""
        try:
            with open(self.root / camera / f"{run}.lease", encoding="utf-8") as f:
                value = json.load(f).get("epoch")
        except (FileNotFoundError, ValueError, AttributeError):
            return None
        return value if isinstance(value, int) else None

    def claim_fresh(self, seg: ClosedSegment) -> bool:
        """True once for a ticket this process wrote: the first ingest attempt of a segment never seen in S3."""
        with self._fresh_lock:
            try:
                self._fresh.remove((seg.camera, seg.file))
            except KeyError:
                return False
            return True

    def next_ticket(self, camera: str) -> ClosedSegment | None:
        """The oldest closed segment of a camera still waiting in the spool (the next to ingest)."""
        return self._ticket(camera, min)

    def last_ticket(self, camera: str) -> ClosedSegment | None:
        """The newest closed segment still waiting in the spool."""
        return self._ticket(camera, max)

    def _ticket(self, camera: str, pick: Callable[[list[str]], str]) -> ClosedSegment | None:
        # Ticket names sort by start time; one pick, not a sort of a backlog, per segment ingested.
        d = self.root / camera
        if not d.is_dir():
            return None
        names = [n for n in os.listdir(d) if TICKET_RE.match(n)]
        if not names:
            return None
        with open(d / pick(names), encoding="utf-8") as f:
            return ClosedSegment(**json.load(f))

    def run_end_ms(self, camera: str, run: str) -> int | None:
        """Where the run's last ticketed segment still in the spool ends."""
        d = self.root / camera
        names = [n for n in os.listdir(d) if (m := TICKET_RE.match(n)) and m["stem"].startswith(run)] \
            if d.is_dir() else []
        if not names:
            return None
        with open(d / max(names, key=lambda n: TICKET_RE.match(n)["stem"]), encoding="utf-8") as f:
            return json.load(f)["end_ms"]

    def remove(self, seg: ClosedSegment) -> None:
        """Drop a segment from the spool: the file first, the ticket last (a ticket alone is harmless)."""
        d = self.root / seg.camera
        (d / seg.file).unlink(missing_ok=True)
        (d / seg.ticket_name).unlink(missing_ok=True)
        lease = d / f"{seg.run}.lease"
        if seg.epoch is not None and lease.exists() and not any(d.glob(f"{seg.run}-*.mp4")):
            lease.unlink(missing_ok=True)  # the run's last segment left; a new run writes its own
        _fsync_dir(d)
        with self._fresh_lock:
            self._fresh.discard((seg.camera, seg.file))

    def quarantine(self, seg: ClosedSegment, why: str) -> Path:
        """Move a segment ingest must not store out of the queue into ``<camera>/<why>/`` (kept, never deleted)."""
        d = self.root / seg.camera
        aside = d / why
        aside.mkdir(mode=0o700, exist_ok=True)
        for name in (seg.file, seg.ticket_name):
            if (d / name).exists():
                os.replace(d / name, aside / name)
        _fsync_dir(aside)
        _fsync_dir(d)
        with self._fresh_lock:
            self._fresh.discard((seg.camera, seg.file))
        return aside

    def cameras(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def untracked_files(self, camera: str) -> list[Path]:
        """Segment files with no ticket: what a stopped or crashed ffmpeg left, oldest first."""
        d = self.root / camera
        if not d.is_dir():
            return []
        names = os.listdir(d)
        ticketed = {m.group("stem") for n in names if (m := TICKET_RE.match(n))}
        return [d / n for n in sorted(names) if (m := SEGMENT_RE.match(n)) and f"{m['run']}-{m['n']}" not in ticketed]

    def usage(self) -> tuple[int, int]:
        """Total bytes and number of segment files in the spool."""
        total = files = 0
        if not self.root.is_dir():
            return 0, 0
        for cam in os.scandir(self.root):
            if not cam.is_dir():
                continue
            for entry in os.scandir(cam.path):
                if entry.name.endswith(".mp4"):
                    try:
                        total += entry.stat().st_size
                        files += 1
                    except FileNotFoundError:  # ingested meanwhile
                        pass
        return total, files

    def backlog(self, camera: str) -> int:
        d = self.root / camera
        return sum(1 for n in os.listdir(d) if TICKET_RE.match(n)) if d.is_dir() else 0


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def closed_now(
    camera: str, file: str, start_ms: int, end_ms: int, *, partial: bool = False, clock: str = "camera",
    correction_ms: int = 0, audio_transcoded: bool = False, epoch: int | None = None,
) -> ClosedSegment:
    """A ClosedSegment for a spool file name, closed at the current time."""
    m = SEGMENT_RE.match(file)
    if not m:
        raise ValueError(f"{file!r} is not a spool segment name (rNNNNNNNNNNNNN-NNNNNN.mp4)")
    return ClosedSegment(
        camera=camera, file=file, run=m["run"], n=int(m["n"]), start_ms=start_ms, end_ms=end_ms,
        partial=partial, closed_ms=now_ms(), clock=clock, correction_ms=correction_ms,
        audio_transcoded=audio_transcoded, epoch=epoch,
    )
