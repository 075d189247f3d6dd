#!/usr/bin/env python3
"""Train the demo model's byte-level BPE tokenizer on the corpus train split.

    python3 train/train_tokenizer.py [--vocab-size 6144]

Ids 0-4 are the special tokens <unk>, <s> (BOS), </s> (EOS), <|im_start|>, <|im_end|>, each a
single id. No normalizer, no post-processor (the engine prepends BOS itself), byte-level
pre-tokenizer without a prefix space and the ByteLevel decoder, so decode(encode(x)) == x for any
string. Writes ``train/out/tokenizer/tokenizer.json``, ``meta.json`` and ``id_check.json`` (fixed
strings with their ids, for the Rust tokenizer test).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from typing import Iterator, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from corpus.clean import SPECIAL_TOKENS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB_MIN, VOCAB_MAX = 4096, 8192

BOS, EOS, IM_START, IM_END = "<s>", "</s>", "<|im_start|>", "<|im_end|>"

ID_CHECK_STRINGS: List[str] = [
    "",
    " ",
    "Hello world!",
    "Hello, world! How are you today?",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "line one\nline two\n",
    "\n\nblank lines\n\n\nthree\n",
    "tabs\tand\ttabs",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.",
    "Call me Ishmael.",
    "In the beginning God created the heaven and the earth.",
    "Numbers: 0 1 12 123 1234 12345 3.14159 -42 1,000,000 2024-11-28",
    "Punctuation!?... (parens) [brackets] {braces} \"quotes\" 'single' --dashes-- a/b\\c",
    "Symbols: @#$%^&*_+=|~`<>",
    "café — naïve ☃",
    "Übermäßig groß, résumé, jalapeño, Zürich",
    "emoji: 🙂🚀 and CJK: 日本語 中文",
    "ALL CAPS SHOUTING AND MiXeD cAsE",
    "don't won't it's we'll they're I'd",
    "def f(x):\n    return x * 2\n",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi! How can I help you?<|im_end|>\n",
    "<|im_start|>user\nWhat does \"happy\" mean?<|im_end|>\n<|im_start|>assistant\n",
    "<s>Once upon a time</s>",
    "<unk>",
    "<|im_end|>",
    "text<|im_end|>text",
    "a",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
    "   ",
    "\u00a0non-breaking\u00a0space and zero\u200bwidth",
]

_SPECIAL_SPLIT = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def training_segments(text: str) -> List[str]:
    """The pieces of a document between special-token strings: the trainer must learn merges for
    ordinary text only (the special tokens are whole tokens already)."""
    return [p for p in _SPECIAL_SPLIT.split(text) if p]


def iter_train_texts(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield from training_segments(json.loads(line)["text"])


def build_tokenizer():
    """An untrained tokenizer with the pipeline described in the module docstring."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = None
    return tok


def train(texts, vocab_size: int, min_frequency: int = 2):
    from tokenizers import pre_tokenizers, trainers

    if not VOCAB_MIN <= vocab_size <= VOCAB_MAX:
        raise ValueError(f"vocab size must be in [{VOCAB_MIN}, {VOCAB_MAX}], got {vocab_size}")
    tok = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    check_special_ids(tok)
    return tok


def check_special_ids(tok) -> None:
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise AssertionError(f"special token {t!r} has id {tok.token_to_id(t)}, expected {i}")


def id_check(tok, strings=ID_CHECK_STRINGS) -> List[dict]:
    out = []
    for s in strings:
        ids = tok.encode(s, add_special_tokens=False).ids
        back = tok.decode(ids, skip_special_tokens=False)
        if back != s:
            raise AssertionError(f"round trip failed for {s!r}: {back!r}")
        out.append({"text": s, "ids": ids})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default=os.path.join(HERE, "out", "corpus", "train.jsonl"))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "tokenizer"))
    ap.add_argument("--vocab-size", type=int, default=6144, help=f"{VOCAB_MIN}..{VOCAB_MAX}")
    ap.add_argument("--min-frequency", type=int, default=2)
    args = ap.parse_args(argv)

    t0 = time.time()
    tok = train(iter_train_texts(args.train), args.vocab_size, args.min_frequency)
    seconds = time.time() - t0
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "tokenizer.json")
    tok.save(path)

    # Reload from disk: the ids recorded must be those of the saved file.
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    check_special_ids(tok)
    cases = id_check(tok)
    with open(os.path.join(args.out, "id_check.json"), "w", encoding="utf-8") as fh:
        json.dump(cases, fh, indent=1, ensure_ascii=False)
        fh.write("\n")

    with open(path, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    with open(args.train, "rb") as fh:
        train_sha = hashlib.sha256(fh.read()).hexdigest()
    import tokenizers

    meta = {
        "type": "byte-level BPE",
        "vocab_size": tok.get_vocab_size(),
        "requested_vocab_size": args.vocab_size,
        "min_frequency": args.min_frequency,
        "special_tokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
        "bos_id": SPECIAL_TOKENS.index(BOS),
        "eos_id": SPECIAL_TOKENS.index(EOS),
        "post_processor": None,
        "normalizer": None,
        "tokenizer_sha256": sha,
        "trained_on": {"file": os.path.basename(args.train), "sha256": train_sha},
        "tokenizers_version": tokenizers.__version__,
    }
    with open(os.path.join(args.out, "meta.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)
        fh.write("\n")
    print(f"vocab {meta['vocab_size']} trained in {seconds:.1f}s -> {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
