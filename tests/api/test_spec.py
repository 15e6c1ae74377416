"""The one validation of a request's input, from each route's spec: query, path ids, body.

The parsing rules are tested on the specs directly (no server); the table
rows go through the real server, so the middleware order (auth, then input)
and the problem answers are the ones clients get.
"""

from __future__ import annotations

import pytest
from multidict import MultiDict

from nvr.api.app import ROUTES
from nvr.api.holds import HOLD
from nvr.api.spec import (
    CAMERA,
    CURSOR,
    END,
    LIMIT,
    SEGMENT,
    START,
    Choice,
    Param,
    Route,
    Text,
    parse_query,
)
from nvr.base.errors import InvalidInput, NotFound
from tests.api.conftest import A
from tests.api.support import body_kw, problem_of


async def _noop(request):  # a handler for specs under test
    raise AssertionError("not called")


def _route(*query: Param) -> Route:
    return Route("GET", "/x", _noop, "viewer", "test", tag="test", query=query)


def _error(route: Route, query: dict[str, str]) -> InvalidInput:
    with pytest.raises(InvalidInput) as err:
        parse_query(route, query)
    return err.value


def test_every_declared_parameter_is_handed_over_parsed_or_default():
    route = _route(START, END, LIMIT, CURSOR)
    assert parse_query(route, {}) == {"start": None, "end": None, "limit": 100, "cursor": None}
    got = parse_query(route, {"start": "1970-01-01T00:00:01Z", "end": "1970-01-01T00:00:02+00:00", "limit": "7",
                              "cursor": "123456789012345"})
    assert got == {"start": 1000, "end": 2000, "limit": 7, "cursor": 123456789012345}


def test_query_errors_name_the_parameter():
    route = _route(START, END.as_required(), LIMIT, Param("state", Choice(("a", "b")), "s", default="a"),
                   Param("who", Text(1, 3), "w"))
    cases = {
        "colour": ({"end": "2026-01-01T00:00:00Z", "colour": "red"}, "unknown query parameter 'colour'; accepted:"),
        "end": ({}, "end is required (RFC 3339"),
        "limit": ({"end": "2026-01-01T00:00:00Z", "limit": "1001"}, "limit must be between 1 and 1000, got 1001"),
        "state": ({"end": "2026-01-01T00:00:00Z", "state": "c"}, "state must be one of a, b, got 'c'"),
        "who": ({"end": "2026-01-01T00:00:00Z", "who": "four"}, "who must be 1-3 characters"),
    }
    for name, (query, fragment) in cases.items():
        e = _error(route, query)
        assert e.context["parameter"] == name and fragment in str(e), (name, str(e))
    e = _error(route, {"start": "2026-01-01T00:00:01Z", "end": "2026-01-01T00:00:00Z"})
    assert (e.context["parameter"], str(e)) == ("end", "end must be after start")
    assert "this route takes none" in str(_error(_route(), {"x": "1"}))
    assert "given more than once" in str(_error(route, MultiDict([("limit", "1"), ("limit", "2")])))


def test_one_cursor_rule_for_every_paged_route():
    paged = [r for r in ROUTES if any(p.name == "cursor" for p in r.query)]
    assert {r.handler.__name__ for r in paged} == {"list_segments", "audit_log"}
    assert all(CURSOR in r.query for r in paged)
    assert "next_cursor" in str(_error(_route(CURSOR), {"cursor": "1" * 16}))


def test_path_ids():
    assert CAMERA.parse("id", "gate-1") == "gate-1" and SEGMENT.parse("id", "gate-1:42") == "gate-1:42"
    with pytest.raises(InvalidInput, match="is not a camera id"):
        CAMERA.parse("id", "gate-1\n")  # the whole value, not a prefix
    with pytest.raises(InvalidInput, match="is not a segment id"):
        SEGMENT.parse("id", "gate-1:")
    with pytest.raises(NotFound, match="hold 'not-a-hold' does not exist"):
        HOLD.parse("id", "not-a-hold")  # an id the server never makes is simply not found


def test_every_path_id_has_a_kind():
    with pytest.raises(ValueError, match="path ids"):
        Route("GET", "/x/{id}", _noop, None, "test", tag="test")


# ---------------------------------------------------------------------- through the server

BAD_INPUT = [
    ("GET", f"/api/v1/cameras/{A}/segments?colour=red", None, 400, "unknown query parameter 'colour'"),
    ("GET", f"/api/v1/cameras/{A}/segments?limit=1&limit=2", None, 400, "more than once"),
    ("GET", "/api/v1/cameras?x=1", None, 400, "this route takes none"),
    ("POST", "/api/v1/cameras", [1, 2], 400, "JSON object"),
    ("POST", "/api/v1/cameras", "not json", 400, "not valid JSON"),
    ("POST", "/api/v1/cameras", {"id": "x1", "url": "rtsp://h/" + "x" * 70_000}, 413, "too large"),
    ("PUT", f"/api/v1/cameras/{A}", {}, 405, "not allowed"),
    ("GET", "/api/v1/nothing-here", None, 404, "no route"),
]


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="package")
@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), BAD_INPUT)
async def test_bad_input_gets_a_precise_problem(api, method, path, body, status, fragment):
    await problem_of(await api.request(method, path, "admin", **body_kw(body)), status, fragment)


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="package")
async def test_input_is_checked_after_the_token(api):
    # A bad query from a caller without a token learns nothing about the route's parameters.
    await problem_of(await api.get(f"/api/v1/cameras/{A}/segments?colour=red", None), 401)
    await problem_of(await api.get("/api/v1/audit?limit=0", "viewer"), 403)


# ---------------------------------------------------------------------- strict input (issue 12)

CAM = '{"id": "x1", "url": "rtsp://h/x"'  # a camera body, to be closed by each case
STRICT_BODIES = [  # (raw body, where the problem is named, detail fragment)
    (CAM + ', "segment_seconds": NaN}', None, "NaN is not JSON"),
    (CAM + ', "segment_seconds": Infinity}', None, "Infinity is not JSON"),
    (CAM + ', "segment_seconds": -Infinity}', None, "-Infinity is not JSON"),
    (CAM + ', "segment_seconds": 1e999}', None, "too large for a JSON number"),
    (CAM + ', "name": "a", "name": "b"}', "name", "key 'name' given more than once"),
    (CAM + ', "name": "gate\\u0000"}', "name", "name: the value contains NUL"),
    ('{"id": "x1", "url": "rtsp://h/x\\u0000"}', "url", "url: the value contains NUL"),
    (CAM + ', "na\\u0000me": "gate"}', "body", "a key contains NUL"),
    (CAM + ', "name": "\\ud800"}', "name", "unpaired UTF-16 surrogate"),
    ("[" * 20_000, None, "nested too deeply"),
    ('{"id": "evil\\n", "url": "rtsp://h/x"}', "id", "id: 'evil\\n' must be 1-63 of"),
]


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="package")
@pytest.mark.parametrize(("raw", "field", "fragment"), STRICT_BODIES)
async def test_a_body_that_is_not_strict_json_is_refused_naming_the_problem(api, raw, field, fragment):
    problem = await problem_of(await api.request("POST", "/api/v1/cameras", "admin", **body_kw(raw)), 400, fragment)
    assert problem.get("field") == field
    assert api.srv.cameras.get("x1") is None and api.srv.cameras.get("evil\n") is None


BAD_TIMES = ["2026-11-29T10:00:00Z%00", "2026-11-29T10:00:00Z%0A", "2026-W49-1T00:00Z",
             "%EF%BC%92%EF%BC%90%EF%BC%92%EF%BC%96-11-29T10:00:00Z"]  # the last: fullwidth digits ２０２６


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="package")
@pytest.mark.parametrize("raw", BAD_TIMES)
@pytest.mark.parametrize("name", ["start", "end"])
async def test_a_time_that_is_not_strict_rfc3339_is_refused_naming_the_parameter(api, raw, name):
    other = "end=2026-11-29T11:00:00Z" if name == "start" else "start=2026-11-29T09:00:00Z"
    resp = await api.get(f"/api/v1/cameras/{A}/timeline?{name}={raw}&{other}", "viewer")
    problem = await problem_of(resp, 400, name)
    assert problem["parameter"] == name


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="package")
@pytest.mark.parametrize("path", ["/api/v1/cameras/evil%0A", f"/api/v1/cameras/{A}%0A", f"/api/v1/cameras/{A}%00",
                                  f"/api/v1/cameras/{A}%0A/segments", f"/api/v1/segments/{A}:1%0A"])
async def test_an_id_with_a_trailing_newline_or_nul_is_refused_on_lookup(api, path):
    problem = await problem_of(await api.get(path, "admin"), 400, "is not a")
    assert problem["parameter"] == "id"


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="package")
async def test_a_nul_in_a_query_value_is_refused_naming_the_parameter(api):
    problem = await problem_of(await api.get("/api/v1/audit?actor=token:viewer%00", "admin"), 400, "NUL")
    assert problem["parameter"] == "actor"
