"""Every control the API has is reachable from the console, and the console asks for nothing the API lacks.

A pure check of the console's modules against the route table (no browser): a route is reached when a module
names its path (a path parameter is any ``${...}``; a camera's routes may be built on a variable holding the
camera's URL), with its method for state-changing ones; the few routes a person never needs in a page are listed
with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import nvr.console
from nvr.api.app import ROUTES

STATIC = Path(nvr.console.__file__).parent / "static"
JS = {p.name: p.read_text() for p in sorted(STATIC.glob("*.js"))}
INTERP = r"\$\{[^}]*\}"
CAMERA = "/api/v1/cameras/{id}"

# Routes no page names, and why that is right.
NOT_NAMED = {
    ("GET", "/healthz"): "for load balancers and monitoring; the System page shows the same alarms from /status",
    ("GET", "/metrics"): "Prometheus text for a scraper, not for people",
    ("GET", "/api/v1/openapi.json"): "the API's description, for programs",
    ("GET", "/console/{file}"): "the console's own files, loaded by the browser from index.html",
    ("GET", "/api/v1/segments/{id}/init.mp4"): "reached through the URIs of the HLS playlist (vodplayer.js)",
    ("GET", "/api/v1/segments/{id}/media.m4s"): "reached through the URIs of the HLS playlist (vodplayer.js)",
    ("GET", "/api/v1/segments/{id}"): "a segment's metadata: the camera page lists the same rows from "
                                      "/cameras/{id}/segments",
    ("GET", "/api/v1/cameras/{id}/live.mp4"): "the live link's answer (mp4) shown for players, camera.js",
    ("GET", "/api/v1/exports/{id}"): "polled through the export's status_url (camera.js)",
    ("GET", "/api/v1/exports/{id}/bundle"): "downloaded through the export's bundle_url (camera.js)",
    ("PUT", "/api/v1/retention/cameras/{id}"): "the rules editor saves the whole rule set (PUT /api/v1/retention), "
                                               "a camera's rule included",
    ("DELETE", "/api/v1/retention/cameras/{id}"): "as above: a camera's rule is removed by saving the rules without it",
}


def _path_pattern(template: str) -> str:
    return re.sub(r"\\\{\w+\\\}", INTERP, re.escape(template))


def _named(method: str, template: str, js: str) -> bool:
    paths = [_path_pattern(template)]
    if template.startswith(CAMERA + "/"):  # `${path}/clip.mp4` with path = `/api/v1/cameras/${enc(id)}`
        paths.append(INTERP + re.escape(template.removeprefix(CAMERA)))
    for p in paths:
        end = r"(?![\w/-])[^`\"']*[`\"']"
        patterns = [rf"[`\"']{p}{end}"] if method == "GET" else [
            rf"api\(\"{method}\",\s*[`\"]{p}{end}", rf"fetch\([`\"]{p}{end},\s*\{{\s*method:\s*\"{method}\""]
        if any(re.search(pattern, js) for pattern in patterns):
            return True
    return False


def test_every_route_is_named_by_a_page_or_listed_with_its_reason():
    js = "\n".join(JS.values())
    unreached = [(r.method, r.path) for r in ROUTES if (r.method, r.path) not in NOT_NAMED and not _named(r.method, r.path, js)]
    assert unreached == [], f"no console page reaches {unreached}: add the control, or the reason to NOT_NAMED"
    named_anyway = [k for k in NOT_NAMED if _named(*k, js)]
    assert named_anyway == [], f"listed as not named, but a page names them: {named_anyway}"
    stale = [k for k in NOT_NAMED if k not in {(r.method, r.path) for r in ROUTES}]
    assert stale == [], f"NOT_NAMED lists routes that no longer exist: {stale}"


def test_every_api_path_a_page_names_is_a_route():
    templates = [re.compile(_path_pattern(r.path).replace(INTERP, r"[^/?`\"']+") + r"(?:[?$`\"']|$)") for r in ROUTES]
    # Literal paths and their parameters as the modules write them, up to the query or the end of the string.
    named = {m.group(0).rstrip("`\"'?") for m in re.finditer(r"/api/v1/(?:[\w.-]+|" + INTERP + r")(?:/(?:[\w.-]+|"
                                                              + INTERP + r"))*", "\n".join(JS.values()))}
    unknown = sorted(p for p in named if not any(t.match(p + "`") for t in templates))
    assert unknown == [], f"the console names paths the API does not have: {unknown}"
