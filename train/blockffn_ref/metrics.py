"""Activation-sparsity metrics.

Inputs are per-layer boolean activity masks ``[T, Ne]`` (``active[t, e]`` is
``A1[t, e] > 0``), given as a list of tensors/arrays or one ``[layers, T, Ne]``
array, covering a token stream made of consecutive *segments* (documents or
evaluation windows) whose lengths are ``seg_lengths`` (default: one segment).

* TLS    = 1 - #active / #(layer, token, expert), pooled over all layers and
           all tokens (every token counts, including segment starts).
* CLS_L  : in each segment drop the first token (it has no same-segment
           predecessor), truncate the rest to a multiple of L, split into
           non-overlapping windows of L tokens and OR the masks inside each
           window; CLS_L = 1 - #active (layer, window, expert) /
           #(layer, window, expert), pooled over layers and segments.
           None when there is no full window.
* reuse  = mean over every (layer, segment, t) with |S_t| > 0 whose next token
           t+1 is in the same segment of |S_t ∩ S_{t+1}| / |S_t|, where S_t is
           the set of active experts of token t.  None when there is no pair.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

CLS_WINDOWS = (1, 2, 4, 8, 16, 32, 64)


def _as_array(masks) -> np.ndarray:
    if isinstance(masks, (list, tuple)):
        arrs = [_one(m) for m in masks]
        return np.stack(arrs, axis=0) if arrs else np.zeros((0, 0, 0), dtype=bool)
    a = _one(masks)
    if a.ndim == 2:
        a = a[None]
    return a


def _one(m) -> np.ndarray:
    if hasattr(m, "detach"):
        m = m.detach().cpu().numpy()
    return np.asarray(m).astype(bool)


def _segments(T: int, seg_lengths: Optional[Sequence[int]]) -> List[Tuple[int, int]]:
    if seg_lengths is None:
        seg_lengths = [T]
    if sum(seg_lengths) != T:
        raise ValueError(f"segment lengths sum to {sum(seg_lengths)}, masks have {T} tokens")
    out, s = [], 0
    for n in seg_lengths:
        out.append((s, s + int(n)))
        s += int(n)
    return out


def tls(masks) -> float:
    a = _as_array(masks)
    return 1.0 - float(a.sum()) / float(a.size)


def cls_counts(masks, L: int, seg_lengths: Optional[Sequence[int]] = None) -> Tuple[int, int]:
    """(#active (layer, window, expert), #(layer, window, expert))."""
    a = _as_array(masks)
    nl, T, ne = a.shape
    active = total = 0
    for s, e in _segments(T, seg_lengths):
        body = a[:, s + 1 : e]  # drop the segment's first token
        nw = body.shape[1] // L
        if nw == 0:
            continue
        win = body[:, : nw * L].reshape(nl, nw, L, ne).any(axis=2)
        active += int(win.sum())
        total += int(win.size)
    return active, total


def cls(masks, L: int, seg_lengths: Optional[Sequence[int]] = None) -> Optional[float]:
    active, total = cls_counts(masks, L, seg_lengths)
    if total == 0:
        return None
    return 1.0 - active / total


def reuse(masks, seg_lengths: Optional[Sequence[int]] = None) -> Optional[float]:
    a = _as_array(masks)
    nl, T, ne = a.shape
    ratios = []
    for s, e in _segments(T, seg_lengths):
        cur = a[:, s : e - 1]  # tokens with a successor in the segment
        nxt = a[:, s + 1 : e]
        n_cur = cur.sum(axis=2)
        both = (cur & nxt).sum(axis=2)
        ok = n_cur > 0
        ratios.append(both[ok] / n_cur[ok])
    if not ratios:
        return None
    r = np.concatenate(ratios)
    if r.size == 0:
        return None
    return float(r.mean())


def eval_sparsity(masks, seg_lengths: Optional[Sequence[int]] = None,
                  windows: Iterable[int] = CLS_WINDOWS) -> Dict[str, object]:
    """{"tls": x, "cls": {"1": x, ...}, "reuse": x} for one token stream."""
    return {
        "tls": tls(masks),
        "cls": {str(L): cls(masks, L, seg_lengths) for L in windows},
        "reuse": reuse(masks, seg_lengths),
    }
