"""Choosing weed's eight loopback ports, and the gRPC socket files it mirrors them on in /tmp."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

from storage.embedded_s3.layout import LOOPBACK
from storage.errors import EmbeddedS3Error

# Order matters only for readability of ports.json; each entry is one TCP listener of weed.
PORT_NAMES = (
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "s3",
    "s3_grpc",
)
# gRPC listeners that weed mirrors on a hard-coded /tmp/seaweedfs-<service>-grpc-<port>.sock.
GRPC_SOCKET_SERVICES = {
    "master_grpc": "master",
    "volume_grpc": "volume",
    "filer_grpc": "filer",
    "s3_grpc": "s3",
}

# sun_path is 108 bytes on Linux; weed exits fatally when a local socket path is longer.
MAX_SOCKET_PATH = 100


class PortTaken(Exception):
    """weed could not bind one of the chosen ports."""



def socket_dir_for(s3_dir: Path) -> tuple[Path, bool]:
    """Where weed's local sockets go: the (0700) s3 dir, or a private temp dir if too long."""
    if len(os.fsencode(s3_dir / "filer.sock")) <= MAX_SOCKET_PATH:
        return s3_dir, False
    return Path(tempfile.mkdtemp(prefix="nvr-s3-")), True


def grpc_socket_free(port: int, name: str) -> bool:
    """False if weed could not re-create its /tmp gRPC socket for listener ``name`` on ``port``."""
    if name not in GRPC_SOCKET_SERVICES:
        return True
    # weed unlinks and re-creates /tmp/seaweedfs-<service>-grpc-<port>.sock: it cannot if
    # another user owns a stale one (sticky /tmp).
    try:
        return grpc_socket_path(name, port).lstat().st_uid == os.getuid()
    except FileNotFoundError:
        return True


def port_usable(port: int, name: str) -> bool:
    """True if weed can listen on ``LOOPBACK:port`` for the listener ``name``."""
    if not grpc_socket_free(port, name):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Go listens with SO_REUSEADDR, so a port in TIME_WAIT from our last run is usable.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def choose_ports(saved: Any, avoid: frozenset[int] = frozenset()) -> dict[str, int]:
    """The saved ports if all are still usable, else fresh free loopback ports."""
    if isinstance(saved, dict):
        try:
            ports = {name: int(saved[name]) for name in PORT_NAMES}
        except (KeyError, TypeError, ValueError):
            ports = {}
        if (
            ports
            and len(set(ports.values())) == len(PORT_NAMES)
            and all(0 < p < 65536 and p not in avoid for p in ports.values())
            and all(port_usable(p, name) for name, p in ports.items())
        ):
            return ports
    # Keep every probe socket bound until all are chosen so the kernel hands out distinct ports.
    held: list[socket.socket] = []
    fresh: dict[str, int] = {}
    try:
        for name in PORT_NAMES:
            for _ in range(50):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(s)
                s.bind((LOOPBACK, 0))
                port = s.getsockname()[1]
                if port not in avoid and grpc_socket_free(port, name):
                    fresh[name] = port
                    break
            else:
                raise EmbeddedS3Error("could not find free loopback ports for embedded S3")
    finally:
        for s in held:
            s.close()
    return fresh


def grpc_socket_path(name: str, port: int) -> Path:
    return Path(f"/tmp/seaweedfs-{GRPC_SOCKET_SERVICES[name]}-grpc-{port}.sock")


def unlink_stale_socket(path: Path) -> None:
    """Remove ``path`` if it is our unix socket and nothing listens on it any more."""
    try:
        st = path.lstat()
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            # The port may have been picked up since by another weed of ours: its socket is
            # alive and must stay.
            s.connect(os.fspath(path))
    except ConnectionRefusedError:
        with contextlib.suppress(OSError):
            path.unlink()
    except OSError:
        pass


