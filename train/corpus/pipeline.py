"""Corpus assembly: deduplication, the train/validation split, and the output files."""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Tuple

from .clean import dedup_key, exact_key


@dataclass
class Doc:
    text: str
    source: str
    # May the text be shipped verbatim with the model (in validation.txt)? Only public-domain
    # sources; the rest still take part in the split but stay out of the shipped text.
    ship: bool = False

    @property
    def is_chat(self) -> bool:
        return self.source.startswith("chat:")


@dataclass
class DedupStats:
    exact: int = 0
    near: int = 0
    by_source: Dict[str, int] = field(default_factory=dict)


def deduplicate(docs: Iterable[Doc]) -> Tuple[List[Doc], DedupStats]:
    """Keep the first occurrence of each document. Two documents are duplicates when their text is
    equal (``exact``) or equal after lower-casing and dropping punctuation/whitespace (``near``).
    Order is preserved, so the result depends only on the input order."""
    seen_exact, seen_near = set(), set()
    stats = DedupStats()
    out: List[Doc] = []
    for d in docs:
        ek = exact_key(d.text)
        nk = dedup_key(d.text)
        if ek in seen_exact:
            stats.exact += 1
        elif nk in seen_near:
            stats.near += 1
        else:
            seen_exact.add(ek)
            seen_near.add(nk)
            out.append(d)
            continue
        stats.by_source[d.source] = stats.by_source.get(d.source, 0) + 1
    return out, stats


def split_score(text: str, salt: str) -> float:
    """Deterministic uniform number in [0, 1) from the document's normalised text."""
    h = hashlib.sha256((salt + "\0" + dedup_key(text)).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def split_docs(docs: List[Doc], valid_fraction: float = 0.02, valid_max_bytes: int = 2_000_000,
               salt: str = "blockffn-corpus-v1") -> Tuple[List[Doc], List[Doc]]:
    """Split by document. A document goes to validation when its hash score is below
    ``valid_fraction``; if those exceed ``valid_max_bytes`` (UTF-8 bytes of text plus one blank-line
    separator each), the lowest-scoring ones are kept and the rest go back to train.
    Both outputs keep the input order."""
    scored = [(split_score(d.text, salt), i) for i, d in enumerate(docs)]
    candidates = sorted((s, i) for s, i in scored if s < valid_fraction)
    chosen, used = set(), 0
    for _, i in candidates:
        size = len(docs[i].text.encode("utf-8")) + 2
        if used + size > valid_max_bytes:
            continue
        chosen.add(i)
        used += size
    train = [d for i, d in enumerate(docs) if i not in chosen]
    valid = [d for i, d in enumerate(docs) if i in chosen]
    return train, valid


def write_jsonl(path: str, docs: Iterable[Doc]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"text": d.text, "source": d.source}, ensure_ascii=False))
            fh.write("\n")


def read_jsonl(path: str) -> List[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def validation_text(docs: Iterable[Doc]) -> str:
    """Plain held-out text shipped with the model: the validation documents of shippable prose
    sources, separated by blank lines."""
    return "\n\n".join(d.text for d in docs if d.ship and not d.is_chat) + "\n"


def source_stats(docs: Iterable[Doc]) -> "OrderedDict[str, dict]":
    stats: "OrderedDict[str, dict]" = OrderedDict()
    for d in docs:
        s = stats.setdefault(d.source, {"docs": 0, "chars": 0, "bytes": 0})
        s["docs"] += 1
        s["chars"] += len(d.text)
        s["bytes"] += len(d.text.encode("utf-8"))
    return stats


def file_summary(path: str, docs: List[Doc]) -> dict:
    from .fetch import sha256_file

    return {
        "file": os.path.basename(path),
        "sha256": sha256_file(path),
        "bytes": os.path.getsize(path),
        "docs": len(docs),
        "chars": sum(len(d.text) for d in docs),
        "sources": source_stats(docs),
    }
