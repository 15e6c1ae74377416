"""A TCP proxy in front of a real S3 that can be told to fail the way S3s fail in the field.

Modes (``proxy.mode = ...``, applied to new connections; ``break_connections()`` ends open ones):

* ``pass``: bytes both ways, untouched;
* ``refuse``: the connection is closed at once (what a stopped server looks like);
* ``hang``: the connection is accepted and read, never answered (a hung server or a black hole);
* ``deny``: each request is read whole and answered 403 AccessDenied (revoked credentials, a bucket policy);
* ``full``: answered 507 XMinioStorageFull (MinIO out of space);
* ``error``: answered 500 InternalError.

It runs on the test's own event loop; the ObjectStore's blocking calls reach it from their threads.
"""

from __future__ import annotations

import asyncio
import contextlib

_ANSWERS = {
    "deny": (403, "Forbidden", "AccessDenied", "Access Denied."),
    "full": (507, "Insufficient Storage", "XMinioStorageFull", "Storage backend has reached its minimum free drive threshold."),
    "error": (500, "Internal Server Error", "InternalError", "We encountered an internal error, please try again."),
}


class S3Proxy:
    def __init__(self, upstream: str):
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.mode = "pass"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.requests = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> S3Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.break_connections()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def break_connections(self) -> None:
        """Reset every open connection (a mode change then applies to the client's next one)."""
        for w in list(self._conns):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._conns.clear()

    async def __aenter__(self) -> S3Proxy:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        mode = self.mode
        try:
            if mode == "refuse":
                writer.transport.abort()
            elif mode == "hang":
                while await reader.read(65536):
                    pass
            elif mode in _ANSWERS:
                await self._answer(reader, writer, *_ANSWERS[mode])
            else:
                await self._pipe(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, reader, writer, status: int, reason: str, code: str, message: str) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
                    f'</Message><Resource>/</Resource><RequestId>proxy</RequestId></Error>').encode()
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()

    async def _pipe(self, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection(*self.upstream)
        self._conns.add(up_w)

        async def copy(src, dst):
            try:
                while data := await src.read(65536):
                    if self.mode == "hang":  # switched while open: stop answering, keep the socket
                        continue
                    dst.write(data)
                    await dst.drain()
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        try:
            await asyncio.gather(copy(reader, up_w), copy(up_r, writer))
        finally:
            self._conns.discard(up_w)
