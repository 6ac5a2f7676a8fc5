"""An independent safetensors reader and writer, written from the format's rules with
nothing but struct, json and torch (no `safetensors` package), to check the C++ files
against:

    [8-byte little-endian N][N bytes of UTF-8 JSON][data]

The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
into the data section) and may hold "__metadata__", a string-to-string map. The offsets,
sorted, tile the data section without holes or overlaps; each range holds
numel x element-size bytes. The reference writer sorts tensors by dtype alignment
(descending), then by name, writes compact JSON and pads it with spaces to a multiple of 8.

Usage as a module:
    metadata, tensors = read("model.safetensors")
    data = serialize({"w": torch.ones(2)}, {"format": "pt"})
"""
import json
import struct

import torch

MAX_HEADER_SIZE = 100_000_000

# name -> (torch dtype, element size); ALIGNMENT_ORDER is the reference's enum order.
DTYPES = {
    "BOOL": (torch.bool, 1),
    "U8": (torch.uint8, 1),
    "I8": (torch.int8, 1),
    "I16": (torch.int16, 2),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I32": (torch.int32, 4),
    "F32": (torch.float32, 4),
    "F64": (torch.float64, 8),
    "I64": (torch.int64, 8),
}
ALIGNMENT_ORDER = ["BOOL", "U8", "I8", "I16", "F16", "BF16", "I32", "F32", "F64", "I64"]
NAME_OF = {dtype: name for name, (dtype, _) in DTYPES.items()}


class FormatError(Exception):
    pass


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise FormatError(f"duplicate key in {keys}")
    return dict(pairs)


def read(path):
    """(metadata dict or None, {name: tensor}) of the file at `path`, validated."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise FormatError("truncated")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_SIZE:
        raise FormatError("header too large")
    if 8 + n > len(data):
        raise FormatError("header beyond the file")
    text = data[8 : 8 + n].decode("utf-8")
    if not text.startswith("{"):
        raise FormatError("header does not start with {")
    header = json.loads(text, object_pairs_hook=_no_duplicates)
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise FormatError("metadata is not string to string")
    entries = []
    for name, entry in header.items():
        if set(entry) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{name}: keys {sorted(entry)}")
        if entry["dtype"] not in DTYPES:
            raise FormatError(f"{name}: dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        entries.append((begin, end, name, entry))
    entries.sort(key=lambda e: (e[0], e[1]))
    data_start = 8 + n
    expected = 0
    tensors = {}
    for begin, end, name, entry in entries:
        if begin != expected or end < begin:
            raise FormatError(f"{name}: offsets [{begin},{end}) after {expected}")
        dtype, size = DTYPES[entry["dtype"]]
        numel = 1
        for d in entry["shape"]:
            numel *= d
        if end - begin != numel * size:
            raise FormatError(f"{name}: {end - begin} bytes for {numel} x {entry['dtype']}")
        chunk = bytearray(data[data_start + begin : data_start + end])
        if numel == 0:
            tensor = torch.empty(entry["shape"], dtype=dtype)
        else:
            tensor = torch.frombuffer(chunk, dtype=dtype).reshape(entry["shape"])
        tensors[name] = tensor
        expected = end
    if data_start + expected != len(data):
        raise FormatError("data section not fully covered")
    return metadata, tensors


def serialize(tensors, metadata=None):
    """The bytes the reference writer produces for `tensors` (metadata keys sorted)."""
    items = sorted(
        tensors.items(),
        key=lambda kv: (-ALIGNMENT_ORDER.index(NAME_OF[kv[1].dtype]), kv[0].encode("utf-8")),
    )
    header = {}
    if metadata is not None:
        header["__metadata__"] = dict(sorted(metadata.items()))
    offset = 0
    chunks = []
    for name, tensor in items:
        tensor = tensor.detach().cpu().contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {
            "dtype": NAME_OF[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        offset += len(raw)
        chunks.append(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def write(path, tensors, metadata=None):
    with open(path, "wb") as f:
        f.write(serialize(tensors, metadata))
