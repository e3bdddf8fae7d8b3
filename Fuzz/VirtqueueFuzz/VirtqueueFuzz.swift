// libFuzzer entry for the split virtqueue: arbitrary bytes become a driver's descriptor
// table, available ring and buffers, with the rings placed and the indices started where
// the input says. Every chain is popped and validated; valid chains are read and written
// through ChainReader/ChainWriter and returned in the used ring. Nothing may trap, trip
// ASan, loop forever, or change guest memory outside the chains' device-writable buffers
// and the used ring; an independent model checks the layout validation (alignment, RAM
// bounds), every pop against avail.idx (16-bit wrap, too-far-ahead), the used ring's
// entries and index, and every notification decision (EVENT_IDX used_event/avail_event
// windows across the wrap, NO_INTERRUPT, NO_NOTIFY). Built and run by Scripts/fuzz-virtqueue.
//
// Input: byte 0 the queue size (1 << (b & 7): 1-128); byte 1 the features (bit 0
// INDIRECT_DESC, bit 1 EVENT_IDX); bytes 2-3 the start index (u16 LE, added to the
// avail.idx the input holds, so a seed's pending count survives any start); byte 4 the
// descriptor table's offset from 0x1000 (16 * (b & 31)) and the gap before the available
// ring (2 * (b >> 5)); byte 5 the used ring (bits 0-5: 4 * n past 0x7000, or past 0xC000
// with bit 6; bit 7: every area misplaced by the low bits, unaligned or outside RAM, to
// reach validate()'s errors). The rest is copied to guest address 0x1000.
#if canImport(Glibc)
import Glibc
#endif
import GuestMemory
import Virtio

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtqueue(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    guard input.count >= 6 else { return 0 }
    let queueSize = UInt16(1) << UInt16(input[0] & 7)
    var features: VirtioFeatures = [.version1]
    if input[1] & 1 != 0 { features.insert(.indirectDesc) }
    if input[1] & 2 != 0 { features.insert(.ringEventIdx) }
    let start = UInt16(input[2]) | UInt16(input[3]) << 8
    var descAddr = descBase + 16 * UInt64(input[4] & 31)
    var availAddr = descAddr + 16 * UInt64(queueSize) + 2 * UInt64(input[4] >> 5)
    var usedAddr = (input[5] & 64 != 0 ? 0xC000 : usedBase) + 4 * UInt64(input[5] & 63)
    if input[5] & 128 != 0 {
        let skew = UInt64(input[5] & 63)
        descAddr += skew & 15
        availAddr += skew & 1 != 0 ? 1 : (skew & 2 != 0 ? 0x8000 : 0)   // odd, or into the hole
        usedAddr = skew & 4 != 0 ? usedAddr + 2 : (skew & 8 != 0 ? 0x13FF0 : usedAddr)  // unaligned, or past the end
    }

    // Fresh guest: zeroed RAM, then the input at 0x1000, avail.idx moved by the start index.
    try! memory.fill(0, at: 0, count: 32 << 10)
    try! memory.fill(0, at: 48 << 10, count: 32 << 10)
    let body = UnsafeRawBufferPointer(rebasing: input[6...])
    try! memory.write(bytes: UnsafeRawBufferPointer(rebasing: body.prefix(inputCap)), at: descBase)
    if let idx = try? memory.read(at: availAddr + 2) as UInt16 { try! memory.write(idx &+ start, at: availAddr + 2) }
    snapshot(into: &before)

    // The layout rules of §2.7 (sizes, alignment 16/2/4, each area inside one RAM region).
    let areas: [(UInt64, UInt64, UInt64)] = [(descAddr, 16 * UInt64(queueSize), 16),
                                             (availAddr, 6 + 2 * UInt64(queueSize), 2),
                                             (usedAddr, 6 + 8 * UInt64(queueSize), 4)]
    let layoutOK = areas.allSatisfy { a, len, align in
        a % align == 0 && ((a + len <= 32 << 10) || (a >= 48 << 10 && a + len <= 80 << 10))
    }
    var queue: SplitQueue
    do {
        queue = try SplitQueue(memory: memory, size: queueSize, maxSize: 128, descriptorTable: descAddr,
                               availableRing: availAddr, usedRing: usedAddr, features: features, startIndex: start)
    } catch {
        _ = "\(error)"
        precondition(!layoutOK, "a valid layout refused: \(error)")
        switch error {
        case .misalignedArea, .areaOutsideMemory: return 0
        default: preconditionFailure("unexpected validation error \(error)")
        }
    }
    precondition(layoutOK, "an invalid layout accepted")
    let eventIdx = features.contains(.ringEventIdx)
    let mask = queueSize - 1
    func read16(_ a: UInt64) -> UInt16 { try! memory.read(at: a) }

    var writable: [Buffer] = []
    var scratch = [UInt8](repeating: 0, count: 512)
    let pattern = [UInt8](repeating: 0xA5, count: 300)
    // The model's cursors.
    var nextAvail = start, shadow = start, nextUsed = start, signalled = start
    var returned: [(UInt16, UInt32)] = []

    for round in 0..<(4 * Int(queueSize) + 4) {
        let head: UInt16
        let availIdx = read16(availAddr + 2)
        do {
            guard let h = try queue.popAvailable() else {
                precondition(nextAvail == shadow && availIdx == nextAvail, "pop found nothing with entries pending")
                break
            }
            if nextAvail == shadow {
                precondition(availIdx &- nextAvail <= queueSize && availIdx != nextAvail)
                shadow = availIdx
            }
            precondition(h == read16(availAddr + 4 + 2 * UInt64(nextAvail & mask)),
                         "head from the wrong ring slot")
            nextAvail &+= 1
            precondition(queue.nextAvail == nextAvail)
            head = h
        } catch {
            guard case .availIndexTooFarAhead = error else { preconditionFailure("pop: \(error)") }
            precondition(nextAvail == shadow && availIdx &- nextAvail > queueSize, "too far ahead, wrongly")
            break
        }
        var len: UInt32 = 0
        var returnedHead = head
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
            len = UInt32(min(w, Int(UInt32.max)))
        } catch {
            _ = "\(error)"  // every error must format
            returnedHead = head < queueSize ? head : 0
        }
        try! queue.addUsed(head: returnedHead, len: len)
        nextUsed &+= 1
        returned.append((returnedHead, len))
        precondition(queue.nextUsed == nextUsed && read16(usedAddr + 2) == nextUsed || overlapsUsed(writable, usedAddr, queueSize),
                     "used.idx not published")

        // Every few chains, a notification decision, checked against the driver's fields.
        if round % 3 == 2 || input[1] & 4 != 0 {
            let expected: Bool
            if eventIdx {
                let event = read16(availAddr + 4 + 2 * UInt64(queueSize))
                expected = (nextUsed &- event &- 1) < (nextUsed &- signalled)
                signalled = nextUsed
            } else {
                expected = read16(availAddr) & 1 == 0
            }
            precondition(try! queue.needsNotification() == expected, "needsNotification disagrees with the model")
        }
        if input[1] & 8 != 0 {
            try! queue.disableNotifications()
            if !eventIdx { precondition(read16(usedAddr) == 1, "NO_NOTIFY not set") }
        }
    }
    let more = try! queue.enableNotifications()
    precondition(more == (read16(availAddr + 2) != nextAvail), "enableNotifications' re-check")
    if eventIdx {
        precondition(read16(usedAddr + 4 + 8 * UInt64(queueSize)) == nextAvail, "avail_event not at last_avail_idx")
    } else {
        precondition(read16(usedAddr) == 0, "NO_NOTIFY still set")
    }

    // The used ring holds the last `size` returned chains at their slots (unless a
    // writable buffer lay over it, which only harms the guest).
    if !returned.isEmpty && !overlapsUsed(writable, usedAddr, queueSize) {
        precondition(read16(usedAddr + 2) == nextUsed, "used.idx \(read16(usedAddr + 2)) model \(nextUsed) start \(start) returned \(returned.count)")
        for (k, (h, l)) in returned.suffix(Int(queueSize)).enumerated() {
            let index = nextUsed &- UInt16(min(returned.count, Int(queueSize))) &+ UInt16(k)
            let element = usedAddr + 4 + 8 * UInt64(index & mask)
            precondition((try! memory.read(at: element) as UInt32) == UInt32(h), "used.ring id")
            precondition((try! memory.read(at: element + 4) as UInt32) == l, "used.ring len")
        }
    }

    // Nothing outside the writable buffers and the used ring may have changed.
    let usedEnd = usedAddr + 6 + 8 * UInt64(queueSize)
    forEachChangedByte { a in
        if a >= usedAddr && a < usedEnd { return }
        precondition(writable.contains { a >= $0.addr && a - $0.addr < UInt64($0.len) },
                     "byte at \(a) changed outside the chains' writable buffers")
    }
    return 0
}

/// Whether a device-writable buffer covers part of the used ring.
func overlapsUsed(_ writable: [Buffer], _ used: UInt64, _ size: UInt16) -> Bool {
    let end = used + 6 + 8 * UInt64(size)
    return writable.contains { $0.addr < end && $0.addr + UInt64($0.len) > used }
}
