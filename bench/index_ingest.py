"""Measurement 6b, the index at a city's segment rate: 1,000 cameras' segments ingested, on each backend.

1,000 cameras closing a 10 s segment each (staggered: 100 segments a second)
for the run's length, through the product's ``IngestService`` (a lane per
camera, the S3 pool of 8) into the embedded S3 and the index. Segments are
small synthetic files (4 KiB), so hashing, encryption and S3 bytes are not what
is measured: the index's commits are (one durable commit per segment: the
ledger record, the row, the chain lock). Figure: closed → indexed p50/p99 of
the service's own latency records, and the rate held. PostgreSQL runs with its
own defaults (fsync, synchronous commit).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from bench.common import Mode, Row, fresh_dir, log, median, pct, print_rows, s3_server, save

T0 = 1_764_547_200_000
SEGMENT_S = 10.0
CAMERAS = 1000


def _segment(work: Path) -> Path:
    path = work / "small.mp4"
    path.write_bytes(os.urandom(4096))
    return path


async def paced(ingestor, spool, source: Path, cameras: int, seconds: float) -> tuple[list[int], int, float]:
    """``cameras`` each closing a segment every SEGMENT_S (staggered); the latencies (ms) the service
    keeps (its last 1,000), the segments ingested, and the rate held (segments/s)."""
    from nvr.ingest.lanes import IngestService
    from storage.spool import closed_now

    svc = IngestService(ingestor, retry_max=5.0)
    await svc.start()
    before = ingestor.stats.segments
    start = time.monotonic()
    rounds = max(1, int(seconds // SEGMENT_S))
    for r in range(rounds):
        for c in range(cameras):
            due = start + r * SEGMENT_S + c * SEGMENT_S / cameras
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            cam = f"cam{c:04d}"
            name = f"r{T0:013d}-{r:06d}.mp4"
            spool.camera_dir(cam).mkdir(parents=True, exist_ok=True)
            os.link(source, spool.camera_dir(cam) / name)
            spool.write_ticket(closed_now(cam, name, T0 + int(r * SEGMENT_S * 1000),
                                          T0 + int((r + 1) * SEGMENT_S * 1000)))
            svc.notify(cam)
    produced_s = time.monotonic() - start
    if not await svc.drain(300):
        raise RuntimeError("ingest did not drain within 300 s")
    await svc.stop()
    done = ingestor.stats.segments - before
    return list(ingestor.stats.latency_ms[-done:]), done, done / produced_s


def run(mode: Mode) -> list[Row]:
    from nvr.ingest.pipeline import Ingestor
    from storage.index import Index
    from storage.keyring import Keyring
    from storage.objectstore import ObjectStore
    from storage.spool import Spool
    from tests.support.postgres import binaries, start

    # Random bytes have no clip skeleton: ingest would warn about each of 100 segments a second.
    logging.getLogger("nvr.ingest").setLevel(logging.ERROR)
    seconds = mode.pick(60, 180, smoke=10)
    cameras = mode.pick(CAMERAS, CAMERAS, smoke=100)
    work = fresh_dir("index-ingest")
    source = _segment(work)
    results: dict[str, Any] = {}
    pg = start(binaries(), durable=True, root=work)
    try:
        with s3_server(work / "s3") as s3:
            for backend in ("sqlite", "postgresql"):
                data = work / backend
                target = data / "index.sqlite3" if backend == "sqlite" else pg.create_database("ingest")
                index = Index(target, password_file=pg.password_file if backend == "postgresql" else None)
                ep = s3.endpoint
                store = ObjectStore(endpoint=ep.endpoint, access_key=ep.access_key, secret_key=ep.secret_key,
                                    bucket=f"rate-{backend}", secure=ep.secure)
                store.ensure_bucket()
                spool = Spool(data / "spool")
                ingestor = Ingestor(store=store, index=index, keyring=Keyring.open(data / "keyring", create=True),
                                    spool=spool, node_id="bench")
                log(f"index-ingest: {backend}, {cameras} cameras × {seconds:.0f} s")
                cpu0 = time.process_time()
                lat, done, rate = asyncio.run(paced(ingestor, spool, source, cameras, seconds))
                cpu = time.process_time() - cpu0
                results[backend] = {"segments": done, "sampled": len(lat), "rate_per_s": rate, "p50_ms": median(lat),
                                    "p99_ms": pct(lat, 99), "max_ms": max(lat or [0]), "cpu_s": cpu}
                index.close()
                store.close()
    finally:
        pg.stop()
    rows = []
    for backend, r in results.items():
        rows.append(Row(f"6. Index ingest at {cameras:,} cameras' segment rate, {backend}", r["p99_ms"] / 1000,
                        "closed → indexed p99, s", "≤ 1 (PostgreSQL)",
                        f"{r['segments']:,} segments at {r['rate_per_s']:.0f}/s (latency of the last "
                        f"{r['sampled']:,}); p50 {r['p50_ms']:.0f} ms, "
                        f"max {r['max_ms']:.0f} ms; nvr {r['cpu_s'] / seconds:.2f} cores (4 KiB segments)"))
    save("index-ingest", mode, rows, results)
    print_rows(rows)
    return rows
