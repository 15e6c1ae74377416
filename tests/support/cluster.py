"""A recording cluster on this machine: `nvr serve` node processes sharing one PostgreSQL index and one bucket.

Each node reaches PostgreSQL and S3 through TCP proxies of its own
(``tests/support/s3proxy.py``, on a loop thread here), so a test can cut one
node off from the database or the bucket while the others go on. Nodes log to
``<root>/<node>/serve.log``; every failed wait shows the tail of each node's
log. What the tests assert on is read from the shared index: the live leases,
the epochs, and the stored segments with the node and epoch of their ledger
record.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from storage.embedded_s3 import S3Endpoint
from storage.index import Index
from storage.keyring import Keyring
from storage.spool import SEGMENT_RE, TICKET_RE
from tests.support import tomlw
from tests.support.checks import free_port
from tests.support.loopthread import LoopThread
from tests.support.postgres import PostgresServer
from tests.support.s3proxy import S3Proxy

T = TypeVar("T")
LOG_TAIL = 3000  # characters of each node's log in a failure message


@dataclass(frozen=True)
class Seg:
    """A stored segment with who recorded it: the node and lease epoch its ledger record names."""

    camera: str
    seq: int
    start_ms: int
    end_ms: int
    partial: bool
    node: str | None
    epoch: int | None


class Node:
    """One `nvr serve` process of the cluster (started, killed and restarted under the same node id)."""

    def __init__(self, cluster: Cluster, node_id: str):
        self.cluster = cluster
        self.id = node_id
        self.dir = cluster.root / node_id
        self.data_dir = self.dir / "data"
        self.config = self.dir / "nvr.toml"
        self.log = self.dir / "serve.log"
        self.port = free_port()
        self.pg = cluster.proxy(f"127.0.0.1:{cluster.postgres.port}")
        self.s3 = cluster.proxy(cluster.s3.endpoint)
        self.proc: subprocess.Popen | None = None
        self.expected_up = False  # a node that exits while this is set fails the current wait at once
        self.dir.mkdir(parents=True)
        self._write_config()
        self._copy_kek()

    # ------------------------------------------------------------------ setup

    def _write_config(self) -> None:
        c = self.cluster
        db = c.url.rsplit("/", 1)[1]
        data = {
            "server": {"listen": f"127.0.0.1:{self.port}", "data_dir": str(self.data_dir), "node_id": self.id},
            "index": {"url": f"postgresql://nvr@127.0.0.1:{self.pg.port}/{db}",
                      "password_file": str(c.postgres.password_file)},
            "storage": {"endpoint": self.s3.endpoint, "access_key": c.s3.access_key, "secret_key": c.s3.secret_key,
                        "bucket": c.bucket, "retry_max": "2s"},
            "recording": {"segment_seconds": c.segment_seconds, "backoff_initial": "0.3s", "backoff_max": "2s",
                          "connect_timeout": "3s", "healthy_after": "20s", "stop_grace": "5s"},
            # Checkpoints often, so `nvr verify` finds the footage of a short run anchored.
            "keys": {"checkpoint_interval": "3s"},
            "cluster": {"enabled": True, "lease_ttl": f"{c.ttl:g}s", "max_clock_skew": f"{c.skew:g}s"},
            "cameras": [{"id": cam, "url": url} for cam, url in c.cameras.items()],
        }
        self.config.write_text(tomlw.dumps(data))

    def _copy_kek(self) -> None:
        """The cluster's one KEK, as an operator copies ``keyring/kek/`` to a new node (never ``signing/``)."""
        kek = self.data_dir / "keyring" / "kek"
        kek.mkdir(mode=0o700, parents=True)
        for d in (self.data_dir, self.data_dir / "keyring"):
            d.chmod(0o700)
        for key in (self.cluster.keyring_dir / "kek").glob("*.key"):
            shutil.copy(key, kek / key.name)
            (kek / key.name).chmod(0o600)

    # ------------------------------------------------------------------ process

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start `nvr serve` (its log appended to ``serve.log``); :meth:`Cluster.wait_up` waits for it."""
        assert not self.running, f"node {self.id} is already running"
        with open(self.log, "ab") as log:
            log.write(f"\n===== test: starting node {self.id} at {time.strftime('%H:%M:%S')} =====\n".encode())
            # Its own session: a cleanup kills the node's whole process group (ffmpeg included) at the end.
            self.proc = subprocess.Popen([sys.executable, "-m", "nvr.cli", "serve", "--config", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self.started_db_ms = self.cluster.index.cluster.now_ms() - 1000
        self.expected_up = True

    def kill(self) -> int:
        """kill -9 the node process alone (its ffmpeg children die with it: PR_SET_PDEATHSIG); the time (ms)."""
        assert self.proc is not None
        self.expected_up = False
        at = int(time.time() * 1000)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._note(f"killed with SIGKILL at {time.strftime('%H:%M:%S')}")
        return at

    def terminate(self, timeout: float = 30) -> tuple[int, float]:
        """A graceful stop (SIGTERM); the exit code and how long it took."""
        assert self.proc is not None
        self.expected_up = False
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"node {self.id} did not stop within {timeout:.0f} s of SIGTERM\n"
                                 f"{self.tail()}") from None
        return code, time.monotonic() - t0

    def cleanup(self) -> None:
        """kill -9 the node's process group, leftovers included."""
        self.expected_up = False
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def _note(self, text: str) -> None:
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(f"===== test: node {self.id} {text} =====\n")

    def tail(self, chars: int = LOG_TAIL) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        return f"--- log of node {self.id} (last {chars} chars) ---\n{text[-chars:]}"

    # ------------------------------------------------------------------ HTTP and spool

    def healthz(self) -> dict[str, Any] | None:
        """The node's /healthz answer, None while it doesn't answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=3) as r:
                return json.loads(r.read())
        except (urllib.error.HTTPError) as e:
            return json.loads(e.read())
        except (OSError, ValueError):
            return None

    @property
    def spool(self) -> Path:
        return self.data_dir / "spool"

    def spooled(self, camera: str, epoch: int | None = None) -> int:
        """Segment files and tickets of ``camera`` in this node's spool that have not landed yet; with
        ``epoch``, only those of runs recorded under it (a run's ``.lease`` file names its epoch)."""
        d = self.spool / camera
        if not d.is_dir():
            return 0
        runs: dict[str, int | None] = {}
        count = 0
        for name in os.listdir(d):
            m = SEGMENT_RE.match(name)
            run = m["run"] if m else (t["stem"].split("-", 1)[0] if (t := TICKET_RE.match(name)) else None)
            if run is None:
                continue
            if epoch is not None and run not in runs:
                try:
                    runs[run] = json.loads((d / f"{run}.lease").read_text()).get("epoch")
                except (OSError, ValueError):
                    runs[run] = None
            count += epoch is None or runs[run] == epoch
        return count

    def tickets(self, camera: str) -> int:
        """Closed segments of ``camera`` waiting in this node's spool for their upload."""
        d = self.spool / camera
        return sum(1 for n in os.listdir(d) if TICKET_RE.match(n)) if d.is_dir() else 0

    def fenced(self) -> list[Path]:
        """Segments the lease fence refused (kept in ``<spool>/<camera>/fenced/``)."""
        return sorted(self.spool.glob("*/fenced/*.mp4")) if self.spool.is_dir() else []

    # ------------------------------------------------------------------ faults

    def cut_index(self) -> None:
        """The node's PostgreSQL connections stop answering (a partition: sockets open, nothing comes back)."""
        self.cluster.set_mode(self.pg, "hang", reset=False)

    def heal_index(self) -> None:
        # The hung connections lost bytes: reset them, so the node reconnects (as after a real partition).
        self.cluster.set_mode(self.pg, "pass", reset=True)

    def cut_s3(self) -> None:
        self.cluster.set_mode(self.s3, "hang", reset=True)

    def heal_s3(self) -> None:
        self.cluster.set_mode(self.s3, "pass", reset=True)


class Cluster:
    """Nodes by id over one database and bucket; the shared index read directly (not through a proxy)."""

    def __init__(self, root: Path, postgres: PostgresServer, s3: S3Endpoint, bucket: str, cameras: dict[str, str],
                 *, ttl: float, segment_seconds: int = 2, skew: float = 2.0):
        self.root, self.postgres, self.s3, self.bucket = root, postgres, s3, bucket
        self.cameras, self.ttl, self.segment_seconds, self.skew = dict(cameras), ttl, segment_seconds, skew
        self.nodes: dict[str, Node] = {}
        self.loop = LoopThread("cluster-proxies")
        self._proxies: list[S3Proxy] = []
        self.url = postgres.create_database()
        # Migrated here, once: the nodes then start together without racing over the schema.
        self.index = Index(self.url, password_file=postgres.password_file)
        self.keyring_dir = root / "kek-source"
        Keyring.open(self.keyring_dir)
        self._idle = threading.Event()  # never set: what a poll waits on between two looks

    # ------------------------------------------------------------------ nodes

    def proxy(self, upstream: str) -> S3Proxy:
        p = self.loop.run(S3Proxy(upstream).start())
        self._proxies.append(p)
        return p

    def set_mode(self, proxy: S3Proxy, mode: str, *, reset: bool) -> None:
        async def apply() -> None:
            proxy.mode = mode
            if reset:
                proxy.break_connections()

        self.loop.run(apply())

    def node(self, node_id: str) -> Node:
        if node_id not in self.nodes:
            self.nodes[node_id] = Node(self, node_id)
        return self.nodes[node_id]

    def start(self, *ids: str, timeout: float = 60) -> list[Node]:
        """Start nodes (all at once) and wait until each answers HTTP and has joined the cluster."""
        nodes = [self.node(i) for i in ids]
        for n in nodes:
            n.start()
        for n in nodes:
            self.wait_up(n, timeout=timeout)
        return nodes

    def wait_up(self, node: Node, *, timeout: float) -> None:
        def joined() -> bool:
            row = next((r for r in self.index.cluster.nodes() if r.id == node.id), None)
            return (row is not None and row.state == "up" and row.started_ms >= node.started_db_ms
                    and node.healthz() is not None)

        self.wait(joined, timeout=timeout, what=f"node {node.id} to answer HTTP and join the cluster")

    def running(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.running]

    # ------------------------------------------------------------------ the shared index

    def leases(self) -> dict[str, tuple[str, int]]:
        """camera → (node, epoch) of every lease live now (the database's clock)."""
        now = self.index.cluster.now_ms()
        return {r.camera: (r.node_id, r.epoch) for r in self.index.cluster.leases()
                if r.node_id is not None and r.expires_ms > now}

    def held(self) -> dict[str, list[str]]:
        """node → the cameras it holds a live lease of."""
        out: dict[str, list[str]] = {}
        for camera, (node, _) in sorted(self.leases().items()):
            out.setdefault(node, []).append(camera)
        return out

    def epochs(self, camera: str) -> dict[int, tuple[str, int, int | None]]:
        """epoch → (node, granted_ms, ended_ms) of ``camera``."""
        return {e: (n, g, d) for e, n, g, d in self.index.cluster.epochs(camera)}

    def segments(self, camera: str) -> list[Seg]:
        """``camera``'s stored segments in time order, each with the node and epoch its ledger record names."""
        records = {r["seq"]: r for r in self.index.ledger_records(camera) if r.get("type") == "segment"}
        out = []
        for row in self.index.segments(camera):
            rec = records.get(row.seq, {})
            out.append(Seg(camera, row.seq, row.start_ms, row.end_ms, row.partial, rec.get("node"),
                           rec.get("epoch")))
        return out

    def overlaps(self, cameras, slack_ms: int) -> list[str]:
        """Pairs of stored segments of one camera, recorded under different (node, epoch), overlapping by more
        than ``slack_ms``: two nodes recording one camera at once, checked on the footage, not on logs."""
        found = []
        for camera in cameras:
            segs = sorted(self.segments(camera), key=lambda s: s.start_ms)
            for i, a in enumerate(segs):
                for b in segs[i + 1:]:
                    if b.start_ms >= a.end_ms:
                        break
                    if (a.node, a.epoch) != (b.node, b.epoch) and a.end_ms - b.start_ms > slack_ms:
                        found.append(f"{camera}: seq {a.seq} ({a.node} epoch {a.epoch}, {a.start_ms}-{a.end_ms}) and "
                                     f"seq {b.seq} ({b.node} epoch {b.epoch}, {b.start_ms}-{b.end_ms}) overlap by "
                                     f"{a.end_ms - b.start_ms} ms")
        return found

    def audit_actions(self) -> list[str]:
        return [e.action for e in self.index.audit_entries()]

    # ------------------------------------------------------------------ waiting

    def tails(self, ids: list[str] | None = None) -> str:
        return "\n".join(self.nodes[i].tail() for i in (ids or sorted(self.nodes)) if i in self.nodes)

    def fail(self, message: str, ids: list[str] | None = None) -> AssertionError:
        return AssertionError(f"{message}\n{self.tails(ids)}")

    def wait(self, check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.25) -> T:
        """``check()``'s first truthy value, polled; fails after ``timeout`` or as soon as a node dies unasked."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            for n in self.nodes.values():
                if n.expected_up and not n.running:
                    n.expected_up = False
                    raise self.fail(f"node {n.id} exited ({n.proc.returncode if n.proc else '?'}) while waiting "
                                    f"for {what}", [n.id])
            if time.monotonic() > deadline:
                raise self.fail(f"gave up after {timeout:.0f} s waiting for {what}; leases now {self.held()}")
            self._idle.wait(interval)  # the state lives in other processes: nothing to wait on but a look

    # ------------------------------------------------------------------ end

    def close(self) -> None:
        """kill -9 every node (and its children), stop the proxies, drop the database."""
        for n in self.nodes.values():
            n.cleanup()
        with contextlib.suppress(Exception):
            self.index.close()
        for p in self._proxies:
            with contextlib.suppress(Exception):
                self.loop.run(p.stop(), timeout=10)
        self.loop.close()
        with contextlib.suppress(Exception):
            self.postgres.drop_database(self.url)
