"""The ``EmbeddedS3`` manager: one weed process per data dir, started, watched and stopped."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from storage.embedded_s3.command import weed_command
from storage.embedded_s3.layout import (
    LOOPBACK,
    S3Endpoint,
    find_weed,
    load_or_create_credentials,
    read_json,
    write_config_dir,
    write_private,
)
from storage.embedded_s3.ports import (
    GRPC_SOCKET_SERVICES,
    PortTaken,
    choose_ports,
    grpc_socket_path,
    socket_dir_for,
    unlink_stale_socket,
)
from storage.embedded_s3.probe import ReadinessProbe
from storage.embedded_s3.process import kill_group, pdeathsig_preexec, signal_group, weed_env
from storage.embedded_s3.security import prepare_security
from storage.errors import EmbeddedS3Error

# Volumes are not preallocated (idle use is ~250 KB whatever the limit): the limit only sets
# when a volume turns read-only and a new one is grown.  256 MB keeps the file count of a large
# archive reasonable (1 TB ~ 4000 volumes) while a bucket's initial growth of 7 volumes fits
# small disks and vacuuming an expired volume needs little free space.
DEFAULT_VOLUME_SIZE_LIMIT_MB = 256
# weed's clean stop always waits out a hard-coded 15 s filer drain; SIGKILL after this loses no
# acknowledged write (see the package docstring), so shutdown does not wait for the drain.
DEFAULT_STOP_TIMEOUT = 0.5
_LOG_TAIL_LINES = 20
_LOG_ROTATE_BYTES = 16 * 1024 * 1024
_POLL_INTERVAL = 0.25




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
        self._stopping = False  # stop() was asked: an exit is not a failure

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
            self._stopping = False
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

        weed 4.48 needs ~17 s for a clean stop (a hard-coded 15 s filer drain); the default
        ends in SIGKILL after 0.5 s, which loses no acknowledged write.
        """
        self._stopping = True
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

    async def watch(self) -> None:
        """Run for as long as weed does; if weed exits unasked, raise, and on the next call restart it.

        Meant for an owned task (``nvr.base.tasks.TaskOwner``): the raise is the reported end, the
        owner's back-off paces the restarts, which reuse the data dir, the credentials and the saved
        ports, so the endpoint clients hold stays valid.
        """
        if self._proc is not None and self._proc.returncode is not None and not self._stopping:
            before = self._endpoint
            endpoint = await self.start()
            if before is not None and endpoint != before:
                self._log.error("embedded S3 came back on %s instead of %s: restart nvr", endpoint.endpoint,
                                before.endpoint)
            self._log.warning("embedded S3 restarted (pid %s)", self.pid)
        proc = self._proc
        if proc is None or self._stopping:
            await asyncio.Event().wait()  # stopped on purpose: nothing to watch until cancelled
        assert proc is not None
        code = await proc.wait()
        if self._stopping:
            await asyncio.Event().wait()
        raise EmbeddedS3Error(f"embedded S3 (weed pid {proc.pid}) exited with code {code}; restarting it. "
                              f"Last lines of {self.log_path}: {self._log_tail(5)}")

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
                holder = read_json(self._s3_dir / "state.json") or {}
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
        except PortTaken:
            # Saved or probed ports can be taken between the check and weed's bind: retry
            # once on fresh ports.
            self._log.info("embedded S3: a port was taken at bind time, retrying on new ports")
            self._cleanup_sockets()
            ports = choose_ports(None, avoid=frozenset(ports.values()))
            endpoint = S3Endpoint(f"{LOOPBACK}:{ports['s3']}", access_key, secret_key)
            try:
                await self._spawn_and_wait(weed, ports, endpoint, deadline)
            except PortTaken as e:
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
        access_key, secret_key = load_or_create_credentials(self._s3_dir, self._log)
        identities = {
            "identities": [
                {
                    "name": "nvr",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        write_private(s3 / "s3.json", json.dumps(identities).encode())
        write_config_dir(self._s3_dir, prepare_security(self._s3_dir, self._log))
        self._socket_dir, self._private_socket_dir = socket_dir_for(s3)
        saved = read_json(s3 / "ports.json")
        if isinstance(saved, dict):
            # A run that died with its parent left its /tmp sockets behind.
            for name in GRPC_SOCKET_SERVICES:
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    unlink_stale_socket(grpc_socket_path(name, int(saved[name])))
        return access_key, secret_key, choose_ports(saved)

    async def _spawn_and_wait(
        self, weed: str, ports: dict[str, int], endpoint: S3Endpoint, deadline: float
    ) -> None:
        self._ports = ports
        assert self._socket_dir is not None
        cmd = weed_command(weed, self._s3_dir, self._socket_dir, ports, self._volume_size_limit_mb)
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
            env=weed_env(self._s3_dir / "tmp"),
            # Own session/process group: a Ctrl-C to our terminal must not reach weed
            # before we stop it in order.
            start_new_session=True,
            # weed inherits the lock, so it stays held as long as weed lives, even if we die
            # and weed somehow survives us.
            pass_fds=(self._lock_fd,),
            preexec_fn=pdeathsig_preexec(),
        )
        proc = self._proc
        ready = await self._wait_ready(proc, endpoint, deadline)
        if ready is not None:
            if proc.returncode is None:
                await kill_group(proc)
            tail = self._log_tail()
            self._cleanup_sockets()
            message = (
                f"embedded S3 for {self._data_dir} failed to start: {ready}; "
                f"last lines of {self.log_path}:\n{tail}"
            )
            if proc.returncode is not None and "address already in use" in tail:
                raise PortTaken(message)
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
        write_private(self._s3_dir / "ports.json", json.dumps(ports, indent=2).encode())
        write_private(self._s3_dir / "state.json", json.dumps(state, indent=2).encode())

    async def _wait_ready(
        self, proc: asyncio.subprocess.Process, endpoint: S3Endpoint, deadline: float
    ) -> str | None:
        """None once S3 answers; else why not (weed exited, or the deadline passed)."""
        loop = asyncio.get_running_loop()
        probe = ReadinessProbe(endpoint, self._ports["volume"])
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
        signal_group(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            # The usual path: weed's drain outlasts any short timeout, and SIGKILL loses nothing acknowledged.
            self._log.info(
                "embedded S3: weed (pid %d) still running %.1fs after SIGTERM, killing it",
                proc.pid,
                timeout,
            )
            await kill_group(proc)
        except asyncio.CancelledError:
            # Do not leave a half-stopped weed behind a cancelled caller.
            signal_group(proc, signal.SIGKILL)
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
            signal_group(proc, signal.SIGKILL)
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
        for name in GRPC_SOCKET_SERVICES:
            port = self._ports.get(name)
            if port:
                unlink_stale_socket(grpc_socket_path(name, port))
        if self._socket_dir is not None:
            for name in ("filer.sock", "s3.sock"):
                unlink_stale_socket(self._socket_dir / name)
            if self._private_socket_dir:
                with contextlib.suppress(OSError):
                    self._socket_dir.rmdir()
                self._socket_dir = None
                self._private_socket_dir = False
