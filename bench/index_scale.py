"""Measurement 6, the index at scale, on SQLite and on PostgreSQL: a camera's day, its timeline, the first page.

Each index is the product's schema (``storage.index.Index`` creates and
migrates it) bulk-loaded with synthetic segments the way a node fills it: 10 s
segments of every camera, interleaved in time order, each with its ledger
record (the canonical JSON of ``storage.ledger.segment_record``, checked on the
first rows). Cameras grow with the size so each holds at least 1.16 days: 10
cameras at 100 k rows, ~96 at 1 M, then 350 (the city today) with 3.3 days at
10 M and 16.5 days at 50 M. Loading bypasses the index layer (its own
connection: executemany on SQLite, COPY on PostgreSQL, secondary indexes
built after the load); everything measured goes through the product's
``Index``.

Queries, on a long-lived ``Index`` (warm cache: the data was just written):

* ``segments_day``: ``Index.segments(camera, day_start, day_end)`` (8 640 rows);
* ``segments_page``: the same with ``limit=101`` (the API's default page);
* ``timeline_day``: ``Index.spans`` + ``nvr.base.timeline.merge_ranges`` (the timeline route);
* ``playlist_day``: the HLS playlist of the day as ``nvr/api/hls.py:vod_playlist`` makes it: the
  stored rows, ``in_range``, ``probes``, ``plan_playlist``, ``render_playlist`` (the codec
  configurations given: reading them from skeletons is the one step left out, as are the audit
  entry and HTTP).

Every round runs every query on every index of the run in a shuffled order, so
machine noise hits all sizes and both backends alike. Then, per index, the
write path under read load: 20 reader processes (a day query, then 2 s of
think time, each: the command center's consoles) while one writer appends
segments with ``Index.insert_segment`` (10 a second, each its own durable
commit): insert p50/p99 and the readers' p99 meanwhile. Size: the SQLite file
after a WAL checkpoint; PostgreSQL's ``pg_database_size`` less that of an
empty index. PostgreSQL runs with its own defaults (fsync and synchronous
commit on), 256 MB of shared buffers.

Quick mode: 100 k and 1 M rows. Full mode: 10 M and 50 M as well, each
skipped (and said so) when the disk can't hold it.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Mode, Row, fresh_dir, log, median, pct, print_rows, save

T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z
SEG_MS = 10_000
DAY_MS = 86_400_000
PER_DAY = DAY_MS // SEG_MS  # 8640
KEY_ID = "20251201T000000Z-0a1b2c3d"
QUERIES = ("segments_day", "segments_page", "timeline_day", "playlist_day")
BACKENDS = ("sqlite", "postgresql")
READERS = 20
THINK_S = 2.0
INSERTS_PER_S = 10


def cameras_for(rows: int) -> int:
    """Cameras so that each holds >= 1.16 days, capped at a 350-camera node."""
    return max(10, min(350, rows // (PER_DAY * 116 // 100)))


def _iso(ms: int) -> str:
    from nvr.base.times import ms_to_rfc3339

    return ms_to_rfc3339(ms)


def synthetic(rows: int, cams: int):
    """Batches of (ledger rows, segment rows) in the product's column order, in time order."""
    from storage.ledger import GENESIS, ChainHead, canonical_json, segment_record

    prev = {c: GENESIS for c in range(cams)}
    led: list[tuple] = []
    seg: list[tuple] = []
    n = 0
    for slot in range(math.ceil(rows / cams)):
        start = T0 + slot * SEG_MS
        s_iso, e_iso = _iso(start), _iso(start + SEG_MS)
        stamp = s_iso.replace("-", "").replace(":", "").replace(".", "")
        hx = os.urandom(96 * cams).hex()
        for c in range(cams):
            if n >= rows:
                break
            cam = f"cam{c:04d}"
            h = hx[c * 192:(c + 1) * 192]
            sha, osha, rhash = h[:64], h[64:128], h[128:]
            okey = f"{cam}/{s_iso[:4]}/{s_iso[5:7]}/{s_iso[8:10]}/{s_iso[11:13]}/{stamp}_r1764547200000-{slot:06d}.seg"
            size = 5_100_000 + (slot * 7919 + c) % 200_000
            # The canonical JSON by template (fast); checked against the product's record on the first rows.
            text = (f'{{"camera":"{cam}","clock":"camera","end":"{e_iso}","key_id":"{KEY_ID}","node":"node-1",'
                    f'"object_key":"{okey}","object_sha256":"{osha}","object_size":{size + 110},'
                    f'"partial":false,"prev":"{prev[c]}","seq":{slot},"sha256":"{sha}","size":{size},'
                    f'"start":"{s_iso}","type":"segment","v":1}}')
            if n < 3:
                rec = segment_record(
                    head=ChainHead(cam, slot - 1, prev[c]), start=s_iso, end=e_iso, partial=False, size=size,
                    sha256=sha, object_key=okey, object_size=size + 110, object_sha256=osha, key_id=KEY_ID,
                    node="node-1")
                if text != canonical_json(rec).decode():
                    raise RuntimeError("ledger record shape changed: update the template in bench/index_scale.py")
            led.append((cam, slot, "segment", text, rhash, prev[c], start, start + SEG_MS, None))
            seg.append((f"{cam}:{slot}", cam, slot, start, start + SEG_MS, 0, size, sha, okey, size + 110,
                        osha, None, KEY_ID, rhash, "stored", start + SEG_MS + 300))
            prev[c] = rhash
            n += 1
        if len(seg) >= 50_000:
            yield led, seg
            led, seg = [], []
    if seg:
        yield led, seg


LEDGER_COLS = "camera, seq, type, record, hash, prev, start_ms, end_ms, segment_seq"
SEGMENT_COLS = ("id, camera, seq, start_ms, end_ms, partial, size, sha256, object_key, object_size, object_sha256, "
                "version_id, key_id, record_hash, state, ingested_ms")


@dataclass
class Built:
    label: str
    backend: str
    target: str | Path
    password_file: Path | None
    rows: int
    cameras: int
    build_s: float
    bytes: int

    @property
    def days_per_camera(self) -> float:
        return self.rows / self.cameras / PER_DAY

    def open(self):
        from storage.index import Index

        return Index(self.target, password_file=self.password_file)


def load_sqlite(path: Path, rows: int, cams: int) -> int:
    """Fill a new SQLite index; its size in bytes."""
    from storage.index import Index

    Index(path).close()  # the schema, exactly as the server creates it
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")  # bulk load only; the product writes with FULL
    db.execute("PRAGMA cache_size=-2000000")
    secondary = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'segments' "
                           "AND sql IS NOT NULL").fetchall()
    for name, _ in secondary:
        db.execute(f"DROP INDEX {name}")
    for led, seg in synthetic(rows, cams):
        db.execute("BEGIN")
        db.executemany(f"INSERT INTO ledger ({LEDGER_COLS}) VALUES ({', '.join('?' * 9)})", led)
        db.executemany(f"INSERT INTO segments ({SEGMENT_COLS}) VALUES ({', '.join('?' * 16)})", seg)
        db.execute("COMMIT")
    for _, sql in secondary:
        db.execute(sql)
    db.execute("UPDATE meta SET value = ? WHERE key = 'max_segment_ms'", (str(SEG_MS),))
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "-*"))


def load_postgres(url: str, password: str, rows: int, cams: int) -> int:
    """Fill a new PostgreSQL index with COPY; the bytes it added to an empty index."""
    import psycopg

    with psycopg.connect(url, password=password, autocommit=True) as conn:
        empty = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        secondary = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'segments' "
                                 "AND indexname IN ('segments_camera_start', 'segments_camera_end')").fetchall()
        for name, _ in secondary:
            conn.execute(f"DROP INDEX {name}")
        with conn.cursor() as cur:
            for led, seg in synthetic(rows, cams):
                with conn.transaction():
                    with cur.copy(f"COPY ledger ({LEDGER_COLS}) FROM STDIN") as cp:
                        for r in led:
                            cp.write_row(r)
                    with cur.copy(f"COPY segments ({SEGMENT_COLS}) FROM STDIN") as cp:
                        for r in seg:
                            cp.write_row(r)
        for _, sql in secondary:
            conn.execute(sql)
        conn.execute("UPDATE meta SET value = %s WHERE key = 'max_segment_ms'", (str(SEG_MS),))
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] - empty


def _playlist(index, cam: str, s: int, e: int) -> int:
    from nvr.api.hls import playlist_text
    from nvr.playback.hls import in_range, plan_playlist, probes

    rows = in_range(index.segments(cam, s, e, state="stored"), s, e)
    playlist = plan_playlist(cam, rows, s, e, {i: "h264/1080p" for i in probes(rows)})
    return len(playlist.segments) if playlist_text(playlist, "t" * 43) else 0


def _one(index, name: str, cam: str, s: int, e: int) -> int:
    from nvr.base.timeline import merge_ranges

    if name == "playlist_day":
        return _playlist(index, cam, s, e)
    if name == "segments_page":
        return len(index.segments(cam, s, e, limit=101))
    if name == "segments_day":
        return len(index.segments(cam, s, e))
    return len(merge_ranges(index.spans(cam, s, e), s, e)[0])


def _pick(rnd: random.Random, b: Built) -> tuple[str, int]:
    span_slots = max(1, int(b.days_per_camera * PER_DAY) - PER_DAY)
    return f"cam{rnd.randrange(b.cameras):04d}", T0 + rnd.randrange(span_slots) * SEG_MS


def query_many(built: list[Built], n: int, seed: int = 1) -> dict[str, Any]:
    """p50/p99 (ms) of each query on each index, all interleaved."""
    rnd = random.Random(seed)
    indexes = {b.label: b.open() for b in built}
    times: dict[tuple[str, str], list[float]] = {(b.label, q): [] for b in built for q in QUERIES}
    counts: dict[tuple[str, str], list[int]] = {(b.label, q): [] for b in built for q in QUERIES}
    try:
        for i in range(n + 5):
            plan = []
            for b in built:
                cam, s = _pick(rnd, b)
                plan += [(b.label, q, cam, s) for q in QUERIES]
            rnd.shuffle(plan)
            for label, q, cam, s in plan:
                t = time.perf_counter()
                got = _one(indexes[label], q, cam, s, s + DAY_MS)
                dt = (time.perf_counter() - t) * 1000
                if i >= 5:  # the first few warm the caches
                    times[(label, q)].append(dt)
                    counts[(label, q)].append(got)
    finally:
        for index in indexes.values():
            index.close()
    return {b.label: {q: {"p50_ms": median(times[(b.label, q)]), "p99_ms": pct(times[(b.label, q)], 99),
                          "n": len(times[(b.label, q)]), "rows_returned_median": median(counts[(b.label, q)])}
                      for q in QUERIES} for b in built}


def _reader(b: Built, seconds: float, seed: int, out) -> None:
    rnd = random.Random(seed)
    index = b.open()
    lat = []
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            cam, s = _pick(rnd, b)
            t = time.perf_counter()
            _one(index, "segments_day", cam, s, s + DAY_MS)
            lat.append((time.perf_counter() - t) * 1000)
            time.sleep(THINK_S)
    finally:
        index.close()
    out.put(lat)


def under_load(b: Built, seconds: float) -> dict[str, Any]:
    """Insert latency of ``insert_segment`` (10/s) while READERS processes run day queries."""
    from storage.ledger import ChainHead, segment_record

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(b, seconds + 2, i, out), daemon=True) for i in range(READERS)]
    for p in procs:
        p.start()
    index = b.open()
    lat = []
    try:
        time.sleep(2)  # the readers are connected and querying
        head = index.chain_head("live")
        start = T0 + 10 * DAY_MS
        deadline = time.monotonic()
        for n in range(int(seconds * INSERTS_PER_S)):
            deadline += 1 / INSERTS_PER_S
            rec = segment_record(head=head, start=_iso(start + n * SEG_MS), end=_iso(start + (n + 1) * SEG_MS),
                                 partial=False, size=1000, sha256=os.urandom(32).hex(),
                                 object_key=f"live/{n:08d}.seg", object_size=1100, object_sha256=os.urandom(32).hex(),
                                 key_id=KEY_ID, node="bench")
            t = time.perf_counter()
            row = index.insert_segment(rec, version_id=None)
            lat.append((time.perf_counter() - t) * 1000)
            head = ChainHead("live", row.seq, row.record_hash)
            time.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        index.close()
    reads: list[float] = []
    for _ in procs:
        reads += out.get(timeout=60)
    for p in procs:
        p.join(30)
    return {"inserts": len(lat), "insert_p50_ms": median(lat), "insert_p99_ms": pct(lat, 99),
            "insert_max_ms": max(lat), "reads": len(reads), "read_p50_ms": median(reads), "read_p99_ms": pct(reads, 99)}


def run(mode: Mode) -> list[Row]:
    sizes = mode.pick([100_000, 1_000_000], [100_000, 1_000_000, 10_000_000, 50_000_000], smoke=[20_000, 100_000])
    nq = mode.pick(25, 100, smoke=10)
    load_s = mode.pick(20, 60, smoke=5)
    backends = [b for b in os.environ.get("NVR_BENCH_INDEX", "sqlite,postgresql").split(",") if b]
    work = fresh_dir("index")
    results: dict[str, Any] = {"sizes": {}, "skipped": {}}
    pg = None
    built: list[Built] = []
    try:
        if "postgresql" in backends:
            from tests.support.postgres import binaries, start

            bindir = binaries()
            if bindir is None:
                raise RuntimeError("PostgreSQL server binaries missing (apt-get install postgresql)")
            pg = start(bindir, durable=True, root=work, settings={"shared_buffers": "256MB",
                                                                  "maintenance_work_mem": "512MB",
                                                                  "max_wal_size": "8GB"})
        per_row = 1600.0  # bytes, until the first size is measured
        for rows in sizes:
            for backend in backends:
                label = f"{backend}-{rows}"
                need = rows * per_row * 1.3
                free = shutil.disk_usage(work).free
                if need > free:
                    log(f"index: {label} needs ~{need / 1e9:.0f} GB, {free / 1e9:.0f} GB free: skipped")
                    results["skipped"][label] = f"needs ~{need / 1e9:.0f} GB, {free / 1e9:.0f} GB free"
                    continue
                cams = cameras_for(rows)
                log(f"index: building {label} ({cams} cameras)")
                t = time.perf_counter()
                if backend == "sqlite":
                    path = work / f"{label}.sqlite3"
                    size = load_sqlite(path, rows, cams)
                    b = Built(label, backend, path, None, rows, cams, 0.0, size)
                else:
                    url = pg.create_database(label.replace("-", "_"))
                    from storage.index import Index

                    Index(url, password_file=pg.password_file).close()
                    size = load_postgres(url, pg.password, rows, cams)
                    b = Built(label, backend, url, pg.password_file, rows, cams, 0.0, size)
                b.build_s = time.perf_counter() - t
                per_row = max(per_row, size / rows)
                log(f"index: {label} built in {b.build_s:.0f} s, {size / 1e6:.0f} MB ({size / rows:.0f} B/row)")
                built.append(b)
        log(f"index: querying {len(built)} indexes side by side, {nq} rounds")
        got = query_many(built, nq)
        for b in built:
            log(f"index: {b.label}: inserts under {READERS} readers for {load_s} s")
            results["sizes"][b.label] = {
                "backend": b.backend, "rows": b.rows, "cameras": b.cameras, "days_per_camera": b.days_per_camera,
                "build_s": b.build_s, "bytes": b.bytes, "bytes_per_million_rows": b.bytes / (b.rows / 1e6),
                "queries": got[b.label], "under_load": under_load(b, load_s)}
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    rows_out = []
    for v in results["sizes"].values():
        q, ld = v["queries"], v["under_load"]
        base = results["sizes"].get(f"{v['backend']}-{min(sizes)}", v)["queries"]
        rows_out.append(Row(
            f"6. Index {v['rows'] / 1e6:g} M rows, {v['backend']}", q["segments_day"]["p99_ms"],
            "day query p99 ms", "≤ 20 at 50 M (PostgreSQL)",
            f"day p50 {q['segments_day']['p50_ms']:.1f} ms (× {q['segments_day']['p50_ms'] / base['segments_day']['p50_ms']:.2f} "
            f"of the smallest); timeline p50 {q['timeline_day']['p50_ms']:.1f} / p99 {q['timeline_day']['p99_ms']:.1f} ms; "
            f"first page p50 {q['segments_page']['p50_ms']:.2f} / p99 {q['segments_page']['p99_ms']:.2f} ms; "
            f"HLS playlist of the day p50 {q['playlist_day']['p50_ms']:.0f} / p99 {q['playlist_day']['p99_ms']:.0f} ms; "
            f"insert p50 {ld['insert_p50_ms']:.1f} / p99 {ld['insert_p99_ms']:.1f} ms under {READERS} readers "
            f"(their day p99 {ld['read_p99_ms']:.0f} ms); {v['bytes_per_million_rows'] / 1e9:.2f} GB per M rows; "
            f"built in {v['build_s']:.0f} s ({v['cameras']} cams × {v['days_per_camera']:.1f} d)"))
    for label, why in results["skipped"].items():
        rows_out.append(Row(f"6. Index {label}", None, "not measured", "", why))
    save("index", mode, rows_out, results)
    print_rows(rows_out)
    return rows_out
