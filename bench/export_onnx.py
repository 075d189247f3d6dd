#!/usr/bin/env python3
"""The demo model (models/demo) exported to ONNX from the PyTorch reference, for the
onnxruntime-web peer of bench/run.mjs ("peer: the demo model through onnxruntime-web").

    python3 bench/export_onnx.py [--model models/demo] [--out target/bench/onnx] [--force]
                                 [--cli target/release/blockffn] [--threads 2]

Loads the runtime package (f16 safetensors in the runtime layout, src/layout.rs) into
train/blockffn_ref as f32 — the names are the Hugging Face ones except ``mlp.down_proj_t``
``[Ne·de, H]``, which is the transpose of the reference's ``mlp.down_proj`` ``[H, Ne·de]``; f16 →
f32 is exact, so the reference holds the engine's weights bit for bit — and writes two graphs:

* ``<name>-prefill.onnx``: the reference's own forward (eager attention), ``input_ids`` [1, T] →
  ``logits`` [1, T, vocab], T dynamic.
* ``<name>-kv.onnx``: the same layers with a KV cache, for token-by-token decoding as a runtime
  does: ``input_ids`` [1, T] and ``past.{l}.key`` [1, heads, P, qk_head_dim] /
  ``past.{l}.value`` [1, heads, P, v_head_dim] for every layer l (P = 0 for the prompt) →
  ``logits`` [1, 1, vocab] (the last position only, as a runtime needs; our engine's prefill
  computes only the last position's logits too) and ``present.{l}.key`` / ``present.{l}.value``
  (P + T positions). The reference has no cache path; this graph runs the reference's decoder
  layers unchanged and only intercepts its ``attend`` (softmax(q k^T) v) to prepend the cached keys
  and values and hand the concatenation out. For MLA the cache holds the per-head keys (nope part
  and the shared roped part) and values, as Hugging Face-style ONNX exports do; our engine caches
  the latent instead (absorbed attention), which is the same maths.

ONNX has no data-dependent sparse path, so both graphs compute every expert: the reference's
BlockFFN.forward is the dense form of the model's maths, out = down · (SiLU(up · x) ⊙ scores) with
scores = RMSNorm(ReLU(router · x)) (0 for an inactive expert, so skipping it changes nothing;
``forward_sparse`` is checked against it in train/tests/test_reference.py).

Verification (every export, on a 64-token prompt from validation.txt, BOS first): onnxruntime
(Python, CPU) against the reference — the prefill graph on all 64 positions, the KV graph on a
32-token prefill then 32 single-token steps — max abs diff must be < 1e-3 or the script fails;
and, when the CLI is built, our engine (``blockffn logits``, dense and sparse) against both.

Cached: ``<name>-onnx.json`` records a stamp (sha256 of the package files and of this script, the
torch / onnx versions); when it matches and both graphs exist nothing is redone. Prints one JSON
line (the paths, the shapes the cache needs, the checks) on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-3
N_IDS = 64
SPLIT = 32  # the KV graph's check: prefill SPLIT tokens, then one by one


def stamp(model_dir: str) -> dict:
    """What the cached export depends on: the package's files (their sha256 from manifest.json,
    which the engine's loader verifies, so no rehashing here), this script, the exporter versions."""
    import importlib.metadata as md

    with open(os.path.join(model_dir, "manifest.json"), encoding="utf-8") as f:
        files = json.load(f)["files"]
    s = {name: files[name]["sha256"] for name in ("config.json", "model.safetensors")}
    with open(os.path.abspath(__file__), "rb") as f:
        s["export_onnx.py"] = hashlib.sha256(f.read()).hexdigest()
    for pkg in ("torch", "onnx", "onnxscript"):
        try:
            s[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            s[pkg] = None
    return s


def load_reference(model_dir: str):
    """The runtime package as the reference model, f32, eager attention."""
    import torch
    from safetensors.torch import load_file

    sys.path.insert(0, os.path.join(REPO, "train"))
    from blockffn_ref import BlockFFNForCausalLM

    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    model = BlockFFNForCausalLM(config, attn_impl="eager")
    sd = {}
    for name, t in load_file(os.path.join(model_dir, "model.safetensors")).items():
        t = t.float()
        if name.endswith(".mlp.down_proj_t"):  # runtime [Ne·de, H] -> reference [H, Ne·de]
            name, t = name[: -len("_t")], t.t().contiguous()
        sd[name] = t
    if model.config["ffn_type"] != "block_linear":
        raise SystemExit("export_onnx.py maps the block_linear layout only (the demo model's)")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if model.tied:
        missing = [m for m in missing if m != "lm_head.weight"]
    if missing or unexpected:
        raise SystemExit(f"runtime package does not match the reference: missing={missing} unexpected={unexpected}")
    return model.float().eval(), model.config


class _Slot:
    """Passed to a decoder layer as its attention ``impl``: the layer's past keys / values in,
    the concatenation (present) out."""

    def __init__(self, k, v):
        self.k, self.v = k, v
        self.present = None


@contextlib.contextmanager
def cached_attend():
    """Makes blockffn_ref.model.attend prepend a _Slot's cache (eager maths otherwise)."""
    import torch
    from blockffn_ref import model as ref

    orig = ref.attend

    def attend(q, k, v, mask, scale, impl):
        if isinstance(impl, _Slot):
            k = torch.cat([impl.k, k], dim=2)
            v = torch.cat([impl.v, v], dim=2)
            impl.present = (k, v)
            impl = "eager"
        return orig(q, k, v, mask, scale, impl)

    ref.attend = attend
    try:
        yield
    finally:
        ref.attend = orig


def make_wrappers(model, c):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Prefill(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids):
            return self.m(input_ids).logits

    class WithCache(nn.Module):
        """The reference's layers over a KV cache; logits of the last position."""

        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, past):
            m = self.m
            T = input_ids.shape[1]
            P = past[0].shape[2]
            pos = torch.arange(T, device=input_ids.device)[None] + P  # [1, T]
            q_abs = torch.arange(T, device=input_ids.device)[:, None] + P
            k_abs = torch.arange(P + T, device=input_ids.device)[None, :]
            mask = (k_abs <= q_abs)[None, None]  # [1, 1, T, P+T]
            h = m.model.embed_tokens(input_ids) * m.scale_emb
            presents = []
            for i, layer in enumerate(m.model.layers):
                slot = _Slot(past[2 * i], past[2 * i + 1])
                h, _ = layer(h, pos, mask, slot)
                presents += list(slot.present)
            y = m.model.norm(h[:, -1:])
            logits = F.linear(y / m.logit_divisor, m.lm_head_weight())
            return (logits, *presents)

    return Prefill().eval(), WithCache().eval()


def cache_dims(c):
    if c["attention_type"] == "mla":
        return c["num_attention_heads"], c["qk_nope_head_dim"] + c["qk_rope_head_dim"], c["v_head_dim"]
    h = c["num_attention_heads"]  # vanilla: kv heads are repeated before attend
    d = c["hidden_size"] // h
    return h, d, d


def empty_past(c, n_past=0):
    import torch

    heads, dk, dv = cache_dims(c)
    out = []
    for _ in range(c["num_hidden_layers"]):
        out += [torch.zeros(1, heads, n_past, dk), torch.zeros(1, heads, n_past, dv)]
    return tuple(out)


def export(model, c, out_prefill: str, out_kv: str, log):
    import torch
    from torch.export import Dim

    prefill, with_cache = make_wrappers(model, c)
    L = c["num_hidden_layers"]
    max_t = int(c["max_position_embeddings"])
    T = Dim("T", min=1, max=max_t)
    ids = torch.randint(3, c["vocab_size"], (1, 17))
    t0 = time.time()
    with torch.no_grad():
        torch.onnx.export(
            prefill,
            (ids,),
            out_prefill,
            input_names=["input_ids"],
            output_names=["logits"],
            dynamic_shapes={"input_ids": {1: T}},
            external_data=False,
            dynamo=True,
            verbose=False,
        )
    log(f"  prefill graph: {time.time() - t0:.0f} s")

    P = Dim("P", min=0, max=max_t)
    past = tuple(torch.randn(t.shape[:2] + (5,) + t.shape[3:]) for t in empty_past(c))
    names_in = ["input_ids"] + [f"past.{i}.{kv}" for i in range(L) for kv in ("key", "value")]
    names_out = ["logits"] + [f"present.{i}.{kv}" for i in range(L) for kv in ("key", "value")]
    t0 = time.time()
    with torch.no_grad(), cached_attend():
        torch.onnx.export(
            with_cache,
            (ids[:, :3], past),
            out_kv,
            input_names=names_in,
            output_names=names_out,
            dynamic_shapes={"input_ids": {1: T}, "past": tuple({2: P} for _ in past)},
            external_data=False,
            dynamo=True,
            verbose=False,
        )
    log(f"  KV-cache graph: {time.time() - t0:.0f} s")
    return names_in, names_out


def prompt_ids(model_dir: str, c, n: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    text = open(os.path.join(model_dir, "validation.txt"), encoding="utf-8").read()
    ids = [int(c["bos_token_id"])] + tok.encode(text[: 20 * n], add_special_tokens=False).ids
    if len(ids) < n:
        raise SystemExit(f"validation.txt gives only {len(ids)} tokens")
    return ids[:n]


def verify(model, c, model_dir, prefill_path, kv_path, cli, log):
    import numpy as np
    import onnxruntime as ort
    import torch

    ids = prompt_ids(model_dir, c, N_IDS)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()  # [N, V]
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    checks = {"ids": ids, "tolerance": TOL}

    s = ort.InferenceSession(prefill_path, so, providers=["CPUExecutionProvider"])
    got = s.run(["logits"], {"input_ids": np.array([ids], dtype=np.int64)})[0][0]
    checks["prefillVsReference"] = float(np.abs(got - ref).max())
    ort_prefill = got

    s = ort.InferenceSession(kv_path, so, providers=["CPUExecutionProvider"])
    L = c["num_hidden_layers"]
    empty = [t.numpy() for t in empty_past(c)]
    past = {f"past.{i}.{kv}": empty[2 * i + j] for i in range(L) for j, kv in enumerate(("key", "value"))}
    outs = [o.name for o in s.get_outputs()]
    kv_logits = []
    pos = 0
    for chunk in [ids[:SPLIT]] + [[t] for t in ids[SPLIT:]]:
        r = dict(zip(outs, s.run(outs, {"input_ids": np.array([chunk], dtype=np.int64), **past})))
        pos += len(chunk)
        kv_logits.append((pos - 1, r["logits"][0, -1]))
        past = {k.replace("present", "past"): v for k, v in r.items() if k.startswith("present.")}
        assert past["past.0.key"].shape[2] == pos
    checks["kvVsReference"] = float(max(np.abs(v - ref[p]).max() for p, v in kv_logits))
    checks["kvPositions"] = f"prefill {SPLIT}, then {N_IDS - SPLIT} steps of one token"

    # the torch wrapper itself (same cache maths, no ONNX) as a sanity line
    _, with_cache = make_wrappers(model, c)
    with torch.no_grad(), cached_attend():
        p = empty_past(c)
        o = with_cache(torch.tensor([ids[:SPLIT]]), p)
        worst = float(np.abs(o[0][0, -1].numpy() - ref[SPLIT - 1]).max())
        for t in range(SPLIT, N_IDS):
            o = with_cache(torch.tensor([[ids[t]]]), tuple(o[1:]))
            worst = max(worst, float(np.abs(o[0][0, -1].numpy() - ref[t]).max()))
    checks["torchCacheVsReference"] = worst

    if cli and os.path.exists(cli):
        for mode in ("dense", "sparse"):
            cmd = [cli, "logits", "--model", model_dir, "--ids", ",".join(map(str, ids))]
            if mode == "dense":
                cmd.append("--dense")
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                checks[f"engine{mode.title()}Error"] = r.stderr.strip()
                continue
            eng = np.array(json.loads(r.stdout)["logits"], dtype=np.float32).reshape(N_IDS, -1)
            checks[f"engine{mode.title()}VsReference"] = float(np.abs(eng - ref).max())
            checks[f"engine{mode.title()}VsOrt"] = float(np.abs(eng - ort_prefill).max())
    else:
        checks["engine"] = f"skipped: {cli} not built (cargo build --release --features cli)"
    for k, v in checks.items():
        if k.endswith(("VsReference", "VsOrt")):
            log(f"  max |Δlogit| {k}: {v:.3g}")
    bad = [k for k in ("prefillVsReference", "kvVsReference") if not checks[k] < TOL]
    if bad:
        raise SystemExit(f"ONNX graphs differ from the reference by ≥ {TOL}: " + ", ".join(f"{k}={checks[k]:.3g}" for k in bad))
    return checks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(REPO, "models", "demo"))
    ap.add_argument("--out", default=os.path.join(REPO, "target", "bench", "onnx"))
    ap.add_argument("--name", default="demo")
    ap.add_argument("--cli", default=os.path.join(REPO, "target", "release", "blockffn"))
    ap.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    ap.add_argument("--force", action="store_true", help="export again even if the cache matches")
    args = ap.parse_args()

    def log(*a):
        print(*a, file=sys.stderr, flush=True)

    os.makedirs(args.out, exist_ok=True)
    meta_path = os.path.join(args.out, f"{args.name}-onnx.json")
    prefill_path = os.path.join(args.out, f"{args.name}-prefill.onnx")
    kv_path = os.path.join(args.out, f"{args.name}-kv.onnx")
    st = stamp(args.model)
    if not args.force and os.path.exists(meta_path) and os.path.exists(prefill_path) and os.path.exists(kv_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("stamp") == st:
            meta["cached"] = True
            print(json.dumps(meta))
            return

    import torch  # noqa: F401  (after the cache check: importing torch takes seconds)
    import onnx  # noqa: F401  (fail early and clearly when the exporter is missing)
    import onnxscript  # noqa: F401

    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, c = load_reference(args.model)
    log(f"exporting {args.model} to ONNX (torch {torch.__version__}, onnx {onnx.__version__})...")
    names_in, names_out = export(model, c, prefill_path, kv_path, log)
    log("verifying with onnxruntime...")
    checks = verify(model, c, args.model, prefill_path, kv_path, args.cli, log)
    heads, dk, dv = cache_dims(c)
    meta = {
        "stamp": st,
        "prefill": os.path.relpath(prefill_path, REPO),
        "kv": os.path.relpath(kv_path, REPO),
        "inputs": names_in,
        "outputs": names_out,
        "numLayers": c["num_hidden_layers"],
        "cacheHeads": heads,
        "keyDim": dk,
        "valueDim": dv,
        "vocabSize": c["vocab_size"],
        "bytes": {"prefill": os.path.getsize(prefill_path), "kv": os.path.getsize(kv_path)},
        "checks": checks,
        "exportSeconds": round(time.time() - t0, 1),
    }
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    meta["cached"] = False
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
