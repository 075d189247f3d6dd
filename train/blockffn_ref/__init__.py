"""PyTorch reference implementation of the BlockFFN model family.

This package is the numerical ground truth for the Rust/WASM engine: the
golden fixtures under ``tests/fixtures/`` are produced with it (see
``train/make_fixtures.py``), and the training code builds on it.

Modules
-------
model       the model (MiniCPM base with muP scales, MLA / vanilla attention,
            BlockFFN / dense FFN), configured by a Hugging Face style dict.
checkpoint  ``save_hf`` / ``load_hf`` for the released checkpoint layout
            (``config.json`` + bf16 ``pytorch_model.bin``).
metrics     token-level sparsity (TLS), chunk-level sparsity (CLS_L) and the
            expert reuse ratio.
"""

from .model import (
    BlockFFNForCausalLM,
    ForwardOutput,
    RouterOutput,
    normalize_config,
    count_parameters,
)
from .checkpoint import save_hf, load_hf, hf_config_dict
from .metrics import tls, cls, cls_counts, reuse, eval_sparsity

__all__ = [
    "BlockFFNForCausalLM",
    "ForwardOutput",
    "RouterOutput",
    "normalize_config",
    "count_parameters",
    "save_hf",
    "load_hf",
    "hf_config_dict",
    "tls",
    "cls",
    "cls_counts",
    "reuse",
    "eval_sparsity",
]
