"""A model trained by train.py, exported in the released layout, converted by the Rust CLI and run
by the Rust engine gives the PyTorch reference's logits and active expert sets.

Needs the `blockffn` binary: set BLOCKFFN_BIN (scripts/test.sh does, after the Rust tests built it);
without it the test is skipped, with it a missing binary is a failure.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.dirname(HERE)
sys.path.insert(0, TRAIN)
sys.path.insert(0, HERE)

from blockffn_ref import load_hf  # noqa: E402
from test_train import _run, write_dataset  # noqa: E402

BIN = os.environ.get("BLOCKFFN_BIN")


@pytest.mark.skipif(not BIN, reason="BLOCKFFN_BIN not set (scripts/test.sh sets it)")
@pytest.mark.parametrize("kind", ["blockffn", "topk"])
def test_trained_export_converts_and_rust_matches_reference(tmp_path, kind):
    assert os.path.exists(BIN), f"BLOCKFFN_BIN={BIN} does not exist"
    data = str(tmp_path / "data")
    write_dataset(data, n_train=60, n_valid=8)
    out = str(tmp_path / "run")
    extra = ["--steps", "6"]
    if kind == "topk":
        for s in ["model.router_act=softmax", "model.moe_top_k=2", "model.norm_after_router=none",
                  "aux_coef=1e-4", "lambda_al=0", "lambda_cs=0"]:
            extra += ["--set", s]
    _run(data, out, *extra)
    hf = os.path.join(out, "hf")
    rt = str(tmp_path / "rt")
    subprocess.run([BIN, "convert", hf, rt], check=True, capture_output=True)

    ids = [1, 5, 9, 17, 3, 42, 7, 7, 30, 2, 11, 60]
    r = subprocess.run([BIN, "logits", "--model", rt, "--ids", ",".join(map(str, ids)), "--experts"],
                       check=True, capture_output=True, text=True)
    got = json.loads(r.stdout)

    model, _ = load_hf(hf, dtype=torch.float32, attn_impl="eager")
    with torch.no_grad():
        ref = model(torch.tensor([ids]))
    want = ref.logits[0]
    diff = (torch.tensor(got["logits"]) - want).abs().max().item()
    assert diff < 1e-4, f"Rust logits differ from the reference by {diff}"
    for layer, ro in enumerate(ref.routers):
        mask = ro.active_mask()[0]
        sets = [torch.nonzero(mask[t]).flatten().tolist() for t in range(len(ids))]
        assert got["active_experts"][layer] == sets, f"layer {layer} active sets differ"
