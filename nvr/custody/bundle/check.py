"""Checking a bundle offline (``nvr verify-bundle``), as completely as the project can.

The signatures, trust in the keys that made them, SHA256SUMS (strict format,
every file listed, hashes), the manifest's schema, each segment file against
the manifest and its ledger record, the record links, the checkpoints'
signatures, and that a valid signed checkpoint covers every exported segment.
Every file is read within its size limit (``source``, ``layout.MAX_*``).

Trust: valid signatures prove only that whoever holds the key in public.pem
made the bundle, and anyone can make a key. A bundle is ``ok`` only if every
key that signed it (public.pem and each checkpoint key in the manifest) is a
trust anchor the caller gave: a public key or its fingerprint. One whose only
failed checks are about trust is ``untrusted``: intact, but by a key nobody
vouched for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nvr.custody.bundle.layout import (
    MANIFEST,
    MANIFEST_SIG,
    MAX_CLIP_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_SEGMENT_BYTES,
    MAX_SMALL_BYTES,
    MAX_SUMS_BYTES,
    PUBLIC,
    SUMS,
    SUMS_SIG,
)
from nvr.custody.bundle.schema import ManifestError, parse_manifest
from nvr.custody.bundle.source import READ_ERRORS, BundleError, Source, TooLarge
from nvr.custody.checkpoint import (
    CheckpointError,
    checkpoint_from_json,
    fingerprint,
    load_public_pem,
    normalize_fingerprint,
)
from storage.ledger import GENESIS, record_hash

_SUM_LINE = re.compile(r"^([0-9a-f]{64})  ([^\n]+)$")

VERDICT_OK = "ok"
VERDICT_UNTRUSTED = "untrusted"
VERDICT_FAILED = "failed"


@dataclass(frozen=True)
class BundleCheck:
    """One check of a bundle; ``trust``: when it fails, only because a key is not a trust anchor."""

    name: str
    ok: bool
    detail: str
    trust: bool = False


@dataclass(frozen=True)
class BundleReport:
    path: str
    checks: tuple[BundleCheck, ...]
    export_id: str | None = None
    case_id: str | None = None
    segments: int = 0
    key_id: str | None = None
    fingerprint: str | None = None
    untrusted_keys: tuple[str, ...] = ()  # fingerprints of the keys that signed something and are no anchor

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[BundleCheck, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def untrusted(self) -> bool:
        """Every check passed but trust: valid signatures by a key no anchor names."""
        return not self.ok and bool(self.checks) and all(c.trust for c in self.failures)

    @property
    def verdict(self) -> str:
        return VERDICT_OK if self.ok else VERDICT_UNTRUSTED if self.untrusted else VERDICT_FAILED

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "verdict": self.verdict, "export_id": self.export_id,
                "case_id": self.case_id, "segments": self.segments, "key_id": self.key_id,
                "fingerprint_sha256": self.fingerprint, "untrusted_keys": list(self.untrusted_keys),
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks]}


def _verify_sig(pub: Ed25519PublicKey, sig: bytes, data: bytes) -> bool:
    try:
        pub.verify(sig, data)
        return True
    except InvalidSignature:
        return False


def _chain_checks(manifest: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> Iterator[BundleCheck]:
    """Ledger links, checkpoint signatures and coverage of every exported segment (pure; the schema held)."""
    by_camera: dict[str, dict[int, dict[str, Any]]] = {}
    covered: dict[str, int] = {}
    for camera, part in sorted(manifest["ledger"].items()):
        records = part["records"]
        problems = []
        for i, rec in enumerate(records):
            if rec["camera"] != camera:
                problems.append(f"record {rec['seq']} belongs to camera {rec['camera']!r}")
            if i == 0:
                if rec["seq"] == 0 and rec["prev"] != GENESIS:
                    problems.append("record 0 does not start from the genesis hash")
                continue
            before = records[i - 1]
            if rec["seq"] != before["seq"] + 1:
                problems.append(f"record {rec['seq']} follows record {before['seq']}")
            if rec["prev"] != record_hash(before):
                problems.append(f"record {rec['seq']}'s prev is not the hash of record {before['seq']}")
        yield BundleCheck(f"ledger {camera}", not problems,
                          "; ".join(problems[:20]) or f"{len(records)} records, every link holds")
        by_seq = {r["seq"]: r for r in records}
        by_camera[camera] = by_seq
        cp_problems, best = [], -1
        for doc in part["checkpoints"]:
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
                          "; ".join(cp_problems[:20]) or (f"signed checkpoint at seq {best} covers the chain"
                                                          if best >= 0 else "no signed checkpoint in the bundle"))
    problems = []
    for seg in manifest["segments"]:
        rec = by_camera.get(seg["camera"], {}).get(seg["seq"])
        if rec is None:
            problems.append(f"{seg['id']}: its ledger record is not in the bundle")
            continue
        if record_hash(rec) != seg["record_hash"]:
            problems.append(f"{seg['id']}: record_hash differs from its ledger record")
        if rec["type"] != "segment" or rec.get("sha256") != seg["sha256"] or rec.get("size") != seg["size"]:
            problems.append(f"{seg['id']}: SHA-256/size differ from its ledger record")
        if seg["seq"] > covered.get(seg["camera"], -1):
            problems.append(f"{seg['id']}: no signed checkpoint in the bundle covers it")
    yield BundleCheck("segments in ledger", not problems,
                      "; ".join(problems[:20]) or "every segment's record is in the chain and covered by a checkpoint")


def anchors_of(trusted: Mapping[str, Ed25519PublicKey] | None, fingerprints: Iterable[str]) -> frozenset[str]:
    """The fingerprints a bundle's keys must be among (ValueError for a malformed fingerprint)."""
    return frozenset({fingerprint(k) for k in (trusted or {}).values()}
                     | {normalize_fingerprint(f) for f in fingerprints})


def verify_bundle(path: Path, *, trusted: Mapping[str, Ed25519PublicKey] | None = None,
                  fingerprints: Iterable[str] = ()) -> BundleReport:
    """Check a bundle (zip or unpacked directory) completely and offline; never raises for a bad bundle.

    The trust anchors are ``trusted`` (public keys) and ``fingerprints`` (hex SHA-256 of a key, as
    ``nvr keys list`` and VERIFY.txt show it); with none, no key is trusted and the report is at best
    ``untrusted``, carrying public.pem's fingerprint for an out-of-band comparison.
    """
    anchors = anchors_of(trusted, fingerprints)
    checks: list[BundleCheck] = []
    try:
        src = Source(path)
    except BundleError as e:
        return BundleReport(str(path), (BundleCheck("layout", False, str(e)),))
    try:
        return _verify(src, path, anchors, checks)
    except TooLarge as e:
        checks.append(BundleCheck("size", False, f"refused to read further: {e}"))
        return BundleReport(str(path), tuple(checks))
    except READ_ERRORS as e:  # e.g. a CRC error while reading a member
        checks.append(BundleCheck("readable", False, f"the bundle can't be read completely: {e}"))
        return BundleReport(str(path), tuple(checks))
    finally:
        src.close()


def _sums_check(sums: bytes, expected: set[str]) -> tuple[BundleCheck, dict[str, str]]:
    """SHA256SUMS: strict lines, every file of ``expected`` listed exactly once; the listed hashes."""
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
    unlisted, extra = sorted(expected - set(listed)), sorted(set(listed) - expected)
    ok = not bad_lines and not unlisted and not extra
    detail = "; ".join(filter(None, [
        f"malformed: {', '.join(bad_lines[:5])}" if bad_lines else "",
        f"not listed: {', '.join(unlisted[:5])}" if unlisted else "",
        f"listed but absent: {', '.join(extra[:5])}" if extra else ""])) or f"{len(listed)} files listed"
    return BundleCheck(SUMS, ok, detail), listed


def _limits(manifest: Mapping[str, Any]) -> dict[str, int]:
    """The most bytes each file may have: what the manifest declares for segments and clips, within ceilings."""
    limits = {MANIFEST: MAX_MANIFEST_BYTES, SUMS: MAX_SUMS_BYTES}
    for clip in manifest["clips"]:
        if clip["file"] is not None:
            limits[clip["file"]] = min(clip["size"], MAX_CLIP_BYTES)
    for seg in manifest["segments"]:
        limits[seg["file"]] = min(seg["size"], MAX_SEGMENT_BYTES)
    return limits


def _verify(src: Source, path: Path, anchors: frozenset[str], checks: list[BundleCheck]) -> BundleReport:
    names = set(src.names())
    required = (MANIFEST, MANIFEST_SIG, SUMS, SUMS_SIG, PUBLIC)
    absent = [n for n in required if n not in names]
    checks.append(BundleCheck("layout", not absent, f"missing {', '.join(absent)}" if absent
                              else f"{len(names)} files under {src.top}/"))
    if absent:
        return BundleReport(str(path), tuple(checks))

    try:
        pub = load_public_pem(src.read(PUBLIC, MAX_SMALL_BYTES))
    except ValueError as e:
        checks.append(BundleCheck(PUBLIC, False, f"not an Ed25519 public key: {e}"))
        return BundleReport(str(path), tuple(checks))
    fp = fingerprint(pub)
    sums, mbytes = src.read(SUMS, MAX_SUMS_BYTES), src.read(MANIFEST, MAX_MANIFEST_BYTES)
    checks.append(BundleCheck(SUMS_SIG, _verify_sig(pub, src.read(SUMS_SIG, MAX_SMALL_BYTES), sums),
                              "SHA256SUMS is signed by public.pem"))
    checks.append(BundleCheck(MANIFEST_SIG, _verify_sig(pub, src.read(MANIFEST_SIG, MAX_SMALL_BYTES), mbytes),
                              "manifest.json is signed by public.pem"))
    untrusted = [] if fp in anchors else [fp]
    checks.append(BundleCheck("trusted key", fp in anchors, (
        f"public.pem (fingerprint {fp}) is one of the trusted keys" if fp in anchors else
        f"public.pem (fingerprint {fp}) is NOT one of the {len(anchors)} trusted key(s)" if anchors else
        f"no trusted key was given: public.pem (fingerprint {fp}) is whichever key made the bundle"), trust=True))

    sums_check, listed = _sums_check(sums, names - {SUMS, SUMS_SIG})
    checks.append(sums_check)
    try:
        manifest = parse_manifest(mbytes)
    except ManifestError as e:
        checks.append(BundleCheck(MANIFEST, False, f"not a bundle manifest: {e}"))
        return BundleReport(str(path), tuple(checks), fingerprint=fp, untrusted_keys=tuple(untrusted))

    limits = _limits(manifest)
    digests: dict[str, tuple[str, int] | str] = {}  # name -> (SHA-256, size), or why it wasn't read

    def digest_of(name: str) -> tuple[str, int] | str:
        if name not in digests:
            try:
                digests[name] = src.sha256(name, limits.get(name, MAX_SMALL_BYTES))
            except TooLarge as e:
                digests[name] = str(e)
        return digests[name]

    wrong, too_large = [], []
    for name in sorted(set(listed) & names):
        got = digest_of(name)
        if isinstance(got, str):
            too_large.append(got)
        elif got[0] != listed[name]:
            wrong.append(name)
    checks.append(BundleCheck("file hashes", not wrong and not too_large, "; ".join(filter(None, [
        f"SHA-256 differs: {', '.join(wrong[:10])}" if wrong else "",
        f"too large: {'; '.join(too_large[:5])}" if too_large else ""])) or "every file matches SHA256SUMS"))

    sk = manifest["signing_key"]
    checks.append(BundleCheck("signing key", sk["fingerprint_sha256"] == fp,
                              f"manifest names key {sk['key_id']} with fingerprint {sk['fingerprint_sha256']}; "
                              f"public.pem's is {fp}"))

    keys: dict[str, Ed25519PublicKey] = {}
    malformed, unanchored = [], []
    for key_id, pem in manifest["keys"].items():
        try:
            keys[key_id] = load_public_pem(pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as e:
            malformed.append(f"{key_id}: {e}")
            continue
        if (kfp := fingerprint(keys[key_id])) not in anchors:
            unanchored.append(f"checkpoint key {key_id} (fingerprint {kfp}) is not trusted")
            untrusted += [] if kfp in untrusted else [kfp]
    if malformed or unanchored:
        checks.append(BundleCheck("keys", False, "; ".join([*malformed, *unanchored][:10]), trust=not malformed))

    seg_problems = []
    for seg in manifest["segments"]:
        name = seg["file"]
        if name not in names:
            seg_problems.append(f"{seg['id']}: {name} is not in the bundle")
            continue
        got = digest_of(name)
        if isinstance(got, str):
            seg_problems.append(f"{seg['id']}: {got} (the manifest says {seg['size']} bytes)")
        elif got != (seg["sha256"], seg["size"]):
            seg_problems.append(f"{seg['id']}: {name} has SHA-256 {got[0]} ({got[1]} bytes), the manifest says "
                                f"{seg['sha256']} ({seg['size']})")
    for clip in manifest["clips"]:
        name = clip["file"]
        if name is None:
            continue
        got = digest_of(name) if name in names else "absent"
        if isinstance(got, str) or got != (clip["sha256"], clip["size"]):
            seg_problems.append(f"clip {name} does not match the manifest")
    n_segs = len(manifest["segments"])
    checks.append(BundleCheck("segment files", not seg_problems and n_segs > 0,
                              "; ".join(seg_problems[:10]) or (f"{n_segs} segment(s) match their SHA-256"
                                                                if n_segs else "the bundle holds no segment")))
    checks.extend(_chain_checks(manifest, keys))
    return BundleReport(str(path), tuple(checks), export_id=manifest["export_id"], case_id=manifest["case_id"],
                        segments=n_segs, key_id=sk["key_id"], fingerprint=fp, untrusted_keys=tuple(untrusted))
