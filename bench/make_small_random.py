#!/usr/bin/env python3
"""A random model with BlockFFN-Small's exact shapes at a controlled activation ratio, for the
benchmark's end-to-end run (`bench/run.mjs`, section "end to end: random Small-shaped model").

    python3 bench/make_small_random.py --activation 0.2 [--name small-a20] [--out target/bench]
        [--dtypes f32,f16,q8] [--cli target/release/blockffn] [--force]

Writes OUT/NAME/hf/ (config.json, an f32 model.safetensors with the Hugging Face names, and a
word-level tokenizer.json whose token "t<id>" is id <id>, so a text of such words is any id sequence),
converts it with the CLI (`blockffn convert OUT/NAME/hf OUT/NAME-<dtype> --dtype <dtype>`), then
checks the activation of every package with `blockffn eval` on held-out tokens. OUT/NAME/info.json
records the parameters, the calibration, the measured TLS / CLS_8 and the package paths; the last
line of stdout is that record as JSON. Cached: with the same parameters nothing is redone.

Shapes (bench/torch_decode.py's SMALL, SPEC §5): hidden 768, 16 layers, MLA (6 heads, q_lora 768,
kv_lora 256, 128 + 64 rope, v 128), 48 experts × 64, vocab 122,753, untied LM head.

Controlled activation. The router is RMSNorm(ReLU(W_r x)) with no bias: expert e is active iff
W_r[e] · x > 0, x the RMSNorm'd residual stream. So:
* every embedding row is N(0, 1) with a constant EMB_CONST in dimension 0; after the ×12 embedding
  scale and every RMSNorm, x[0] ≈ 7.7 for every token and layer, the other 767 entries ≈ N(0, 0.93);
* the attention and FFN output projections (o_proj, down_proj) are scaled by BRANCH_SCALE, so the
  branches barely move the residual stream (info.json: `residualDrift`, `x0` per layer);
* router row e of layer l is [β_l + δ_{l,e}, N(0, 1/767) ...]: its logit is (β_l + δ_{l,e})·x[0]
  plus a per-token noise of spread s_l. δ_{l,e} = SPREAD · s_l / mean(x[0]) · q_{π_l(e)}, q the 48
  normal quantiles and π_l a random permutation: a few experts are used by almost every token, most
  rarely, which is what gives BlockFFN its chunk-level sparsity (at SPREAD 3: CLS_8 ≈ 0.66 at 20%
  active for independent tokens, against 0.17 with equal experts);
* β_l is calibrated layer by layer on CALIB_TOKENS random tokens with the PyTorch reference
  (train/blockffn_ref): the router inputs of layer l are captured with layers < l final, and β_l is
  put halfway between the k-th and (k+1)-th of the per-(token, expert) thresholds, k = target ×
  tokens × experts (the limit of a bisection on the active fraction, as far as possible from every
  decision); then layer l+1.
Other norms weigh 1, other matrices N(0, 1/fan_in).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import time
from statistics import NormalDist

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "train"))
sys.path.insert(0, HERE)

from blockffn_ref import BlockFFNForCausalLM, cls, hf_config_dict, tls  # noqa: E402
from torch_decode import SMALL  # noqa: E402

RECIPE = 1  # bump when the recipe below changes: invalidates cached models
EMB_CONST = 8.0
BRANCH_SCALE = 0.1
SPREAD = 3.0
CALIB_TOKENS = 64
EVAL_TOKENS = 256
BOS = 1
FIRST_ID = 3  # ids 0..2 are <unk>, <s>, </s>


def random_ids(n: int, vocab: int, seed: int, exclude=()) -> list:
    """[BOS] + n-1 distinct random ids from FIRST_ID..vocab-1, none of them in `exclude`."""
    g = torch.Generator().manual_seed(seed)
    skip = set(exclude)
    out = []
    for i in torch.randperm(vocab - FIRST_ID, generator=g).tolist():
        if len(out) == n - 1:
            break
        if i + FIRST_ID not in skip:
            out.append(i + FIRST_ID)
    return [BOS] + out


@torch.no_grad()
def draw_weights(model: BlockFFNForCausalLM, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        fan_in = p.shape[-1]
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        elif name == "model.embed_tokens.weight":
            p.normal_(0.0, 1.0, generator=g)
            p[:, 0] = EMB_CONST
        elif name.endswith("self_attn.o_proj.weight") or name.endswith("mlp.down_proj"):
            p.normal_(0.0, BRANCH_SCALE / math.sqrt(fan_in), generator=g)
        elif name.endswith("mlp.router_proj.weight"):
            p.normal_(0.0, 1.0 / math.sqrt(fan_in - 1), generator=g)
            p[:, 0] = 0.0  # set by calibrate()
        else:
            p.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=g)


@torch.no_grad()
def calibrate(model: BlockFFNForCausalLM, ids: list, target: float, spread: float, seed: int) -> dict:
    """Sets column 0 of every router to β_l + δ_{l,e} (module docstring), layer by layer."""
    c = model.config
    ne = c["num_experts"]
    q = torch.tensor([NormalDist().inv_cdf((i + 0.5) / ne) for i in range(ne)])
    g = torch.Generator().manual_seed(seed + 1)
    t = len(ids)
    pos = torch.arange(t)[None]
    mask = model._dense_mask(1, t, None, "cpu")
    h0 = model.model.embed_tokens(torch.tensor([ids])) * model.scale_emb
    h = h0
    k = round(target * t * ne)
    assert 0 < k < t * ne, "target must leave some experts active and some inactive"
    layers = []
    for layer in model.model.layers:
        h = h + layer.self_attn(layer.input_layernorm(h), pos, mask, model.attn_impl) * layer.residual_scale
        x = layer.post_attention_layernorm(h)[0]  # [T, H]: the router input
        x0 = x[:, 0]
        assert float(x0.min()) > 0, "x[0] must be positive for every token"
        w = layer.mlp.router_proj.weight
        noise = x[:, 1:] @ w[:, 1:].T  # [T, Ne]: logits without column 0
        s = float(noise.std())
        delta = spread * s / float(x0.mean()) * q[torch.randperm(ne, generator=g)]
        # (β + δ_e)·x0_t + noise_te > 0  ⟺  β > thr_te; exactly k decisions active between the
        # k-th and (k+1)-th smallest thresholds.
        thr = (-noise / x0[:, None] - delta[None, :]).flatten().sort().values
        beta = float(thr[k - 1] + thr[k]) / 2
        w[:, 0] = beta + delta
        f, r = layer.mlp(x[None])
        h = h + f * layer.residual_scale
        layers.append({
            "beta": beta,
            "activeFraction": float((r.a1 > 0).float().mean()),
            "noiseStd": s,
            "x0Mean": float(x0.mean()),
            "x0RelStd": float(x0.std() / x0.mean()),
        })
    drift = float((h - h0).norm() / h0.norm())
    return {"layers": layers, "residualDrift": drift}


@torch.no_grad()
def measure(model: BlockFFNForCausalLM, ids: list) -> dict:
    """TLS and CLS_8 of the reference on `ids` (one segment), as `blockffn eval` counts them."""
    out = model(torch.tensor([ids]))
    masks = torch.stack([r.a1[0] > 0 for r in out.routers])  # [layers, T, Ne]
    return {
        "tls": tls(masks),
        "cls8": cls(masks, 8),
        "activeFractionPerLayer": masks.float().mean(dim=(1, 2)).tolist(),
    }


def build(config: dict, target: float, seed: int, calib_ids: list, spread: float = SPREAD):
    """The random model with its routers calibrated to `target` active; returns (model, report)."""
    model = BlockFFNForCausalLM(config, attn_impl="eager").float().eval()
    draw_weights(model, seed)
    return model, calibrate(model, calib_ids, target, spread, seed)


def word_tokenizer(vocab: int):
    """Word-level tokenizer: "<unk>" 0, "<s>" 1, "</s>" 2, "t<id>" for every other id."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    v = {"<unk>": 0, "<s>": 1, "</s>": 2}
    v.update({f"t{i}": i for i in range(FIRST_ID, vocab)})
    tok = Tokenizer(models.WordLevel(v, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def ids_text(ids: list) -> str:
    """The text that encodes to `ids` (BOS is added by the engine, so it is left out)."""
    return " ".join(f"t{i}" for i in ids if i != BOS) + "\n"


def write_hf(model: BlockFFNForCausalLM, config: dict, out_dir: str) -> None:
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config_dict(config), f, indent=2)
        f.write("\n")
    save_file({n: t.contiguous() for n, t in model.state_dict().items()}, os.path.join(out_dir, "model.safetensors"),
              metadata={"format": "pt"})
    word_tokenizer(config["vocab_size"]).save(os.path.join(out_dir, "tokenizer.json"))


def cli_eval(cli: str, package: str, text_path: str) -> dict:
    r = subprocess.run([cli, "eval", "--model", package, "--text", text_path, "--json"],
                       check=True, capture_output=True, text=True)
    ev = json.loads(r.stdout)
    return {"tls": ev["tls"], "cls8": ev["cls"]["8"], "tokens": ev["tokens"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--activation", type=float, required=True, help="target active fraction (1 - TLS), e.g. 0.2")
    ap.add_argument("--name", help="default small-a<percent>")
    ap.add_argument("--out", default=os.path.join(REPO, "target", "bench"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spread", type=float, default=SPREAD)
    ap.add_argument("--dtypes", default="f32,f16,q8")
    ap.add_argument("--cli", default=os.path.join(REPO, "target", "release", "blockffn"))
    ap.add_argument("--force", action="store_true", help="regenerate even if cached")
    args = ap.parse_args()
    name = args.name or f"small-a{round(100 * args.activation)}"
    root = os.path.join(args.out, name)
    hf = os.path.join(root, "hf")
    info_path = os.path.join(root, "info.json")
    params = {"recipe": RECIPE, "config": SMALL, "activation": args.activation, "seed": args.seed,
              "spread": args.spread, "embConst": EMB_CONST, "branchScale": BRANCH_SCALE,
              "calibTokens": CALIB_TOKENS, "evalTokens": EVAL_TOKENS}
    if not os.path.exists(args.cli):
        sys.exit(f"{args.cli} missing: build it with `cargo build --release --features cli`")

    info = None
    if os.path.exists(info_path) and not args.force:
        with open(info_path) as f:
            info = json.load(f)
        if info.get("params") != params or not os.path.exists(os.path.join(hf, "model.safetensors")):
            info = None
    vocab = SMALL["vocab_size"]
    calib_ids = random_ids(CALIB_TOKENS, vocab, args.seed + 100)
    eval_ids = random_ids(EVAL_TOKENS, vocab, args.seed + 200, exclude=calib_ids)
    if info is None:
        for d in ("f32", "f16", "bf16", "q8"):
            shutil.rmtree(os.path.join(args.out, f"{name}-{d}"), ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        t0 = time.time()
        print(f"{name}: drawing Small-shaped weights and calibrating to {args.activation:.0%} active...",
              file=sys.stderr)
        model, report = build(SMALL, args.activation, args.seed, calib_ids, args.spread)
        held_out = measure(model, eval_ids)
        print(f"{name}: reference on {EVAL_TOKENS} held-out tokens: TLS {held_out['tls']:.4f}, "
              f"CLS_8 {held_out['cls8']:.4f}; residual drift {report['residualDrift']:.4f}", file=sys.stderr)
        write_hf(model, SMALL, hf)
        del model
        gc.collect()
        with open(os.path.join(root, "eval.txt"), "w") as f:
            f.write(ids_text(eval_ids))
        info = {"name": name, "params": params, "calibration": report, "reference": held_out,
                "evalIds": eval_ids, "packages": {}, "cliEval": {}, "seconds": round(time.time() - t0, 1)}
        with open(info_path, "w") as f:
            json.dump(info, f, indent=1)

    for d in args.dtypes.split(","):
        pkg = os.path.join(args.out, f"{name}-{d}")
        if d in info["packages"] and os.path.exists(os.path.join(pkg, "manifest.json")):
            continue
        print(f"{name}: blockffn convert --dtype {d}...", file=sys.stderr)
        subprocess.run([args.cli, "convert", hf, pkg, "--dtype", d], check=True, capture_output=True)
        info["packages"][d] = pkg
        info["cliEval"][d] = cli_eval(args.cli, pkg, os.path.join(root, "eval.txt"))
        e = info["cliEval"][d]
        print(f"{name}-{d}: blockffn eval on {e['tokens']} held-out tokens: TLS {e['tls']:.4f}, "
              f"CLS_8 {e['cls8']:.4f}", file=sys.stderr)
        with open(info_path, "w") as f:
            json.dump(info, f, indent=1)
    print(json.dumps({k: info[k] for k in ("name", "packages", "cliEval", "reference", "evalIds")}))


if __name__ == "__main__":
    main()
