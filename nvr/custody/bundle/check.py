"""Checking a bundle offline (``nvr verify-bundle``), as completely as the project can.

The signatures, SHA256SUMS (strict format, every file listed, hashes), each
segment file against the manifest and its ledger record, the record links,
the checkpoints' signatures, and that a valid signed checkpoint covers every
exported segment.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nvr.base.errors import InvalidInput
from nvr.custody.bundle.layout import BUNDLE_FORMAT, MANIFEST, MANIFEST_SIG, PUBLIC, SUMS, SUMS_SIG
from nvr.custody.checkpoint import (
    CheckpointError,
    checkpoint_from_json,
    fingerprint,
    load_public_pem,
)
from storage.envelope import sha256_stream
from storage.keyring import public_pem
from storage.ledger import GENESIS, record_hash

_SUM_LINE = re.compile(r"^([0-9a-f]{64})  ([^\n]+)$")


@dataclass(frozen=True)
class BundleCheck:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class BundleReport:
    path: str
    checks: tuple[BundleCheck, ...]
    export_id: str | None = None
    case_id: str | None = None
    segments: int = 0
    key_id: str | None = None
    fingerprint: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[BundleCheck, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "export_id": self.export_id, "case_id": self.case_id,
                "segments": self.segments, "key_id": self.key_id, "fingerprint_sha256": self.fingerprint,
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks]}


class BundleError(InvalidInput):
    """The bundle can't be opened or laid out as a bundle at all."""


class _Source:
    """The files of a bundle, by path below its top directory: a zip file or an unpacked directory."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._dir: Path | None = None
        self.top = ""
        if path.is_dir():
            base = path
            if not (base / MANIFEST).exists():
                subs = [p for p in base.iterdir() if p.is_dir()]
                if len(subs) == 1 and (subs[0] / MANIFEST).exists():
                    base = subs[0]
            self._dir, self.top = base, base.name
            self._names = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
            return
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise BundleError(f"{path}: not a readable zip file: {e}") from None
        names = [i.filename for i in self._zip.infolist() if not i.is_dir()]
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) != 1 or any("/" not in n for n in names):
            raise BundleError(f"{path}: every file must be inside one top directory (found {sorted(tops)[:5]})")
        self.top = tops.pop()
        for n in names:
            parts = n.split("/")
            if n.startswith("/") or "\\" in n or any(p in ("", ".", "..") for p in parts):
                raise BundleError(f"{path}: unsafe file name {n!r} in the zip")
        if len(set(names)) != len(names):
            raise BundleError(f"{path}: the zip holds the same file name twice")
        self._names = sorted(n[len(self.top) + 1:] for n in names)

    def names(self) -> list[str]:
        return list(self._names)

    def open(self, name: str) -> BinaryIO:
        if self._zip is not None:
            return self._zip.open(f"{self.top}/{name}")  # type: ignore[return-value]
        assert self._dir is not None
        return open(self._dir / name, "rb")

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def sha256(self, name: str) -> tuple[str, int]:
        with self.open(name) as f:
            return sha256_stream(f)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _verify_sig(pub: Ed25519PublicKey, sig: bytes, data: bytes) -> bool:
    try:
        pub.verify(sig, data)
        return True
    except InvalidSignature:
        return False


def _chain_checks(manifest: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> Iterator[BundleCheck]:
    """Ledger links, checkpoint signatures and coverage of every exported segment (pure)."""
    ledger = manifest.get("ledger") or {}
    by_camera: dict[str, dict[int, dict[str, Any]]] = {}
    covered: dict[str, int] = {}
    for camera, part in sorted(ledger.items()):
        records = part.get("records") or []
        problems = []
        for i, rec in enumerate(records):
            if rec.get("camera") != camera:
                problems.append(f"record {rec.get('seq')} belongs to camera {rec.get('camera')!r}")
            if i == 0:
                if rec.get("seq") == 0 and rec.get("prev") != GENESIS:
                    problems.append("record 0 does not start from the genesis hash")
                continue
            before = records[i - 1]
            if rec.get("seq") != before.get("seq", -2) + 1:
                problems.append(f"record {rec.get('seq')} follows record {before.get('seq')}")
            if rec.get("prev") != record_hash(before):
                problems.append(f"record {rec.get('seq')}'s prev is not the hash of record {before.get('seq')}")
        yield BundleCheck(f"ledger {camera}", not problems,
                          "; ".join(problems) or f"{len(records)} records, every link holds")
        by_seq = {r.get("seq"): r for r in records}
        by_camera[camera] = by_seq
        cp_problems, best = [], -1
        for doc in part.get("checkpoints") or []:
            try:
                cp = checkpoint_from_json(doc, keys, camera=camera)
            except CheckpointError as e:
                cp_problems.append(str(e))
                continue
            rec = by_seq.get(cp.seq)
            if rec is None:
                cp_problems.append(f"checkpoint {cp.seq} covers a record the bundle does not carry")
            elif record_hash(rec) != cp.head:
                cp_problems.append(f"checkpoint {cp.seq} attests another record than the bundle's record {cp.seq}")
            else:
                best = max(best, cp.seq)
        covered[camera] = best
        yield BundleCheck(f"checkpoints {camera}", not cp_problems and best >= 0,
                          "; ".join(cp_problems) or (f"signed checkpoint at seq {best} covers the chain"
                                                     if best >= 0 else "no signed checkpoint in the bundle"))
    problems = []
    for seg in manifest.get("segments") or []:
        rec = by_camera.get(seg.get("camera"), {}).get(seg.get("seq"))
        if rec is None:
            problems.append(f"{seg.get('id')}: its ledger record is not in the bundle")
            continue
        if record_hash(rec) != seg.get("record_hash"):
            problems.append(f"{seg.get('id')}: record_hash differs from its ledger record")
        if rec.get("type") != "segment" or rec.get("sha256") != seg.get("sha256") or rec.get("size") != seg.get("size"):
            problems.append(f"{seg.get('id')}: SHA-256/size differ from its ledger record")
        if seg.get("seq", 1 << 62) > covered.get(seg.get("camera"), -1):
            problems.append(f"{seg.get('id')}: no signed checkpoint in the bundle covers it")
    yield BundleCheck("segments in ledger", not problems,
                      "; ".join(problems[:20]) or "every segment's record is in the chain and covered by a checkpoint")


def verify_bundle(path: Path, *, trusted: Mapping[str, Ed25519PublicKey] | None = None) -> BundleReport:
    """Check a bundle (zip or unpacked directory) completely and offline; never raises for a bad bundle.

    ``trusted``: the public keys the bundle must be signed with (pinning); None accepts the bundle's own
    public.pem, whose fingerprint the report carries for an out-of-band comparison.
    """
    checks: list[BundleCheck] = []
    try:
        src = _Source(path)
    except BundleError as e:
        return BundleReport(str(path), (BundleCheck("layout", False, str(e)),))
    try:
        return _verify(src, path, trusted, checks)
    except (zipfile.BadZipFile, OSError, EOFError) as e:  # e.g. a CRC error while reading a member
        checks.append(BundleCheck("readable", False, f"the bundle can't be read completely: {e}"))
        return BundleReport(str(path), tuple(checks))
    finally:
        src.close()


def _verify(src: _Source, path: Path, trusted: Mapping[str, Ed25519PublicKey] | None,
            checks: list[BundleCheck]) -> BundleReport:
    names = set(src.names())
    required = (MANIFEST, MANIFEST_SIG, SUMS, SUMS_SIG, PUBLIC)
    absent = [n for n in required if n not in names]
    checks.append(BundleCheck("layout", not absent, f"missing {', '.join(absent)}" if absent
                              else f"{len(names)} files under {src.top}/"))
    if absent:
        return BundleReport(str(path), tuple(checks))

    try:
        pub = load_public_pem(src.read(PUBLIC))
    except ValueError as e:
        checks.append(BundleCheck(PUBLIC, False, f"not an Ed25519 public key: {e}"))
        return BundleReport(str(path), tuple(checks))
    fp = fingerprint(pub)
    sums, mbytes = src.read(SUMS), src.read(MANIFEST)
    checks.append(BundleCheck(SUMS_SIG, _verify_sig(pub, src.read(SUMS_SIG), sums),
                              "SHA256SUMS is signed by public.pem"))
    checks.append(BundleCheck(MANIFEST_SIG, _verify_sig(pub, src.read(MANIFEST_SIG), mbytes),
                              "manifest.json is signed by public.pem"))
    if trusted is not None:
        known = any(public_pem(k) == public_pem(pub) for k in trusted.values())
        checks.append(BundleCheck("trusted key", known, f"public.pem (fingerprint {fp}) is "
                                                        f"{'one' if known else 'NOT one'} of the trusted keys"))

    # SHA256SUMS: strict lines, every other file listed exactly once, every hash right.
    listed: dict[str, str] = {}
    bad_lines = []
    try:
        text = sums.decode("utf-8")
    except UnicodeDecodeError:
        text, bad_lines = "", ["not UTF-8"]
    if text and not text.endswith("\n"):
        bad_lines.append("no final newline")
    for i, line in enumerate(text.splitlines(), 1):
        m = _SUM_LINE.match(line)
        if not m or m.group(2) in listed:
            bad_lines.append(f"line {i}")
            continue
        listed[m.group(2)] = m.group(1)
    expected = names - {SUMS, SUMS_SIG}
    unlisted, extra = sorted(expected - set(listed)), sorted(set(listed) - expected)
    ok = not bad_lines and not unlisted and not extra
    detail = "; ".join(filter(None, [
        f"malformed: {', '.join(bad_lines[:5])}" if bad_lines else "",
        f"not listed: {', '.join(unlisted[:5])}" if unlisted else "",
        f"listed but absent: {', '.join(extra[:5])}" if extra else ""])) or f"{len(listed)} files listed"
    checks.append(BundleCheck(SUMS, ok, detail))
    wrong = []
    for name in sorted(set(listed) & expected):
        if src.sha256(name)[0] != listed[name]:
            wrong.append(name)
    checks.append(BundleCheck("file hashes", not wrong, f"SHA-256 differs: {', '.join(wrong[:10])}" if wrong
                              else "every file matches SHA256SUMS"))

    try:
        manifest = json.loads(mbytes)
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"format is not {BUNDLE_FORMAT}")
    except (ValueError, UnicodeDecodeError) as e:
        checks.append(BundleCheck(MANIFEST, False, f"not a bundle manifest: {e}"))
        return BundleReport(str(path), tuple(checks))
    sk = manifest.get("signing_key") or {}
    checks.append(BundleCheck("signing key", sk.get("fingerprint_sha256") == fp,
                              f"manifest names key {sk.get('key_id')} with fingerprint {sk.get('fingerprint_sha256')}; "
                              f"public.pem's is {fp}"))

    keys: dict[str, Ed25519PublicKey] = {}
    key_problems = []
    for key_id, pem in (manifest.get("keys") or {}).items():
        try:
            keys[key_id] = load_public_pem(pem.encode("ascii"))
        except (ValueError, AttributeError, UnicodeEncodeError) as e:
            key_problems.append(f"{key_id}: {e}")
    if trusted is not None:
        pinned = {public_pem(k) for k in trusted.values()}
        key_problems += [f"checkpoint key {k} is not trusted" for k, v in keys.items() if public_pem(v) not in pinned]
    if key_problems:
        checks.append(BundleCheck("keys", False, "; ".join(key_problems)))

    seg_problems = []
    for seg in manifest.get("segments") or []:
        name = seg.get("file")
        if name not in names:
            seg_problems.append(f"{seg.get('id')}: {name} is not in the bundle")
            continue
        digest, size = src.sha256(name)
        if digest != seg.get("sha256") or size != seg.get("size"):
            seg_problems.append(f"{seg.get('id')}: {name} has SHA-256 {digest} ({size} bytes), the manifest says "
                                f"{seg.get('sha256')} ({seg.get('size')})")
    for clip in manifest.get("clips") or []:
        name = clip.get("file")
        if name is None:
            continue
        if name not in names or src.sha256(name)[0] != clip.get("sha256"):
            seg_problems.append(f"clip {name} does not match the manifest")
    n_segs = len(manifest.get("segments") or [])
    checks.append(BundleCheck("segment files", not seg_problems and n_segs > 0,
                              "; ".join(seg_problems[:10]) or (f"{n_segs} segment(s) match their SHA-256"
                                                                if n_segs else "the bundle holds no segment")))
    checks.extend(_chain_checks(manifest, keys))
    return BundleReport(str(path), tuple(checks), export_id=manifest.get("export_id"),
                        case_id=manifest.get("case_id"), segments=n_segs, key_id=sk.get("key_id"), fingerprint=fp)
