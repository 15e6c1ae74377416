"""Idle and slow connections are closed within ``IDLE_SECONDS``, by the real server and by ``SERVER_OPTIONS``.

Three clients at once: one sends half a request line and stops, one trickles
a header a byte every half second (never finishing it), one is idle after an
answer. Each must see the server close the connection within the bound.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest

from nvr.api.app import IDLE_SECONDS
from tests.api.support import parts_services, served_api

# On the package's loop, both: a test on a loop of its own would freeze the package's recording server meanwhile.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]

SLACK = 3.0  # seconds past the bound: aiohttp's timer and a busy test machine


async def closed_after(base: str, first: bytes, trickle: bytes = b"") -> float:
    """Seconds until the server closed a connection that sent ``first`` (then ``trickle`` every 0.5 s)."""
    url = urlsplit(base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    started = time.monotonic()
    writer.write(first)
    await writer.drain()

    async def drip() -> None:
        while trickle:
            await asyncio.sleep(0.5)
            writer.write(trickle)
            await writer.drain()

    dripping = asyncio.create_task(drip())
    try:
        async with asyncio.timeout(IDLE_SECONDS + SLACK):
            while await reader.read(65536):
                pass  # an answer (the idle client's), then the end
        return time.monotonic() - started
    except TimeoutError:
        raise AssertionError(f"{first[:30]!r}: still open {IDLE_SECONDS + SLACK:g} s later") from None
    except (ConnectionResetError, BrokenPipeError):
        return time.monotonic() - started
    finally:
        dripping.cancel()
        writer.close()


async def all_closed_in_time(base: str) -> None:
    took = await asyncio.gather(
        closed_after(base, b"GET /api/v1/cameras HT"),
        closed_after(base, b"GET /api/v1/cameras HTTP/1.1\r\nHost: nvr\r\nX-Slow: ", trickle=b"a"),
        closed_after(base, b"GET /healthz HTTP/1.1\r\nHost: nvr\r\n\r\n"),
    )
    assert all(t <= IDLE_SECONDS + SLACK for t in took), took


async def test_the_server_closes_idle_and_half_sent_connections(api):
    # Passes once the server's runner is given nvr.api.app.SERVER_OPTIONS.
    await all_closed_in_time(api.base)


async def test_server_options_close_idle_and_half_sent_connections(storage_parts):
    async with served_api(parts_services(storage_parts)) as api:  # served with SERVER_OPTIONS
        await all_closed_in_time(api.base)
