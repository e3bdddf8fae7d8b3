#!/usr/bin/env python3
# Seeds for Fuzz/MMIOTransportFuzz: a driver's whole initialization sequence (§3.1.1),
# then notifications, a failure and a reset, so mutations start from a live device.
import os, struct
here = os.path.dirname(os.path.abspath(__file__))
R = dict(status=15, dfsel=7, dfeat=6, qsel=8, qnum=10, qready=11, notify=12,
         descLo=16, descHi=17, drvLo=18, drvHi=19, devLo=20, devHi=21, ack=14)

def w(reg, v): return struct.pack('<BBI', 0, R[reg], v)
def r(reg): return struct.pack('<BBI', 1, R[reg], 0)

def init(eventidx):
    s = w('status', 1) + w('status', 3)
    s += w('dfsel', 0) + w('dfeat', (1 << 28) | ((1 << 29) if eventidx else 0))
    s += w('dfsel', 1) + w('dfeat', 1) + w('status', 11) + r('status')
    for q, (d, a, u) in enumerate([(0x1000, 0x1100, 0x2000), (0x3000, 0x3100, 0x4000)]):
        s += w('qsel', q) + w('qnum', 4) + w('descLo', d) + w('descHi', 0) + w('drvLo', a) + w('drvHi', 0)
        s += w('devLo', u) + w('devHi', 0) + w('qready', 1)
    return s + w('status', 15)

seeds = {
    'init': b'\x0c\x08' + init(False) + w('notify', 0) + w('notify', 1),
    'init-eventidx': b'\x2c\x08' + init(True) + w('notify', 0) + w('status', 0),
    'fail-activate': b'\x4c\x08' + init(False) + w('notify', 0) + w('status', 0) + init(False),
    'config': b'\x0c\x02' + bytes([2 | 4 << 2, 0, 1, 2, 3, 4, 2 | 12 | 32, 8, 9, 9, 9, 9]) + init(False),
}
os.makedirs(os.path.join(here, 'seeds'), exist_ok=True)
for name, data in seeds.items():
    open(os.path.join(here, 'seeds', name), 'wb').write(data)
