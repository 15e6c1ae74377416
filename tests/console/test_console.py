"""The console in a real browser (Debian's Chromium, headless): log in, the wall plays, scopes, CSRF, logout.

Screenshots of each page are written to docs/console/ (shown in docs/console.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nvr.base.times import parse_rfc3339
from tests.api.support import recorded_gap
from tests.console.conftest import CLIP, PASSWORD, TC
from tests.support.timecode import SCAN_HEIGHT, SCAN_WIDTH, decode_scan

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
GRAB = """(camera) => {
  const v = document.querySelector(`.tile[data-camera="${camera}"] video`);
  const c = document.createElement("canvas");
  c.width = %d; c.height = %d;
  const g = c.getContext("2d", { willReadFrequently: true });
  g.drawImage(v, 0, 0, c.width, c.height);
  const rgba = g.getImageData(0, 0, c.width, c.height).data, grey = [];
  for (let i = 0; i < rgba.length; i += 4) grey.push(Math.round((rgba[i] + rgba[i + 1] + rgba[i + 2]) / 3));
  return { grey, now: Date.now(), clock: document.querySelector(`.tile[data-camera="${camera}"] .clock`).textContent };
}""" % (SCAN_WIDTH, SCAN_HEIGHT)  # noqa: UP031 (a JavaScript template literal is full of braces)


async def _browser(pw, path):
    return await pw.chromium.launch(executable_path=path, headless=True,
                                    args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])


async def _login(page, base: str, name: str, password: str = PASSWORD) -> None:
    await page.goto(f"{base}/")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")


async def test_a_person_logs_in_watches_the_wall_and_logs_out(console, chromium_path):
    from playwright.async_api import async_playwright

    index = console.srv.backend.index
    SHOTS.mkdir(parents=True, exist_ok=True)
    page_resp = await console.http.get(f"{console.base}/")
    assert "script-src 'self'" in page_resp.headers["Content-Security-Policy"]
    assert "unsafe" not in page_resp.headers["Content-Security-Policy"]
    async with async_playwright() as pw:
        browser = await _browser(pw, chromium_path)
        try:
            # Playwright's wait_for_function evaluates strings, which the console's CSP forbids: bypassed for the
            # test's own probes only (the CSP itself is checked below).
            page = await browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # A wrong password: refused in words, and audited with the client's address.
            await _login(page, console.base, "alice", "not the password")
            await page.wait_for_selector("#message:not([hidden])")
            assert "wrong name or password" in await page.text_content("#message")
            await page.screenshot(path=str(SHOTS / "login.png"))
            failed = index.audit_entries(action="login.failed", target="alice")
            assert failed and failed[-1].detail["client"] == "127.0.0.1"
            # The right one: the wall, a live tile per camera, each playing.
            await _login(page, console.base, "alice")
            await page.wait_for_selector(f'.tile[data-camera="{TC}"]')
            await page.wait_for_function(
                "[...document.querySelectorAll('.tile video')].length === 2 && "
                "[...document.querySelectorAll('.tile video')].every(v => v.currentTime > 2)", timeout=40_000)
            grab = await page.evaluate(GRAB, TC)
            captured = decode_scan(bytes(grab["grey"]))
            assert captured is not None and 0 <= grab["now"] - captured < 5000, grab["now"]
            assert grab["clock"].startswith("20"), grab["clock"]  # the capture time of the frame shown
            await page.wait_for_function("document.querySelector('.tile .health').textContent.length > 0")
            await page.screenshot(path=str(SHOTS / "wall.png"))
            assert index.audit_entries(action="login", target="alice")
            assert [e for e in index.audit_entries(action="live.start") if e.actor == "user:alice"]
            # A state-changing request without the session's CSRF token is refused.
            status = await page.evaluate("fetch('/api/v1/logout', {method: 'POST', credentials: 'same-origin'})"
                                         ".then(r => r.status)")
            assert status == 403
            # Log out: the session is over for the browser too.
            await page.click("#logout")
            await page.wait_for_selector("form.login")
            status = await page.evaluate("fetch('/api/v1/session', {credentials: 'same-origin'}).then(r => r.status)")
            assert status == 401
            assert errors == [], errors
        finally:
            await browser.close()


async def test_a_camera_scoped_person_sees_only_their_cameras(console, chromium_path):
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await _browser(pw, chromium_path)
        try:
            # Under the console's own CSP (no bypass): nothing the pages do may be refused by it.
            page = await browser.new_page()
            refused: list[str] = []
            page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
            await _login(page, console.base, "bob")
            await page.wait_for_selector(f'.tile[data-camera="{CLIP}"]')
            tiles = await page.eval_on_selector_all(".tile", "ts => ts.map(t => t.dataset.camera)")
            assert tiles == [CLIP]
            # Four tiles by default: two columns, laid out through the CSSOM the CSP allows.
            columns = await page.eval_on_selector("#wall", "w => getComputedStyle(w).gridTemplateColumns")
            assert len(columns.split()) == 2, columns
            # The System page: their camera's recording only, no word of the others, no cluster for a viewer.
            await page.click("#nav-system")
            await page.wait_for_selector("#recording tbody tr")
            rows = await page.eval_on_selector_all("#recording tbody tr", "rs => rs.map(r => r.dataset.camera)")
            assert rows == [CLIP], rows
            assert TC not in await page.text_content("#system")
            assert await page.query_selector("#keys tbody tr") and not await page.query_selector("#cluster")
            assert refused == [], refused
            # Their direct requests for another camera's URLs: 404, as for a camera that does not exist.
            for path in (f"/api/v1/cameras/{TC}/status", f"/api/v1/cameras/{TC}/live.mp4",
                         f"/api/v1/cameras/{TC}/segments", "/api/v1/cameras/no-such-camera/status"):
                status = await page.evaluate(f"fetch('{path}', {{credentials: 'same-origin'}}).then(r => r.status)")
                assert status == 404, path
        finally:
            await browser.close()


VOD_STATE = """() => { const v = document.getElementById('vod'), b = v.buffered, r = [];
  for (let i = 0; i < b.length; i++) r.push([b.start(i), b.end(i)]);
  return {t: v.currentTime, paused: v.paused, ready: v.readyState, error: v.error && v.error.message, buffered: r,
          message: document.getElementById('message').textContent,
          clicked: document.getElementById('timeline').dataset.clicked}; }"""


async def test_the_camera_day_shows_a_real_gap_and_a_click_plays_that_instant(console, rtsp, chromium_path):
    from playwright.async_api import async_playwright

    rows, after = await recorded_gap(console, rtsp, CLIP, "cam5")
    hole = (rows[after - 1].end_ms, rows[after].start_ms)
    tc_rows = console.srv.backend.index.segments(TC)
    async with async_playwright() as pw:
        browser = await _browser(pw, chromium_path)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)
            await _login(page, console.base, "alice")
            await page.wait_for_selector(".tile")
            # The gap that really happened is on the timeline, where it happened.
            await page.goto(f"{console.base}/#camera/{CLIP}")
            await page.wait_for_selector("#timeline .gap")
            gaps = await page.eval_on_selector_all("#timeline .gap", "gs => gs.map(g => [+g.dataset.start, +g.dataset.end])")
            assert any(abs(s - hole[0]) < 1500 and abs(e - hole[1]) < 1500 for s, e in gaps), (gaps, hole)
            # A click on the time-coded camera's timeline plays from the instant clicked.
            await page.goto(f"{console.base}/#camera/{TC}")
            await page.wait_for_selector("#timeline .rec")
            box = await page.eval_on_selector("#timeline", "t => { const b = t.getBoundingClientRect(); "
                                                           "return {x: b.left, y: b.top, w: b.width, h: b.height, "
                                                           "start: +t.dataset.start, end: +t.dataset.end}; }")
            target = tc_rows[2].start_ms + 1300
            x = box["x"] + (target - box["start"]) / (box["end"] - box["start"]) * box["w"]
            await page.mouse.click(x, box["y"] + box["h"] / 2)
            try:
                await page.wait_for_function("document.getElementById('vod').currentTime > 0 && "
                                             "!document.getElementById('vod').paused", timeout=30_000)
            except Exception as e:  # what the page knew, for whoever reads the failure
                state = await page.evaluate(VOD_STATE)
                raise AssertionError(f"playback did not start: {state}") from e
            await page.evaluate("document.getElementById('vod').pause()")
            await page.wait_for_function("document.getElementById('vclock').textContent.length > 0")
            await page.wait_for_timeout(300)  # the page's clock refreshes every 200 ms: let it show the paused frame
            clicked = int(await page.get_attribute("#timeline", "data-clicked"))
            grab = await page.evaluate(GRAB.replace('document.querySelector(`.tile[data-camera="${camera}"] video`)',
                                                    "document.getElementById('vod')").replace(
                                           'document.querySelector(`.tile[data-camera="${camera}"] .clock`)',
                                           "document.getElementById('vclock')"), TC)
            await page.screenshot(path=str(SHOTS / "camera-day.png"))
        finally:
            await browser.close()
    captured = decode_scan(bytes(grab["grey"]))
    assert captured is not None, "the frame shown holds no time code"
    # Within a second of the instant clicked (playback began there and was paused moments later; a frame's
    # capture precedes its placement by the link's latency, docs/timing.md) ...
    assert -1000 <= captured - clicked <= 1500, (captured - clicked, clicked, captured)
    # ... and the clock the page shows is the frame's capture time.
    shown = parse_rfc3339(grab["clock"].replace(" ", "T") + "Z")
    assert abs(shown - captured) <= 1000, (shown, captured)
