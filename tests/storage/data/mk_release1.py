"""Make an index with release 1 (git d14f15c) code, every table with rows, as a SQL dump (release1-index.sql)."""
# ruff: noqa: I001, F401, E402
import sqlite3
import sys
import tempfile
from pathlib import Path
# Run from a checkout of release 1: cd <checkout of d14f15c> && python <this file> <out.sql>
from storage.index import Index
from storage.ledger import ChainHead, segment_record, tombstone_record, record_hash
from retention.store import RetentionStore
from nvr.config.retention import rules_from_dict
from nvr.custody.exports import table
from nvr.custody.checkpoint.store import ensure_tables
from storage.ledger import canonical_json

d = Path(tempfile.mkdtemp())
index = Index(d / "index.sqlite3")
T = 1_764_547_200_000  # 2025-12-01T00:00:00Z
from nvr.base.times import ms_to_rfc3339
for cam in ("gate", "yard"):
    for n in range(4):
        head = index.chain_head(cam)
        s, e = T + n * 2000, T + (n + 1) * 2000
        rec = segment_record(head=head, start=ms_to_rfc3339(s), end=ms_to_rfc3339(e), partial=False, size=1000 + n,
                             sha256=f"{n:064x}", object_key=f"segments/{cam}/2025/12/01/r1-{n:06d}.mp4",
                             object_size=1100 + n, object_sha256=f"{n + 100:064x}", key_id="20251201T000000Z-00000000",
                             node="old-node")
        index.insert_segment(rec, version_id=None, skeleton=b"skel" if n == 0 else None)
# gate:0 deleted by retention: a tombstone, and its row deleted
row = index.segment("gate:0")
tomb = tombstone_record(head=index.chain_head("gate"), segment_seq=0, segment_record_hash=row.record_hash,
                        object_key=row.object_key, rule="max_age", deleted_at=ms_to_rfc3339(T + 60_000), node="old-node")
index.append_record(tomb)
with index.transaction() as db:
    db.execute("UPDATE segments SET state = 'deleted' WHERE id = 'gate:0'")
rs = RetentionStore(index)
rs.import_config_rules(rules_from_dict({"default": {"max_age": "30d"}}), now_ms=T)
rs.add_hold(case_id="CASE-1", cameras=["yard"], start_ms=T, end_ms=T + 4000, reason="court", expires_ms=None,
            actor="officer", now_ms=T)
run = rs.start_run("schedule", T)
rs.finish_run(run, {"deleted": 1}, T)
table.ensure(index)
table.insert(index, eid="exp-1", cameras=["yard"], start_ms=T, end_ms=T + 8000, case_id="CASE-1", reason="court",
             actor=("officer", "evidence"), now=T)
ensure_tables(index)
with index.transaction() as db:
    db.execute("INSERT INTO checkpoints (camera, seq, head, time_ms, key_id, body, signature) VALUES (?,?,?,?,?,?,?)",
               ("yard", 3, index.chain_head("yard").hash, T + 10_000, "k", '{"node":"old-node"}', "00"))
index.add_token(name="wall", role="viewer", cameras=["gate"], token_sha256="c" * 64)
index.put_camera("gate", {"id": "gate", "url": "rtsp://cam/gate"}, source="api")
index.append_audit(actor="officer", role="evidence", action="hold.place", target="hold-1", detail={"case": "CASE-1"})
index.close()
db = sqlite3.connect(d / "index.sqlite3")
out = Path(sys.argv[1])
out.write_text("-- An index made by nvr release 1 (git d14f15c) with tests/storage/data/mk_release1.py's steps;\n"
               "-- tests/storage/test_migrations.py upgrades it in place.\n" + "\n".join(db.iterdump()) + "\n")
print(out, out.stat().st_size)
