"""Bundles (nvr.custody.bundle) offline: one written from a small signed ledger, checked, broken, and forged."""

from __future__ import annotations

import argparse
import zipfile

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nvr.cli.main import execute
from nvr.cli.main import run as run_cli
from nvr.cli.tree import build_parser
from nvr.custody.bundle import verify_bundle
from nvr.custody.checkpoint import fingerprint
from storage.keyring import Keyring
from tests.custody.bundles import forge, make_bundle, new_key, unpack


def test_a_written_bundle_verifies_and_pins_to_its_key(tmp_path):
    out, key = make_bundle(tmp_path, signed_up_to=1)
    report = verify_bundle(out)
    # Intact, but nobody vouched for its key: not ok, and it says so.
    assert not report.ok and report.untrusted and report.verdict == "untrusted", report.failures
    assert {c.name for c in report.failures} == {"trusted key", "keys"}
    assert report.untrusted_keys == (fingerprint(key.public),)
    assert report.segments == 2 and report.export_id == "exp-1" and report.key_id == key.key_id
    assert verify_bundle(out, trusted={"mine": key.public}).ok
    assert verify_bundle(out, fingerprints=[fingerprint(key.public).upper()]).ok
    stranger = Ed25519PrivateKey.generate().public_key()
    pinned = verify_bundle(out, trusted={"other": stranger})
    assert not pinned.ok and {c.name for c in pinned.failures} == {"trusted key", "keys"}
    assert pinned.untrusted


def test_a_segment_no_checkpoint_covers_fails(tmp_path):
    out, key = make_bundle(tmp_path, signed_up_to=0)
    report = verify_bundle(out, trusted={"mine": key.public})
    assert [c.name for c in report.failures] == ["segments in ledger"]
    assert "cam:1: no signed checkpoint in the bundle covers it" in report.failures[0].detail
    assert report.verdict == "failed" and not report.untrusted


def test_an_unsafe_zip_is_refused_by_its_layout(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("exp-1/manifest.json", "{}")
        zf.writestr("exp-1/../escape.txt", "x")
    report = verify_bundle(bad)
    assert not report.ok and [c.name for c in report.checks] == ["layout"]
    assert "unsafe file name" in report.checks[0].detail


def test_a_bundle_forged_with_another_key_is_refused_unless_that_key_is_trusted(tmp_path):
    genuine, key = make_bundle(tmp_path, signed_up_to=1)
    forger = new_key(key.key_id)  # even the key id is the node's
    forged = forge(genuine, tmp_path / "work", forger)

    report = verify_bundle(forged)
    # Every signature, hash and link holds: only trust tells it apart.
    assert report.untrusted and not report.ok, report.failures
    assert {c.name for c in report.failures} == {"trusted key", "keys"}
    assert report.untrusted_keys == (fingerprint(forger.public),)
    assert report.key_id == key.key_id  # the forger kept the key id: the fingerprint is what differs

    for anchors in ({"trusted": {"node": key.public}}, {"fingerprints": [fingerprint(key.public)]}):
        assert not verify_bundle(forged, **anchors).ok
        assert verify_bundle(genuine, **anchors).ok
    # Trusting the forger's key is what the check is for: it passes, so the comparison must be made.
    assert verify_bundle(forged, fingerprints=[fingerprint(forger.public)]).ok


def test_verify_bundle_cli_trusts_the_keyring_key_or_fingerprint_and_nothing_else(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NVR_CONFIG", raising=False)
    data = tmp_path / "data"
    ring = Keyring.open(data / "keyring")
    genuine, key = make_bundle(tmp_path, signed_up_to=1, key=ring.signing_key)
    forged = forge(genuine, tmp_path / "work", new_key(key.key_id))
    empty = tmp_path / "elsewhere"

    # With a data dir whose keyring signed it (on the node): verified.
    assert run_cli(["verify-bundle", str(genuine), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"bundle verified: every key that signed it is trusted (the keyring {data / 'keyring'})" in out

    # The forgery, with the same keyring: refused, naming the forger's key.
    assert run_cli(["verify-bundle", str(forged), "--data-dir", str(data)]) == 1
    out = capsys.readouterr().out
    forger_fp = verify_bundle(forged).untrusted_keys[0]
    assert f"signatures valid but by an untrusted key {forger_fp}" in out and "bundle verified" not in out

    # No keyring and no anchor (a court's machine): even the genuine bundle is not verified.
    assert run_cli(["verify-bundle", str(genuine), "--data-dir", str(empty)]) == 1
    captured = capsys.readouterr()
    assert f"signatures valid but by an untrusted key {fingerprint(key.public)}" in captured.out
    assert "nvr keys list" in captured.out and "Traceback" not in captured.err

    # --key PEM and --fingerprint HEX pin the key, whatever the data dir holds.
    pem = tmp_path / "node.pem"
    pem.write_bytes(key.public_pem())
    assert run_cli(["verify-bundle", str(genuine), "--key", str(pem), "--data-dir", str(empty)]) == 0
    assert run_cli(["verify-bundle", str(forged), "--key", str(pem), "--data-dir", str(data)]) == 1
    capsys.readouterr()

    def with_fingerprint(bundle, fp) -> int:
        args = build_parser().parse_args(["verify-bundle", str(bundle), "--data-dir", str(empty)])
        return execute(argparse.Namespace(**{**vars(args), "fingerprint": [fp]}))

    node_fp = ":".join(fingerprint(key.public)[i:i + 2] for i in range(0, 64, 2))  # as people copy it
    assert with_fingerprint(genuine, node_fp) == 0
    assert with_fingerprint(forged, node_fp) == 1
    assert with_fingerprint(genuine, "not-hex") == 2
    assert "--fingerprint: 'not-hex' is not a SHA-256 key fingerprint" in capsys.readouterr().err


def test_the_exported_verify_txt_tells_how_to_compare_the_fingerprint(tmp_path):
    genuine, key = make_bundle(tmp_path, signed_up_to=1)
    text = (unpack(genuine, tmp_path / "u") / "VERIFY.txt").read_text()
    assert "openssl pkey -pubin -in public.pem -outform DER | sha256sum" in text
    assert fingerprint(key.public) in text and "nvr keys list" in text and "out of band" in text
    assert "--fingerprint" in text and "untrusted key" in text
