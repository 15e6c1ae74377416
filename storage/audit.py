"""The audit log: every access, change, loss, gap and deletion, hash-chained in the index."""

from __future__ import annotations

import asyncio
import getpass
import logging
from typing import Any

from storage.index import AuditEntry, Index

log = logging.getLogger("nvr.audit")

SYSTEM = ("system", "system")


def cli_actor() -> tuple[str, str]:
    """Who runs a CLI command: the local user, with the operator role a shell on the node implies."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}", "operator"


class AuditLog:
    """Appends entries off the event loop; also logs each one, so the log file tells the same story."""

    def __init__(self, index: Index):
        self.index = index

    async def record(
        self, action: str, target: str, detail: dict[str, Any], *, actor: tuple[str, str] = SYSTEM
    ) -> AuditEntry:
        entry = await asyncio.to_thread(
            self.index.append_audit, actor=actor[0], role=actor[1], action=action, target=target, detail=detail
        )
        log.info("audit #%d %s %s %s by %s", entry.id, action, target, detail, actor[0])
        return entry

    async def system(self, action: str, target: str, detail: dict[str, Any]) -> None:
        """Sink for pipeline events (gaps, losses, partial segments, alarms)."""
        await self.record(action, target, detail)
