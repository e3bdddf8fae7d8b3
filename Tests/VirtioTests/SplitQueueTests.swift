import GuestMemory
import Testing
import Virtio

@Suite struct QueueSetup {
    @Test func validLayout() throws {
        let g = try FakeGuest(size: 256)
        let q = try g.queue()
        #expect(q.size == 256 && q.nextAvail == 0 && q.nextUsed == 0)
        let s = try #require(SplitQueue.areaSizes(size: 256))
        #expect(s.descriptorTable == 4096 && s.availableRing == 518 && s.usedRing == 2054)
        // An available ring ending exactly at the end of RAM is fine.
        _ = try SplitQueue(memory: g.mem, size: 256, descriptorTable: g.desc, availableRing: g.mem.ramEnd - 518,
                           usedRing: g.used, features: [])
    }

    @Test(arguments: [(0, 256), (3, 256), (12, 256), (512, 256), (1024, 1024), (32768, 32768)] as [(UInt16, UInt16)])
    func queueSize(size: UInt16, max: UInt16) throws {
        let g = try FakeGuest(size: size)
        let valid = size != 0 && size & (size - 1) == 0 && size <= max
        if valid {
            // 32768 entries need 512 KiB of descriptors: move the rings apart.
            _ = try SplitQueue(memory: g.mem, size: size, maxSize: max, descriptorTable: 0x40_0000,
                               availableRing: 0x50_0000, usedRing: 0x60_0000, features: [])
        } else {
            #expect(throws: VirtqueueError.badQueueSize(size: size, max: max)) { try g.queue(maxSize: max) }
        }
    }

    @Test func alignment() throws {
        let m = try GuestMemory(size: 16 << 20)
        func make(_ d: UInt64, _ a: UInt64, _ u: UInt64) throws {
            _ = try SplitQueue(memory: m, size: 8, descriptorTable: d, availableRing: a, usedRing: u, features: [])
        }
        try make(0x1000, 0x2002, 0x3004)  // the minimum alignments are enough
        #expect(throws: VirtqueueError.misalignedArea(.descriptorTable, address: 0x1008, alignment: 16)) {
            try make(0x1008, 0x2000, 0x3000)
        }
        #expect(throws: VirtqueueError.misalignedArea(.availableRing, address: 0x2001, alignment: 2)) {
            try make(0x1000, 0x2001, 0x3000)
        }
        #expect(throws: VirtqueueError.misalignedArea(.usedRing, address: 0x3002, alignment: 4)) {
            try make(0x1000, 0x2000, 0x3002)
        }
    }

    @Test func areasInsideRAM() throws {
        let m = try GuestMemory(size: 16 << 20)
        let top = m.ramEnd
        func make(_ d: UInt64, _ a: UInt64, _ u: UInt64) throws {
            _ = try SplitQueue(memory: m, size: 8, descriptorTable: d, availableRing: a, usedRing: u, features: [])
        }
        #expect(throws: VirtqueueError.areaOutsideMemory(.descriptorTable, address: top - 64, length: 128)) {
            try make(top - 64, 0x2000, 0x3000)
        }
        #expect(throws: VirtqueueError.areaOutsideMemory(.availableRing, address: top - 20, length: 22)) {
            try make(0x1000, top - 20, 0x3000)
        }
        #expect(throws: VirtqueueError.areaOutsideMemory(.usedRing, address: top - 68, length: 70)) {
            try make(0x1000, 0x2000, top - 68)
        }
        // Address + length wraps 64 bits: refused, not wrapped around to low RAM.
        #expect(throws: VirtqueueError.areaOutsideMemory(.descriptorTable, address: UInt64.max - 15, length: 128)) {
            try make(UInt64.max - 15, 0x2000, 0x3000)
        }
        // In the MMIO hole.
        #expect(throws: VirtqueueError.self) { try make(0xC000_0000, 0x2000, 0x3000) }
    }
}

@Suite struct AvailableRing {
    @Test func popsHeadsInOrder() throws {
        let g = try FakeGuest(size: 8)
        var q = try g.queue()
        #expect(try q.popAvailable() == nil)
        for h: UInt16 in [3, 1, 7] { try g.offer(h) }
        #expect(try q.popAvailable() == 3)
        #expect(try q.popAvailable() == 1)
        try g.offer(5)
        #expect(try q.popAvailable() == 7)
        #expect(try q.popAvailable() == 5)
        #expect(try q.popAvailable() == nil)
        #expect(q.nextAvail == 4)
    }

    @Test func undoPop() throws {
        let g = try FakeGuest(size: 4)
        var q = try g.queue()
        try g.offer(2)
        #expect(try q.popAvailable() == 2)
        q.undoPop()
        #expect(try q.popAvailable() == 2)
        #expect(try q.popAvailable() == nil)
    }

    /// avail.idx may be at most `size` ahead of last_avail_idx (§2.7.13).
    @Test func indexTooFarAhead() throws {
        let g = try FakeGuest(size: 8)
        var q = try g.queue()
        try g.setAvailIdx(9)
        #expect(throws: VirtqueueError.availIndexTooFarAhead(availIdx: 9, lastAvail: 0, size: 8)) {
            try q.popAvailable()
        }
        #expect(q.nextAvail == 0)  // nothing consumed
        // Exactly a full ring is legal.
        try g.setAvailIdx(8)
        for _ in 0..<8 { #expect(try q.popAvailable() != nil) }
        #expect(try q.popAvailable() == nil)
        // A driver "decrementing" idx looks like 65535 pending: refused.
        try g.setAvailIdx(7)
        #expect(throws: VirtqueueError.availIndexTooFarAhead(availIdx: 7, lastAvail: 8, size: 8)) {
            try q.popAvailable()
        }
    }

    /// 16-bit free-running indices wrap at 65536 on both rings.
    @Test func indexWraparound() throws {
        let g = try FakeGuest(size: 4)
        var q = try g.queue()
        try g.setDescriptor(0, Descriptor(addr: FakeGuest.data, len: 8, flags: W))
        for i in 0..<70_000 {
            try g.offer(0)
            let head = try #require(try q.popAvailable())
            #expect(head == 0)
            try q.addUsed(head: head, len: UInt32(i & 0xFF))
            if i == 65_535 {
                let usedIdx = try g.usedIdx()
                #expect(q.nextAvail == 0 && q.nextUsed == 0 && usedIdx == 0)
            }
        }
        #expect(q.nextAvail == UInt16(70_000 & 0xFFFF) && q.nextUsed == q.nextAvail)
        #expect(try g.usedIdx() == UInt16(70_000 & 0xFFFF))
        #expect(try q.popAvailable() == nil)
        let last = try g.usedElement((q.nextUsed &- 1) % 4)
        #expect(last.id == 0 && last.len == UInt32(69_999 & 0xFF))
    }
}

@Suite struct UsedRing {
    @Test func addUsedWritesElementThenIndex() throws {
        let g = try FakeGuest(size: 4)
        var q = try g.queue()
        try q.addUsed(head: 2, len: 0x1234)
        try q.addUsed(head: 3, len: 7)
        #expect(try g.usedIdx() == 2)
        #expect(try g.usedElement(0) == (2, 0x1234))
        #expect(try g.usedElement(1) == (3, 7))
        for i: UInt32 in 0..<3 { try q.addUsed(head: 1, len: i) }
        #expect(try g.usedElement(0) == (1, 2))  // slot 4 % 4 reused
        #expect(try g.usedIdx() == 5)
    }

    @Test func addUsedRefusesBadHead() throws {
        let g = try FakeGuest(size: 4)
        var q = try g.queue()
        #expect(throws: VirtqueueError.headOutOfRange(head: 4, size: 4)) { try q.addUsed(head: 4, len: 0) }
        #expect(try g.usedIdx() == 0)
    }
}

@Suite struct Notifications {
    @Test(arguments: [
        // (event, new, old, expected)
        (0, 1, 0, true),  // first entry with used_event 0
        (0, 2, 1, false),  // event already passed
        (5, 3, 0, false),  // not reached yet
        (2, 3, 0, true),  // inside the window [0, 3)
        (2, 3, 2, true),
        (3, 3, 2, false),
        (65535, 1, 65534, true),  // window crosses the wrap
        (65535, 0, 65535, true),
        (0, 0, 65535, false),
        (2, 1, 65535, false),
        (7, 7, 7, false),  // nothing new
    ] as [(UInt16, UInt16, UInt16, Bool)])
    func needEventMath(event: UInt16, new: UInt16, old: UInt16, expected: Bool) {
        #expect(SplitQueue.needEvent(event: event, new: new, old: old) == expected)
    }

    @Test func eventIdxUsesUsedEvent() throws {
        let g = try FakeGuest(size: 8)
        var q = try g.queue(features: [.version1, .ringEventIdx])
        try g.setAvailFlags(SplitQueue.availNoInterrupt)  // ignored with EVENT_IDX (§2.7.7.2)
        try g.setUsedEvent(1)  // "tell me once entry 1 is used"
        try q.addUsed(head: 0, len: 0)
        #expect(try q.needsNotification() == false)
        try q.addUsed(head: 1, len: 0)
        #expect(try q.needsNotification() == true)
        #expect(try q.needsNotification() == false)  // nothing new since
        try q.addUsed(head: 2, len: 0)
        try q.addUsed(head: 3, len: 0)
        #expect(try q.needsNotification() == false)  // event 1 is behind
        try g.setUsedEvent(5)
        try q.addUsed(head: 4, len: 0)
        try q.addUsed(head: 5, len: 0)
        try q.addUsed(head: 6, len: 0)
        #expect(try q.needsNotification() == true)  // batch [4, 7) covers 5
    }

    @Test func noInterruptFlagWithoutEventIdx() throws {
        let g = try FakeGuest(size: 8)
        var q = try g.queue()
        try g.setUsedEvent(100)  // ignored without EVENT_IDX
        try q.addUsed(head: 0, len: 0)
        #expect(try q.needsNotification() == true)
        try g.setAvailFlags(SplitQueue.availNoInterrupt)
        try q.addUsed(head: 1, len: 0)
        #expect(try q.needsNotification() == false)
        try g.setAvailFlags(0)
        #expect(try q.needsNotification() == true)
    }

    @Test func availEventAndNoNotify() throws {
        let g = try FakeGuest(size: 8)
        var q = try g.queue(features: [.version1, .ringEventIdx])
        try q.setAvailEvent(0x4242)
        #expect(try g.availEvent() == 0x4242)
        try g.offer(0)
        #expect(try q.enableNotifications() == true)  // a buffer is waiting
        #expect(try g.availEvent() == 0)
        _ = try q.popAvailable()
        #expect(try q.enableNotifications() == false)
        #expect(try g.availEvent() == 1)  // notify when entry 1 is offered

        var plain = try g.queue()
        try plain.disableNotifications()
        #expect(try g.usedFlags() == SplitQueue.usedNoNotify)
        #expect(try plain.enableNotifications() == true)  // entry 0 still pending for this fresh queue
        #expect(try g.usedFlags() == 0)
    }
}
