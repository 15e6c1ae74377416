"""Which index the current test's parts and servers use: SQLite in the data dir, or a fresh PostgreSQL database.

Set per test by the ``index_backend`` fixture (``tests/conftest.py``), read by
``make_config`` (the ``[index]`` table) and ``open_parts``. The backends a run
covers come from ``$NVR_TEST_INDEX``: ``both`` (the default, and CI's),
``sqlite`` or ``postgresql``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.index import Index


@dataclass(frozen=True)
class Target:
    url: str
    password_file: Path
    server: Any  # tests.support.postgres.PostgresServer


_current: Target | None = None


def backends() -> tuple[str, ...]:
    want = os.environ.get("NVR_TEST_INDEX", "both")
    if want not in ("both", "sqlite", "postgresql"):
        raise ValueError(f"NVR_TEST_INDEX={want!r}: use both, sqlite or postgresql")
    return ("sqlite", "postgresql") if want == "both" else (want,)


def use(target: Target | None) -> None:
    global _current
    _current = target


def current() -> Target | None:
    return _current


def config_table() -> dict[str, Any]:
    """The ``[index]`` table of a test config (empty for SQLite)."""
    return {} if _current is None else {"url": _current.url, "password_file": str(_current.password_file)}


def open_index(data_dir: Path) -> Index:
    """The current test's index: its PostgreSQL database, or ``data_dir/index.sqlite3``."""
    if _current is None:
        return Index(data_dir / "index.sqlite3")
    return Index(_current.url, password_file=_current.password_file)


def lose(data_dir: Path, *, empty: bool = False) -> None:
    """Lose the current test's index as a failed disk or a dropped database would (``empty``: an empty file)."""
    if _current is None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{data_dir / 'index.sqlite3'}{suffix}").unlink(missing_ok=True)
        if empty:
            (data_dir / "index.sqlite3").write_bytes(b"")
        return
    _current.server.drop_database(_current.url)
    _current.server.create_database(_current.url.rsplit("/", 1)[1])


def count_segments(cfg: Any, camera: str) -> int:
    """How many segments ``camera`` has in ``cfg``'s index (0 before the index exists); opened and closed here."""
    if cfg.index.url is None and not cfg.index_path.exists():
        return 0
    index = Index(cfg.index_target, password_file=cfg.index.password_file)
    try:
        return len(index.segments(camera))
    finally:
        index.close()
