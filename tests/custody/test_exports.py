"""Evidence exports (nvr.custody.exports) and their bundles, checked with sha256sum, openssl and verify-bundle."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from nvr.base.ffmpeg import find_ffmpeg
from nvr.base.times import ms_to_rfc3339
from nvr.custody.bundle import verify_bundle
from nvr.custody.checkpoint import trusted_keys
from nvr.custody.exports import ExportService
from storage.audit import AuditLog
from storage.ledger import verify_chain
from tests.custody.conftest import T0, flip

pytestmark = pytest.mark.integration


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


def _standard_checks(top: Path) -> list[int]:
    """Exit codes of the VERIFY.txt commands: sha256sum and openssl only, no project code."""
    return [
        _run(["sha256sum", "--strict", "-c", "SHA256SUMS"], top).returncode,
        _run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "public.pem", "-rawin", "-in", "SHA256SUMS",
              "-sigfile", "SHA256SUMS.sig"], top).returncode,
        _run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "public.pem", "-rawin", "-in", "manifest.json",
              "-sigfile", "manifest.sig"], top).returncode,
    ]


async def test_export_bundle_verifies_with_sha256sum_and_openssl_alone(custody, tmp_path):
    await custody.record("cam", range(4))
    await custody.record("other", range(2))
    audit = AuditLog(custody.index)
    svc = ExportService(store=custody.store, index=custody.index, keyring=custody.keyring, node_id="test", audit=audit,
                        directory=tmp_path / "data" / "exports", checkpoints=custody.writer)
    await svc.start()
    try:
        job = await svc.create(cameras=["cam", "other"], start_ms=T0 + 500, end_ms=T0 + 7000, case_id="CASE-42",
                               reason="burglary at the north gate", actor=("token:officer", "evidence"))
        job = await svc.wait(job.id, timeout=90)
    finally:
        await svc.stop()
    assert job.state == "done", job.error
    assert (tmp_path / "data" / "exports").stat().st_mode & 0o777 == 0o700
    bundle = svc.bundle_path(job)
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == job.sha256

    out = tmp_path / "unzipped"
    assert _run(["unzip", "-q", str(bundle), "-d", str(out)], tmp_path).returncode == 0
    top = out / job.id
    assert _standard_checks(top) == [0, 0, 0]
    fp = subprocess.run(f"openssl pkey -pubin -in public.pem -outform DER | sha256sum", shell=True, cwd=top,  # noqa: F541
                        capture_output=True, text=True, check=True).stdout.split()[0]
    manifest = json.loads((top / "manifest.json").read_text())
    assert manifest["signing_key"]["fingerprint_sha256"] == fp
    assert (manifest["case_id"], manifest["reason"], manifest["exported_by"]) == (
        "CASE-42", "burglary at the north gate", "token:officer")
    assert manifest["node"] == "test" and manifest["software"]["name"] == "nvr"
    assert [s["id"] for s in manifest["segments"]] == ["cam:0", "cam:1", "cam:2", "cam:3", "other:0", "other:1"]
    for s in manifest["segments"]:  # the decrypted originals, byte for byte
        assert (top / s["file"]).read_bytes() == custody.media[s["seq"]]
        assert s["checkpoint"] is not None
    assert manifest["gaps"] == [{"camera": "other", "start": ms_to_rfc3339(T0 + 4000), "end": ms_to_rfc3339(T0 + 7000),
                                 "seconds": 3.0}]
    assert {c["camera"] for c in manifest["clips"] if c.get("file")} == {"cam", "other"}
    probe = _run([find_ffmpeg(), "-v", "error", "-i", "clips/cam.mp4", "-f", "null", "-"], top)
    assert probe.returncode == 0, probe.stderr
    assert "sha256sum --strict -c SHA256SUMS" in (top / "VERIFY.txt").read_text()

    node_keys = trusted_keys(custody.keyring)
    assert verify_bundle(bundle, trusted=node_keys).ok and verify_bundle(top, fingerprints=[fp]).ok
    assert verify_bundle(bundle).untrusted  # intact, but without a trusted key not "ok"

    # The export is in each camera's ledger, naming the manifest, and in the audit log.
    manifest_sha = hashlib.sha256((top / "manifest.json").read_bytes()).hexdigest()
    for camera in ("cam", "other"):
        records = custody.index.ledger_records(camera)
        assert records[-1]["type"] == "export" and records[-1]["manifest_sha256"] == manifest_sha
        assert records[-1]["case_id"] == "CASE-42" and verify_chain(camera, records) == []
    assert [e.action for e in custody.index.audit_entries(target=job.id)] == ["export.create", "export.done"]

    # One changed byte in any file fails a standard tool and verify-bundle.
    for path in sorted(p for p in top.rglob("*") if p.is_file()):
        original = path.read_bytes()
        path.write_bytes(flip(original))
        try:
            codes = _standard_checks(top)
            assert any(codes), f"{path.name}: no standard tool noticed"
            report = verify_bundle(top, trusted=node_keys)
            assert not report.ok, f"{path.name}: verify-bundle noticed nothing"
        finally:
            path.write_bytes(original)
    assert _standard_checks(top) == [0, 0, 0]

    # ... and in the zip itself.
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(bundle) as zf:
        info = zf.getinfo(f"{job.id}/{manifest['segments'][0]['file']}")
    data = bytearray(bundle.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + 100] ^= 0x01
    damaged.write_bytes(bytes(data))
    assert not verify_bundle(damaged, trusted=node_keys).ok
    custody.write_config()
    assert await asyncio.to_thread(custody.cli, "verify-bundle", str(bundle)) == 0
    assert await asyncio.to_thread(custody.cli, "verify-bundle", str(damaged)) == 1


def test_shutil_which_tools():
    for tool in ("sha256sum", "openssl", "unzip"):
        assert shutil.which(tool), f"{tool} is needed by the bundle tests and by VERIFY.txt"
