"""Shared pieces of the benchmarks: modes, results, machine facts, CPU/RSS of process trees, services.

Services are the real ones the tests use: the embedded SeaweedFS S3
(``storage.embedded_s3.EmbeddedS3``), the GStreamer RTSP camera simulator
(``tests/support/rtsp.py``, which loops a pre-encoded H.264 clip without
re-encoding) and ``nvr serve`` as a subprocess, so the CPU of "the whole
server" is exactly its process tree. CPU is read from /proc through psutil.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` as well as `python -m bench`
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402  (bench-only dependency)

from tests.support.loopthread import LoopThread  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "cache"
WORK = RESULTS / "work"
DOCS = ROOT / "docs"

# The stream every camera benchmark uses: 1080p H.264 at ~4 Mbit/s, one keyframe per second.
CLIP_W, CLIP_H, CLIP_FPS, CLIP_SECONDS, CLIP_BITRATE = 1920, 1080, 25, 20, "4M"
SEGMENT_SECONDS = 10  # the product default (recording.segment_seconds)
CLIENTS_PER_MOUNT = 8  # RTSP clients sharing one simulator pipeline (see simulator())


@dataclass(frozen=True)
class Mode:
    name: str  # "quick" | "full" | "smoke" (a seconds-long run to check the plumbing; figures meaningless)

    @property
    def quick(self) -> bool:
        return self.name in ("quick", "smoke")

    def pick(self, quick: Any, full: Any, smoke: Any = None) -> Any:
        if self.name == "smoke" and smoke is not None:
            return smoke
        return quick if self.quick else full


# ---------------------------------------------------------------------- output


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Row:
    """One line of the results table: a ratio measured in the run, its goal, and the absolute figures."""

    measure: str
    ratio: float | None
    ratio_label: str
    goal: str = ""
    absolute: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"measure": self.measure, "ratio": self.ratio, "ratio_label": self.ratio_label,
                "goal": self.goal, "absolute": self.absolute, "note": self.note}


def fmt_ratio(r: float | None) -> str:
    if r is None or (isinstance(r, float) and math.isnan(r)):
        return "n/a"
    return f"{r:.3g}" if r < 100 else f"{r:.0f}"


def print_rows(rows: list[Row]) -> None:
    for r in rows:
        goal = f" (goal {r.goal})" if r.goal else ""
        print(f"| {r.measure} | {r.ratio_label} = {fmt_ratio(r.ratio)}{goal} | {r.absolute} |", flush=True)


def save(name: str, mode: Mode, rows: list[Row], data: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json (the latest) and a timestamped copy under runs/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"name": name, "mode": mode.name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "command": "python -m bench " + " ".join(sys.argv[1:]),
           "machine": machine(), "rows": [r.as_dict() for r in rows], "data": data}
    text = json.dumps(doc, indent=2, sort_keys=True, default=str)
    out = RESULTS / f"{name}.json"
    out.write_text(text)
    runs = RESULTS / "runs"
    runs.mkdir(exist_ok=True)
    (runs / f"{time.strftime('%Y%m%dT%H%M%S')}-{name}-{mode.name}.json").write_text(text)
    return out


def machine() -> dict[str, Any]:
    """The facts a reader needs to weigh the absolute numbers."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    vm = psutil.virtual_memory()
    rev = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    return {
        "git": rev,
        "nproc": os.cpu_count(), "cpu_model": model, "mem_total_gib": round(vm.total / 2**30, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()], "kernel": platform.release(),
        "python": platform.python_version(),
    }


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def median(values: list[float]) -> float | None:
    return pct(values, 50)


def fresh_dir(name: str) -> Path:
    """An empty working directory for one run under bench/results/work/ (git-ignored)."""
    d = WORK / f"{name}-{os.getpid()}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


# ---------------------------------------------------------------------- media


def ffmpeg_exe() -> str:
    from nvr.base.ffmpeg import find_ffmpeg

    return find_ffmpeg()


def clip() -> Path:
    """The 1080p25 ~4 Mbit/s H.264 clip the simulator loops (encoded once, cached)."""
    from tests.support.rtsp import make_clip

    path = CACHE / f"clip-{CLIP_H}p{CLIP_FPS}-{CLIP_BITRATE}-{CLIP_SECONDS}s.h264"
    if not path.exists():
        log(f"encoding the {CLIP_W}x{CLIP_H} clip once (cached in {path.parent})")
    return make_clip(path, width=CLIP_W, height=CLIP_H, fps=CLIP_FPS, seconds=CLIP_SECONDS,
                     gop=CLIP_FPS, bitrate=CLIP_BITRATE)


def clip_bitrate() -> float:
    """Mbit/s of the clip as encoded."""
    return clip().stat().st_size * 8 / CLIP_SECONDS / 1e6


def segment_file() -> Path:
    """A 10 s fragmented-MP4 segment of the clip, muxed the way the recorder muxes (cached).

    The pre-made segment of the ingest, retrieval and retention benchmarks.
    """
    from nvr.base.ffmpeg import FMP4_FLAGS

    path = CACHE / f"segment-{CLIP_H}p-{SEGMENT_SECONDS}s.mp4"
    if path.exists():
        return path
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "h264",
         "-framerate", str(CLIP_FPS), "-i", str(clip()), "-map", "0:v", "-c", "copy",
         "-t", str(SEGMENT_SECONDS), "-movflags", FMP4_FLAGS.split("=", 1)[1], "-f", "mp4", str(tmp)],
        check=True, capture_output=True, timeout=120)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------- CPU and memory of process trees


def _own(p: psutil.Process) -> float:
    """CPU seconds of ``p`` plus every child it has already reaped."""
    t = p.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _kind(p: psutil.Process) -> str:
    try:
        name = p.name()
    except psutil.Error:
        return "other"
    return "ffmpeg" if "ffmpeg" in name else "other"


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of ``pid`` and all its descendants, split into the root and its ffmpeg children.

    Live processes are read directly; exited ones are in their parent's
    children_* times once reaped, so the sum never counts anything twice.
    ``root`` is the process itself plus what it reaped (short-lived probes, a
    clip's per-segment remux); ``root_self`` and ``root_reaped`` split it.
    """
    root = psutil.Process(pid)
    t = root.cpu_times()
    out = {"root": _own(root), "root_self": t.user + t.system, "root_reaped": t.children_user + t.children_system,
           "ffmpeg": 0.0, "other": 0.0}
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            out[_kind(child)] += _own(child)
    out["total"] = out["root"] + out["ffmpeg"] + out["other"]
    return out


def pids_cpu(pids: list[int]) -> float:
    """Sum of CPU seconds of several independent processes (and what they reaped)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += _own(psutil.Process(pid))
    return total


def diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: b[k] - a.get(k, 0.0) for k in b}


def tree_memory(pid: int) -> dict[str, Any]:
    """RSS of the root and of each ffmpeg child, and the PSS of the whole tree (shared pages split)."""
    root = psutil.Process(pid)
    out: dict[str, Any] = {"root_rss": root.memory_info().rss, "ffmpeg_rss": [], "other_rss": [], "pss_total": 0}
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        try:
            if p is not root:
                out[f"{_kind(p)}_rss"].append(p.memory_info().rss)
            out["pss_total"] += p.memory_full_info().pss
        except psutil.Error:
            pass
    return out


class Sampler:
    """Samples a callable every ``interval`` seconds on a thread; keeps (monotonic time, value) pairs."""

    def __init__(self, fn, interval: float):
        self.fn = fn
        self.interval = interval
        self.samples: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.samples.append((time.monotonic(), self.fn()))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


# ---------------------------------------------------------------------- services


@dataclass
class S3:
    endpoint: Any  # storage.embedded_s3.S3Endpoint
    pid: int

    def client(self):
        from minio import Minio

        ep = self.endpoint
        return Minio(ep.endpoint, access_key=ep.access_key, secret_key=ep.secret_key, secure=ep.secure)

    def make_bucket(self, name: str) -> str:
        self.client().make_bucket(name)
        return name


@contextlib.contextmanager
def s3_server(workdir: Path) -> Iterator[S3]:
    """The embedded SeaweedFS on loopback, started by the bench (so it is no part of the server's process tree)."""
    from storage.embedded_s3 import EmbeddedS3

    lt = LoopThread()
    emb = EmbeddedS3(workdir / "s3data")
    try:
        ep = lt.run(emb.start())
        yield S3(endpoint=ep, pid=emb.pid)
    finally:
        # SIGKILL after 2 s: a bench store is thrown away, and weed loses nothing acknowledged anyway.
        with contextlib.suppress(Exception):
            lt.run(emb.stop(2.0), timeout=30)
        lt.close()


@contextlib.contextmanager
def simulator(n_streams: int):
    """RTSP cameras: ``mounts`` simulator pipelines, each shared by up to CLIENTS_PER_MOUNT clients.

    Each mount loops the pre-encoded clip (no per-camera encoding). Sharing a
    mount keeps the simulator's own CPU, which competes with the server on this
    box, small: ~1.9 % of a core per mount plus ~0.4 % per client.
    """
    from tests.support.rtsp import RtspSimulator, gst_available

    reason = gst_available()
    if reason:
        raise RuntimeError(f"RTSP simulator unavailable: {reason} (install the packages scripts/test installs)")
    mounts = [f"m{i}" for i in range(max(1, math.ceil(n_streams / CLIENTS_PER_MOUNT)))]
    sim = RtspSimulator()
    sim.start(mounts=mounts, clip=clip(), fps=CLIP_FPS)
    try:
        yield sim
    finally:
        sim.stop()


def mount_url(sim, i: int) -> str:
    """The URL of camera ``i``: cameras are spread over the simulator's mounts."""
    return sim.url(sim.mounts[i % len(sim.mounts)])


_HTTP_RE = re.compile(r"HTTP API on http://([0-9.]+):(\d+)/")


@dataclass
class NvrProc:
    """``nvr serve`` as a subprocess with its own config and data dir, and an admin token for the API."""

    workdir: Path
    s3: S3
    bucket: str
    cameras: list[dict[str, Any]]
    proc: subprocess.Popen | None = None
    port: int | None = None
    token: str = ""

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.sqlite3"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def log_path(self) -> Path:
        return self.workdir / "nvr.log"

    def write_config(self) -> Path:
        from tests.support import tomlw

        ep = self.s3.endpoint
        storage = {"endpoint": ep.endpoint, "access_key": ep.access_key, "secret_key": ep.secret_key,
                   "bucket": self.bucket}
        data = {"server": {"listen": "127.0.0.1:0", "data_dir": str(self.data_dir)}, "storage": storage,
                "recording": {}, "cameras": self.cameras}
        path = self.workdir / "nvr.toml"
        self.workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(tomlw.dumps(data))
        return path

    def make_token(self) -> str:
        from nvr.api.auth import create_token
        from storage.index import Index

        index = Index(self.index_path)
        try:
            return create_token(index, name=f"bench-{os.getpid()}", role="admin", cameras=None)
        finally:
            index.close()

    def start(self, timeout: float = 60.0) -> NvrProc:
        cfg = self.write_config()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.token = self.make_token()
        logf = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nvr.cli", "serve", "--config", str(cfg), "--log-level", "info"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nvr serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            m = _HTTP_RE.search(self.log_path.read_text(errors="replace"))
            if m:
                self.port = int(m.group(2))
                return self
            time.sleep(0.2)
        raise RuntimeError(f"nvr serve did not listen within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, path: str) -> urllib.request.Request:
        return urllib.request.Request(self.url(path), headers={"Authorization": f"Bearer {self.token}"})

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (ffmpeg finishes its segment, the spool drains), then SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> NvrProc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def ro_index(path: Path) -> sqlite3.Connection:
    """A read-only connection to a server's index (WAL: safe while the server writes)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def indexed_counts(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    with contextlib.closing(ro_index(path)) as db:
        try:
            return dict(db.execute("SELECT camera, COUNT(*) FROM segments GROUP BY camera").fetchall())
        except sqlite3.OperationalError:
            return {}


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None, interval: float = 0.5):
    """Poll ``check()`` until truthy; fail after ``timeout`` or as soon as ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(interval)


# ---------------------------------------------------------------------- crypto reference


def openssl_speed(seconds: int = 2) -> dict[str, float]:
    """Single-thread bytes/s of AES-256-GCM and SHA-256 on 1 MiB blocks from ``openssl speed`` (EVP)."""
    out: dict[str, float] = {}
    for alg in ("aes-256-gcm", "sha256"):
        proc = subprocess.run(["openssl", "speed", "-mr", "-seconds", str(seconds), "-bytes", "1048576",
                               "-evp", alg], capture_output=True, text=True, timeout=60)
        for line in proc.stdout.splitlines():
            if line.startswith("+F:"):
                out[alg] = float(line.rsplit(":", 1)[1])
    return out


def ingest_crypto_bound(aes_bps: float, sha_bps: float) -> float:
    """Bytes/s of one core doing what ingest does per byte: SHA-256 of the plaintext, AES-GCM, SHA-256 of the object."""
    return 1.0 / (2.0 / sha_bps + 1.0 / aes_bps)
