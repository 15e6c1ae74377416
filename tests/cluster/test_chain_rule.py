"""The handover chain rule as ``nvr verify`` checks it: epochs are their nodes', epochs never overlap in time."""

from __future__ import annotations

from nvr.custody.verify.gather import CHECK_EPOCH, epoch_problems


def rec(seq, start, end, epoch, node):
    return {"type": "segment", "seq": seq, "start": f"2026-12-01T10:00:{start:02d}Z",
            "end": f"2026-12-01T10:00:{end:02d}Z", "epoch": epoch, "node": node}


def test_a_late_record_placed_by_its_own_time_is_fine():
    # Node a died at :04; b recorded from :10; a's spool landed afterwards (seq 3, earlier time).
    records = {0: rec(0, 0, 2, 1, "a"), 1: rec(1, 10, 12, 2, "b"), 2: rec(2, 12, 14, 2, "b"), 3: rec(3, 2, 4, 1, "a")}
    assert epoch_problems("c", records, {1: "a", 2: "b"}) == []


def test_two_nodes_recording_at_once_is_found():
    records = {0: rec(0, 0, 10, 1, "a"), 1: rec(1, 4, 6, 2, "b")}
    (p,) = epoch_problems("c", records, {1: "a", 2: "b"})
    assert p.check == CHECK_EPOCH and "overlap by 6.0 s" in p.detail


def test_an_epoch_claimed_by_another_node_is_found():
    (p,) = epoch_problems("c", {0: rec(0, 0, 2, 1, "b")}, {1: "a"})
    assert "granted that epoch to a" in p.detail


def test_records_outside_a_cluster_are_not_checked():
    records = {0: {"type": "segment", "seq": 0, "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T10:00:09Z"},
               1: {"type": "segment", "seq": 1, "start": "2026-12-01T10:00:01Z", "end": "2026-12-01T10:00:03Z"}}
    assert epoch_problems("c", records, {}) == []
