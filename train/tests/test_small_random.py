"""bench/make_small_random.py's calibration hits its target activation on held-out tokens (a tiny
shape, so it runs in a few seconds); with BLOCKFFN_BIN set, the Rust engine measures the same TLS
on the converted model through the word-level tokenizer.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench"))

import make_small_random as msr  # noqa: E402

torch.set_num_threads(1)

TINY = dict(msr.SMALL, vocab_size=512, hidden_size=64, num_hidden_layers=3, num_attention_heads=2,
            num_key_value_heads=2, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8,
            v_head_dim=16, num_experts=16, expert_size=8, intermediate_size=128, max_position_embeddings=512)


def _tiny(target):
    calib = msr.random_ids(64, TINY["vocab_size"], 1)
    held_out = msr.random_ids(256, TINY["vocab_size"], 2, exclude=calib)
    model, report = msr.build(TINY, target, 0, calib)
    return model, report, held_out


@pytest.mark.parametrize("target", [0.2, 0.1])
def test_calibration_hits_the_target(target):
    model, report, held_out = _tiny(target)
    k = round(target * 64 * TINY["num_experts"])
    for layer in report["layers"]:  # exact on the calibration tokens
        assert layer["activeFraction"] == pytest.approx(k / (64 * TINY["num_experts"]), abs=1e-9)
        assert layer["x0RelStd"] < 0.1  # x[0] is near-constant (0.024 at Small)
    assert report["residualDrift"] < 0.1  # the embedding dominates the residual stream
    m = msr.measure(model, held_out)
    assert 1 - m["tls"] == pytest.approx(target, abs=0.03), m
    # a few popular experts, most rare: far above the 8-token chunk sparsity of equal experts
    assert m["cls8"] > (1 - target) ** 8 + 0.25, m


BIN = os.environ.get("BLOCKFFN_BIN")


@pytest.mark.skipif(not BIN, reason="BLOCKFFN_BIN not set (scripts/test.sh sets it)")
def test_engine_measures_the_reference_sparsity(tmp_path):
    model, _, held_out = _tiny(0.2)
    want = msr.measure(model, held_out)
    hf, rt = str(tmp_path / "hf"), str(tmp_path / "rt")
    msr.write_hf(model, TINY, hf)
    subprocess.run([BIN, "convert", hf, rt], check=True, capture_output=True)
    text = tmp_path / "eval.txt"
    text.write_text(msr.ids_text(held_out))
    got = msr.cli_eval(BIN, rt, str(text))
    assert got["tokens"] == len(held_out) - 1
    assert got["tls"] == pytest.approx(want["tls"], abs=2e-3)
    assert got["cls8"] == pytest.approx(want["cls8"], abs=5e-3)
    r = subprocess.run([BIN, "logits", "--model", rt, "--ids", "1,5,300", "--experts"], check=True,
                       capture_output=True, text=True)
    assert len(json.loads(r.stdout)["logits"]) == 3
