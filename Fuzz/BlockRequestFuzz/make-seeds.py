#!/usr/bin/env python3
"""Writes the seed corpus for the virtio-blk request fuzzer: small, valid driver setups in
the harness's input format (see BlockRequestFuzz.swift). Rerun after changing that format."""
import struct, os

BASE = 0x1000  # guest address of input byte 3
NEXT, WRITE, INDIRECT = 1, 2, 4
F_INDIRECT, F_EVENT_IDX, F_DISCARD, F_WZ, F_FLUSH = 1, 2, 4, 8, 16
ALL = F_INDIRECT | F_EVENT_IDX | F_DISCARD | F_WZ | F_FLUSH
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WZ = 0, 1, 4, 8, 11, 13

def desc(addr, length, flags=0, nxt=0):
    return struct.pack("<QIHH", addr, length, flags, nxt)

def header(t, sector=0):
    return struct.pack("<IIQ", t, 0, sector)

def segment(sector, count, flags=0):
    return struct.pack("<QII", sector, count, flags)

LOG2 = 4
SIZE = 1 << LOG2
FREE = BASE + 16 * SIZE + 6 + 2 * SIZE  # first byte after the available ring

def seed(chains, extra, features=ALL, mode=0, log2=LOG2):
    """chains: list of descriptor lists (chained with NEXT here); extra: bytes at FREE."""
    size = 1 << log2
    table, heads = [], []
    for c in chains:
        heads.append(len(table))
        for i, (addr, length, flags) in enumerate(c):
            last = i == len(c) - 1
            table.append(desc(addr, length, flags | (0 if last else NEXT), len(table) + 1 if not last else 0))
    ring = heads + [0] * (size - len(heads))
    avail = struct.pack("<HH", 0, len(heads)) + struct.pack("<%dH" % size, *ring) + struct.pack("<H", 0)
    return bytes([log2, features, mode]) + b"".join(table).ljust(16 * size, b"\0") + avail + extra

def request(t, sector=0, out=b"", inlen=0, data_at=0x4000, status_at=0x4800):
    """One request laid out at FREE: header, then `out`; returns (chain, extra)."""
    extra = header(t, sector) + out
    chain = [(FREE, 16, 0)]
    if out:
        chain.append((FREE + 16, len(out), 0))
    if inlen:
        chain.append((data_at, inlen, WRITE))
    chain.append((status_at, 1, WRITE))
    return chain, extra

seeds = {}
c, e = request(T_IN, 2, inlen=1024); seeds["read"] = seed([c], e)
c, e = request(T_OUT, 3, out=bytes(range(256)) * 2); seeds["write"] = seed([c], e)
c, e = request(T_OUT, 3, out=b"\x55" * 512); seeds["write-ro"] = seed([c], e, mode=1)
c, e = request(T_FLUSH); seeds["flush"] = seed([c], e, mode=2)
c, e = request(T_GET_ID, inlen=20); seeds["get-id"] = seed([c], e)
c, e = request(T_DISCARD, out=segment(1, 2) + segment(8, 1)); seeds["discard"] = seed([c], e)
c, e = request(T_WZ, out=segment(4, 4, 1)); seeds["write-zeroes"] = seed([c], e, mode=2)
c, e = request(T_IN, 15, inlen=1024); seeds["beyond"] = seed([c], e)
c, e = request(T_OUT, 0xFFFFFFFFFFFFFF, out=b"\0" * 512); seeds["overflow"] = seed([c], e)
# Header in a descriptor of 8 bytes: malformed, the device must fail.
seeds["short-header"] = seed([[(FREE, 8, 0), (0x4800, 1, WRITE)]], header(T_IN))
# An indirect table (after the header) holding header, data and status.
tbl = desc(FREE, 16, NEXT, 1) + desc(0xC000, 512, WRITE | NEXT, 2) + desc(0xC400, 1, WRITE)
seeds["indirect"] = seed([[(FREE + 16, len(tbl), INDIRECT)]], header(T_IN, 1) + tbl, mode=2)
# Two requests in one batch, through the backend loop.
c1, e1 = request(T_IN, 0, inlen=512)
c2 = [(FREE, 16, 0), (0x5000, 512, WRITE), (0x5400, 1, WRITE)]
seeds["batch"] = seed([c1, c2], e1, mode=2)
# The same on the parallel (io_uring) backend, and a write + flush batch there.
seeds["batch-parallel"] = seed([c1, c2], e1, mode=6)
c3 = [(FREE, 16, 0), (FREE + 16, 512, 0), (0x5400, 1, WRITE)]
seeds["write-flush-parallel"] = seed([c3, [(FREE + 528, 16, 0), (0x5800, 1, WRITE)]],
                                     header(T_OUT, 2) + b"\x77" * 512 + header(T_FLUSH), mode=6)

d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
os.makedirs(d, exist_ok=True)
for name, b in seeds.items():
    open(os.path.join(d, name + ".bin"), "wb").write(b)
