"""Reading and writing checkpoints in the released Hugging Face layout.

A checkpoint directory holds

* ``config.json``        the MiniCPM-style config (keys as written by the
                         original BMTrain -> HF converter), and
* ``pytorch_model.bin``  ``torch.save`` of an ``OrderedDict`` of **bf16**
                         tensors with the HF names (``mlp.up_proj`` /
                         ``mlp.down_proj`` of block FFNs have no ``.weight``
                         suffix; tied models store no ``lm_head.weight``).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict

import torch

from .model import BlockFFNForCausalLM, extra_hf_config_keys, normalize_config, q_lora_rank

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"


def hf_config_dict(config: dict) -> dict:
    """The config.json body for a (possibly partial) config dict."""
    c = normalize_config(config)
    out = OrderedDict()
    out["architectures"] = ["MiniCPMForCausalLM"]
    out["model_type"] = "minicpm"
    out["bos_token_id"] = int(c["bos_token_id"])
    out["eos_token_id"] = int(c["eos_token_id"])
    out["hidden_act"] = "silu"
    out["hidden_size"] = int(c["hidden_size"])
    out["initializer_range"] = float(c["initializer_range"])
    out["intermediate_size"] = int(c["intermediate_size"])
    out["max_position_embeddings"] = int(c["max_position_embeddings"])
    out["num_attention_heads"] = int(c["num_attention_heads"])
    out["num_hidden_layers"] = int(c["num_hidden_layers"])
    out["num_key_value_heads"] = int(c["num_key_value_heads"])
    out["rms_norm_eps"] = float(c["rms_norm_eps"])
    out["rope_scaling"] = None
    if float(c["rope_theta"]) != 10000.0:
        out["rope_theta"] = float(c["rope_theta"])
    out["torch_dtype"] = "bfloat16"
    out["transformers_version"] = "4.36.0"
    out["use_cache"] = True
    out["vocab_size"] = int(c["vocab_size"])
    out["scale_emb"] = c["scale_emb"]
    out["dim_model_base"] = c["dim_model_base"]
    out["scale_depth"] = c["scale_depth"]
    out["tie_word_embeddings"] = bool(c["tie_word_embeddings"])
    out["attention_type"] = c["attention_type"]
    if c["attention_type"] == "mla":
        out["q_lora_rank"] = q_lora_rank(c) or None
        out["kv_lora_rank"] = int(c["kv_lora_rank"])
        out["qk_nope_head_dim"] = int(c["qk_nope_head_dim"])
        out["qk_rope_head_dim"] = int(c["qk_rope_head_dim"])
        out["v_head_dim"] = int(c["v_head_dim"])
    out["ffn_type"] = c["ffn_type"]
    out["ffn_gated"] = bool(c["ffn_gated"])
    out["router_act"] = c["router_act"]
    out["expert_size"] = int(c["expert_size"])
    out["num_experts"] = int(c["num_experts"])
    out["norm_after_router"] = c["norm_after_router"]
    out["norm_scale"] = float(c["norm_scale"])
    out["block_implementation"] = "torch"
    out.update(extra_hf_config_keys(c))  # moe_top_k of the TopK router
    return out


def hf_state_dict(model: BlockFFNForCausalLM, dtype=torch.bfloat16) -> "OrderedDict[str, torch.Tensor]":
    sd = OrderedDict()
    for name, t in model.state_dict().items():
        if model.tied and name == "lm_head.weight":
            continue
        sd[name] = t.detach().to("cpu", dtype).contiguous().clone()
    return sd


def save_hf(model: BlockFFNForCausalLM, config: dict, out_dir: str) -> None:
    """Write config.json and a bf16 pytorch_model.bin into out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, CONFIG_NAME), "w") as f:
        json.dump(hf_config_dict(config), f, indent=2)
        f.write("\n")
    torch.save(hf_state_dict(model), os.path.join(out_dir, WEIGHTS_NAME))


def load_hf(path: str, dtype=torch.float32, attn_impl: str = "sdpa", device="cpu"):
    """Read a checkpoint directory; returns (model, config dict)."""
    with open(os.path.join(path, CONFIG_NAME)) as f:
        config = json.load(f)
    sd = torch.load(os.path.join(path, WEIGHTS_NAME), map_location="cpu", weights_only=True)
    model = BlockFFNForCausalLM(config, attn_impl=attn_impl)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if model.tied:
        missing = [m for m in missing if m != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"checkpoint mismatch: missing={missing} unexpected={unexpected}")
    return model.to(device=device, dtype=dtype).eval(), config
