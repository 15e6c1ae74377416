"""A range's HLS playlist plays in a real browser: Debian's Chromium, headless, with hls.js (Media Source Extensions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvr.base.times import ms_to_rfc3339
from tests.api.conftest import A

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]

HLS_JS = Path(__file__).parent.parent / "support" / "vendor" / "hls.js" / "hls.light.min.js"
PLAYER = """<!doctype html><meta charset="utf-8"><video id="v" muted playsinline></video>
<script src="/__test__/hls.js"></script>
<script>
  window.report = {errors: [], levels: 0};
  const video = document.getElementById("v");
  const hls = new Hls({enableWorker: false});
  hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) window.report.errors.push(d.type + ": " + d.details); });
  hls.on(Hls.Events.MANIFEST_PARSED, (_, d) => { window.report.levels = d.levels.length; video.play(); });
  hls.loadSource(new URLSearchParams(location.search).get("src"));
  hls.attachMedia(video);
  video.playbackRate = 4;
</script>"""



async def test_a_playlist_plays_in_chromium_with_hls_js(api, chromium_path):
    from playwright.async_api import async_playwright

    rows = api.srv.backend.index.segments(A)[1:5]
    made = await api.json("POST", f"/api/v1/cameras/{A}/vod-links", "viewer", status=201,
                          json={"start": ms_to_rfc3339(rows[0].start_ms), "end": ms_to_rfc3339(rows[-1].end_ms)})
    recorded = sum(r.duration_ms for r in rows) / 1000
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, headless=True,
                                           args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        try:
            page = await browser.new_page()
            # The player page is served on nvr's own origin (as the console will be), so hls.js's requests
            # are same-origin: nvr sends no CORS headers.
            await page.route(lambda url: "/__test__/player.html" in url,
                             lambda route: route.fulfill(body=PLAYER, content_type="text/html"))
            await page.route(lambda url: url.endswith("/__test__/hls.js"),
                             lambda route: route.fulfill(body=HLS_JS.read_bytes(), content_type="text/javascript"))
            said: list[str] = []
            page.on("console", lambda m: said.append(f"console {m.type}: {m.text}"))
            page.on("pageerror", lambda e: said.append(f"page error: {e}"))
            supported = await page.evaluate("MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.42c01e\"')")
            assert supported is not False
            await page.goto(f"{api.base}/__test__/player.html?src={made['playlist'].replace('&', '%26')}")
            # Played (at 4x) to within a second of the footage's end, with no fatal error on the way.
            await page.wait_for_function(
                f"window.report && (window.report.errors.length > 0"
                f" || document.getElementById('v').currentTime >= {recorded - 1})", timeout=60_000)
            report = await page.evaluate("window.report")
            video = await page.evaluate("(() => { const v = document.getElementById('v');"
                                        " return {t: v.currentTime, w: v.videoWidth, h: v.videoHeight}; })()")
        finally:
            await browser.close()
    assert report["errors"] == [] and report["levels"] == 1, (report, said)
    assert video["w"] == 320 and video["h"] == 240 and video["t"] >= recorded - 1, video
