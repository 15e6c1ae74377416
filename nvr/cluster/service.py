"""This node's part in the cluster: join, heartbeat and renew, claim and balance cameras, drain on stop.

The protocol and its invariants are in docs/cluster.md; the statements are in
``storage/index/cluster.py``. One loop does everything, every third of the
lease TTL or at once when another node announces a change (LISTEN):

1. heartbeat and renew every held lease in one transaction, bounded by the
   trust window: when the database doesn't answer before the window ends,
   every recorder is stopped *before* the leases can expire;
2. leases the renewal didn't return (disabled, deleted, expired) stop their
   recorders; held leases without a recorder (after a late renewal) start one;
3. camera and retention changes another node made are taken up;
4. the node claims free or expired cameras up to its fair share, or releases
   what is above it (at a segment's end: the recorder closes its segment);
5. the cluster-wide retention sweep's lease is claimed or renewed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nvr.base.events import EventSink, no_event
from nvr.base.times import ms_to_rfc3339
from nvr.cluster.keys import KeySync
from nvr.cluster.share import TrustWindow, fair_share
from nvr.recording.registry import CameraRegistry
from storage.errors import IndexError_
from storage.index import Index
from storage.index.cluster import Claimed, NodeEvicted, Tick

log = logging.getLogger("nvr.cluster")

RETENTION_JOB = "retention"
# How long a start waits for a previous instance of this node (killed) to stop heartbeating.
JOIN_WAIT_FACTOR = 1.5


@dataclass(frozen=True)
class ClusterSettings:
    node_id: str
    address: str
    capacity: int
    ttl: float
    max_clock_skew: float
    version: str

    @property
    def interval(self) -> float:
        """Renewal period: a third of the TTL, so two renewals may fail before the trust window ends."""
        return self.ttl / 3

    @property
    def margin(self) -> float:
        """What the trust window keeps for stopping ffmpeg before the lease can expire."""
        return max(1.0, self.ttl / 5)

    @property
    def ttl_ms(self) -> int:
        return round(self.ttl * 1000)


class ClusterService:
    """Leases → recorders for this node; ``holds(camera)`` answers the registry."""

    def __init__(self, *, index: Index, settings: ClusterSettings, keyring: Any, store: Any,
                 on_event: EventSink = no_event, on_change: Callable[[], None] | None = None,
                 on_catalog_change: Callable[[], Awaitable[None]] | None = None):
        self.index = index
        self.settings = settings
        self.keyring = keyring
        self.store = store
        self._on_event = on_event
        self._events: set[asyncio.Task] = set()
        self.on_change = on_change or (lambda: None)
        self.on_catalog_change = on_catalog_change
        self.registry: CameraRegistry | None = None
        self.keys = KeySync(index, store, keyring, settings.node_id, self.on_event)
        self.instance = uuid.uuid4().hex
        self.trust = TrustWindow(settings.ttl, settings.margin)
        self.held: dict[str, int] = {}  # camera → epoch of the leases this node holds
        self.sweeper = False  # holds the cluster-wide retention sweep's lease
        self.problem: str | None = None  # why the leases can't be renewed now
        self.kek_problem: str | None = None
        self.counters: Counter[str] = Counter()  # claims, handovers, releases, losses, renew failures
        self.last_tick_ms: int | None = None
        self.live_nodes = 0  # nodes up and heartbeating, as of the last round
        self.enabled_cameras = 0
        self._wake = asyncio.Event()
        self._stamp: tuple | None = None
        self._renewing: asyncio.Future | None = None
        self._listen_stop = threading.Event()
        self._guard_stop = threading.Event()
        self._listener: asyncio.Future | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._joined = False
        self._to_sign: set[str] = set()

    async def on_event(self, action: str, target: str, detail: dict[str, Any]) -> None:
        """Audit in the background: an audit write that waits (the index slow, its lock held by a node cut
        off mid-transaction) must never hold up a renewal or a stop the trust window demands."""
        task = asyncio.create_task(self._on_event(action, target, detail), name=f"cluster-audit:{action}")
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    def start_guard(self) -> None:
        """A thread that interrupts every ffmpeg at the trust window's end, whatever the event loop is doing.

        The loop's own enforcement (:meth:`watchdog`) closes the recorders properly; this is the
        bound when the loop or its executor is stuck behind an index that doesn't answer. SIGINT
        makes ffmpeg finish its segment and exit; the recorders' gates keep new runs from starting.
        """
        self._guard_stop.clear()

        def body() -> None:
            signalled: set[int] = set()
            while not self._guard_stop.wait(0.1):
                if self.trust.trusted(time.monotonic()):
                    signalled.clear()
                    continue
                if self.registry is None:
                    continue
                for pid in self.registry.supervisor.pids():
                    if pid not in signalled:
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(pid, signal.SIGINT)
                        signalled.add(pid)

        threading.Thread(target=body, name="nvr-trust-guard", daemon=True).start()

    async def stop_guard(self) -> None:
        self._guard_stop.set()

    async def watchdog(self) -> None:
        """Stop every recorder at the trust window's end even while a round is stuck (owned like the loop)."""
        while True:
            deadline = self.trust.deadline()
            now = time.monotonic()
            if self.held and deadline is not None and now >= deadline:
                await self._enforce_trust()
            await asyncio.sleep(min(0.25, max(0.01, deadline - now)) if deadline is not None else 0.25)

    def holds(self, camera: str) -> int | None:
        """The epoch under which this node may record ``camera`` now, None when it may not."""
        return self.held.get(camera) if self.trust.trusted(time.monotonic()) else None

    # ------------------------------------------------------------------ start and stop

    async def join(self) -> None:
        """Register this node (waiting out a killed predecessor's last heartbeat) and its keys."""
        s = self.settings
        deadline = time.monotonic() + s.ttl * JOIN_WAIT_FACTOR
        keks = await asyncio.to_thread(self.keyring.kek_checks)
        while True:
            try:
                await asyncio.to_thread(self.index.cluster.join, node_id=s.node_id, instance=self.instance,
                                        address=s.address, capacity=s.capacity, version=s.version, keks=keks,
                                        stale_ms=s.ttl_ms)
                break
            except NodeEvicted as e:
                if time.monotonic() > deadline:
                    raise
                log.warning("%s; waiting for its heartbeat to lapse", e)
                await asyncio.sleep(s.interval)
        self._joined = True
        self.kek_problem = await asyncio.to_thread(self._check_keks, keks)
        if self.kek_problem:
            log.error("cluster: %s", self.kek_problem)
            await self.on_event("cluster.kek_mismatch", s.node_id, {"error": self.kek_problem})
        log.info("cluster: node %s joined (capacity %d cameras, lease TTL %g s, address %s)", s.node_id,
                 s.capacity, s.ttl, s.address)
        await self.on_event("cluster.join", s.node_id, {"address": s.address, "capacity": s.capacity,
                                                         "version": s.version})

    def _check_keks(self, mine: dict[str, str]) -> str | None:
        """Whether every node can decrypt what every other node stores (same KEKs, same ids)."""
        for node in self.index.cluster.nodes():
            if node.id == self.settings.node_id or node.state == "left":
                continue
            for kid, check in node.keks.items():
                if kid in mine and mine[kid] != check:
                    return (f"KEK {kid} of node {node.id} is not this node's KEK {kid}: the nodes of a cluster "
                            "share one keyring's kek/ directory (docs/cluster.md)")
                if kid not in mine:
                    return (f"node {node.id} encrypts with KEK {kid}, which this node lacks: footage it stored "
                            f"can't be served here; copy keyring/kek/{kid}.key from it (docs/cluster.md)")
        return None

    def listen_forever(self) -> Awaitable[None]:
        """The LISTEN thread (its own, not an executor's: it never returns), as an awaitable of its end."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._listen_stop.clear()
        done: asyncio.Future = loop.create_future()

        def body() -> None:
            try:
                self.index.listen(self._notified, self._listen_stop)
            except BaseException as e:  # reported through the future: the owner restarts the listener
                loop.call_soon_threadsafe(lambda e=e: done.done() or done.set_exception(e))
            else:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        threading.Thread(target=body, name="nvr-cluster-listen", daemon=True).start()
        return done

    def _notified(self, payload: str) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def wake(self) -> None:
        """Run the loop's next round now (a camera was added or changed on this node)."""
        self._wake.set()

    async def stop_listening(self) -> None:
        self._listen_stop.set()

    async def run(self) -> None:
        """The heartbeat loop (owned by the wiring's task owner: restarted if it ever raises)."""
        while True:
            await self.round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_wait())
            self._wake.clear()

    def _next_wait(self) -> float:
        wait = self.settings.interval
        deadline = self.trust.deadline()
        if self.held and deadline is not None:
            wait = min(wait, max(0.05, deadline - time.monotonic()))
        return wait

    async def drain(self) -> None:
        """Graceful stop: every recorder closes its segment, then the leases are released for others."""
        if not self._joined:
            return
        held = dict(self.held)
        await self._stop_recorders(held, grace=self.settings.interval / 1.5)
        self.held.clear()
        try:
            await asyncio.to_thread(self.index.cluster.leave, node_id=self.settings.node_id, instance=self.instance)
            log.info("cluster: node %s left, %d camera lease(s) released", self.settings.node_id, len(held))
            await self.on_event("cluster.leave", self.settings.node_id, {"released": sorted(held)})
        except IndexError_ as e:
            log.error("cluster: can't release the leases at stop (%s); they lapse in %g s", e, self.settings.ttl)
        self._joined = False

    # ------------------------------------------------------------------ one round

    async def round(self) -> None:
        s = self.settings
        sent = time.monotonic()
        tick = await self._renew()
        if tick is None:
            await self._enforce_trust()
            return
        if not self.trust.trusted(time.monotonic()):
            # Heard back too late to act on it (the renewal was sent before the window ended): the
            # next round's renewal, sent now, decides.
            await self._enforce_trust()
            self._wake.set()
            return
        self.last_tick_ms = tick.now_ms
        await self._reconcile(tick)
        try:
            stamp = await asyncio.to_thread(self.index.cluster.catalog_stamp)
            if self._stamp is not None and stamp != self._stamp and self.on_catalog_change is not None:
                await self.on_catalog_change()
            self._stamp = stamp
            await self._balance(sent)
            self.sweeper = await asyncio.to_thread(self.index.cluster.hold_job, name=RETENTION_JOB,
                                                   node_id=s.node_id, ttl_ms=s.ttl_ms)
            await self.keys.sync()
        except IndexError_ as e:
            log.warning("cluster: round incomplete: %s", e)
        self.on_change()

    async def _renew(self) -> Tick | None:
        """Heartbeat and renew, waiting no longer than the trust window allows; None when it failed."""
        s = self.settings
        sent = time.monotonic()
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.ensure_future(asyncio.to_thread(
                self.index.cluster.tick, node_id=s.node_id, instance=self.instance, ttl_ms=s.ttl_ms))
            self._renewing_sent = sent
        deadline = self.trust.deadline()
        timeout = s.interval if not self.held or deadline is None else max(0.05, deadline - time.monotonic())
        try:
            tick = await asyncio.wait_for(asyncio.shield(self._renewing), timeout)
        except TimeoutError:
            await self._renew_failed("the index did not answer the lease renewal in time")
            return None
        except NodeEvicted as e:
            await self._renew_failed(str(e))
            self._joined = False
            await self.join()  # our row was taken over: join again (refused while the other one runs)
            return None
        except IndexError_ as e:
            await self._renew_failed(str(e))
            return None
        self.trust.renewed(self._renewing_sent)
        if self.problem is not None:
            log.warning("cluster: leases renewed again (%s)", self.problem)
            await self.on_event("cluster.renew_restored", s.node_id, {"after": self.problem})
            self.problem = None
        return tick

    async def _renew_failed(self, why: str) -> None:
        self.counters["renew_failures"] += 1
        if self.problem != why:
            log.error("cluster: can't renew leases: %s", why)
            await self.on_event("cluster.renew_failed", self.settings.node_id, {"error": why,
                                                                                 "held": len(self.held)})
        self.problem = why

    async def _enforce_trust(self) -> None:
        """Past the trust window: stop every recorder now, so none records past its lease's end."""
        now = time.monotonic()
        if self.trust.trusted(now) or not self.held:
            return
        lost = dict(self.held)
        self.held.clear()
        self.trust.lost()
        self.counters["losses"] += len(lost)
        log.error("cluster: lease renewal failed for longer than the trust window; stopped recording %d "
                  "camera(s): %s", len(lost), ", ".join(sorted(lost)))
        await self._stop_recorders(lost, grace=self.settings.margin / 3)
        await self.on_event("cluster.leases_lost", self.settings.node_id, {
            "cameras": sorted(lost), "reason": self.problem or "renewal late"})

    async def _stop_recorders(self, cameras: dict[str, int], *, grace: float | None = None) -> None:
        if self.registry is None or not cameras:
            return
        await asyncio.gather(*(self.registry.unrecord(c, grace=grace) for c in cameras))

    async def _reconcile(self, tick: Tick) -> None:
        """Recorders follow the leases the renewal returned."""
        gone = {c: e for c, e in self.held.items() if tick.held.get(c) != e}
        if gone:
            self.counters["losses"] += len(gone)
            for c in gone:
                self.held.pop(c, None)
            log.warning("cluster: lease(s) no longer held, stopped recording: %s", ", ".join(sorted(gone)))
            await self._stop_recorders(gone, grace=self.settings.margin / 3)
            await self.on_event("cluster.leases_lost", self.settings.node_id,
                                {"cameras": sorted(gone), "reason": "not renewed (disabled, deleted or expired)"})
        for camera, epoch in tick.held.items():
            self.held[camera] = epoch
        await self._ensure_recording()

    async def _ensure_recording(self) -> None:
        if self.registry is None:
            return
        recording = self.registry.supervisor.recording()
        for camera, epoch in list(self.held.items()):
            if recording.get(camera) != epoch:
                await self.registry.record(camera, epoch)

    async def _balance(self, sent: float) -> None:
        s = self.settings
        live = await asyncio.to_thread(self.index.cluster.live_capacity, s.ttl_ms)
        enabled = await asyncio.to_thread(self.index.cluster.enabled_count)
        self.live_nodes, self.enabled_cameras = len(live), enabled
        target = fair_share(enabled, live, s.node_id) if self.kek_problem is None else 0
        if len(self.held) < target:
            claimed = await asyncio.to_thread(self.index.cluster.claim, node_id=s.node_id, ttl_ms=s.ttl_ms,
                                              limit=target - len(self.held))
            self.trust.renewed(sent)  # a claim extends no lease beyond this round's renewal: same window
            for c in claimed:
                await self._claimed(c)
        elif len(self.held) > target:
            await self._release(len(self.held) - target)

    async def _claimed(self, c: Claimed) -> None:
        self.held[c.camera] = c.epoch
        self._to_sign.add(c.camera)
        self.counters["claims"] += 1
        handover = c.previous_node is not None and c.previous_node != self.settings.node_id
        if handover:
            self.counters["handovers"] += 1
        started = self.registry is not None and await self.registry.record(c.camera, c.epoch)
        log.info("cluster: claimed camera %s (epoch %d%s)%s", c.camera, c.epoch,
                 f", from node {c.previous_node}" if handover else "", "" if started else "; not recording it")
        await self.on_event("cluster.lease_claimed", c.camera, {
            "node": self.settings.node_id, "epoch": c.epoch, "previous_node": c.previous_node})

    async def _release(self, count: int) -> None:
        """Hand ``count`` cameras to other nodes: the lowest in (priority, id) order, each at a segment's end."""
        prio = {c.id: c.priority for c in self.registry.all()} if self.registry is not None else {}
        give = sorted(self.held, key=lambda c: (prio.get(c, 0), c))[:count]
        out = {c: self.held.pop(c) for c in give}
        # Each closes its segment: the camera moves between two segments. Bounded, so renewals go on.
        await self._stop_recorders(out, grace=self.settings.interval / 1.5)
        n = await asyncio.to_thread(self.index.cluster.release, node_id=self.settings.node_id,
                                    cameras=list(out.items()))
        self.counters["releases"] += n
        log.info("cluster: released %s to rebalance", ", ".join(sorted(out)))
        await self.on_event("cluster.lease_released", self.settings.node_id, {"cameras": sorted(out)})

    # ------------------------------------------------------------------ checkpoints

    def note_ingested(self, camera: str) -> None:
        """This node appended to ``camera``'s chain (its next checkpoint round signs it)."""
        self._to_sign.add(camera)

    async def checkpoint_cameras(self, cameras: list[str]) -> list[str]:
        """The chains this node signs: those it held or appended to since the last round, and, on the node
        holding the sweep's lease, every chain no node holds (a signature covers its whole head, so one
        signer per chain is enough)."""
        mine = set(self.held) | self._to_sign
        self._to_sign = set(self.held)
        unheld: set[str] = set()
        if self.sweeper:
            now = self.last_tick_ms or 0
            held_anywhere = {row.camera for row in await asyncio.to_thread(self.index.cluster.leases)
                             if row.expires_ms > now}
            unheld = set(cameras) - held_anywhere
        return [c for c in cameras if c in mine or c in unheld]

    # ------------------------------------------------------------------ status

    def alarm(self) -> str | None:
        if self.kek_problem:
            return f"cluster: {self.kek_problem}"
        if self.problem:
            return f"cluster: can't renew camera leases: {self.problem}"
        return None

    def status(self) -> dict[str, Any]:
        return {
            "node": self.settings.node_id, "instance": self.instance, "address": self.settings.address,
            "lease_ttl_seconds": self.settings.ttl, "cameras": sorted(self.held),
            "retention_sweeper": self.sweeper, "problem": self.problem, "live_nodes": self.live_nodes,
            "enabled_cameras": self.enabled_cameras,
            "last_heartbeat": ms_to_rfc3339(self.last_tick_ms) if self.last_tick_ms else None,
            "counters": dict(self.counters),
        }
