// libFuzzer entry for the split virtqueue: arbitrary bytes become a driver's descriptor
// table, available ring and buffers. Every chain is popped and validated; valid chains
// are read and written through ChainReader/ChainWriter and returned in the used ring.
// Nothing may trap, trip ASan, loop forever, or change guest memory outside the chains'
// device-writable buffers and the used ring. Built and run by Scripts/fuzz-virtqueue.
//
// Input: byte 0 picks the queue size (1 << (b & 7): 1-128); byte 1 the features (bit 0
// INDIRECT_DESC, bit 1 EVENT_IDX). The rest is copied to guest address 0x1000: the
// descriptor table (16 * size bytes), right after it the available ring (flags, idx,
// ring[size], used_event), then free bytes that descriptors can point at as buffers or
// indirect tables. The used ring is at 0x7000.
#if canImport(Glibc)
import Glibc
#endif
import GuestMemory
import Virtio

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtqueue(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    guard input.count >= 2 else { return 0 }
    let queueSize = UInt16(1) << UInt16(input[0] & 7)
    var features: VirtioFeatures = [.version1]
    if input[1] & 1 != 0 { features.insert(.indirectDesc) }
    if input[1] & 2 != 0 { features.insert(.ringEventIdx) }

    // Fresh guest: zeroed RAM, then the input at 0x1000.
    try! memory.fill(0, at: 0, count: 32 << 10)
    try! memory.fill(0, at: 48 << 10, count: 32 << 10)
    let body = UnsafeRawBufferPointer(rebasing: input[2...])
    try! memory.write(bytes: UnsafeRawBufferPointer(rebasing: body.prefix(inputCap)), at: descBase)
    snapshot(into: &before)

    let availBase = descBase + 16 * UInt64(queueSize)
    var queue = try! SplitQueue(memory: memory, size: queueSize, maxSize: 128, descriptorTable: descBase,
                                availableRing: availBase, usedRing: usedBase, features: features)
    var writable: [Buffer] = []
    var scratch = [UInt8](repeating: 0, count: 512)
    let pattern = [UInt8](repeating: 0xA5, count: 300)

    // popAvailable ends by itself (at most `size` entries are pending); the cap is a guard.
    for _ in 0..<(4 * Int(queueSize) + 4) {
        let head: UInt16
        do {
            guard let h = try queue.popAvailable() else { break }
            head = h
        } catch {
            guard case .availIndexTooFarAhead = error else { preconditionFailure("pop: \(error)") }
            break
        }
        do {
            let chain = try queue.chain(head: head)
            // Invariants of a validated chain.
            precondition(chain.head == head && head < queueSize)
            precondition(chain.descriptorCount <= Int(queueSize))
            var rl: UInt64 = 0, wl: UInt64 = 0
            for b in chain.readable {
                precondition(b.len > 0 && memory.contains(b.addr, length: UInt64(b.len)))
                rl += UInt64(b.len)
            }
            for b in chain.writable {
                precondition(b.len > 0 && memory.contains(b.addr, length: UInt64(b.len)))
                wl += UInt64(b.len)
            }
            precondition(rl == UInt64(chain.readableLength) && wl == UInt64(chain.writableLength))
            precondition(rl + wl <= UInt64(UInt32.max))
            writable += chain.writable

            var reader = chain.reader()
            let n = try scratch.withUnsafeMutableBytes { p in try reader.read(into: p) }
            precondition(n == min(512, Int(chain.readableLength)))
            reader.skip(Int.max)
            precondition(reader.remaining == 0)

            var writer = chain.writer()
            let w = try writer.write(pattern)
            precondition(w == min(pattern.count, Int(chain.writableLength)))
            writer.skip(Int.max)
            precondition(writer.bytesWritten == Int(chain.writableLength) && writer.remaining == 0)
            try queue.addUsed(head: head, len: UInt32(min(w, Int(UInt32.max))))
        } catch {
            _ = "\(error)"  // every error must format
            try! queue.addUsed(head: head < queueSize ? head : 0, len: 0)
        }
        _ = try! queue.needsNotification()
    }
    _ = try! queue.enableNotifications()

    // Nothing outside the writable buffers and the used ring may have changed.
    let usedEnd = usedBase + 6 + 8 * UInt64(queueSize)
    forEachChangedByte { a in
        if a >= usedBase && a < usedEnd { return }
        precondition(writable.contains { a >= $0.addr && a - $0.addr < UInt64($0.len) },
                     "byte at \(a) changed outside the chains' writable buffers")
    }
    return 0
}

/// Calls `body(guestAddress)` for every RAM byte that differs from `before`. Compares
/// 1 KiB chunks with memcmp first: almost all of RAM is unchanged.
func forEachChangedByte(_ body: (UInt64) -> Void) {
    snapshot(into: &after)
    let chunk = 1024
    for start in stride(from: 0, to: after.count, by: chunk) {
        let same = before.withUnsafeBytes { b in
            after.withUnsafeBytes { a in memcmp(b.baseAddress! + start, a.baseAddress! + start, chunk) == 0 }
        }
        if same { continue }
        for i in start..<start + chunk where after[i] != before[i] { body(guestAddress(i)) }
    }
}
