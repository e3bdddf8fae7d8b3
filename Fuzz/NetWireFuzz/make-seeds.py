#!/usr/bin/env python3
"""Writes seed frames for Scripts/fuzz-net (virtio-net header + Ethernet frame)."""
import os, struct

def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

def vnet(flags=0): return struct.pack('<BBHHHHH', flags, 0, 0, 0, 0, 0, 1)
def eth(t): return bytes.fromhex('525400770002') + bytes.fromhex('020000000001') + struct.pack('!H', t)
SRC, DST = bytes([10, 77, 0, 1]), bytes([10, 77, 0, 2])

def ip(proto, payload, src=SRC, dst=DST):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0, src, dst)
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload

def udp(sport, dport, data, src=SRC, dst=DST):
    u = struct.pack('!HHHH', sport, dport, 8 + len(data), 0) + data
    c = csum(src + dst + struct.pack('!BBH', 0, 17, len(u)) + u) or 0xffff
    return u[:6] + struct.pack('!H', c) + u[8:]

def icmp(t, data):
    m = struct.pack('!BBHHH', t, 0, 0, 0x1234, 1) + data
    return m[:2] + struct.pack('!H', csum(m)) + m[4:]

def dhcp(t):
    m = bytearray(236)
    m[0:3] = b'\x02\x01\x06'
    m[4:8] = b'\xde\xad\xbe\xef'
    m[16:20] = bytes([10, 0, 2, 15])
    m[28:34] = bytes.fromhex('525400770002')
    opts = bytes([53, 1, t, 54, 4, 10, 0, 2, 2, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2, 51, 4, 0, 0, 14, 16, 255])
    return bytes(m) + b'\x63\x82\x53\x63' + opts

arp = struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, 1, bytes.fromhex('020000000001'), SRC, b'\0' * 6, DST)
seeds = {
    'arp.bin': vnet() + eth(0x0806) + arp,
    'ping.bin': vnet() + eth(0x0800) + ip(1, icmp(8, b'abcdefgh' * 7)),
    'udp-echo.bin': vnet() + eth(0x0800) + ip(17, udp(40000, 7, b'x' * 100)),
    'udp-partial.bin': vnet(1) + eth(0x0800) + ip(17, udp(40000, 7, b'y')),
    'dhcp-offer.bin': vnet() + eth(0x0800) + ip(17, udp(67, 68, dhcp(2)), dst=bytes([255] * 4)),
    'dhcp-ack.bin': vnet() + eth(0x0800) + ip(17, udp(67, 68, dhcp(5)), dst=bytes([255] * 4)),
}
d = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'seeds')
os.makedirs(d, exist_ok=True)
for name, b in seeds.items():
    open(os.path.join(d, name), 'wb').write(b)
