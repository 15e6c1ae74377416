"""The HTTP client of the API tests: a base URL, named tokens, and JSON answers checked against a status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class ApiClient:
    base: str
    http: aiohttp.ClientSession
    tokens: dict[str, str] = field(default_factory=dict)

    async def request(self, method: str, path: str, token: str | None = "admin", **kw) -> aiohttp.ClientResponse:
        """``token`` names one of ``tokens`` (or is a raw token); None sends no Authorization header."""
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
        return await self.http.request(method, self.base + path, headers=headers, **kw)

    async def get(self, path: str, token: str | None = "admin", **kw) -> aiohttp.ClientResponse:
        return await self.request("GET", path, token, **kw)

    async def json(self, method: str, path: str, token: str | None = "admin", status: int = 200, **kw) -> Any:
        """The JSON body of an answer that must have ``status`` (204: None)."""
        resp = await self.request(method, path, token, **kw)
        body = await resp.json(content_type=None) if resp.status != 204 else None
        assert resp.status == status, body
        return body
