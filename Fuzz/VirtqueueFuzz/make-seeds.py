#!/usr/bin/env python3
"""Writes the seed corpus for the virtqueue fuzzer: small, valid driver setups in the
harness's input format (see VirtqueueFuzz.swift). Rerun after changing that format."""
import struct, os

BASE = 0x1000  # guest address of input byte 6
NEXT, WRITE, INDIRECT = 1, 2, 4

def desc(addr, length, flags=0, nxt=0):
    return struct.pack("<QIHH", addr, length, flags, nxt)

def seed(log2size, features, descs, heads, extra=b"", used_event=0, avail_flags=0, start=0):
    size = 1 << log2size
    table = b"".join(descs).ljust(16 * size, b"\0")
    ring = [0] * size
    for i, h in enumerate(heads):
        ring[i % size] = h
    avail = struct.pack("<HH", avail_flags, len(heads)) + struct.pack("<%dH" % size, *ring)
    avail += struct.pack("<H", used_event)
    return bytes([log2size, features]) + struct.pack("<H", start) + bytes([0, 0]) + table + avail + extra

def free(log2size):
    """Guest address of the first byte after the available ring."""
    size = 1 << log2size
    return BASE + 16 * size + 6 + 2 * size

f3 = free(3)
seeds = {
    # A request: 16-byte header, 512-byte data, 1-byte status.
    "direct": seed(3, 0, [desc(0x4000, 16, NEXT, 1), desc(0x4100, 512, NEXT | WRITE, 2),
                          desc(0x4400, 1, WRITE)], [0]),
    # Two single-buffer chains, EVENT_IDX on.
    "two": seed(2, 2, [desc(0x4000, 64), desc(0xC000, 128, WRITE)], [0, 1], used_event=1),
    # An indirect table right after the avail ring: readable then writable.
    "indirect": seed(3, 1, [desc(f3, 48, INDIRECT)], [0],
                     extra=desc(0x4000, 8, NEXT, 1) + desc(0x4100, 8, NEXT, 2) + desc(0x4200, 8, WRITE)),
    # Direct descriptors followed by an indirect one.
    "mixed": seed(3, 3, [desc(0x4000, 8, NEXT, 1), desc(f3, 32, INDIRECT)], [0, 0],
                  extra=desc(0x4100, 4, NEXT, 1) + desc(0xC100, 4, WRITE)),
    # A full ring of 16 in a 16-entry queue, NO_INTERRUPT set.
    "full": seed(4, 0, [desc(0x4000 + 16 * i, 16, WRITE) for i in range(16)], list(range(16)), avail_flags=1),
    # Indices about to wrap: 65534 + 4 entries, EVENT_IDX with used_event across the wrap.
    "wrap": seed(2, 2 | 4, [desc(0x4000 + 16 * i, 16, WRITE) for i in range(4)], [2, 3, 0, 1], used_event=0, start=65534),
}
d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
os.makedirs(d, exist_ok=True)
for name, b in seeds.items():
    open(os.path.join(d, name + ".bin"), "wb").write(b)
