"""Bundles for the offline tests: a small one written by the real writer, and the tools to re-sign or forge one."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nvr.base.times import ms_to_rfc3339
from nvr.custody.bundle import (
    MANIFEST,
    MANIFEST_SIG,
    PUBLIC,
    SUMS,
    SUMS_SIG,
    VERIFY_TXT,
    clip_file,
    manifest_bytes,
    segment_file,
    verify_txt,
    write_bundle,
)
from nvr.custody.checkpoint import fingerprint, sign_checkpoint
from storage.keyring import SigningKey
from storage.ledger import ChainHead, record_hash, segment_record

T0 = 1_764_421_200_000
KEY_ID = "20260101T000000Z-0000abcd"


def new_key(key_id: str = KEY_ID) -> SigningKey:
    return SigningKey(key_id, Ed25519PrivateKey.generate())


def make_bundle(tmp: Path, *, signed_up_to: int, segments: int = 2, key: SigningKey | None = None,
                name: str = "exp-1") -> tuple[Path, SigningKey]:
    """A bundle of ``segments`` one-camera segments whose chain a checkpoint signs up to ``signed_up_to``.

    Its manifest has every field the export service writes (a clip, an excluded segment, a gap), so
    only the bytes and the ledger are small.
    """
    key = key or new_key()
    root, head, records, entries = tmp / f"{name}.staging", ChainHead("cam"), [], []
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
        entries.append({"id": f"cam:{n}", "camera": "cam", "seq": n, "start": rec["start"], "end": rec["end"],
                        "duration": 2.0, "partial": False, "size": len(data), "sha256": rec["sha256"],
                        "file": rel, "record_hash": head.hash, "object_sha256": "00" * 32, "key_id": "k",
                        "checkpoint": signed_up_to})
    clip = b"a stitched clip" * 10
    (root / clip_file("cam")).parent.mkdir(parents=True, exist_ok=True)
    (root / clip_file("cam")).write_bytes(clip)
    cp = sign_checkpoint(key, ChainHead("cam", signed_up_to, record_hash(records[signed_up_to])), node="test")
    end = ms_to_rfc3339(T0 + segments * 2000)
    manifest = {
        "export_id": name, "case_id": "C-1", "reason": "a test", "exported_by": "token:officer",
        "exported_by_role": "evidence", "exported_at": end, "node": "test",
        "software": {"name": "nvr", "version": "0"}, "range": {"start": ms_to_rfc3339(T0), "end": end},
        "cameras": ["cam", "dark"], "segments": entries,
        "excluded": [{"id": "cam:9", "status": "tampered", "check": "sha256", "detail": "bytes differ",
                      "rule": "r", "deleted_at": end}],
        "gaps": [{"camera": "dark", "start": ms_to_rfc3339(T0), "end": end, "seconds": segments * 2.0}],
        "clips": [{"camera": "cam", "file": clip_file("cam"), "size": len(clip),
                   "sha256": hashlib.sha256(clip).hexdigest(), "segments": [e["id"] for e in entries], "gaps": 0},
                  {"camera": "dark", "file": None, "error": "no footage"}],
        "ledger": {"cam": {"records": records, "checkpoints": [cp.to_json()]}},
        "verification": {"verdict": "ok", "checked_at": end, "counts": {"ok": segments}, "problems": []},
    }
    out = tmp / f"{name}.zip"
    write_bundle(root, top=name, manifest=manifest, key=key, out=out)
    return out, key


def unpack(bundle: Path, into: Path) -> Path:
    """The bundle's top directory, unzipped under ``into``."""
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(into)
        top = zf.namelist()[0].split("/", 1)[0]
    return into / top


def manifest_of(top: Path) -> dict[str, Any]:
    return json.loads((top / MANIFEST).read_bytes())


def resign(top: Path, key: SigningKey, manifest: dict[str, Any] | None = None, *, raw: bytes | None = None) -> None:
    """Write ``manifest`` (or ``raw`` bytes) as manifest.json and sign everything again with ``key``.

    What a forger does with a key of their own: public.pem, both signatures and SHA256SUMS all match.
    """
    data = raw if raw is not None else manifest_bytes(manifest or manifest_of(top))
    (top / MANIFEST).write_bytes(data)
    (top / MANIFEST_SIG).write_bytes(key.private.sign(data))
    (top / PUBLIC).write_bytes(key.public_pem())
    files = sorted(p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file())
    sums = "".join(f"{hashlib.sha256((top / f).read_bytes()).hexdigest()}  {f}\n"
                   for f in files if f not in (SUMS, SUMS_SIG)).encode()
    (top / SUMS).write_bytes(sums)
    (top / SUMS_SIG).write_bytes(key.private.sign(sums))


def rezip(top: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(top.rglob("*")):
            if p.is_file():
                zf.write(p, f"{top.name}/{p.relative_to(top).as_posix()}")
    return out


def forge(bundle: Path, work: Path, forger: SigningKey) -> Path:
    """The bundle with its first segment altered and every hash, link and signature made again by ``forger``.

    Segment bytes, its manifest entry and ledger record, the record hashes and links after it, the
    checkpoint (same key id, the forger's key), the manifest's keys and signing key, public.pem,
    manifest.sig, SHA256SUMS and its signature: only the key's fingerprint tells it from the original.
    """
    top = unpack(bundle, work)
    m = manifest_of(top)
    seg = m["segments"][0]
    data = (top / seg["file"]).read_bytes().replace(b"segment 0", b"SEGMENT 0")
    (top / seg["file"]).write_bytes(data)
    camera = m["ledger"][seg["camera"]]
    records = camera["records"]
    for i, rec in enumerate(records):
        if rec["seq"] == seg["seq"]:
            rec["sha256"], rec["size"] = hashlib.sha256(data).hexdigest(), len(data)
        if i:
            rec["prev"] = record_hash(records[i - 1])
    hashes = {r["seq"]: record_hash(r) for r in records}
    for s in m["segments"]:
        if s["camera"] == seg["camera"]:
            s["record_hash"] = hashes[s["seq"]]
    seg["sha256"], seg["size"] = hashlib.sha256(data).hexdigest(), len(data)
    for i, doc in enumerate(camera["checkpoints"]):
        body = doc["body"]
        camera["checkpoints"][i] = sign_checkpoint(
            forger, ChainHead(body["camera"], body["seq"], hashes[body["seq"]]), node=body["node"]).to_json()
    m["keys"] = {forger.key_id: forger.public_pem().decode("ascii")}
    m["signing_key"] = {**m["signing_key"], "key_id": forger.key_id, "fingerprint_sha256": fingerprint(forger.public)}
    (top / VERIFY_TXT).write_text(verify_txt(top=top.name, manifest=m))
    resign(top, forger, m)
    return rezip(top, work / f"forged-{bundle.name}")
