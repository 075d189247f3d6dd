"""Reader for SWORD "zText" Bible modules (as shipped by Debian's ``sword-text-*`` packages).

A testament is three files: ``*.bzs`` (per block: offset, compressed size, size; uint32 LE),
``*.bzv`` (per verse slot: block, offset in block, size; uint32, uint32, uint16 LE) and ``*.bzz``
(zlib blocks). Verse slots come in canonical order, so reading them in order gives the text in
order; the OSIS markup in the entries marks books and chapters, which is all we need to cut the
text into chapter documents (no versification tables required).
"""

from __future__ import annotations

import html
import re
import struct
import zlib
from typing import Dict, Iterator, List, Tuple


def read_ztext(bzs: bytes, bzv: bytes, bzz: bytes) -> List[str]:
    """Every verse slot's raw entry text (empty string for empty slots), in canonical order."""
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs) - 11, 12)]
    cache: Dict[int, bytes] = {}
    out = []
    for i in range(0, len(bzv) - 9, 10):
        block, offset, size = struct.unpack_from("<IIH", bzv, i)
        if size == 0 or block >= len(blocks):
            out.append("")
            continue
        if block not in cache:
            off, csize, _ = blocks[block]
            cache[block] = zlib.decompress(bzz[off:off + csize])
        out.append(cache[block][offset:offset + size].decode("utf-8", errors="replace"))
    return out


_CHAPTER = re.compile(r'<chapter\b[^>]*\bosisID="([^"]+)"[^>]*\bsID=', re.I)
_CHAPTER_END = re.compile(r"<chapter\b[^>]*\beID=", re.I)
_BOOK = re.compile(r'<div\b[^>]*\btype="book"[^>]*\bsID=', re.I)
_DROP_ELEMENTS = re.compile(r"<(note|title|reference|milestone)\b[^>]*?(?<!/)>.*?</\1>", re.S | re.I)
_PARA = re.compile(r'<(?:div|lb)\b[^>]*type="x-p"[^>]*/>', re.I)
_LINE = re.compile(r"<l\b[^>]*sID=[^>]*/>", re.I)
_TAG = re.compile(r"<[^>]*>")


def osis_to_text(entry: str) -> str:
    """Plain text of one OSIS entry: footnotes, headings and cross-references dropped, paragraph
    starts turned into blank lines and poetry-line starts into line breaks, Strong's-number
    wrappers and other tags removed."""
    # A dropped element separates words ("God<note>..</note>created") but not a word from the
    # punctuation after it.
    s = _DROP_ELEMENTS.sub("\x00", entry)
    s = re.sub("[ \x00]*\x00[ \x00]*(?=[.,;:!?)\"'\u2019\u201d])", "", s).replace("\x00", " ")
    s = _PARA.sub("\n\n", s)
    s = _LINE.sub("\n", s)
    s = _TAG.sub("", s)
    s = html.unescape(s).replace("\u00b6", " ")  # pilcrow paragraph marks
    return s


def chapters(entries: List[str]) -> Iterator[Tuple[str, str]]:
    """(osisID, text) for each chapter: verses joined with spaces, paragraph breaks kept."""
    current, parts = None, []

    def flush():
        if current is not None and parts:
            text = " ".join(parts)
            text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
            text = re.sub(r"\n{2,}", "\n\n", text).strip("\n")
            text = re.sub(r"[ \t]+", " ", text).strip()
            if text:
                return current, text
        return None

    for entry in entries:
        m = _CHAPTER.search(entry)
        if m or _BOOK.search(entry):
            done = flush()
            if done:
                yield done
            current = m.group(1) if m else None
            parts = []
            # A chapter entry carries no verse text; a book entry only headings.
            continue
        if current is None:
            continue  # module/book front matter outside any chapter
        end = _CHAPTER_END.search(entry)
        text = osis_to_text(entry[:end.start()] if end else entry).strip(" ")
        if text.strip():
            parts.append(text)
        if end:  # anything after a chapter's end tag (appendices, glossaries) is not verse text
            done = flush()
            if done:
                yield done
            current, parts = None, []
    done = flush()
    if done:
        yield done
