"""8. faults: footage lost per ``kill -9`` of a recording ffmpeg, and how long a Ctrl-C takes.

* **kill loss**: the recorder's exact ffmpeg command (``record_command``) against
  the RTSP simulator at a low (150 kbit/s) and the bench's usual bitrate, killed
  with SIGKILL at a random instant 3-9 s into a 60 s segment; loss = wall time
  since the segment file appeared − the media ffmpeg can read back from it. The
  same run without the fragment flush (``flush_packets``: the previous
  release's command) gives the ratio: kill loss now ÷ then.
* **Ctrl-C of the demo**: ``nvr serve --demo`` on its embedded S3, SIGINT once
  both cameras have footage indexed, until the process exits.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Mode, Row, fresh_dir, log, median, save


def _kill_losses(workdir: Path, url: str, kills: int, *, flush: bool, label: str) -> list[float]:
    from nvr.base.ffmpeg import FMP4_FLAGS, find_ffmpeg, probe_duration
    from nvr.config.settings import CameraConfig
    from nvr.recording import command

    losses = []
    saved = command.SPOOL_FORMAT_OPTIONS
    if not flush:
        command.SPOOL_FORMAT_OPTIONS = FMP4_FLAGS
    try:
        for k in range(kills):
            out = workdir / f"{label}-{'flush' if flush else 'plain'}-{k}"
            out.mkdir()
            argv = command.record_command(find_ffmpeg(), CameraConfig(id="k", url=url), out / "r-%06d.mp4",
                                          segment_seconds=60, connect_timeout=5)
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            seg = out / "r-000000.mp4"
            deadline = time.monotonic() + 20
            while not seg.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            born = time.monotonic()
            time.sleep(random.uniform(3, 9))
            proc.kill()
            proc.wait()
            elapsed = time.monotonic() - born
            duration = asyncio.run(probe_duration(find_ffmpeg(), seg)) or 0.0
            losses.append(max(0.0, elapsed - duration))
    finally:
        command.SPOOL_FORMAT_OPTIONS = saved
    return losses


def _demo_stop(workdir: Path) -> float:
    data = workdir / "demo"
    log_path = workdir / "demo.log"
    proc = subprocess.Popen([sys.executable, "-m", "nvr.cli", "serve", "--demo", "--data-dir", str(data),
                             "--listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"))
    from bench.common import indexed_counts, wait_for

    wait_for(lambda: (data / "index.sqlite3").exists() and len(indexed_counts(data / "index.sqlite3")) >= 2,
             60, "both demo cameras indexed", proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    return time.monotonic() - t0


def run(mode: Mode) -> list[Row]:
    from tests.support.rtsp import RtspSimulator, make_clip

    kills = mode.pick(quick=6, full=20, smoke=1)
    workdir = fresh_dir("faults")
    data: dict = {"kills": kills}
    rows: list[Row] = []
    for label, bitrate in (("150k", "150k"), ("800k", "800k")):
        clip = make_clip(workdir / f"{label}.h264", width=640, height=360, fps=15, seconds=4, gop=15,
                         bitrate=bitrate)
        sim = RtspSimulator()
        sim.start(mounts=("c",), clip=clip)
        try:
            now = _kill_losses(workdir, sim.url("c"), kills, flush=True, label=label)
            then = _kill_losses(workdir, sim.url("c"), kills, flush=False, label=label)
        finally:
            sim.stop()
        data[label] = {"now": now, "then": then}
        log(f"kill loss at {label}: now mean {sum(now) / len(now):.2f} s max {max(now):.2f} s; "
            f"without the flush mean {sum(then) / len(then):.2f} s max {max(then):.2f} s")
        rows.append(Row(f"8. footage lost per kill -9, camera at {label}bit/s, 1 s GOP",
                        max(now) / max(max(then), 1e-9), "max loss now ÷ without fragment flush",
                        goal="≤ one GOP (1 s)",
                        absolute=f"now mean {sum(now) / len(now):.2f} s, max {max(now):.2f} s; before mean "
                                 f"{sum(then) / len(then):.2f} s, max {max(then):.2f} s ({kills} kills)"))
    stops = [_demo_stop(fresh_dir(f"faults-demo-{i}")) for i in range(mode.pick(quick=3, full=5, smoke=1))]
    data["demo_stop_seconds"] = stops
    rows.append(Row("8. Ctrl-C of nvr serve --demo", median(stops), "median seconds", goal="≤ 3 s",
                    absolute=f"runs {', '.join(f'{s:.2f}' for s in stops)} s; max {max(stops):.2f} s"))
    save("faults", mode, rows, data)
    return rows
