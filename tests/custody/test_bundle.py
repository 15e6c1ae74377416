"""Bundles (nvr.custody.bundle) offline: one written from a small signed ledger, checked, then broken."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nvr.base.times import ms_to_rfc3339
from nvr.custody.bundle import segment_file, verify_bundle, write_bundle
from nvr.custody.checkpoint import sign_checkpoint
from storage.keyring import SigningKey
from storage.ledger import ChainHead, record_hash, segment_record

T0 = 1_764_421_200_000


def _bundle(tmp: Path, *, signed_up_to: int, segments: int = 2) -> tuple[Path, SigningKey]:
    """A bundle of ``segments`` one-camera segments whose chain a checkpoint signs up to ``signed_up_to``."""
    key = SigningKey("20260101T000000Z-0000abcd", Ed25519PrivateKey.generate())
    root, head, records, entries = tmp / "staging", ChainHead("cam"), [], []
    for n in range(segments):
        data = f"segment {n}".encode() * 100
        start, end = T0 + n * 2000, T0 + (n + 1) * 2000
        rec = segment_record(head=head, start=ms_to_rfc3339(start), end=ms_to_rfc3339(end), partial=False,
                             size=len(data), sha256=hashlib.sha256(data).hexdigest(), object_key=f"cam/{n}.seg",
                             object_size=len(data) + 60, object_sha256="00" * 32, key_id="k", node="test")
        head = ChainHead("cam", n, record_hash(rec))
        records.append(rec)
        rel = segment_file("cam", n, start)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        entries.append({"id": f"cam:{n}", "camera": "cam", "seq": n, "size": len(data), "sha256": rec["sha256"],
                        "file": rel, "record_hash": head.hash})
    cp = sign_checkpoint(key, ChainHead("cam", signed_up_to, record_hash(records[signed_up_to])), node="test")
    manifest = {"export_id": "exp-1", "case_id": "C-1", "cameras": ["cam"], "segments": entries, "clips": [],
                "range": {"start": ms_to_rfc3339(T0), "end": ms_to_rfc3339(T0 + segments * 2000)},
                "ledger": {"cam": {"records": records, "checkpoints": [cp.to_json()]}}}
    out = tmp / "exp-1.zip"
    write_bundle(root, top="exp-1", manifest=manifest, key=key, out=out)
    return out, key


def test_a_written_bundle_verifies_and_pins_to_its_key(tmp_path):
    out, key = _bundle(tmp_path, signed_up_to=1)
    report = verify_bundle(out)
    assert report.ok, report.failures
    assert report.segments == 2 and report.export_id == "exp-1" and report.key_id == key.key_id
    assert verify_bundle(out, trusted={"mine": key.public}).ok
    stranger = Ed25519PrivateKey.generate().public_key()
    pinned = verify_bundle(out, trusted={"other": stranger})
    assert not pinned.ok and {c.name for c in pinned.failures} == {"trusted key", "keys"}


def test_a_segment_no_checkpoint_covers_fails(tmp_path):
    out, _ = _bundle(tmp_path, signed_up_to=0)
    report = verify_bundle(out)
    assert [c.name for c in report.failures] == ["segments in ledger"]
    assert "cam:1: no signed checkpoint in the bundle covers it" in report.failures[0].detail


def test_an_unsafe_zip_is_refused_by_its_layout(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("exp-1/manifest.json", "{}")
        zf.writestr("exp-1/../escape.txt", "x")
    report = verify_bundle(bad)
    assert not report.ok and [c.name for c in report.checks] == ["layout"]
    assert "unsafe file name" in report.checks[0].detail
