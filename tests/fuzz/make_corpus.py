"""Regenerates the seed corpora of the fuzzers:
    /usr/bin/python3 tests/fuzz/make_corpus.py
corpus/safetensors: small valid files in the reference layout, plus the reference's own test
vectors. corpus/torch_pickle: the data.pkl of files written by torch.save (an OrderedDict state
dict, a plain dict with a view, a Parameter and bfloat16)."""
import collections
import io
import os
import zipfile
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import read_safetensors as st  # noqa: E402

out = os.path.join(HERE, "corpus", "safetensors")
os.makedirs(out, exist_ok=True)
seeds = {
    "empty": st.serialize({}),
    "metadata_only": st.serialize({}, {"format": "pt", "step": "10"}),
    "one_f32": st.serialize({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)},
                            {"format": "pt"}),
    "all_dtypes": st.serialize(
        {name.lower(): torch.ones(2, dtype=dtype) for name, (dtype, _) in st.DTYPES.items()},
        {"format": "pt"}),
    "scalar_and_empty": st.serialize(
        {"s": torch.tensor(1.5, dtype=torch.float64), "e": torch.zeros(0, 3, dtype=torch.int16)}),
    # safetensors/src/tensor.rs test_serialization: unpadded header, no metadata
    "reference_plain": struct.pack("<Q", 64)
    + b'{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}'
    + struct.pack("<6f", 0, 1, 2, 3, 4, 5),
    "u16_unsupported": struct.pack("<Q", 56)
    + b'{"u":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}}'.ljust(56)
    + b"\x01\x00\x02\x00",
}
for name, data in seeds.items():
    with open(os.path.join(out, name + ".safetensors"), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {out}")


def data_pkl(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as archive:
        return archive.read([n for n in archive.namelist() if n.endswith("data.pkl")][0])


torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
base = torch.arange(6.0).reshape(2, 3)
pickles = {
    "ordered_state_dict": data_pkl(model.state_dict()),
    "plain_dict": data_pkl({"a": base, "view": base[:, 1:], "b": torch.ones(2, dtype=torch.bfloat16)}),
    "parameter": data_pkl({"p": torch.nn.Parameter(torch.ones(2)), "i": torch.tensor(3)}),
    "empty": data_pkl(collections.OrderedDict()),
}
out = os.path.join(HERE, "corpus", "torch_pickle")
os.makedirs(out, exist_ok=True)
for name, data in pickles.items():
    with open(os.path.join(out, name + ".pkl"), "wb") as f:
        f.write(data)
print(f"wrote {len(pickles)} seeds to {out}")
