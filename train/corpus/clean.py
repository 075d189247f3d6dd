"""Text cleaning: whitespace and character normalisation, markup and boilerplate removal,
an English/quality gate, and the dedup key. Pure functions; the tests run them on small strings."""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from typing import Iterable, List

# Reserved strings of the tokenizer. Ordinary documents must never contain them (they would encode
# as control ids); only the chat formatter writes the two chat markers.
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]

_CHAR_MAP = {
    0x00A0: " ",  # no-break space
    0x2007: " ",
    0x202F: " ",
    0x2009: " ",
    0x200A: " ",
    0x2002: " ",
    0x2003: " ",
    0x3000: " ",
    0x00AD: None,  # soft hyphen
    0x200B: None,  # zero-width space / joiners / BOM
    0x200C: None,
    0x200D: None,
    0x2060: None,
    0xFEFF: None,
    0x2018: "'",
    0x2019: "'",
    0x201A: "'",
    0x201B: "'",
    0x2032: "'",
    0x201C: '"',
    0x201D: '"',
    0x201E: '"',
    0x201F: '"',
    0x2033: '"',
    0x00B4: "'",
    0x2028: "\n",  # line / paragraph separators
    0x2029: "\n\n",
    0x0009: " ",
    0x000B: " ",
    0x000C: "\n",
}
# Remaining C0/C1 control characters (newline is kept).
for _c in list(range(0x00, 0x20)) + list(range(0x7F, 0xA0)):
    if _c != 0x0A and _c not in _CHAR_MAP:
        _CHAR_MAP[_c] = None

_SPACES = re.compile(r"[ ]{2,}")
_BLANKS = re.compile(r"\n\s*\n")


def normalize_chars(text: str) -> str:
    """NFC, unify line endings, drop invisible/control characters, straighten curly quotes."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFC", text)
    return text.translate(_CHAR_MAP)


def paragraphs(text: str) -> List[str]:
    """Split on blank lines; each paragraph's lines are stripped and empty paragraphs dropped."""
    out = []
    for block in _BLANKS.split(text):
        lines = [_SPACES.sub(" ", ln).strip() for ln in block.split("\n")]
        lines = [ln for ln in lines if ln]
        if lines:
            out.append("\n".join(lines))
    return out


def normalize_whitespace(text: str, unwrap: bool = False) -> str:
    """Characters normalised, runs of spaces collapsed, lines stripped, paragraphs separated by one
    blank line. ``unwrap`` joins the hard-wrapped lines of each paragraph into one line."""
    paras = paragraphs(normalize_chars(text))
    if unwrap:
        paras = [" ".join(p.split("\n")) for p in paras]
    return "\n\n".join(paras)


_TAG_BLOCKS = re.compile(r"<(script|style|head)\b[^>]*>.*?</\1\s*>", re.S | re.I)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_BREAK_TAGS = re.compile(r"<\s*(br|/p|p|/div|div|/li|li|/h[1-6]|h[1-6]|/tr|tr|hr)\b[^>]*>", re.I)
_TAG = re.compile(r"</?[A-Za-z][^<>]{0,500}>")


def strip_markup(text: str) -> str:
    """Remove HTML/XML markup: comments, script/style blocks, tags (block tags become line breaks),
    then decode character entities."""
    text = _COMMENT.sub(" ", text)
    text = _TAG_BLOCKS.sub(" ", text)
    text = _BREAK_TAGS.sub("\n", text)
    text = _TAG.sub("", text)
    return html.unescape(text)


_BOILERPLATE = [
    re.compile(p, re.I)
    for p in [
        r"project gutenberg",
        r"gutenberg\.org",
        r"\bcopyright\s*(\(c\)|©)",
        r"©\s*(19|20)\d\d",
        r"\ball rights reserved\b",
        r"\bpermission is hereby granted\b",
        r"\bSPDX-License-Identifier\b",
        r"\bwithout any warranty\b",
        r"\bunder the terms of the (gnu|gpl|apache|mit|bsd|creative commons)",
        r"\bthis (e-?book|e-?text) is for the use of\b",
        r"\blicensed under (the|a|an)\b",
        r"\bcreativecommons\.org\b",
    ]
]


def is_boilerplate(paragraph: str) -> bool:
    return any(p.search(paragraph) for p in _BOILERPLATE)


def strip_boilerplate(text: str) -> str:
    """Drop paragraphs that are licence, copyright or distribution notices."""
    return "\n\n".join(p for p in text.split("\n\n") if not is_boilerplate(p))


def remove_special_tokens(text: str) -> str:
    for tok in SPECIAL_TOKENS:
        text = text.replace(tok, " ")
    return text


_STOPWORDS = frozenset(
    """a about after all also an and any are as at be been but by can could did do does for from
    had has have he her him his how i if in into is it its me more my no not now of on one or our
    out she so some than that the their them then there these they this to up us was we were what
    when which who will with would you your shall thou thee thy unto""".split()
)
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def english_score(text: str) -> float:
    """Share of words that are common English function words (0 for text without words)."""
    words = _WORD.findall(text.lower())
    if not words:
        return 0.0
    return sum(w in _STOPWORDS for w in words) / len(words)


def looks_english(text: str, min_stopword_share: float = 0.12) -> bool:
    """Cheap gate against non-English text, tables, code and ASCII art.

    - letters must be mostly ASCII (English text with a few accented names passes),
    - most non-space characters must be letters or ordinary punctuation,
    - texts of 8+ words need a minimum share of English function words.
    """
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    ascii_letters = sum(c.isascii() for c in letters)
    if ascii_letters / len(letters) < 0.9:
        return False
    visible = [c for c in text if not c.isspace()]
    if len(letters) / len(visible) < 0.6:
        return False
    words = _WORD.findall(text.lower())
    if len(words) >= 8 and english_score(text) < min_stopword_share:
        return False
    return True


def keep_document(text: str, min_chars: int = 64) -> bool:
    return len(text) >= min_chars and looks_english(text)


EMAIL = re.compile(r"<?\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b>?")
_TEX_DQUOTE = re.compile(r"``(.{1,400}?)''", re.S)
_TEX_SQUOTE = re.compile(r"(?<![`\w])`([^`'\n]{1,80})'")


def fix_quotes(text: str) -> str:
    """Old typewriter quoting ``like this'' and `this' -> "like this" and 'this'."""
    text = _TEX_DQUOTE.sub(r'"\1"', text)
    return _TEX_SQUOTE.sub(r"'\1'", text)


def clean_document(text: str, *, unwrap: bool = False, markup: bool = False) -> str:
    """The standard cleaning pass applied to every extracted prose document: markup (optional) and
    character entities decoded, characters and whitespace normalised, old-style quotes fixed,
    e-mail addresses and boilerplate paragraphs removed, reserved token strings removed."""
    if markup:
        text = strip_markup(text)
    else:
        text = html.unescape(text)
    text = EMAIL.sub("", text)
    text = normalize_whitespace(text, unwrap=unwrap)
    text = fix_quotes(text)
    text = strip_boilerplate(text)
    text = remove_special_tokens(text)
    # remove_special_tokens may leave double spaces; one more whitespace pass keeps it tidy.
    return normalize_whitespace(text, unwrap=False)


_NONWORD = re.compile(r"[\W_]+")


def dedup_key(text: str) -> str:
    """Near-exact duplicate key: case, punctuation and whitespace differences are ignored."""
    norm = _NONWORD.sub(" ", text.lower()).strip()
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()


def exact_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def chunk_paragraphs(paras: Iterable[str], target_chars: int) -> List[str]:
    """Group consecutive paragraphs into documents of about ``target_chars`` characters."""
    out, cur, size = [], [], 0
    for p in paras:
        if cur and size + len(p) > target_chars:
            out.append("\n\n".join(cur))
            cur, size = [], 0
        cur.append(p)
        size += len(p) + 2
    if cur:
        out.append("\n\n".join(cur))
    return out
