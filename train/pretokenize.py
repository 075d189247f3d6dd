#!/usr/bin/env python3
"""Encode the corpus splits into flat token arrays for training.

    python3 train/pretokenize.py

For each split (train, valid) of ``train/out/corpus/`` writes to ``train/out/data/``:

    <split>.bin       every document as [BOS] + ids, concatenated; raw little-endian uint16
    <split>.idx.npy   int64 start offset (in tokens) of each document in <split>.bin;
                      document i spans [idx[i], idx[i+1]) and the last one ends at the file end
    meta.json         vocab size, BOS id, token/document counts per split and per source, sha256s

Chat documents are encoded the same way (BOS first); their <|im_start|>/<|im_end|> markers
become the single special ids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from array import array
from typing import Iterable, List, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corpus.fetch import sha256_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BOS_TOKEN = "<s>"


def encode_documents(tok, texts: Sequence[str], bos_id: int, batch: int = 512) -> Tuple[np.ndarray, np.ndarray]:
    """([BOS] + ids for each text, concatenated, as uint16; int64 start offsets)."""
    if tok.get_vocab_size() > 65536:
        raise ValueError("vocab does not fit uint16")
    flat = array("H")
    starts = array("q")
    for i in range(0, len(texts), batch):
        for enc in tok.encode_batch(list(texts[i:i + batch]), add_special_tokens=False):
            starts.append(len(flat))
            flat.append(bos_id)
            flat.extend(enc.ids)
    return np.frombuffer(flat, dtype=np.uint16).copy(), np.frombuffer(starts, dtype=np.int64).copy()


def document_slices(tokens: np.ndarray, starts: np.ndarray) -> List[np.ndarray]:
    """Split a flat array back into documents (inverse of :func:`encode_documents`)."""
    ends = list(starts[1:]) + [len(tokens)]
    return [tokens[s:e] for s, e in zip(starts, ends)]


def write_split(tokens: np.ndarray, starts: np.ndarray, prefix: str) -> dict:
    bin_path, idx_path = prefix + ".bin", prefix + ".idx.npy"
    tokens.astype("<u2").tofile(bin_path)
    np.save(idx_path, starts.astype("<i8"))
    return {
        "bin": os.path.basename(bin_path),
        "idx": os.path.basename(idx_path),
        "tokens": int(len(tokens)),
        "docs": int(len(starts)),
        "bin_sha256": sha256_file(bin_path),
        "idx_sha256": sha256_file(idx_path),
    }


def per_source_tokens(sources: Iterable[str], tokens: np.ndarray, starts: np.ndarray) -> dict:
    out: dict = {}
    lengths = np.diff(np.append(starts, len(tokens)))
    for src, n in zip(sources, lengths):
        s = out.setdefault(src, {"docs": 0, "tokens": 0})
        s["docs"] += 1
        s["tokens"] += int(n)
    return dict(sorted(out.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=os.path.join(HERE, "out", "corpus"))
    ap.add_argument("--tokenizer", default=os.path.join(HERE, "out", "tokenizer", "tokenizer.json"))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "data"))
    args = ap.parse_args(argv)

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(args.tokenizer)
    bos_id = tok.token_to_id(BOS_TOKEN)
    if bos_id is None:
        raise SystemExit(f"tokenizer has no {BOS_TOKEN}")
    os.makedirs(args.out, exist_ok=True)
    meta = {
        "format": "raw little-endian uint16 token ids; documents are [BOS] + ids, concatenated",
        "idx_format": "int64 .npy of document start offsets (tokens); the last document ends at EOF",
        "dtype": "uint16",
        "vocab_size": tok.get_vocab_size(),
        "bos_id": bos_id,
        "tokenizer_sha256": sha256_file(args.tokenizer),
        "splits": {},
    }
    t0 = time.time()
    for split in ("train", "valid"):
        ts = time.time()
        path = os.path.join(args.corpus, f"{split}.jsonl")
        with open(path, encoding="utf-8") as fh:
            recs = [json.loads(line) for line in fh if line.strip()]
        texts = [r["text"] for r in recs]
        tokens, starts = encode_documents(tok, texts, bos_id)
        info = write_split(tokens, starts, os.path.join(args.out, split))
        info["chars"] = sum(len(t) for t in texts)
        info["chars_per_token"] = round(info["chars"] / max(1, info["tokens"] - info["docs"]), 3)
        info["source_jsonl_sha256"] = sha256_file(path)
        info["sources"] = per_source_tokens((r["source"] for r in recs), tokens, starts)
        meta["splits"][split] = info
        print(f"{split}: {info['docs']} docs, {info['tokens']:,} tokens, "
              f"{info['chars_per_token']} chars/token, {time.time() - ts:.1f}s", file=sys.stderr)
    with open(os.path.join(args.out, "meta.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)
        fh.write("\n")
    print(f"done in {time.time() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
