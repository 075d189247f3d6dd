#!/usr/bin/env python3
"""The PyTorch reference (train/blockffn_ref) decoding at BlockFFN-Small / -XLarge shapes, on this
CPU or on a CUDA GPU: the "Huggingface" row of the paper's speed table (SPEC §9.6), as fairly as a
script can measure it.

    python3 bench/torch_decode.py [--threads 1] [--reps 7]                    # as before: CPU, Small, f32
    python3 bench/torch_decode.py --device cuda --shape xlarge --dtype bf16 [--context 512] [--graph]

Shapes (SHAPES below, from SPEC §5): Small (hidden 768, 16 layers, MLA 6 heads, 48 experts × 64,
119,383,552 non-embedding parameters), XLarge (hidden 1792, 35 layers, MLA 14 heads, 56 experts × 128,
1,187,830,952 non-embedding parameters; both q_lora 768, kv_lora 256, 128 + 64 rope, v 128,
vocab 122,753, untied head) and a tiny one for tests. Random weights (the reference's training
init, seeded); speed does not depend on their values.

One decode step = one token through the reference's own modules with a KV cache held by this
script (the reference has none): embedding, per layer RMSNorm → MLA → residual → RMSNorm → BlockFFN
→ residual, final norm, LM head, argmax (kept on the device and fed back as the next input, so no
host sync inside a step). The cache stores, as the Hugging Face MiniCPM/DeepSeek-V2 modeling code
does, every head's decompressed key (nope + rope, 192) and value (128) per token; a step projects
only the new token (kv_b_proj of one latent) and attends over the `--context` cached tokens plus
itself. The cache is static (allocated for context + 1 tokens): every timed step writes slot
`context` and reads 0..context, so the steps are identical, the context does not grow over the
reps, and the step can be captured as a CUDA graph (`--graph`). `--context 0` (the default) is an
empty cache: the step is then the forward of one token at position 0, the measurement this script
made before it had a cache (and what `bench/run.mjs`'s composed decode step does).

Dense-equivalent: the reference BlockFFN computes EVERY expert (up_proj over all Ne·de rows, SiLU,
scaled by the router scores, which are 0 for inactive experts, then down_proj over all of them), so
its FFN costs what the paper's "Baseline AR" (all experts computed densely) costs; it skips nothing.
Sparse execution is checked against it separately (tests, bench/run.mjs).

How this compares with the paper's "Huggingface" row: that is transformers' generate() over the
released modeling code, eager, batch 1. This script runs the same maths (same modules, eager by
default, batch 1, KV cache of the same layout) without generate()'s per-step Python overhead
(logits processors, stopping criteria with a host sync, DynamicCache concatenation), so it is, if
anything, a little faster than that baseline. Attention: `--attn sdpa` (torch's
scaled_dot_product_attention, what transformers picks by default on a GPU; the default on cuda) or
`eager` (the reference's explicit fp32 softmax; the default on cpu). `--graph` (cuda only) replays
the step as one CUDA graph: PyTorch without launch overhead, a stronger baseline than HF eager.

Timing: `--warmup` untimed steps, then `--reps` timed ones; on cuda each step is bracketed by CUDA
events (torch.cuda.synchronize() between steps, so a step's time is its own), on cpu by
perf_counter. Prints one JSON line: median / min ms per token, tokens/s, wall-clock median (cuda:
host time of launch + sync), the weight bytes one step reads and the bandwidth that implies, device
name, torch version, dtype, shape, context, attention.
"""

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train"))

from blockffn_ref import BlockFFNForCausalLM, count_parameters  # noqa: E402
from blockffn_ref.model import apply_rope, attend, rope_cos_sin  # noqa: E402

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

# SPEC §5, column "XLarge 1.2B": hidden 1792, 35 layers, 14 query heads, MLA with the same dims as
# Small, 56 experts × 128 (Ne·de = 7168), vocab 122,753, untied. intermediate_size is Ne·de as in
# SMALL (BlockFFN does not read it; the released config carries the dense baseline's 4816 there).
# Non-embedding parameters 1,187,830,952 (SPEC's DERIVED exact count; checked with count_parameters).
XLARGE = dict(SMALL, hidden_size=1792, num_hidden_layers=35, num_attention_heads=14, num_key_value_heads=14,
              num_experts=56, expert_size=128, intermediate_size=7168)

# For tests on a CPU in seconds (train/tests/test_small_random.py's shape).
TINY = dict(SMALL, vocab_size=512, hidden_size=64, num_hidden_layers=3, num_attention_heads=2,
            num_key_value_heads=2, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8,
            v_head_dim=16, num_experts=16, expert_size=8, intermediate_size=128, max_position_embeddings=512)

SHAPES = {"tiny": TINY, "small": SMALL, "xlarge": XLARGE}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


class StaticCache:
    """Per layer: decompressed keys [1, h, T, nope+rope] and values [1, h, T, v] of T slots."""

    def __init__(self, model: BlockFFNForCausalLM, slots: int, dtype, device):
        c = model.config
        h = c["num_attention_heads"]
        dq, dv = c["qk_nope_head_dim"] + c["qk_rope_head_dim"], c["v_head_dim"]
        n = c["num_hidden_layers"]
        self.k = [torch.zeros(1, h, slots, dq, dtype=dtype, device=device) for _ in range(n)]
        self.v = [torch.zeros(1, h, slots, dv, dtype=dtype, device=device) for _ in range(n)]

    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


def mla_cached(attn, x, start: int, kc, vc, impl: str):
    """MLAAttention.forward for T new tokens at positions start..start+T-1, with the keys and values
    of positions < start read from the cache and those of the new tokens written to it."""
    B, T, _ = x.shape
    h = attn.num_heads
    if attn.q_lora:
        q = attn.q_b_proj(attn.q_a_layernorm(attn.q_a_proj(x)))
    else:
        q = attn.q_proj(x)
    q = q.view(B, T, h, attn.q_dim).transpose(1, 2)
    q_nope, q_pe = q.split([attn.nope, attn.rope], dim=-1)
    c_kv, k_pe = attn.kv_a_proj_with_mqa(x).split([attn.kv_lora, attn.rope], dim=-1)
    kv = attn.kv_b_proj(attn.kv_a_layernorm(c_kv)).view(B, T, h, attn.nope + attn.v_dim).transpose(1, 2)
    k_nope, v = kv.split([attn.nope, attn.v_dim], dim=-1)
    k_pe = k_pe.view(B, 1, T, attn.rope)
    pos = torch.arange(start, start + T, device=x.device)[None]
    cos, sin = rope_cos_sin(pos, attn.rope, attn.rope_theta)
    q_pe = apply_rope(q_pe, cos, sin)
    k_pe = apply_rope(k_pe, cos, sin)
    qf = torch.cat([q_nope, q_pe], dim=-1)
    kc[:, :, start:start + T] = torch.cat([k_nope, k_pe.expand(B, h, T, attn.rope)], dim=-1)
    vc[:, :, start:start + T] = v
    n = start + T
    keys, vals = kc[:, :, :n], vc[:, :, :n]
    if T == 1 and impl == "sdpa":
        mask = None  # one query sees every cached key
    else:  # new token i sees keys 0..start+i
        mask = (torch.arange(n, device=x.device)[None, :] <= torch.arange(start, n, device=x.device)[:, None])
        mask = mask[None, None]
    out = attend(qf, keys, vals, mask, attn.scale, impl)
    return attn.o_proj(out.transpose(1, 2).reshape(B, T, h * attn.v_dim))


def forward_cached(model: BlockFFNForCausalLM, ids, start: int, cache: StaticCache, impl: str):
    """Logits [1, T, V] of tokens ids [1, T] at positions start.., the reference's forward with a cache."""
    h = model.model.embed_tokens(ids) * model.scale_emb
    for i, layer in enumerate(model.model.layers):
        a = mla_cached(layer.self_attn, layer.input_layernorm(h), start, cache.k[i], cache.v[i], impl)
        h = h + a * layer.residual_scale
        f, _ = layer.mlp(layer.post_attention_layernorm(h))  # every expert (dense-equivalent)
        h = h + f * layer.residual_scale
    y = model.model.norm(h)
    return torch.nn.functional.linear(y / model.logit_divisor, model.lm_head_weight())


def build_model(config: dict, device: str, dtype, seed: int = 0) -> BlockFFNForCausalLM:
    """The reference at `config` on `device` in `dtype`, the training init drawn with a seeded generator."""
    with torch.device(device):
        model = BlockFFNForCausalLM(config, attn_impl="eager")
    model.init_weights(generator=torch.Generator(device=device).manual_seed(seed))
    return model.to(dtype).eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), help="default f32 on cpu, bf16 on cuda")
    ap.add_argument("--attn", choices=["eager", "sdpa"], help="default eager on cpu, sdpa on cuda")
    ap.add_argument("--context", type=int, default=0, help="tokens already in the KV cache (default 0)")
    ap.add_argument("--graph", action="store_true", help="cuda: replay the step as one CUDA graph")
    ap.add_argument("--threads", type=int, default=1, help="cpu threads (default 1)")
    ap.add_argument("--warmup", type=int, help="untimed steps (default 2 on cpu, 10 on cuda)")
    ap.add_argument("--reps", type=int, help="timed steps (default 7 on cpu, 100 on cuda)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    if args.graph and not cuda:
        sys.exit("--graph needs --device cuda")
    dtype = DTYPES[args.dtype or ("bf16" if cuda else "f32")]
    impl = args.attn or ("sdpa" if cuda else "eager")
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    reps = args.reps if args.reps is not None else (100 if cuda else 7)
    config = SHAPES[args.shape]
    if args.context + 1 > config["max_position_embeddings"]:
        sys.exit(f"--context must be below max_position_embeddings ({config['max_position_embeddings']})")
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if cuda:
        torch.cuda.set_device(dev)

    model = build_model(config, args.device, dtype, args.seed)
    params = count_parameters(model, non_embedding=False)
    non_emb = count_parameters(model)
    esize = torch.finfo(dtype).bits // 8
    # weights one step reads: everything but the embedding table, plus one embedding row
    step_bytes = (params - model.model.embed_tokens.weight.numel() + config["hidden_size"]) * esize
    cache = StaticCache(model, args.context + 1, dtype, dev)
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():  # (not inference_mode: the CUDA graph capture and the cache stay plain tensors)
        if args.context:  # fill the cache with a random prompt, in one prefill
            prompt = torch.randint(3, config["vocab_size"], (1, args.context), generator=g).to(dev)
            forward_cached(model, prompt, 0, cache, impl)
        tok = torch.full((1, 1), 17, dtype=torch.long, device=dev)

        def step():  # one decode step at position `context`; the argmax is the next input
            logits = forward_cached(model, tok, args.context, cache, impl)
            tok.copy_(logits[:, -1].argmax(dim=-1, keepdim=True))

        run = step
        if args.graph:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    step()
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            run = graph.replay
        for _ in range(warmup):
            run()
        times, wall = [], []
        if cuda:
            torch.cuda.synchronize()
            ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
            for a, b in ev:
                t = time.perf_counter()
                a.record()
                run()
                b.record()
                torch.cuda.synchronize()
                wall.append((time.perf_counter() - t) * 1000)
            times = [a.elapsed_time(b) for a, b in ev]
        else:
            for _ in range(reps):
                t = time.perf_counter()
                run()
                times.append((time.perf_counter() - t) * 1000)
            wall = times
    med = sorted(times)[len(times) // 2]
    res = {
        "what": (f"PyTorch reference (blockffn_ref, {'CUDA graph' if args.graph else 'eager'}, "
                 f"{args.dtype or ('bf16' if cuda else 'f32')}), one decode step at {args.shape} shapes "
                 f"with {args.context} cached tokens, all experts (dense-equivalent)"),
        "medianMs": med,
        "minMs": min(times),
        "wallMedianMs": sorted(wall)[len(wall) // 2],
        "tokensPerSecond": 1000 / med,
        "weightBytesPerStep": step_bytes,
        "impliedGBs": step_bytes / (med * 1e-3) / 1e9,
        "shape": args.shape,
        "dtype": args.dtype or ("bf16" if cuda else "f32"),
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "context": args.context,
        "attn": impl,
        "graph": args.graph,
        "ffn": "dense-equivalent: every expert computed (the reference BlockFFN skips none)",
        "warmup": warmup,
        "reps": reps,
        "threads": args.threads,
        "params": params,
        "nonEmbeddingParams": non_emb,
        "kvCacheBytes": cache.bytes(),
        "torch": torch.__version__,
    }
    if cuda:
        res["cuda"] = torch.version.cuda
        res["maxMemoryAllocatedBytes"] = torch.cuda.max_memory_allocated(dev)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
