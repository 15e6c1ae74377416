"""The cluster as an operator sees it, from the shared index: nodes, their cameras and leases, the jobs."""

from __future__ import annotations

from typing import Any

from nvr.base.times import ms_to_rfc3339
from storage.index import Index


def cluster_view(index: Index, *, ttl_ms: int | None = None) -> dict[str, Any]:
    """Every node with its cameras (epoch, lease age, time left), the job leases and unassigned cameras (blocking).

    A node is ``live`` when it is up and heartbeat within ``ttl_ms`` (default: the longest a
    lease can last unrenewed, 15 s). Ages are in seconds, on the database's clock.
    """
    ttl_ms = ttl_ms or 15_000
    now = index.cluster.now_ms()
    leases = index.cluster.leases()
    by_node: dict[str, list[dict[str, Any]]] = {}
    unassigned = []
    for row in leases:
        if not row.enabled:
            continue
        if row.node_id is None or row.expires_ms <= now:
            unassigned.append(row.camera)
            continue
        by_node.setdefault(row.node_id, []).append({
            "camera": row.camera, "epoch": row.epoch, "priority": row.priority,
            "held_seconds": round((now - row.granted_ms) / 1000, 1),
            "renewed_seconds_ago": round((now - row.renewed_ms) / 1000, 1),
            "expires_in_seconds": round((row.expires_ms - now) / 1000, 1),
        })
    nodes = []
    for n in index.cluster.nodes():
        age = now - n.heartbeat_ms
        nodes.append({
            "id": n.id, "address": n.address, "capacity": n.capacity, "version": n.version, "state": n.state,
            "live": n.state == "up" and age < ttl_ms, "started": ms_to_rfc3339(n.started_ms),
            "last_heartbeat": ms_to_rfc3339(n.heartbeat_ms), "heartbeat_seconds_ago": round(age / 1000, 1),
            "kek_ids": sorted(n.keks), "cameras": by_node.get(n.id, []),
        })
    jobs = [{"name": name, "node": node if expires > now else None, "epoch": epoch,
             "expires_in_seconds": round((expires - now) / 1000, 1) if expires > now else None}
            for name, node, epoch, expires in index.cluster.jobs()]
    keys = [{"key_id": k, "node": node, "fingerprint_sha256": fp, "added": ms_to_rfc3339(added)}
            for k, node, _, fp, added in index.cluster.keys()]
    return {"now": ms_to_rfc3339(now), "nodes": nodes, "unassigned": sorted(unassigned), "jobs": jobs,
            "signing_keys": keys}


def describe(view: dict[str, Any]) -> list[str]:
    """The view as lines for a terminal (``nvr cluster status``)."""
    lines = [f"cluster at {view['now']} (database clock)"]
    for n in view["nodes"]:
        state = "live" if n["live"] else n["state"] if n["state"] != "up" else "silent"
        lines.append(f"node {n['id']}: {state}, {len(n['cameras'])}/{n['capacity']} cameras, heartbeat "
                     f"{n['heartbeat_seconds_ago']:.1f} s ago, {n['address']}, version {n['version']}")
        for c in n["cameras"]:
            lines.append(f"  {c['camera']}: epoch {c['epoch']}, held {c['held_seconds']:.0f} s, renewed "
                         f"{c['renewed_seconds_ago']:.1f} s ago, expires in {c['expires_in_seconds']:.1f} s")
    if view["unassigned"]:
        lines.append(f"unassigned: {', '.join(view['unassigned'])}")
    for j in view["jobs"]:
        lines.append(f"job {j['name']}: {'node ' + j['node'] if j['node'] else 'nobody'} (epoch {j['epoch']})")
    for k in view["signing_keys"]:
        lines.append(f"signing key {k['key_id']} of node {k['node']}: SHA-256 {k['fingerprint_sha256']}")
    return lines
