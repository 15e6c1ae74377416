"""Measurement 5, retrieval: clips of 1 min / 10 min (/ 1 h in full mode) and segment content.

Footage is laid down by the product's ingest (``storage.ingest``) as one
camera's contiguous 10 s segments (each a hard link to one real ~5 MB segment
of the 1080p clip), then ``nvr serve`` (a subprocess) answers
``GET /api/v1/cameras/{id}/clip.mp4`` and ``GET /api/v1/segments/{id}/content``.
Clips start mid-segment (5 s in), as a viewer's range would.

Reference, same run, same segments: a raw ``get_object`` + envelope decrypt
of each segment in turn, in this process (no hash checks, no remux, no HTTP).

* clip time to first byte (first body byte) and total time, ours ÷ raw
  (raw "first byte" = the first segment decrypted);
* segment-content throughput (MB/s of original segment bytes), ours ÷ raw.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import urllib.request
from typing import Any

from bench.common import (
    SEGMENT_SECONDS,
    Mode,
    NvrProc,
    Row,
    diff,
    fresh_dir,
    log,
    median,
    print_rows,
    s3_server,
    save,
    segment_file,
    tree_cpu,
)
from bench.ingest import T0, Parts, drain_queued

CAMERA = "cam000"


def fetch(nvr: NvrProc, path: str) -> tuple[float, float, int]:
    """(seconds to the first body byte, total seconds, body bytes) of one GET."""
    t0 = time.perf_counter()
    first = None
    n = 0
    with urllib.request.urlopen(nvr.request(path), timeout=900) as resp:
        while chunk := resp.read1(1 << 16):
            if first is None:
                first = time.perf_counter() - t0
            n += len(chunk)
    return first or 0.0, time.perf_counter() - t0, n


def raw_read(parts: Parts, rows) -> tuple[float, float, int]:
    """Raw reference: GET + decrypt each segment in turn; (first decrypted, total, plaintext bytes)."""
    from nvr.base.times import ms_to_rfc3339
    from storage.envelope import SegmentContext, decrypt

    t0 = time.perf_counter()
    first = None
    n = 0
    for r in rows:
        blob = parts.store.get(r.object_key, r.version_id)
        ctx = SegmentContext(camera=r.camera, object_key=r.object_key, start=ms_to_rfc3339(r.start_ms),
                             end=ms_to_rfc3339(r.end_ms))
        n += len(decrypt(blob, ctx, parts.keyring.kek))
        if first is None:
            first = time.perf_counter() - t0
    return first or 0.0, time.perf_counter() - t0, n


def iso(ms: int) -> str:
    from nvr.base.times import ms_to_rfc3339

    return ms_to_rfc3339(ms)


def run(mode: Mode) -> list[Row]:
    from nvr.playback.clip import plan_clip

    lengths = mode.pick([60, 600], [60, 600, 3600], smoke=[60])
    # Three 10-min clips in quick mode too: one alone moved by ±40 % between runs on the shared machine.
    reps = {60: mode.pick(3, 5, smoke=1), 600: mode.pick(3, 3), 3600: 1}
    content_n = mode.pick(12, 60, smoke=3)
    need = max(lengths) // SEGMENT_SECONDS + 2
    work = fresh_dir("retrieval")
    source = work / "segment.mp4"
    shutil.copyfile(segment_file(), source)
    log(f"retrieval: {need} segments of camera {CAMERA}, clips of {lengths} s")
    res: dict[str, Any] = {"clips": {}, "segment_bytes": source.stat().st_size}
    with s3_server(work) as s3:
        bucket = s3.make_bucket(f"retr-{os.getpid()}")
        nvr = NvrProc(work / "nvr", s3, bucket, cameras=[])
        parts = Parts(nvr.workdir, s3, bucket)
        try:
            t = time.perf_counter()
            asyncio.run(drain_queued(parts, source, 1, need, T0))
            # drain_queued names cameras cam000...: CAMERA
            res["ingest_seconds"] = time.perf_counter() - t
            all_rows = parts.index.segments(CAMERA)
            parts.index.close()
            with nvr:
                for length in lengths:
                    start = T0 + 5000
                    end = start + length * 1000
                    rows = list(plan_clip(all_rows, start, end).segments)
                    ours, raws, cpus = [], [], []
                    for _ in range(reps[length]):
                        c0 = tree_cpu(nvr.pid)
                        ours.append(fetch(nvr, f"/api/v1/cameras/{CAMERA}/clip.mp4?start={iso(start)}&end={iso(end)}"))
                        cpus.append(diff(c0, tree_cpu(nvr.pid)))
                        raws.append(raw_read(parts, rows))
                    o_first, o_total = median([x[0] for x in ours]), median([x[1] for x in ours])
                    r_first, r_total = median([x[0] for x in raws]), median([x[1] for x in raws])
                    res["clips"][str(length)] = {
                        "segments": len(rows), "reps": reps[length], "clip_bytes": ours[0][2],
                        "segment_bytes": raws[0][2],
                        "ours_ttfb_s": o_first, "ours_total_s": o_total, "raw_first_s": r_first,
                        "raw_total_s": r_total, "ttfb_ratio": o_first / r_first, "total_ratio": o_total / r_total,
                        "server_cpu_s": median([c["total"] for c in cpus]),
                        "server_cpu_split_s": {  # the Python process; any child (none: clips are stitched in Python)
                            "python": median([c["root_self"] for c in cpus]),
                            "children": median([c["root_reaped"] + c["ffmpeg"] for c in cpus])},
                        "server_cpu_s_per_clip_minute": median([c["total"] for c in cpus]) / (length / 60),
                        "all": {"ours": ours, "raw": raws},
                    }
                    log(f"clip {length} s: ttfb {o_first:.2f} s (raw {r_first:.3f}), total {o_total:.1f} s "
                        f"(raw {r_total:.1f})")
                rows = all_rows[:content_n]
                t = time.perf_counter()
                n = 0
                for r in rows:
                    n += fetch(nvr, f"/api/v1/segments/{r.id}/content")[2]
                ours_s = time.perf_counter() - t
                raw = raw_read(parts, rows)
                res["content"] = {"segments": len(rows), "bytes": n, "ours_s": ours_s, "raw_s": raw[1],
                                  "ours_mb_s": n / ours_s / 1e6, "raw_mb_s": raw[2] / raw[1] / 1e6,
                                  "ratio": (n / ours_s) / (raw[2] / raw[1])}
        finally:
            with contextlib.suppress(Exception):
                parts.close()
    shutil.rmtree(work, ignore_errors=True)

    rows_out = []
    for length, c in res["clips"].items():
        label = {"60": "1 min", "600": "10 min", "3600": "1 h"}[length]
        rows_out.append(Row(
            f"5. Clip {label}: first byte", c["ttfb_ratio"], "TTFB ours ÷ raw GET+decrypt of 1st segment", "",
            f"{c['ours_ttfb_s']:.2f} s vs {c['raw_first_s']:.3f} s"))
        rows_out.append(Row(
            f"5. Clip {label}: total", c["total_ratio"], "total ours ÷ raw GET+decrypt", "",
            f"{c['ours_total_s']:.1f} s vs {c['raw_total_s']:.1f} s for {c['segments']} segments "
            f"({c['segment_bytes'] / c['ours_total_s'] / 1e6:.0f} MB/s of footage; server {c['server_cpu_s']:.2f} cpu-s "
            f"= {c['server_cpu_s_per_clip_minute']:.3f} per minute of clip, all Python "
            f"(children {c['server_cpu_split_s']['children']:.1f}); {c['reps']} reps, medians)"))
    c = res["content"]
    rows_out.append(Row("5. Segment content", c["ratio"], "MB/s ours ÷ raw GET+decrypt", "",
                        f"{c['ours_mb_s']:.0f} MB/s vs {c['raw_mb_s']:.0f} MB/s ({c['segments']} segments)"))
    save("retrieval", mode, rows_out, res)
    print_rows(rows_out)
    return rows_out
