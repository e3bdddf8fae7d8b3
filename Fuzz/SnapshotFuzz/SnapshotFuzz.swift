// libFuzzer entry for the snapshot reader (docs/snapshot.md): whatever bytes a state
// file holds, `VMSnapshot(parsing:)` returns a value or a SnapshotError, never a trap, a
// sanitizer report or a hang; an accepted file re-encodes to one that parses to the same
// state; each accepted virtio device state is put on a transport over a small guest RAM
// (the restore's own checks: queue layout, status order, features), which may refuse it
// but never crash. Built and run by Scripts/fuzz-snapshot.
import GuestMemory
import Snapshot
import Virtio

/// A device with the console's queue layout that accepts any activation.
struct AnyDevice: VirtioDeviceModel {
    var deviceType: VirtioDeviceType { .console }
    var deviceFeatures: VirtioFeatures { [.ringEventIdx, .indirectDesc] }
    var queueMaxSizes: [UInt16] { [256, 256] }
    var configSize: Int { 12 }
    mutating func readConfig(offset: Int, into data: UnsafeMutableRawBufferPointer) {}
    mutating func writeConfig(offset: Int, from data: UnsafeRawBufferPointer) {}
    mutating func activate(queues: [SplitQueue?], features: VirtioFeatures) throws(DeviceActivationError) {}
    mutating func reset() {}
}

let memory = try! GuestMemory(size: 1 << 20)

/// The input with every CRC the container layout lets us find recomputed, so mutations
/// reach the section decoders instead of stopping at a checksum.
func withFixedChecksums(_ input: [UInt8]) -> [UInt8] {
    var b = input
    func put(_ v: UInt32, at o: Int) { for i in 0..<4 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
    guard b.count >= SnapshotFormat.headerSize else { return b }
    put(CRC32.checksum(b[0..<20]), at: 20)
    var o = SnapshotFormat.headerSize
    while o + SnapshotFormat.sectionHeaderSize <= b.count {
        var len: UInt64 = 0
        for i in 0..<8 { len |= UInt64(b[o + 4 + i]) << (8 * UInt64(i)) }
        let start = o + SnapshotFormat.sectionHeaderSize
        guard len <= UInt64(b.count - start) else { break }
        put(CRC32.checksum(b[start..<(start + Int(len))]), at: o + 12)
        o = start + Int(len)
    }
    return b
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSnapshot(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let raw = Array(UnsafeBufferPointer(start: data, count: data == nil ? 0 : size))
    check(raw)
    check(withFixedChecksums(raw))
    return 0
}

func check(_ bytes: [UInt8]) {
    do {
        let s = try VMSnapshot(parsing: bytes, host: .pvm)
        let again = try! VMSnapshot(parsing: s.encoded(), host: .pvm)
        precondition(again.definition == s.definition && again.virtio == s.virtio && again.disks == s.disks
                     && again.irqchips == s.irqchips && again.consoleLog == s.consoleLog, "round trip changed the state")
        for d in s.virtio {
            var t = MMIOTransport(device: AnyDevice(), memory: memory)
            _ = try? t.restore(d.transport)
        }
    } catch {
        _ = error.description
    }
}
