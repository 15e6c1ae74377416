"""Nodes of a test cluster as real ``nvr serve`` processes: started, stopped (SIGTERM), killed (SIGKILL)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.index import Index
from storage.keyring import Keyring
from tests.support import tomlw


@dataclass
class Node:
    name: str
    config: Path
    data_dir: Path
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "nvr.cli", "serve", "--config", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """kill -9 of the node and of its ffmpeg children (a machine that lost power)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as systemd stops it: the node drains and leaves."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def spooled(self, before_ms: int | None = None) -> int:
        """Segment files waiting in this node's spool (of runs started before ``before_ms``), and any fenced."""
        spool = self.data_dir / "spool"
        if not spool.is_dir():
            return 0
        files = [p for p in spool.glob("*/*.mp4") if before_ms is None or int(p.name[1:14]) < before_ms]
        return len(files) + sum(1 for _ in spool.glob("*/fenced/*.mp4"))


@dataclass
class Cluster:
    root: Path
    index_url: str
    password_file: Path
    s3: Any
    bucket: str
    cameras: list[dict[str, Any]]
    ttl: float = 6.0
    nodes: dict[str, Node] = field(default_factory=dict)
    _index: Index | None = None

    def add(self, name: str, *, index_url: str | None = None) -> Node:
        data = self.root / name
        data.mkdir(parents=True, exist_ok=True)
        kek = self.root / "kek"
        if not kek.exists():  # one KEK for the cluster, copied to every node before its first start
            Keyring.open(self.root / "first-keyring", create=True)
            shutil.copytree(self.root / "first-keyring" / "kek", kek)
        ring = data / "keyring"
        ring.mkdir(mode=0o700, exist_ok=True)
        if not (ring / "kek").exists():
            shutil.copytree(kek, ring / "kek")
        cfg = {
            "server": {"listen": "127.0.0.1:0", "data_dir": str(data), "node_id": name},
            "index": {"url": index_url or self.index_url, "password_file": str(self.password_file)},
            "storage": {"endpoint": self.s3.endpoint, "access_key": self.s3.access_key,
                        "secret_key": self.s3.secret_key, "bucket": self.bucket, "retry_max": "2s"},
            "recording": {"segment_seconds": 2, "backoff_initial": "0.3s", "backoff_max": "2s",
                          "stop_grace": "3s"},
            "keys": {"checkpoint_interval": "3s"},
            "cluster": {"enabled": True, "lease_ttl": f"{self.ttl}s"},
            "cameras": self.cameras,
        }
        path = data / "nvr.toml"
        path.write_text(tomlw.dumps(cfg))
        node = self.nodes[name] = Node(name, path, data, self.root / f"{name}.log")
        return node

    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = Index(self.index_url, password_file=self.password_file)
        return self._index

    def holders(self) -> dict[str, str]:
        """camera → node holding its lease now (database clock)."""
        now = self.index.cluster.now_ms()
        return {r.camera: r.node_id for r in self.index.cluster.leases() if r.node_id and r.expires_ms > now}

    def segments_by(self, camera: str) -> list[tuple[int, int, str, int | None]]:
        """(start_ms, end_ms, node, epoch) of the camera's stored segments, by start."""
        out = []
        for rec in self.index.ledger_records(camera, 0, None):
            if rec.get("type") == "segment":
                from nvr.base.times import parse_rfc3339
                out.append((parse_rfc3339(rec["start"]), parse_rfc3339(rec["end"]), rec["node"], rec.get("epoch")))
        return sorted(out)

    def why(self) -> str:
        return "\n".join(f"--- {n.name} ---\n{n.tail()}" for n in self.nodes.values())

    def wait(self, what: Callable[[], Any], timeout: float, message: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = what()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{message} within {timeout:g} s\n{self.why()}")
            time.sleep(0.25)

    def close(self) -> None:
        for n in self.nodes.values():
            n.kill()
        if self._index is not None:
            self._index.close()
