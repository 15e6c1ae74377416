"""The cluster's tables: nodes, camera leases with their epochs, job leases, the nodes' signing keys.

Every time here is the database's clock (:data:`NOW`), never a node's: two
nodes whose clocks disagree still agree on when a lease expires. The rules
(who may claim what, when an epoch ends, what an append under an epoch may
carry) are numbered in docs/cluster.md; this module is where the database
enforces them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nvr.base.times import parse_rfc3339
from storage.errors import IndexConflict
from storage.index._engine import Engine, Tx

# The database's clock in epoch milliseconds, as an SQL expression (clock_timestamp: the time of the
# statement, not of the transaction's start, which is what a lease renewed late in a transaction needs).
NOW = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
}
# What a node listens to (PostgreSQL LISTEN): a lease was released, a camera or a rule changed.
CHANNEL = "nvr_cluster"


class Fenced(IndexConflict):
    """A record under a lease epoch that ended before the segment began, or that was never this node's."""


class NodeEvicted(IndexConflict):
    """This node's row belongs to another running instance now (the same node id started twice)."""


@dataclass(frozen=True)
class NodeRow:
    id: str
    instance: str
    address: str
    capacity: int
    version: str
    state: str
    keks: dict[str, str]  # KEK id → check value: which keys this node can decrypt with
    started_ms: int
    heartbeat_ms: int


@dataclass(frozen=True)
class LeaseRow:
    camera: str
    enabled: bool
    priority: int
    node_id: str | None
    epoch: int
    granted_ms: int
    renewed_ms: int
    expires_ms: int


@dataclass(frozen=True)
class Claimed:
    """A camera this node now holds: the new epoch, and who held the camera before (None: nobody)."""

    camera: str
    epoch: int
    previous_node: str | None


@dataclass(frozen=True)
class Tick:
    """One heartbeat: the database's time and the leases still held (camera → epoch) after renewing."""

    now_ms: int
    held: dict[str, int]


def lease_row_of(camera: str, config: Mapping[str, Any] | None) -> tuple[str, int, int]:
    """(camera, enabled, priority) of a registered camera's config table (None: deleted)."""
    enabled = config is not None and config.get("enabled", True) is not False
    priority = int((config or {}).get("priority", 0) or 0)
    return camera, int(enabled), priority


def sync_lease_in(tx: Tx, camera: str, config: Mapping[str, Any] | None) -> None:
    """Keep the camera's lease row in step with its registration (in the camera write's transaction).

    A disabled or deleted camera's lease can't be renewed any more: its holder stops recording it at
    its next heartbeat, the way every camera change reaches every node.
    """
    _, enabled, priority = lease_row_of(camera, config)
    tx.execute("INSERT INTO leases (camera, enabled, priority, node_id, epoch, granted_ms, renewed_ms, expires_ms) "
               "VALUES (?, ?, ?, NULL, 0, 0, 0, 0) ON CONFLICT (camera) DO UPDATE SET enabled = excluded.enabled, "
               "priority = excluded.priority", (camera, enabled, priority))
    notify_in(tx, f"camera {camera}")


def notify_in(tx: Tx, what: str) -> None:
    """Wake every node listening (PostgreSQL; nodes of one SQLite index are one node, nothing to wake)."""
    if tx.dialect == "postgresql":
        tx.execute("SELECT pg_notify(?, ?)", (CHANNEL, what))


def fence_problem_in(tx: Tx, record: Mapping[str, Any], skew_ms: int) -> str | None:
    """Why the index must refuse ``record`` under its lease epoch, or None when it may be appended.

    A record recorded under epoch E of its camera may land at any time later (a node that died
    ingests its spool when it returns), but only if E was this node's and the segment began
    before E ended (within the clock skew allowed between nodes): a node that kept recording
    after its lease ended is refused, so two nodes' footage of one camera never overlaps.
    """
    epoch = record.get("epoch")
    if epoch is None:
        return None
    camera, node = record["camera"], record.get("node")
    row = tx.one("SELECT node_id, ended_ms FROM lease_epochs WHERE camera = ? AND epoch = ?", (camera, epoch))
    if row is None:
        return f"camera {camera}: lease epoch {epoch} was never granted"
    holder, ended = row
    if holder != node:
        return f"camera {camera}: lease epoch {epoch} belongs to node {holder}, not {node}"
    try:
        start_ms = parse_rfc3339(record["start"])
    except (KeyError, TypeError, ValueError):
        start_ms = None
    if ended is not None and start_ms is not None and start_ms >= ended + skew_ms:
        return (f"camera {camera}: segment starts {(start_ms - ended) / 1000:.1f} s after lease epoch {epoch} "
                f"of node {node} ended")
    return None


class ClusterTables:
    """``index.cluster``: the statements of the lease protocol, each one transaction."""

    def __init__(self, engine: Engine):
        self._engine = engine

    @property
    def _now(self) -> str:
        return NOW[self._engine.dialect]

    def now_ms(self) -> int:
        """The database's clock."""
        return int(self._engine.scalar(f"SELECT {self._now}"))

    # ------------------------------------------------------------------ nodes

    def join(self, *, node_id: str, instance: str, address: str, capacity: int, version: str,
             keks: Mapping[str, str], stale_ms: int) -> int:
        """Register this process as node ``node_id``; returns the database time.

        Refused (:class:`NodeEvicted`) while another instance of the same id heartbeats: the same
        node started twice would record its cameras twice. Leases a dead instance of this node
        left behind are ended (they lapsed with its heartbeat).
        """
        now = self._now
        with self._engine.write() as tx:
            tx.lock(f"node:{node_id}")
            row = tx.one(f"SELECT instance, state, {now} - heartbeat_ms FROM nodes WHERE id = ?", (node_id,))
            if row is not None and row[0] != instance and row[1] != "left" and row[2] < stale_ms:
                raise NodeEvicted(f"node id {node_id!r} is in use by a running node (heartbeat "
                                  f"{row[2] / 1000:.1f} s ago): give every node its own [server] node_id")
            tx.execute(f"INSERT INTO nodes (id, instance, address, capacity, version, state, keks, started_ms, "
                       f"heartbeat_ms) VALUES (?, ?, ?, ?, ?, 'up', ?, {now}, {now}) ON CONFLICT (id) DO UPDATE SET "
                       "instance = excluded.instance, address = excluded.address, capacity = excluded.capacity, "
                       "version = excluded.version, state = 'up', keks = excluded.keks, "
                       "started_ms = excluded.started_ms, heartbeat_ms = excluded.heartbeat_ms",
                       (node_id, instance, address, capacity, version, json.dumps(dict(keks), sort_keys=True)))
            self._end_in(tx, tx.all("SELECT camera, epoch FROM leases WHERE node_id = ? AND expires_ms > 0",
                                    (node_id,)), node_id)
            return int(tx.scalar(f"SELECT {now}"))

    def tick(self, *, node_id: str, instance: str, ttl_ms: int) -> Tick:
        """Heartbeat and renew every lease this node still holds, in one transaction (one statement each).

        A lease already expired is not renewed: it may have been claimed elsewhere, and a claim
        starts a new epoch. Raises :class:`NodeEvicted` when another instance took this node's id.
        """
        now = self._now
        with self._engine.write() as tx:
            if tx.execute(f"UPDATE nodes SET heartbeat_ms = {now} WHERE id = ? AND instance = ? AND state <> 'left'",
                          (node_id, instance)) == 0:
                raise NodeEvicted(f"node {node_id}: its registration was taken over by another instance")
            rows = tx.all(f"UPDATE leases SET expires_ms = {now} + ?, renewed_ms = {now} WHERE node_id = ? "
                          f"AND enabled = 1 AND expires_ms > {now} RETURNING camera, epoch", (ttl_ms, node_id))
            return Tick(int(tx.scalar(f"SELECT {now}")), {c: int(e) for c, e in rows})

    def leave(self, *, node_id: str, instance: str) -> None:
        """A graceful stop: every lease of this node ended now, the node marked as left."""
        with self._engine.write() as tx:
            self._end_in(tx, tx.all("SELECT camera, epoch FROM leases WHERE node_id = ? AND expires_ms > 0",
                                    (node_id,)), node_id)
            tx.execute("UPDATE nodes SET state = 'left' WHERE id = ? AND instance = ?", (node_id, instance))
            tx.execute("UPDATE job_leases SET expires_ms = 0 WHERE node_id = ?", (node_id,))
            notify_in(tx, f"node {node_id} left")

    def nodes(self) -> list[NodeRow]:
        return [NodeRow(i, inst, a, int(c), v, st, json.loads(k), int(s), int(h)) for i, inst, a, c, v, st, k, s, h in
                self._engine.all("SELECT id, instance, address, capacity, version, state, keks, started_ms, "
                                 "heartbeat_ms FROM nodes ORDER BY id")]

    def live_capacity(self, stale_ms: int) -> list[tuple[str, int]]:
        """(node, capacity) of every node up and heartbeating within ``stale_ms``."""
        return [(n, int(c)) for n, c in self._engine.all(
            f"SELECT id, capacity FROM nodes WHERE state = 'up' AND {self._now} - heartbeat_ms < ? ORDER BY id",
            (stale_ms,))]

    # ------------------------------------------------------------------ camera leases

    def enabled_count(self) -> int:
        return int(self._engine.scalar("SELECT COUNT(*) FROM leases WHERE enabled = 1"))

    def claim(self, *, node_id: str, ttl_ms: int, limit: int) -> list[Claimed]:
        """Claim up to ``limit`` enabled cameras whose lease is free or expired, highest priority first.

        Each claim starts a new epoch of its camera (the fencing token every append under it
        states) and ends the previous epoch where it expired. Rows another node is claiming at the
        same moment are skipped (``SKIP LOCKED``), not waited for.
        """
        if limit <= 0:
            return []
        now = self._now
        skip = " FOR UPDATE SKIP LOCKED" if self._engine.dialect == "postgresql" else ""
        with self._engine.write() as tx:
            free = tx.all(f"SELECT camera, node_id, epoch, expires_ms FROM leases WHERE enabled = 1 AND "
                          f"expires_ms <= {now} ORDER BY priority DESC, camera LIMIT ?{skip}", (limit,))
            claimed = []
            for camera, previous, epoch, expired_ms in free:
                new = int(epoch) + 1
                if previous is not None and expired_ms > 0:
                    tx.execute("UPDATE lease_epochs SET ended_ms = ? WHERE camera = ? AND epoch = ? AND "
                               "ended_ms IS NULL", (expired_ms, camera, epoch))
                tx.execute(f"UPDATE leases SET node_id = ?, epoch = ?, granted_ms = {now}, renewed_ms = {now}, "
                           f"expires_ms = {now} + ? WHERE camera = ?", (node_id, new, ttl_ms, camera))
                tx.execute(f"INSERT INTO lease_epochs (camera, epoch, node_id, granted_ms) VALUES (?, ?, ?, {now})",
                           (camera, new, node_id))
                claimed.append(Claimed(camera, new, previous))
            return claimed

    def release(self, *, node_id: str, cameras: Iterable[tuple[str, int]]) -> int:
        """End the leases (camera, epoch) this node holds now, so another node may claim them at once."""
        with self._engine.write() as tx:
            n = self._end_in(tx, cameras, node_id)
            if n:
                notify_in(tx, f"released {n}")
            return n

    def _end_in(self, tx: Tx, cameras: Iterable[tuple[str, int]], node_id: str) -> int:
        now = self._now
        n = 0
        for camera, epoch in cameras:
            # An epoch ends when the lease ended: now, or when it expired if that was earlier.
            tx.execute(f"UPDATE lease_epochs SET ended_ms = (SELECT CASE WHEN expires_ms < {now} THEN expires_ms "
                       f"ELSE {now} END FROM leases WHERE camera = ?) WHERE camera = ? AND epoch = ? AND node_id = ? "
                       "AND ended_ms IS NULL", (camera, camera, epoch, node_id))
            n += tx.execute(f"UPDATE leases SET expires_ms = CASE WHEN expires_ms < {now} THEN expires_ms ELSE {now} "
                            "END WHERE camera = ? AND node_id = ? AND epoch = ?", (camera, node_id, epoch))
        return n

    def leases(self) -> list[LeaseRow]:
        return [LeaseRow(c, bool(e), int(p), n, int(ep), int(g), int(r), int(x)) for c, e, p, n, ep, g, r, x in
                self._engine.all("SELECT camera, enabled, priority, node_id, epoch, granted_ms, renewed_ms, "
                                 "expires_ms FROM leases ORDER BY camera")]

    def epochs(self, camera: str) -> list[tuple[int, str, int, int | None]]:
        """(epoch, node, granted_ms, ended_ms) of every lease ``camera`` ever had, oldest first."""
        return [(int(e), n, int(g), d) for e, n, g, d in self._engine.all(
            "SELECT epoch, node_id, granted_ms, ended_ms FROM lease_epochs WHERE camera = ? ORDER BY epoch",
            (camera,))]

    def fence_problem(self, record: Mapping[str, Any], skew_ms: int) -> str | None:
        """:func:`fence_problem_in` as a read: checked before a segment is PUT, so a refused one never is."""
        with self._engine.read() as tx:
            return fence_problem_in(tx, record, skew_ms)

    # ------------------------------------------------------------------ job leases

    def hold_job(self, *, name: str, node_id: str, ttl_ms: int) -> bool:
        """Claim or renew the cluster-wide job ``name`` (the retention sweep); True while this node holds it."""
        now = self._now
        with self._engine.write() as tx:
            tx.execute("INSERT INTO job_leases (name, node_id, epoch, expires_ms) VALUES (?, NULL, 0, 0) "
                       "ON CONFLICT (name) DO NOTHING", (name,))
            return tx.execute(f"UPDATE job_leases SET epoch = CASE WHEN node_id = ? AND expires_ms > {now} THEN epoch "
                              f"ELSE epoch + 1 END, node_id = ?, expires_ms = {now} + ? WHERE name = ? AND "
                              f"(node_id = ? OR expires_ms <= {now})",
                              (node_id, node_id, ttl_ms, name, node_id)) > 0

    def jobs(self) -> list[tuple[str, str | None, int, int]]:
        """(name, node, epoch, expires_ms) of every job lease."""
        return [(n, h, int(e), int(x)) for n, h, e, x in
                self._engine.all("SELECT name, node_id, epoch, expires_ms FROM job_leases ORDER BY name")]

    # ------------------------------------------------------------------ what changed

    def catalog_stamp(self) -> tuple[Any, ...]:
        """Changes whenever a camera or the retention rules change (polled at each heartbeat)."""
        return tuple(self._engine.one(
            "SELECT (SELECT COUNT(*) FROM cameras), (SELECT COALESCE(MAX(updated_ms), 0) FROM cameras), "
            "(SELECT COALESCE(MAX(version), 0) FROM retention_rules)") or ())

    # ------------------------------------------------------------------ signing keys

    def add_key(self, *, key_id: str, node_id: str, public_pem: str, fingerprint: str) -> bool:
        """Enroll a node's signing public key (never replaced once enrolled); True when it is new."""
        with self._engine.write() as tx:
            return tx.execute(f"INSERT INTO cluster_keys (key_id, node_id, public_pem, fingerprint, added_ms) VALUES "
                              f"(?, ?, ?, ?, {self._now}) ON CONFLICT (key_id) DO NOTHING",
                              (key_id, node_id, public_pem, fingerprint)) > 0

    def keys(self) -> list[tuple[str, str, str, str, int]]:
        """(key_id, node, public PEM, fingerprint, added_ms) of every enrolled key."""
        return [tuple(r) for r in self._engine.all(  # type: ignore[misc]
            "SELECT key_id, node_id, public_pem, fingerprint, added_ms FROM cluster_keys ORDER BY key_id")]

