import GuestMemory
import Testing
import Virtio

let D = FakeGuest.data
let withIndirect: VirtioFeatures = [.version1, .indirectDesc]

@Suite struct ChainHappyPaths {
    @Test func directChainSplitsReadableAndWritable() throws {
        let g = try FakeGuest(size: 16)
        try g.setDescriptor(4, Descriptor(addr: D, len: 16, flags: R | N, next: 9))
        try g.setDescriptor(9, Descriptor(addr: D + 0x100, len: 512, flags: R | N, next: 2))
        try g.setDescriptor(2, Descriptor(addr: D + 0x1000, len: 1, flags: W | N, next: 15))
        try g.setDescriptor(15, Descriptor(addr: D + 0x2000, len: 100, flags: W))
        var q = try g.queue()
        try g.offer(4)
        let c = try #require(try q.popChain())
        #expect(c.head == 4)
        #expect(c.readable == [Buffer(addr: D, len: 16), Buffer(addr: D + 0x100, len: 512)])
        #expect(c.writable == [Buffer(addr: D + 0x1000, len: 1), Buffer(addr: D + 0x2000, len: 100)])
        #expect(c.readableLength == 528 && c.writableLength == 101 && c.descriptorCount == 4)
    }

    @Test func singleDescriptor() throws {
        let g = try FakeGuest(size: 2)
        try g.setDescriptor(1, Descriptor(addr: D, len: 64, flags: W, next: 7))  // next ignored without NEXT
        let c = try g.queue().chain(head: 1)
        #expect(c.readable.isEmpty && c.writable == [Buffer(addr: D, len: 64)])
    }

    @Test func indirectChain() throws {
        let g = try FakeGuest(size: 8)
        let table = D + 0x8000
        let len = try g.writeTable(at: table, [
            Descriptor(addr: D, len: 16, flags: R | N, next: 2),
            Descriptor(addr: D + 0x300, len: 1, flags: W),
            Descriptor(addr: D + 0x100, len: 4096, flags: R | N, next: 1),
        ])
        try g.setDescriptor(3, Descriptor(addr: table, len: len, flags: I))
        let c = try g.queue(features: withIndirect).chain(head: 3)
        #expect(c.readable == [Buffer(addr: D, len: 16), Buffer(addr: D + 0x100, len: 4096)])
        #expect(c.writable == [Buffer(addr: D + 0x300, len: 1)])
        #expect(c.descriptorCount == 3)
    }

    /// §2.7.5.3.2: direct descriptors followed by one indirect one; the WRITE flag on the
    /// descriptor that points at the table is ignored.
    @Test func directThenIndirectIgnoringWriteFlag() throws {
        let g = try FakeGuest(size: 8)
        let table = D + 0x8000
        let len = try g.writeTable(at: table, [
            Descriptor(addr: D + 0x100, len: 32, flags: R | N, next: 1),
            Descriptor(addr: D + 0x200, len: 8, flags: W),
        ])
        try g.setDescriptor(0, Descriptor(addr: D, len: 16, flags: R | N, next: 1))
        try g.setDescriptor(1, Descriptor(addr: table, len: len, flags: I | W))
        let c = try g.queue(features: withIndirect).chain(head: 0)
        #expect(c.readable == [Buffer(addr: D, len: 16), Buffer(addr: D + 0x100, len: 32)])
        #expect(c.writable == [Buffer(addr: D + 0x200, len: 8)])
    }

    /// Zero-length descriptors carry no bytes: counted, ordered, but not listed, and their
    /// address is irrelevant. An all-empty chain is valid at this layer.
    @Test func zeroLengthDescriptors() throws {
        let g = try FakeGuest(size: 4)
        try g.setDescriptor(0, Descriptor(addr: .max, len: 0, flags: R | N, next: 1))
        try g.setDescriptor(1, Descriptor(addr: D, len: 4, flags: W | N, next: 2))
        try g.setDescriptor(2, Descriptor(addr: 0xDEAD_0000_0000, len: 0, flags: W))
        let c = try g.queue().chain(head: 0)
        #expect(c.readable.isEmpty && c.writable == [Buffer(addr: D, len: 4)] && c.descriptorCount == 3)
        try g.setDescriptor(3, Descriptor(addr: 0, len: 0))
        let empty = try g.queue().chain(head: 3)
        #expect(empty.readable.isEmpty && empty.writable.isEmpty && empty.readableLength == 0)
        // Still ordered: an empty readable descriptor after a writable one is refused.
        try g.setDescriptor(2, Descriptor(addr: 0, len: 0, flags: R))
        #expect(throws: VirtqueueError.readableAfterWritable(head: 0, index: 2, indirect: false)) {
            try g.queue().chain(head: 0)
        }
    }

    /// A chain exactly queue-size long, indirect descriptors included, is accepted.
    @Test func chainOfExactlyQueueSize() throws {
        let g = try FakeGuest(size: 4)
        let table = D + 0x8000
        let len = try g.writeTable(at: table, [
            Descriptor(addr: D + 0x10, len: 1, flags: N, next: 1),
            Descriptor(addr: D + 0x20, len: 1, flags: W),
        ])
        try g.setDescriptor(0, Descriptor(addr: D, len: 1, flags: N, next: 1))
        try g.setDescriptor(1, Descriptor(addr: D + 1, len: 1, flags: N, next: 2))
        try g.setDescriptor(2, Descriptor(addr: table, len: len, flags: I))
        let c = try g.queue(features: withIndirect).chain(head: 0)
        #expect(c.descriptorCount == 4)
    }
}

/// One test per rule: each chain is valid except for the one thing the rule forbids.
@Suite struct ChainValidationRules {
    @Test func headOutOfRange() throws {
        let g = try FakeGuest(size: 8)
        var q = try g.queue()
        #expect(throws: VirtqueueError.headOutOfRange(head: 8, size: 8)) { try q.chain(head: 8) }
        try g.offer(0xFFFF)
        #expect(throws: VirtqueueError.headOutOfRange(head: 0xFFFF, size: 8)) { try q.popChain() }
        #expect(q.nextAvail == 1)  // consumed: the device decides what to do with it
    }

    @Test func nextOutOfRange() throws {
        let g = try FakeGuest(size: 8)
        try g.setDescriptor(0, Descriptor(addr: D, len: 8, flags: N, next: 7))
        try g.setDescriptor(7, Descriptor(addr: D, len: 8))
        _ = try g.queue().chain(head: 0)
        try g.setDescriptor(0, Descriptor(addr: D, len: 8, flags: N, next: 8))
        #expect(throws: VirtqueueError.nextOutOfRange(head: 0, index: 0, next: 8, indirect: false)) {
            try g.queue().chain(head: 0)
        }
    }

    @Test func nextOutOfRangeInIndirectTable() throws {
        let g = try FakeGuest(size: 8)
        let table = D + 0x8000
        // Index 2 is inside the queue but outside this 2-entry table.
        let len = try g.writeTable(at: table, [Descriptor(addr: D, len: 8, flags: N, next: 2), Descriptor(addr: D, len: 8)])
        try g.setDescriptor(0, Descriptor(addr: table, len: len, flags: I))
        #expect(throws: VirtqueueError.nextOutOfRange(head: 0, index: 0, next: 2, indirect: true)) {
            try g.queue(features: withIndirect).chain(head: 0)
        }
    }

    @Test func loopHitsHopLimit() throws {
        let g = try FakeGuest(size: 8)
        try g.setDescriptor(0, Descriptor(addr: D, len: 8, flags: N, next: 1))
        try g.setDescriptor(1, Descriptor(addr: D, len: 8, flags: N, next: 0))
        #expect(throws: VirtqueueError.descriptorLoop(head: 0, index: 0, indirect: false)) { try g.queue().chain(head: 0) }
        // Self-loop of writable zero-length descriptors: no bytes, still ends.
        try g.setDescriptor(5, Descriptor(addr: 0, len: 0, flags: W | N, next: 5))
        #expect(throws: VirtqueueError.descriptorLoop(head: 5, index: 5, indirect: false)) { try g.queue().chain(head: 5) }
    }

    @Test func loopInsideIndirectTable() throws {
        let g = try FakeGuest(size: 8)
        let table = D + 0x8000
        let len = try g.writeTable(at: table, [
            Descriptor(addr: D, len: 8, flags: N, next: 1),
            Descriptor(addr: D, len: 8, flags: N, next: 0),
        ])
        try g.setDescriptor(0, Descriptor(addr: table, len: len, flags: I))
        #expect(throws: VirtqueueError.descriptorLoop(head: 0, index: 0, indirect: true)) {
            try g.queue(features: withIndirect).chain(head: 0)
        }
    }

    /// §2.7.5.3.1: the queue-size limit counts indirect descriptors too.
    @Test func hopLimitCountsIndirectDescriptors() throws {
        let g = try FakeGuest(size: 4)
        let table = D + 0x8000
        let len = try g.writeTable(at: table, [
            Descriptor(addr: D, len: 1, flags: N, next: 1),
            Descriptor(addr: D, len: 1, flags: N, next: 2),
            Descriptor(addr: D, len: 1),
        ])
        try g.setDescriptor(0, Descriptor(addr: D, len: 1, flags: N, next: 1))
        try g.setDescriptor(1, Descriptor(addr: D, len: 1, flags: N, next: 2))
        try g.setDescriptor(2, Descriptor(addr: table, len: len, flags: I))
        #expect(throws: VirtqueueError.chainTooLong(head: 0, limit: 4)) {
            try g.queue(features: withIndirect).chain(head: 0)
        }
        _ = try g.queue(features: withIndirect).chain(head: 1)  // 1 + 3 = 4: fine
    }

    @Test func indirectRequiresFeature() throws {
        let g = try FakeGuest(size: 8)
        let len = try g.writeTable(at: D + 0x8000, [Descriptor(addr: D, len: 8)])
        try g.setDescriptor(0, Descriptor(addr: D + 0x8000, len: len, flags: I))
        _ = try g.queue(features: withIndirect).chain(head: 0)
        #expect(throws: VirtqueueError.indirectNotNegotiated(head: 0, index: 0)) { try g.queue().chain(head: 0) }
    }

    @Test(arguments: [0, 8, 24, 17, 16 * 9] as [UInt32])
    func indirectTableLength(length: UInt32) throws {
        let g = try FakeGuest(size: 8)
        try g.writeTable(at: D + 0x8000, Array(repeating: Descriptor(addr: D, len: 8), count: 9))
        try g.setDescriptor(0, Descriptor(addr: D + 0x8000, len: length, flags: I))
        #expect(throws: VirtqueueError.badIndirectLength(head: 0, index: 0, length: length)) {
            try g.queue(features: withIndirect).chain(head: 0)
        }
        try g.setDescriptor(0, Descriptor(addr: D + 0x8000, len: 16 * 8, flags: I))
        _ = try g.queue(features: withIndirect).chain(head: 0)
    }

    @Test func indirectTableInsideRAM() throws {
        let g = try FakeGuest(size: 8)
        let top = g.mem.ramEnd
        try g.setDescriptor(0, Descriptor(addr: top - 16, len: 32, flags: I))
        #expect(throws: VirtqueueError.bufferOutsideMemory(head: 0, address: top - 16, length: 32)) {
            try g.queue(features: withIndirect).chain(head: 0)
        }
        try g.setDescriptor(0, Descriptor(addr: .max - 15, len: 32, flags: I))
        #expect(throws: VirtqueueError.bufferOutsideMemory(head: 0, address: .max - 15, length: 32)) {
            try g.queue(features: withIndirect).chain(head: 0)
        }
    }

    @Test func nestedIndirect() throws {
        let g = try FakeGuest(size: 8)
        let inner = try g.writeTable(at: D + 0x9000, [Descriptor(addr: D, len: 8)])
        let outer = try g.writeTable(at: D + 0x8000, [Descriptor(addr: D + 0x9000, len: inner, flags: I)])
        try g.setDescriptor(0, Descriptor(addr: D + 0x8000, len: outer, flags: I))
        #expect(throws: VirtqueueError.nestedIndirect(head: 0, index: 0)) {
            try g.queue(features: withIndirect).chain(head: 0)
        }
    }

    @Test func indirectWithNext() throws {
        let g = try FakeGuest(size: 8)
        let len = try g.writeTable(at: D + 0x8000, [Descriptor(addr: D, len: 8)])
        try g.setDescriptor(0, Descriptor(addr: D + 0x8000, len: len, flags: I | N, next: 1))
        try g.setDescriptor(1, Descriptor(addr: D, len: 8, flags: W))
        #expect(throws: VirtqueueError.indirectWithNext(head: 0, index: 0)) {
            try g.queue(features: withIndirect).chain(head: 0)
        }
    }

    @Test func readableAfterWritable() throws {
        let g = try FakeGuest(size: 8)
        try g.setDescriptor(0, Descriptor(addr: D, len: 8, flags: W | N, next: 1))
        try g.setDescriptor(1, Descriptor(addr: D, len: 8, flags: R))
        #expect(throws: VirtqueueError.readableAfterWritable(head: 0, index: 1, indirect: false)) {
            try g.queue().chain(head: 0)
        }
        // Across the direct/indirect boundary too.
        let len = try g.writeTable(at: D + 0x8000, [Descriptor(addr: D, len: 8, flags: R)])
        try g.setDescriptor(1, Descriptor(addr: D + 0x8000, len: len, flags: I))
        #expect(throws: VirtqueueError.readableAfterWritable(head: 0, index: 0, indirect: true)) {
            try g.queue(features: withIndirect).chain(head: 0)
        }
    }

    @Test func buffersInsideRAM() throws {
        let g = try FakeGuest(size: 8)
        let top = g.mem.ramEnd
        try g.setDescriptor(0, Descriptor(addr: top - 8, len: 8, flags: W))
        _ = try g.queue().chain(head: 0)
        try g.setDescriptor(0, Descriptor(addr: top - 8, len: 9, flags: W))
        #expect(throws: VirtqueueError.bufferOutsideMemory(head: 0, address: top - 8, length: 9)) {
            try g.queue().chain(head: 0)
        }
        // addr + len wraps 64 bits.
        try g.setDescriptor(0, Descriptor(addr: .max - 3, len: 0x100))
        #expect(throws: VirtqueueError.bufferOutsideMemory(head: 0, address: .max - 3, length: 0x100)) {
            try g.queue().chain(head: 0)
        }
        // In an indirect table.
        let len = try g.writeTable(at: D + 0x8000, [Descriptor(addr: 0xC000_0000, len: 1)])
        try g.setDescriptor(0, Descriptor(addr: D + 0x8000, len: len, flags: I))
        #expect(throws: VirtqueueError.bufferOutsideMemory(head: 0, address: 0xC000_0000, length: 1)) {
            try g.queue(features: withIndirect).chain(head: 0)
        }
    }

    /// A buffer straddling the MMIO hole is two pieces of RAM, not one: refused.
    @Test func bufferAcrossRegions() throws {
        let m = try GuestMemory(size: 16 << 20, holeStart: 8 << 20, holeEnd: 12 << 20)
        let g = try FakeGuest(size: 8, memory: m)
        try g.setDescriptor(0, Descriptor(addr: (8 << 20) - 16, len: 16))
        _ = try g.queue().chain(head: 0)
        try g.setDescriptor(0, Descriptor(addr: (8 << 20) - 16, len: 17))
        #expect(throws: VirtqueueError.bufferOutsideMemory(head: 0, address: (8 << 20) - 16, length: 17)) {
            try g.queue().chain(head: 0)
        }
        try g.setDescriptor(0, Descriptor(addr: 12 << 20, len: 16))
        _ = try g.queue().chain(head: 0)
    }

    /// §2.7.5.2: at most 2^32 - 1 bytes in all (used.len is 32 bits).
    @Test func totalLengthFitsUInt32() throws {
        // One 4 GiB + 4 KiB region (reserved lazily, never touched).
        let m = try GuestMemory(size: (4 << 30) + 4096, holeStart: 1 << 40, holeEnd: 1 << 40)
        let g = try FakeGuest(size: 8, memory: m)
        try g.setDescriptor(0, Descriptor(addr: 0x1000, len: UInt32.max - 0x1000, flags: N, next: 1))
        try g.setDescriptor(1, Descriptor(addr: 0, len: 0x1000, flags: W))
        let c = try g.queue().chain(head: 0)
        #expect(UInt64(c.readableLength) + UInt64(c.writableLength) == UInt64(UInt32.max))
        try g.setDescriptor(1, Descriptor(addr: 0, len: 0x1001, flags: W))
        #expect(throws: VirtqueueError.chainTooLarge(head: 0)) { try g.queue().chain(head: 0) }
    }

    /// The chain is copied out once: later guest writes do not change a validated chain.
    @Test func chainIsASnapshot() throws {
        let g = try FakeGuest(size: 8)
        try g.setDescriptor(0, Descriptor(addr: D, len: 8, flags: W))
        let c = try g.queue().chain(head: 0)
        try g.setDescriptor(0, Descriptor(addr: .max - 1, len: 0xFFFF, flags: W))
        #expect(c.writable == [Buffer(addr: D, len: 8)])
    }
}

@Suite struct ReaderWriter {
    @Test func readAcrossBuffers() throws {
        let g = try FakeGuest(size: 8)
        try g.mem.write(Array(0..<10) as [UInt8], at: D)
        try g.mem.write(Array(10..<13) as [UInt8], at: D + 0x100)
        try g.mem.write([0xAA, 0xBB], at: D + 0x200)
        try g.setDescriptor(0, Descriptor(addr: D, len: 10, flags: N, next: 1))
        try g.setDescriptor(1, Descriptor(addr: D + 0x100, len: 3, flags: N, next: 2))
        try g.setDescriptor(2, Descriptor(addr: D + 0x200, len: 2, flags: W))
        let c = try g.queue().chain(head: 0)
        var r = c.reader()
        #expect(r.remaining == 13)
        #expect(try r.read(UInt32.self) == 0x0302_0100)
        #expect(r.skip(4) == 4)
        #expect(try r.read(UInt32.self) == 0x0B0A_0908)  // spans buffers 0 and 1
        #expect(throws: VirtqueueError.bufferTooShort(needed: 2, available: 1)) { try r.read(UInt16.self) }
        #expect(try r.readBytes(100) == [12])  // never the writable bytes after it
        #expect(r.remaining == 0)
        #expect(try r.readBytes(4) == [])
    }

    @Test func writeAcrossBuffers() throws {
        let g = try FakeGuest(size: 8)
        try g.mem.fill(0xEE, at: D, count: 0x300)
        try g.setDescriptor(0, Descriptor(addr: D, len: 4, flags: R | N, next: 1))
        try g.setDescriptor(1, Descriptor(addr: D + 0x100, len: 3, flags: W | N, next: 2))
        try g.setDescriptor(2, Descriptor(addr: D + 0x200, len: 2, flags: W))
        var w = try g.queue().chain(head: 0).writer()
        #expect(w.remaining == 5)
        #expect(try w.write([1, 2, 3, 4]) == 4)
        #expect(throws: VirtqueueError.bufferTooShort(needed: 2, available: 1)) { try w.write(UInt16(0x0605)) }
        try w.write(UInt8(5))
        #expect(try w.write([9, 9]) == 0)
        #expect(w.bytesWritten == 5 && w.remaining == 0)
        #expect(try g.mem.readBytes(at: D, count: 5) == [0xEE, 0xEE, 0xEE, 0xEE, 0xEE])  // readable part untouched
        #expect(try g.mem.readBytes(at: D + 0x100, count: 4) == [1, 2, 3, 0xEE])
        #expect(try g.mem.readBytes(at: D + 0x200, count: 3) == [4, 5, 0xEE])
    }

    @Test func partialWriteAndSkip() throws {
        let g = try FakeGuest(size: 8)
        try g.setDescriptor(0, Descriptor(addr: D, len: 6, flags: W))
        var w = try g.queue().chain(head: 0).writer()
        #expect(w.skip(5) == 5)
        #expect(try w.write([7, 8, 9]) == 1)  // as much as fits
        #expect(w.bytesWritten == 6)
        #expect(try g.mem.read(UInt8.self, at: D + 5) == 7)
    }
}
