"""Measurement 1, recording overhead (and the shared harness of measurement 4, the peer pipeline).

One run records the same simulated cameras three or four ways at once, from
the same RTSP streams (the simulator loops one pre-encoded 1080p clip, no
per-camera encoding):

* **nvr**: ``nvr serve`` as a subprocess, storing to the embedded S3 (started
  by the bench, so S3 is not in the server's process tree). Its CPU is the
  whole tree: the Python process, its ffmpeg children and whatever it reaped.
* **bare**: the plain command users run, ``ffmpeg -i rtsp://… -c copy -f
  segment -segment_time 10 … %06d.mp4`` writing MP4 segments to local disk.
* **bare-again**: a second, identical set of *bare* processes. *bare-again ÷
  bare* is this run's noise: two copies of the same work on the same shared
  machine differ by this much, so ratios closer than that are a tie.
* **bare-fmp4**: the exact ffmpeg command nvr runs (``nvr.recording.command.record_command``:
  fragmented MP4, segment list on stdout), writing to local disk. The
  difference to *nvr* is what the Python server adds; the difference to *bare*
  is what nvr's muxing choices cost.
* **decoy**: one more bare ffmpeg per camera, connected last and never
  measured. The simulator charges its most recently connected client of each
  stream about 12-18 % more ffmpeg CPU than the others (measured: whichever
  pipeline connected last paid it, in either order; with a decoy connected
  after them all, every measured pipeline is within 3 %). Without the decoy
  the penalty lands on whichever pipeline happened to connect last.
* **peer** (measurement 4 only): *bare*'s segments copied to a second bucket
  of the same S3 by ``rclone copy`` every ``interval`` seconds.

CPU is read at the start and end of a steady-state window (after every
camera's first segment is stored) and divided by camera-hours. The headline
ratio is nvr ÷ bare; every pipeline ran at the same time on the same streams.

The **limit** of this design is measured in the same run, right after the
window: the CPU of ``storage.envelope.seal_file`` (read, SHA-256, AES-256-GCM,
SHA-256: the crypto no evidence-grade copy can skip) over the bench segment,
scaled to the bytes nvr stored. ``(bare + seal) ÷ bare`` is the best ratio any
server with this envelope could reach; nvr's Python ÷ seal says how much more
than the crypto it spends.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    SEGMENT_SECONDS,
    Mode,
    NvrProc,
    Row,
    Sampler,
    clip_bitrate,
    diff,
    ffmpeg_exe,
    fresh_dir,
    indexed_counts,
    log,
    median,
    mount_url,
    pct,
    pids_cpu,
    print_rows,
    ro_index,
    s3_server,
    save,
    segment_file,
    simulator,
    tree_cpu,
    tree_memory,
    wait_for,
)

GOAL = 1.15



def seal_cpu_per_byte(repeat: int = 20) -> float:
    """CPU seconds per plaintext byte of ``seal_file`` over the bench segment (warm cache, reused buffer)."""
    from storage.envelope import SegmentContext, seal_buffer_size, seal_file

    path = segment_file()
    ctx = SegmentContext(camera="bench", object_key="bench/x.seg", start="2026-01-01T00:00:00.000Z",
                         end="2026-01-01T00:00:10.000Z")
    buf = bytearray(seal_buffer_size(path.stat().st_size))
    kek = os.urandom(32)
    seal_file(path, ctx, "k", kek, buf)  # warm-up: page cache, buffer pages
    c = time.process_time()
    for _ in range(repeat):
        seal_file(path, ctx, "k", kek, buf)
    return (time.process_time() - c) / (repeat * path.stat().st_size)


@dataclass
class FfmpegSet:
    """N ffmpeg processes started by the bench, each with a thread reading its segment list."""

    name: str
    procs: list[subprocess.Popen] = field(default_factory=list)
    closed: dict[tuple[int, str], tuple[float, float]] = field(default_factory=dict)  # (cam, file) -> (wall, mono)

    def start(self, argvs: list[list[str]]) -> None:
        for i, argv in enumerate(argvs):
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            self.procs.append(p)
            threading.Thread(target=self._read, args=(i, p), daemon=True).start()

    def _read(self, i: int, p: subprocess.Popen) -> None:
        for raw in p.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self.closed[(i, line.split(",", 1)[0].rsplit("/", 1)[-1])] = (time.time(), time.monotonic())

    def counts(self) -> list[int]:
        n = [0] * len(self.procs)
        for i, _ in list(self.closed):
            n[i] += 1
        return n

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.stdin.write(b"q")
                p.stdin.flush()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def bare_argv(url: str, out_dir: Path) -> list[str]:
    """What a user types: copy the camera into 10 s MP4 segments (segment list on stdout, for timing)."""
    return [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "warning", "-rtsp_transport", "tcp",
            "-i", url, "-map", "0:v", "-c", "copy", "-f", "segment", "-segment_time", str(SEGMENT_SECONDS),
            "-reset_timestamps", "1", "-segment_format", "mp4", "-segment_list", "pipe:1",
            "-segment_list_type", "csv", str(out_dir / "%06d.mp4")]


def nvr_argv(url: str, out_dir: Path) -> list[str]:
    """The exact command the recorder runs for a camera (nvr.recording.command.record_command)."""
    from nvr.config.settings import CameraConfig
    from nvr.recording.command import record_command

    return record_command(ffmpeg_exe(), CameraConfig(id="bench", url=url), out_dir / "r0000000000000-%06d.mp4",
                          segment_seconds=SEGMENT_SECONDS, connect_timeout=10.0)


class Rclone:
    """The peer's scheduler: ``rclone copy <bare dir> bench:<bucket>`` every ``interval`` seconds."""

    def __init__(self, s3, bucket: str, src: Path, interval: float, workdir: Path):
        ep = s3.endpoint
        # No AWS_* from the environment (an AWS_CA_BUNDLE makes rclone refuse a plain-http endpoint).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        self.env = {**env, "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
                    "RCLONE_CONFIG_BENCH_ENDPOINT": f"http://{ep.endpoint}",
                    "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": ep.access_key,
                    "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": ep.secret_key}
        conf = workdir / "rclone.conf"
        conf.write_text("")
        # --min-age skips the segment ffmpeg is still writing (its mtime moves all the time).
        self.argv = ["rclone", "--config", str(conf), "copy", "--min-age", "2s", str(src), f"bench:{bucket}"]
        self.interval = interval
        self.runs: list[dict[str, float]] = []  # start/end (monotonic), cpu seconds, rc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rclone")
        self.log = workdir / "rclone.log"

    def _loop(self) -> None:
        nxt = time.monotonic()
        while not self._stop.wait(max(0.0, nxt - time.monotonic())):
            nxt += self.interval
            start = time.monotonic()
            with open(self.log, "ab") as logf:
                p = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT)
                _, status, ru = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
            self.runs.append({"start": start, "end": time.monotonic(), "cpu": ru.ru_utime + ru.ru_stime,
                              "rc": p.returncode})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)


class BucketPoller:
    """Lists buckets every ``interval`` s; remembers when each object was first seen at each size."""

    def __init__(self, s3, buckets: list[str], interval: float = 0.5):
        self.client = s3.client()
        self.buckets = buckets
        self.seen: dict[tuple[str, str], dict[int, float]] = {}  # (bucket, key) -> {size: first wall time}
        self._sampler = Sampler(self._poll, interval)

    def _poll(self) -> None:
        for b in self.buckets:
            now = time.time()
            for o in self.client.list_objects(b, recursive=True):
                self.seen.setdefault((b, o.object_name), {}).setdefault(o.size or 0, now)

    def first_complete(self, bucket: str, key: str, size: int) -> float | None:
        return self.seen.get((bucket, key), {}).get(size)

    def __enter__(self) -> BucketPoller:
        self._sampler.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._sampler.__exit__()


def side_by_side(mode: Mode, *, peer: bool) -> dict[str, Any]:
    """Run nvr, bare ffmpeg, the same ffmpeg as nvr and (with ``peer``) ffmpeg + rclone on the same cameras."""
    n = mode.pick(4, 8, smoke=2)
    window = mode.pick(90.0, 600.0, smoke=25.0)
    interval = mode.pick(30.0, 60.0, smoke=10.0)
    work = fresh_dir("recording")
    log(f"recording: {n} cameras, window {window:.0f} s{f', rclone every {interval:.0f} s' if peer else ''}")
    with s3_server(work) as s3, simulator(n) as sim:
        nvr_bucket = s3.make_bucket(f"nvr-{os.getpid()}")
        peer_bucket = s3.make_bucket(f"peer-{os.getpid()}")
        cams = [{"id": f"cam{i:03d}", "url": mount_url(sim, i)} for i in range(n)]
        nvr = NvrProc(work / "nvr", s3, nvr_bucket, cams)
        bare, again, fmp4 = FfmpegSet("bare"), FfmpegSet("bare-again"), FfmpegSet("bare-fmp4")
        decoy = FfmpegSet("decoy")
        decoy_dirs = [work / "decoy" / f"cam{i:03d}" for i in range(n)]
        bare_dirs = [work / "bare" / f"cam{i:03d}" for i in range(n)]
        again_dirs = [work / "again" / f"cam{i:03d}" for i in range(n)]
        fmp4_dirs = [work / "fmp4" / f"cam{i:03d}" for i in range(n)]
        for d in bare_dirs + again_dirs + fmp4_dirs + decoy_dirs:
            d.mkdir(parents=True)
        rclone = Rclone(s3, peer_bucket, work / "bare", interval, work) if peer else None
        try:
            nvr.start()
            bare.start([bare_argv(mount_url(sim, i), bare_dirs[i]) for i in range(n)])
            again.start([bare_argv(mount_url(sim, i), again_dirs[i]) for i in range(n)])
            fmp4.start([nvr_argv(mount_url(sim, i), fmp4_dirs[i]) for i in range(n)])
            with BucketPoller(s3, [nvr_bucket, peer_bucket]) as poller:
                # Steady state: every camera of every pipeline has closed (and nvr stored) a segment.
                wait_for(lambda: len(indexed_counts(nvr.index_path)) == n
                         and min(bare.counts()) >= 1 and min(again.counts()) >= 1 and min(fmp4.counts()) >= 1,
                         timeout=90, what="the first segment of every camera", proc=nvr.proc)
                decoy.start([bare_argv(mount_url(sim, i), decoy_dirs[i]) for i in range(n)])
                wait_for(lambda: min(decoy.counts()) >= 1, timeout=60, what="the decoys' first segments")
                if rclone:
                    rclone.start()
                t0w, t0 = time.time(), time.monotonic()
                c0 = {"nvr": tree_cpu(nvr.pid), "bare": pids_cpu(bare.pids), "again": pids_cpu(again.pids), "fmp4": pids_cpu(fmp4.pids),
                      "sim": pids_cpu([sim.pid]), "s3": pids_cpu([s3.pid])}
                time.sleep(window)
                t1w, t1 = time.time(), time.monotonic()
                c1 = {"nvr": tree_cpu(nvr.pid), "bare": pids_cpu(bare.pids), "again": pids_cpu(again.pids), "fmp4": pids_cpu(fmp4.pids),
                      "sim": pids_cpu([sim.pid]), "s3": pids_cpu([s3.pid])}
                mem = tree_memory(nvr.pid)
                if rclone:
                    rclone.stop()  # lets a run in progress finish: its work belongs to the window
                time.sleep(1.0)
            with contextlib.closing(ro_index(nvr.index_path)) as db:
                rows = db.execute("SELECT camera, start_ms, end_ms, ingested_ms, object_key, object_size, size, "
                                  "partial FROM segments ORDER BY camera, start_ms").fetchall()
                gaps = db.execute("SELECT COUNT(*) FROM audit WHERE action IN "
                                  "('recording.gap','recording.loss','ingest.error')").fetchone()[0]
        finally:
            nvr.stop()
            bare.stop()
            again.stop()
            fmp4.stop()
            decoy.stop()
            if rclone:
                rclone.stop()
        hours = n * (t1 - t0) / 3600
        cpu = {"nvr": diff(c0["nvr"], c1["nvr"])}
        seal_per_byte = seal_cpu_per_byte()
        for k in ("bare", "again", "fmp4", "sim", "s3"):
            cpu[k] = c1[k] - c0[k]

        # nvr: closed (placed end on the wall clock) -> indexed, and -> first seen in the bucket listing.
        in_win = [r for r in rows if t0w * 1000 <= r[2] <= t1w * 1000]
        nvr_indexed = [(r[3] - r[2]) / 1000 for r in in_win]
        nvr_s3 = [t - r[2] / 1000 for r in in_win
                  if (t := poller.first_complete(nvr_bucket, r[4], r[5])) is not None]
        data: dict[str, Any] = {
            "cameras": n, "window_s": round(t1 - t0, 1), "segment_seconds": SEGMENT_SECONDS,
            "stream_mbit_s": round(clip_bitrate(), 2), "camera_hours": hours,
            "cpu_seconds": cpu,
            "cpu_s_per_camera_hour": {
                "nvr_total": cpu["nvr"]["total"] / hours, "nvr_python": cpu["nvr"]["root"] / hours,
                "nvr_ffmpeg": cpu["nvr"]["ffmpeg"] / hours, "bare": cpu["bare"] / hours,
                "bare_again": cpu["again"] / hours,
                "bare_fmp4": cpu["fmp4"] / hours,
                "seal_floor": seal_per_byte * sum(r[6] for r in in_win) / hours,
                "simulator": cpu["sim"] / hours, "s3_weed": cpu["s3"] / hours,
            },
            "nvr_memory": mem,
            "nvr_segments_in_window": len(in_win), "bare_segments_in_window": sum(
                1 for (_, _), (w, _) in bare.closed.items() if t0w <= w <= t1w),
            "nvr_loss_events": gaps, "nvr_partial_segments": sum(1 for r in in_win if r[7]),
            "nvr_closed_to_indexed_s": {"p50": median(nvr_indexed), "p99": pct(nvr_indexed, 99),
                                        "n": len(nvr_indexed)},
            "nvr_closed_to_s3_s": {"p50": median(nvr_s3), "p99": pct(nvr_s3, 99), "n": len(nvr_s3)},
        }
        if rclone:
            runs = [r for r in rclone.runs if t0 <= r["start"] < t1]
            peer_cpu = sum(r["cpu"] for r in runs)
            # Segments closed early enough in the window that the schedule had a chance to copy them.
            lat = []
            for (i, name), (wall, mono) in bare.closed.items():
                if not (t0 <= mono <= t1 - interval - 10):
                    continue
                path = bare_dirs[i] / name
                with contextlib.suppress(OSError):
                    t = poller.first_complete(peer_bucket, f"cam{i:03d}/{name}", path.stat().st_size)
                    if t is not None:
                        lat.append(t - wall)
            data["peer"] = {
                "interval_s": interval, "rclone_runs": len(runs), "rclone_cpu_s": peer_cpu,
                "rclone_failed_runs": sum(1 for r in runs if r["rc"] != 0),
                "rclone_run_seconds": [round(r["end"] - r["start"], 2) for r in runs],
                "cpu_s_per_camera_hour": (cpu["bare"] + peer_cpu) / hours,
                "rclone_cpu_s_per_camera_hour": peer_cpu / hours,
                "closed_to_s3_s": {"p50": median(lat), "p99": pct(lat, 99), "n": len(lat)},
            }
        per = data["cpu_s_per_camera_hour"]
        data["ratios"] = {
            "nvr_over_bare": per["nvr_total"] / per["bare"],
            "nvr_over_bare_fmp4": per["nvr_total"] / per["bare_fmp4"],
            "nvr_ffmpeg_over_bare": per["nvr_ffmpeg"] / per["bare"],
            "bare_fmp4_over_bare": per["bare_fmp4"] / per["bare"],
            "noise_bare_again_over_bare": per["bare_again"] / per["bare"],
            "limit_over_bare": (per["bare"] + per["seal_floor"]) / per["bare"],
            "nvr_python_over_seal": per["nvr_python"] / per["seal_floor"],
        }
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return data


def rows_for(data: dict[str, Any]) -> list[Row]:
    per, r = data["cpu_s_per_camera_hour"], data["ratios"]
    core = 3600 / 100  # cpu-s per camera-hour -> % of one core
    return [Row(
        "1. Recording overhead", r["nvr_over_bare"], "CPU nvr ÷ bare ffmpeg", f"≤ {GOAL}",
        f"nvr {per['nvr_total']:.0f} cpu-s/cam-h ({per['nvr_total'] / core:.2f} % core/cam: "
        f"python {per['nvr_python']:.0f} + ffmpeg {per['nvr_ffmpeg']:.0f}); bare {per['bare']:.0f}; "
        f"same-args ffmpeg {per['bare_fmp4']:.0f} (nvr ÷ it = {r['nvr_over_bare_fmp4']:.2f}); "
        f"{data['cameras']} cams × {data['window_s']:.0f} s; noise: bare again ÷ bare = "
        f"{r['noise_bare_again_over_bare']:.2f}",
    ), Row(
        "1. Recording overhead: this design's limit", r["limit_over_bare"], "(bare + seal) ÷ bare", "—",
        f"seal (read + SHA-256 + AES-GCM + SHA-256) of the bytes nvr stored, same run: "
        f"{per['seal_floor']:.1f} cpu-s/cam-h; nvr's Python ÷ it = {r['nvr_python_over_seal']:.2f}",
    )]


def run(mode: Mode) -> list[Row]:
    data = side_by_side(mode, peer=False)
    rows = rows_for(data)
    save("recording", mode, rows, data)
    print_rows(rows)
    return rows
