"""The route table's types, and the one validation of what a request carries: path ids, query, JSON body.

Every rule about a request's input is declared once, on its ``Route``: the
kind of each path id (``CAMERA``, ``SEGMENT``...), each query parameter
(``Param``: name, kind, required, default, description) and the body's
schema name. ``validate_middleware`` checks them before the handler runs and
hands it the parsed values: ``request[IDS]["id"]``, ``request[QUERY]["start"]``
(epoch ms; every declared parameter is there, ``default`` when absent) and
``request[BODY]``. ``openapi.py`` documents the same objects, so the document
and the checks can't disagree.

Query rules: an unknown or repeated parameter, a malformed value and a
missing required one are each a 400 naming the parameter, and so is a value
with a NUL. A route taking ``start`` and ``end`` gets the range rule
(``check_range``: end after start).

Body rules (``parse_json``): strict JSON, an object, sent within
``BODY_SECONDS``; ``NaN``, ``Infinity``, numbers beyond a double and repeated
keys are refused (Python's own parser accepts them), and so is a NUL or an
unpaired surrogate in any string or key, each a 400 naming where it is.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from aiohttp import web

from nvr.api.problem import Problem
from nvr.base import strictjson
from nvr.base.errors import InvalidInput, NotFound
from nvr.base.ids import CAMERA_ID, CAMERA_ID_HINT, SEGMENT_ID, is_camera_id, parse_segment_id
from nvr.base.times import parse_time_ms

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TIME_SCHEMA = {"type": "string", "format": "date-time", "description": "RFC 3339 with offset or Z"}
JSON_TYPES = ("application/json", "application/merge-patch+json")


def invalid(parameter: str, detail: str) -> InvalidInput:
    """A 400 naming the query or path parameter."""
    return InvalidInput(detail, parameter=parameter)


# ---------------------------------------------------------------------- query parameter kinds


class ParamKind(Protocol):
    hint: str  # what a value looks like, for "x is required (...)"

    def parse(self, name: str, raw: str) -> Any: ...

    def schema(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Time:
    """An RFC 3339 time with offset, as epoch milliseconds (naive and out-of-range times are refused)."""

    hint: str = "RFC 3339, e.g. 2026-11-29T13:00:00Z"

    def parse(self, name: str, raw: str) -> int:
        try:
            return parse_time_ms(raw)
        except ValueError as e:
            raise invalid(name, f"{name}: {e}") from None

    def schema(self) -> dict[str, Any]:
        return dict(TIME_SCHEMA)


@dataclass(frozen=True)
class Int:
    """A whole number within bounds."""

    minimum: int
    maximum: int

    @property
    def hint(self) -> str:
        return f"a whole number between {self.minimum} and {self.maximum}"

    def parse(self, name: str, raw: str) -> int:
        if not re.fullmatch(r"\d{1,12}", raw):
            raise invalid(name, f"{name} must be {self.hint}, got {raw!r}")
        value = int(raw)
        if not self.minimum <= value <= self.maximum:
            raise invalid(name, f"{name} must be between {self.minimum} and {self.maximum}, got {value}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


@dataclass(frozen=True)
class Text:
    """A string of bounded length."""

    min_length: int
    max_length: int

    @property
    def hint(self) -> str:
        return f"{self.min_length}-{self.max_length} characters"

    def parse(self, name: str, raw: str) -> str:
        if not self.min_length <= len(raw) <= self.max_length:
            raise invalid(name, f"{name} must be {self.hint}")
        return raw

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "minLength": self.min_length, "maxLength": self.max_length}


@dataclass(frozen=True)
class Pattern:
    """A string matching ``regex`` as a whole, converted by ``convert``; ``hint`` says what it is."""

    regex: str
    hint: str
    convert: Callable[[str], Any] = str

    def parse(self, name: str, raw: str) -> Any:
        if not re.fullmatch(self.regex, raw):
            raise invalid(name, f"{name} must be {self.hint}")
        return self.convert(raw)

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{self.regex}$"}


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of words."""

    values: tuple[str, ...]

    @property
    def hint(self) -> str:
        return f"one of {', '.join(self.values)}"

    def parse(self, name: str, raw: str) -> str:
        if raw not in self.values:
            raise invalid(name, f"{name} must be {self.hint}, got {raw!r}")
        return raw

    def schema(self) -> dict[str, Any]:
        return {"enum": list(self.values)}


@dataclass(frozen=True)
class Param:
    """One query parameter of a route."""

    name: str
    kind: ParamKind
    description: str
    required: bool = False
    default: Any = None  # what the handler gets when the parameter is absent

    def as_required(self) -> Param:
        """This parameter, required (and so without a default)."""
        return replace(self, required=True, default=None)


# The parameters several routes share, declared once.
START = Param("start", Time(), "Start of the range (RFC 3339)")
END = Param("end", Time(), "End of the range, after start (RFC 3339)")
LIMIT = Param("limit", Int(1, 1000), "Page size", default=100)
CURSOR = Param("cursor", Pattern(r"\d{1,15}", "the next_cursor of a previous page", int),
               "next_cursor of the previous page")


def check_range(start: int, end: int) -> None:
    """The one range rule, for query and body ranges alike: the end comes after the start."""
    if end <= start:
        raise invalid("end", "end must be after start")


# ---------------------------------------------------------------------- path ids


@dataclass(frozen=True)
class Id:
    """The kind of a path id: what it names, the rule it follows, and the answer to one that breaks it.

    Ids a client chooses (cameras, and segments named after them) are a 400
    when malformed; ids the server hands out (holds, exports) are simply not
    found, as any other id it never made.
    """

    what: str
    pattern: str  # as a whole; what the document shows
    hint: str
    server_made: bool = False
    check: Callable[[str], bool] | None = None  # the rule's own function, where one exists (else ``pattern``)
    max_length: int | None = None

    def matches(self, raw: str) -> bool:
        return self.check(raw) if self.check is not None else re.fullmatch(self.pattern, raw) is not None

    def parse(self, name: str, raw: str) -> str:
        """``raw``, when it is such an id; a NotFound or a 400 naming ``name`` when not."""
        if self.matches(raw):
            return raw
        if self.server_made:
            raise NotFound(f"{self.what} {raw!r} does not exist")
        raise invalid(name, f"{raw!r} is not a {self.what} id ({self.hint})")

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "pattern": f"^{self.pattern}$"}
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return schema


CAMERA = Id("camera", CAMERA_ID, CAMERA_ID_HINT, check=is_camera_id, max_length=63)
SEGMENT = Id("segment", SEGMENT_ID, "camera:seq, e.g. gate-north:42",
             check=lambda v: parse_segment_id(v) is not None)
CAMERA_ID_SCHEMA = CAMERA.schema()  # for camera ids in bodies and answers


# ---------------------------------------------------------------------- routes

URL_TOKEN = "token"  # the query parameter of a signed URL token, on routes with ``url_token``


@dataclass(frozen=True)
class Route:
    """One operation: served by ``build_app``, checked by the middlewares, documented by ``openapi``."""

    method: str
    path: str
    handler: Handler
    role: str | None  # None: no token needed
    summary: str
    tag: str
    ids: Mapping[str, Id] = field(default_factory=dict)  # the kind of each {name} in the path
    query: tuple[Param, ...] = ()
    body: str | None = None  # name of the JSON body's schema
    responses: Mapping[int, str] = field(default_factory=dict)
    # A signed URL token (query ``token``, ``nvr.api.urltokens``) may stand for the bearer token: for
    # what players fetch, as they can't send an Authorization header.
    url_token: bool = False

    def __post_init__(self) -> None:
        named = set(re.findall(r"{(\w+)}", self.path))
        if named != set(self.ids):
            raise ValueError(f"{self.method} {self.path}: path ids {sorted(named)} but kinds for {sorted(self.ids)}")
        if self.url_token and (self.role is None or URL_TOKEN not in {p.name for p in self.query}):
            raise ValueError(f"{self.method} {self.path}: a URL token route needs a role and the "
                             f"{URL_TOKEN!r} query parameter")

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


ROUTE_TABLE: web.AppKey[dict[tuple[str, str], Route]] = web.AppKey("nvr.routes")
IDS: web.RequestKey[dict[str, str]] = web.RequestKey("nvr.ids")
QUERY: web.RequestKey[dict[str, Any]] = web.RequestKey("nvr.query")
BODY: web.RequestKey[dict[str, Any]] = web.RequestKey("nvr.body")


def route_of(request: web.Request) -> Route | None:
    """The table's route of this request (None for no route: the router answers 404/405)."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return request.app[ROUTE_TABLE].get((method, resource.canonical))


def parse_query(route: Route, query: Mapping[str, str]) -> dict[str, Any]:
    """The route's query parameters, parsed; every declared one is present (its default when absent)."""
    specs = {p.name: p for p in route.query}
    seen: set[str] = set()
    for key, value in query.items():  # every pair: a repeated key comes twice
        if key not in specs:
            hint = f"; accepted: {', '.join(sorted(specs))}" if specs else "; this route takes none"
            raise invalid(key, f"unknown query parameter {key!r}{hint}")
        if key in seen:
            raise invalid(key, f"query parameter {key!r} given more than once")
        if "\x00" in value:
            raise invalid(key, f"{key}: the value contains NUL (%00), which no parameter accepts")
        seen.add(key)
    out: dict[str, Any] = {}
    for p in route.query:
        if p.name in query:
            out[p.name] = p.kind.parse(p.name, query[p.name])
        elif p.required:
            raise invalid(p.name, f"{p.name} is required ({p.kind.hint})")
        else:
            out[p.name] = p.default
    if out.get("start") is not None and out.get("end") is not None:
        check_range(out["start"], out["end"])
    return out


BODY_SECONDS = 10.0  # how long a client may take to send its body once the headers are in


def _check_strings(data: Any) -> None:
    """Refuse a NUL or an unpaired surrogate in any string or key, naming where (``a.b[2]``)."""
    stack: list[tuple[str, Any]] = [("", data)]  # a loop, not recursion: the parser allows deep nesting
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(path or "body", key, "a key")  # before the key is part of a name in an answer
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack += [(f"{path}[{i}]", item) for i, item in enumerate(value)]
        elif isinstance(value, str):
            _check_text(path or "body", value, "the value")


def _check_text(where: str, text: str, what: str) -> None:
    if "\x00" in text:
        raise InvalidInput(f"{where}: {what} contains NUL (\\u0000), which no field accepts", field=where)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{where}: {what} contains an unpaired UTF-16 surrogate (not Unicode text)",
                           field=where) from None


def parse_json(raw: bytes) -> Any:
    """``raw`` as strict JSON (RFC 8259): no NaN, Infinity or numbers beyond a double, no repeated keys,
    no NUL or unpaired surrogate in a string (InvalidInput naming what is wrong)."""
    try:
        data = strictjson.loads(raw)
    except strictjson.JsonRefused as e:
        raise InvalidInput(f"body: {e}", **({"field": e.key} if e.key else {})) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"body is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidInput("body is not valid JSON: nested too deeply") from None
    _check_strings(data)
    return data


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body (413 when too large, 415/400 when not a strict JSON object, 408 when slow)."""
    ctype = request.content_type
    if ctype not in JSON_TYPES:
        raise Problem(415, f"send the body as application/json (got {ctype or 'no content type'})")
    try:
        async with asyncio.timeout(BODY_SECONDS):
            raw = await request.read()
    except TimeoutError:
        raise Problem(408, f"the body did not arrive within {BODY_SECONDS:g} s", headers={"Connection": "close"},
                      title="Request timeout") from None
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise InvalidInput("body must be a JSON object")
    return data


@web.middleware
async def validate_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Check the path ids, the query and the body against the route, before the handler runs."""
    route = route_of(request)
    if route is not None:
        request[IDS] = {name: kind.parse(name, request.match_info[name]) for name, kind in route.ids.items()}
        request[QUERY] = parse_query(route, request.query)
        if route.body is not None:
            request[BODY] = await json_body(request)
    return await handler(request)
