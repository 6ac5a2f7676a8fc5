"""Python side of the interoperability tests of tests/safetensors_test.cpp,
tests/torch_pickle_test.cpp and tests/model_files_test.cpp.

Run with Debian's /usr/bin/python3 (python3-torch). Subcommands:

  check-formula FILE          FILE (written by C++) holds tensors whose values follow
                              `formula(dtype, shape)`; its bytes equal what this module's own
                              writer produces for the same tensors and metadata.
  check-index DIR EXPECTED    DIR holds model-0000i-of-0000N.safetensors shards and
                              model.safetensors.index.json (or a single model.safetensors);
                              the index is consistent with the shards and all tensors equal
                              those of the single file EXPECTED.
  check-bin PATH EXPECTED     torch.load(weights_only=True) reads PATH (a .bin file or a folder
                              with pytorch_model.bin or its index and shards) and the tensors
                              equal those of EXPECTED (safetensors); views of one storage
                              listed by --shared A B still share it.
  write DIR                   writes, with Python's own tools, py_formula.safetensors (this
                              module's writer), py_model.bin (torch.save(model.state_dict())),
                              py_model.safetensors, py_sharded/ (pytorch_model-*.bin + index,
                              plain-dict shards as transformers writes) and py_io.safetensors
                              (an input x and the model's output y) for C++ to read.

Exits non-zero with a message on the first mismatch.
"""
import json
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import read_safetensors as st  # noqa: E402


def formula(dtype_name, shape):
    """Deterministic values per dtype; tests/tensor_files.h computes the same."""
    numel = 1
    for d in shape:
        numel *= d
    idx = torch.arange(numel, dtype=torch.int64)
    if dtype_name == "BOOL":
        t = (idx % 3) == 0
    elif dtype_name == "U8":
        t = (idx * 7 % 256).to(torch.uint8)
    elif dtype_name == "I8":
        t = (idx * 7 % 200 - 100).to(torch.int8)
    elif dtype_name == "I16":
        t = (idx * 331 % 60000 - 30000).to(torch.int16)
    elif dtype_name == "I32":
        t = (idx * 1000003 - 1073741824).to(torch.int32)
    elif dtype_name == "I64":
        t = idx * 1099511627776 + 12345 - 4611686018427387904
    else:
        t = (idx.to(torch.float64) * 0.37 - 5.0).to(st.DTYPES[dtype_name][0])
    return t.reshape(shape)


def fail(message):
    print("MISMATCH: " + message)
    sys.exit(1)


def check_equal(name, got, want):
    if got.dtype != want.dtype or tuple(got.shape) != tuple(want.shape):
        fail(f"{name}: {got.dtype}{tuple(got.shape)} vs {want.dtype}{tuple(want.shape)}")
    if not torch.equal(got, want):
        fail(f"{name}: values differ")


def check_formula(path):
    metadata, tensors = st.read(path)
    for name, tensor in tensors.items():
        check_equal(name, tensor, formula(st.NAME_OF[tensor.dtype], list(tensor.shape)))
    with open(path, "rb") as f:
        if f.read() != st.serialize(tensors, metadata):
            fail(f"{path}: bytes differ from the reference layout")
    print(f"OK {len(tensors)} tensors, metadata {metadata}")


def check_index(directory, expected_path):
    _, expected = st.read(expected_path)
    index_path = os.path.join(directory, "model.safetensors.index.json")
    if not os.path.exists(index_path):
        _, tensors = st.read(os.path.join(directory, "model.safetensors"))
        for name, want in expected.items():
            check_equal(name, tensors[name], want)
        print(f"OK single file, {len(tensors)} tensors")
        return
    with open(index_path) as f:
        text = f.read()
    index = json.loads(text)
    if text != json.dumps(index, indent=2, sort_keys=True) + "\n":
        fail("index is not json.dumps(index, indent=2, sort_keys=True)")
    weight_map = index["weight_map"]
    files = sorted(set(weight_map.values()))
    count = len(files)
    for i, name in enumerate(files):
        if name != f"model-{i + 1:05d}-of-{count:05d}.safetensors":
            fail(f"shard name {name}")
    seen = {}
    total = 0
    for name in files:
        metadata, tensors = st.read(os.path.join(directory, name))
        if metadata != {"format": "pt"}:
            fail(f"{name}: metadata {metadata}")
        for key, tensor in tensors.items():
            if weight_map.get(key) != name:
                fail(f"{key} is in {name} but the index says {weight_map.get(key)}")
            seen[key] = tensor
            total += tensor.numel() * tensor.element_size()
    if set(seen) != set(weight_map) or set(seen) != set(expected):
        fail(f"keys {sorted(seen)} vs index {sorted(weight_map)} vs expected {sorted(expected)}")
    if index["metadata"]["total_size"] != total:
        fail(f"total_size {index['metadata']['total_size']} != {total}")
    for key, want in expected.items():
        check_equal(key, seen[key], want)
    print(f"OK {count} shards, {len(seen)} tensors, total_size {total}")


def torch_load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def check_bin(path, expected_path, shared):
    _, expected = st.read(expected_path)
    loaded = {}
    if os.path.isdir(path):
        single = os.path.join(path, "pytorch_model.bin")
        if os.path.exists(single):
            loaded = torch_load(single)
        else:
            with open(os.path.join(path, "pytorch_model.bin.index.json")) as f:
                index = json.load(f)
            for name in sorted(set(index["weight_map"].values())):
                if not re.fullmatch(r"pytorch_model-\d{5}-of-\d{5}\.bin", name):
                    fail(f"shard name {name}")
                shard = torch_load(os.path.join(path, name))
                if type(shard) is not dict:
                    fail(f"{name} holds a {type(shard)}")
                for key in shard:
                    if index["weight_map"][key] != name:
                        fail(f"{key} in {name}, index says {index['weight_map'][key]}")
                loaded.update(shard)
    else:
        loaded = torch_load(path)
    if type(loaded) is not dict:
        fail(f"torch.load returned a {type(loaded)}")
    if set(loaded) != set(expected):
        fail(f"keys {sorted(loaded)} vs {sorted(expected)}")
    for key, want in expected.items():
        check_equal(key, loaded[key], want)
    for a, b in shared:
        if loaded[a].storage().data_ptr() != loaded[b].storage().data_ptr():
            fail(f"{a} and {b} no longer share a storage")
    print(f"OK {len(loaded)} tensors")


def make_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3)
    )
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 4))  # non-trivial running statistics
    model.eval()
    return model


def write(directory):
    os.makedirs(directory, exist_ok=True)
    shapes = {
        "F32": [2, 3], "F64": [], "F16": [3, 1, 2], "BF16": [5], "I64": [4], "I32": [0],
        "I16": [2, 2], "I8": [7], "U8": [3], "BOOL": [2, 5],
    }
    tensors = {f"py_{name.lower()}": formula(name, shape) for name, shape in shapes.items()}
    st.write(os.path.join(directory, "py_formula.safetensors"), tensors,
             {"format": "pt", "source": "python"})

    model = make_model()
    state_dict = model.state_dict()
    torch.save(state_dict, os.path.join(directory, "py_model.bin"))  # an OrderedDict
    st.write(os.path.join(directory, "py_model.safetensors"), dict(state_dict), {"format": "pt"})

    # Shards as transformers / accelerate write them: plain dicts + index.
    sharded = os.path.join(directory, "py_sharded")
    os.makedirs(sharded, exist_ok=True)
    keys = list(state_dict)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves):
        name = f"pytorch_model-{i + 1:05d}-of-{len(halves):05d}.bin"
        torch.save({k: state_dict[k] for k in part}, os.path.join(sharded, name))
        weight_map.update({k: name for k in part})
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    with open(os.path.join(sharded, "pytorch_model.bin.index.json"), "w") as f:
        f.write(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                           indent=2, sort_keys=True) + "\n")

    x = torch.randn(5, 4)
    with torch.no_grad():
        y = model(x)
    st.write(os.path.join(directory, "py_io.safetensors"), {"x": x, "y": y})
    print(f"OK wrote {directory}")


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    command = argv[1]
    if command == "check-formula":
        check_formula(argv[2])
    elif command == "check-index":
        check_index(argv[2], argv[3])
    elif command == "check-bin":
        shared = []
        rest = argv[4:]
        while rest and rest[0] == "--shared":
            shared.append((rest[1], rest[2]))
            rest = rest[3:]
        check_bin(argv[2], argv[3], shared)
    elif command == "write":
        write(argv[2])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
