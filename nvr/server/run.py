"""``nvr serve``: one server run until a signal, or until a part that may not restart gave up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from nvr.base.errors import NvrError
from nvr.config.settings import Config
from nvr.server.app import NvrServer
from nvr.server.demo import DEMO_USER

log = logging.getLogger("nvr.app")


async def serve(cfg: Config, *, demo: bool = False, stop: asyncio.Event | None = None) -> None:
    """Run the server until ``stop`` is set or SIGINT/SIGTERM arrives.

    Raises NvrError, after a full stop, when an owned task that may not be restarted gave up: a
    server that can no longer record or upload must not look alive to its supervisor (systemd).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with NvrServer(cfg, demo=demo) as srv:
        if demo:
            log.info("demo: recording %s", ", ".join(c.id for c in srv.cfg.cameras))
            host = srv.cfg.server.listen_host
            host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            host = f"[{host}]" if ":" in host else host
            # stdout, like the demo token: the person starting the demo reads it; the logs never hold it.
            print(f"console: http://{host}:{srv.http_port}/  log in as {DEMO_USER!r} with password "
                  f"{srv.demo_password} (new at every start)", flush=True)
        waits = [asyncio.create_task(stop.wait(), name="stop")]
        waits += [asyncio.create_task(o.failed.wait(), name=f"failed:{o.owner}") for o in srv.tasks]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        failure = srv.failure()
        log.info("stopping: finishing segments and draining the spool")
    if failure:
        raise NvrError(f"nvr stopped: {failure}")
