#!/usr/bin/env python3
"""A random model with BlockFFN-Small's (or -XLarge's) exact shapes at a controlled activation ratio,
for the benchmark's end-to-end runs (`bench/run.mjs`, section "end to end: random Small-shaped
model"; the H200 benchmark for XLarge).

    python3 bench/make_small_random.py --activation 0.2 [--shape small|xlarge|tiny] [--device cpu|cuda]
        [--name small-a20] [--out target/bench] [--dtypes f32,f16,q8] [--hf-dtype f32|f16|bf16]
        [--cli target/release/blockffn] [--no-convert] [--no-check] [--force]

Writes OUT/NAME/hf/ (config.json, a model.safetensors with the Hugging Face names, and a
word-level tokenizer.json whose token "t<id>" is id <id>, so a text of such words is any id sequence),
converts it with the CLI (`blockffn convert OUT/NAME/hf OUT/NAME-<dtype> --dtype <dtype>`), then
checks the activation of every package with `blockffn eval` on held-out tokens (skipped with
--no-check; a later run without it checks the packages already converted). --no-convert writes
OUT/NAME/hf/ only (no CLI needed). OUT/NAME/info.json records the parameters, the calibration,
the measured TLS / CLS_8 (reference and CLI), timings and the package paths; the last line of
stdout is that record as JSON. Cached: with the same parameters nothing is redone. NAME defaults to
<shape>-a<percent> (small-a20 as before).

--shape: small (the default, as before), xlarge (SPEC §5: hidden 1792, 35 layers, MLA 14 heads,
56 experts × 128; 1.19e9 non-embedding parameters), tiny (hidden 64, 3 layers, 16 experts × 8,
vocab 512: seconds on a CPU, for tests). Shapes are bench/torch_decode.py's SHAPES.

--device: where the weights are drawn (a seeded torch.Generator on that device, so cuda draws
other weights than cpu for one seed) and the reference runs the calibration and the held-out
measurement, always in fp32 (full-precision matmuls, no TF32: the router decisions are set to
sit between thresholds). XLarge on an H200 (expected, not yet measured): seconds for drawing and
calibration; writing the
3.3 GB (f16) file and the CLI's conversion dominate.

--hf-dtype: the dtype of hf/model.safetensors (the converter reads F32, F16 and BF16). Default f32
(small, tiny: as before) and f16 for xlarge (half the bytes; f16 keeps 3 more mantissa bits than
bf16 and every weight here is far inside its range). With f16 or bf16 every weight is rounded to
that dtype BEFORE the calibration (and the router column it sets is rounded as it is set), so the
reference calibrates and measures exactly the weights in the file; an f16 package of an f16 file
is then the same weights. The file is written by hand (8-byte header length, JSON header, raw
little-endian tensors), one tensor at a time, so neither the safetensors package nor a host copy
of the whole model is needed; tokenizer.json uses the tokenizers package when it is installed and
an equivalent hand-written JSON otherwise.

Small's shapes (SPEC §5): hidden 768, 16 layers, MLA (6 heads, q_lora 768, kv_lora 256, 128 + 64
rope, v 128), 48 experts × 64, vocab 122,753, untied LM head.

Controlled activation. The router is RMSNorm(ReLU(W_r x)) with no bias: expert e is active iff
W_r[e] · x > 0, x the RMSNorm'd residual stream. So:
* every embedding row is N(0, 1) with a constant EMB_CONST in dimension 0; after the ×12 embedding
  scale and every RMSNorm, x[0] ≈ 7.7 for every token and layer (7.9 at XLarge), the other 767
  entries ≈ N(0, 0.93);
* the attention and FFN output projections (o_proj, down_proj) are scaled by BRANCH_SCALE, so the
  branches barely move the residual stream (info.json: `residualDrift`, `x0` per layer);
* router row e of layer l is [β_l + δ_{l,e}, N(0, 1/767) ...]: its logit is (β_l + δ_{l,e})·x[0]
  plus a per-token noise of spread s_l. δ_{l,e} = SPREAD · s_l / mean(x[0]) · q_{π_l(e)}, q the Ne
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
from torch_decode import SHAPES, SMALL  # noqa: E402,F401  (SMALL: train/tests/test_small_random.py)

RECIPE = 1  # bump when the recipe below changes: invalidates cached models
EMB_CONST = 8.0
BRANCH_SCALE = 0.1
SPREAD = 3.0
CALIB_TOKENS = 64
EVAL_TOKENS = 256
BOS = 1
FIRST_ID = 3  # ids 0..2 are <unk>, <s>, </s>

#: --hf-dtype: torch dtype (None: fp32, nothing rounded) and safetensors dtype name
STORAGE = {"f32": (None, "F32"), "f16": (torch.float16, "F16"), "bf16": (torch.bfloat16, "BF16")}


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


def _rounder(storage):
    """x -> x rounded to the storage dtype and back to fp32 (identity for fp32 storage)."""
    if storage is None:
        return lambda x: x
    return lambda x: x.to(storage).to(x.dtype)


@torch.no_grad()
def draw_weights(model: BlockFFNForCausalLM, seed: int, storage=None) -> None:
    """The weights (module docstring), drawn with a generator seeded `seed` on the model's device;
    with a 16-bit `storage` dtype, each rounded to it."""
    dev = next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    rnd = _rounder(storage)
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
        if storage is not None:
            p.copy_(rnd(p))


@torch.no_grad()
def calibrate(model: BlockFFNForCausalLM, ids: list, target: float, spread: float, seed: int,
              storage=None) -> dict:
    """Sets column 0 of every router to β_l + δ_{l,e} (module docstring), layer by layer; with a
    16-bit `storage` dtype, rounded to it as it is set (the reported active fractions are those of
    the rounded weights)."""
    c = model.config
    dev = model.model.embed_tokens.weight.device
    rnd = _rounder(storage)
    ne = c["num_experts"]
    q = torch.tensor([NormalDist().inv_cdf((i + 0.5) / ne) for i in range(ne)])
    g = torch.Generator().manual_seed(seed + 1)  # on the CPU whatever the device: same permutations
    t = len(ids)
    pos = torch.arange(t, device=dev)[None]
    mask = model._dense_mask(1, t, None, dev)
    h0 = model.model.embed_tokens(torch.tensor([ids], device=dev)) * model.scale_emb
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
        delta = (spread * s / float(x0.mean()) * q[torch.randperm(ne, generator=g)]).to(dev)
        # (β + δ_e)·x0_t + noise_te > 0  ⟺  β > thr_te; exactly k decisions active between the
        # k-th and (k+1)-th smallest thresholds.
        thr = (-noise / x0[:, None] - delta[None, :]).flatten().sort().values
        beta = float(thr[k - 1] + thr[k]) / 2
        w[:, 0] = rnd(beta + delta)
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
    dev = model.model.embed_tokens.weight.device
    out = model(torch.tensor([ids], device=dev))
    masks = torch.stack([r.a1[0] > 0 for r in out.routers]).cpu()  # [layers, T, Ne]
    return {
        "tls": tls(masks),
        "cls8": cls(masks, 8),
        "activeFractionPerLayer": masks.float().mean(dim=(1, 2)).tolist(),
    }


def build(config: dict, target: float, seed: int, calib_ids: list, spread: float = SPREAD, device="cpu",
          storage=None):
    """The random model with its routers calibrated to `target` active; returns (model, report).
    `device`: where it is built, drawn and calibrated (fp32); `storage`: None (fp32) or the 16-bit
    dtype its weights are rounded to (the dtype write_hf is then given)."""
    with torch.device(device):
        model = BlockFFNForCausalLM(config, attn_impl="eager")
    model = model.float().eval()
    draw_weights(model, seed, storage)
    return model, calibrate(model, calib_ids, target, spread, seed, storage)


def tokenizer_json(vocab: int) -> dict:
    """The tokenizer.json body of word_tokenizer(vocab), without the tokenizers package."""
    v = {"<unk>": 0, "<s>": 1, "</s>": 2}
    v.update({f"t{i}": i for i in range(FIRST_ID, vocab)})
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None, "decoder": None,
            "model": {"type": "WordLevel", "vocab": v, "unk_token": "<unk>"}}


def word_tokenizer(vocab: int):
    """Word-level tokenizer: "<unk>" 0, "<s>" 1, "</s>" 2, "t<id>" for every other id."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    v = {"<unk>": 0, "<s>": 1, "</s>": 2}
    v.update({f"t{i}": i for i in range(FIRST_ID, vocab)})
    tok = Tokenizer(models.WordLevel(v, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def write_tokenizer(vocab: int, path: str) -> None:
    try:
        word_tokenizer(vocab).save(path)
    except ImportError:
        with open(path, "w") as f:
            json.dump(tokenizer_json(vocab), f, indent=2, ensure_ascii=False)


def ids_text(ids: list) -> str:
    """The text that encodes to `ids` (BOS is added by the engine, so it is left out)."""
    return " ".join(f"t{i}" for i in ids if i != BOS) + "\n"


def write_safetensors(tensors: dict, path: str, dtype: str = "f32", metadata=None) -> None:
    """A safetensors file written by hand, one tensor at a time (no host copy of the whole model):
    u64 little-endian header length, the JSON header (padded with spaces to a multiple of 8), then
    every tensor's row-major little-endian bytes in header order. Every tensor is cast to `dtype`."""
    torch_dtype, st_name = STORAGE[dtype]
    torch_dtype = torch_dtype or torch.float32
    header, offset = {}, 0
    for name, t in tensors.items():
        n = t.numel() * torch.finfo(torch_dtype).bits // 8
        header[name] = {"dtype": st_name, "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for name, t in tensors.items():
            b = t.detach().to(torch_dtype).contiguous().cpu().reshape(-1).view(torch.uint8)
            f.write(memoryview(b.numpy()))
        assert f.tell() == 8 + len(h) + offset
    os.replace(tmp, path)


def write_hf(model: BlockFFNForCausalLM, config: dict, out_dir: str, dtype: str = "f32") -> None:
    """OUT/config.json, OUT/model.safetensors (every tensor in `dtype`: f32, f16, bf16) and
    OUT/tokenizer.json."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config_dict(config), f, indent=2)
        f.write("\n")
    write_safetensors(model.state_dict(), os.path.join(out_dir, "model.safetensors"), dtype,
                      metadata={"format": "pt"})
    write_tokenizer(config["vocab_size"], os.path.join(out_dir, "tokenizer.json"))


def _run(cmd: list) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr.strip()}")
    return r


def cli_eval(cli: str, package: str, text_path: str) -> dict:
    r = _run([cli, "eval", "--model", package, "--text", text_path, "--json"])
    ev = json.loads(r.stdout)
    return {"tls": ev["tls"], "cls8": ev["cls"]["8"], "tokens": ev["tokens"]}


def _save(info: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(info, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--activation", type=float, required=True, help="target active fraction (1 - TLS), e.g. 0.2")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda (cuda:N): drawing and calibration")
    ap.add_argument("--hf-dtype", choices=sorted(STORAGE), help="model.safetensors dtype (default f32; xlarge f16)")
    ap.add_argument("--name", help="default <shape>-a<percent>")
    ap.add_argument("--out", default=os.path.join(REPO, "target", "bench"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spread", type=float, default=SPREAD)
    ap.add_argument("--dtypes", default="f32,f16,q8", help="packages to convert to (comma-separated)")
    ap.add_argument("--cli", default=os.path.join(REPO, "target", "release", "blockffn"))
    ap.add_argument("--no-convert", action="store_true", help="write OUT/NAME/hf only (no CLI needed)")
    ap.add_argument("--no-check", action="store_true", help="skip `blockffn eval` of the packages")
    ap.add_argument("--force", action="store_true", help="regenerate even if cached")
    args = ap.parse_args()
    config = SHAPES[args.shape]
    hf_dtype = args.hf_dtype or ("f16" if args.shape == "xlarge" else "f32")
    storage = STORAGE[hf_dtype][0]
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    name = args.name or f"{args.shape}-a{round(100 * args.activation)}"
    root = os.path.join(args.out, name)
    hf = os.path.join(root, "hf")
    info_path = os.path.join(root, "info.json")
    params = {"recipe": RECIPE, "config": config, "activation": args.activation, "seed": args.seed,
              "spread": args.spread, "embConst": EMB_CONST, "branchScale": BRANCH_SCALE,
              "calibTokens": CALIB_TOKENS, "evalTokens": EVAL_TOKENS}
    # only where they differ from what this script always did, so that older caches stay valid
    if args.device != "cpu":
        params["device"] = args.device  # other random streams than the CPU's
    if hf_dtype != "f32":
        params["hfDtype"] = hf_dtype
    dtypes = [] if args.no_convert else [d for d in args.dtypes.split(",") if d]
    if dtypes and not os.path.exists(args.cli):
        sys.exit(f"{args.cli} missing: build it with `cargo build --release --features cli` "
                 "(or pass --cli PATH, or --no-convert)")

    info = None
    if os.path.exists(info_path) and not args.force:
        with open(info_path) as f:
            info = json.load(f)
        if info.get("params") != params or not os.path.exists(os.path.join(hf, "model.safetensors")):
            info = None
    vocab = config["vocab_size"]
    calib_ids = random_ids(CALIB_TOKENS, vocab, args.seed + 100)
    eval_ids = random_ids(EVAL_TOKENS, vocab, args.seed + 200, exclude=calib_ids)
    if info is None:
        for d in ("f32", "f16", "bf16", "q8"):
            shutil.rmtree(os.path.join(args.out, f"{name}-{d}"), ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        if cuda:
            torch.cuda.set_device(torch.device(args.device))
            torch.set_float32_matmul_precision("highest")  # no TF32: decisions sit between thresholds
        else:
            torch.set_num_threads(max(1, os.cpu_count() or 1))

        def now():
            if cuda:
                torch.cuda.synchronize()
            return time.time()

        t0 = now()
        print(f"{name}: drawing {args.shape}-shaped weights on {args.device} ({hf_dtype}) and calibrating to "
              f"{args.activation:.0%} active...", file=sys.stderr)
        model, report = build(config, args.activation, args.seed, calib_ids, args.spread, args.device, storage)
        t1 = now()
        held_out = measure(model, eval_ids)
        t2 = now()
        print(f"{name}: reference on {EVAL_TOKENS} held-out tokens: TLS {held_out['tls']:.4f}, "
              f"CLS_8 {held_out['cls8']:.4f}; residual drift {report['residualDrift']:.4f} "
              f"({t1 - t0:.1f} s drawing + calibration, {t2 - t1:.1f} s measuring)", file=sys.stderr)
        write_hf(model, config, hf, hf_dtype)
        t3 = now()
        print(f"{name}: wrote {hf} ({os.path.getsize(os.path.join(hf, 'model.safetensors')) / 1e9:.2f} GB, "
              f"{t3 - t2:.1f} s)", file=sys.stderr)
        del model
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        with open(os.path.join(root, "eval.txt"), "w") as f:
            f.write(ids_text(eval_ids))
        info = {"name": name, "params": params, "calibration": report, "reference": held_out,
                "evalIds": eval_ids, "packages": {}, "cliEval": {}, "seconds": round(time.time() - t0, 1),
                "timings": {"buildSeconds": round(t1 - t0, 2), "measureSeconds": round(t2 - t1, 2),
                            "writeSeconds": round(t3 - t2, 2)},
                "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__}
        _save(info, info_path)
    info.setdefault("cliSeconds", {})

    for d in dtypes:
        pkg = os.path.join(args.out, f"{name}-{d}")
        if not (d in info["packages"] and os.path.exists(os.path.join(pkg, "manifest.json"))):
            print(f"{name}: blockffn convert --dtype {d}...", file=sys.stderr)
            t = time.time()
            _run([args.cli, "convert", hf, pkg, "--dtype", d])
            info["packages"][d] = pkg
            info["cliEval"].pop(d, None)
            info["cliSeconds"][f"convert-{d}"] = round(time.time() - t, 1)
            print(f"{name}-{d}: converted in {time.time() - t:.1f} s", file=sys.stderr)
            _save(info, info_path)
        if not args.no_check and d not in info["cliEval"]:
            t = time.time()
            info["cliEval"][d] = cli_eval(args.cli, pkg, os.path.join(root, "eval.txt"))
            info["cliSeconds"][f"eval-{d}"] = round(time.time() - t, 1)
            e = info["cliEval"][d]
            print(f"{name}-{d}: blockffn eval on {e['tokens']} held-out tokens: TLS {e['tls']:.4f} "
                  f"(reference {info['reference']['tls']:.4f}), CLS_8 {e['cls8']:.4f} ({time.time() - t:.1f} s)",
                  file=sys.stderr)
            _save(info, info_path)
    print(json.dumps({k: info.get(k) for k in ("name", "packages", "cliEval", "reference", "evalIds", "seconds",
                                               "timings", "cliSeconds")}))


if __name__ == "__main__":
    main()
