"""The pure rules of the lease protocol: fair shares and the trust window."""

from __future__ import annotations

import pytest

from nvr.cluster.share import TrustWindow, fair_share


@pytest.mark.parametrize(("cameras", "nodes", "me", "want"), [
    (6, [("a", 85), ("b", 85), ("c", 85)], "a", 2),
    (7, [("a", 85), ("b", 85), ("c", 85)], "a", 3),  # the remainder goes to the first ids
    (7, [("a", 85), ("b", 85), ("c", 85)], "c", 2),
    (10, [("a", 2), ("b", 85)], "b", 8),  # what a capped node can't take goes to the others
    (10, [("a", 2), ("b", 3)], "b", 3),  # more cameras than capacity: every node full
    (0, [("a", 85)], "a", 0),
    (5, [], "a", 0),  # not among the live nodes with capacity 0: nothing
    (5, [("b", 85)], "a", 0),
    (1000, [(f"n{i:02d}", 120) for i in range(10)], "n09", 100),
])
def test_fair_share(cameras, nodes, me, want):
    assert fair_share(cameras, nodes, me) == want


def test_shares_of_all_nodes_add_up_to_what_they_can_take():
    nodes = [("a", 3), ("b", 50), ("c", 7), ("d", 50)]
    for cameras in range(0, 120):
        total = sum(fair_share(cameras, nodes, n) for n, _ in nodes)
        assert total == min(cameras, sum(c for _, c in nodes))


def test_the_trust_window_ends_a_margin_before_the_lease_can_expire():
    w = TrustWindow(ttl=15.0, margin=3.0)
    assert not w.trusted(0.0) and w.deadline() is None
    w.renewed(100.0)
    assert w.deadline() == 112.0
    assert w.trusted(111.9) and not w.trusted(112.0)
    w.renewed(90.0)  # a late answer to an older renewal never moves the window back
    assert w.deadline() == 112.0
    w.lost()
    assert not w.trusted(100.0)
