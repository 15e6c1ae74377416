"""The WebSocket feed plays in a real browser: Debian's Chromium, headless, through nvr's own MSE player module."""

from __future__ import annotations

import pytest

from tests.live.conftest import TC
from tests.support.timecode import SCAN_HEIGHT, SCAN_WIDTH, decode_scan

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]

PAGE = """<!doctype html><meta charset="utf-8"><video id="v" muted playsinline></video>
<canvas id="c" width="SCAN_WIDTH" height="SCAN_HEIGHT"></canvas>
<script type="module">
  import { LivePlayer } from "/console/liveplayer.js";
  const video = document.getElementById("v");
  const player = new LivePlayer(video, new URLSearchParams(location.search).get("src"),
                                { onState: (s, why) => window.states.push(s + (why ? ": " + why : "")) });
  window.states = [];
  window.player = player;
  // One frame as the page shows it, scaled to the time code's scan size, in grey levels.
  window.grab = () => {
    const c = document.getElementById("c"), g = c.getContext("2d", { willReadFrequently: true });
    g.drawImage(video, 0, 0, c.width, c.height);
    const rgba = g.getImageData(0, 0, c.width, c.height).data, grey = [];
    for (let i = 0; i < rgba.length; i += 4) grey.push(Math.round((rgba[i] + rgba[i + 1] + rgba[i + 2]) / 3));
    return { grey, shown: player.wallClockAt(video.currentTime), t: video.currentTime, now: Date.now() };
  };
  player.start();
</script>""".replace("SCAN_WIDTH", str(SCAN_WIDTH)).replace("SCAN_HEIGHT", str(SCAN_HEIGHT))



async def test_the_websocket_feed_plays_through_mse_and_shows_the_capture_time(live, chromium_path):
    from playwright.async_api import async_playwright

    made = await live.json("POST", f"/api/v1/cameras/{TC}/live-links", "browser", status=201, json={"seconds": 120})
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, headless=True,
                                           args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required",
                                                 # The test page is injected (page.route), so Chromium can't
                                                 # tell it came from the same loopback server as the socket.
                                                 "--disable-features=LocalNetworkAccessChecks"])
        try:
            page = await browser.new_page()
            await page.route(lambda url: "/__test__/live.html" in url,
                             lambda route: route.fulfill(body=PAGE, content_type="text/html"))
            said: list[str] = []
            page.on("console", lambda m: said.append(f"console {m.type}: {m.text}"))
            page.on("pageerror", lambda e: said.append(f"page error: {e}"))
            await page.goto(f"{live.base}/__test__/live.html?src={made['ws'].replace('&', '%26')}")
            # Playing: the playhead moves on through three seconds of live video.
            try:
                await page.wait_for_function("document.getElementById('v').currentTime >= 3", timeout=30_000)
            except Exception:
                state = await page.evaluate("({states: window.states, stats: window.player && window.player.stats,"
                                            " t: document.getElementById('v').currentTime,"
                                            " err: document.getElementById('v').error && document.getElementById('v').error.message})")
                raise AssertionError(f"the live video did not play: {state} {said}") from None
            grabs = []
            for _ in range(5):
                grabs.append(await page.evaluate("window.grab()"))
                await page.wait_for_timeout(300)  # a browser's frames advance in real time: nothing to wait on
            states = await page.evaluate("window.states")
        finally:
            await browser.close()
    assert "playing" in states and not any(s.startswith(("ended", "unsupported")) for s in states), (states, said)
    for g in grabs:
        captured = decode_scan(bytes(g["grey"]))
        assert captured is not None, ("the frame shown holds no readable time code", said)
        # The frame on screen is the one the player's clock names, and it is live.
        assert abs(g["shown"] - captured) <= 1000, (g["shown"], captured)
        assert 0 <= g["now"] - captured < 5000, (g["now"], captured)
