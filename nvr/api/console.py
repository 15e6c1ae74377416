"""Routes of the ``console`` tag: the console's files, served by nvr itself (no CDN: police networks are closed).

The page needs no token to load (it holds no data); everything it shows comes
from the API with the person's session cookie. Strict headers on every file:
only this origin's scripts, media from blob URLs (MSE), no framing.
"""

from __future__ import annotations

from aiohttp import web

from nvr.api.spec import IDS, Id, Route
from nvr.base.errors import NotFound
from nvr.console import STATIC

TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                               "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache",
}
FILE = Id("console file", r"[a-z][a-z0-9-]*\.(js|css|html)", "a file of the console", server_made=True)


def _file(name: str) -> web.Response:
    path = STATIC / name
    if not path.is_file():
        raise NotFound(f"console file {name!r} does not exist")
    return web.Response(body=path.read_bytes(), content_type=TYPES[path.suffix], charset="utf-8", headers=HEADERS)


async def console_page(request: web.Request) -> web.Response:
    return _file("index.html")


async def console_file(request: web.Request) -> web.Response:
    return _file(request[IDS]["file"])


SCHEMAS: dict = {}
ROUTES: tuple[Route, ...] = (
    Route("GET", "/", console_page, None, "The console (log in, the wall of live cameras)", tag="console",
          responses={200: "text/html"}),
    Route("GET", "/console/{file}", console_file, None, "A file of the console (its scripts and styles)",
          tag="console", ids={"file": FILE}, responses={200: "text/javascript"}),
)
