"""Measurement 6, the index at scale: one camera's day of segments and timeline, at 100 k … 50 M rows.

Each index is the product's SQLite schema (``storage.index.Index``) filled
with synthetic segments the way a node fills it: 10 s segments of every
camera, interleaved in time order, each with its ledger record (canonical JSON
of the same shape and size as ``storage.ledger.segment_record``'s). The
number of cameras grows with the size so every camera holds at least 1.16
days (each day query returns 8 640 rows): 10 cameras at 100 k rows, ~96 at
1 M, then 350 (a city node) with more days at 10 M and 50 M.

Queries, through the product's own code on a long-lived ``Index`` (warm page
cache: the file was just written; a cold disk is slower and not measured):

* ``segments_day``: ``Index.segments(camera, day_start, day_end)`` (8 640 rows);
* ``segments_page``: the same with ``limit=101`` (the API's default page);
* ``timeline_day``: ``Index.spans`` + ``nvr.base.timeline.merge_ranges`` (the timeline route);
* ``segments_timeline_day``: the timeline route as it was before it selected
  only ``start_ms, end_ms`` (``Index.segments`` + ``merge_ranges``);
* ``bounded_day``: the day query with a fixed lower bound ``start_ms >=
  day_start - 1 h`` (the product bounds it by the longest segment instead).

The ratio is p50 at N rows ÷ p50 at the smallest size of the same run (same
result size): how the query cost grows with the index. All indexes are built
first and then queried side by side (every round runs every query on every
index in a shuffled order), so machine noise hits all sizes alike. Quick mode builds 100 k
and 1 M rows; 10 M and 50 M are extrapolated from those (labelled so).
Size: the database file after a WAL checkpoint, per million rows.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.common import Mode, Row, fresh_dir, log, median, pct, print_rows, save

T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z
SEG_MS = 10_000
DAY_MS = 86_400_000
PER_DAY = DAY_MS // SEG_MS  # 8640


def cameras_for(rows: int) -> int:
    """Cameras so that each holds >= 1.16 days, capped at a 350-camera node."""
    return max(10, min(350, rows // (PER_DAY * 116 // 100)))


def _iso(ms: int) -> str:
    from nvr.base.times import ms_to_rfc3339

    return ms_to_rfc3339(ms)


def build(path: Path, rows: int, cameras: int | None = None) -> dict[str, Any]:
    """Create ``path`` with the product schema and ``rows`` synthetic segments (+ ledger records)."""
    from storage.index import Index
    from storage.ledger import GENESIS, ChainHead, canonical_json, segment_record

    Index(path).close()  # the schema, exactly as the server creates it
    cams = cameras or cameras_for(rows)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")  # bulk load only; the product writes with FULL
    db.execute("PRAGMA cache_size=-2000000")  # 2 GB page cache while loading (the random-key indexes)
    # The product's secondary indexes are dropped for the load and re-created from their own SQL after it.
    secondary = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'segments' "
                           "AND sql IS NOT NULL").fetchall()
    for name, _ in secondary:
        db.execute(f"DROP INDEX {name}")
    key_id = "20251201T000000Z-0a1b2c3d"
    sample = None
    t0 = time.perf_counter()
    batch_seg: list[tuple] = []
    batch_led: list[tuple] = []
    slots = math.ceil(rows / cams)
    n = 0

    def flush() -> None:
        db.execute("BEGIN")
        db.executemany("INSERT INTO ledger (camera, seq, type, record, hash, prev) VALUES (?,?,?,?,?,?)", batch_led)
        db.executemany(
            "INSERT INTO segments (id, camera, seq, start_ms, end_ms, partial, size, sha256, object_key, "
            "object_size, object_sha256, version_id, key_id, record_hash, state, ingested_ms) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch_seg)
        db.execute("COMMIT")
        batch_seg.clear()
        batch_led.clear()

    prev = {c: GENESIS for c in range(cams)}
    for slot in range(slots):
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
            text = (f'{{"camera":"{cam}","end":"{e_iso}","key_id":"{key_id}","node":"node-1",'
                    f'"object_key":"{okey}","object_sha256":"{osha}","object_size":{size + 110},'
                    f'"partial":false,"prev":"{prev[c]}","seq":{slot},"sha256":"{sha}","size":{size},'
                    f'"start":"{s_iso}","type":"segment","v":1}}')
            if n < 3:
                rec = segment_record(
                    head=ChainHead(cam, slot - 1, prev[c]), start=s_iso, end=e_iso, partial=False, size=size,
                    sha256=sha, object_key=okey, object_size=size + 110, object_sha256=osha, key_id=key_id,
                    node="node-1")
                if text != canonical_json(rec).decode():
                    raise RuntimeError("ledger record shape changed: update the template in bench/index_scale.py")
            sample = sample or text
            batch_led.append((cam, slot, "segment", text, rhash, prev[c]))
            batch_seg.append((f"{cam}:{slot}", cam, slot, start, start + SEG_MS, 0, size, sha, okey, size + 110,
                              osha, None, key_id, rhash, "stored", start + SEG_MS + 300))
            prev[c] = rhash
            n += 1
        if len(batch_seg) >= 50_000:
            flush()
    if batch_seg:
        flush()
    for _, sql in secondary:
        db.execute(sql)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "-*"))
    return {"rows": n, "cameras": cams, "days_per_camera": slots / PER_DAY, "build_s": time.perf_counter() - t0,
            "bytes": size, "bytes_per_million_rows": size / (n / 1e6), "ledger_record_bytes": len(sample or "")}


# A fixed lower bound on start_ms (a segment lasts at most recording.segment_seconds <= 600 s; 1 h is
# generous), beside the product's bound by the longest segment actually stored.
MAX_SEGMENT_MS = 3_600_000


def _bounded(index, camera: str, s: int, e: int) -> list:
    from storage.index import _SEGMENT_COLUMNS, _row

    sql = (f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE camera = ? AND start_ms >= ? AND start_ms < ? "
           "AND end_ms > ? ORDER BY camera, start_ms")
    return [_row(r) for r in index.query(sql, (camera, s - MAX_SEGMENT_MS, e, s))]


QUERIES = ("segments_day", "segments_page", "timeline_day", "bounded_day", "segments_timeline_day")


def _one(index, name: str, cam: str, s: int, e: int) -> int:
    from nvr.base.timeline import merge_ranges

    if name == "segments_page":
        return len(index.segments(cam, s, e, limit=101))
    if name == "segments_day":
        return len(index.segments(cam, s, e))
    if name == "timeline_day":
        return len(merge_ranges(index.spans(cam, s, e), s, e)[0])
    if name == "segments_timeline_day":
        return len(merge_ranges([(r.start_ms, r.end_ms) for r in index.segments(cam, s, e)], s, e)[0])
    return len(_bounded(index, cam, s, e))


def query_many(entries: list[tuple[str, Path, dict[str, Any], str]], n: int, seed: int = 1) -> dict[str, Any]:
    """p50/p99 (ms) of each query type for each entry ``(label, db path, build info, day)``.

    ``day``: "random" (a random day of a random camera), "first" or "last" (that camera's first or
    newest day). Every iteration runs every query type on every entry back to back, in a shuffled
    order, so a noisy neighbour slows all sizes alike (the ratios compare queries that ran side by
    side) and no query always runs on a cache another one warmed.
    """
    from storage.index import Index

    rnd = random.Random(seed)
    indexes = {label: Index(path) for label, path, _, _ in entries}
    times: dict[tuple[str, str], list[float]] = {(e[0], q): [] for e in entries for q in QUERIES}
    counts: dict[tuple[str, str], list[int]] = {(e[0], q): [] for e in entries for q in QUERIES}
    try:
        for i in range(n + 5):
            plan = []
            for label, _, info, day in entries:
                span_slots = max(1, int(info["days_per_camera"] * PER_DAY) - PER_DAY)
                cam = f"cam{rnd.randrange(info['cameras']):04d}"
                slot = {"random": rnd.randrange(span_slots), "first": 0, "last": span_slots - 1}[day]
                plan += [(label, q, cam, T0 + slot * SEG_MS) for q in QUERIES]
            rnd.shuffle(plan)
            for label, q, cam, s in plan:
                t = time.perf_counter()
                got = _one(indexes[label], q, cam, s, s + DAY_MS)
                dt = (time.perf_counter() - t) * 1000
                if i >= 5:  # the first few warm SQLite's caches
                    times[(label, q)].append(dt)
                    counts[(label, q)].append(got)
    finally:
        for index in indexes.values():
            index.close()
    return {label: {q: {"p50_ms": median(times[(label, q)]), "p99_ms": pct(times[(label, q)], 99),
                        "n": len(times[(label, q)]), "rows_returned_median": median(counts[(label, q)])}
                    for q in QUERIES} for label, _, _, _ in entries}


def run(mode: Mode) -> list[Row]:
    sizes = mode.pick([100_000, 1_000_000], [100_000, 1_000_000, 10_000_000, 50_000_000], smoke=[20_000, 100_000])
    nq = mode.pick(25, 200, smoke=10)
    work = fresh_dir("index")
    results: dict[str, Any] = {"sizes": {}, "extrapolated": {}}
    entries: list[tuple[str, Path, dict[str, Any], str]] = []
    for rows in sizes:
        path = work / f"index-{rows}.sqlite3"
        free = shutil.disk_usage(work).free
        per_row = (results["sizes"].get(str(sizes[0]), {}).get("bytes_per_million_rows") or 2e9) / 1e6
        if rows * per_row * 1.3 > free:
            log(f"index: {rows} rows need ~{rows * per_row / 1e9:.0f} GB, only {free / 1e9:.0f} GB free: skipped")
            results["sizes"][str(rows)] = {"skipped": f"needs ~{rows * per_row / 1e9:.0f} GB, {free / 1e9:.0f} GB free"}
            continue
        log(f"index: building {rows:,} rows ({cameras_for(rows)} cameras)")
        info = build(path, rows)
        log(f"index: built in {info['build_s']:.0f} s, {info['bytes'] / 1e6:.0f} MB")
        results["sizes"][str(rows)] = info
        entries.append((str(rows), path, info, "random"))
    # History depth: few cameras with many days each. A day query that bounds start_ms only from above
    # (the product's until commit 8f2c093) walks the camera's history from its first segment, so the last
    # day costs more than the first; with a lower bound both cost the same.
    depth_rows = mode.pick(300_000, 2_000_000, smoke=50_000)
    depth_cams = mode.pick(3, 5, smoke=2)
    path = work / "index-depth.sqlite3"
    log(f"index: history depth, {depth_rows:,} rows over {depth_cams} cameras")
    depth = build(path, depth_rows, cameras=depth_cams)
    entries += [("depth-first", path, depth, "first"), ("depth-last", path, depth, "last")]
    log(f"index: querying {len(entries)} indexes side by side, {nq} rounds")
    got = query_many(entries, nq)
    for label, _, info, _ in entries:
        if not label.startswith("depth"):
            info["queries"] = got[label]
    depth["first_day"], depth["last_day"] = got["depth-first"], got["depth-last"]
    depth["last_over_first"] = {q: depth["last_day"][q]["p50_ms"] / depth["first_day"][q]["p50_ms"] for q in QUERIES}
    results["depth"] = depth
    shutil.rmtree(work, ignore_errors=True)

    measured = {int(k): v for k, v in results["sizes"].items() if "queries" in v}
    base_n = min(measured)
    base = measured[base_n]["queries"]
    for v in measured.values():
        v["ratio_vs_smallest"] = {q: v["queries"][q]["p50_ms"] / base[q]["p50_ms"] for q in base}
    # Extrapolate sizes not measured, for a 350-camera node (cameras_for): bytes linear in rows; latency =
    # the largest measured size's, corrected for history depth: each row of a camera's history before the
    # asked day costs what the depth test measured (last-day minus first-day latency per row; ~0 when the
    # query seeks); a random day has half the history before it, the newest day all of it.
    d = results["depth"]
    d_skip = d["rows"] / d["cameras"] - PER_DAY
    per_row = {q: max(0.0, d["last_day"][q]["p50_ms"] - d["first_day"][q]["p50_ms"]) / d_skip for q in QUERIES}
    big = max(measured)
    big_skip = (measured[big]["rows"] / measured[big]["cameras"] - PER_DAY) / 2
    for target in (10_000_000, 50_000_000):
        if target in measured:
            continue
        cams = cameras_for(target)
        history = target / cams - PER_DAY
        ex = {"bytes": measured[big]["bytes_per_million_rows"] * target / 1e6, "cameras": cams,
              "days_per_camera": target / cams / PER_DAY, "queries": {}}
        for q in QUERIES:
            flat = measured[big]["queries"][q]["p50_ms"] - per_row[q] * big_skip
            ex["queries"][q] = {"p50_ms": flat + per_row[q] * history / 2,  # a random day
                                "last_day_p50_ms": flat + per_row[q] * history}  # the newest day
        results["extrapolated"][str(target)] = ex
    results["per_skipped_row_ms"] = per_row

    rows_out = []
    for n in sorted(measured):
        v = measured[n]
        q = v["queries"]
        rows_out.append(Row(
            f"6. Index {n / 1e6:g} M rows", v["ratio_vs_smallest"]["segments_day"],
            f"day-query p50 ÷ at {base_n / 1e6:g} M", "",
            f"segments/day p50 {q['segments_day']['p50_ms']:.1f} / p99 {q['segments_day']['p99_ms']:.1f} ms; "
            f"timeline p50 {q['timeline_day']['p50_ms']:.1f} / p99 {q['timeline_day']['p99_ms']:.1f} ms; "
            f"page p50 {q['segments_page']['p50_ms']:.2f} ms; timeline from full rows (before) p50 {q['segments_timeline_day']['p50_ms']:.1f} ms; "
            f"{v['bytes_per_million_rows'] / 1e9:.2f} GB per M rows "
            f"({v['cameras']} cams × {v['days_per_camera']:.1f} d)"))
    for n, ex in results["extrapolated"].items():
        q = ex["queries"]
        rows_out.append(Row(
            f"6. Index {int(n) / 1e6:g} M rows (EXTRAPOLATED)", q["segments_day"]["p50_ms"] / base["segments_day"]["p50_ms"],
            f"day-query p50 ÷ at {base_n / 1e6:g} M", "",
            f"extrapolated, not measured ({ex['cameras']} cams × {ex['days_per_camera']:.1f} d): segments/day p50 "
            f"~{q['segments_day']['p50_ms']:.0f} ms (newest day ~{q['segments_day']['last_day_p50_ms']:.0f}), "
            f"timeline ~{q['timeline_day']['p50_ms']:.0f} ms, first page ~{q['segments_page']['p50_ms']:.0f} ms "
            f"(newest day ~{q['segments_page']['last_day_p50_ms']:.0f}); bounded day query "
            f"~{q['bounded_day']['p50_ms']:.0f} ms; ~{ex['bytes'] / 1e9:.0f} GB (warm page cache assumed)"))
    fd, ld, lo = d["first_day"], d["last_day"], d["last_over_first"]
    depth = f"{d['days_per_camera']:.1f} days/camera"
    rows_out.append(Row(
        f"6. Index history depth, API page ({depth})", lo["segments_page"], "page(101) p50 last day ÷ first day",
        "≈ 1", f"{fd['segments_page']['p50_ms']:.1f} → {ld['segments_page']['p50_ms']:.1f} ms; with a start_ms "
        f"lower bound the day query goes {fd['bounded_day']['p50_ms']:.0f} → {ld['bounded_day']['p50_ms']:.0f} ms"))
    rows_out.append(Row(
        f"6. Index history depth, day ({depth})", lo["segments_day"], "day-query p50 last day ÷ first day", "≈ 1",
        f"{fd['segments_day']['p50_ms']:.0f} → {ld['segments_day']['p50_ms']:.0f} ms "
        f"(bounded: ratio {lo['bounded_day']:.2f})"))
    save("index", mode, rows_out, results)
    print_rows(rows_out)
    return rows_out
