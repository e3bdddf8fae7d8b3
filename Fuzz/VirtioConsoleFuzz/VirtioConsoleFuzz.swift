// libFuzzer entry for virtio-console (Devices/VirtioConsole.swift, virtio 1.2 §5.3):
// arbitrary bytes become the driver's receiveq and transmitq (descriptor tables,
// available rings, buffers) in the fake guest's RAM, plus host input and a sequence of
// notifications, service requests, resets and config-space writes. Nothing may trap or
// trip ASan; every EMERG_WRITE byte reaches the sink; pending host input never exceeds
// what was accepted or the buffer's capacity; a failed device takes no input and
// touches nothing until reset. Built and run by Scripts/fuzz-console.
//
// Input: byte 0 queue sizes (rx 1 << (b & 7), tx 1 << ((b >> 4) & 7), both at most 128);
// byte 1 features (bit 0 INDIRECT_DESC, bit 1 EVENT_IDX); byte 2 host input length
// (x 8); byte 3 the operation list's length n; then n operation bytes (bits 0-2: 0
// notify rx, 1 notify tx, 2 service, 3 host input, 4 emergency write, 5 reset and
// re-activate, others nothing), then the guest image copied to 0x1000: rx descriptor
// table at 0x1000, rx available ring right after it, tx descriptor table at 0x2000, tx
// available ring after it, buffers anywhere. The used rings are at 0x7000 and 0x7800.
#if canImport(Glibc)
import Glibc
#endif
import Devices
import GuestMemory
import Virtio

final class Sink: ByteSink, @unchecked Sendable {
    var count = 0
    func write(_ b: UnsafeRawBufferPointer) { count += b.count }
}

final class Wake: Notifier, @unchecked Sendable {
    var signals = 0
    func signal() { signals += 1 }
}

// One backend for all runs: building one per input (its 16 KiB input buffer and locks)
// made the harness 100 times slower.
let sink = Sink()
let backend = VirtioConsoleBackend(sink: sink, service: Wake())

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtioConsole(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    guard input.count >= 4 else { return 0 }
    let rxSize = UInt16(1) << UInt16(input[0] & 7), txSize = UInt16(1) << UInt16((input[0] >> 4) & 7)
    var features: VirtioFeatures = [.version1, .consoleEmergencyWrite]
    if input[1] & 1 != 0 { features.insert(.indirectDesc) }
    if input[1] & 2 != 0 { features.insert(.ringEventIdx) }
    let hostLength = Int(input[2]) * 8
    let ops = input[4..<min(input.count, 4 + Int(input[3]))]
    let image = UnsafeRawBufferPointer(rebasing: input[(4 + ops.count)...])

    var model = VirtioConsoleModel(backend: backend)
    model.reset()
    drainPendingInput(&model)
    sink.count = 0
    try! memory.fill(0, at: 0, count: 32 << 10)
    try! memory.fill(0, at: 48 << 10, count: 32 << 10)
    try! memory.write(bytes: UnsafeRawBufferPointer(rebasing: image.prefix(inputCap)), at: descBase)
    let rx = try! SplitQueue(memory: memory, size: rxSize, maxSize: 128, descriptorTable: 0x1000,
                             availableRing: 0x1000 + 16 * UInt64(rxSize), usedRing: 0x7000, features: features)
    let tx = try! SplitQueue(memory: memory, size: txSize, maxSize: 128, descriptorTable: 0x2000,
                             availableRing: 0x2000 + 16 * UInt64(txSize), usedRing: 0x7800, features: features)

    try! model.activate(queues: [rx, tx], features: features)
    precondition(backend.receiveReady)
    let host = (0..<hostLength).map { UInt8(truncatingIfNeeded: $0) }
    var accepted = 0
    var failed = false

    for op in ops {
        let sinkBefore = sink.count
        var outcome: BackendOutcome?
        switch op & 7 {
        case 0: outcome = backend.queueNotified(VirtioCon.receiveQueue)
        case 1: outcome = backend.queueNotified(VirtioCon.transmitQueue)
        case 2: outcome = backend.serviceRequested()
        case 3:
            let offered = host.count - min(accepted, host.count)
            let n = host.withUnsafeBytes { backend.receive(UnsafeRawBufferPointer(rebasing: $0[(host.count - offered)...])) }
            precondition(n <= offered)
            accepted += n
        case 4:
            let before = sink.count
            withUnsafeBytes(of: UInt32(op)) { model.writeConfig(offset: 8, from: $0) }
            precondition(sink.count == before + 1, "EMERG_WRITE lost")
            continue
        case 5:
            model.reset()
            precondition(!backend.receiveReady)
            failed = false
            try! model.activate(queues: [rx, tx], features: features)
        default: continue
        }
        if let o = outcome {
            if let f = o.failure { _ = f.count }
            precondition(o.epoch == backend.epoch)
            if failed {
                precondition(o.requests == 0 && o.failure == nil && sink.count == sinkBefore, "a failed device did work")
            }
            if o.failure != nil {
                failed = true
                precondition(!backend.receiveReady, "failed device still takes input")
            }
        }
        precondition(backend.pendingInput <= VirtioCon.pendingCapacity && backend.pendingInput <= accepted)
    }
    model.reset()
    return 0
}

/// Input left pending by the previous run goes out through the device itself: a
/// one-entry receive queue whose only buffer (16 KiB at 48K) holds all it can queue.
/// Each run then starts from an empty device, so runs do not depend on each other.
func drainPendingInput(_ model: inout VirtioConsoleModel) {
    guard backend.pendingInput > 0 else { return }
    try! memory.write(UInt64(48 << 10), at: 0x1000)
    try! memory.write(UInt32(VirtioCon.pendingCapacity), at: 0x1008)
    try! memory.write(UInt16(2), at: 0x100C)  // VIRTQ_DESC_F_WRITE
    try! memory.write(UInt16(0), at: 0x1010)  // avail.flags
    try! memory.write(UInt16(1), at: 0x1012)  // avail.idx
    try! memory.write(UInt16(0), at: 0x1014)  // avail.ring[0]
    let rx = try! SplitQueue(memory: memory, size: 1, maxSize: 128, descriptorTable: 0x1000, availableRing: 0x1010,
                             usedRing: 0x7000, features: [.version1])
    try! model.activate(queues: [rx, nil], features: [.version1])
    _ = backend.queueNotified(VirtioCon.receiveQueue)
    precondition(backend.pendingInput == 0, "pending input not drained")
    model.reset()
}
