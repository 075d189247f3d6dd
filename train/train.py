#!/usr/bin/env python3
"""Pre-train a BlockFFN (or Null / TopK / Dense baseline) model from pre-tokenized data.

Single process (GPU if there is one, else CPU):

    python3 train/train.py --config train/configs/demo_blockffn.json \\
        --data train/out/data --out train/out/runs/blockffn --tokenizer <tokenizer.json>

Several GPUs of one host (the same script; every rank packs the same global
batch and keeps its own rows, so the data order does not depend on the number
of GPUs; metrics are all-reduced; rank 0 writes logs, checkpoints and export):

    torchrun --standalone --nproc_per_node=2 train/train.py --config ... (same flags)

Resume from the last checkpoint in --out:  add ``--resume`` (``--stop-at N``
stops after step N with a checkpoint, e.g. to split a run).  ``--compile`` /
``--no-compile`` override the config's ``compile``; the demo configs compile
(about 70 s on a cold machine, then ~3x faster steps).

The JSON config has two sections: ``"model"`` (a Hugging Face style config dict
for ``blockffn_ref.BlockFFNForCausalLM``) and ``"train"`` (the keys of
``TRAIN_DEFAULTS`` below).  ``--set key=value`` overrides a train key (value
parsed as JSON when possible), ``--set model.key=value`` a model key.

Data (written by train/pretokenize.py): ``<data>/{train,valid}.bin`` (uint16 token
ids, every document stored as ``[BOS=1] + ids``), ``<data>/{train,valid}.idx.npy``
(int64 start offset of every document) and ``<data>/meta.json``.

Packing: every row holds ``seq_len`` tokens made of *segments*.  A segment is a
document or a piece of one (pieces after the first get a BOS of their own; no
segment is longer than seq_len), right-padded with id 0 to a multiple of the CS
chunk length, so the fixed CS chunks of a row never straddle two documents.
When a document does not fit in what is left of a row, the row is filled with
its first part (if at least ``min_piece`` tokens are left) and the rest starts
the next row.  The unused tail of a row is padding.  Position ids restart at 0
in every segment and attention is causal inside each segment only.  LM targets
are ignored at padding and across segment boundaries.

Outputs in --out: ``log.jsonl`` (one JSON object per log / validation line),
``ckpt/latest.pt`` (model, optimizer, schedulers, step, data position), and at
the end ``hf/`` (``checkpoint.save_hf`` layout + the tokenizer.json) and
``summary.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from blockffn_ref import count_parameters, save_hf  # noqa: E402
from blockffn_ref.losses import (  # noqa: E402
    activation_locality_loss,
    chunk_sparsification_loss,
    load_balancing_loss,
)
from blockffn_ref.metrics import cls_counts  # noqa: E402
from blockffn_ref.model import (  # noqa: E402
    BlockFFNForCausalLM,
    is_block_ffn,
    is_topk_router,
    normalize_config,
)
from blockffn_ref.schedule import AdaptiveLambda, wsd_lr  # noqa: E402

BOS, PAD, IGNORE = 1, 0, -100

TRAIN_DEFAULTS = {
    "seed": 1234,
    "seq_len": 1024,
    "batch_rows": 64,  # rows (of seq_len tokens) per optimizer step, over all ranks
    "micro_rows": 0,  # rows per rank per forward; 0 = batch_rows / world (no accumulation)
    "steps": 2000,
    "lr": 1e-2,  # peak base lr; matrices get lr / (hidden_size / dim_model_base)
    "warmup_frac": 0.01,
    "decay_frac": 0.2,
    "min_lr_ratio": 0.01,
    "decay_shape": "linear",
    "betas": [0.9, 0.95],
    "eps": 1e-8,
    "weight_decay": 0.1,
    "grad_clip": 1.0,
    "init_std": 0.1,
    "lambda_al": 0.0,
    "al_alpha": 100.0,
    "lambda_cs": 0.0,  # lambda0 of the adaptive CS scheduler
    "cs_chunk": 16,  # Lc (segments are padded to a multiple of it even when lambda_cs == 0)
    "cs_n_stable": 200,
    "cs_n_adjust": 50,
    "cs_gamma_min": 1.025,
    "cs_max_factor": 4.0,
    "aux_coef": 0.0,  # load-balancing aux loss (TopK baseline)
    "min_piece": 64,  # smallest document piece placed in the tail of a row
    "dtype": "bf16",  # autocast dtype: bf16 | fp32
    "attn_impl": "sdpa",  # sdpa | flex (GPU; falls back to sdpa on the CPU) | eager
    "compile": False,
    "log_every": 20,
    "val_every": 250,
    "val_rows": 64,
    "ckpt_every": 500,
    "metric_window": 8,  # CLS_L window reported in logs
}


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


class TokenData:
    """One split of the pre-tokenized data: documents as (start, end) offsets into a uint16 array."""

    def __init__(self, data_dir: str, split: str):
        self.tokens = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
        starts = np.load(os.path.join(data_dir, f"{split}.idx.npy")).astype(np.int64)
        n = len(self.tokens)
        if len(starts) and starts[-1] == n:  # tolerate a trailing end sentinel
            starts = starts[:-1]
        ends = np.append(starts[1:], n)
        keep = ends - starts >= 2  # a document needs at least BOS + one token
        self.starts, self.ends = starts[keep], ends[keep]
        if len(self.starts) == 0:
            raise ValueError(f"{data_dir}/{split}: no documents")

    def __len__(self):
        return len(self.starts)


class Packer:
    """Deterministic packer of documents into rows (see the module docstring).

    State (``state_dict``): epoch, position in the epoch's document order and
    token offset inside the current document, so a resumed run continues with
    exactly the rows it would have produced."""

    def __init__(self, data: TokenData, seq_len: int, chunk: int, seed: int, shuffle: bool = True,
                 min_piece: int = 64):
        if seq_len % chunk != 0:
            raise ValueError(f"seq_len {seq_len} must be a multiple of the CS chunk length {chunk}")
        self.data, self.T, self.chunk = data, int(seq_len), int(chunk)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.min_piece = max(int(min_piece), self.chunk)
        self.epoch, self.pos, self.off = 0, 0, 0
        self._order = self._make_order(0)

    def _make_order(self, epoch: int) -> np.ndarray:
        n = len(self.data)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "off": self.off}

    def load_state_dict(self, st: dict) -> None:
        self.epoch, self.pos, self.off = int(st["epoch"]), int(st["pos"]), int(st["off"])
        self._order = self._make_order(self.epoch)

    def _advance_doc(self):
        self.pos += 1
        self.off = 0
        if self.pos >= len(self._order):
            self.epoch += 1
            self.pos = 0
            self._order = self._make_order(self.epoch)

    def next_row(self):
        """(ids [T] int64, seg [T] int32, fill [T] bool); fill marks the row's unused tail."""
        T, C = self.T, self.chunk
        ids = np.zeros(T, dtype=np.int64)
        seg = np.zeros(T, dtype=np.int32)
        fill = np.zeros(T, dtype=bool)
        c, k = 0, 0
        toks = self.data.tokens
        while c < T:
            room = T - c
            d = self._order[self.pos]
            s, e = int(self.data.starts[d]), int(self.data.ends[d])
            cont = self.off > 0  # a continuation piece gets its own BOS
            left = (e - s - self.off) + (1 if cont else 0)
            if left > room and room < self.min_piece and c > 0:
                break  # too little room for a useful piece: close the row
            n = min(left, room)
            if cont:
                ids[c] = BOS
                ids[c + 1 : c + n] = toks[s + self.off : s + self.off + n - 1]
                self.off += n - 1
            else:
                ids[c : c + n] = toks[s : s + n]
                self.off += n
            plen = min(room, -(-n // C) * C)  # pad the segment to a multiple of the chunk length
            seg[c : c + plen] = k
            k += 1
            c += plen
            if s + self.off >= e:
                self._advance_doc()
        if c < T:
            seg[c:] = k
            fill[c:] = True
        return ids, seg, fill

    def next_raw(self, n: int):
        """The next n rows as stacked (ids, seg, fill)."""
        rows = [self.next_row() for _ in range(n)]
        return tuple(np.stack([r[i] for r in rows]) for i in range(3))

    def next_rows(self, n: int) -> Dict[str, np.ndarray]:
        return batch_arrays(*self.next_raw(n))


MODEL_INPUTS = ("ids", "pos", "seg", "targets", "token_mask", "prev_ok")


class Prefetcher:
    """Packs the next optimizer steps' rows in a background thread.

    Every rank walks the same global packer; it keeps only its own rows: for
    micro-step a of a step, rows (a*world + rank)*micro ... + micro.  Each item
    carries the packer state *after* its rows, so a checkpoint can record the
    position of the rows actually consumed (``state``)."""

    def __init__(self, packer: Packer, rows: int, micro: int, world: int, rank: int, accum: int,
                 pin: bool, depth: int = 3):
        import queue
        import threading

        self.packer, self.rows, self.micro, self.world, self.rank, self.accum = packer, rows, micro, world, rank, accum
        self.pin = pin
        self.state = packer.state_dict()
        self.q = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._err = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _make(self):
        ids, seg, fill = self.packer.next_raw(self.rows)
        micro_batches = []
        for a in range(self.accum):
            lo = (a * self.world + self.rank) * self.micro
            b = batch_arrays(ids[lo : lo + self.micro], seg[lo : lo + self.micro], fill[lo : lo + self.micro])
            t = {k: torch.from_numpy(np.ascontiguousarray(b[k])) for k in MODEL_INPUTS}
            if self.pin:
                t = {k: v.pin_memory() for k, v in t.items()}
            micro_batches.append(t)
        return micro_batches, self.packer.state_dict()

    def _run(self):
        import queue

        try:
            while not self._stop.is_set():
                item = self._make()
                while not self._stop.is_set():
                    try:
                        self.q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        pass
        except BaseException as e:  # surfaced in next()
            self._err = e
            self.q.put(None)

    def next(self):
        item = self.q.get()
        if item is None:
            raise RuntimeError("data prefetch failed") from self._err
        micro_batches, self.state = item
        return micro_batches

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)


def batch_arrays(ids: np.ndarray, seg: np.ndarray, fill: np.ndarray) -> Dict[str, np.ndarray]:
    """Model inputs and loss masks of packed rows [B, T]:

    * ``pos``       position ids restarting at 0 at every segment start
    * ``targets``   next token, or -100 where the next token is padding or in another segment
    * ``token_mask`` input token is not padding (id != 0)
    * ``prev_ok``   token t-1 is in the same (document) segment as token t (AL pairs)
    """
    B, T = ids.shape
    same_next = np.zeros((B, T), dtype=bool)
    same_next[:, :-1] = seg[:, 1:] == seg[:, :-1]
    targets = np.full((B, T), IGNORE, dtype=np.int64)
    ok = same_next.copy()
    ok[:, :-1] &= ids[:, 1:] != PAD
    targets[:, :-1] = np.where(ok[:, :-1], ids[:, 1:], IGNORE)
    prev_ok = np.zeros((B, T), dtype=bool)
    prev_ok[:, 1:] = same_next[:, :-1] & ~fill[:, 1:]
    ar = np.broadcast_to(np.arange(T), (B, T))
    start = np.ones((B, T), dtype=bool)
    start[:, 1:] = seg[:, 1:] != seg[:, :-1]
    first = np.maximum.accumulate(np.where(start, ar, 0), axis=1)
    return {"ids": ids, "seg": seg, "fill": fill, "pos": (ar - first).astype(np.int64), "targets": targets,
            "token_mask": ids != PAD, "prev_ok": prev_ok}


def to_device(b: Dict[str, np.ndarray], device) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in b.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        if device.type == "cuda":
            t = t.pin_memory().to(device, non_blocking=True)
        out[k] = t
    return out


def segment_lengths_without_padding(ids: np.ndarray, seg: np.ndarray, fill: np.ndarray):
    """Per row: the real-token segment lengths (padding dropped), for the CLS metric."""
    res = []
    for b in range(ids.shape[0]):
        real = (ids[b] != PAD) & ~fill[b]
        s = seg[b][real]
        if s.size == 0:
            res.append([])
            continue
        cut = np.flatnonzero(np.diff(s)) + 1
        res.append(np.diff(np.concatenate([[0], cut, [s.size]])).tolist())
    return res


# ---------------------------------------------------------------------------
# model + objective
# ---------------------------------------------------------------------------


class TrainModule(nn.Module):
    """Forward pass + every loss term of one micro-batch (one module so that
    DDP and torch.compile see all of it)."""

    def __init__(self, model: BlockFFNForCausalLM, tcfg: dict):
        super().__init__()
        self.model = model
        c = model.config
        self.block = is_block_ffn(c)
        self.topk = is_topk_router(c)
        self.relu_router = self.block and not self.topk
        self.chunk = int(tcfg["cs_chunk"])
        self.alpha = float(tcfg["al_alpha"])
        self.window = int(tcfg["metric_window"])
        self.use_al = self.relu_router and float(tcfg["lambda_al"]) > 0
        self.use_cs = self.relu_router and float(tcfg["lambda_cs"]) > 0
        self.use_aux = self.topk and float(tcfg["aux_coef"]) > 0

    def forward(self, ids, pos, seg, targets, token_mask, prev_ok, lam_al, lam_cs, aux_coef):
        out = self.model(ids, position_ids=pos, segment_ids=seg)
        V = out.logits.shape[-1]
        lm = F.cross_entropy(out.logits.float().view(-1, V), targets.view(-1), ignore_index=IGNORE)
        total = lm
        zero = lm.new_zeros(())
        al = cs = aux = zero
        routers = out.routers
        if self.relu_router:
            with contextlib.nullcontext() if self.use_al else torch.no_grad():
                al = activation_locality_loss(routers, prev_ok, self.alpha)
            with contextlib.nullcontext() if self.use_cs else torch.no_grad():
                cs = chunk_sparsification_loss(routers, token_mask, self.chunk)
            if self.use_al:
                total = total + lam_al * al
            if self.use_cs:
                total = total + lam_cs * cs
        if self.topk:
            with contextlib.nullcontext() if self.use_aux else torch.no_grad():
                aux = load_balancing_loss(routers, token_mask)
            if self.use_aux:
                total = total + aux_coef * aux
        stats = {"lm": lm.detach(), "al": al.detach(), "cs": cs.detach(), "aux": aux.detach()}
        if self.block:
            with torch.no_grad():
                stats.update(self._sparsity(routers, token_mask))
        return total, stats

    def _sparsity(self, routers, token_mask):
        """Counts for TLS (non-padding tokens) and a grid CLS_w: windows of w tokens
        on the packed row (aligned to segment starts when w divides the chunk
        length), OR over their non-padding tokens, windows without one skipped."""
        m = token_mask
        act = torch.stack([r.active_mask() for r in routers]) & m[None, :, :, None]  # [L,B,T,Ne]
        L, B, T, Ne = act.shape
        n_tok = m.sum()
        w = self.window
        Tw = T // w * w
        win = act[:, :, :Tw].reshape(L, B, Tw // w, w, Ne).any(dim=3)  # [L,B,nw,Ne]
        win_ok = m[:, :Tw].reshape(B, Tw // w, w).any(dim=2)  # [B,nw]
        return {
            "act": act.sum().float(),
            "act_total": (n_tok * L * Ne).float(),
            "win_act": win.sum().float(),
            "win_total": (win_ok.sum() * L * Ne).float(),
        }


def param_groups(model: BlockFFNForCausalLM, weight_decay: float):
    """muP groups: matrices (attention, experts, router) and the router-norm weight
    get lr / (hidden / dim_model_base); embeddings, LM head and norms the base lr.
    Weight decay on every matrix and the embeddings / LM head, not on 1-D gains."""
    c = model.config
    width = c["hidden_size"] / c["dim_model_base"]
    groups = {
        "matrix": {"params": [], "lr_scale": 1.0 / width, "weight_decay": weight_decay},
        "router_norm": {"params": [], "lr_scale": 1.0 / width, "weight_decay": 0.0},
        "embedding": {"params": [], "lr_scale": 1.0, "weight_decay": weight_decay},
        "norm": {"params": [], "lr_scale": 1.0, "weight_decay": 0.0},
    }
    for name, p in model.named_parameters():
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            g = "embedding"
        elif name.endswith("mlp.router_norm.weight"):
            g = "router_norm"
        elif p.dim() >= 2:
            g = "matrix"
        else:
            g = "norm"
        groups[g]["params"].append(p)
    out = []
    for k, g in groups.items():
        if g["params"]:
            g["name"] = k
            out.append(g)
    return out


def param_report(model_cfg: dict) -> dict:
    """Parameter counts of a config (built on the meta device)."""
    with torch.device("meta"):
        m = BlockFFNForCausalLM(model_cfg)
    layer = m.model.layers[0]
    attn = sum(p.numel() for p in layer.self_attn.parameters())
    ffn = sum(p.numel() for p in layer.mlp.parameters())
    total = count_parameters(m, non_embedding=False)
    return {
        "total": total,
        "non_embedding": count_parameters(m),
        "attention_per_layer": attn,
        "ffn_per_layer": ffn,
        "ffn_over_attention": ffn / attn,
        "f16_bytes": 2 * total,
    }


# ---------------------------------------------------------------------------
# distributed helpers
# ---------------------------------------------------------------------------


class Dist:
    def __init__(self, device_arg: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and device_arg != "cpu"
        if device_arg not in ("auto", "cpu", "cuda"):
            raise ValueError("--device must be auto, cpu or cuda")
        if use_cuda:
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if self.world > 1:
            import torch.distributed as dist

            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        self.master = self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def barrier(self):
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self):
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------


def _parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def load_config(path: str, sets) -> dict:
    with open(path) as f:
        cfg = json.load(f)
    unknown = set(cfg) - {"model", "train", "comment"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}")
    model = dict(cfg["model"])
    tr = dict(TRAIN_DEFAULTS)
    for k, v in cfg.get("train", {}).items():
        if k not in TRAIN_DEFAULTS:
            raise ValueError(f"{path}: unknown train key {k!r}")
        tr[k] = v
    for s in sets or []:
        k, _, v = s.partition("=")
        if k.startswith("model."):
            model[k[len("model."):]] = _parse_value(v)
        elif k in TRAIN_DEFAULTS:
            tr[k] = _parse_value(v)
        else:
            raise ValueError(f"--set: unknown key {k!r}")
    return {"model": model, "train": tr}


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


def log_line(path: Optional[str], rec: dict, echo: bool = True):
    if echo:
        parts = []
        for k, v in rec.items():
            if isinstance(v, float):
                parts.append(f"{k}={v:.4g}")
            else:
                parts.append(f"{k}={v}")
        print(" ".join(parts), flush=True)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")


def save_checkpoint(path: str, state: dict):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def validate(tm: TrainModule, val: Dict[str, np.ndarray], dist_: Dist, autocast, micro_rows: int,
             window: int) -> dict:
    """Validation LM loss (token-weighted over all ranks) and, for block FFNs,
    TLS and CLS_w with the metric definitions of ``blockffn_ref.metrics`` on the
    non-padding token stream (segments as packed)."""
    model = tm.model
    was_training = model.training
    model.eval()
    rows = np.arange(dist_.rank, val["ids"].shape[0], dist_.world)
    nll = torch.zeros((), dtype=torch.float64, device=dist_.device)
    cnt = torch.zeros((), dtype=torch.float64, device=dist_.device)
    sp = torch.zeros(4, dtype=torch.float64, device=dist_.device)  # act, total, win_act, win_total
    for i in range(0, len(rows), micro_rows):
        sel = rows[i : i + micro_rows]
        b = {k: v[sel] for k, v in val.items()}
        t = to_device(b, dist_.device)
        with autocast():
            out = model(t["ids"], position_ids=t["pos"], segment_ids=t["seg"])
        V = out.logits.shape[-1]
        tg = t["targets"].view(-1)
        nll += F.cross_entropy(out.logits.float().view(-1, V), tg, ignore_index=IGNORE, reduction="sum").double()
        cnt += (tg != IGNORE).sum().double()
        if tm.block:
            masks = torch.stack([r.active_mask() for r in out.routers]).cpu().numpy()  # [L,B,T,Ne]
            segl = segment_lengths_without_padding(b["ids"], b["seg"], b["fill"])
            for j in range(len(sel)):
                real = (b["ids"][j] != PAD) & ~b["fill"][j]
                m = masks[:, j, real]  # [L, n, Ne]
                sp[0] += float(m.sum())
                sp[1] += float(m.size)
                a, tot = cls_counts(m, window, segl[j])
                sp[2] += a
                sp[3] += tot
    dist_.all_reduce_sum(nll)
    dist_.all_reduce_sum(cnt)
    dist_.all_reduce_sum(sp)
    model.train(was_training)
    loss = float(nll / cnt.clamp(min=1))
    res = {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "val_tokens": int(cnt)}
    if tm.block:
        res["val_tls"] = 1.0 - float(sp[0] / sp[1].clamp(min=1))
        res[f"val_cls{window}"] = 1.0 - float(sp[2] / sp[3].clamp(min=1))
    return res


def export_hf(model: BlockFFNForCausalLM, model_cfg: dict, out_dir: str, tokenizer: Optional[str]):
    """checkpoint.save_hf + the tokenizer."""
    save_hf(model, model_cfg, out_dir)
    if tokenizer:
        shutil.copyfile(tokenizer, os.path.join(out_dir, "tokenizer.json"))


def train(args) -> dict:
    cfg = load_config(args.config, args.set)
    tcfg, mcfg = cfg["train"], cfg["model"]
    if args.steps is not None:
        tcfg["steps"] = args.steps
    if args.compile:
        tcfg["compile"] = True
    if args.no_compile:
        tcfg["compile"] = False
    dist_ = Dist(args.device)
    dev = dist_.device
    if dev.type != "cuda" and tcfg["attn_impl"] == "flex":
        tcfg["attn_impl"] = "sdpa"  # flex_attention is compiled for the GPU; same maths
        if dist_.master:
            print("note: attn_impl flex -> sdpa on the CPU")
    if dev.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    out_dir = args.out
    ckpt_path = os.path.join(out_dir, "ckpt", "latest.pt")
    log_path = os.path.join(out_dir, "log.jsonl") if dist_.master else None

    # data ------------------------------------------------------------------
    with open(os.path.join(args.data, "meta.json")) as f:
        meta = json.load(f)
    if mcfg.get("vocab_size") is None:
        mcfg["vocab_size"] = int(meta["vocab_size"])
    if int(meta["vocab_size"]) > int(mcfg["vocab_size"]):
        raise ValueError(f"data vocab {meta['vocab_size']} exceeds the model's {mcfg['vocab_size']}")
    T, C = int(tcfg["seq_len"]), int(tcfg["cs_chunk"])
    world = dist_.world
    rows = int(tcfg["batch_rows"])
    micro = int(tcfg["micro_rows"]) or rows // world
    if rows % (world * micro) != 0:
        raise ValueError(f"batch_rows {rows} must be a multiple of world {world} x micro_rows {micro}")
    accum = rows // (world * micro)
    train_data = TokenData(args.data, "train")
    packer = Packer(train_data, T, C, tcfg["seed"], shuffle=True, min_piece=tcfg["min_piece"])
    val = None
    if int(tcfg["val_rows"]) > 0 and os.path.exists(os.path.join(args.data, "valid.bin")):
        vp = Packer(TokenData(args.data, "valid"), T, C, tcfg["seed"], shuffle=False, min_piece=tcfg["min_piece"])
        val = vp.next_rows(int(tcfg["val_rows"]))

    # model -----------------------------------------------------------------
    torch.manual_seed(int(tcfg["seed"]))
    normalize_config(mcfg)  # fail early on a bad config
    model = BlockFFNForCausalLM(mcfg, attn_impl=tcfg["attn_impl"])
    model.init_weights(init_std=float(tcfg["init_std"]), generator=torch.Generator().manual_seed(int(tcfg["seed"])))
    model.to(dev)
    tm = TrainModule(model, tcfg)
    groups = param_groups(model, float(tcfg["weight_decay"]))
    opt_kw = dict(lr=float(tcfg["lr"]), betas=tuple(tcfg["betas"]), eps=float(tcfg["eps"]))
    if dev.type == "cuda":
        opt_kw["fused"] = True
    opt = torch.optim.AdamW(groups, **opt_kw)
    lam = AdaptiveLambda(float(tcfg["lambda_cs"]), int(tcfg["cs_n_stable"]), int(tcfg["cs_n_adjust"]),
                         float(tcfg["cs_gamma_min"]), float(tcfg["cs_max_factor"]))
    step = 0
    if args.resume:
        path = ckpt_path if args.resume == "auto" else args.resume
        if os.path.exists(path):
            st = torch.load(path, map_location="cpu", weights_only=False)
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            lam.load_state_dict(st["lambda_cs"])
            packer.load_state_dict(st["data"])
            step = int(st["step"])
            if st["train"]["steps"] != tcfg["steps"] and dist_.master:
                print(f"note: resuming a {st['train']['steps']}-step run with steps={tcfg['steps']}")
            if dist_.master:
                print(f"resumed from {path} at step {step}")
        elif args.resume != "auto":
            raise FileNotFoundError(path)
        elif dist_.master:
            print(f"no checkpoint at {path}: starting from scratch")

    ddp_tm = tm
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_tm = DDP(tm, device_ids=[dist_.local_rank] if dev.type == "cuda" else None)
    run_tm = torch.compile(ddp_tm) if tcfg["compile"] else ddp_tm

    amp_dtype = {"bf16": torch.bfloat16, "fp32": None}[tcfg["dtype"]]

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=dev.type, dtype=amp_dtype)

    preport = param_report(mcfg)
    if dist_.master:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        log_line(log_path, {"event": "start", "step": step, "world": world, "micro_rows": micro, "accum": accum,
                            "device": str(dev), "params": preport, "train_docs": len(train_data),
                            "tokens_per_step": rows * T})

    # training loop ---------------------------------------------------------
    steps = int(tcfg["steps"])
    lam_al_t = torch.tensor(float(tcfg["lambda_al"]), device=dev)
    aux_t = torch.tensor(float(tcfg["aux_coef"]), device=dev)
    lam_cs_t = torch.zeros((), device=dev)
    keys = ["lm", "al", "cs", "aux", "act", "act_total", "win_act", "win_total"]
    acc = torch.zeros(len(keys) + 1, dtype=torch.float64, device=dev)  # + grad norm
    acc_steps = 0
    pending_cs = []  # (step, tensor) awaiting the scheduler
    t_last = time.time()
    tok_last = 0
    w = int(tcfg["metric_window"])
    model.train()

    def flush_cs():
        if not pending_cs:
            return
        vals = torch.stack([v for _, v in pending_cs]).double()
        dist_.all_reduce_sum(vals)
        vals = (vals / world).tolist()
        for (s, _), v in zip(pending_cs, vals):
            lam.observe(s, v)
        pending_cs.clear()

    def checkpoint():
        flush_cs()
        if dist_.master:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "lambda_cs": lam.state_dict(),
                "data": prefetch.state, "step": step, "train": tcfg, "model_config": mcfg,
            })
        dist_.barrier()

    stop = min(steps, args.stop_at) if args.stop_at else steps
    prefetch = Prefetcher(packer, rows, micro, world, dist_.rank, accum, pin=dev.type == "cuda")
    while step < stop:
        s = step + 1
        lr = wsd_lr(s, steps, float(tcfg["lr"]), float(tcfg["warmup_frac"]), float(tcfg["decay_frac"]),
                    float(tcfg["min_lr_ratio"]), tcfg["decay_shape"])
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        lam_cs = lam.value(s)
        lam_cs_t.fill_(lam_cs)  # in place: no host-device sync
        micro_batches = prefetch.next()
        stat_sum = None
        for a in range(accum):
            mb = {k: v.to(dev, non_blocking=True) for k, v in micro_batches[a].items()}
            sync = a == accum - 1
            ctx = contextlib.nullcontext() if (sync or world == 1) else ddp_tm.no_sync()
            with ctx:
                with autocast():
                    loss, stats = run_tm(mb["ids"], mb["pos"], mb["seg"], mb["targets"], mb["token_mask"],
                                         mb["prev_ok"], lam_al_t, lam_cs_t, aux_t)
                (loss / accum).backward()
            vec = torch.stack([stats.get(k, torch.zeros((), device=dev)).double() for k in keys])
            stat_sum = vec if stat_sum is None else stat_sum + vec
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), float(tcfg["grad_clip"]))
        opt.step()
        opt.zero_grad(set_to_none=True)
        step = s
        stat_mean = stat_sum.clone()
        stat_mean[:4] /= accum  # loss terms: mean over micro-batches; counts stay sums
        acc += torch.cat([stat_mean, gn.detach().double().view(1)])
        acc_steps += 1
        pending_cs.append((s, stat_mean[2].clone()))
        if s % lam.n_adjust == 0:
            flush_cs()

        if s % int(tcfg["log_every"]) == 0 or s == steps:
            v = dist_.all_reduce_sum(acc.clone())
            v[:4] /= world
            v[-1] /= world
            v = v.tolist()
            now = time.time()
            rec = {"step": s, "lr": lr, "lambda_cs": lam_cs}
            rec["lm_loss"] = v[0] / acc_steps
            if tm.relu_router:
                rec["al"] = v[1] / acc_steps
                rec["cs"] = v[2] / acc_steps
            if tm.topk:
                rec["aux"] = v[3] / acc_steps
            if tm.block:
                rec["tls"] = 1.0 - v[4] / max(v[5], 1.0)
                rec[f"cls{w}"] = 1.0 - v[6] / max(v[7], 1.0)
            rec["grad_norm"] = v[8] / acc_steps
            ntok = (s - tok_last) * rows * T
            rec["tok_per_s"] = ntok / max(now - t_last, 1e-9)
            rec["elapsed_s"] = now - args._t0
            if dist_.master:
                log_line(log_path, rec)
            acc.zero_()
            acc_steps = 0
            t_last, tok_last = now, s
        if val is not None and (s % int(tcfg["val_every"]) == 0 or s == steps):
            rec = {"step": s, **validate(tm, val, dist_, autocast, micro, w)}
            if dist_.master:
                log_line(log_path, rec)
            t_last = time.time()  # do not count validation time in tokens/s
        if s % int(tcfg["ckpt_every"]) == 0 or s == stop:
            checkpoint()
            t_last = time.time()

    prefetch.close()

    # export ----------------------------------------------------------------
    summary = {"steps": step, "params": preport}
    if step < steps:  # stopped early (--stop-at): the checkpoint is written, no export
        if dist_.master:
            log_line(log_path, {"event": "stopped", "step": step, "elapsed_s": time.time() - args._t0})
        dist_.close()
        return summary
    if dist_.master:
        hf_dir = os.path.join(out_dir, "hf")
        export_hf(model, mcfg, hf_dir, args.tokenizer)
        summary["hf_dir"] = hf_dir
        summary["lambda_cs_history"] = lam.history
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        done = {"event": "done", "step": step, "hf_dir": hf_dir, "elapsed_s": time.time() - args._t0}
        if dev.type == "cuda":
            done["max_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        log_line(log_path, done)
    dist_.barrier()
    dist_.close()
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="JSON config (train/configs/*.json)")
    ap.add_argument("--data", required=True, help="pre-tokenized data dir (train.bin, train.idx.npy, meta.json, ...)")
    ap.add_argument("--out", required=True, help="output dir (log.jsonl, ckpt/, hf/)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer.json copied into the HF export")
    ap.add_argument("--resume", nargs="?", const="auto", default=None,
                    help="continue from OUT/ckpt/latest.pt (or the given checkpoint file)")
    ap.add_argument("--steps", type=int, default=None, help="override train.steps")
    ap.add_argument("--stop-at", type=int, default=None,
                    help="stop after this step (checkpoint written, no export); continue later with --resume")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training step (train.compile)")
    ap.add_argument("--no-compile", action="store_true", help="do not torch.compile, whatever the config says")
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a train key, or model.KEY for a model key (repeatable)")
    args = ap.parse_args(argv)
    args._t0 = time.time()
    return train(args)


if __name__ == "__main__":
    main()
