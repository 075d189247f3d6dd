"""bench/torch_decode.py's KV-cached decode is the reference's forward; bench/make_small_random.py's
hand-written safetensors, tokenizer.json and 16-bit storage are what they claim; the XLarge shape
has SPEC §5's parameter count. Tiny shapes, CPU, a few seconds.
"""
import json
import os
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench"))

import make_small_random as msr  # noqa: E402
import torch_decode as td  # noqa: E402
from blockffn_ref import BlockFFNForCausalLM, count_parameters  # noqa: E402

torch.set_num_threads(1)
TINY = td.TINY


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_cached_decode_is_the_reference_forward(impl):
    model = td.build_model(TINY, "cpu", torch.float32, 0)
    ids = torch.randint(3, TINY["vocab_size"], (1, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(ids).logits
        cache = td.StaticCache(model, 20, torch.float32, "cpu")
        got = torch.cat([td.forward_cached(model, ids[:, :13], 0, cache, impl),  # prefill
                         td.forward_cached(model, ids[:, 13:19], 13, cache, impl),
                         td.forward_cached(model, ids[:, 19:], 19, cache, impl)], dim=1)  # one decode step
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), float((got - want).abs().max())


def test_shapes_have_spec_parameter_counts():
    for shape, non_emb, total in [("small", 119_383_552, 307_932_160), ("xlarge", 1_187_830_952, 1_627_777_704)]:
        with torch.device("meta"):
            m = BlockFFNForCausalLM(td.SHAPES[shape])
        assert (count_parameters(m), count_parameters(m, non_embedding=False)) == (non_emb, total), shape


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_hand_written_safetensors(tmp_path, dtype):
    st = pytest.importorskip("safetensors.torch")
    model = BlockFFNForCausalLM(TINY).eval()
    model.init_weights(generator=torch.Generator().manual_seed(0))
    msr.write_hf(model, TINY, str(tmp_path), dtype)
    got = st.load_file(str(tmp_path / "model.safetensors"))
    want = {k: v.to(msr.STORAGE[dtype][0] or torch.float32) for k, v in model.state_dict().items()}
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k


def test_tokenizer_json_without_the_package(tmp_path):
    pytest.importorskip("tokenizers")
    msr.write_tokenizer(40, str(tmp_path / "tokenizer.json"))
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == msr.tokenizer_json(40)


def test_f16_storage_calibrates_the_stored_weights():
    calib = msr.random_ids(64, TINY["vocab_size"], 1)
    model, report = msr.build(TINY, 0.2, 0, calib, storage=torch.float16)
    for name, p in model.named_parameters():
        assert torch.equal(p, p.half().float()), name
    for layer in report["layers"]:  # measured after the router column was rounded
        assert layer["activeFraction"] == pytest.approx(0.2, abs=0.01)
