#!/usr/bin/env python3
"""Where a model's chunk sparsity comes from: temporal locality or a few popular experts?

    python3 train/chunk_locality.py [--model models/demo] [--bin target/release/blockffn] [--tokens 1024]

Runs `blockffn logits --experts` on a slice of the model's validation text and compares the
measured CLS_L with two baselines that keep every token's active set but destroy the order of
tokens: the expectation if each token drew experts independently with the measured per-layer
expert frequencies (E[union] = Σ_e 1 − (1 − p_e)^L), and the same sets shuffled in time. The gap
between measured and shuffled is what locality (the AL/CS objectives' neighbour sharing) adds; the
rest comes from how unevenly the experts are used (reported as the top-4 experts' share).
"""

import argparse
import json
import os
import random
import subprocess

from tokenizers import Tokenizer


def cls(act, n_experts, window):
    used = tot = 0
    for layer in act:
        t_max = len(layer) - len(layer) % window
        for c in range(0, t_max, window):
            used += len(set().union(*[set(layer[t]) for t in range(c, c + window)]))
            tot += n_experts
    return 1 - used / tot


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/demo")
    ap.add_argument("--bin", default="target/release/blockffn")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--offset", type=int, default=200000, help="character offset into validation.txt")
    args = ap.parse_args()
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    ne = cfg["num_experts"]
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    text = open(os.path.join(args.model, "validation.txt"), encoding="utf-8").read()[args.offset:]
    ids = ([cfg["bos_token_id"]] + tok.encode(text[: args.tokens * 8], add_special_tokens=False).ids)[: args.tokens]
    out = subprocess.run([args.bin, "logits", "--model", args.model, "--ids", ",".join(map(str, ids)), "--experts"],
                         capture_output=True, text=True, check=True).stdout
    act = json.loads(out)["active_experts"]  # [layer][position] -> sorted ids
    n_layers, n_tok = len(act), len(act[0])
    rng = random.Random(0)
    perm = list(range(n_tok))
    rng.shuffle(perm)
    shuffled = [[layer[p] for p in perm] for layer in act]
    freqs = [[sum(e in set(s) for s in layer) / n_tok for e in range(ne)] for layer in act]
    res = {"model": args.model, "tokens": n_tok,
           "tls": 1 - sum(len(s) for layer in act for s in layer) / (n_layers * n_tok * ne)}
    for w in (2, 4, 8, 16, 32):
        indep = 1 - sum(1 - (1 - p) ** w for f in freqs for p in f) / (n_layers * ne)
        res[f"cls{w}"] = {"measured": round(cls(act, ne, w), 4), "shuffled": round(cls(shuffled, ne, w), 4),
                          "independent": round(indep, 4)}
    res["top4_share"] = round(sum(sum(sorted(f, reverse=True)[:4]) / sum(f) for f in freqs) / n_layers, 3)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
