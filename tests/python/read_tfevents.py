"""Reads a TensorBoard event file independently of accelerate-cpp and prints its events as JSON.

Usage: /usr/bin/python3 read_tfevents.py FILE
Checks each record's framing and both masked CRC-32Cs (with Debian's python3-crc32c), decodes
the protobuf wire format of tensorflow.Event (wall_time, step, file_version, summary.value
{tag, simple_value}), and exits 1 naming the record and the problem on any inconsistency.
Prints one JSON list: [{"wall_time": ..., "step": ..., "file_version": ..., "values": {...}}].
"""
import json
import struct
import sys

import crc32c


def masked(data):
    c = crc32c.crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def fields(buf):
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


def main(path):
    data = open(path, "rb").read()
    events, pos, n = [], 0, 0
    while pos < len(data):
        header = data[pos:pos + 8]
        if len(header) < 8 or len(data) < pos + 12:
            sys.exit(f"record {n}: truncated header at byte {pos}")
        (length,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if hcrc != masked(header):
            sys.exit(f"record {n}: bad length CRC")
        body = data[pos + 12:pos + 12 + length]
        (bcrc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if len(body) != length or bcrc != masked(body):
            sys.exit(f"record {n}: bad data CRC or truncated data")
        event = {"values": {}}
        for number, wire, value in fields(body):
            if number == 1 and wire == 1:
                event["wall_time"] = struct.unpack("<d", value)[0]
            elif number == 2 and wire == 0:
                event["step"] = value
            elif number == 3 and wire == 2:
                event["file_version"] = value.decode()
            elif number == 5 and wire == 2:
                for vn, vw, v in fields(value):
                    if vn != 1 or vw != 2:
                        sys.exit(f"record {n}: unexpected summary field {vn}")
                    tag, simple = None, None
                    for fn, fw, f in fields(v):
                        if fn == 1 and fw == 2:
                            tag = f.decode()
                        elif fn == 2 and fw == 5:
                            simple = struct.unpack("<f", f)[0]
                    event["values"][tag] = simple
            else:
                sys.exit(f"record {n}: unexpected field {number} (wire type {wire})")
        events.append(event)
        pos += 16 + length
        n += 1
    print(json.dumps(events))


if __name__ == "__main__":
    main(sys.argv[1])
