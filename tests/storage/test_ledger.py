"""The ledger chain: canonical JSON anyone can recompute, links that catch an edit, removal or reorder."""

import hashlib
import json

from storage.ledger import (
    GENESIS,
    ChainHead,
    canonical_json,
    record_hash,
    segment_record,
    verify_chain,
)


def test_canonical_json_and_record_hash_are_reproducible_with_plain_json():
    rec = {"b": 1, "a": "é", "c": [1, {"y": 2, "x": 1}]}
    assert canonical_json(rec) == '{"a":"é","b":1,"c":[1,{"x":1,"y":2}]}'.encode()
    expected = hashlib.sha256(json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    assert record_hash(rec) == expected


def _chain(n, camera="cam1"):
    head, out = ChainHead(camera), []
    for i in range(n):
        rec = segment_record(head=head, start=f"t{i}", end=f"t{i + 1}", partial=False, size=i, sha256="a" * 64,
                             object_key=f"k{i}", object_size=i + 60, object_sha256="b" * 64, key_id="k1", node="n")
        out.append(rec)
        head = ChainHead(camera, rec["seq"], record_hash(rec))
    return out


def test_chain_links_and_detects_edit_removal_reorder():
    recs = _chain(5)
    assert recs[0]["prev"] == GENESIS and recs[0]["seq"] == 0
    assert verify_chain("cam1", recs) == []
    edited = [dict(r) for r in recs]
    edited[2]["size"] = 999
    assert [b.seq for b in verify_chain("cam1", edited)] == [3]
    assert verify_chain("cam1", recs[:2] + recs[3:])
    assert verify_chain("cam1", [recs[1], recs[0]] + recs[2:])
    assert verify_chain("cam2", recs)
