#!/usr/bin/env python3
"""The PyTorch reference (train/blockffn_ref) decoding at BlockFFN-Small's shapes on this CPU.

    python3 bench/torch_decode.py [--threads 1] [--reps 7]

Random f32 weights with Small's exact shapes (hidden 768, 16 layers, MLA 6 heads, q_lora 768,
kv_lora 256, 48 experts x 64, vocab 122,753, untied head). One decode step = the reference's
forward of one token at position 0 (the reference has no KV cache, so this is the cheapest step it
can take; attention over a one-token context is negligible), as `bench/run.mjs`'s composed decode
step does. The reference computes every expert (its FFN is dense; skipping is checked against it
separately). Prints one JSON line: median ms per step, threads, torch version.
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train"))

from blockffn_ref import BlockFFNForCausalLM  # noqa: E402

SMALL = {
    "vocab_size": 122753,
    "hidden_size": 768,
    "num_hidden_layers": 16,
    "attention_type": "mla",
    "num_attention_heads": 6,
    "num_key_value_heads": 6,
    "q_lora_rank": 768,
    "kv_lora_rank": 256,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "ffn_type": "block_linear",
    "ffn_gated": False,
    "hidden_act": "silu",
    "router_act": "relu",
    "num_experts": 48,
    "expert_size": 64,
    "intermediate_size": 3072,
    "norm_after_router": "rms",
    "norm_scale": 1.0,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "scale_emb": 12,
    "dim_model_base": 256,
    "scale_depth": 1.4,
    "initializer_range": 0.1,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = BlockFFNForCausalLM(SMALL, attn_impl="eager").float().eval()
    params = sum(p.numel() for p in model.parameters())
    ids = torch.tensor([[17]])
    times = []
    with torch.inference_mode():
        for _ in range(2):
            model(ids)
        for _ in range(args.reps):
            t = time.perf_counter()
            model(ids)
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    print(json.dumps({
        "what": "PyTorch reference (blockffn_ref, eager, f32), one decode step at Small shapes, all experts",
        "medianMs": times[len(times) // 2],
        "tokensPerSecond": 1000 / times[len(times) // 2],
        "threads": args.threads,
        "params": params,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
