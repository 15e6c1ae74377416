"""The admin pages and the audit log in a real browser: cameras (credentials never shown), retention rules saved
only after their preview, people and tokens (a token shown once), the audit log filtered and paged.

One browser launch for all of it (the console suite's time budget). Screenshots: docs/console/admin-cameras.png,
admin-retention.png, admin-people.png, audit.png,
system.png.
"""

from __future__ import annotations

import json
import time

import pytest

from nvr.api.deps import CAMERAS
from tests.console.conftest import CLIP, PASSWORD, TC
from tests.console.test_console import SHOTS, _browser, _login

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]

SECRET = "S3cret-pw9"
GATE = "gate"
GATE_URL = f"rtsp://ops:{SECRET}@127.0.0.1:9/none"
GATE_LIVE = f"rtsp://ops:{SECRET}@127.0.0.1:9/sub"
PERSON = "dora"  # not "carol": tests/console/test_people.py makes her over the API (names are never reused)
BOT = "gate-bot"
RULES = {"default": {"max_age": "30d", "max_bytes": "500GiB"}, "cameras": {CLIP: {"max_age": "20d"}}}
WAIT = 15_000


async def _message(page, fragment: str) -> str:
    """The message shown to the person once it holds ``fragment``."""
    await page.wait_for_function("f => { const m = document.getElementById('message');"
                                 " return !m.hidden && m.textContent.includes(f); }", arg=fragment, timeout=WAIT)
    return await page.text_content("#message")


async def _camera_ids(console) -> set[str]:
    return {c["id"] for c in (await console.json("GET", "/api/v1/cameras"))["cameras"]}


async def test_an_admin_manages_cameras_retention_people_and_reads_the_audit_log(console, chromium_path):
    from playwright.async_api import async_playwright

    index, registry = console.srv.backend.index, console.srv.app[CAMERAS]
    before = await console.json("GET", "/api/v1/retention")
    SHOTS.mkdir(parents=True, exist_ok=True)
    started_ms = (int(time.time()) - 1) * 1000  # a whole second: the audit filter's inputs are to the second
    async with async_playwright() as pw:
        browser = await _browser(pw, chromium_path)
        try:
            # A time zone far from UTC: the audit filter's times must be read as UTC, as its labels say.
            page = await browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True,
                                          timezone_id="America/New_York")
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            dialogs: list[str] = []

            async def accept(dialog):
                dialogs.append(dialog.message)
                await dialog.accept()

            page.on("dialog", accept)
            await _login(page, console.base, "root")
            await page.wait_for_selector("#nav-admin-people")

            # ---------------------------------------------------------------- cameras
            try:
                await page.goto(f"{console.base}/#admin/cameras")
                await page.wait_for_selector(f'#cameras tr[data-camera="{TC}"]', timeout=WAIT)
                add = "#add-camera"
                await page.fill(f"{add} input[name=id]", GATE)
                await page.fill(f"{add} input[name=name]", "Gate")
                await page.fill(f"{add} input[name=url]", GATE_URL)
                await page.fill(f"{add} input[name=live_url]", GATE_LIVE)
                await page.select_option(f"{add} select[name=rtsp_transport]", "udp")
                await page.fill(f"{add} input[name=segment_seconds]", "4")
                await page.click(f"{add} button[type=submit]")
                row = f'#cameras tr[data-camera="{GATE}"]'
                await page.wait_for_selector(row, timeout=WAIT)
                cam = registry.get(GATE)
                assert cam.url == GATE_URL and cam.live_url == GATE_LIVE and cam.rtsp_transport == "udp"
                assert cam.segment_seconds == 4 and cam.name == "Gate"
                shown_url = await page.text_content(f"{row} .url")
                assert "127.0.0.1:9/none" in shown_url and "***" in shown_url, shown_url
                # The secret is nowhere: not in the page, not in the form it was typed into.
                assert SECRET not in await page.content()
                assert await page.input_value(f"{add} input[name=url]") == ""
                assert await page.input_value(f"{add} input[name=live_url]") == ""
                # The edit form: the URLs empty, the redacted ones as placeholders; only the name is sent.
                await page.click(f"{row} button.edit")
                edit = "#camera-edit"
                await page.wait_for_selector(edit)
                values = await page.eval_on_selector_all(f"{edit} input, {edit} select",
                                                         "es => es.map(e => e.value + ' ' + (e.placeholder || ''))")
                assert not [v for v in values if SECRET in v], values
                assert await page.input_value(f"{edit} input[name=url]") == ""
                assert await page.input_value(f"{edit} input[name=live_url]") == ""
                placeholder = await page.get_attribute(f"{edit} input[name=url]", "placeholder")
                assert "***@127.0.0.1:9/none" in placeholder and "leave empty to keep" in placeholder, placeholder
                assert await page.input_value(f"{edit} input[name=name]") == "Gate"
                await page.fill(f"{edit} input[name=name]", "Gate West")
                await page.click(f"{edit} button[type=submit]")
                await page.wait_for_function(f"document.querySelector('{row} td:nth-child(2)')?.textContent === 'Gate West'",
                                             timeout=WAIT)
                assert not await page.query_selector(edit)
                cam = registry.get(GATE)
                assert cam.name == "Gate West" and cam.url == GATE_URL and cam.live_url == GATE_LIVE  # URLs kept
                update = index.audit_entries(action="camera.update", target=GATE)[-1]
                assert update.actor == "user:root" and SECRET not in json.dumps(update.detail), update.detail
                # Disable: the camera stays registered, no longer recorded.
                await page.click(f"{row} button.disable")
                await page.wait_for_selector(f'{row}[data-enabled="false"]', timeout=WAIT)
                assert registry.get(GATE).enabled is False
                assert SECRET not in await page.content()
                await page.screenshot(path=str(SHOTS / "admin-cameras.png"))
                await page.click(f"{row} button.remove")
                await page.wait_for_selector(row, state="detached", timeout=WAIT)
                assert dialogs and GATE in dialogs[-1]
                assert registry.get(GATE) is None and await _camera_ids(console) == {TC, CLIP}
            finally:
                if GATE in await _camera_ids(console):  # the wall of the other tests shows exactly two cameras
                    await console.json("DELETE", f"/api/v1/cameras/{GATE}", status=204)

            # ---------------------------------------------------------------- retention
            try:
                await page.goto(f"{console.base}/#admin/retention")
                await page.wait_for_selector("#rules", timeout=WAIT)
                assert json.loads(await page.input_value("#rules")) == before["rules"]
                assert await page.is_disabled("#save")
                await page.wait_for_selector(f'#effective tr[data-camera="{TC}"]')
                # Rules below the floor: refused in words, the API's detail naming the field.
                await page.fill("#rules", json.dumps({"default": {"max_age": "1s"}}))
                await page.click("#preview")
                assert "max_age" in await _message(page, "max_age")
                assert await page.is_disabled("#save")
                # The rules to save: Save stays disabled until they are previewed.
                await page.fill("#rules", json.dumps(RULES, indent=2))
                assert await page.input_value("#default-max-age") == "30d"  # the simple inputs follow the JSON
                assert await page.is_disabled("#save")
                await page.click("#preview")
                await page.wait_for_selector("#preview-report", timeout=WAIT)
                await page.wait_for_function("!document.getElementById('save').disabled", timeout=WAIT)
                report = await page.eval_on_selector("#preview-report", "r => ({...r.dataset})")
                assert int(report["usageBefore"]) > 0 and int(report["deleteCount"]) == 0, report  # young footage
                assert int(report["usageAfter"]) == int(report["usageBefore"])
                assert set(await page.eval_on_selector_all("#preview-cameras tbody tr", "rs => rs.map(r => r.dataset.camera)")) \
                    == {TC, CLIP}
                # Editing again makes the preview stale: Save is disabled until a new preview.
                await page.fill("#default-max-bytes", "400GiB")
                assert json.loads(await page.input_value("#rules"))["default"]["max_bytes"] == "400GiB"
                assert await page.is_disabled("#save")
                await page.fill("#rules", json.dumps(RULES, indent=2))
                assert not await page.is_disabled("#save")  # exactly the text previewed again
                await page.screenshot(path=str(SHOTS / "admin-retention.png"))
                assert (await console.json("GET", "/api/v1/retention"))["rules"] == before["rules"]  # nothing saved yet
                await page.click("#save")
                await _message(page, "Saved.")
                now = await console.json("GET", "/api/v1/retention")
                assert now["rules"]["default"]["max_age"] == "30d" and now["rules"]["default"]["max_bytes"] == "500GiB"
                assert now["rules"]["cameras"][CLIP]["max_age"] == "20d" and now["changed_by"] == "user:root"
                assert now["effective"][CLIP]["max_age"] == "20d" and now["effective"][TC]["max_age"] == "30d"
                assert await page.is_disabled("#save")
                # The page shows the rules now in force: who changed them, the effective rule of each camera.
                assert json.loads(await page.text_content("#rules-in-force"))["cameras"][CLIP]["max_age"] == "20d"
                assert "user:root" in await page.text_content("#rules-meta")
                assert await page.text_content(f'#effective tr[data-camera="{CLIP}"] td:nth-child(2)') == "20d"
                assert await page.text_content(f'#effective tr[data-camera="{TC}"] td:nth-child(2)') == "30d"
                assert "next run" in await page.text_content("#sweep-status")
                # A sweep now, under the rules just saved: its report (nothing is old enough to go).
                await page.click("#run-sweep")
                await page.wait_for_selector("#sweep-report", timeout=30_000)
                sweep = await page.eval_on_selector("#sweep-report", "r => ({...r.dataset})")
                assert int(sweep["deletedSegments"]) == 0 and int(sweep["run"]) > 0, sweep
                assert [e for e in index.audit_entries(action="retention.run") if e.actor == "user:root"]
            finally:
                await console.json("PUT", "/api/v1/retention", json=before["rules"])

            # ---------------------------------------------------------------- people and tokens
            await page.goto(f"{console.base}/#admin/people")
            await page.wait_for_selector('#users tr[data-user="root"]', timeout=WAIT)
            add = "#add-user"
            await page.fill(f"{add} input[name=name]", PERSON)
            await page.select_option(f"{add} select[name=role]", "viewer")
            await page.fill(f"{add} input[name=password]", "abc")
            await page.click(f"{add} button[type=submit]")
            assert "password" in await _message(page, "10 to 1024 characters")  # the API's detail, in words
            assert index.people.user(PERSON) is None
            assert await page.input_value(f"{add} input[name=password]") == ""
            await page.fill(f"{add} input[name=password]", "a long enough one")
            await page.fill(f"{add} input[name=cameras]", CLIP)
            await page.click(f"{add} button[type=submit]")
            row = f'#users tr[data-user="{PERSON}"]'
            await page.wait_for_selector(row, timeout=WAIT)
            assert await page.input_value(f"{add} input[name=password]") == ""
            user = index.people.user(PERSON)
            assert user.role == "viewer" and user.cameras == [CLIP] and user.disabled_ms is None
            await page.select_option(f"{row} select.role", "evidence")
            await page.wait_for_selector(f'{row}[data-role="evidence"]', timeout=WAIT)
            await page.fill(f"{row} form.cameras input", "")
            await page.click(f"{row} form.cameras button")
            await page.wait_for_function(f"document.querySelector('{row} td:nth-child(3)')?.textContent === 'every camera'",
                                         timeout=WAIT)
            await page.click(f"{row} button.disable")
            await page.wait_for_selector(f'{row}[data-disabled="true"]', timeout=WAIT)
            user = index.people.user(PERSON)
            assert user.role == "evidence" and user.cameras is None and user.disabled_ms is not None
            created = index.audit_entries(action="user.create", target=PERSON)
            assert created and created[-1].actor == "user:root" and created[-1].detail["role"] == "viewer"
            resp = await console.http.post(f"{console.base}/api/v1/login", json={"name": PERSON, "password": "a long enough one"})
            assert resp.status == 401
            # A token for a machine: shown once, working, then revoked.
            add = "#add-token"
            await page.fill(f"{add} input[name=name]", BOT)
            await page.select_option(f"{add} select[name=role]", "viewer")
            await page.fill(f"{add} input[name=cameras]", CLIP)
            await page.click(f"{add} button[type=submit]")
            await page.wait_for_selector("#new-token", timeout=WAIT)
            token = (await page.text_content("#new-token")).strip()
            assert len(token) >= 20 and "shown only this once" in await page.text_content("#new-token-slot")
            await page.wait_for_selector(f'#tokens tr[data-token="{BOT}"][data-revoked="false"]', timeout=WAIT)
            assert await page.input_value(f"{add} input[name=name]") == ""
            seen = await console.json("GET", "/api/v1/cameras", token=token)
            assert [c["id"] for c in seen["cameras"]] == [CLIP]  # the token shown is the token made, scoped so
            await page.screenshot(path=str(SHOTS / "admin-people.png"))
            await page.reload()
            await page.wait_for_selector(f'#tokens tr[data-token="{BOT}"]', timeout=WAIT)
            assert not await page.query_selector("#new-token") and token not in await page.content()
            await page.click(f'#tokens tr[data-token="{BOT}"] button.revoke')
            await page.wait_for_selector(f'#tokens tr[data-token="{BOT}"][data-revoked="true"]', timeout=WAIT)
            assert (await console.get("/api/v1/cameras", token=token)).status == 401
            assert index.audit_entries(action="token.revoke", target=BOT)[-1].actor == "user:root"

            # ---------------------------------------------------------------- the audit log
            for _ in range(2):  # more logins of root than a page of two holds
                resp = await console.http.post(f"{console.base}/api/v1/login", json={"name": "root", "password": PASSWORD})
                assert resp.status == 200
            logins = [e.id for e in index.audit_entries(action="login", target="root", start_ms=started_ms)]
            assert len(logins) >= 3
            await page.goto(f"{console.base}/#audit")
            await page.wait_for_selector("#audit-log", timeout=WAIT)
            await page.fill("#audit-action", "login")
            await page.fill("#audit-target", "root")
            since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started_ms / 1000))  # UTC, as the label says
            await page.fill("#audit-from", since)
            await page.fill("#audit-limit", "2")
            await page.click("#audit-filter button[type=submit]")
            got: list[int] = []
            page_no = 1
            while True:
                await page.wait_for_function("n => { const t = document.getElementById('audit-log');"
                                             " return t && t.dataset.page === String(n) && t.dataset.query.includes('action=login'); }",
                                             arg=page_no, timeout=WAIT)
                rows = await page.eval_on_selector_all("#audit-log tbody tr[data-id]", "rs => rs.map(r => ({...r.dataset}))")
                assert rows and all(r["action"] == "login" and r["target"] == "root" for r in rows), rows
                assert len(rows) <= 2
                got += [int(r["id"]) for r in rows]
                if page_no == 1:
                    await page.screenshot(path=str(SHOTS / "audit.png"))
                if await page.is_disabled("#next-page"):
                    break
                page_no += 1
                await page.click("#next-page")
            assert got == logins and page_no >= 2, (got, logins)
            # The filter is sent: another action shows other rows (here the token's revocation, by root).
            await page.fill("#audit-action", "token.revoke")
            await page.fill("#audit-target", BOT)
            await page.click("#audit-filter button[type=submit]")
            await page.wait_for_selector('#audit-log[data-query*="token.revoke"] tbody tr[data-action="token.revoke"]',
                                         timeout=WAIT)
            assert await page.eval_on_selector_all("#audit-log tbody tr[data-id]", "rs => rs.map(r => r.dataset.actor)") \
                == ["user:root"]

            # ---------------------------------------------------------------- the system page
            await page.click("#nav-system")
            await page.wait_for_selector("#cluster", timeout=WAIT)
            cams = await page.eval_on_selector_all("#recording tbody tr", "rs => rs.map(r => r.dataset.camera)")
            assert cams == sorted([TC, CLIP]), cams
            assert "single node" in await page.text_content("#cluster")  # the API's 404, in its words
            storage = await page.text_content("#storage")
            assert "spool" in storage and "stalled" not in storage, storage  # the server's parts, for an admin of all
            await page.screenshot(path=str(SHOTS / "system.png"))
            assert errors == [], errors
        finally:
            await browser.close()
