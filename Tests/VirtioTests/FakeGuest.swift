import GuestMemory
import Virtio

/// Plays the driver: lays out a split virtqueue's rings in a 16 MiB GuestMemory and
/// writes descriptors and available entries the way a guest would.
final class FakeGuest {
    let mem: GuestMemory
    let size: UInt16
    // Room for a 1024-entry queue: desc 16 KiB, avail ~2 KiB, used ~8 KiB.
    let desc: UInt64 = 0x1_0000
    let avail: UInt64 = 0x2_0000
    let used: UInt64 = 0x3_0000
    /// Data buffers and indirect tables go from here up.
    static let data: UInt64 = 0x10_0000
    private(set) var availIdx: UInt16 = 0

    init(size: UInt16 = 16, memory: GuestMemory? = nil) throws {
        mem = try memory ?? GuestMemory(size: 16 << 20)
        self.size = size
    }

    func queue(features: VirtioFeatures = [.version1], maxSize: UInt16 = 256) throws -> SplitQueue {
        try SplitQueue(memory: mem, size: size, maxSize: maxSize, descriptorTable: desc, availableRing: avail,
                       usedRing: used, features: features)
    }

    func setDescriptor(_ index: UInt16, _ d: Descriptor) throws {
        try mem.write(d.bytes, at: desc + 16 * UInt64(index))
    }

    /// Writes `descriptors` as an indirect table at `address`; returns its length in bytes.
    @discardableResult
    func writeTable(at address: UInt64, _ descriptors: [Descriptor]) throws -> UInt32 {
        for (i, d) in descriptors.enumerated() { try mem.write(d.bytes, at: address + 16 * UInt64(i)) }
        return UInt32(descriptors.count * 16)
    }

    /// Puts `head` in the next available slot and publishes avail.idx.
    func offer(_ head: UInt16) throws {
        try mem.write(head, at: avail + 4 + 2 * UInt64(availIdx % size))
        availIdx &+= 1
        try mem.write(availIdx, at: avail + 2)
    }

    func setAvailIdx(_ v: UInt16) throws {
        availIdx = v
        try mem.write(v, at: avail + 2)
    }

    func setAvailFlags(_ v: UInt16) throws { try mem.write(v, at: avail) }
    func setUsedEvent(_ v: UInt16) throws { try mem.write(v, at: avail + 4 + 2 * UInt64(size)) }

    func usedIdx() throws -> UInt16 { try mem.read(at: used + 2) }
    func usedFlags() throws -> UInt16 { try mem.read(at: used) }
    func availEvent() throws -> UInt16 { try mem.read(at: used + 4 + 8 * UInt64(size)) }
    func usedElement(_ slot: UInt16) throws -> (id: UInt32, len: UInt32) {
        let a = used + 4 + 8 * UInt64(slot)
        return (try mem.read(at: a), try mem.read(at: a + 4))
    }
}

let R: UInt16 = 0  // device-readable
let W = Descriptor.flagWrite
let N = Descriptor.flagNext
let I = Descriptor.flagIndirect
