"""Export limits per requester ([exports] max_per_token, max_bytes_per_token) and the expiry of old bundles (keep)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from nvr.base.errors import ConfigError, Kind
from nvr.config.settings import ExportsConfig, parse_config
from nvr.custody.exports import ExportLimited, ExportService, expiry_interval
from nvr.custody.exports import table as export_table
from storage.audit import AuditLog
from tests.custody.conftest import T0
from tests.support.wait import until

OFFICER = ("token:officer", "evidence")
OTHER = ("token:desk", "evidence")


@asynccontextmanager
async def service(custody, limits: ExportsConfig, clock=None):
    kw = {"clock": clock} if clock else {}
    svc = ExportService(store=custody.store, index=custody.index, keyring=custody.keyring, node_id="test",
                        audit=AuditLog(custody.index), directory=custody.tmp / "data" / "exports",
                        checkpoints=custody.writer, limits=limits, **kw)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def export(svc: ExportService, actor=OFFICER, *, wait: bool = True):
    job = await svc.create(cameras=["cam"], start_ms=T0, end_ms=T0 + 4000, case_id="C-1", reason="r", actor=actor)
    return await svc.wait(job.id, timeout=60) if wait else job


def actions(custody, action: str) -> list:
    return [e for e in custody.index.audit_entries() if e.action == action]


def test_the_exports_section_parses_with_defaults_and_names_bad_keys():
    assert parse_config({}).exports == ExportsConfig(10, 20 * 2**30, 30 * 86400.0)
    cfg = parse_config({"exports": {"max_per_token": 0, "max_bytes_per_token": "1GiB", "keep": "12h"}}).exports
    assert cfg == ExportsConfig(0, 2**30, 43200.0)
    for table, key in (({"max_per_token": -1}, "exports.max_per_token"), ({"max_per_token": "9"}, "exports.max_per_token"),
                       ({"keep": "soon"}, "exports.keep"), ({"max_bytes_per_token": "lots"}, "exports.max_bytes_per_token"),
                       ({"limit": 1}, "exports.limit")):
        with pytest.raises(ConfigError) as e:
            parse_config({"exports": table})
        assert e.value.key == key
    assert expiry_interval(30 * 86400) == 3600 and expiry_interval(60) == 6 and expiry_interval(0.5) == 1


@pytest.mark.integration
async def test_a_requester_keeps_at_most_max_per_token_bundles(custody):
    await custody.record("cam", range(2))
    async with service(custody, ExportsConfig(max_per_token=2, max_bytes_per_token=0, keep=0)) as svc:
        first = await export(svc)
        second = await export(svc, wait=False)  # still queued or running: it counts already
        with pytest.raises(ExportLimited) as refused:
            await export(svc)
        assert refused.value.kind is Kind.LIMITED
        assert str(refused.value) == ("token:officer keeps 2 export bundle(s), the most a requester may "
                                      "(exports.max_per_token = 2)")
        assert refused.value.context == {"limit": "max_per_token", "kept": 2, "maximum": 2}
        assert (await svc.wait(second.id, timeout=60)).state == "done"
        assert (await export(svc, OTHER)).state == "done"  # the limit is per requester
        [entry] = actions(custody, "export.refused")
        assert entry.actor == "token:officer" and entry.detail["limit"] == "max_per_token"

        # A removed bundle no longer counts; a failed job never did.
        removed = await svc.remove(first.id, actor=("token:admin", "admin"))
        assert removed.bundle is None and removed.to_json()["bundle_url"] is None
        assert not (svc.dir / f"{first.id}.zip").exists()
        assert (await export(svc)).state == "done"
        assert (await svc.usage("token:officer")).bundles == 2
        [entry] = actions(custody, "export.removed")
        assert entry.target == first.id and entry.actor == "token:admin"


@pytest.mark.integration
async def test_a_requester_keeps_at_most_max_bytes_per_token(custody):
    await custody.record("cam", range(2))
    async with service(custody, ExportsConfig(max_per_token=0, max_bytes_per_token=0, keep=0)) as svc:
        first = await export(svc)
        assert first.state == "done" and first.size > 0
        size = first.size

        # At the limit: refused before anything is built.
        svc.limits = replace(svc.limits, max_bytes_per_token=size)
        with pytest.raises(ExportLimited, match=r"keeps .* of export bundles: more than a requester may "
                                                r"\(exports.max_bytes_per_token = "):
            await export(svc)

        # Under it, but this bundle would go past: built, then removed before the ledger names it.
        svc.limits = replace(svc.limits, max_bytes_per_token=size + size // 2)
        records = len(custody.index.ledger_records("cam"))
        over = await export(svc)
        assert over.state == "failed" and "and this one is" in over.error and over.bundle is None
        assert "exports.max_bytes_per_token" in over.error
        assert not (svc.dir / f"{over.id}.zip").exists()
        assert len(custody.index.ledger_records("cam")) == records  # no export record for it
        assert (await svc.usage("token:officer")).bytes == size
        # The limit is per requester: the bundle refused to one is built for another. (Not at the limit of
        # `size` itself: a later bundle can be a few bytes larger, its chain holding the first one's record.)
        assert (await export(svc, OTHER)).state == "done"


@pytest.mark.integration
async def test_bundles_older_than_keep_expire_audited_at_start_and_periodically(custody):
    await custody.record("cam", range(2))
    now = [T0 + 10**9]
    limits = ExportsConfig(max_per_token=1, max_bytes_per_token=0, keep=3600)
    async with service(custody, limits, clock=lambda: now[0]) as svc:
        job = await export(svc)
        assert job.state == "done" and job.finished_ms == now[0]
        now[0] += 3599_000
        assert await svc.expire() == []
        now[0] += 1000
        assert await svc.expire() == [job.id]
        gone = await svc.get(job.id)
        assert gone.bundle is None and gone.expired_ms == now[0] and gone.sha256 == job.sha256
        assert gone.to_json()["expired"] is not None and gone.to_json()["bundle_url"] is None
        assert not (svc.dir / f"{job.id}.zip").exists()
        [entry] = actions(custody, "export.expired")
        assert entry.target == job.id and entry.detail["case_id"] == "C-1" and entry.detail["keep"] == "1h"
        assert (await export(svc)).state == "done"  # an expired bundle no longer counts

    # At start: what expired while the server was down goes first.
    now[0] += 7200_000
    async with service(custody, limits, clock=lambda: now[0]) as svc:
        assert len(actions(custody, "export.expired")) == 2
        stray = svc.dir / "exp-00000000deadbeef.zip"  # a zip no finished export names
    stray.write_bytes(b"decrypted footage")
    async with service(custody, limits, clock=lambda: now[0]):
        assert not stray.exists()
        assert [e.target for e in actions(custody, "export.removed")] == [stray.name]

    # Periodically, by the service's own task (keep 1 s: a pass every second).
    async with service(custody, replace(limits, keep=1.0)) as svc:
        job = await export(svc)
        await until(lambda: export_table.get(svc.index, job.id).bundle is None, timeout=5, what="the periodic expiry")
        assert (await svc.get(job.id)).expired_ms is not None
