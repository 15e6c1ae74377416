"""``nvr retention preview`` and ``run`` as subprocesses over a data dir that retention tests filled."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from nvr.base.times import now_ms
from nvr.config.settings import load_config
from retention.service import RetentionSettings
from tests.retention.conftest import H
from tests.support import checks, indexdb, tomlw

pytestmark = pytest.mark.integration


def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return checks.cli("retention", *args, "--config", str(tmp / "nvr.toml"), "--log-level", "warning")


async def test_cli_preview_and_run(env, s3):
    now, tmp = now_ms(), env.parts.tmp
    (tmp / "nvr.toml").write_text(tomlw.dumps({
        "server": {"data_dir": str(tmp / "data")},
        "storage": {"endpoint": s3.endpoint, "access_key": s3.access_key, "secret_key": s3.secret_key,
                    "bucket": env.store.bucket},
        "retention": {"min_age": "1m"},
        "index": indexdb.config_table(),
    }))
    svc = await env.service(RetentionSettings.from_config(load_config(tmp / "nvr.toml")).rules)
    rows = await env.add("a", now - 2 * H, 3, svc=svc)
    (tmp / "rules.json").write_text(json.dumps({"default": {"max_age": "1m"}}))

    proc = await asyncio.to_thread(cli, tmp, "preview", "--rules", str(tmp / "rules.json"), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["cameras"]["a"]["delete_count"] == 3 and out["delete_bytes"] == sum(r.object_size for r in rows)
    proc = await asyncio.to_thread(cli, tmp, "preview", "--json")  # the rules in force keep everything
    assert json.loads(proc.stdout)["delete_count"] == 0
    bad = await asyncio.to_thread(cli, tmp, "preview", "--rules", str(tmp / "nope.json"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr

    # While another process owns the sweep of this data dir, `run` refuses.
    busy = await asyncio.to_thread(cli, tmp, "run")
    assert busy.returncode == 1 and "another nvr process holds" in busy.stderr
    await svc.set_rules(svc.parse_rules({"default": {"max_age": "1m"}}), ("token:admin", "admin"))
    await svc.stop()
    proc = await asyncio.to_thread(cli, tmp, "run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cameras"]["a"]["segments"] == 3
    assert {r.state for r in env.rows("a")} == {"deleted"}
    assert env.index.audit_entries(action="retention.run")[0].actor.startswith("cli:")
    env.assert_consistent("a")
