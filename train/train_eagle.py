#!/usr/bin/env python3
"""Train the EAGLE-style draft head of the demo model (models/demo) for speculative decoding.

    PYTHONUNBUFFERED=1 python3 train/train_eagle.py [--model models/demo] [--head-dir models/demo] \\
        [--fixture tests/fixtures/eagle/expected.json] [--log train/results/eagle.json] [--smoke]

Needs one GPU (351 s on an H200: 110 s generation, 234 s training; ``--smoke`` runs every stage at
toy sizes in seconds, a dry run for the code paths).  Writes

* ``HEAD_DIR/eagle.json`` and ``HEAD_DIR/eagle.safetensors``: the draft head (format below);
* ``FIXTURE``: reference outputs of the saved head on one prompt, for the Rust tests;
* ``LOG``: the training log (command, stage times, data, loss history, acceptance).

Draft head
----------
One decoder layer over [token embedding ; target feature].  It shares the frozen target's
embedding ``E`` and LM head ``W`` (neither is stored with the head).  The target feature ``f_j``
is the target's final-normed hidden state at position j (``model.norm(h)``); its logits
``W (f_j / (H / dim_model_base))`` predict token t_{j+1}.  Head position j takes (t_{j+1}, f_j)::

    e   = E[t_{j+1}] * scale_emb
    x   = fc([e ; f_j])                                   embedding first, then the feature
    x   = x + o_proj(Attn(RMSNorm(x; input_layernorm)))
    x   = x + down_proj(silu(gate_proj(b)) * up_proj(b)),  b = RMSNorm(x; post_attention_layernorm)
    g_j = RMSNorm(x; norm)                                the predicted feature f_{j+1}
    logits_j = W (g_j / (H / dim_model_base))             predicts t_{j+2}

Attn is causal multi-head attention over head positions 0..j, rotate-half RoPE at position id j
over the whole head (the target's convention), softmax scale 1/sqrt(head_dim), no residual
scaling.  Projections have no bias.

Chained drafting (what the runtime does): with t_0..t_n known and target features f_0..f_{n-1},
head positions 0..n-1 take the true (t_{j+1}, f_j) and d_1 = argmax logits_{n-1} (a guess of
t_{n+1}); then head position n+i-1 takes (d_i, g of head position n+i-2) and gives d_{i+1},
attending to positions 0..n-1 and the earlier draft positions (``draft_mask`` lays this out as
one masked sequence).

Training
--------
Text: models/demo/validation.txt, split by characters, the first 85 % for training and the last
15 % held out.  Training sequences (``--seq-len`` tokens, BOS first) are windows of the training
text and the frozen target's own continuations of 32-64-token training prompts (7 batches in 10
greedy, the rest sampled at temperature 0.8-1.0; bf16 autocast, recomputed without a KV cache).
The target features of every sequence are computed once in float32; the target distributions are
their softmaxed logits.  Per head position: SmoothL1(g_j, f_{j+1}) + w_cls * CE(logits_j,
softmax(target logits at j+1)), with uniform noise of +-noise * feature-RMS on the input features.
Every position is trained twice: at level 1 on the (noisy) true feature f_j, at level 2 on the
head's own level-1 prediction of it (detached) while attending to level-1 positions 0..j-1: the
state of every draft after the first.  AdamW, linear warmup and cosine decay to 10 %, bf16
autocast; the number of steps fills ``--train-seconds``.

Evaluation: target greedy continuations of prompts from the held-out and from the training text
(float32), chained drafting from every position with the f16-rounded saved head: top-1 agreement
of d_1 with the target's greedy token and the mean accepted length for k = 1..8 drafts.

File format
-----------
``eagle.json``: ``{"format": "blockffn-eagle", "format_version": 1, "hidden_size": 256,
"num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 64, "intermediate_size": 512,
"rms_norm_eps": 1e-05, "rope_theta": 10000.0, "training": {...}}`` (``training`` is free-form).
``eagle.safetensors``: standard safetensors without metadata, the tensors of ``HEAD_TENSORS``
back to back in that order, matrices F16 ([out, in]), norms F32, the JSON header padded with
spaces so that 8 + its length is a multiple of 8.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from blockffn_ref import BlockFFNForCausalLM  # noqa: E402
from blockffn_ref.model import DenseFFN, RMSNorm, VanillaAttention  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HEAD_CONFIG = {
    "format": "blockffn-eagle",
    "format_version": 1,
    "hidden_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "intermediate_size": 512,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
}

#: the head's tensors in file order, with their stored dtype
HEAD_TENSORS = [
    ("fc.weight", "F16"),
    ("input_layernorm.weight", "F32"),
    ("self_attn.q_proj.weight", "F16"),
    ("self_attn.k_proj.weight", "F16"),
    ("self_attn.v_proj.weight", "F16"),
    ("self_attn.o_proj.weight", "F16"),
    ("post_attention_layernorm.weight", "F32"),
    ("mlp.gate_proj.weight", "F16"),
    ("mlp.up_proj.weight", "F16"),
    ("mlp.down_proj.weight", "F16"),
    ("norm.weight", "F32"),
]

ST_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}

TRAIN_FRACTION = 0.85
PROMPT_TOKENS = (32, 64)  # text tokens of a generation prompt (BOS comes on top)
SAMPLE_TEMPERATURES = (0.8, 0.9, 1.0)  # of generation batches 7, 8, 9 of every 10
REAL_STRIDE = 96  # stride of the training-text windows
FIXTURE_PROMPT = "It was the best of times, and the people of the United States"
N_DRAFTS = 8
SELF_CHECK_TOL = 1e-2
MIN_GREEDY_CONSISTENCY = 0.75
PROBE_FROM = 10  # first timed training step


# ---------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------


def read_safetensors(path: str) -> dict:
    """name -> CPU tensor, in header order (metadata dropped)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, m in header.items():
        start, end = m["data_offsets"]
        buf = bytearray(data[8 + n + start : 8 + n + end])
        out[name] = torch.frombuffer(buf, dtype=ST_DTYPES[m["dtype"]]).reshape(m["shape"])
    return out


def write_safetensors(path: str, entries) -> None:
    """entries: (name, tensor, "F16" | "F32") in file order; data back to back, no metadata."""
    header, blobs, offset = {}, [], 0
    for name, t, dtype in entries:
        t = t.detach().to("cpu", ST_DTYPES[dtype]).contiguous()
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} is not finite in {dtype}")
        blob = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-(8 + len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for blob in blobs:
            f.write(blob)


# ---------------------------------------------------------------------------
# the frozen target
# ---------------------------------------------------------------------------


def load_target(model_dir: str, device) -> "FrozenTarget":
    """The runtime package (config.json + model.safetensors) as a float32 reference model."""
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    if config.get("ffn_type") not in ("block_linear", "vanilla"):
        raise SystemExit(f"ffn_type {config.get('ffn_type')!r}: only block_linear and vanilla are read")
    sd = {}
    for name, t in read_safetensors(os.path.join(model_dir, "model.safetensors")).items():
        if name.endswith(".mlp.down_proj_t"):  # runtime [Ne*de, H] = HF down_proj [H, Ne*de] transposed
            name, t = name[: -len("_t")], t.t()
        sd[name] = t.float()
    model = BlockFFNForCausalLM(config, attn_impl="sdpa")
    model.load_state_dict(sd, strict=True)
    return FrozenTarget(model.to(device).eval().requires_grad_(False))


class FrozenTarget:
    """The target's embedding, final-normed features and LM head."""

    def __init__(self, model: BlockFFNForCausalLM):
        self.model = model
        c = model.config
        self.config = c
        self.scale_emb = float(c["scale_emb"])
        self.logit_divisor = c["hidden_size"] / c["dim_model_base"]
        self.embed_weight = model.model.embed_tokens.weight
        self.lm_weight = model.lm_head_weight()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embed_weight) * self.scale_emb

    def logits(self, feature: torch.Tensor) -> torch.Tensor:
        return F.linear(feature / self.logit_divisor, self.lm_weight)

    @torch.no_grad()
    def features(self, ids: torch.Tensor) -> torch.Tensor:
        """f_j of every position, [B, T, H] (the forward pass without the LM head)."""
        m = self.model
        B, T = ids.shape
        pos = torch.arange(T, device=ids.device).expand(B, T)
        mask = m._dense_mask(B, T, None, ids.device)
        h = self.embed(ids)
        for layer in m.model.layers:
            h, _ = layer(h, pos, mask, m.attn_impl)
        return m.model.norm(h)

    @torch.no_grad()
    def features_batched(self, ids: torch.Tensor, batch: int = 256) -> torch.Tensor:
        return torch.cat([self.features(ids[i : i + batch]).float() for i in range(0, len(ids), batch)])


@torch.no_grad()
def generate(target: FrozenTarget, prompts: torch.Tensor, n_new: int, temperature: float = 0.0,
             bf16: bool = False, generator=None) -> torch.Tensor:
    """prompts [B, P] -> [B, P + n_new]: greedy (temperature 0) or sampled, recomputed each step."""
    ids = prompts
    for _ in range(n_new):
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
            f = target.features(ids)[:, -1]
        logits = target.logits(f.float())
        if temperature > 0:
            nxt = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator)
        else:
            nxt = logits.argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


# ---------------------------------------------------------------------------
# the draft head
# ---------------------------------------------------------------------------


class DraftHead(nn.Module):
    """One decoder layer over [embedding ; feature] (see the module docstring)."""

    def __init__(self, cfg: dict, attn_impl: str = "sdpa"):
        super().__init__()
        H, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        if cfg["head_dim"] * cfg["num_attention_heads"] != H:
            raise ValueError("head_dim * num_attention_heads must equal hidden_size")
        layer = {
            "hidden_size": H,
            "num_attention_heads": cfg["num_attention_heads"],
            "num_key_value_heads": cfg["num_key_value_heads"],
            "rope_theta": cfg["rope_theta"],
            "intermediate_size": cfg["intermediate_size"],
            "ffn_gated": True,
        }
        self.attn_impl = attn_impl
        self.fc = nn.Linear(2 * H, H, bias=False)
        self.input_layernorm = RMSNorm(H, eps)
        self.self_attn = VanillaAttention(layer)
        self.post_attention_layernorm = RMSNorm(H, eps)
        self.mlp = DenseFFN(layer)
        self.norm = RMSNorm(H, eps)

    def forward(self, emb, feat, position_ids, mask):
        """emb, feat [B, L, H]; position_ids [1, L]; mask [1, 1, L, L] bool -> g [B, L, H]."""
        x = self.fc(torch.cat([emb, feat], dim=-1))
        x = x + self.self_attn(self.input_layernorm(x), position_ids, mask, self.attn_impl)
        x = x + self.mlp(self.post_attention_layernorm(x))[0]
        return self.norm(x)


def write_head(path: str, head: DraftHead) -> None:
    sd = head.state_dict()
    if set(sd) != {name for name, _ in HEAD_TENSORS}:
        raise ValueError(f"unexpected head tensors {sorted(sd)}")
    write_safetensors(path, [(name, sd[name], dtype) for name, dtype in HEAD_TENSORS])


def load_head(path: str, cfg: dict, device, attn_impl: str = "eager") -> DraftHead:
    """The saved head in float32 (its f16 matrices upcast)."""
    head = DraftHead(cfg, attn_impl=attn_impl)
    head.load_state_dict({k: v.float() for k, v in read_safetensors(path).items()}, strict=True)
    return head.to(device).eval().requires_grad_(False)


def draft_mask(T: int, ns: torch.Tensor, depth: int):
    """Position ids [1, L] and attention mask [1, 1, L, L] of chained drafting as one sequence.

    Entries 0..T-1 are head positions 0..T-1 with true inputs (causal among themselves).  Then
    come depth-1 levels of len(ns) entries each: the entry of level s (s = 1..depth-1) for chain
    n sits at position n+s-1, sees true entries 0..n-1 and the entries of levels 1..s of chain n.
    """
    N = ns.numel()
    dev = ns.device
    L = T + (depth - 1) * N
    ar = torch.arange(T, device=dev)
    mask = torch.zeros(L, L, dtype=torch.bool, device=dev)
    mask[:T, :T] = ar[:, None] >= ar[None, :]
    eye = torch.eye(N, dtype=torch.bool, device=dev)
    pos = [ar]
    for s in range(1, depth):
        rows = slice(T + (s - 1) * N, T + s * N)
        mask[rows, :T] = ar[None, :] < ns[:, None]
        for s2 in range(1, s + 1):
            mask[rows, T + (s2 - 1) * N : T + s2 * N] = eye
        pos.append(ns + (s - 1))
    return torch.cat(pos)[None], mask[None, None]


def causal(T: int, device):
    return draft_mask(T, torch.zeros(0, dtype=torch.long, device=device), 1)


def head_loss(head, target, tok, feat, noise: float, w_cls: float, generator=None):
    """Loss of both levels on sequences tok [B, S] with target features feat [B, S, H].

    Head positions j = 0..S-2: inputs (t_{j+1}, f_j + noise), targets f_{j+1} and the target
    distribution at j+1.  Level 2 repeats positions 1..S-2 with the level-1 prediction of f_j.
    Returns (loss, detached stats)."""
    T = tok.shape[1] - 1
    dev = tok.device
    emb = target.embed(tok[:, 1:])
    f_in = feat[:, :-1]
    if noise > 0:
        f_in = f_in + (torch.rand(f_in.shape, device=dev, generator=generator) * 2 - 1) * noise
    f_next = feat[:, 1:]
    with torch.no_grad():
        p_next = torch.softmax(target.logits(f_next), dim=-1)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            g1 = head(emb, f_in, *causal(T, dev)).float()
    pos, mask = draft_mask(T, torch.arange(1, T, device=dev), 2)
    stats, loss = {}, 0.0
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        g = head(torch.cat([emb, emb[:, 1:]], 1), torch.cat([f_in, g1[:, :-1]], 1), pos, mask)
        for level, gl, sl in ((1, g[:, :T], slice(0, T)), (2, g[:, T:], slice(1, T))):
            gl = gl.float()
            feat_loss = F.smooth_l1_loss(gl, f_next[:, sl])
            logp = F.log_softmax(target.logits(gl).float(), dim=-1)
            p = p_next[:, sl]
            cls_loss = -(p * logp).sum(-1).mean()
            loss = loss + (feat_loss + w_cls * cls_loss) / 2
            stats[f"feat{level}"] = feat_loss.detach()
            stats[f"cls{level}"] = cls_loss.detach()
            stats[f"top1_{level}"] = (logp.argmax(-1) == p.argmax(-1)).float().mean().detach()
    stats["loss"] = loss.detach()
    return loss, stats


@torch.no_grad()
def validate(head, target, tok, feat, w_cls: float, batch: int) -> dict:
    sums, n = {}, 0
    for i in range(0, len(tok), batch):
        _, s = head_loss(head, target, tok[i : i + batch], feat[i : i + batch], 0.0, w_cls)
        w = len(tok[i : i + batch])
        for k, v in s.items():
            sums[k] = sums.get(k, 0.0) + v.item() * w
        n += w
    return {k: v / n for k, v in sums.items()}


@torch.no_grad()
def chain_drafts(head, target, tokens, feats, ns, depth: int):
    """Chained greedy drafts from every current position n in ns (n >= 1).

    tokens [B, >= max(ns)+1] (t_0..), feats [B, >= max(ns), H] (f_0..).  Returns drafts and
    top-1 minus top-2 logit margins [B, N, depth] and g_{n-1} [B, N, H] (the first draft's feature).
    """
    T = int(ns.max())
    N = ns.numel()
    embs, fs = [target.embed(tokens[:, 1 : T + 1])], [feats[:, :T]]
    g = head(embs[0], fs[0], *causal(T, tokens.device))
    prev = first = g[:, ns - 1]
    drafts, margins = [], []
    for i in range(depth):
        if i:
            embs.append(target.embed(drafts[-1]))
            fs.append(prev)
            prev = head(torch.cat(embs, 1), torch.cat(fs, 1), *draft_mask(T, ns, i + 1))[:, -N:]
        top = target.logits(prev).topk(2, dim=-1)
        drafts.append(top.indices[..., 0])
        margins.append(top.values[..., 0] - top.values[..., 1])
    return torch.stack(drafts, -1), torch.stack(margins, -1), first


def acceptance(drafts, tokens, ns) -> dict:
    """drafts [B, N, k] against the target's tokens t_{n+1}..t_{n+k}."""
    k = drafts.shape[-1]
    idx = ns[:, None] + torch.arange(1, k + 1, device=ns.device)[None]
    match = drafts == tokens[:, idx]
    lead = match.long().cumprod(-1).float()  # draft i accepted: it and every earlier one match
    return {
        "positions": int(match.shape[0] * match.shape[1]),
        "top1": match[..., 0].float().mean().item(),
        "p_first_i_accepted": [round(v, 4) for v in lead.mean((0, 1)).tolist()],
        "mean_accepted": {str(j): round(lead[..., :j].sum(-1).mean().item(), 4) for j in range(1, k + 1)},
    }


@torch.no_grad()
def evaluate(head, target, prompts, n_new: int, depth: int) -> dict:
    """Target greedy continuations (float32), then chained drafting from every position whose next
    depth tokens are known, the first being the last prompt token."""
    seqs = generate(target, prompts, n_new)
    feats = target.features(seqs)
    ns = torch.arange(prompts.shape[1] - 1, seqs.shape[1] - depth, device=seqs.device)
    drafts, _, _ = chain_drafts(head, target, seqs, feats, ns, depth)
    return acceptance(drafts, seqs, ns)


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def with_bos(rows: torch.Tensor, bos: int) -> torch.Tensor:
    return torch.cat([torch.full((rows.shape[0], 1), bos, dtype=rows.dtype), rows], 1)


def windows(ids: torch.Tensor, length: int, starts: torch.Tensor, bos: int) -> torch.Tensor:
    """[BOS] + ids[s : s + length - 1] for every start s: [len(starts), length]."""
    return with_bos(ids[starts[:, None] + torch.arange(length - 1)], bos)


def strided(ids: torch.Tensor, length: int, stride: int, bos: int) -> torch.Tensor:
    return windows(ids, length, torch.arange(0, len(ids) - length + 2, stride), bos)


def spaced(ids: torch.Tensor, length: int, count: int, bos: int) -> torch.Tensor:
    return windows(ids, length, torch.linspace(0, len(ids) - length + 1, count).long(), bos)


def generate_data(target, train_ids, args, bos, gen_cpu, gen_dev, say):
    """The target's continuations of random training prompts until --gen-seconds are spent.
    Returns (sequences [N, seq_len], prompt lengths incl. BOS [N], temperatures [N])."""
    dev = gen_dev.device
    seqs, prompt_lens, temps = [], [], []
    t0, last = time.time(), 0.0
    for b in range(args.gen_batches):
        if b and time.time() - t0 + last > args.gen_seconds:
            break
        tb = time.time()
        n_text = int(torch.randint(PROMPT_TOKENS[0], PROMPT_TOKENS[1] + 1, (1,), generator=gen_cpu))
        temp = 0.0 if b % 10 < 7 else SAMPLE_TEMPERATURES[b % 10 - 7]
        starts = torch.randint(0, len(train_ids) - n_text, (args.gen_batch,), generator=gen_cpu)
        prompts = windows(train_ids, n_text + 1, starts, bos).to(dev)
        out = generate(target, prompts, args.seq_len - prompts.shape[1], temp, bf16=True, generator=gen_dev)
        torch.cuda.synchronize()
        last = time.time() - tb
        seqs.append(out)
        prompt_lens.append(torch.full((len(out),), prompts.shape[1], device=dev))
        temps.append(torch.full((len(out),), temp, device=dev))
        say(f"generate batch {b}: {len(out)} x {prompts.shape[1]}+{out.shape[1] - prompts.shape[1]} "
            f"tokens, temperature {temp}, {last:.1f} s")
    return torch.cat(seqs), torch.cat(prompt_lens), torch.cat(temps)


@torch.no_grad()
def greedy_consistency(target, seqs, feats, prompt_lens, batch: int = 256) -> float:
    """Fraction of generated tokens that are the float32 argmax at their position (the bf16
    generation agrees with the float32 target up to near-ties)."""
    hits = total = 0
    j = torch.arange(seqs.shape[1] - 1, device=seqs.device)
    for i in range(0, len(seqs), batch):
        pred = target.logits(feats[i : i + batch, :-1]).argmax(-1)
        generated = j[None, :] >= prompt_lens[i : i + batch, None] - 1  # t_{j+1} was generated
        hits += ((pred == seqs[i : i + batch, 1:]) & generated).sum().item()
        total += generated.sum().item()
    return hits / total


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


def lr_at(step: int, total: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(head, target, data, val, noise, args, gen_dev, say):
    """AdamW for about --train-seconds: the step count is fixed from the time of steps
    PROBE_FROM..--probe-steps, which lie inside the warmup.  Returns (steps, history, val_history)."""
    tok, feat = data
    matrices = [p for p in head.parameters() if p.dim() == 2]
    norms = [p for p in head.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": args.weight_decay},
                             {"params": norms, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    history, val_history, sums = [], [], {}
    step, total = 0, 0
    t0 = time.time()
    while total == 0 or step < total:
        lr = lr_at(step, total, args)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(tok), (args.batch,), device=tok.device, generator=gen_dev)
        loss, stats = head_loss(head, target, tok[idx], feat[idx], noise, args.w_cls, gen_dev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        step += 1
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v
        if step == PROBE_FROM:
            torch.cuda.synchronize()
            t_probe = time.time()
        if step == args.probe_steps:
            torch.cuda.synchronize()
            per_step = (time.time() - t_probe) / (step - PROBE_FROM)
            total = step + max(0, int((args.train_seconds - (time.time() - t0)) / per_step))
            say(f"train: {per_step * 1e3:.1f} ms/step -> {total} steps")
        if step % args.log_every == 0 or step == total:
            n = args.log_every if step % args.log_every == 0 else step % args.log_every
            row = {"step": step, "lr": lr, "elapsed_s": round(time.time() - t0, 1)}
            row.update({k: round(v.item() / n, 5) for k, v in sums.items()})
            history.append(row)
            sums = {}
            say("train " + " ".join(f"{k}={v}" for k, v in row.items()))
        if step % args.val_every == 0 or step == total:
            v = {"step": step}
            v.update({k: round(x, 5) for k, x in validate(head, target, *val, args.w_cls, args.batch).items()})
            val_history.append(v)
            say("val   " + " ".join(f"{k}={x}" for k, x in v.items()))
    return step, history, val_history


# ---------------------------------------------------------------------------
# checks and fixture
# ---------------------------------------------------------------------------


@torch.no_grad()
def self_check(target, expected: dict) -> dict:
    """The loaded target reproduces the reference logits of tests/fixtures/demo/expected.json."""
    dev = target.embed_weight.device
    ids = torch.tensor([expected["ids"]], device=dev)
    out = target.model(ids, return_hidden=True)
    want = torch.tensor(expected["last_logits"], device=dev)
    diff = (out.logits[0, -1] - want).abs().max().item()
    feat_diff = (target.features(ids) - out.hidden).abs().max().item()
    same_argmax = int(out.logits[0, -1].argmax()) == int(want.argmax())
    if diff > SELF_CHECK_TOL or not same_argmax or feat_diff > 1e-5:
        raise SystemExit(f"self-check failed: logits differ by {diff} (argmax same: {same_argmax}), "
                         f"features() differs from forward() by {feat_diff}")
    return {"max_abs_logit_diff": diff, "argmax_agrees": same_argmax}


def r7(x: float) -> float:
    return float(f"{x:.7g}")


@torch.no_grad()
def make_fixture(head, target, ids: list, st_path: str) -> dict:
    """Reference outputs of the saved head on one prompt (float32)."""
    dev = target.embed_weight.device
    t = torch.tensor([ids], device=dev)
    n = len(ids) - 1
    feats = target.features(t)
    drafts, margins, g = chain_drafts(head, target, t, feats, torch.tensor([n], device=dev), N_DRAFTS)
    greedy = generate(target, t, N_DRAFTS)[0, n + 1 :].tolist()
    drafts = drafts[0, 0].tolist()
    accepted = 0
    while accepted < N_DRAFTS and drafts[accepted] == greedy[accepted]:
        accepted += 1
    with open(st_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return {
        "note": ("ids = t_0..t_n (BOS first, n = len(ids) - 1). features are the target's final-normed "
                 "hidden states f_0..f_{n-1} (positions 0..n-1: every prompt position except the last). "
                 "Head positions 0..n-1 take (t_{j+1}, f_j) at RoPE position j; head_last_logits and "
                 "head_last_feature are logits_{n-1} and g_{n-1}; d_1 = argmax head_last_logits predicts "
                 "t_{n+1}. Draft d_{i+1} comes from head position n+i-1 fed (d_i, g of head position "
                 "n+i-2), attending to positions 0..n-1 and the earlier draft positions. "
                 "draft_margins[i] = top-1 minus top-2 logit of draft i+1. target_greedy = the target's "
                 "greedy t_{n+1}..t_{n+8} after t_0..t_n; accepted = leading drafts equal to it. "
                 "float32 from the f16 weights of model.safetensors and eagle.safetensors."),
        "eagle_safetensors_sha256": sha,
        "ids": ids,
        "features_last": [r7(v) for v in feats[0, n - 1].tolist()],
        "head_last_feature": [r7(v) for v in g[0, 0].tolist()],
        "head_last_logits": [r7(v) for v in target.logits(g[0, 0]).tolist()],
        "drafts": drafts,
        "draft_margins": [r7(v) for v in margins[0, 0].tolist()],
        "target_greedy": greedy,
        "accepted": accepted,
    }


def write_json(path: str, obj, indent=None) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent, separators=None if indent else (",", ":"))
        f.write("\n")


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(REPO, "models", "demo"), help="the target runtime package")
    ap.add_argument("--golden", default=os.path.join(REPO, "tests", "fixtures", "demo", "expected.json"),
                    help="reference logits of the target, for the self-check")
    ap.add_argument("--head-dir", default=os.path.join(REPO, "models", "demo"))
    ap.add_argument("--fixture", default=os.path.join(REPO, "tests", "fixtures", "eagle", "expected.json"))
    ap.add_argument("--log", default=os.path.join(REPO, "train", "results", "eagle.json"))
    ap.add_argument("--seq-len", type=int, default=192, help="tokens per training sequence, BOS included")
    ap.add_argument("--gen-batch", type=int, default=1024)
    ap.add_argument("--gen-batches", type=int, default=40, help="most generation batches")
    ap.add_argument("--gen-seconds", type=float, default=110.0)
    ap.add_argument("--train-seconds", type=float, default=230.0)
    ap.add_argument("--batch", type=int, default=128, help="sequences per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--probe-steps", type=int, default=50, help="steps timed to fix the step count (<= warmup)")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--w-cls", type=float, default=0.1)
    ap.add_argument("--noise", type=float, default=0.2, help="uniform input-feature noise, times the feature RMS")
    ap.add_argument("--log-every", type=int, default=200)
    ap.add_argument("--val-every", type=int, default=1000)
    ap.add_argument("--eval-prompts", type=int, default=64)
    ap.add_argument("--eval-prompt-len", type=int, default=48, help="BOS included")
    ap.add_argument("--eval-new", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="toy sizes: every stage in seconds")
    args = ap.parse_args(argv)
    if args.smoke:
        args.gen_batch, args.gen_batches, args.train_seconds, args.batch = 16, 1, 1.0, 8
        args.probe_steps, args.log_every, args.val_every, args.eval_prompts = 20, 10, 20, 4
    if not PROBE_FROM < args.probe_steps <= args.warmup:
        ap.error(f"--probe-steps must exceed {PROBE_FROM} and not exceed --warmup")
    return args


def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()
    stages = {}

    def say(msg):
        print(f"[{time.time() - t_start:6.1f}s] {msg}", flush=True)

    def stage(name, t):
        stages[name] = round(time.time() - t, 1)
        return time.time()

    if not torch.cuda.is_available():
        raise SystemExit("train_eagle.py needs a GPU")
    torch.set_float32_matmul_precision("highest")
    dev = torch.device("cuda")
    torch.manual_seed(args.seed)
    gen_cpu = torch.Generator().manual_seed(args.seed)
    gen_dev = torch.Generator(device=dev).manual_seed(args.seed)
    say(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")

    # target, self-check, text
    t = time.time()
    target = load_target(args.model, dev)
    c = target.config
    if c["hidden_size"] != HEAD_CONFIG["hidden_size"]:
        raise SystemExit(f"target hidden_size {c['hidden_size']} != head {HEAD_CONFIG['hidden_size']}")
    with open(args.golden) as f:
        golden = json.load(f)
    check = self_check(target, golden)
    say(f"self-check: last logits within {check['max_abs_logit_diff']:.2e} of the reference, argmax agrees")
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    bos = int(c["bos_token_id"])
    with open(os.path.join(args.model, "validation.txt"), encoding="utf-8") as f:
        text = f.read()
    cut = text.rfind(" ", 0, int(len(text) * TRAIN_FRACTION))
    train_ids = torch.tensor(tok.encode(text[:cut], add_special_tokens=False).ids)
    held_ids = torch.tensor(tok.encode(text[cut:], add_special_tokens=False).ids)
    fixture_ids = [bos] + tok.encode(FIXTURE_PROMPT, add_special_tokens=False).ids
    if fixture_ids != golden["ids"]:
        raise SystemExit("the tokenizer does not reproduce the ids of the golden prompt")
    say(f"text: {cut} / {len(text) - cut} chars -> {len(train_ids)} / {len(held_ids)} tokens (train / held out)")
    t = stage("load_and_check", t)

    # data
    gen_seqs, prompt_lens, temps = generate_data(target, train_ids, args, bos, gen_cpu, gen_dev, say)
    n_generated = int((args.seq_len - prompt_lens).sum())
    gen_s = time.time() - t
    t = stage("generate", t)
    real = strided(train_ids, args.seq_len, REAL_STRIDE, bos).to(dev)
    data_tok = torch.cat([real, gen_seqs])
    data_feat = target.features_batched(data_tok)
    val_tok = strided(held_ids, args.seq_len, args.seq_len - 1, bos).to(dev)
    val_feat = target.features_batched(val_tok)
    greedy = temps == 0
    consistency = greedy_consistency(target, gen_seqs[greedy], data_feat[len(real):][greedy], prompt_lens[greedy])
    if consistency < MIN_GREEDY_CONSISTENCY:
        raise SystemExit(f"greedy generation agrees with the float32 target on only {consistency:.3f} of tokens")
    feat_rms = data_feat.square().mean().sqrt().item()
    data_info = {
        "text": "models/demo/validation.txt",
        "split": f"first {TRAIN_FRACTION:.0%} of the characters for training (cut at a space), the rest held out",
        "train_chars": cut,
        "held_out_chars": len(text) - cut,
        "train_tokens": len(train_ids),
        "held_out_tokens": len(held_ids),
        "seq_len": args.seq_len,
        "real_windows": len(real),
        "real_window_stride": REAL_STRIDE,
        "generated_sequences": len(gen_seqs),
        "greedy_sequences": int(greedy.sum()),
        "sampled_sequences": int((~greedy).sum()),
        "sample_temperatures": list(SAMPLE_TEMPERATURES),
        "prompt_tokens": list(PROMPT_TOKENS),
        "generated_tokens": n_generated,
        "generation": "bf16 autocast, recomputed without a KV cache",
        "generated_tokens_per_s": round(n_generated / gen_s),
        "greedy_consistency": round(consistency, 4),
        "training_tokens": int(data_tok.numel()),
        "val_windows": len(val_tok),
        "feature_rms": round(feat_rms, 4),
    }
    say("data: " + json.dumps(data_info))
    t = stage("features", t)

    # train
    head = DraftHead(HEAD_CONFIG).to(dev)
    with torch.no_grad():  # start the output norm at the scale of the target's features
        head.norm.weight.copy_(target.model.model.norm.weight)
    noise = args.noise * feat_rms
    steps, history, val_history = train(head, target, (data_tok, data_feat), (val_tok, val_feat), noise, args,
                                        gen_dev, say)
    t = stage("train", t)

    # save, reload the f16-rounded head, evaluate
    os.makedirs(args.head_dir, exist_ok=True)
    st_path = os.path.join(args.head_dir, "eagle.safetensors")
    cfg_path = os.path.join(args.head_dir, "eagle.json")
    write_head(st_path, head)
    mine, ref = read_safetensors(st_path), load_file(st_path)
    if list(mine) != [n for n, _ in HEAD_TENSORS] or any(
            ref[k].dtype != v.dtype or not torch.equal(ref[k], v) for k, v in mine.items()):
        raise SystemExit("eagle.safetensors does not read back as written")
    training = {
        "steps": steps,
        "batch_sequences": args.batch,
        "positions_per_step": args.batch * (2 * args.seq_len - 3),
        "levels": 2,
        "data_tokens": int(data_tok.numel()),
        "positions_trained": steps * args.batch * (2 * args.seq_len - 3),
        "wall_s": None,
        "data": f"{len(real)} windows of the training text + {len(gen_seqs)} target continuations "
                f"({int(greedy.sum())} greedy), {args.seq_len} tokens each",
    }
    write_json(cfg_path, dict(HEAD_CONFIG, training=training), indent=1)
    rounded = load_head(st_path, HEAD_CONFIG, dev)
    final_val = validate(rounded, target, val_tok, val_feat, args.w_cls, args.batch)
    say("val (saved f16 head): " + json.dumps({k: round(v, 5) for k, v in final_val.items()}))
    prompt_len, n_eval = args.eval_prompt_len, args.eval_prompts
    acc = {
        "held_out": evaluate(rounded, target, spaced(held_ids, prompt_len, n_eval, bos).to(dev), args.eval_new,
                             N_DRAFTS),
        "train": evaluate(rounded, target, spaced(train_ids, prompt_len, n_eval, bos).to(dev), args.eval_new,
                          N_DRAFTS),
    }
    for split, a in acc.items():
        say(f"acceptance {split}: " + json.dumps(a))
    t = stage("evaluate", t)

    fixture = make_fixture(rounded, target, fixture_ids, st_path)
    if fixture["target_greedy"] != golden["greedy"]["new_ids"][:N_DRAFTS]:
        raise SystemExit("the target's greedy tokens differ from tests/fixtures/demo/expected.json")
    say(f"fixture: drafts {fixture['drafts']}, target {fixture['target_greedy']}, accepted {fixture['accepted']}")
    stage("fixture", t)

    wall = round(time.time() - t_start, 1)
    training.update(
        wall_s=wall,
        acceptance={split: {"top1": round(a["top1"], 4), "mean_accepted": a["mean_accepted"]}
                    for split, a in acc.items()},
    )
    config = dict(HEAD_CONFIG, training=training)
    write_json(cfg_path, config, indent=1)
    write_json(args.fixture, dict(prompt=FIXTURE_PROMPT, config=config, **fixture))
    log = {
        "what": "EAGLE-style draft head for models/demo, train/train_eagle.py",
        "command": " ".join(["python3"] + sys.argv),
        "smoke": args.smoke,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "wall_s": wall,
        "stages_s": stages,
        "self_check": check,
        "data": data_info,
        "train": {
            "steps": steps,
            "batch_sequences": args.batch,
            "positions_per_step": training["positions_per_step"],
            "lr": args.lr,
            "schedule": f"linear warmup {args.warmup} steps, cosine to 10 %",
            "optimizer": f"AdamW betas (0.9, 0.95), weight decay {args.weight_decay} on matrices, grad clip 1.0",
            "precision": "bf16 autocast (head); target features and distributions float32",
            "loss": f"per level: SmoothL1(g_j, f_j+1) + {args.w_cls} * CE(logits_j, target softmax at j+1); "
                    "mean of the two levels",
            "noise": f"uniform +-{args.noise} x feature RMS ({noise:.4f}) on the input features",
            "levels": ("level 1 feeds the true (noisy) features; level 2 feeds each position the head's own "
                       "detached level-1 prediction of its feature while it attends to level-1 positions, "
                       "which is the state of every draft after the first at inference; it costs about twice "
                       "the head compute of level 1 alone"),
            "init": "PyTorch default for the matrices; norm.weight from the target's final norm",
            "seed": args.seed,
        },
        "history": history,
        "val_history": val_history,
        "final_val_saved_head": {k: round(v, 5) for k, v in final_val.items()},
        "acceptance": acc,
        "acceptance_setup": (f"{n_eval} prompts of {prompt_len} tokens (BOS included) evenly spaced over each "
                             f"split, {args.eval_new} target greedy tokens (float32), chained drafting from every "
                             f"position n from the last prompt token up to {N_DRAFTS} before the end; top1 = d_1 "
                             f"equals t_n+1; mean_accepted[k] = mean number of leading drafts among k equal to the "
                             f"target's greedy tokens; f16-rounded saved head in float32"),
        "fixture": {k: fixture[k] for k in ("drafts", "target_greedy", "accepted")},
        "files": {p: os.path.getsize(p) for p in (st_path, cfg_path, args.fixture)},
    }
    write_json(args.log, log, indent=1)
    say(f"done in {wall} s: {st_path} ({os.path.getsize(st_path)} bytes), {cfg_path}, {args.fixture}, {args.log}")


if __name__ == "__main__":
    main()
