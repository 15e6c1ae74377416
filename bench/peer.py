"""Measurement 4, the peer pipeline: what users do today instead of nvr.

ffmpeg writes segments to local disk and ``rclone copy`` (the Debian package)
copies them to the same S3 on a schedule. Measured in the same run as
measurement 1 (``bench.recording.side_by_side``): the same cameras and streams
recorded by nvr and by the peer at once.

Figures, ours ÷ theirs:

* CPU per camera-hour: the nvr process tree ÷ (bare ffmpeg + every rclone run
  that started in the window, from ``wait4`` rusage).
* Time until a segment is in S3: segment closed → the object first listed at
  its final size (a bucket listing every 0.5 s), p50 and p99. The peer's time
  is set by its schedule (``interval``: 30 s in quick mode, 60 s — a cron
  minute — in full mode).

The peer does less than nvr: no encryption, no hashes, no ledger, no index,
and it never deletes the local copy (``rclone move`` would).
"""

from __future__ import annotations

from typing import Any

from bench.common import Mode, Row, print_rows, save
from bench.recording import rows_for as recording_rows
from bench.recording import side_by_side


def rows_for(data: dict[str, Any]) -> list[Row]:
    p = data["peer"]
    ours, theirs = data["cpu_s_per_camera_hour"]["nvr_total"], p["cpu_s_per_camera_hour"]
    ol, tl = data["nvr_closed_to_s3_s"], p["closed_to_s3_s"]
    lat_ratio = ol["p50"] / tl["p50"] if ol["p50"] is not None and tl["p50"] else None

    def s(v):
        return "n/a" if v is None else f"{v:.1f}"

    return [
        Row("4. Peer pipeline: CPU", ours / theirs, "CPU nvr ÷ (ffmpeg + rclone)", "",
            f"nvr {ours:.0f} cpu-s/cam-h; peer {theirs:.0f} (rclone {p['rclone_cpu_s_per_camera_hour']:.0f} "
            f"in {p['rclone_runs']} runs, every {p['interval_s']:.0f} s)"),
        Row("4. Peer pipeline: time to S3", lat_ratio, "p50 nvr ÷ peer", "",
            f"nvr p50 {s(ol['p50'])} s / p99 {s(ol['p99'])} s (n={ol['n']}); peer p50 {s(tl['p50'])} s / "
            f"p99 {s(tl['p99'])} s (n={tl['n']}), rclone every {p['interval_s']:.0f} s"),
    ]


def run(mode: Mode, *, also_recording: bool = False) -> list[Row]:
    """With ``also_recording`` the same run also yields measurement 1's row (``python -m bench all``)."""
    data = side_by_side(mode, peer=True)
    rows = rows_for(data)
    save("peer", mode, rows, data)
    if also_recording:
        rec = recording_rows(data)
        save("recording", mode, rec, data)
        rows = rec + rows
    print_rows(rows)
    return rows
