"""Minimal reader for R's serialization format (XDR, versions 2 and 3) and lazy-load databases.

Enough to read the character vectors of an R package's ``data/Rdata.rdb``/``.rdx`` pair (how the
Debian ``r-cran-*`` packages ship their data sets): vectors, pairlists, symbols, references and
attributes. Anything else raises ``ValueError``.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from typing import Any, Dict, List

NILVALUE, REFSXP = 254, 255
_NO_PAYLOAD = {254, 253, 252, 251, 250, 249, 248, 247, 246, 242, 241}  # special singletons
NA_INT = -(2**31)


class RList(list):
    """An R generic vector; ``names`` holds its names attribute when present."""

    names: List[str] = []


class _Reader:
    def __init__(self, data: bytes):
        self.d = data
        self.p = 0
        self.refs: List[Any] = []

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.d, self.p)
        self.p += 4
        return v

    def bytes(self, n: int) -> bytes:
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def length(self) -> int:
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def header(self) -> None:
        if self.bytes(2) != b"X\n":
            raise ValueError("only XDR-format R serialization is supported")
        version = self.int()
        self.int()  # writer version
        self.int()  # minimal reader version
        if version == 3:
            self.bytes(self.int())  # native encoding name
        elif version != 2:
            raise ValueError(f"R serialization version {version}")

    def item(self) -> Any:
        flags = self.int()
        t = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        if t in _NO_PAYLOAD:
            return None
        if t == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            return self.refs[idx - 1]
        if t == 1:  # SYMSXP
            name = self.item()
            self.refs.append(name)
            return name
        if t == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            raw = self.bytes(n)
            latin1 = bool((flags >> 12) & 4)
            return raw.decode("latin-1" if latin1 else "utf-8", errors="replace")
        if t in (2, 6):  # LISTSXP / LANGSXP: pairlist -> dict of tag -> value
            out: Dict[Any, Any] = {}
            while True:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out[tag if tag is not None else len(out)] = self.item()
                nxt = self.int()
                nt = nxt & 0xFF
                if nt == NILVALUE:
                    return out
                if nt not in (2, 6):
                    raise ValueError("unsupported pairlist tail")
                has_attr = bool(nxt & (1 << 9))
                has_tag = bool(nxt & (1 << 10))
        if t in (10, 13):  # LGLSXP / INTSXP
            n = self.length()
            vals = list(struct.unpack_from(f">{n}i", self.d, self.p))
            self.p += 4 * n
            return self._attrs(vals, has_attr)
        if t == 14:  # REALSXP
            n = self.length()
            vals = list(struct.unpack_from(f">{n}d", self.d, self.p))
            self.p += 8 * n
            return self._attrs(vals, has_attr)
        if t in (16, 19, 20):  # STRSXP / VECSXP / EXPRSXP
            n = self.length()
            vals = RList(self.item() for _ in range(n))
            return self._attrs(vals, has_attr)
        raise ValueError(f"unsupported R type {t}")

    def _attrs(self, value, has_attr):
        if has_attr:
            attrs = self.item()
            if isinstance(value, RList) and isinstance(attrs, dict) and "names" in attrs:
                value.names = list(attrs["names"])
        return value


def unserialize(data: bytes) -> Any:
    r = _Reader(data)
    r.header()
    return r.item()


def _inflate(blob: bytes) -> bytes:
    """A lazy-load record: 4-byte big-endian uncompressed length, then a zlib stream (or, for the
    other compressions R offers, a type byte '2' bzip2 / 'X' xz / 'Z' zlib / '0' none, then data)."""
    if blob[4:5] == b"2":
        return bz2.decompress(blob[5:])
    if blob[4:5] == b"X":
        return lzma.decompress(blob[5:])
    if blob[4:5] == b"0":
        return blob[5:]
    if blob[4:5] == b"Z":
        return zlib.decompress(blob[5:])
    return zlib.decompress(blob[4:])


def _rds(blob: bytes) -> bytes:
    """An .rds/.rdx file: gzip, bzip2, xz or plain serialization."""
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if blob[:3] == b"BZh":
        return bz2.decompress(blob)
    if blob[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(blob)
    return blob


def read_lazyload(rdx: bytes, rdb: bytes) -> Dict[str, Any]:
    """All objects of an R lazy-load database as ``{name: value}``."""
    index = unserialize(_rds(rdx))
    variables = index[index.names.index("variables")]
    names = variables.names
    out: Dict[str, Any] = {}
    for name, (offset, length) in zip(names, variables):
        offset, length = int(offset), int(length)
        out[name] = unserialize(_inflate(rdb[offset:offset + length]))
    return out
