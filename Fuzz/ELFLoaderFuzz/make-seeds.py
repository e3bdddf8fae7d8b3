#!/usr/bin/env python3
"""Writes the seed corpus for the ELF loader fuzzer (valid kernels for its 16 MiB RAM
with a hole at 8-12 MiB, each followed by the harness's 8-byte trailer). Rerun after
changing the harness's memory layouts or trailer."""
import struct, os

def note(name, ntype, desc, align=4):
    pad = lambda b: b + b"\0" * (-len(b) % align)
    return pad(struct.pack("<III", len(name), len(desc), ntype) + name) + pad(desc)

def elf(segs, etype=2):
    # segs: (p_type, paddr, data, memsz, align)
    phoff, n = 64, len(segs)
    off = phoff + 56 * n
    ph, body = b"", b""
    for t, paddr, data, memsz, align in segs:
        ph += struct.pack("<IIQQQQQQ", t, 5, off + len(body), paddr, paddr, len(data), memsz, align)
        body += data + b"\0" * (-len(data) % 8)
    hdr = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    hdr += struct.pack("<HHIQQQIHHHHHH", etype, 62, 1, 0xffffffff81000000, phoff, 0, 0, 64, 56, n, 64, 0, 0)
    return hdr + ph + body

code = bytes([0x90, 0x90, 0xf4, 0xeb, 0xfd])
pvmm = note(b"PVMM\0", 1, struct.pack("<Q", 0x100000))
pvh4 = note(b"Xen\0", 18, struct.pack("<I", 0x100001))
pvh8 = note(b"Xen\0", 18, struct.pack("<Q", 0x100002))
gnu8 = note(b"GNU\0", 5, bytes(16), align=8)
seeds = {
    "pvmm": elf([(1, 0x100000, code, 0x2000, 4096), (4, 0, pvmm, len(pvmm), 4)]),
    "pvh4": elf([(1, 0x100000, code, 0x10, 4096), (4, 0, pvh4, len(pvh4), 4)]),
    "both": elf([(1, 0x100000, code, 5, 4096), (1, 0xC00000, b"\xab" * 32, 0x1000, 4096),
                 (4, 0, pvh8 + pvmm, len(pvh8 + pvmm), 4), (4, 0, gnu8, len(gnu8), 8)]),
    "dyn": elf([(1, 0x200000, code, 5, 4096), (4, 0, pvmm.replace(b"\x00\x00\x10", b"\x00\x00\x20"), 28, 4)], etype=3),
}
d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
os.makedirs(d, exist_ok=True)
# The harness reads an 8-byte trailer: layout (bit 7: prefer PVH), cmdline length (u16),
# RSDP bytes. Each seed gets an ordinary one; a few get limits.
trailers = {"": bytes([0, 13, 0, 0, 0, 0xE, 0, 0]), "-small": bytes([1, 0xFF, 0x0F, 0, 0, 0, 0, 0]),
            "-tiny-pvh": bytes([0x82, 0, 0x10, 0, 0, 0, 0, 0])}
for name, b in seeds.items():
    for suffix, t in trailers.items():
        open(os.path.join(d, name + suffix + ".elf"), "wb").write(b + t)
