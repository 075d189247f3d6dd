#!/usr/bin/env python3
"""Write the golden fixtures under tests/fixtures/ (deterministic, CPU, fp32).

    python3 train/make_fixtures.py [--out tests/fixtures]

For every fixture the script writes

    <name>/hf/config.json         released-style config
    <name>/hf/pytorch_model.bin   bf16 OrderedDict state dict (HF names)
    <name>/hf/tokenizer.json      the shared byte-level BPE tokenizer (384 ids)
    <name>/eval.txt               the evaluation text
    <name>/expected.json          reference outputs (see tests/fixtures/README.md)

Weights are drawn in fp32 and rounded to bf16 *before* any reference
computation, so the bf16 checkpoint holds exactly the weights that produced
expected.json; every reference computation runs in fp32 with explicit
(eager) attention on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from blockffn_ref import BlockFFNForCausalLM, eval_sparsity, load_hf, save_hf  # noqa: E402
from blockffn_ref.model import is_block_ffn, is_topk_router, normalize_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 384
SPECIALS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2
BOS = 1
N_IDS = 24
PROMPT_LEN = 8  # including the leading BOS
N_NEW = 12
MARGIN_TARGET = 1e-2  # stricter than the 1e-3 minimum the fixtures promise
MARGIN_MIN = 1e-3
# Every router logit A0 of the ids / eval runs must be at least this far from 0,
# so that the active sets cannot flip under a different summation order.
A0_MIN_ABS = 1e-4
# TopK fixture: the gap between the k-th and (k+1)-th largest router logit of every
# (layer, position) must be at least this large, so the top-k sets cannot flip.
TOPK_GAP_MIN = {"ids": 1e-3, "eval": 1e-4}
CLS_WINDOWS = (1, 2, 4, 8, 16, 32, 64)

# ---------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------

# Tokenizer training text (written for this project).
TOKENIZER_TEXT = """\
The small lighthouse on the northern cape was painted white every spring, and the
keeper wrote the date of each new coat in a notebook that he kept beside the lamp.
In the village below, the baker opened her shop before sunrise. She sold round loaves,
sweet buns with raisins, and a dark rye bread that the fishermen liked to take to sea.
Children walked to school along the harbour wall, counting the boats and arguing about
which one was the fastest. Their teacher, a patient man with a grey beard, liked to begin
the day with a short story about the stars, the tides, or the birds that visit the coast
in autumn.

A river runs from the hills to the sea, and along its banks there are old mills with
wooden wheels. Most of the mills no longer grind grain; one has become a museum, another
a library, and a third a workshop where people repair bicycles and clocks. On market day
farmers bring apples, cheese, honey, eggs and potatoes, and the square fills with voices,
music and the smell of coffee.

Computers follow instructions one step at a time. A program reads numbers, adds them,
compares them and stores the results in memory. When the same calculation is needed many
times, it is often faster to keep the answer than to compute it again. Engineers measure
how long each part of a program takes, then they change the slowest part first. Good tests
make such changes safe, because they show at once when a result is no longer correct.

Language models predict the next word from the words that came before it. They learn from
large collections of text and store what they learn in many numbers called weights. A model
with more weights can remember more patterns, but it also needs more memory and more time
for every word it writes. One way to save time is to use only a few parts of the model for
each word, and to skip the parts that would contribute nothing.

The weather changed quickly in the afternoon. Clouds came in from the west, the wind turned
cold, and the first drops of rain hit the windows of the station. Travellers waited on the
platform with their coats buttoned up, reading newspapers or talking quietly. When the train
finally arrived, it was twenty minutes late, and the conductor apologised to everyone in a
calm and friendly voice.

Gardening teaches patience. Seeds are planted in the cool soil of early spring, watered
gently, and protected from snails and frost. Weeks later the first green leaves appear, and
by summer the beds are full of beans, tomatoes, lettuce, carrots and flowers of every colour.
In September the gardener collects seeds from the best plants and keeps them in paper bags
for the following year.

Mathematics is the study of patterns, numbers, shapes and change. A triangle has three sides
and its angles always add up to one hundred and eighty degrees. Prime numbers have no divisors
other than one and themselves: two, three, five, seven, eleven, thirteen. Some questions about
primes are easy to ask and still have no answer after hundreds of years of work.

Music can be written on paper, played from memory, or invented on the spot. A simple melody
might use only five notes, while an orchestra combines dozens of instruments, each with its
own part. Listeners often remember a tune long after they have forgotten the words that went
with it, and a few bars are enough to bring back the place where they first heard it.
"""

# Evaluation text (different from the tokenizer text).
EVAL_TEXT = """\
Every morning the old ferry crossed the bay with a few cars, some bicycles and a crowd of
passengers who drank tea in the warm cabin. The captain knew most of them by name. On windy
days the crossing took longer, and the gulls followed the ship, hoping for bread. A young
engineer on board was writing a program that could read a long book and guess the next
word of every sentence; she smiled when it made a funny mistake.
"""


def train_tokenizer(path: str) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=1,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TOKENIZER_TEXT], trainer=trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i
    tok.save(path)


# ---------------------------------------------------------------------------
# fixture configs
# ---------------------------------------------------------------------------

BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    max_position_embeddings=256,
    scale_emb=12,
    dim_model_base=16,
    scale_depth=1.4,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    initializer_range=0.1,
    norm_scale=1.0,
    ffn_gated=False,
    router_act="relu",
    hidden_act="silu",
)
MLA = dict(attention_type="mla", num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32,
           kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16)


def _block(ne, de, ffn_type="block_linear", norm="rms"):
    return dict(ffn_type=ffn_type, num_experts=ne, expert_size=de, intermediate_size=ne * de,
                norm_after_router=norm)


FIXTURES = [
    # name, config, seed
    ("mla_block_linear",
     dict(BASE, **MLA, **_block(12, 8), num_hidden_layers=3, tie_word_embeddings=False,
          ffn_gated=True), 101),  # ffn_gated must be ignored by block FFNs
    ("gqa_tied_block_linear",
     dict(BASE, attention_type="vanilla", num_attention_heads=4, num_key_value_heads=2,
          **_block(8, 16), num_hidden_layers=2, tie_word_embeddings=True, ffn_gated=True), 202),
    ("mla_block3d",
     dict(BASE, **MLA, **_block(10, 16, ffn_type="block"), num_hidden_layers=2,
          tie_word_embeddings=False), 303),
    ("gqa_sum_norm",
     dict(BASE, attention_type="vanilla", num_attention_heads=4, num_key_value_heads=4,
          **_block(8, 8, norm="sum"), num_hidden_layers=2, tie_word_embeddings=False), 404),
    ("mla_noqlora_none_norm",
     dict(BASE, **dict(MLA, q_lora_rank=None), **_block(12, 8, norm="none"), num_hidden_layers=2,
          tie_word_embeddings=False), 505),
    ("gqa_dense",
     dict(BASE, attention_type="vanilla", num_attention_heads=4, num_key_value_heads=1,
          ffn_type="vanilla", ffn_gated=True, intermediate_size=96, num_hidden_layers=2,
          tie_word_embeddings=False), 606),
    # the TopK baseline: softmax over the 12 router logits, top-3 kept unrenormalised, no router norm
    ("mla_topk",
     dict(BASE, **MLA, **_block(12, 8, norm="none"), router_act="softmax", moe_top_k=3,
          num_hidden_layers=3, tie_word_embeddings=False), 707),
]

# Router rows are  random + ROUTER_SHIFT * d + b_e * m  where d is one random unit
# direction per layer (tokens with a strongly negative d.x get ZERO active experts)
# and m is the unit direction that every embedding row shares (EMB_COMMON below):
# it is present in every token's hidden state, so b_e acts as a per-expert
# negative bias that makes the experts sparse and unequally popular.
ROUTER_SHIFT = 1.0
ROUTER_BIAS = (-0.35, 0.05)  # b_e ~ U(ROUTER_BIAS)
EMB_COMMON = 0.8  # length of the component shared by all embedding rows


# ---------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------


def _bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).to(torch.float32)


@torch.no_grad()
def draw_weights(model: BlockFFNForCausalLM, g: torch.Generator) -> None:
    c = model.config
    H = c["hidden_size"]
    m = torch.randn(H, generator=g)
    m = m / m.norm()
    for name, p in model.named_parameters():
        shape = p.shape
        if name.endswith("mlp.router_norm.weight"):
            w = torch.randn(shape, generator=g) + 0.3  # N(0.3, 1): both signs
        elif name.endswith("norm.weight"):
            w = 1.0 + 0.15 * torch.randn(shape, generator=g)
        elif name == "model.embed_tokens.weight":
            w = 0.1 * torch.randn(shape, generator=g) + EMB_COMMON * m[None, :]
        elif name == "lm_head.weight":
            w = 0.3 * torch.randn(shape, generator=g)
        elif name.endswith("mlp.router_proj.weight"):
            d = torch.randn(H, generator=g)
            d = d - (d @ m) * m  # orthogonal to the shared embedding direction
            d = d / d.norm()
            lo, hi = ROUTER_BIAS
            b = lo + (hi - lo) * torch.rand(shape[0], generator=g)
            w = torch.randn(shape, generator=g) / math.sqrt(H) + ROUTER_SHIFT * d[None, :] + b[:, None] * m[None, :]
        elif name.endswith("mlp.up_proj") and is_block_ffn(c):
            w = torch.randn(shape, generator=g) / math.sqrt(H)
        elif name.endswith("mlp.down_proj") and is_block_ffn(c):
            w = torch.randn(shape, generator=g) * math.sqrt(2.0 / (c["num_experts"] * c["expert_size"]))
        else:  # every other matrix: N(0, 1/fan_in)
            w = torch.randn(shape, generator=g) / math.sqrt(shape[-1])
        p.copy_(_bf16(w))


# ---------------------------------------------------------------------------
# reference computations
# ---------------------------------------------------------------------------


@torch.no_grad()
def forward(model, ids):
    out = model(torch.tensor([ids], dtype=torch.long))
    return out.logits[0], out.routers


def active_lists(routers):
    """[layer][position] -> sorted expert ids with A1 > 0 (the top-k set of a softmax router)."""
    res = []
    for r in routers:
        if r is None:
            return []
        a1 = r.a1[0]
        if r.active is not None:  # softmax router: the kept probabilities must all be > 0
            assert torch.equal(a1 > 0, r.active[0])
        res.append([torch.nonzero(a1[t] > 0).flatten().tolist() for t in range(a1.shape[0])])
    return res


def min_abs_a0(routers) -> float:
    return min(float(r.a0.abs().min()) for r in routers)


def min_topk_gap(routers, k) -> float:
    """Smallest gap between the k-th and (k+1)-th largest router logit."""
    gaps = []
    for r in routers:
        srt = torch.sort(r.a0, dim=-1, descending=True).values
        gaps.append(float((srt[..., k - 1] - srt[..., k]).min()))
    return min(gaps)


def router_margin(model, routers) -> float:
    """The fixture's robustness margin: min top-k gap (TopK) or min |A0| (ReLU)."""
    if is_topk_router(model.config):
        return min_topk_gap(routers, model.config["moe_top_k"])
    return min_abs_a0(routers)


def check_router_constraints(model, routers, name):
    """Problems with the block-FFN fixture constraints (empty list if fine)."""
    problems = []
    if is_topk_router(model.config):
        gap = min_topk_gap(routers, model.config["moe_top_k"])
        if gap < TOPK_GAP_MIN["ids"]:
            problems.append(f"top-k logit gap {gap:.3g} below {TOPK_GAP_MIN['ids']}")
        return problems, 0
    if min_abs_a0(routers) < A0_MIN_ABS:
        problems.append(f"a router logit is within {A0_MIN_ABS} of 0")
    act = active_lists(routers)
    zero = sum(1 for layer in act for s in layer if not s)
    if zero == 0:
        problems.append("no (layer, position) with zero active experts")
    if model.config["norm_after_router"] == "rms":
        neg_active = False
        for li, layer in enumerate(model.model.layers):
            w = layer.mlp.router_norm.weight
            if not ((w > 0).any() and (w < 0).any()):
                problems.append(f"layer {li}: router-norm weights not of both signs")
            for s in act[li]:
                if any(w[e] < 0 for e in s):
                    neg_active = True
        if not neg_active:
            problems.append("no active expert with a negative router-norm weight")
    return problems, zero


def greedy(model, prompt, n_new=N_NEW):
    ids = list(prompt)
    new, margins = [], []
    for _ in range(n_new):
        logits, _ = forward(model, ids)
        last = logits[-1]
        top = torch.topk(last, 2)
        margins.append(float(top.values[0] - top.values[1]))
        nxt = int(top.indices[0])
        new.append(nxt)
        ids.append(nxt)
    return new, min(margins)


def evaluate(model, ids_all, max_len, block):
    """PPL / TLS / CLS / reuse over the evaluation ids (see README)."""
    segs = [ids_all[i : i + max_len] for i in range(0, len(ids_all), max_len)]
    nll_sum, n_pred = 0.0, 0
    masks_per_seg = []
    a0_min = math.inf
    for seg in segs:
        logits, routers = forward(model, seg)
        if len(seg) > 1:
            logp = F.log_softmax(logits[:-1].float(), dim=-1)
            tgt = torch.tensor(seg[1:], dtype=torch.long)
            nll = -logp.gather(1, tgt[:, None])[:, 0]
            nll_sum += float(nll.double().sum())
            n_pred += len(seg) - 1
        if block:
            masks_per_seg.append(torch.stack([r.a1[0] > 0 for r in routers]))  # [layers, T, Ne]
            a0_min = min(a0_min, router_margin(model, routers))
    ev = {"max_tokens": None, "ppl": math.exp(nll_sum / n_pred), "tokens": n_pred}
    if block:
        masks = torch.cat(masks_per_seg, dim=1)
        sp = eval_sparsity(masks, [len(s) for s in segs], CLS_WINDOWS)
        ev.update(tls=sp["tls"], cls=sp["cls"], reuse=sp["reuse"])
    else:
        ev.update(tls=None, cls=None, reuse=None)  # dense FFN: no experts
    return ev, a0_min


def r7(x: float) -> float:
    return float(f"{x:.7g}")


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def build_fixture(name, config, seed, out_root, tok_path, eval_ids):
    block = is_block_ffn(config)
    topk = block and is_topk_router(normalize_config(config))
    for attempt in range(200):
        g = torch.Generator().manual_seed(seed * 1000 + attempt)
        torch.manual_seed(seed * 1000 + attempt)
        model = BlockFFNForCausalLM(config, attn_impl="eager").float().eval()
        draw_weights(model, g)
        ids = [BOS] + torch.randint(3, VOCAB, (N_IDS - 1,), generator=g).tolist()
        logits, routers = forward(model, ids)
        zero = 0
        if block:
            problems, zero = check_router_constraints(model, routers, name)
            if problems:
                print(f"  {name}: attempt {attempt} rejected: {'; '.join(problems)}")
                continue

        # greedy continuation from a prompt with comfortable top-1/top-2 margins
        best = None
        for _ in range(50):
            prompt = [BOS] + torch.randint(3, VOCAB, (PROMPT_LEN - 1,), generator=g).tolist()
            new, margin = greedy(model, prompt)
            if best is None or margin > best[2]:
                best = (prompt, new, margin)
            if margin >= MARGIN_TARGET:
                break
        prompt, new, margin = best
        if margin < MARGIN_MIN:
            print(f"  {name}: attempt {attempt} rejected: greedy margin {margin:.3g}")
            continue
        ev, a0_eval = evaluate(model, eval_ids, config["max_position_embeddings"], block)
        if topk and a0_eval < TOPK_GAP_MIN["eval"]:
            print(f"  {name}: attempt {attempt} rejected: eval top-k gap {a0_eval:.3g}")
            continue
        if block and not topk and a0_eval < A0_MIN_ABS:
            print(f"  {name}: attempt {attempt} rejected: eval router logit within {A0_MIN_ABS} of 0")
            continue
        break
    else:
        raise RuntimeError(f"{name}: no weights satisfying the constraints")

    fdir = os.path.join(out_root, name)
    hf = os.path.join(fdir, "hf")
    # replace only what this script writes (other tools keep files beside it, e.g. runtime/)
    if os.path.isdir(hf):
        shutil.rmtree(hf)
    os.makedirs(hf)
    save_hf(model, config, hf)
    shutil.copyfile(tok_path, os.path.join(hf, "tokenizer.json"))
    with open(os.path.join(fdir, "eval.txt"), "w") as f:
        f.write(EVAL_TEXT)

    # the bf16 checkpoint must reproduce the reference exactly
    m2, _ = load_hf(hf, attn_impl="eager")
    l2, _ = forward(m2, ids)
    assert torch.equal(l2, logits), f"{name}: checkpoint round trip changed the logits"

    expected = {
        "config_name": name,
        "ids": ids,
        "logits": [[r7(v) for v in row] for row in logits.tolist()],
        "active_experts": active_lists(routers) if block else [],
        "zero_active_count": zero,
        "min_abs_router_logit": {"ids": min_abs_a0(routers), "eval": a0_eval} if block and not topk else None,
        "greedy": {"prompt_ids": prompt, "new_ids": new, "min_margin": margin},
        "eval": ev,
    }
    if topk:
        expected["min_topk_gap"] = {"ids": min_topk_gap(routers, config["moe_top_k"]), "eval": a0_eval}
    with open(os.path.join(fdir, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")
    return expected, attempt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="write only this fixture (repeatable; default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    from tokenizers import Tokenizer

    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok_path = os.path.join(tmp, "tokenizer.json")
        train_tokenizer(tok_path)
        tok = Tokenizer.from_file(tok_path)
        eval_ids = [BOS] + tok.encode(EVAL_TEXT, add_special_tokens=False).ids
        print(f"tokenizer: {tok.get_vocab_size()} ids; eval text: {len(eval_ids)} ids incl. BOS")
        unknown = set(args.only) - {n for n, _, _ in FIXTURES}
        if unknown:
            raise SystemExit(f"unknown fixture(s): {sorted(unknown)}")
        for name, config, seed in FIXTURES:
            if args.only and name not in args.only:
                continue
            exp, attempt = build_fixture(name, config, seed, args.out, tok_path, eval_ids)
            ev = exp["eval"]
            cls_txt = "-" if ev["cls"] is None else " ".join(
                f"{k}:{'-' if v is None else f'{v:.4f}'}" for k, v in ev["cls"].items())
            print(f"{name}: attempt {attempt}, zero_active={exp['zero_active_count']}, "
                  f"min_margin={exp['greedy']['min_margin']:.4g}, ppl={ev['ppl']:.4f}, "
                  f"tokens={ev['tokens']}, tls={ev['tls']}, reuse={ev['reuse']}, cls=[{cls_txt}]")


if __name__ == "__main__":
    main()
