"""Measurement 3, the ingest pipeline: hash + encrypt + PUT + index, from pre-made segments (no ffmpeg).

The product's own ``nvr.ingest.lanes.IngestService`` runs in this process
against the embedded S3, on spool files and tickets laid out exactly as the
recorder leaves them (every file is a hard link to one real 10 s, ~5 MB
segment of the 1080p clip).

Figures, all from the same run:

* **throughput**: C cameras × K segments queued at once, drained by the
  service (one lane per camera, the S3 pool of 8 connections, as in
  ``nvr serve``): segments/s and MB/s ÷ a raw ``put_object`` of the same bytes
  by C threads over the same connection pool (raw measured before and after;
  their mean is the reference).
* **÷ crypto**: ingest MB/s ÷ what one core does per byte of ingest (SHA-256
  of the plaintext + AES-256-GCM + SHA-256 of the object) at ``openssl speed``
  rates (EVP, 1 MiB blocks), and at Python's own hashlib/cryptography rates.
* **latency** (closed → indexed): P cameras each closing a segment every 10 s
  (staggered), p50/p99 of the service's own latency records.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any

from bench.common import (
    SEGMENT_SECONDS,
    Mode,
    Row,
    fresh_dir,
    ingest_crypto_bound,
    log,
    median,
    openssl_speed,
    pct,
    print_rows,
    s3_server,
    save,
    segment_file,
)

T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z: synthetic segments start here


def python_crypto_speed(data: bytes, seconds: float = 1.5) -> dict[str, float]:
    """Single-thread bytes/s of hashlib SHA-256 and cryptography's AES-256-GCM on ``data``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    out = {}
    for name, fn in (("sha256", lambda: hashlib.sha256(data).digest()),
                     ("aes-256-gcm", lambda: AESGCM(AESGCM.generate_key(256)).encrypt(os.urandom(12), data, b""))):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            n += 1
        out[name] = n * len(data) / (time.perf_counter() - t0)
    return out


class Parts:
    """The server's storage stages, wired as NvrServer wires them."""

    def __init__(self, work: Path, s3, bucket: str):
        from nvr.ingest.pipeline import Ingestor
        from storage.index import Index
        from storage.keyring import Keyring
        from storage.objectstore import ObjectStore
        from storage.spool import Spool

        ep = s3.endpoint
        self.store = ObjectStore(endpoint=ep.endpoint, access_key=ep.access_key, secret_key=ep.secret_key,
                                 bucket=bucket, secure=ep.secure)
        self.store.ensure_bucket()
        self.index = Index(work / "data" / "index.sqlite3")
        self.keyring = Keyring.open(work / "data" / "keyring", create=True)
        self.spool = Spool(work / "data" / "spool")
        self.ingestor = Ingestor(store=self.store, index=self.index, keyring=self.keyring, spool=self.spool,
                                 node_id="bench")

    def close(self) -> None:
        self.index.close()
        self.store.close()


def lay_segment(spool, source: Path, camera: str, n: int, *, run_ms: int = T0):
    """Put one segment in the spool as the recorder does: the file, then its ticket (closed now)."""
    from storage.spool import closed_now

    name = f"r{run_ms:013d}-{n:06d}.mp4"
    path = spool.camera_dir(camera) / name
    os.link(source, path)
    seg = closed_now(camera, name, run_ms + n * SEGMENT_SECONDS * 1000, run_ms + (n + 1) * SEGMENT_SECONDS * 1000)
    spool.write_ticket(seg)
    return seg


def raw_puts(store, data: bytes, cameras: int, per_camera: int, prefix: str) -> tuple[float, float]:
    """C threads, each PUTting K objects one after the other over the store's pool; (seconds, cpu seconds)."""

    def lane(c: int) -> None:
        for n in range(per_camera):
            store.client.put_object(store.bucket, f"{prefix}/c{c:03d}/{n:06d}.seg", BytesIO(data), len(data),
                                    content_type="application/octet-stream")

    cpu0, t0 = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(cameras) as pool:
        list(pool.map(lane, range(cameras)))
    return time.perf_counter() - t0, time.process_time() - cpu0


async def drain_queued(parts: Parts, source: Path, cameras: int, per_camera: int, run_ms: int) -> tuple[float, float]:
    """Queue C × K segments, then let an IngestService drain them; (seconds, cpu seconds)."""
    from nvr.ingest.lanes import IngestService

    for c in range(cameras):
        for n in range(per_camera):
            lay_segment(parts.spool, source, f"cam{c:03d}", n, run_ms=run_ms)
    svc = IngestService(parts.ingestor, retry_max=5.0)
    cpu0, t0 = time.process_time(), time.perf_counter()
    await svc.start()
    if not await svc.drain(600):
        raise RuntimeError("ingest did not drain within 600 s")
    dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await svc.stop()
    left = sum(parts.spool.backlog(f"cam{c:03d}") for c in range(cameras))
    if left:
        raise RuntimeError(f"{left} segments left in the spool")
    return dt, cpu


async def paced(parts: Parts, source: Path, cameras: int, seconds: float, run_ms: int) -> list[int]:
    """P cameras each closing a segment every SEGMENT_SECONDS (staggered); closed → indexed latencies (ms)."""
    from nvr.ingest.lanes import IngestService

    svc = IngestService(parts.ingestor, retry_max=5.0)
    before = parts.ingestor.stats.segments
    start = time.monotonic()
    produced = 0
    rounds = max(1, int(seconds // SEGMENT_SECONDS))
    for r in range(rounds):
        for c in range(cameras):
            due = start + r * SEGMENT_SECONDS + c * SEGMENT_SECONDS / cameras
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            cam = f"pace{c:03d}"
            await asyncio.to_thread(lay_segment, parts.spool, source, cam, r, run_ms=run_ms)
            svc.notify(cam)
            produced += 1
    if not await svc.drain(300):
        raise RuntimeError("paced ingest did not drain")
    await svc.stop()
    done = parts.ingestor.stats.segments - before
    return list(parts.ingestor.stats.latency_ms[-done:]) if done else []


def run(mode: Mode) -> list[Row]:
    cams = 8
    per_cam = mode.pick(8, 40, smoke=2)
    pace_cams = mode.pick(32, 100, smoke=4)
    pace_seconds = mode.pick(30.0, 120.0, smoke=10.0)
    work = fresh_dir("ingest")
    source = work / "segment.mp4"
    shutil.copyfile(segment_file(), source)
    data = source.read_bytes()
    size = len(data)
    log(f"ingest: {cams} lanes × {per_cam} segments of {size / 1e6:.2f} MB; paced {pace_cams} cameras")

    ossl = openssl_speed(2)
    pyc = python_crypto_speed(data)
    with s3_server(work) as s3:
        bucket = s3.make_bucket(f"ingest-{os.getpid()}")
        parts = Parts(work, s3, bucket)
        try:
            raw_puts(parts.store, data, cams, 2, "warmup")  # volumes grown, connections open
            raw1 = raw_puts(parts.store, data, cams, per_cam, "raw1")
            ing = asyncio.run(drain_queued(parts, source, cams, per_cam, T0))
            raw2 = raw_puts(parts.store, data, cams, per_cam, "raw2")
            lat = asyncio.run(paced(parts, source, pace_cams, pace_seconds, T0 + 10**9))
        finally:
            parts.close()
    shutil.rmtree(work, ignore_errors=True)

    n = cams * per_cam
    raw_s = (raw1[0] + raw2[0]) / 2
    raw_cpu = (raw1[1] + raw2[1]) / 2
    bound_ossl = ingest_crypto_bound(ossl["aes-256-gcm"], ossl["sha256"])
    bound_py = ingest_crypto_bound(pyc["aes-256-gcm"], pyc["sha256"])
    mbs = n * size / ing[0] / 1e6
    res: dict[str, Any] = {
        "segment_bytes": size, "lanes": cams, "segments_per_lane": per_cam, "segments": n,
        "ingest": {"seconds": ing[0], "segments_per_s": n / ing[0], "mb_per_s": mbs,
                   "cpu_s": ing[1], "cpu_s_per_gb": ing[1] / (n * size / 1e9)},
        "raw_put": {"seconds": [raw1[0], raw2[0]], "segments_per_s": n / raw_s, "mb_per_s": n * size / raw_s / 1e6,
                    "cpu_s": [raw1[1], raw2[1]], "cpu_s_per_gb": raw_cpu / (n * size / 1e9)},
        "openssl_bytes_per_s": ossl, "python_bytes_per_s": pyc,
        "crypto_bound_mb_per_s": {"openssl_1core": bound_ossl / 1e6, "python_1core": bound_py / 1e6},
        "paced": {"cameras": pace_cams, "seconds": pace_seconds, "segments": len(lat),
                  "latency_ms_p50": median(lat), "latency_ms_p99": pct(lat, 99), "latency_ms_max": max(lat or [0])},
    }
    res["ratios"] = {
        "ingest_over_raw_put": (n / ing[0]) / (n / raw_s),
        "ingest_over_openssl_crypto": mbs / (bound_ossl / 1e6),
        "ingest_over_python_crypto": mbs / (bound_py / 1e6),
    }
    # A raw PUT's own time at the same concurrency (C threads): the reference of the latency row.
    raw_put_ms = raw_s * cams / n * 1000
    res["raw_put_ms_per_object"] = raw_put_ms
    res["ratios"]["latency_p50_over_raw_put"] = (median(lat) or 0) / raw_put_ms
    r = res["ratios"]
    rows = [
        Row("3. Ingest throughput", r["ingest_over_raw_put"], "segments/s ingest ÷ raw PUT", "",
            f"ingest {n / ing[0]:.1f} seg/s = {mbs:.0f} MB/s; raw PUT {n / raw_s:.1f} seg/s = "
            f"{n * size / raw_s / 1e6:.0f} MB/s; {cams} lanes, {size / 1e6:.1f} MB segments; "
            f"CPU {res['ingest']['cpu_s_per_gb']:.1f} vs {res['raw_put']['cpu_s_per_gb']:.1f} cpu-s/GB"),
        Row("3. Ingest vs crypto", r["ingest_over_openssl_crypto"], "MB/s ingest ÷ 1-core openssl (2×SHA-256+GCM)",
            "", f"openssl AES-256-GCM {ossl['aes-256-gcm'] / 1e6:.0f} MB/s, SHA-256 {ossl['sha256'] / 1e6:.0f} MB/s "
            f"→ bound {bound_ossl / 1e6:.0f} MB/s/core (Python's: {bound_py / 1e6:.0f})"),
        Row("3. Ingest latency", r["latency_p50_over_raw_put"], "closed → indexed p50 ÷ one raw PUT", "",
            f"p50 {median(lat) or 0:.0f} ms, p99 {pct(lat, 99) or 0:.0f} ms ({pace_cams} cameras × "
            f"{SEGMENT_SECONDS} s segments, {len(lat)} segments); raw PUT {raw_put_ms:.0f} ms per segment"),
    ]
    save("ingest", mode, rows, res)
    print_rows(rows)
    return rows
