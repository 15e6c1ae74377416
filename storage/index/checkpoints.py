"""The ``checkpoints`` table: every checkpoint signed or adopted, so a checkpoint missing from the bucket shows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from storage.index._engine import Engine, Tx


@dataclass(frozen=True)
class CheckpointRow:
    camera: str
    seq: int
    head: str
    time_ms: int
    key_id: str
    body: str       # canonical JSON, exactly the signed bytes
    signature: str  # hex


_COLUMNS = "camera, seq, head, time_ms, key_id, body, signature"
INSERT = f"INSERT INTO checkpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (camera, seq) DO NOTHING"


def insert_in(tx: Tx, rows: Iterable[CheckpointRow]) -> None:
    tx.many(INSERT, [(r.camera, r.seq, r.head, r.time_ms, r.key_id, r.body, r.signature) for r in rows])


class Checkpoints:
    """``index.checkpoints``."""

    def __init__(self, engine: Engine):
        self._engine = engine

    def insert(self, rows: Iterable[CheckpointRow]) -> None:
        """Remember checkpoints that are in the bucket (one already known is kept)."""
        with self._engine.write() as tx:
            insert_in(tx, rows)

    def between(self, camera: str, from_seq: int = 0, to_seq: int | None = None) -> list[CheckpointRow]:
        """``camera``'s checkpoints in [from_seq, to_seq], by seq."""
        sql = f"SELECT {_COLUMNS} FROM checkpoints WHERE camera = ? AND seq >= ?"
        args: tuple = (camera, from_seq)
        if to_seq is not None:
            sql += " AND seq <= ?"
            args += (to_seq,)
        return [CheckpointRow(*r) for r in self._engine.all(sql + " ORDER BY seq", args)]

    def latest(self, camera: str) -> CheckpointRow | None:
        row = self._engine.one(f"SELECT {_COLUMNS} FROM checkpoints WHERE camera = ? ORDER BY seq DESC LIMIT 1",
                               (camera,))
        return CheckpointRow(*row) if row else None

    def latest_seq(self, camera: str) -> int | None:
        return self._engine.scalar("SELECT MAX(seq) FROM checkpoints WHERE camera = ?", (camera,))

    def keys(self) -> set[tuple[str, int]]:
        """(camera, seq) of every checkpoint known."""
        return {(c, s) for c, s in self._engine.all("SELECT camera, seq FROM checkpoints")}
