"""A bundle's files, from its zip or its unpacked directory, never more bytes of one than a limit allows.

Every read names its limit: the zip's declared size of the file is checked
against it before the first byte is read, and the bytes are counted while
reading, so neither a lying header nor a file that grows lets more through.
Only stored and deflated members are read (zipfile decompresses other methods
in one unbounded step) and none that is encrypted.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from nvr.base.errors import InvalidInput
from nvr.base.units import format_size
from nvr.custody.bundle.layout import MANIFEST, MAX_MEMBERS

CHUNK = 1 << 20
# What reading a damaged zip member raises besides OSError (zlib.error: a corrupt deflate stream).
READ_ERRORS = (zipfile.BadZipFile, OSError, EOFError, zlib.error)


class BundleError(InvalidInput):
    """The bundle can't be opened or laid out as a bundle at all."""


class TooLarge(BundleError):
    """A file of the bundle is larger than its limit (declared so, or found so while reading)."""


class Source:
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
        infos = [i for i in self._zip.infolist() if not i.is_dir()]
        if len(infos) > MAX_MEMBERS:
            raise BundleError(f"{path}: {len(infos)} files in the zip, more than a bundle holds ({MAX_MEMBERS})")
        names = [i.filename for i in infos]
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) != 1 or any("/" not in n for n in names):
            raise BundleError(f"{path}: every file must be inside one top directory (found {sorted(tops)[:5]})")
        self.top = tops.pop()
        for info in infos:
            n = info.filename
            parts = n.split("/")
            if n.startswith("/") or "\\" in n or any(p in ("", ".", "..") for p in parts):
                raise BundleError(f"{path}: unsafe file name {n!r} in the zip")
            if info.flag_bits & 0x1:
                raise BundleError(f"{path}: {n} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise BundleError(f"{path}: {n} uses compression method {info.compress_type} "
                                  "(a bundle is stored or deflated only)")
        if len(set(names)) != len(names):
            raise BundleError(f"{path}: the zip holds the same file name twice")
        self._names = sorted(n[len(self.top) + 1:] for n in names)

    def names(self) -> list[str]:
        return list(self._names)

    def declared_size(self, name: str) -> int:
        """The size the zip's central directory (or the file system) gives for ``name``."""
        if self._zip is not None:
            return self._zip.getinfo(f"{self.top}/{name}").file_size
        assert self._dir is not None
        return (self._dir / name).stat().st_size

    def _open(self, name: str, limit: int) -> BinaryIO:
        size = self.declared_size(name)
        if size > limit:
            raise TooLarge(f"{name} is {format_size(size)}, more than the {format_size(limit)} it may have")
        if self._zip is not None:
            return self._zip.open(f"{self.top}/{name}")  # type: ignore[return-value]
        assert self._dir is not None
        return open(self._dir / name, "rb")

    def chunks(self, name: str, limit: int):
        """The bytes of ``name`` in chunks; :class:`TooLarge` as soon as more than ``limit`` come."""
        seen = 0
        with self._open(name, limit) as f:
            while chunk := f.read(min(CHUNK, limit - seen + 1)):
                seen += len(chunk)
                if seen > limit:  # a file that grew (zipfile itself stops at the declared size)
                    raise TooLarge(f"{name} holds more than the {format_size(limit)} it may have")
                yield chunk

    def read(self, name: str, limit: int) -> bytes:
        """All of ``name`` (at most ``limit`` bytes, else :class:`TooLarge`)."""
        return b"".join(self.chunks(name, limit))

    def sha256(self, name: str, limit: int) -> tuple[str, int]:
        """Hex SHA-256 and size of ``name`` (at most ``limit`` bytes, else :class:`TooLarge`)."""
        h, size = hashlib.sha256(), 0
        for chunk in self.chunks(name, limit):
            h.update(chunk)
            size += len(chunk)
        return h.hexdigest(), size

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
