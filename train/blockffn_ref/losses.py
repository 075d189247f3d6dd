"""Training objectives of BlockFFN (SPEC §6) and of the TopK baseline (SPEC §8.1).

All functions take per-layer router tensors of one packed batch, ``[B, T, Ne]``
each (``B`` rows of ``T`` tokens), compute every term in fp32, reduce it per
layer and return the **mean over layers** (SPEC §6.1).  Layers without a router
(``None``, dense FFN) are skipped; with no router layer at all the result is 0.

Activation locality (AL), SPEC §6.2::

    pairs (t-1, t) with t-1 in the same document segment as t   (``prev_ok[b, t]``)
    L_al(layer) = mean_{valid pairs, e} BCEWithLogits(input  = alpha * A0[t-1, e],
                                                      target = sigmoid(alpha * A0[t, e]))

on the raw pre-ReLU router logits A0, alpha = 100.  The target is not detached.

Chunk sparsification (CS), SPEC §6.3 (non-overlapping chunks of ``Lc`` tokens of
the packed row; the packing pads every segment to a multiple of ``Lc`` so no
chunk straddles two documents)::

    n = A1 / sqrt(mean_e(A1^2) + eps)            (RMS-normalised A1, no weight)
    p = n / (sum_e n + 1e-5)                     (== A1 / sum_e A1 up to the 1e-5)
    p = p * token_mask                           (padding tokens contribute p = 0)
    L_cs(layer) = 1 - mean_{chunk, e} exp( sum_{k in chunk} ln(1 - p[k, e] + 1e-5) )

Switch-style load balancing for the TopK baseline, over non-padding tokens::

    f_e = #(tokens whose top-k set contains e) / (#tokens * k)
    P_e = mean_tokens softmax_e
    L_aux(layer) = Ne * sum_e f_e * P_e          (= 1 for perfectly uniform routing)
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

#: sharpness of the sigmoid in the AL loss (``--sigmoid_steep 100`` in the original scripts)
AL_ALPHA = 100.0
#: eps of the RMS normalisation of A1 inside the CS loss (the router-norm eps, 1e-5)
CS_RMS_EPS = 1e-5
#: constant added to the denominator of p and inside the log of the CS loss
CS_EPS = 1e-5


def _layers(routers: Sequence) -> list:
    return [r for r in routers if r is not None]


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def activation_locality_layer(a0: torch.Tensor, prev_ok: torch.Tensor, alpha: float = AL_ALPHA) -> torch.Tensor:
    """AL loss of one layer.  a0 [B, T, Ne]; prev_ok [B, T] bool (True where token
    t-1 is in the same document segment as token t; column 0 is ignored)."""
    a0 = _f32(a0)
    logits = alpha * a0[:, :-1]  # prediction: the earlier token
    target = torch.sigmoid(alpha * a0[:, 1:])  # target: the later token
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # [B, T-1, Ne]
    w = prev_ok[:, 1:].to(bce.dtype)
    n = (w.sum() * a0.shape[-1]).clamp(min=1.0)  # no valid pair -> 0 (no host sync)
    return (bce * w[..., None]).sum() / n


def activation_locality_loss(routers: Sequence, prev_ok: torch.Tensor, alpha: float = AL_ALPHA) -> torch.Tensor:
    """Mean over router layers of :func:`activation_locality_layer` (on ``r.a0``)."""
    layers = _layers(routers)
    if not layers:
        return prev_ok.new_zeros((), dtype=torch.float32)
    return torch.stack([activation_locality_layer(r.a0, prev_ok, alpha) for r in layers]).mean()


def chunk_probabilities(a1: torch.Tensor, token_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """p = RMSnorm(A1) / (sum_e RMSnorm(A1) + 1e-5), zeroed where token_mask is False."""
    a1 = _f32(a1)
    n = a1 * torch.rsqrt(a1.pow(2).mean(dim=-1, keepdim=True) + CS_RMS_EPS)
    p = n / (n.sum(dim=-1, keepdim=True) + CS_EPS)
    if token_mask is not None:
        p = p * token_mask[..., None].to(p.dtype)
    return p


def chunk_sparsification_layer(a1: torch.Tensor, token_mask: Optional[torch.Tensor], chunk_len: int) -> torch.Tensor:
    """CS loss of one layer.  a1 [B, T, Ne] (ReLU output), token_mask [B, T] bool
    (False on padding), T a multiple of chunk_len."""
    B, T, Ne = a1.shape
    if T % chunk_len != 0:
        raise ValueError(f"sequence length {T} is not a multiple of the CS chunk length {chunk_len}")
    p = chunk_probabilities(a1, token_mask)
    log_inactive = torch.log(1.0 - p + CS_EPS).view(B, T // chunk_len, chunk_len, Ne).sum(dim=2)
    return 1.0 - torch.exp(log_inactive).mean()


def chunk_sparsification_loss(routers: Sequence, token_mask: Optional[torch.Tensor], chunk_len: int) -> torch.Tensor:
    """Mean over router layers of :func:`chunk_sparsification_layer` (on ``r.a1``)."""
    layers = _layers(routers)
    if not layers:
        dev = token_mask.device if token_mask is not None else None
        return torch.zeros((), dtype=torch.float32, device=dev)
    return torch.stack([chunk_sparsification_layer(r.a1, token_mask, chunk_len) for r in layers]).mean()


def load_balancing_layer(probs: torch.Tensor, active: torch.Tensor, token_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Switch-style aux loss of one softmax-routed layer.  probs [B, T, Ne] (full
    softmax), active [B, T, Ne] bool (top-k mask), token_mask [B, T] bool."""
    probs = _f32(probs)
    Ne = probs.shape[-1]
    probs = probs.reshape(-1, Ne)
    active = active.reshape(-1, Ne).to(probs.dtype)
    if token_mask is not None:  # weight rows instead of indexing them (no host sync)
        keep = token_mask.reshape(-1, 1).to(probs.dtype)
        probs, active = probs * keep, active * keep
        n_tok = keep.sum().clamp(min=1.0)
    else:
        n_tok = probs.shape[0]
    f = active.sum(dim=0) / active.sum().clamp(min=1.0)  # share of all routing slots (#tokens * k)
    P = probs.sum(dim=0) / n_tok
    return Ne * (f * P).sum()


def load_balancing_loss(routers: Sequence, token_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean over softmax-routed layers of :func:`load_balancing_layer`; 0 if none."""
    layers = [r for r in _layers(routers) if r.probs is not None]
    if not layers:
        dev = token_mask.device if token_mask is not None else None
        return torch.zeros((), dtype=torch.float32, device=dev)
    return torch.stack([load_balancing_layer(r.probs, r.active, token_mask) for r in layers]).mean()
