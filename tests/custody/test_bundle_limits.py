"""Size limits on every file verify-bundle reads: declared sizes, sizes while reading, and what the writer refuses."""

from __future__ import annotations

import resource
import struct
import time
import zipfile

import pytest

from nvr.custody.bundle import verify_bundle
from nvr.custody.bundle import write as bundle_write
from nvr.custody.bundle.source import TooLarge
from tests.custody.bundles import make_bundle, manifest_of, resign, rezip, unpack

GIB = 2**30


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _bomb(path, *, declared: int | None = None) -> None:
    """A bundle whose manifest.json inflates to 1 GiB of spaces (a ~5 MB zip); ``declared``: lie about its size."""
    out, _ = make_bundle(path.parent, signed_up_to=1, name="genuine")
    with zipfile.ZipFile(out) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for info in src.infolist():
            if not info.filename.endswith("/manifest.json"):
                zf.writestr(info.filename.replace("genuine/", "exp-1/"), src.read(info))
        with zf.open("exp-1/manifest.json", "w", force_zip64=declared is None) as f:
            chunk = b" " * 2**20
            for _ in range(1024 if declared is None else 64):
                f.write(chunk)
    if declared is not None:
        _lie_about_size(path, "exp-1/manifest.json", declared)


def _lie_about_size(path, name: str, declared: int) -> None:
    """Rewrite the uncompressed size of ``name`` in its local and its central directory header."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local, pos = zf.getinfo(name).header_offset, zf.start_dir
    struct.pack_into("<I", data, local + 22, declared)
    while data[pos:pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46:pos + 46 + n] == name.encode():
            struct.pack_into("<I", data, pos + 24, declared)
        pos += 46 + n + m + k
    path.write_bytes(bytes(data))


def test_a_small_zip_holding_a_1_gib_manifest_fails_fast_in_bounded_memory(tmp_path):
    bomb = tmp_path / "bomb" / "exp-1.zip"
    bomb.parent.mkdir()
    _bomb(bomb)
    assert bomb.stat().st_size < 8 * 2**20
    with zipfile.ZipFile(bomb) as zf:
        assert zf.getinfo("exp-1/manifest.json").file_size == GIB
    before, started = _peak_mib(), time.monotonic()
    report = verify_bundle(bomb)
    took, grew = time.monotonic() - started, _peak_mib() - before
    assert not report.ok and report.failures[-1].name == "size", report.failures
    assert "manifest.json is 1.0 GiB, more than the 32.0 MiB it may have" in report.failures[-1].detail
    assert took < 2 and grew < 64, (took, grew)


def test_a_zip_that_lies_about_a_size_is_not_read_past_it(tmp_path):
    liar = tmp_path / "liar" / "exp-1.zip"
    liar.parent.mkdir()
    _bomb(liar, declared=1000)  # 64 MiB inside, 1000 bytes declared
    with zipfile.ZipFile(liar) as zf:
        assert zf.getinfo("exp-1/manifest.json").file_size == 1000
    before, started = _peak_mib(), time.monotonic()
    report = verify_bundle(liar)
    took, grew = time.monotonic() - started, _peak_mib() - before
    assert not report.ok and report.failures[-1].name == "readable", report.failures
    assert "Bad CRC-32" in report.failures[-1].detail
    assert took < 2 and grew < 32, (took, grew)


def test_a_segment_larger_than_its_manifest_entry_is_not_read_past_it(tmp_path):
    out, key = make_bundle(tmp_path, signed_up_to=1)
    top = unpack(out, tmp_path / "u")
    seg = manifest_of(top)["segments"][0]
    with open(top / seg["file"], "ab") as f:
        f.write(b"\0" * 2**20)
    resign(top, key)  # SHA256SUMS agrees with the grown file; the manifest still says the old size
    for bundle in (top, rezip(top, tmp_path / "grown.zip")):
        report = verify_bundle(bundle, trusted={"k": key.public})
        failed = {c.name: c.detail for c in report.failures}
        assert set(failed) == {"file hashes", "segment files"}, failed
        assert f"{seg['file']} is 1.0 MiB, more than the {seg['size']} B it may have" in failed["segment files"]


def test_members_a_bundle_never_has_are_refused_before_reading(tmp_path):
    out, key = make_bundle(tmp_path, signed_up_to=1)
    top = unpack(out, tmp_path / "u")
    bz = tmp_path / "bz.zip"
    with zipfile.ZipFile(bz, "w", zipfile.ZIP_BZIP2) as zf:  # bzip2 inflates without a bound in zipfile
        for p in sorted(top.rglob("*")):
            if p.is_file():
                zf.write(p, f"{top.name}/{p.relative_to(top).as_posix()}")
    report = verify_bundle(bz, trusted={"k": key.public})
    assert [c.name for c in report.checks] == ["layout"]
    assert "uses compression method 12 (a bundle is stored or deflated only)" in report.checks[0].detail
    (top / "VERIFY.txt").write_bytes(b"x" * (2**20 + 1))
    resign(top, key)
    report = verify_bundle(top, trusted={"k": key.public})
    assert [c.name for c in report.failures] == ["file hashes"]
    assert "VERIFY.txt is 1.0 MiB, more than the 1.0 MiB it may have" in report.failures[0].detail


def test_the_writer_refuses_a_manifest_the_checker_would_refuse(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_write, "MAX_MANIFEST_BYTES", 1000)
    with pytest.raises(TooLarge, match="manifest.json would be .* over the 1000 B a bundle may have"):
        make_bundle(tmp_path, signed_up_to=1)  # through the one writer, write_bundle
