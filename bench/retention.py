"""Measurement 7, retention: deletions per second of the sweep ÷ a raw S3 multi-delete of as many objects.

Set-up, in the embedded S3 and a SQLite index of the product schema: K
segments of 10 cameras (synthetic rows and ledger records as in
``bench.index_scale``), each with a small object at its real object key; and
K more objects of the same size under ``raw/``.

* raw: ``Minio.remove_objects`` over the K raw objects (the SDK sends
  multi-deletes of 1 000 keys);
* ours: ``retention.sweep.Sweeper.run`` with a rule that selects every
  segment (``max_age`` = ``min_age`` = 60 s; the segments are days old):
  plan, mark pending, multi-delete in batches, one tombstone per segment in
  its camera's ledger, rows marked deleted.

The sweep is another engineer's work in progress: when ``retention.sweep``
can't be imported or its API does not fit, the row says "not available" and
only the raw side is reported. Objects are 4 KiB, not 5 MB segments: S3
deletes cost per key, and 2 × 100 k real segments would need 1 TB.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Any

from bench.common import Mode, Row, fresh_dir, log, print_rows, s3_server, save

OBJECT_BYTES = 4096


def put_all(client, bucket: str, keys: list[str], threads: int = 16) -> float:
    data = os.urandom(OBJECT_BYTES)

    def put(key: str) -> None:
        client.put_object(bucket, key, BytesIO(data), len(data), content_type="application/octet-stream")

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, keys))
    return time.perf_counter() - t


def raw_delete(client, bucket: str, keys: list[str]) -> tuple[float, int]:
    from minio.deleteobjects import DeleteObject

    t = time.perf_counter()
    errors = list(client.remove_objects(bucket, (DeleteObject(k) for k in keys)))
    return time.perf_counter() - t, len(errors)


async def _noop_audit(*args: Any, **kw: Any) -> None:
    return None


async def sweep_side(index_path, s3, bucket: str) -> dict[str, Any]:
    """Run the product's sweep over every segment of the index; raises if the API is not there (yet)."""
    from nvr.config.retention import Rule, RuleSet
    from retention.legalholds import HoldManager
    from retention.store import RetentionStore
    from retention.sweep import Sweeper
    from storage.chainlock import ChainLocks
    from storage.index import Index
    from storage.objectstore import ObjectStore

    ep = s3.endpoint
    store = ObjectStore(endpoint=ep.endpoint, access_key=ep.access_key, secret_key=ep.secret_key, bucket=bucket,
                        secure=ep.secure)
    index = Index(index_path)
    try:
        rstore = RetentionStore(index)
        gate = asyncio.Lock()
        holds = HoldManager(store=store, rstore=rstore, audit=_noop_audit, gate=gate)
        sweeper = Sweeper(index=index, store=store, rstore=rstore, holds=holds, audit=_noop_audit,
                          node_id="bench", gate=gate, chain_locks=ChainLocks())
        rules = RuleSet(default=Rule(max_age=60.0, min_age=60.0))
        t = time.perf_counter()
        report = await sweeper.run(rules, trigger="bench")
        dt = time.perf_counter() - t
        return {"seconds": dt, "deleted": report.deleted_segments, "failed": len(report.failed),
                "pending_left": report.pending_left, "error": report.error, "batch_size": sweeper.batch_size}
    finally:
        index.close()
        store.close()


def run(mode: Mode) -> list[Row]:
    from bench.index_scale import build

    k = mode.pick(5_000, 100_000, smoke=500)
    work = fresh_dir("retention")
    log(f"retention: {k:,} segments + {k:,} raw objects of {OBJECT_BYTES} bytes")
    res: dict[str, Any] = {"objects": k, "object_bytes": OBJECT_BYTES}
    index_path = work / "data" / "index.sqlite3"
    index_path.parent.mkdir(parents=True)
    info = build(index_path, k)
    res["index"] = {"rows": info["rows"], "cameras": info["cameras"]}
    import sqlite3

    db = sqlite3.connect(index_path)
    keys = [r[0] for r in db.execute("SELECT object_key FROM segments")]
    db.close()
    with s3_server(work) as s3:
        client = s3.client()
        bucket = s3.make_bucket(f"ret-{os.getpid()}")
        raw_keys = [f"raw/{key}" for key in keys]
        res["put_seconds"] = put_all(client, bucket, keys + raw_keys)
        raw_s, raw_err = raw_delete(client, bucket, raw_keys)
        res["raw"] = {"seconds": raw_s, "deletes_per_s": k / raw_s, "errors": raw_err}
        try:
            sw = asyncio.run(sweep_side(index_path, s3, bucket))
            sw["deletes_per_s"] = sw["deleted"] / sw["seconds"] if sw["seconds"] else None
            left = sum(1 for _ in client.list_objects(bucket, prefix="cam", recursive=True))
            sw["objects_left"] = left
            res["sweep"] = sw
        except Exception as e:  # the sweep is not there (yet), or its API moved
            res["sweep"] = {"available": False, "reason": f"{type(e).__name__}: {e}"}
            log(f"retention: sweep not available: {type(e).__name__}: {e}")
    shutil.rmtree(work, ignore_errors=True)

    raw = res["raw"]
    sw = res["sweep"]
    if sw.get("available", True) and sw.get("deletes_per_s"):
        ratio = sw["deletes_per_s"] / raw["deletes_per_s"]
        res["ratio"] = ratio
        rows = [Row("7. Retention deletions", ratio, "deletions/s sweep ÷ raw multi-delete", "",
                    f"sweep {sw['deletes_per_s']:.0f}/s ({sw['deleted']:,} in {sw['seconds']:.1f} s, "
                    f"{sw['failed']} failed, {sw['objects_left']} objects left); raw {raw['deletes_per_s']:.0f}/s "
                    f"({k:,} in {raw['seconds']:.1f} s)")]
    else:
        rows = [Row("7. Retention deletions", None, "deletions/s sweep ÷ raw multi-delete", "",
                    f"sweep not available ({sw.get('reason', 'no deletions')}); raw multi-delete "
                    f"{raw['deletes_per_s']:.0f}/s ({k:,} in {raw['seconds']:.1f} s)")]
    save("retention", mode, rows, res)
    print_rows(rows)
    return rows
