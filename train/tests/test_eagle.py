"""train_eagle.py on the CPU with a tiny random target: chained drafting through one masked sequence
equals running the head step by step on explicit sequences (what the runtime does with a cache), the
head file has the exact layout the runtime reads, and a runtime-layout target loads back unchanged.
"""
import json
import os
import struct
import sys

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import train_eagle as te  # noqa: E402
from blockffn_ref import BlockFFNForCausalLM  # noqa: E402

torch.set_num_threads(1)

TINY = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 2, "attention_type": "mla", "q_lora_rank": 16,
        "kv_lora_rank": 8, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8,
        "ffn_type": "block_linear", "ffn_gated": False, "router_act": "relu", "expert_size": 4,
        "num_experts": 8, "norm_after_router": "rms", "norm_scale": 1.0, "rms_norm_eps": 1e-5,
        "scale_emb": 12, "dim_model_base": 8, "scale_depth": 1.4, "tie_word_embeddings": False,
        "max_position_embeddings": 64, "initializer_range": 0.1}
TINY_HEAD = dict(te.HEAD_CONFIG, hidden_size=32, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                 intermediate_size=48)


def _tiny_model(seed=0):
    model = BlockFFNForCausalLM(TINY, attn_impl="eager")
    model.init_weights(generator=torch.Generator().manual_seed(seed))
    return model.eval()


def test_chain_drafts_equal_step_by_step():
    torch.manual_seed(0)
    target = te.FrozenTarget(_tiny_model().double())
    head = te.DraftHead(TINY_HEAD, attn_impl="eager").double().eval()
    tokens = torch.randint(0, TINY["vocab_size"], (2, 12))
    feats = torch.randn(2, 12, 32, dtype=torch.float64) * 3
    ns, depth = torch.tensor([1, 4, 7, 11]), 4
    with torch.no_grad():
        drafts, margins, first = te.chain_drafts(head, target, tokens, feats, ns, depth)
        for b in range(2):
            for c, n in enumerate(ns.tolist()):
                emb = target.embed(tokens[b : b + 1, 1 : n + 1])  # head positions 0..n-1: (t_{j+1}, f_j)
                feat = feats[b : b + 1, :n]
                for i in range(depth):
                    g = head(emb, feat, *te.causal(emb.shape[1], emb.device))[:, -1:]
                    if i == 0:
                        assert torch.allclose(g[0, 0], first[b, c], atol=1e-10)
                    top = target.logits(g[0, 0]).topk(2)
                    assert int(top.indices[0]) == int(drafts[b, c, i]), (b, n, i)
                    assert abs(float(top.values[0] - top.values[1]) - float(margins[b, c, i])) < 1e-9
                    emb = torch.cat([emb, target.embed(top.indices[:1])[None]], 1)  # next position: (d, g)
                    feat = torch.cat([feat, g], 1)


def test_head_file_layout(tmp_path):
    torch.manual_seed(1)
    head = te.DraftHead(te.HEAD_CONFIG)
    path = str(tmp_path / "eagle.safetensors")
    te.write_head(path, head)
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    assert (8 + n) % 8 == 0
    header = json.loads(data[8 : 8 + n])
    H, I = 256, 512
    shapes = {"fc.weight": [H, 2 * H], "mlp.gate_proj.weight": [I, H], "mlp.up_proj.weight": [I, H],
              "mlp.down_proj.weight": [H, I]}
    assert list(header) == [name for name, _ in te.HEAD_TENSORS]  # file order, no __metadata__
    offset = 0
    for name, dtype in te.HEAD_TENSORS:
        m = header[name]
        want = shapes.get(name, [H] if name.endswith("norm.weight") else [H, H])
        assert m["dtype"] == dtype and m["shape"] == want, name
        size = (2 if dtype == "F16" else 4) * want[0] * (want[1] if len(want) > 1 else 1)
        assert m["data_offsets"] == [offset, offset + size], name
        offset += size
    assert len(data) == 8 + n + offset
    ref = load_file(path)
    loaded = te.load_head(path, te.HEAD_CONFIG, "cpu")
    for name, dtype in te.HEAD_TENSORS:
        p = head.state_dict()[name]
        assert torch.equal(ref[name].float(), p.to(te.ST_DTYPES[dtype]).float())
        assert torch.equal(loaded.state_dict()[name], ref[name].float())


def test_runtime_layout_target_loads_unchanged(tmp_path):
    model = _tiny_model(2)
    with torch.no_grad():  # f16-exact matrices, as in a converted package
        for name, p in model.named_parameters():
            if "norm" not in name and "router_proj" not in name:
                p.copy_(p.half().float())
    entries = []
    for name, t in model.state_dict().items():
        dtype = "F32" if "norm" in name or "router_proj" in name else "F16"
        if name.endswith(".mlp.down_proj"):
            name, t = name + "_t", t.t()
        entries.append((name, t, dtype))
    te.write_safetensors(str(tmp_path / "model.safetensors"), entries)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(TINY, f)
    target = te.load_target(str(tmp_path), "cpu")
    loaded = target.model.state_dict()
    for name, t in model.state_dict().items():
        assert torch.equal(loaded[name], t), name
    ids = torch.tensor([[1, 5, 9, 17, 3, 42]])
    with torch.no_grad():
        want = model(ids, return_hidden=True)
        feats = target.features(ids)
    assert torch.allclose(feats, want.hidden, atol=1e-5)
    assert torch.allclose(target.logits(feats), want.logits, atol=1e-4)
