"""BlockFFN reference model (PyTorch).

The model is configured by a plain dict that uses the keys of the released
Hugging Face ``config.json`` (MiniCPM family).  Missing keys take the
``MiniCPMConfig`` class defaults, exactly as Hugging Face would; note that
several of those defaults (``scale_emb=1``, ``dim_model_base=1``,
``scale_depth=1``, ``norm_after_router="sum"``, ``rms_norm_eps=1e-6``,
``tie_word_embeddings=True``) are NOT the values of the released models, so
real configs must spell them out.

Forward pass (one sequence; ``L`` layers, ``H`` hidden size)::

    h = embed[ids] * scale_emb
    for each layer:
        h = h + attn(rmsnorm_in(h))  * scale_depth / sqrt(L)
        h = h + ffn(rmsnorm_post(h)) * scale_depth / sqrt(L)
    logits = lm_head(rmsnorm_final(h) / (H / dim_model_base))

Attention is either MLA (``attention_type == "mla"``) or standard multi-head
/ grouped-query attention (``"vanilla"``).  The FFN is either a BlockFFN
(``ffn_type`` ``"block_linear"`` or ``"block"``: ReLU router, router
normalisation, non-gated SiLU experts) or a dense FFN (``"vanilla"``).  A block
FFN with ``router_act == "softmax"`` is the TopK baseline of the paper: softmax
over all Ne router logits, keep the ``moe_top_k`` largest probabilities (ties
go to the lower expert index), multiply the kept experts by their probability
(not renormalised); it has no router norm (``norm_after_router`` must be
``"none"``).

Every layer's router tensors are returned by ``forward`` so that the training
losses and the sparsity metrics can be computed from them:

* ``a0``     router logits before the ReLU,                 [B, T, Ne]
* ``a1``     ReLU output (an expert is *active* iff a1 > 0),  [B, T, Ne]
* ``scores`` final (normalised, weighted) expert scores,      [B, T, Ne]

For the softmax (TopK) router ``a1`` is the kept probabilities (zero outside the
top-k set), ``probs`` the full softmax and ``active`` the top-k mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------

#: Defaults of the Hugging Face ``MiniCPMConfig`` class (used for missing keys).
CONFIG_DEFAULTS = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "attention_type": "vanilla",
    "num_attention_heads": 32,
    "num_key_value_heads": None,
    "qk_nope_head_dim": 64,
    "qk_rope_head_dim": 32,
    "q_lora_rank": 768,
    "kv_lora_rank": 256,
    "v_head_dim": None,
    "ffn_type": "vanilla",
    "ffn_gated": True,
    "hidden_act": "silu",
    "router_act": "relu",
    "expert_size": 128,
    "num_experts": 40,
    "moe_top_k": 2,
    "norm_after_router": "sum",
    "norm_scale": 1.0,
    "max_position_embeddings": 4096,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": True,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "scale_emb": 1,
    "dim_model_base": 1,
    "scale_depth": 1,
}

#: eps of the two MLA-internal norms (q_a_layernorm, kv_a_layernorm).
MLA_NORM_EPS = 1e-6

#: constant added to the denominator of the "sum" router normalisation.
SUM_NORM_EPS = 1e-5


def normalize_config(cfg: dict) -> dict:
    """Return a complete config dict: class defaults filled in and checked."""
    c = dict(CONFIG_DEFAULTS)
    c.update({k: v for k, v in cfg.items()})
    if c["num_key_value_heads"] is None:
        c["num_key_value_heads"] = c["num_attention_heads"]
    if c["v_head_dim"] is None:
        c["v_head_dim"] = c["qk_nope_head_dim"]
    if c.get("rope_theta") is None:
        c["rope_theta"] = 10000.0

    if c["attention_type"] not in ("mla", "vanilla"):
        raise ValueError(f"unsupported attention_type {c['attention_type']!r}")
    if c["ffn_type"] not in ("block", "block_linear", "vanilla"):
        raise ValueError(f"unsupported ffn_type {c['ffn_type']!r}")
    if c["norm_after_router"] not in ("rms", "sum", "none"):
        raise ValueError(f"unsupported norm_after_router {c['norm_after_router']!r}")
    if c["hidden_act"] != "silu":
        raise ValueError("only hidden_act 'silu' is supported")
    if is_block_ffn(c):
        if c["router_act"] not in ("relu", "softmax"):
            raise ValueError(f"unsupported router_act {c['router_act']!r} (relu or softmax)")
        if c["router_act"] == "softmax":
            k = c["moe_top_k"]
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= c["num_experts"]:
                raise ValueError(f"moe_top_k must be an int in 1..num_experts, got {k!r}")
            if c["norm_after_router"] != "none":
                raise ValueError("the softmax (TopK) router takes norm_after_router 'none'")
    if c["rope_scaling"] is not None:
        raise ValueError("rope_scaling is not supported")
    if c["attention_bias"]:
        raise ValueError("attention_bias is not supported")
    if c["attention_type"] == "vanilla":
        h, kv = c["num_attention_heads"], c["num_key_value_heads"]
        if c["hidden_size"] % h != 0 or h % kv != 0:
            raise ValueError("hidden_size must divide by heads and heads by kv heads")
    return c


def is_block_ffn(c: dict) -> bool:
    return c["ffn_type"] in ("block", "block_linear")


def is_topk_router(c: dict) -> bool:
    """True for the TopK baseline (block FFN with a softmax router)."""
    return is_block_ffn(c) and c["router_act"] == "softmax"


def extra_hf_config_keys(config: dict) -> dict:
    """config.json keys beyond the released converter's set that the model needs:
    ``moe_top_k`` for the softmax (TopK) router.  Empty for every ReLU-routed or
    dense model, so their config.json stays unchanged."""
    c = normalize_config(config)
    if is_topk_router(c):
        return {"moe_top_k": int(c["moe_top_k"])}
    return {}


def q_lora_rank(c: dict) -> int:
    """q_lora_rank as an int; 0 means a plain q_proj (config null or 0)."""
    r = c.get("q_lora_rank")
    return int(r) if r else 0


# ---------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """y = (x / sqrt(mean(x^2) + eps)) * w, statistics in fp32.

    The normalised value is cast back to the input dtype before the weight
    multiply (this is what the released PyTorch code does; in fp32 the order
    makes no difference).
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        xf = _up(x)
        var = xf.pow(2).mean(dim=-1, keepdim=True)
        y = (xf * torch.rsqrt(var + self.eps)).to(dtype)
        return y * self.weight


def _up(x: torch.Tensor) -> torch.Tensor:
    """Promote 16-bit floats to fp32 (fp32 / fp64 are kept as they are)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def rope_cos_sin(position_ids: torch.Tensor, dim: int, theta: float):
    """cos/sin tables [B, T, dim] in fp32 for rotate-half RoPE."""
    exponent = torch.arange(0, dim, 2, dtype=torch.int64, device=position_ids.device).float() / dim
    inv_freq = 1.0 / (theta ** exponent)  # [dim/2]
    ang = position_ids.float()[..., None] * inv_freq  # [B, T, dim/2]
    ang = torch.cat([ang, ang], dim=-1)  # [B, T, dim]
    return ang.cos(), ang.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, heads, T, d] (computed in fp32, returned in x.dtype)."""
    xf = _up(x)
    c = cos[:, None]  # [B, 1, T, d]
    s = sin[:, None]
    return (xf * c + _rotate_half(xf) * s).to(x.dtype)


_FLEX = None


def _flex_attention():
    """torch's flex_attention, compiled once (the uncompiled one is a slow reference)."""
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


def segment_block_mask(segment_ids: torch.Tensor):
    """flex_attention BlockMask: causal and restricted to equal segment ids."""
    from torch.nn.attention.flex_attention import create_block_mask

    B, T = segment_ids.shape
    seg = segment_ids

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (seg[b, q_idx] == seg[b, kv_idx])

    return create_block_mask(mask_mod, B, None, T, T, device=segment_ids.device)


def attend(q, k, v, mask, scale: float, impl: str) -> torch.Tensor:
    """softmax(q k^T * scale, masked) v.   q,k [B,h,T,dq]; v [B,h,T,dv]; mask [B,1,T,T] bool
    (for impl "flex": a BlockMask from ``segment_block_mask``)."""
    if impl == "flex":
        return _flex_attention()(q, k, v, block_mask=mask, scale=scale)
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    scores = torch.matmul(_up(q), _up(k).transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    return torch.matmul(p.to(v.dtype), v)


# ---------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------


class MLAAttention(nn.Module):
    """Multi-head latent attention (one shared rope key per token)."""

    def __init__(self, c: dict):
        super().__init__()
        H = c["hidden_size"]
        self.num_heads = h = c["num_attention_heads"]
        self.nope = c["qk_nope_head_dim"]
        self.rope = c["qk_rope_head_dim"]
        self.v_dim = c["v_head_dim"]
        self.kv_lora = c["kv_lora_rank"]
        self.q_lora = q_lora_rank(c)
        self.q_dim = self.nope + self.rope
        self.scale = self.q_dim ** -0.5
        self.rope_theta = float(c["rope_theta"])
        if self.q_lora:
            self.q_a_proj = nn.Linear(H, self.q_lora, bias=False)
            self.q_a_layernorm = RMSNorm(self.q_lora, MLA_NORM_EPS)
            self.q_b_proj = nn.Linear(self.q_lora, h * self.q_dim, bias=False)
        else:
            self.q_proj = nn.Linear(H, h * self.q_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(H, self.kv_lora + self.rope, bias=False)
        self.kv_a_layernorm = RMSNorm(self.kv_lora, MLA_NORM_EPS)
        self.kv_b_proj = nn.Linear(self.kv_lora, h * (self.nope + self.v_dim), bias=False)
        self.o_proj = nn.Linear(h * self.v_dim, H, bias=False)

    def forward(self, x, position_ids, mask, impl):
        B, T, _ = x.shape
        h = self.num_heads
        if self.q_lora:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        else:
            q = self.q_proj(x)
        q = q.view(B, T, h, self.q_dim).transpose(1, 2)  # [B,h,T,nope+rope]
        q_nope, q_pe = q.split([self.nope, self.rope], dim=-1)

        ckv = self.kv_a_proj_with_mqa(x)  # [B,T,kv_lora+rope]
        c_kv, k_pe = ckv.split([self.kv_lora, self.rope], dim=-1)
        kv = self.kv_b_proj(self.kv_a_layernorm(c_kv))
        kv = kv.view(B, T, h, self.nope + self.v_dim).transpose(1, 2)
        k_nope, v = kv.split([self.nope, self.v_dim], dim=-1)
        k_pe = k_pe.view(B, 1, T, self.rope)

        cos, sin = rope_cos_sin(position_ids, self.rope, self.rope_theta)
        q_pe = apply_rope(q_pe, cos, sin)
        k_pe = apply_rope(k_pe, cos, sin)

        qf = torch.cat([q_nope, q_pe], dim=-1)
        kf = torch.cat([k_nope, k_pe.expand(B, h, T, self.rope)], dim=-1)
        out = attend(qf, kf, v.contiguous(), mask, self.scale, impl)  # [B,h,T,v]
        out = out.transpose(1, 2).reshape(B, T, h * self.v_dim)
        return self.o_proj(out)


class VanillaAttention(nn.Module):
    """Multi-head / grouped-query attention with rotate-half RoPE on the full head."""

    def __init__(self, c: dict):
        super().__init__()
        H = c["hidden_size"]
        self.num_heads = c["num_attention_heads"]
        self.num_kv_heads = c["num_key_value_heads"]
        self.head_dim = H // self.num_heads
        self.scale = self.head_dim ** -0.5
        self.rope_theta = float(c["rope_theta"])
        self.q_proj = nn.Linear(H, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(H, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(H, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, H, bias=False)

    def forward(self, x, position_ids, mask, impl):
        B, T, _ = x.shape
        h, kvh, d = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q_proj(x).view(B, T, h, d).transpose(1, 2)
        k = self.k_proj(x).view(B, T, kvh, d).transpose(1, 2)
        v = self.v_proj(x).view(B, T, kvh, d).transpose(1, 2)
        cos, sin = rope_cos_sin(position_ids, d, self.rope_theta)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if kvh != h:  # query head i uses kv head i // (h / kvh)
            rep = h // kvh
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        out = attend(q, k, v, mask, self.scale, impl)
        out = out.transpose(1, 2).reshape(B, T, h * d)
        return self.o_proj(out)


# ---------------------------------------------------------------------------
# FFN
# ---------------------------------------------------------------------------


@dataclass
class RouterOutput:
    a0: torch.Tensor  # pre-ReLU router logits
    a1: torch.Tensor  # ReLU output; active iff > 0
    scores: torch.Tensor  # normalised (and weighted) scores that multiply the experts
    probs: Optional[torch.Tensor] = None  # softmax router only: softmax over all Ne logits
    active: Optional[torch.Tensor] = None  # softmax router only: top-k mask (bool)

    def active_mask(self) -> torch.Tensor:
        """Boolean [.., Ne] mask of the experts that are computed for each token."""
        return self.active if self.active is not None else self.a1 > 0


def topk_mask(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k largest entries along the last axis; ties -> lower index."""
    order = torch.sort(probs, dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, order, True)


class BlockFFN(nn.Module):
    """ReLU-routed mixture of small non-gated SiLU experts.

    ``block_linear``: up_proj [Ne*de, H], down_proj [H, Ne*de]
    ``block``:        up_proj [Ne, de, H], down_proj [Ne, H, de]
    Expert e: out += down_e @ (SiLU(up_e @ x) * score_e).
    """

    def __init__(self, c: dict):
        super().__init__()
        H = c["hidden_size"]
        self.hidden = H
        self.num_experts = Ne = c["num_experts"]
        self.expert_size = de = c["expert_size"]
        self.layout = c["ffn_type"]
        self.norm_type = c["norm_after_router"]
        self.norm_scale = float(c["norm_scale"])
        self.softmax_router = c["router_act"] == "softmax"
        self.top_k = int(c["moe_top_k"]) if self.softmax_router else 0
        self.router_proj = nn.Linear(H, Ne, bias=False)
        if self.norm_type == "rms":
            self.router_norm = RMSNorm(Ne, c["rms_norm_eps"])
        if self.layout == "block_linear":
            self.up_proj = nn.Parameter(torch.empty(Ne * de, H))
            self.down_proj = nn.Parameter(torch.empty(H, Ne * de))
        else:
            self.up_proj = nn.Parameter(torch.empty(Ne, de, H))
            self.down_proj = nn.Parameter(torch.empty(Ne, H, de))

    # weights viewed in the block_linear layout (a copy only for the 3-D down_proj)
    def up_linear(self) -> torch.Tensor:
        return self.up_proj.reshape(self.num_experts * self.expert_size, self.hidden)

    def down_linear(self) -> torch.Tensor:
        if self.layout == "block_linear":
            return self.down_proj
        # [Ne, H, de] -> [H, Ne, de] -> [H, Ne*de]
        return self.down_proj.permute(1, 0, 2).reshape(self.hidden, self.num_experts * self.expert_size)

    def route(self, x: torch.Tensor) -> RouterOutput:
        a0 = self.router_proj(x)
        if self.softmax_router:
            # TopK baseline: softmax (in fp32) over all logits, keep the k largest
            # probabilities unrenormalised; ties go to the lower expert index.
            probs = torch.softmax(_up(a0), dim=-1)
            keep = topk_mask(probs, self.top_k)
            s = (probs * keep).to(a0.dtype)
            return RouterOutput(a0, s, s, probs=probs, active=keep)
        a1 = F.relu(a0)
        if self.norm_type == "rms":
            s = self.router_norm(a1)
        elif self.norm_type == "sum":
            s = a1 / (a1.sum(dim=-1, keepdim=True) * self.norm_scale + SUM_NORM_EPS)
        else:
            s = a1
        return RouterOutput(a0, a1, s)

    def forward(self, x: torch.Tensor):
        r = self.route(x)
        Ne, de = self.num_experts, self.expert_size
        u = F.silu(F.linear(x, self.up_linear()))  # [..., Ne*de]
        u = u.view(*u.shape[:-1], Ne, de) * r.scores[..., None]
        out = F.linear(u.reshape(*u.shape[:-2], Ne * de), self.down_linear())
        return out, r

    @torch.no_grad()
    def forward_sparse(self, x: torch.Tensor):
        """Same result computing only the active experts (A1 > 0, or the top-k set
        of a softmax router), token by token.

        x: [N, H].  Used to check that skipping inactive experts is exact.
        """
        r = self.route(x)
        Ne, de, H = self.num_experts, self.expert_size, self.hidden
        up = self.up_linear().view(Ne, de, H)
        down = self.down_linear().view(H, Ne, de)
        out = torch.zeros_like(x)
        act = r.active_mask()
        for t in range(x.shape[0]):
            for e in torch.nonzero(act[t]).flatten().tolist():
                u = F.silu(up[e] @ x[t]) * r.scores[t, e]
                out[t] += down[:, e, :] @ u
        return out, r


class DenseFFN(nn.Module):
    """Dense FFN: down(SiLU(gate x) * up x) if gated else down(SiLU(up x))."""

    def __init__(self, c: dict):
        super().__init__()
        H, I = c["hidden_size"], c["intermediate_size"]
        self.gated = bool(c["ffn_gated"])
        if self.gated:
            self.gate_proj = nn.Linear(H, I, bias=False)
        self.up_proj = nn.Linear(H, I, bias=False)
        self.down_proj = nn.Linear(I, H, bias=False)

    def forward(self, x):
        if self.gated:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)), None
        return self.down_proj(F.silu(self.up_proj(x))), None


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------


class DecoderLayer(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        H, eps = c["hidden_size"], c["rms_norm_eps"]
        self.input_layernorm = RMSNorm(H, eps)
        self.self_attn = MLAAttention(c) if c["attention_type"] == "mla" else VanillaAttention(c)
        self.post_attention_layernorm = RMSNorm(H, eps)
        self.mlp = BlockFFN(c) if is_block_ffn(c) else DenseFFN(c)
        self.residual_scale = c["scale_depth"] / math.sqrt(c["num_hidden_layers"])

    def forward(self, h, position_ids, mask, impl):
        a = self.self_attn(self.input_layernorm(h), position_ids, mask, impl)
        h = h + a * self.residual_scale
        f, r = self.mlp(self.post_attention_layernorm(h))
        h = h + f * self.residual_scale
        return h, r


class BlockFFNModel(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([DecoderLayer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


@dataclass
class ForwardOutput:
    logits: torch.Tensor  # [B, T, V]
    routers: List[Optional[RouterOutput]]  # one per layer; None for a dense FFN
    hidden: Optional[torch.Tensor] = None  # final-normed hidden state (if requested)


def positions_from_segments(segment_ids: torch.Tensor) -> torch.Tensor:
    """Position ids restarting at 0 at the start of every contiguous segment run."""
    B, T = segment_ids.shape
    ar = torch.arange(T, device=segment_ids.device).expand(B, T)
    start = torch.ones_like(segment_ids, dtype=torch.bool)
    start[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    first = torch.where(start, ar, torch.zeros_like(ar)).cummax(dim=1).values
    return ar - first


class BlockFFNForCausalLM(nn.Module):
    """The full causal LM.  ``config`` is a Hugging Face style dict.

    ``attn_impl``: "sdpa" (torch scaled_dot_product_attention, fast),
    "eager" (explicit fp32 softmax; used for the golden fixtures) or "flex"
    (compiled flex_attention with a block-sparse segment mask; for training on
    a GPU).
    """

    def __init__(self, config: dict, attn_impl: str = "sdpa"):
        super().__init__()
        self.config = c = normalize_config(config)
        self.attn_impl = attn_impl
        self.model = BlockFFNModel(c)
        self.tied = bool(c["tie_word_embeddings"])
        if not self.tied:
            self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        self.scale_emb = float(c["scale_emb"])
        self.logit_divisor = c["hidden_size"] / c["dim_model_base"]

    # -- weights ---------------------------------------------------------
    def lm_head_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.tied else self.lm_head.weight

    @torch.no_grad()
    def init_weights(self, init_std: Optional[float] = None, generator: Optional[torch.Generator] = None):
        """Training initialisation: matrices N(0, init_std/sqrt(H/dim_model_base)),
        embedding / LM head N(0, init_std), every norm weight 1."""
        c = self.config
        std = c["initializer_range"] if init_std is None else init_std
        mat_std = std / math.sqrt(c["hidden_size"] / c["dim_model_base"])
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name in ("model.embed_tokens.weight", "lm_head.weight"):
                p.normal_(0.0, std, generator=generator)
            else:
                p.normal_(0.0, mat_std, generator=generator)

    # -- forward ---------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: Optional[torch.Tensor] = None,
        segment_ids: Optional[torch.Tensor] = None,
        return_hidden: bool = False,
    ) -> ForwardOutput:
        """input_ids [B, T].  segment_ids [B, T] (optional): tokens attend only to
        earlier tokens with the same segment id.  position_ids default to
        0..T-1, or restart at every segment start when segment_ids is given."""
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        B, T = input_ids.shape
        dev = input_ids.device
        if position_ids is None:
            if segment_ids is not None:
                position_ids = positions_from_segments(segment_ids)
            else:
                position_ids = torch.arange(T, device=dev).expand(B, T)
        elif position_ids.dim() == 1:
            position_ids = position_ids.expand(B, T)
        if self.attn_impl == "flex":
            if segment_ids is None:
                segment_ids = torch.zeros(B, T, dtype=torch.int32, device=dev)
            mask = segment_block_mask(segment_ids)
        else:
            mask = self._dense_mask(B, T, segment_ids, dev)

        h = self.model.embed_tokens(input_ids) * self.scale_emb
        routers = []
        for layer in self.model.layers:
            h, r = layer(h, position_ids, mask, self.attn_impl)
            routers.append(r)
        y = self.model.norm(h)
        logits = F.linear(y / self.logit_divisor, self.lm_head_weight())
        return ForwardOutput(logits, routers, y if return_hidden else None)

    @staticmethod
    def _dense_mask(B, T, segment_ids, dev):
        causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
        if segment_ids is not None:
            same = segment_ids[:, :, None] == segment_ids[:, None, :]
            mask = (causal[None] & same)[:, None]
        else:
            mask = causal[None, None].expand(B, 1, T, T)
        return mask


def count_parameters(model: nn.Module, non_embedding: bool = True) -> int:
    """Number of parameters; non_embedding excludes embed_tokens and lm_head."""
    n = 0
    for name, p in model.named_parameters():
        if non_embedding and (name.startswith("model.embed_tokens.") or name.startswith("lm_head.")):
            continue
        n += p.numel()
    return n
