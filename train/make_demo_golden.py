#!/usr/bin/env python3
"""Pin the embedded demo model (models/demo) to the PyTorch reference.

    python3 train/make_demo_golden.py --hf DIR [--validation models/demo/validation.txt] [--out tests/fixtures/demo]

DIR is the training run's HF export (bf16 ``pytorch_model.bin`` + ``config.json`` +
``tokenizer.json``) that ``blockffn convert --dtype f16`` turned into models/demo. The
reference runs it in fp32 on the CPU and writes ``expected.json`` (read by
``tests/demo_model.rs``):

* ``ids`` (a real English prompt, BOS first), the reference logits of the last position and
  the active expert sets of every position and layer;
* ``greedy``: 24 greedy tokens after the prompt, with the smallest top-1/top-2 margin;
* ``eval``: PPL / TLS / CLS / reuse of ``eval.txt`` (the first few KB of the validation text),
  computed as ``blockffn eval`` does (one document, BOS first, 1024-token segments).

The f16 runtime holds the bf16 weights up to rounding (bf16 -> f16 is exact for normal
values), so the engine should match to float-summation error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from blockffn_ref import load_hf  # noqa: E402
from make_fixtures import active_lists, evaluate, forward, greedy, r7  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "It was the best of times, and the people of the United States"
EVAL_CHARS = 6000
N_NEW = 24


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf", required=True, help="the HF export the demo model was converted from")
    ap.add_argument("--validation", default=os.path.join(REPO, "models", "demo", "validation.txt"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "demo"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from tokenizers import Tokenizer

    model, config = load_hf(args.hf, attn_impl="eager")
    model = model.float().eval()
    tok = Tokenizer.from_file(os.path.join(args.hf, "tokenizer.json"))
    bos = config["bos_token_id"]

    def encode(text):
        return [bos] + tok.encode(text, add_special_tokens=False).ids

    text = open(args.validation, encoding="utf-8").read()
    cut = text.rfind(" ", 0, EVAL_CHARS)
    eval_text = text[: cut if cut > 0 else EVAL_CHARS]

    with torch.no_grad():
        ids = encode(PROMPT)
        logits, routers = forward(model, ids)
        new_ids, margin = greedy(model, ids, N_NEW)
        ev, _ = evaluate(model, encode(eval_text), config["max_position_embeddings"], True)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "eval.txt"), "w", encoding="utf-8") as f:
        f.write(eval_text)
    expected = {
        "prompt": PROMPT,
        "ids": ids,
        "last_logits": [r7(v) for v in logits[-1].tolist()],
        "active_experts": active_lists(routers),
        "greedy": {"new_ids": new_ids, "min_margin": margin},
        "eval": ev,
    }
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(ids)} prompt ids, greedy margin {margin:.3g}, eval {ev}")


if __name__ == "__main__":
    main()
