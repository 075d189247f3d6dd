"""Checks of the PyTorch reference model against the numbers of the SPEC.

Run with:  python3 -m pytest train/tests -q
"""

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from blockffn_ref import (  # noqa: E402
    BlockFFNForCausalLM,
    cls,
    cls_counts,
    count_parameters,
    eval_sparsity,
    load_hf,
    reuse,
    save_hf,
    tls,
)
from blockffn_ref.model import BlockFFN  # noqa: E402

torch.set_num_threads(1)

# ---------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------

MLA_DIMS = dict(q_lora_rank=768, kv_lora_rank=256, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)


def released_config(hidden, layers, heads, experts, expert_size):
    return dict(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=heads, attention_type="mla", **MLA_DIMS,
        ffn_type="block_linear", num_experts=experts, expert_size=expert_size,
        norm_after_router="rms", vocab_size=122753, tie_word_embeddings=False,
        scale_emb=12, dim_model_base=256, scale_depth=1.4, rms_norm_eps=1e-5,
    )


SMALL = released_config(768, 16, 6, 48, 64)
MEDIUM = released_config(1280, 27, 10, 40, 128)


def tiny_config(**over):
    c = dict(
        vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, attention_type="mla", q_lora_rank=16, kv_lora_rank=8,
        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, ffn_type="block_linear",
        num_experts=6, expert_size=4, norm_after_router="rms", tie_word_embeddings=False,
        scale_emb=12, dim_model_base=8, scale_depth=1.4, rms_norm_eps=1e-5,
        max_position_embeddings=64, intermediate_size=40,
    )
    c.update(over)
    return c


def random_model(config, seed=0, dtype=torch.float64, attn_impl="eager"):
    torch.manual_seed(seed)
    m = BlockFFNForCausalLM(config, attn_impl=attn_impl)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + 0.3)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    return m.to(dtype).eval()


# ---------------------------------------------------------------------------
# parameter counts (SPEC §5)
# ---------------------------------------------------------------------------


def _meta_model(config):
    with torch.device("meta"):
        return BlockFFNForCausalLM(config)


def test_small_parameter_counts():
    m = _meta_model(SMALL)
    layer = m.model.layers[0]
    attn = sum(p.numel() for p in layer.self_attn.parameters())
    ffn = sum(p.numel() for p in layer.mlp.parameters())
    assert attn == 2_704_384
    assert ffn == 4_755_504
    assert count_parameters(m) == 119_383_552
    # total (untied: embedding + LM head) ≈ 307.9M
    assert round(count_parameters(m, non_embedding=False) / 1e6, 1) == 307.9


def test_medium_parameter_count():
    m = _meta_model(MEDIUM)
    layer = m.model.layers[0]
    assert sum(p.numel() for p in layer.self_attn.parameters()) == 5_161_984
    assert sum(p.numel() for p in layer.mlp.parameters()) == 13_158_440
    assert count_parameters(m) == 494_721_848


def test_hf_tensor_names_and_shapes():
    m = _meta_model(SMALL)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    H, V = 768, 122753
    expect = {
        "model.embed_tokens.weight": (V, H),
        "model.layers.3.input_layernorm.weight": (H,),
        "model.layers.3.self_attn.q_a_proj.weight": (768, H),
        "model.layers.3.self_attn.q_a_layernorm.weight": (768,),
        "model.layers.3.self_attn.q_b_proj.weight": (6 * 192, 768),
        "model.layers.3.self_attn.kv_a_proj_with_mqa.weight": (320, H),
        "model.layers.3.self_attn.kv_a_layernorm.weight": (256,),
        "model.layers.3.self_attn.kv_b_proj.weight": (6 * 256, 256),
        "model.layers.3.self_attn.o_proj.weight": (H, 6 * 128),
        "model.layers.3.post_attention_layernorm.weight": (H,),
        "model.layers.3.mlp.router_proj.weight": (48, H),
        "model.layers.3.mlp.router_norm.weight": (48,),
        "model.layers.3.mlp.up_proj": (48 * 64, H),
        "model.layers.3.mlp.down_proj": (H, 48 * 64),
        "model.norm.weight": (H,),
        "lm_head.weight": (V, H),
    }
    for k, s in expect.items():
        assert shapes[k] == s, k
    assert len(shapes) == 3 + 16 * 13  # 13 tensors per layer
    # 3-D layout, vanilla attention, plain q_proj, dense FFN
    c3 = dict(SMALL, ffn_type="block", num_hidden_layers=1)
    s3 = {k: tuple(v.shape) for k, v in _meta_model(c3).state_dict().items()}
    assert s3["model.layers.0.mlp.up_proj"] == (48, 64, H)
    assert s3["model.layers.0.mlp.down_proj"] == (48, H, 64)
    cg = dict(SMALL, attention_type="vanilla", num_attention_heads=12, num_key_value_heads=4,
              num_hidden_layers=1, tie_word_embeddings=True, norm_after_router="sum")
    sg = {k: tuple(v.shape) for k, v in _meta_model(cg).state_dict().items()}
    assert sg["model.layers.0.self_attn.q_proj.weight"] == (H, H)
    assert sg["model.layers.0.self_attn.k_proj.weight"] == (256, H)
    assert sg["model.layers.0.self_attn.v_proj.weight"] == (256, H)
    assert "lm_head.weight" not in sg
    assert "model.layers.0.mlp.router_norm.weight" not in sg
    cq = dict(SMALL, q_lora_rank=None, num_hidden_layers=1)
    sq = {k: tuple(v.shape) for k, v in _meta_model(cq).state_dict().items()}
    assert sq["model.layers.0.self_attn.q_proj.weight"] == (6 * 192, H)
    assert not any("q_a_" in k or "q_b_" in k for k in sq)
    cd = dict(SMALL, ffn_type="vanilla", intermediate_size=2064, num_hidden_layers=1)
    sd = {k: tuple(v.shape) for k, v in _meta_model(cd).state_dict().items()}
    assert sd["model.layers.0.mlp.gate_proj.weight"] == (2064, H)
    assert sd["model.layers.0.mlp.up_proj.weight"] == (2064, H)
    assert sd["model.layers.0.mlp.down_proj.weight"] == (H, 2064)


# ---------------------------------------------------------------------------
# BlockFFN layer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["rms", "sum", "none"])
@pytest.mark.parametrize("layout", ["block_linear", "block"])
def test_sparse_equals_dense(norm, layout):
    m = random_model(tiny_config(norm_after_router=norm, ffn_type=layout, num_hidden_layers=1))
    ffn = m.model.layers[0].mlp
    x = torch.randn(40, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    dense, r = ffn(x)
    sparse, _ = ffn.forward_sparse(x)
    n_active = (r.a1 > 0).sum(-1)
    assert 0 < n_active.float().mean() < ffn.num_experts  # genuinely sparse
    torch.testing.assert_close(sparse, dense, rtol=1e-12, atol=1e-12)


def test_block_and_block_linear_layouts_agree():
    lin = random_model(tiny_config(ffn_type="block_linear"), seed=3, dtype=torch.float32)
    blk = BlockFFNForCausalLM(tiny_config(ffn_type="block"), attn_impl="eager")
    sd = dict(lin.state_dict())
    Ne, de, H = 6, 4, 32
    for i in range(2):
        up = sd[f"model.layers.{i}.mlp.up_proj"]
        down = sd[f"model.layers.{i}.mlp.down_proj"]
        sd[f"model.layers.{i}.mlp.up_proj"] = up.reshape(Ne, de, H).clone()
        # down_lin[h, e*de + j] == down3d[e, h, j]
        sd[f"model.layers.{i}.mlp.down_proj"] = down.reshape(H, Ne, de).permute(1, 0, 2).contiguous()
    blk.load_state_dict(sd)
    blk.eval()
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = lin(ids), blk(ids)
    assert torch.equal(a.logits, b.logits)
    for ra, rb in zip(a.routers, b.routers):
        assert torch.equal(ra.scores, rb.scores)


@pytest.mark.parametrize("norm", ["rms", "sum", "none"])
def test_zero_relu_token_gives_exact_zero(norm):
    m = random_model(tiny_config(norm_after_router=norm, num_hidden_layers=1), dtype=torch.float32)
    ffn: BlockFFN = m.model.layers[0].mlp
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 32, generator=g)
    with torch.no_grad():
        # every router row points away from token 1 -> all logits of token 1 < 0
        d = x[1] / x[1].norm()
        ffn.router_proj.weight.copy_(-d[None, :] + 0.01 * torch.randn(6, 32, generator=g))
        out, r = ffn(x)
    assert (r.a0[1] < 0).all() and (r.a1[1] == 0).all()
    assert (r.scores[1] == 0).all()
    assert torch.equal(out[1], torch.zeros(32))


# ---------------------------------------------------------------------------
# whole model
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"q_lora_rank": None},
        {"attention_type": "vanilla", "num_key_value_heads": 2},
        {"attention_type": "vanilla", "num_key_value_heads": 1, "ffn_type": "vanilla"},
        {"ffn_type": "vanilla", "ffn_gated": False, "tie_word_embeddings": True},
    ],
)
def test_segments_isolate_packed_sequences(over):
    m = random_model(tiny_config(**over))
    g = torch.Generator().manual_seed(2)
    a = torch.randint(3, 97, (1, 7), generator=g)
    b = torch.randint(3, 97, (1, 5), generator=g)
    packed = torch.cat([a, b], dim=1)
    seg = torch.tensor([[0] * 7 + [1] * 5])
    with torch.no_grad():
        la = m(a).logits
        lb = m(b).logits
        lp = m(packed, segment_ids=seg).logits
        lp2 = m(packed, segment_ids=seg, position_ids=torch.tensor([list(range(7)) + list(range(5))])).logits
    torch.testing.assert_close(lp[:, :7], la, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lp[:, 7:], lb, rtol=1e-10, atol=1e-10)
    assert torch.equal(lp, lp2)


def test_causality_and_eager_matches_sdpa():
    cfg = tiny_config()
    m = random_model(cfg, dtype=torch.float32)
    m2 = random_model(cfg, dtype=torch.float32, attn_impl="sdpa")
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = m(ids).logits
        pre = m(ids[:, :5]).logits
        sd = m2(ids).logits
    torch.testing.assert_close(full[:, :5], pre, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full, sd, rtol=1e-4, atol=1e-4)


def test_rope_rotates_contiguous_halves():
    from blockffn_ref.model import apply_rope, rope_cos_sin

    d = 8
    x = torch.arange(1, d + 1, dtype=torch.float64).view(1, 1, 1, d)
    pos = torch.tensor([[3]])
    cos, sin = rope_cos_sin(pos, d, 10000.0)
    y = apply_rope(x, cos, sin).flatten()
    for i in range(d // 2):
        ang = 3 * 10000.0 ** (-2 * i / d)
        a, b = x.flatten()[i].item(), x.flatten()[i + d // 2].item()
        assert y[i].item() == pytest.approx(a * math.cos(ang) - b * math.sin(ang), rel=1e-5, abs=1e-5)
        assert y[i + d // 2].item() == pytest.approx(b * math.cos(ang) + a * math.sin(ang), rel=1e-5, abs=1e-5)


def test_manual_forward_matches_spec_order():
    """Re-derive the logits of a 1-layer dense-FFN vanilla model by hand."""
    cfg = tiny_config(attention_type="vanilla", ffn_type="vanilla", num_hidden_layers=1)
    m = random_model(cfg)
    ids = torch.tensor([[1, 5, 9, 13]])
    sd = m.state_dict()
    p = "model.layers.0."

    def rms(x, w, eps):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w

    h = sd["model.embed_tokens.weight"][ids[0]] * 12
    x = rms(h, sd[p + "input_layernorm.weight"], 1e-5)
    T, nh, hd = 4, 4, 8
    q = (x @ sd[p + "self_attn.q_proj.weight"].T).view(T, nh, hd)
    k = (x @ sd[p + "self_attn.k_proj.weight"].T).view(T, nh, hd)
    v = (x @ sd[p + "self_attn.v_proj.weight"].T).view(T, nh, hd)
    # RoPE angles in fp32, as in the SPEC
    inv = 1.0 / 10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None]
    ang = torch.cat([ang, ang], -1)[:, None, :]
    cos, sin = ang.cos().double(), ang.sin().double()

    def rot(t):
        return t * cos + torch.cat([-t[..., hd // 2:], t[..., : hd // 2]], -1) * sin

    q, k = rot(q), rot(k)
    att = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
    att = att.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
    o = torch.einsum("hqk,khd->qhd", att, v).reshape(T, nh * hd) @ sd[p + "self_attn.o_proj.weight"].T
    h = h + o * 1.4 / math.sqrt(1)
    x = rms(h, sd[p + "post_attention_layernorm.weight"], 1e-5)
    f = (torch.nn.functional.silu(x @ sd[p + "mlp.gate_proj.weight"].T) * (x @ sd[p + "mlp.up_proj.weight"].T)) @ sd[
        p + "mlp.down_proj.weight"
    ].T
    h = h + f * 1.4
    y = rms(h, sd["model.norm.weight"], 1e-5) / (32 / 8)
    logits = y @ sd["lm_head.weight"].T
    with torch.no_grad():
        ref = m(ids).logits[0]
    torch.testing.assert_close(ref, logits, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("q_lora", [16, None])
def test_manual_mla_blockffn_forward(q_lora):
    """Re-derive a 1-layer MLA + BlockFFN (rms router) model by hand."""
    cfg = tiny_config(num_hidden_layers=1, q_lora_rank=q_lora)
    m = random_model(cfg, seed=7)
    ids = torch.tensor([[1, 40, 7, 22, 93]])
    sd = m.state_dict()
    p = "model.layers.0."
    T, nh, nope, rope, vd, kvl, Ne, de = 5, 4, 8, 4, 8, 8, 6, 4

    def rms(x, w, eps):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w

    def W(n):
        return sd[p + n]

    h = sd["model.embed_tokens.weight"][ids[0]] * 12
    x = rms(h, W("input_layernorm.weight"), 1e-5)
    if q_lora:
        cq = rms(x @ W("self_attn.q_a_proj.weight").T, W("self_attn.q_a_layernorm.weight"), 1e-6)
        q = cq @ W("self_attn.q_b_proj.weight").T
    else:
        q = x @ W("self_attn.q_proj.weight").T
    q = q.view(T, nh, nope + rope)
    ckv = x @ W("self_attn.kv_a_proj_with_mqa.weight").T
    kv = rms(ckv[:, :kvl], W("self_attn.kv_a_layernorm.weight"), 1e-6) @ W("self_attn.kv_b_proj.weight").T
    kv = kv.view(T, nh, nope + vd)
    inv = 1.0 / 10000.0 ** (torch.arange(0, rope, 2, dtype=torch.float32) / rope)
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None]
    ang = torch.cat([ang, ang], -1)
    cos, sin = ang.cos().double(), ang.sin().double()

    def rot(t, c, s):
        return t * c + torch.cat([-t[..., rope // 2:], t[..., : rope // 2]], -1) * s

    q_pe = rot(q[..., nope:], cos[:, None], sin[:, None])
    k_pe = rot(ckv[:, kvl:], cos, sin)  # one rope key per token
    out = torch.zeros(T, nh * vd, dtype=torch.float64)
    for hd in range(nh):
        for i in range(T):
            sc = torch.tensor([
                (q[i, hd, :nope] @ kv[j, hd, :nope] + q_pe[i, hd] @ k_pe[j]) / math.sqrt(nope + rope)
                for j in range(i + 1)
            ], dtype=torch.float64)
            w = sc.softmax(0)
            out[i, hd * vd:(hd + 1) * vd] = sum(w[j] * kv[j, hd, nope:] for j in range(i + 1))
    h = h + (out @ W("self_attn.o_proj.weight").T) * 1.4
    x = rms(h, W("post_attention_layernorm.weight"), 1e-5)
    a1 = torch.relu(x @ W("mlp.router_proj.weight").T)
    s = rms(a1, W("mlp.router_norm.weight"), 1e-5)
    up, down = W("mlp.up_proj"), W("mlp.down_proj")
    f = torch.zeros_like(h)
    for t in range(T):
        for e in range(Ne):
            if a1[t, e] > 0:
                u = torch.nn.functional.silu(up[e * de:(e + 1) * de] @ x[t]) * s[t, e]
                f[t] += down[:, e * de:(e + 1) * de] @ u
    h = h + f * 1.4
    logits = (rms(h, sd["model.norm.weight"], 1e-5) / 4) @ sd["lm_head.weight"].T
    with torch.no_grad():
        out_m = m(ids)
    torch.testing.assert_close(out_m.logits[0], logits, rtol=1e-10, atol=1e-10)
    assert torch.equal(out_m.routers[0].a1[0] > 0, a1 > 0)


FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")


@pytest.mark.skipif(not os.path.isdir(FIXTURES), reason="fixtures not generated")
def test_committed_fixtures_reproduce():
    import json

    names = sorted(d for d in os.listdir(FIXTURES)
                   if os.path.isfile(os.path.join(FIXTURES, d, "expected.json"))
                   and os.path.isfile(os.path.join(FIXTURES, d, "hf", "config.json")))
    for name in names:
        with open(os.path.join(FIXTURES, name, "expected.json")) as f:
            exp = json.load(f)
        m, cfg = load_hf(os.path.join(FIXTURES, name, "hf"), attn_impl="eager")
        with torch.no_grad():
            out = m(torch.tensor([exp["ids"]]))
        # fp32 summation order differs across torch versions and thread counts: 1e-5 absolute
        torch.testing.assert_close(out.logits[0], torch.tensor(exp["logits"]), rtol=1e-5, atol=1e-5)
        if exp["active_experts"]:
            got = [[torch.nonzero(r.a1[0, t] > 0).flatten().tolist() for t in range(len(exp["ids"]))]
                   for r in out.routers]
            assert got == exp["active_experts"], name


def test_bf16_forward_runs():
    m = random_model(tiny_config(), dtype=torch.bfloat16, attn_impl="sdpa")
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(0))
    seg = torch.tensor([[0] * 10 + [1] * 6, [0] * 16])
    out = m(ids, segment_ids=seg)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()
    out.logits.float().logsumexp(-1).mean().backward()
    assert m.model.layers[0].mlp.up_proj.grad is not None


@pytest.mark.parametrize("over", [{}, {"attention_type": "vanilla", "tie_word_embeddings": True}, {"ffn_type": "block"}])
def test_save_load_roundtrip(tmp_path, over):
    cfg = tiny_config(**over)
    m = random_model(cfg, dtype=torch.float32)
    with torch.no_grad():  # make weights exactly representable in bf16
        for p in m.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    save_hf(m, cfg, str(tmp_path))
    sd = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    assert type(sd).__name__ == "OrderedDict"
    assert all(t.dtype == torch.bfloat16 for t in sd.values())
    assert ("lm_head.weight" in sd) == (not cfg["tie_word_embeddings"])
    m2, cfg2 = load_hf(str(tmp_path), attn_impl="eager")
    assert cfg2["torch_dtype"] == "bfloat16" and "rope_theta" not in cfg2
    ids = torch.randint(0, 97, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(m(ids).logits, m2(ids).logits)


# ---------------------------------------------------------------------------
# metrics (SPEC §7) on a hand-made mask
# ---------------------------------------------------------------------------

# one layer, 5 tokens, 4 experts
MASK = torch.tensor(
    [
        [1, 1, 0, 0],  # t0 {0,1}
        [0, 1, 0, 0],  # t1 {1}
        [0, 0, 0, 0],  # t2 {}
        [0, 0, 1, 1],  # t3 {2,3}
        [0, 0, 1, 0],  # t4 {2}
    ],
    dtype=torch.bool,
)


def test_metrics_single_layer():
    assert tls([MASK]) == pytest.approx(1 - 6 / 20)
    # windows drop t0: (t1,t2)->{1}, (t3,t4)->{2,3}
    assert cls_counts([MASK], 2) == (3, 8)
    assert cls([MASK], 2) == pytest.approx(1 - 3 / 8)
    assert cls([MASK], 4) == pytest.approx(1 - 3 / 4)
    assert cls([MASK], 3) == pytest.approx(1 - 3 / 4)  # t1..t3 only
    assert cls([MASK], 1) == pytest.approx(1 - 4 / 16)
    assert cls([MASK], 8) is None
    # t0: 1/2, t1: 0/1, t2: skipped (empty), t3: 1/2
    assert reuse([MASK]) == pytest.approx((0.5 + 0.0 + 0.5) / 3)


def test_metrics_pooled_over_layers():
    full = torch.ones(5, 4, dtype=torch.bool)
    assert tls([MASK, full]) == pytest.approx(1 - 26 / 40)
    assert cls([MASK, full], 2) == pytest.approx(1 - 11 / 16)
    assert reuse([MASK, full]) == pytest.approx((1.0 + 4 * 1.0) / 7)


def test_metrics_with_segments():
    segs = [3, 2]  # {t0,t1,t2} and {t3,t4}
    assert tls([MASK]) == pytest.approx(0.7)
    assert cls([MASK], 1, segs) == pytest.approx(1 - 2 / 12)  # t1, t2, t4
    assert cls([MASK], 2, segs) == pytest.approx(1 - 1 / 4)  # only (t1,t2)
    assert cls([MASK], 4, segs) is None
    # t0: 1/2, t1: 0/1, (t2 has no successor in its segment), t3: 1/2
    assert reuse([MASK], segs) == pytest.approx(1 / 3)
    m2 = MASK.clone()
    m2[2] = torch.tensor([0, 1, 0, 1])  # t2 {1,3}; t1->t2 now 1/1
    assert reuse([m2], segs) == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert reuse([m2]) == pytest.approx((0.5 + 1.0 + 0.5 + 0.5) / 4)  # t2->t3: {3} of {1,3}
    e = eval_sparsity([m2], segs)
    assert set(e["cls"]) == {"1", "2", "4", "8", "16", "32", "64"}
    assert e["cls"]["64"] is None
