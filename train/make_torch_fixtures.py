#!/usr/bin/env python3
"""Write the small PyTorch checkpoint fixtures used by `src/convert/torch_bin.rs` tests.

Outputs (in tests/fixtures/torch/, all tiny):
  state.bin      torch.save of an OrderedDict exercising the cases the reader must handle
  expected.json  names, dtypes, shapes, values (as floats) and raw little-endian bytes (hex)
  evil.bin       a torch-zip-shaped file whose data.pkl calls os.system via GLOBAL + REDUCE;
                 the reader must refuse it (UnsafePickle) without executing anything.

Values are small dyadic rationals, so they are exact in bf16/f16/f32 and print exactly in JSON.
Run:  python3 train/make_torch_fixtures.py
"""
import collections
import io
import json
import os
import pickle
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "torch")

DTYPE_NAMES = {
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def dyadic(n, dtype, scale=8.0, offset=0):
    """n values (k - offset) / scale: exact in every float dtype used here."""
    return ((torch.arange(n, dtype=torch.float64) - offset) / scale).to(dtype)


def build_state():
    sd = collections.OrderedDict()
    # A plain bf16 matrix.
    sd["model.embed.weight"] = dyadic(12, torch.bfloat16, offset=5).reshape(3, 4)
    # f32 vector.
    sd["model.norm.weight"] = dyadic(5, torch.float32, scale=4.0, offset=2)
    # f16 matrix.
    sd["f16.weight"] = dyadic(6, torch.float16, scale=16.0, offset=3).reshape(2, 3)
    # An nn.Parameter (pickled via torch._utils._rebuild_parameter).
    sd["param"] = torch.nn.Parameter(dyadic(4, torch.bfloat16, offset=1).reshape(2, 2))
    # A Parameter carrying extra Python state (pickled via _rebuild_parameter_with_state).
    p = torch.nn.Parameter(dyadic(3, torch.float32, scale=2.0), requires_grad=False)
    p.note = "extra"
    sd["param_with_state"] = p
    # Non-contiguous: a transposed view (stride (1, 4)).
    base = dyadic(12, torch.bfloat16, offset=6).reshape(3, 4)
    sd["transposed"] = base.t()
    # A 1-D slice with nonzero storage offset (whole base storage is saved).
    vec = dyadic(10, torch.float32, scale=2.0)
    sd["slice_offset"] = vec[3:7]
    # A 2-D column slice: nonzero offset and non-contiguous.
    mat = dyadic(20, torch.bfloat16, offset=10).reshape(4, 5)
    sd["col_slice"] = mat[1:, 1:3]
    # Two names sharing one storage: the same tensor object twice (pickle memo) and a
    # different tensor object over the same storage (tied weights as in state_dict()).
    tied = dyadic(8, torch.bfloat16, offset=4).reshape(2, 4)
    sd["tied.a"] = tied
    sd["tied.b"] = tied
    sd["tied.c"] = tied.detach()
    # Another view into the tied storage: its second row.
    sd["tied.row1"] = tied[1]
    # Integer, bool, 0-d and empty tensors.
    sd["i64"] = torch.tensor([-3, 0, 7, 1 << 40], dtype=torch.int64)
    sd["mask"] = torch.tensor([True, False, True], dtype=torch.bool)
    sd["scalar"] = torch.tensor(2.5, dtype=torch.float32)
    sd["empty"] = torch.zeros(0, 3, dtype=torch.bfloat16)
    # state_dict() attaches _metadata, which pickles as BUILD on the OrderedDict.
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("model", {"version": 2})])
    return sd


def expected_entry(name, t):
    c = t.detach().contiguous()
    # Little-endian element bytes, row-major (bool is one byte per element, 0/1).
    raw = c.reshape(-1).view(torch.uint8).numpy().tobytes()
    return {
        "name": name,
        "dtype": DTYPE_NAMES[c.dtype],
        "shape": list(c.shape),
        "values": [float(v) for v in c.to(torch.float64).flatten().tolist()],
        "data_hex": raw.hex(),
    }


def evil_pickle():
    # Hand-assembled protocol-2 pickle: {'model.weight': os.system('echo pwned > /tmp/pwned')}
    # It is never loaded here; we only write its bytes.
    cmd = b"echo pwned > /tmp/blockffn_pwned"
    out = bytearray()
    out += b"\x80\x02"                       # PROTO 2
    out += b"}q\x00"                         # EMPTY_DICT, BINPUT 0
    out += b"X" + len(b"model.weight").to_bytes(4, "little") + b"model.weight"
    out += b"cos\nsystem\nq\x01"             # GLOBAL 'os system', BINPUT 1
    out += b"X" + len(cmd).to_bytes(4, "little") + cmd
    out += b"\x85R"                          # TUPLE1, REDUCE  -> os.system(cmd)
    out += b"s."                             # SETITEM, STOP
    return bytes(out)


def write_zip(path, prefix, pickled):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", pickled)
        z.writestr(f"{prefix}/byteorder", "little")
        z.writestr(f"{prefix}/version", "3\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    sd = build_state()
    torch.save(sd, os.path.join(OUT, "state.bin"))
    expected = [expected_entry(k, v) for k, v in sd.items()]
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"tensors": expected}, f, indent=1)
        f.write("\n")
    # Sanity: torch itself reads the file back (weights_only is the safe loader).
    back = torch.load(os.path.join(OUT, "state.bin"), weights_only=True)
    assert list(back.keys()) == list(sd.keys())
    for k in sd:
        assert torch.equal(back[k], sd[k]), k

    evil = evil_pickle()
    # Make sure the hand-made stream is a well-formed pickle (disassembly does not execute).
    import pickletools
    pickletools.dis(evil, out=io.StringIO())
    write_zip(os.path.join(OUT, "evil.bin"), "archive", evil)

    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote fixtures to {os.path.normpath(OUT)} ({total} bytes)")


if __name__ == "__main__":
    main()
