"""``[cluster]``: this node's part in a cluster of nodes sharing one PostgreSQL index and one bucket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nvr.config.tables import Section


@dataclass(frozen=True)
class ClusterConfig:
    """What ``[cluster]`` says (docs/cluster.md)."""

    enabled: bool = False
    lease_ttl: float = 15.0  # seconds a camera lease lasts unrenewed (renewed every third of it)
    capacity: int = 85  # cameras this node records at most
    address: str = ""  # how the other nodes and operators reach this node's API; default: its listen address
    max_clock_skew: float = 2.0  # how far nodes' wall clocks may disagree (NTP); bounds the fencing check



def parse_cluster(table: Any, source: str | None, *, index_url: str | None, node_id: str) -> ClusterConfig:
    """``[cluster]``, checked against the index and the node id it needs."""
    cl = Section(table, "cluster", source)
    cluster = ClusterConfig(
        enabled=cl.take("enabled", bool, False),
        lease_ttl=cl.duration("lease_ttl", 15.0, minimum=3.0, maximum=600.0),
        capacity=cl.count("capacity", 85),
        address=cl.take("address", str, ""),
        max_clock_skew=cl.duration("max_clock_skew", 2.0, minimum=0.0, maximum=60.0),
    )
    if cluster.enabled and index_url is None:
        raise cl.error("enabled", "a cluster shares one PostgreSQL index: set [index] url = \"postgresql://…\"")
    if cluster.enabled and not node_id:
        raise cl.error("enabled", "each node of a cluster needs its own name: set [server] node_id")
    if cluster.enabled and cluster.capacity < 1:
        raise cl.error("capacity", "must be at least 1")
    if cluster.address and not cluster.address.startswith(("http://", "https://")):
        raise cl.error("address", f"must be an http:// or https:// URL, got {cluster.address!r}")
    cl.finish()
    return cluster
