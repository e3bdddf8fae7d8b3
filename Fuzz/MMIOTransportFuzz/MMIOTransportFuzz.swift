// libFuzzer entry for the virtio-mmio register file (virtio 1.2 §4.2.2): arbitrary bytes
// become a sequence of guest register reads and writes against an MMIOTransport in front
// of a fake device with two queues in the fake guest's RAM. Nothing may trap or trip ASan,
// and after every access the state machine's invariants hold: Status bits only in the
// order of §3.1.1, negotiated features offered and VERSION_1, a ready queue's rings
// inside RAM, activate only at DRIVER_OK, notifications only for live queues, config
// accesses only inside configSize, reset back to the initial state. A notified queue is
// served (chains popped, returned) so a queue the transport accepted is used for real.
// Built and run by Scripts/fuzz-mmio.
//
// Input: byte 0 the device shape (bits 0-4 configSize 0-31; bit 5 refuse FEATURES_OK with
// EVENT_IDX; bit 6 activate fails; bit 7 the second queue's maximum is 1). Byte 1 the
// first queue's maximum (1 << (b & 15), clipped to 32768). Then 6-byte operations: kind
// (bits 0-1: 0 write a known register, 1 read a known register, 2 config access, 3 any
// offset; bits 2-3 width 1/2/4/8; bit 4 a value masked into RAM, 16-aligned), an
// index or offset byte, and a 32-bit little-endian value.
#if canImport(Glibc)
import Glibc
#endif
import GuestMemory
import Virtio

let registers: [UInt64] = [
    MMIORegister.magicValue, MMIORegister.version, MMIORegister.deviceID, MMIORegister.vendorID,
    MMIORegister.deviceFeatures, MMIORegister.deviceFeaturesSel, MMIORegister.driverFeatures,
    MMIORegister.driverFeaturesSel, MMIORegister.queueSel, MMIORegister.queueNumMax, MMIORegister.queueNum,
    MMIORegister.queueReady, MMIORegister.queueNotify, MMIORegister.interruptStatus, MMIORegister.interruptACK,
    MMIORegister.status, MMIORegister.queueDescLow, MMIORegister.queueDescHigh, MMIORegister.queueDriverLow,
    MMIORegister.queueDriverHigh, MMIORegister.queueDeviceLow, MMIORegister.queueDeviceHigh, MMIORegister.shmSel,
    MMIORegister.shmLenLow, MMIORegister.shmLenHigh, MMIORegister.shmBaseLow, MMIORegister.shmBaseHigh,
    MMIORegister.queueReset, MMIORegister.configGeneration,
]

/// What the fake device saw, shared by the model copies inside the transport.
final class Record {
    var activations = 0
    var resets = 0
    var queues: [SplitQueue?] = []
}

struct FakeDevice: VirtioDeviceModel {
    let record: Record
    let configSize: Int
    let refuseEventIdx: Bool
    let failActivate: Bool
    let queueMaxSizes: [UInt16]
    var deviceType: VirtioDeviceType { .block }
    var deviceFeatures: VirtioFeatures { [.indirectDesc, .ringEventIdx, .blkFlush] }

    mutating func readConfig(offset: Int, into data: UnsafeMutableRawBufferPointer) {
        precondition(offset >= 0 && offset + data.count <= configSize, "config read outside configSize")
        for i in data.indices { data[i] = UInt8(truncatingIfNeeded: offset + i) }
    }

    mutating func writeConfig(offset: Int, from data: UnsafeRawBufferPointer) {
        precondition(offset >= 0 && offset + data.count <= configSize, "config write outside configSize")
    }

    func acceptFeatures(_ features: VirtioFeatures) -> Bool {
        !(refuseEventIdx && features.contains(.ringEventIdx))
    }

    mutating func activate(queues: [SplitQueue?], features: VirtioFeatures) throws(DeviceActivationError) {
        precondition(queues.count == queueMaxSizes.count)
        record.activations += 1
        if failActivate { throw DeviceActivationError(reason: "fuzz: activation refused") }
        record.queues = queues
    }

    mutating func reset() {
        record.resets += 1
        record.queues = []
    }
}

func checkInvariants(_ t: MMIOTransport<FakeDevice>) {
    let s = t.status
    if s.contains(.driverOK) { precondition(s.contains(.featuresOK), "DRIVER_OK without FEATURES_OK") }
    if s.contains(.featuresOK) {
        precondition(s.contains(.driver), "FEATURES_OK without DRIVER")
        precondition(t.negotiatedFeatures.isSubset(of: t.offeredFeatures), "negotiated features not offered")
        precondition(t.negotiatedFeatures.contains(.version1), "FEATURES_OK without VERSION_1")
    } else {
        precondition(t.negotiatedFeatures.isEmpty)
    }
    if s.contains(.driver) { precondition(s.contains(.acknowledge), "DRIVER without ACKNOWLEDGE") }
    precondition(s.contains(.deviceNeedsReset) == (t.failureReason != nil), "DEVICE_NEEDS_RESET and its reason disagree")
    for q in 0..<t.queueCount {
        guard let queue = t.queue(q) else { continue }
        precondition(s.contains(.featuresOK), "queue \(q) ready before FEATURES_OK")
        let sizes = SplitQueue.areaSizes(size: queue.size)!
        precondition(queue.size > 0 && queue.size & (queue.size - 1) == 0 && queue.size <= queue.maxSize)
        precondition(memory.contains(queue.descriptorTable, length: sizes.descriptorTable), "descriptor table outside RAM")
        precondition(memory.contains(queue.availableRing, length: sizes.availableRing), "available ring outside RAM")
        precondition(memory.contains(queue.usedRing, length: sizes.usedRing), "used ring outside RAM")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMMIOTransport(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    guard input.count >= 2 else { return 0 }
    try! memory.fill(0, at: 0, count: 32 << 10)
    try! memory.fill(0, at: 48 << 10, count: 32 << 10)
    let record = Record()
    let max0 = UInt16(min(1 << Int(input[1] & 15), 32768))
    let device = FakeDevice(record: record, configSize: Int(input[0] & 31), refuseEventIdx: input[0] & 32 != 0,
                            failActivate: input[0] & 64 != 0, queueMaxSizes: [max0, input[0] & 128 != 0 ? 1 : 256])
    var t = MMIOTransport(device: device, memory: memory)
    var live: [SplitQueue?] = []
    var bytes = [UInt8](repeating: 0, count: 8)

    var i = 2
    while i + 6 <= input.count {
        let kind = input[i], index = input[i + 1]
        var value = UInt32(input[i + 2]) | UInt32(input[i + 3]) << 8 | UInt32(input[i + 4]) << 16 | UInt32(input[i + 5]) << 24
        i += 6
        if kind & 16 != 0 { value = (value & 0x1_3FF0) % (80 << 10) }
        let width = [1, 2, 4, 8][Int(kind >> 2) & 3]
        let offset: UInt64
        let write: Bool
        switch kind & 3 {
        case 0: offset = registers[Int(index) % registers.count]; write = true
        case 1: offset = registers[Int(index) % registers.count]; write = false
        case 2: offset = VirtioMMIO.configOffset + UInt64(index & 63); write = kind & 32 != 0
        default: offset = UInt64(index) << 1 | UInt64(kind >> 7); write = kind & 32 != 0
        }
        let w = (kind & 3) < 2 ? 4 : width
        let statusBefore = t.status
        let activationsBefore = record.activations
        if write {
            for b in 0..<8 { bytes[b] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(b % 4))) }
            let action = bytes.withUnsafeBytes { t.write(offset: offset, from: UnsafeRawBufferPointer(rebasing: $0[0..<w])) }
            _ = "\(action)"
            switch action {
            case .none:
                precondition(record.activations == activationsBefore || t.status.contains(.driverOK))
            case .activate:
                precondition(offset == MMIORegister.status && t.status.contains(.driverOK), "activate without DRIVER_OK")
                precondition(!statusBefore.contains(.driverOK), "activated twice")
                precondition(record.activations == activationsBefore + 1)
                live = record.queues
                precondition(live.count == t.queueCount)
                for q in 0..<live.count { precondition((live[q] == nil) == (t.queue(q) == nil)) }
            case .notify(let q):
                precondition(offset == MMIORegister.queueNotify && t.status.contains(.driverOK))
                precondition(Int(q) < t.queueCount && t.queue(Int(q)) != nil, "notify for a queue that is not live")
                if Int(q) < live.count, var queue = live[Int(q)] {
                    serve(&queue)
                    live[Int(q)] = queue
                }
            case .reset:
                precondition(offset == MMIORegister.status && value == 0)
                precondition(t.status.isEmpty && t.interruptStatus.isEmpty && t.failureReason == nil)
                for q in 0..<t.queueCount { precondition(t.queue(q) == nil, "queue \(q) survived reset") }
                live = []
            case .failed(_, let interrupt):
                precondition(t.status.contains(.deviceNeedsReset))
                precondition(interrupt == t.status.contains(.driverOK))
                if interrupt { precondition(t.interruptStatus.contains(.configChange)) }
            }
        } else {
            bytes.withUnsafeMutableBytes { t.read(offset: offset, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<w])) }
            var v: UInt32 = 0
            if w == 4 { for b in 0..<4 { v |= UInt32(bytes[b]) << (8 * UInt32(b)) } }
            switch offset {
            case MMIORegister.magicValue where w == 4: precondition(v == VirtioMMIO.magicValue)
            case MMIORegister.version where w == 4: precondition(v == VirtioMMIO.version)
            case MMIORegister.status where w == 4: precondition(v == t.status.rawValue)
            case MMIORegister.interruptStatus where w == 4: precondition(v == t.interruptStatus.rawValue)
            default: break
            }
        }
        // The device signals used buffers or a config change now and then, as a real one would.
        if value & 0xF000_0000 == 0x1000_0000 { t.signalUsedBuffers() }
        if value & 0xF000_0000 == 0x2000_0000 { _ = t.configChanged() }
        checkInvariants(t)
    }
    return 0
}

/// What a device thread does for a notification: pop chains, walk them, return them.
/// Errors are the guest's problem (the real device fails), never a trap.
func serve(_ queue: inout SplitQueue) {
    for _ in 0..<(Int(queue.size) + 1) {
        do {
            guard let head = try queue.popAvailable() else { break }
            let len: UInt32
            do { len = try queue.chain(head: head).writableLength } catch { _ = "\(error)"; return }
            try queue.addUsed(head: head, len: min(len, 16))
        } catch {
            _ = "\(error)"
            return
        }
    }
    _ = try? queue.needsNotification()
}
