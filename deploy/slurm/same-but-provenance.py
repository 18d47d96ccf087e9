#!/usr/bin/env python3
"""same-but-provenance.py A B: exit 0 when alens outputs A and B are the same bytes apart from
their provenance (a merged output's lists its shards). JSON reports: equal up to the
`"provenance"` entry, which alens writes last. Safetensors: the same header without the
metadata's provenance, and the same data bytes. Anything else: equal bytes."""
import json
import struct
import sys


def parts(path):
    data = open(path, "rb").read()
    if data.startswith(b"{"):
        cut = data.find(b'\n  "provenance": ')
        return ("json", data if cut < 0 else data[:cut])
    if len(data) >= 8:
        n = struct.unpack("<Q", data[:8])[0]
        try:
            header = json.loads(data[8 : 8 + n])
        except ValueError:
            return ("bytes", data)
        header.get("__metadata__", {}).pop("provenance", None)
        return ("safetensors", (header, data[8 + n :]))
    return ("bytes", data)


a, b = sys.argv[1:3]
if parts(a) != parts(b):
    print(f"{b} differs from {a}", file=sys.stderr)
    sys.exit(1)
