#!/usr/bin/env python3
"""Writes the seed corpus for the virtio-net fuzzer: small, valid driver setups in the
harness's input format (see VirtioNetFuzz.swift). Rerun after changing that format."""
import struct, os

BASE = 0x1000            # guest address of input byte 4
RX, TX = 0x1000, 0x3000  # descriptor tables
NEXT, WRITE = 1, 2
F_INDIRECT, F_EVENT_IDX, F_MRG, F_CSUM, F_GUEST_CSUM, VNET, REFUSE = 1, 2, 4, 8, 16, 32, 64

def desc(addr, length, flags=0, nxt=0):
    return struct.pack("<QIHH", addr, length, flags, nxt)

def ring(heads, size):
    return struct.pack("<HH", 0, len(heads)) + struct.pack("<%dH" % size, *(heads + [0] * (size - len(heads)))) + b"\0\0"

def seed(log2, features, frames, size_seed, rx_chains, tx_chains, data):
    """rx_chains / tx_chains: lists of [(addr, len, flags)]; data: {addr: bytes}."""
    size = 1 << log2
    mem = bytearray(0x6000)
    def put(addr, b):
        mem[addr - BASE:addr - BASE + len(b)] = b
    for table, chains in ((RX, rx_chains), (TX, tx_chains)):
        descs, heads = [], []
        for c in chains:
            heads.append(len(descs))
            for i, (addr, length, flags) in enumerate(c):
                last = i == len(c) - 1
                descs.append(desc(addr, length, flags | (0 if last else NEXT), 0 if last else len(descs) + 1))
        put(table, b"".join(descs))
        put(table + 16 * size, ring(heads, size))
    for addr, b in data.items():
        put(addr, b)
    return bytes([log2, features, frames, size_seed]) + bytes(mem).rstrip(b"\0")

def hdr(flags=0, gso=0, start=0, off=0):
    return struct.pack("<BBHHHHH", flags, gso, 0, 0, start, off, 0)

frame = bytes(range(60))
seeds = {
    # two 1600-byte receive buffers, two host frames, one transmit
    "tap-rx-tx": seed(4, F_EVENT_IDX | VNET, 2, 5, [[(0x5000, 1600, WRITE)], [(0x5800, 1600, WRITE)]],
                      [[(0x4000, 12 + 60, 0)]], {0x4000: hdr() + frame}),
    # mergeable: four 512-byte buffers for one large frame
    "mrg": seed(3, F_EVENT_IDX | F_MRG | VNET, 1, 40, [[(0x5000 + 512 * i, 512, WRITE)] for i in range(4)], [], {}),
    # bare frames (passt), transmit split over three buffers, refused once
    "passt-split": seed(3, F_EVENT_IDX | REFUSE, 1, 1, [[(0x5000, 1600, WRITE)]],
                        [[(0x4000, 5, 0), (0x4005, 7, 0), (0x400c, 60, 0)]], {0x4000: hdr() + frame}),
    # checksum offload request, and a GSO one that must be dropped
    "csum": seed(3, F_CSUM | F_GUEST_CSUM | VNET, 0, 0, [],
                 [[(0x4000, 72, 0)], [(0x4100, 72, 0)]], {0x4000: hdr(1, 0, 34, 6) + frame, 0x4100: hdr(0, 1) + frame}),
}
here = os.path.join(os.path.dirname(__file__), "seeds")
os.makedirs(here, exist_ok=True)
for name, b in seeds.items():
    with open(os.path.join(here, name + ".bin"), "wb") as f:
        f.write(b)
