"""Measurement 2, cameras per node: raise the camera count until a segment is late, dropped or the spool grows.

Each step starts ``nvr serve`` (a subprocess, fresh data dir and bucket) with
N simulated 1080p ~4 Mbit/s cameras (one pre-encoded clip looped by the RTSP
simulator, shared by up to 8 clients per pipeline), waits until every camera
has stored its first segment, then holds a window. The step **holds** when,
over the whole step:

* no ffmpeg restart, no ``recording.gap`` / ``recording.loss`` /
  ``ingest.error`` / ``spool.alarm`` audit event, no partial segment;
* every camera stored at least ``window / 10 s - 1`` segments ending in the window;
* p99 of closed → indexed is under one segment length (ingest keeps up);
* the spool does not grow: its segment-file count in the last third of the
  window is within N/2 of the first third's.

Reported per step: CPU of the server tree per camera (its Python process and
its ffmpeg children apart), RSS of the server, RSS of each ffmpeg, PSS of the
tree, and the same for the simulator and the S3 server (they share this
machine's 2 cores with the server, which a real node would not).
The figure is the largest N held; the ratio is cost per camera at that N ÷
at the smallest N (how cost grows with the count). Quick mode stops at 40
cameras (the limit may lie beyond: then it says so and gives the CPU
projection); full mode goes on until a step fails.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from typing import Any

from bench.common import (
    SEGMENT_SECONDS,
    Mode,
    NvrProc,
    Row,
    Sampler,
    diff,
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
    simulator,
    tree_cpu,
    tree_memory,
    wait_for,
)

FAIL_EVENTS = ("recording.gap", "recording.loss", "ingest.error", "spool.alarm")


def spool_files(nvr: NvrProc) -> int:
    from storage.spool import Spool

    return Spool(nvr.spool_dir).usage()[1]


def step(n: int, window: float, work, s3) -> dict[str, Any]:
    """One camera count: start, warm up, hold the window, judge."""
    out: dict[str, Any] = {"cameras": n}
    with simulator(n) as sim:
        bucket = s3.make_bucket(f"cams{n}-{os.getpid()}")
        cams = [{"id": f"cam{i:03d}", "url": mount_url(sim, i)} for i in range(n)]
        nvr = NvrProc(work / f"n{n}", s3, bucket, cams)
        try:
            nvr.start()
            wait_for(lambda: len(indexed_counts(nvr.index_path)) == n, timeout=60 + n, proc=nvr.proc,
                     what=f"the first segment of all {n} cameras")
            t0w, t0 = time.time(), time.monotonic()
            c0 = {"nvr": tree_cpu(nvr.pid), "sim": pids_cpu([sim.pid]), "s3": pids_cpu([s3.pid])}
            with Sampler(lambda: spool_files(nvr), 1.0) as spool, Sampler(lambda: tree_memory(nvr.pid), 10.0) as mem:
                time.sleep(window)
            t1w, t1 = time.time(), time.monotonic()
            c1 = {"nvr": tree_cpu(nvr.pid), "sim": pids_cpu([sim.pid]), "s3": pids_cpu([s3.pid])}
            with contextlib.closing(ro_index(nvr.index_path)) as db:
                rows = db.execute("SELECT camera, start_ms, end_ms, ingested_ms, partial FROM segments").fetchall()
                events = dict(db.execute(
                    f"SELECT action, COUNT(*) FROM audit WHERE action IN ({','.join('?' * len(FAIL_EVENTS))}) "
                    "GROUP BY action", FAIL_EVENTS).fetchall())
        finally:
            nvr.stop()
        restarts = nvr.log_tail(10**9).count("restarting ffmpeg")

    dt = t1 - t0
    cpu = diff(c0["nvr"], c1["nvr"])
    in_win = [r for r in rows if t0w * 1000 <= r[2] <= t1w * 1000]
    per_cam: dict[str, int] = {}
    for r in in_win:
        per_cam[r[0]] = per_cam.get(r[0], 0) + 1
    expected_min = max(1, math.floor(dt / SEGMENT_SECONDS) - 1)
    short = sorted(c["id"] for c in cams if per_cam.get(c["id"], 0) < expected_min)
    lat = [(r[3] - r[2]) / 1000 for r in in_win]
    counts = [v for _, v in spool.samples]
    third = max(1, len(counts) // 3)
    growth = (sum(counts[-third:]) / third - sum(counts[:third]) / third) if counts else 0.0
    mems = [v for _, v in mem.samples]
    last_mem = mems[-1] if mems else {"root_rss": 0, "ffmpeg_rss": [], "pss_total": 0}
    problems = []
    if restarts:
        problems.append(f"{restarts} ffmpeg restarts")
    if events:
        problems.append(", ".join(f"{k}×{v}" for k, v in events.items()))
    if any(r[4] for r in in_win):
        problems.append("partial segments")
    if short:
        problems.append(f"{len(short)} cameras stored < {expected_min} segments")
    if lat and pct(lat, 99) > SEGMENT_SECONDS:
        problems.append(f"late: p99 closed→indexed {pct(lat, 99):.1f} s")
    if growth > n / 2:
        problems.append(f"spool grew by {growth:.0f} files")
    core = dt / 100  # cpu seconds -> % of one core over the window
    out.update({
        "window_s": dt, "held": not problems, "problems": problems,
        "segments_in_window": len(in_win), "expected_min_per_camera": expected_min,
        "closed_to_indexed_s": {"p50": median(lat), "p99": pct(lat, 99), "max": max(lat or [0])},
        "spool_files": {"first_third": sum(counts[:third]) / third if counts else 0,
                        "last_third": sum(counts[-third:]) / third if counts else 0, "max": max(counts or [0])},
        "cpu_pct_core": {"nvr_total": cpu["total"] / core, "nvr_python": cpu["root"] / core,
                         "nvr_ffmpeg": cpu["ffmpeg"] / core, "simulator": (c1["sim"] - c0["sim"]) / core,
                         "s3_weed": (c1["s3"] - c0["s3"]) / core},
        "cpu_pct_core_per_camera": {"nvr_total": cpu["total"] / core / n, "nvr_python": cpu["root"] / core / n,
                                    "nvr_ffmpeg": cpu["ffmpeg"] / core / n},
        "memory": {"server_rss": last_mem["root_rss"], "ffmpeg_rss_mean": (sum(last_mem["ffmpeg_rss"]) /
                   max(1, len(last_mem["ffmpeg_rss"]))), "ffmpeg_count": len(last_mem["ffmpeg_rss"]),
                   "tree_pss": last_mem["pss_total"], "tree_pss_per_camera": last_mem["pss_total"] / n,
                   "server_rss_per_camera": last_mem["root_rss"] / n},
        "loadavg_after": os.getloadavg(),
    })
    return out


def run(mode: Mode) -> list[Row]:
    steps = mode.pick([4, 16, 40], [8, 16, 32, 48, 64, 96, 128, 160, 192], smoke=[2, 4])
    window = mode.pick(30.0, 300.0, smoke=20.0)
    work = fresh_dir("cameras")
    results: list[dict[str, Any]] = []
    with s3_server(work) as s3:
        for n in steps:
            log(f"cameras: step {n} cameras, window {window:.0f} s")
            r = step(n, window, work, s3)
            results.append(r)
            pc = r["cpu_pct_core_per_camera"]
            log(f"cameras: {n} {'held' if r['held'] else 'FAILED: ' + '; '.join(r['problems'])}; "
                f"{pc['nvr_total']:.2f} % core/camera (python {pc['nvr_python']:.2f}, ffmpeg {pc['nvr_ffmpeg']:.2f}); "
                f"server RSS {r['memory']['server_rss'] / 2**20:.0f} MiB")
            shutil.rmtree(work / f"n{n}", ignore_errors=True)
            if not r["held"]:
                break
    shutil.rmtree(work, ignore_errors=True)

    held = [r for r in results if r["held"]]
    best = max(held, key=lambda r: r["cameras"]) if held else None
    first = results[0]
    reached = any(not r["held"] for r in results)
    data: dict[str, Any] = {"steps": results, "window_s": window, "largest_held": best["cameras"] if best else 0,
                            "limit_reached": reached}
    rows = []
    if best:
        pc, m = best["cpu_pct_core_per_camera"], best["memory"]
        # Projection: cameras one core of this machine records at the measured per-camera cost (nvr tree only).
        per_core = 100 / pc["nvr_total"]
        data["projection_cameras_per_core"] = per_core
        ratio = pc["nvr_total"] / first["cpu_pct_core_per_camera"]["nvr_total"]
        rows.append(Row(
            "2. Cameras per node", ratio, f"CPU/camera at {best['cameras']} ÷ at {first['cameras']}", "",
            f"largest held: {best['cameras']}{'' if reached else ' (limit not reached in this mode)'}; "
            f"{pc['nvr_total']:.2f} % core/cam (python {pc['nvr_python']:.2f} + ffmpeg {pc['nvr_ffmpeg']:.2f}); "
            f"server RSS {m['server_rss'] / 2**20:.0f} MiB ({m['server_rss_per_camera'] / 2**20:.1f} MiB/cam), "
            f"ffmpeg RSS {m['ffmpeg_rss_mean'] / 2**20:.0f} MiB each, tree PSS {m['tree_pss_per_camera'] / 2**20:.1f} "
            f"MiB/cam; ≈ {per_core:.0f} cams per core of this CPU (nvr tree only)"))
    else:
        rows.append(Row("2. Cameras per node", None, "largest count held", "",
                        f"no step held: {results[0]['problems']}"))
    save("cameras", mode, rows, data)
    print_rows(rows)
    return rows
