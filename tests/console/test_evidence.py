"""The evidence tools of the camera page in a real browser: select a range, list and verify it, hold it, export it.

The bundle the browser downloads is checked by ``nvr verify-bundle`` in its own process, with nothing but the
node's public key downloaded from the System page (what a court's expert has). Screenshots: docs/console/evidence.png, camera-sync.png.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from tests.conftest import wait_segments
from tests.console.conftest import CLIP, TC
from tests.console.test_console import SHOTS, _browser, _login

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]


async def _drag(page, t0: int, t1: int) -> None:
    """Drag across the timeline from capture time t0 to t1 (ms)."""
    box = await page.eval_on_selector("#timeline", "t => { const b = t.getBoundingClientRect(); "
                                                   "return {x: b.left, y: b.top, w: b.width, h: b.height, "
                                                   "start: +t.dataset.start, end: +t.dataset.end}; }")
    x = lambda t: box["x"] + (t - box["start"]) / (box["end"] - box["start"]) * box["w"]  # noqa: E731
    y = box["y"] + box["h"] / 2
    await page.mouse.move(x(t0), y)
    await page.mouse.down()
    await page.mouse.move((x(t0) + x(t1)) / 2, y, steps=4)
    await page.mouse.move(x(t1), y, steps=4)
    await page.mouse.up()


async def test_a_range_selected_on_the_timeline_is_verified_held_and_exported(console, chromium_path, tmp_path):
    from playwright.async_api import async_playwright

    index = console.srv.backend.index
    await wait_segments(console.srv, TC, 5, timeout=60)
    rows = index.segments(TC)
    t0, t1 = rows[1].start_ms + 1000, rows[3].start_ms + 1000  # from within one segment to within another
    async with async_playwright() as pw:
        browser = await _browser(pw, chromium_path)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000}, bypass_csp=True, accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await _login(page, console.base, "eve")
            await page.wait_for_selector(".tile")
            assert await page.is_visible("#nav-audit")  # an evidence officer's pages ...
            assert not await page.is_visible("#nav-admin-cameras")  # ... and not an admin's
            await page.goto(f"{console.base}/#camera/{TC}")
            await page.wait_for_selector("#timeline .rec")
            # A pixel of the 30-minute bar is ~1.5 s: select around the recording, zoom to it, select finely.
            await _drag(page, rows[0].start_ms - 20_000, rows[-1].end_ms + 20_000)
            await page.click("#zoom-in")
            await page.wait_for_function("location.hash.includes('from=') && document.querySelector('#timeline .rec')"
                                         " && document.getElementById('selection').hidden")
            span = await page.eval_on_selector("#timeline", "t => +t.dataset.end - +t.dataset.start")
            assert 30_000 < span < 200_000, span
            await _drag(page, t0, t1)
            start = int(await page.get_attribute("#selection", "data-start"))
            end = int(await page.get_attribute("#selection", "data-end"))
            assert abs(start - t0) < 500 and abs(end - t1) < 500, (start - t0, end - t1)
            covered = [r for r in index.segments(TC) if r.end_ms > start and r.start_ms < end]

            # The segments of the selection, with the footage hashes the ledger holds.
            await page.click("#list-segments")
            await page.wait_for_selector("#segments tbody tr")
            listed = await page.eval_on_selector_all("#segments tbody tr",
                                                     "rs => rs.map(r => [r.dataset.segment, r.dataset.sha256])")
            assert listed == [[r.id, r.sha256] for r in covered], listed

            # Verify: a row per segment of the range, each in words.
            await page.click("#verify-form button")
            await page.wait_for_selector("#verify-report")
            statuses = await page.eval_on_selector_all("#verify-report tbody tr", "rs => rs.map(r => r.dataset.status)")
            ids = await page.eval_on_selector_all("#verify-report tbody tr", "rs => rs.map(r => r.dataset.segment)")
            assert ids == [r.id for r in covered] and set(statuses) <= {"ok", "unanchored"}, statuses
            assert "hashes, decryption, ledger" in await page.text_content("#verify-report") or "unanchored" in statuses

            # A hold of the range: placed for the person, and on the timeline at once.
            await page.fill("#hold-form input[name=case_id]", "2026-0417")
            await page.fill("#hold-form input[name=reason]", "burglary, Block C stairwell")
            await page.click("#hold-form button")
            await page.wait_for_selector("#hold-placed")
            hold_id = await page.get_attribute("#hold-placed", "data-hold")
            assert await page.query_selector(f'#timeline .hold[data-hold="{hold_id}"]')
            await page.screenshot(path=str(SHOTS / "evidence.png"))
            placed = [e for e in index.audit_entries(action="hold.place") if e.actor == "user:eve"]
            assert placed and placed[-1].target == hold_id

            # A case bundle of the range: progress shown, downloaded when done.
            await page.fill("#export-form input[name=case_id]", "2026-0417")
            await page.fill("#export-form input[name=reason]", "for the prosecutor")
            async with page.expect_download(timeout=120_000) as download:
                await page.click("#export-form button")
            bundle = tmp_path / "bundle.zip"
            await (await download.value).save_as(bundle)
            assert await page.get_attribute("#export-status", "data-state") == "done"
            # The public key the court checks it with, from the System page, with its fingerprint.
            await page.goto(f"{console.base}/#system")
            await page.wait_for_selector('#keys tr[data-current="true"]')
            keys = await page.evaluate("fetch('/api/v1/keys').then(r => r.json())")
            current = next(k for k in keys["keys"] if k["current"])
            assert current["fingerprint_sha256"] in await page.text_content('#keys tr[data-current="true"]')
            async with page.expect_download() as download:
                await page.click('#keys tr[data-current="true"] a')
            pem = tmp_path / "node.pem"
            await (await download.value).save_as(pem)
            assert pem.read_text() == current["public_key_pem"]
            assert errors == [], errors

            # Two cameras in sync: both play, each showing the same capture time.
            await page.goto(f"{console.base}/#camera/{TC}?with={CLIP}")
            await page.wait_for_selector("#vod1")
            clip_rows = index.segments(CLIP)
            target = max(rows[2].start_ms, clip_rows[1].start_ms) + 1500
            box = await page.eval_on_selector("#timeline", "t => { const b = t.getBoundingClientRect(); "
                                                           "return {x: b.left, y: b.top, w: b.width, h: b.height, "
                                                           "start: +t.dataset.start, end: +t.dataset.end}; }")
            x = box["x"] + (target - box["start"]) / (box["end"] - box["start"]) * box["w"]
            await page.mouse.click(x, box["y"] + box["h"] / 2)
            await page.wait_for_function("['vod', 'vod1'].every(id => document.getElementById(id).currentTime > 0)",
                                         timeout=30_000)
            await page.wait_for_function(
                "(() => { const c = [...document.querySelectorAll('.vod .clock')].map(e => Date.parse(e.textContent"
                ".replace(' ', 'T') + 'Z')); return c.length === 2 && c.every(Number.isFinite) && "
                "Math.abs(c[0] - c[1]) < 1000; })()", timeout=30_000)
            await page.screenshot(path=str(SHOTS / "camera-sync.png"))
            assert errors == [], errors
        finally:
            await browser.close()

    # The court's check, in its own process, trusting nothing but the node's public key.
    empty = tmp_path / "court"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NVR_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nvr.cli", "verify-bundle", str(bundle), "--key", str(pem), "--data-dir", str(empty),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, (out.decode(), err.decode())
    assert "bundle verified" in out.decode()
    job = [e for e in index.audit_entries(action="export.download") if e.actor == "user:eve"]
    assert job, "the download is audited, naming the person"
