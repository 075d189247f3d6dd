"""Hand-computed checks of the training objectives, schedules and the TopK router.

Run with:  python3 -m pytest train/tests/test_losses.py -q
"""

import json
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from blockffn_ref import BlockFFNForCausalLM, RouterOutput  # noqa: E402
from blockffn_ref.losses import (  # noqa: E402
    activation_locality_layer,
    activation_locality_loss,
    chunk_sparsification_layer,
    chunk_sparsification_loss,
    load_balancing_loss,
)
from blockffn_ref.model import extra_hf_config_keys, normalize_config, topk_mask  # noqa: E402
from blockffn_ref.schedule import AdaptiveLambda, wsd_lr  # noqa: E402

torch.set_num_threads(1)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def bce_logits(x, y):
    """BCEWithLogits(x, y) = log(1 + e^x) - x*y."""
    return math.log1p(math.exp(x)) - x * y


def router(a0=None, a1=None):
    a0 = torch.zeros_like(a1) if a0 is None else a0
    a1 = torch.relu(a0) if a1 is None else a1
    return RouterOutput(a0, a1, a1)


# ---------------------------------------------------------------------------
# activation locality (SPEC §6.2)
# ---------------------------------------------------------------------------


def test_al_loss_by_hand():
    # one row, 3 tokens, 2 experts; tokens 0,1 are one document, token 2 starts the next
    a0 = torch.tensor([[[0.01, -0.02], [0.0, 0.01], [-0.01, 0.0]]], dtype=torch.float64)
    prev_ok = torch.tensor([[False, True, False]])
    # only the pair (t-1=0, t=1) counts:
    #   input  = 100 * A0[0] = [1, -2]
    #   target = sigmoid(100 * A0[1]) = [sigmoid(0), sigmoid(1)] = [0.5, 0.7310586]
    #   e0: log(1+e^1)  - 1 * 0.5        = 1.3132617 - 0.5       = 0.8132617
    #   e1: log(1+e^-2) - (-2)*0.7310586 = 0.1269280 + 1.4621172 = 1.5890452
    #   mean over 1 pair x 2 experts = 1.2011534
    e0 = bce_logits(1.0, 0.5)
    e1 = bce_logits(-2.0, sigmoid(1.0))
    assert e0 == pytest.approx(0.8132617, abs=1e-7)
    assert e1 == pytest.approx(1.5890452, abs=1e-7)
    want = (e0 + e1) / 2
    assert want == pytest.approx(1.2011534, abs=1e-7)
    got = activation_locality_layer(a0, prev_ok, alpha=100.0)
    assert float(got) == pytest.approx(want, rel=1e-12)
    # a second layer with A0 = 0: every pair gives log(2) - 0*0.5 = 0.6931472; mean over layers
    layer2 = torch.zeros_like(a0)
    got2 = activation_locality_loss([router(a0), None, router(layer2)], prev_ok, alpha=100.0)
    assert float(got2) == pytest.approx((want + math.log(2)) / 2, rel=1e-12)


def test_al_loss_averages_over_valid_pairs_only():
    # two rows; row 0: pairs (0,1),(1,2) valid; row 1: only (2,3) valid -> 3 pairs in the mean
    g = torch.Generator().manual_seed(0)
    a0 = torch.randn(2, 4, 3, generator=g, dtype=torch.float64) * 0.02
    prev_ok = torch.tensor([[False, True, True, False], [False, False, False, True]])
    total, n = 0.0, 0
    for b, t in [(0, 1), (0, 2), (1, 3)]:
        for e in range(3):
            total += bce_logits(100 * a0[b, t - 1, e].item(), sigmoid(100 * a0[b, t, e].item()))
            n += 1
    got = activation_locality_layer(a0, prev_ok)
    assert float(got) == pytest.approx(total / n, rel=1e-10)
    # gradient reaches both the earlier (input) and the later (target) token
    a0.requires_grad_(True)
    activation_locality_layer(a0, prev_ok).backward()
    assert a0.grad[0, 0].abs().sum() > 0 and a0.grad[0, 2].abs().sum() > 0
    assert a0.grad[1, 0].abs().sum() == 0 and a0.grad[1, 1].abs().sum() == 0  # no valid pair touches them


# ---------------------------------------------------------------------------
# chunk sparsification (SPEC §6.3)
# ---------------------------------------------------------------------------


def _p(a):
    """p_e = n_e / (sum n + 1e-5), n = a / r, r = sqrt(mean(a^2) + 1e-5)
    = a_e / (sum a + 1e-5 * r)."""
    r = math.sqrt(sum(x * x for x in a) / len(a) + 1e-5)
    n = [x / r for x in a]
    s = sum(n)
    return [x / (s + 1e-5) for x in n]


def test_cs_loss_by_hand():
    # one row, 4 tokens, 2 experts, chunks of Lc = 2; token 3 is padding
    a1 = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    p0, p1, p2 = _p([1, 0]), _p([1, 1]), _p([0, 2])  # ~[1,0], [0.5,0.5], [0,1]
    p3 = [0.0, 0.0]  # masked
    eps = 1e-5
    # chunk 0 = tokens 0,1; chunk 1 = tokens 2,3
    q = [
        (1 - p0[0] + eps) * (1 - p1[0] + eps),  # ~0      expert 0 surely used in chunk 0
        (1 - p0[1] + eps) * (1 - p1[1] + eps),  # ~0.5
        (1 - p2[0] + eps) * (1 - p3[0] + eps),  # ~1      expert 0 unused in chunk 1
        (1 - p2[1] + eps) * (1 - p3[1] + eps),  # ~0
    ]
    want = 1 - sum(q) / 4  # = mean P_act ~ (1 + 0.5 + 0 + 1) / 4 = 0.625
    assert want == pytest.approx(0.625, abs=1e-4)
    got = chunk_sparsification_layer(a1, mask, 2)
    assert float(got) == pytest.approx(want, rel=1e-12)
    # per layer, then averaged: a second layer where every token uses both experts equally
    a1b = torch.ones(1, 4, 2, dtype=torch.float64)
    pb = _p([1, 1])
    qb = [(1 - pb[0] + eps) ** 2, (1 - pb[0] + eps) * (1 + eps)]  # chunk 0 (2 real tokens), chunk 1 (1 real)
    want_b = 1 - (2 * qb[0] + 2 * qb[1]) / 4  # ~ 1 - (0.25*2 + 0.5*2)/4 = 0.625
    got2 = chunk_sparsification_loss([router(a1=a1), router(a1=a1b)], mask, 2)
    assert float(got2) == pytest.approx((want + want_b) / 2, rel=1e-12)


def test_cs_loss_zero_router_and_chunk_check():
    a1 = torch.zeros(1, 4, 3, dtype=torch.float64)
    # no expert anywhere: p = 0, every chunk product = (1 + 1e-5)^2, loss = 1 - (1+1e-5)^2 ~ -2e-5
    assert float(chunk_sparsification_layer(a1, None, 2)) == pytest.approx(1 - (1 + 1e-5) ** 2, abs=1e-9)
    with pytest.raises(ValueError):
        chunk_sparsification_layer(torch.zeros(1, 5, 3), None, 2)


def test_cs_loss_prefers_shared_experts_within_a_chunk():
    # same per-token sparsity (one expert per token); chunk-consistent routing has the lower loss
    same = torch.tensor([[[1.0, 0, 0, 0]] * 4])
    diff = torch.eye(4)[None]
    assert chunk_sparsification_layer(same, None, 4) < chunk_sparsification_layer(diff, None, 4)


# ---------------------------------------------------------------------------
# load balancing (TopK baseline)
# ---------------------------------------------------------------------------


def test_load_balancing_by_hand():
    probs = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]]])
    active = torch.tensor([[[True, False, False], [False, True, False], [False, False, True]]])
    mask = torch.tensor([[True, True, False]])  # third token is padding
    # f = [1/2, 1/2, 0]; P = [0.3, 0.45, 0.25]; L = 3 * (0.15 + 0.225) = 1.125
    r = RouterOutput(torch.zeros(1, 3, 3), probs * active, probs * active, probs=probs, active=active)
    assert float(load_balancing_loss([r], mask)) == pytest.approx(1.125, rel=1e-6)
    # uniform routing gives 1
    u = torch.full((1, 4, 4), 0.25)
    act = torch.eye(4, dtype=torch.bool)[None]
    ru = RouterOutput(torch.zeros(1, 4, 4), u * act, u * act, probs=u, active=act)
    assert float(load_balancing_loss([ru], None)) == pytest.approx(1.0, rel=1e-6)
    # ReLU routers have no probs: no aux term
    assert float(load_balancing_loss([router(a1=torch.ones(1, 2, 2))], None)) == 0.0


# ---------------------------------------------------------------------------
# adaptive lambda_cs (SPEC §6.4)
# ---------------------------------------------------------------------------


def test_adaptive_lambda_hand_sequence():
    s = AdaptiveLambda(1.0, n_stable=4, n_adjust=2, gamma_min=1.025, max_factor=4.0)
    lam, losses = {}, {1: 1.0, 2: 1.0, 3: 1.01, 4: 1.01, 5: 0.808, 6: 0.808, 7: 2.424, 8: 2.424,
                       9: 7.272, 10: 7.272, 11: 7.272, 12: 7.272, 13: 1.0, 14: 1.0}
    for step in range(1, 15):
        lam[step] = s.value(step)
        s.observe(step, losses[step])
    want = {
        # hold lambda0 for the first n_stable = 4 steps
        1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0,
        # step 4: gamma = 1.01 / 1.0 = 1.01 > 1 -> max(1.025, 1.01) = 1.025; ramp 1 -> 1.025 over 2 steps
        5: 1.0125, 6: 1.025,
        # step 6: gamma = 0.808 / 1.01 = 0.8 <= 1 -> 0.8 * 1.025 = 0.82; ramp
        7: (1.025 + 0.82) / 2, 8: 0.82,
        # step 8: gamma = 2.424 / 0.808 = 3 -> 2.46
        9: (0.82 + 2.46) / 2, 10: 2.46,
        # step 10: gamma = 3 -> 7.38, capped at 4 * lambda0 = 4
        11: (2.46 + 4.0) / 2, 12: 4.0,
        # step 12: gamma = 1 -> stays at 4 (ratio 1, cap 4)
        13: 4.0, 14: 4.0,
    }
    for step, v in want.items():
        assert lam[step] == pytest.approx(v, rel=1e-12), step
    assert [h["gamma"] for h in s.history] == pytest.approx([1.01, 0.8, 3.0, 3.0, 1.0, 1.0 / 7.272], rel=1e-12)
    # step 14: gamma = 1.0 / 7.272 -> lower from 4 over the next window
    assert s.value(15) == pytest.approx(4.0 + (4.0 / 7.272 - 4.0) / 2, rel=1e-12)
    # state round trip
    s2 = AdaptiveLambda(1.0, 4, 2)
    s2.load_state_dict(s.state_dict())
    assert s2.value(15) == s.value(15) and s2.value(16) == s.value(16)


def test_adaptive_lambda_holds_until_n_stable():
    s = AdaptiveLambda(0.05, n_stable=5, n_adjust=2)
    vals = []
    for step in range(1, 9):
        vals.append(s.value(step))
        s.observe(step, 1.0 / step)  # falling loss -> gamma < 1
    # windows end at 2, 4, 6, 8; 4 < n_stable = 5, so the first decision is at step 6
    assert vals[:6] == [0.05] * 6
    assert vals[6] < 0.05 and vals[7] < vals[6]
    with pytest.raises(ValueError):
        s.observe(10, 1.0)  # steps must come in order


# ---------------------------------------------------------------------------
# WSD learning rate
# ---------------------------------------------------------------------------


def test_wsd_values():
    kw = dict(total_steps=100, peak=1.0, warmup_frac=0.1, decay_frac=0.2, min_lr_ratio=0.1)
    # W = 10 warm-up steps, stable up to step 80, decay over steps 81..100
    assert wsd_lr(1, **kw) == pytest.approx(0.1)
    assert wsd_lr(5, **kw) == pytest.approx(0.5)
    assert wsd_lr(10, **kw) == pytest.approx(1.0)
    assert wsd_lr(11, **kw) == 1.0 and wsd_lr(80, **kw) == 1.0
    # linear: lr = 0.1 + 0.9 * (1 - q), q = (s - 80) / 20
    assert wsd_lr(81, **kw) == pytest.approx(0.1 + 0.9 * 0.95)
    assert wsd_lr(90, **kw) == pytest.approx(0.55)
    assert wsd_lr(100, **kw) == pytest.approx(0.1)
    assert wsd_lr(85, decay_shape="cosine", **kw) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert wsd_lr(85, decay_shape="sqrt", **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert wsd_lr(90, decay_shape="exp", **kw) == pytest.approx(0.1 ** 0.5)
    # no warm-up / no decay
    assert wsd_lr(1, 100, 2.0, warmup_frac=0.0, decay_frac=0.0) == 2.0
    assert wsd_lr(100, 100, 2.0, warmup_frac=0.0, decay_frac=0.0) == 2.0


# ---------------------------------------------------------------------------
# TopK baseline router
# ---------------------------------------------------------------------------


def topk_config(**over):
    c = dict(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        attention_type="vanilla", ffn_type="block_linear", num_experts=5, expert_size=4,
        router_act="softmax", moe_top_k=2, norm_after_router="none", tie_word_embeddings=False,
        scale_emb=12, dim_model_base=8, scale_depth=1.4, rms_norm_eps=1e-5, intermediate_size=20,
    )
    c.update(over)
    return c


def test_topk_mask_ties_go_to_lower_index():
    p = torch.tensor([[0.2, 0.3, 0.2, 0.3, 0.0], [0.25, 0.25, 0.25, 0.25, 0.0]])
    m = topk_mask(p, 3)
    assert m[0].tolist() == [True, True, False, True, False]
    assert m[1].tolist() == [True, True, True, False, False]


def test_topk_router_forward_by_hand():
    torch.manual_seed(0)
    m = BlockFFNForCausalLM(topk_config(), attn_impl="eager").double()
    m.init_weights(init_std=0.5, generator=torch.Generator().manual_seed(0))  # expert tensors start as empty()
    ffn = m.model.layers[0].mlp
    assert not hasattr(ffn, "router_norm")
    x = torch.randn(6, 16, dtype=torch.float64)
    out, r = ffn(x)
    logits = x @ ffn.router_proj.weight.T
    probs = torch.softmax(logits, -1)
    for t in range(6):
        top = sorted(range(5), key=lambda e: (-probs[t, e].item(), e))[:2]
        assert sorted(top) == torch.nonzero(r.active[t]).flatten().tolist()
        f = torch.zeros(16, dtype=torch.float64)
        for e in top:  # probability NOT renormalised over the kept experts
            u = torch.nn.functional.silu(ffn.up_proj[e * 4:(e + 1) * 4] @ x[t]) * probs[t, e]
            f += ffn.down_proj[:, e * 4:(e + 1) * 4] @ u
        torch.testing.assert_close(out[t], f, rtol=1e-12, atol=1e-12)
    assert torch.equal(r.a1 > 0, r.active) and torch.equal(r.active_mask(), r.active)
    sparse, _ = ffn.forward_sparse(x)
    torch.testing.assert_close(sparse, out, rtol=1e-12, atol=1e-12)


def test_topk_config_checks():
    assert extra_hf_config_keys(topk_config()) == {"moe_top_k": 2}
    assert extra_hf_config_keys(topk_config(router_act="relu", norm_after_router="rms")) == {}
    with pytest.raises(ValueError):
        normalize_config(topk_config(moe_top_k=6))
    with pytest.raises(ValueError):
        normalize_config(topk_config(norm_after_router="rms"))
    with pytest.raises(ValueError):
        normalize_config(topk_config(router_act="gelu"))


FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")


@pytest.mark.skipif(not os.path.isdir(os.path.join(FIXTURES, "mla_topk")), reason="fixture not generated")
def test_topk_fixture():
    with open(os.path.join(FIXTURES, "mla_topk", "hf", "config.json")) as f:
        cfg = json.load(f)
    assert cfg["router_act"] == "softmax" and cfg["moe_top_k"] == 3 and cfg["norm_after_router"] == "none"
    with open(os.path.join(FIXTURES, "mla_topk", "expected.json")) as f:
        exp = json.load(f)
    assert all(len(s) == 3 for layer in exp["active_experts"] for s in layer)
    assert exp["eval"]["tls"] == 0.75
    assert exp["min_topk_gap"]["ids"] >= 1e-3 and exp["min_topk_gap"]["eval"] >= 1e-4
