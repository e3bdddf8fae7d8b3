import GuestMemory

/// Sentences for logs (`pvmm: virtio-blk blk0: DEVICE_NEEDS_RESET: queue 0: ...`): what the
/// driver did, with guest addresses in hex, and the rule of the virtio 1.2 spec it broke.
extension VirtqueueError: CustomStringConvertible {
    public var description: String {
        switch self {
        case let .badQueueSize(size, max):
            "queue size \(size) is not a power of two from 1 to \(max) (§2.7)"
        case let .misalignedArea(area, address, alignment):
            "the \(area.name) at \(hex(address)) is not \(alignment)-byte aligned (§2.7)"
        case let .areaOutsideMemory(area, address, length):
            "the \(area.name) at \(hex(address)) (\(length) bytes) is not inside guest RAM"
        case let .availIndexTooFarAhead(availIdx, lastAvail, size):
            "avail.idx \(availIdx) is \(availIdx &- lastAvail) entries past the last one the device took (\(lastAvail)): "
                + "more than the queue size \(size) (§2.7.13)"
        case let .headOutOfRange(head, size):
            "chain head \(head) is outside the descriptor table (queue size \(size))"
        case let .nextOutOfRange(head, index, next, indirect):
            "\(place(index, head, indirect)) has next = \(next), outside its \(indirect ? "indirect table" : "descriptor table")"
        case let .descriptorLoop(head, index, indirect):
            "chain \(head) loops back to \(indirect ? "entry \(index) of its indirect table" : "descriptor \(index)") (a chain must end: §2.7.5.3.1)"
        case let .chainTooLong(head, limit):
            "chain \(head) has more than \(limit) descriptors, the queue size (§2.7.5.3.1)"
        case let .indirectNotNegotiated(head, index):
            "\(place(index, head, false)) is indirect, but VIRTIO_F_INDIRECT_DESC was not negotiated (§2.7.5.3.1)"
        case let .badIndirectLength(head, index, length):
            "\(place(index, head, false)) has an indirect table of \(length) bytes: not a non-zero multiple of 16 "
                + "of at most the queue size descriptors (§2.7.5.3)"
        case let .nestedIndirect(head, index):
            "\(place(index, head, true)) is itself indirect (§2.7.5.3.1)"
        case let .indirectWithNext(head, index):
            "\(place(index, head, false)) has both INDIRECT and NEXT set (§2.7.5.3.1)"
        case let .readableAfterWritable(head, index, indirect):
            "\(place(index, head, indirect)) is device-readable after a device-writable one (§2.7.4.2)"
        case let .bufferOutsideMemory(head, address, length):
            "chain \(head) has a buffer at \(hex(address)) (\(length) bytes) that is not inside guest RAM"
        case let .chainTooLarge(head):
            "chain \(head)'s buffers add up to more than 4 GiB - 1 bytes (§2.7.5.2)"
        case let .bufferTooShort(needed, available):
            "the request needs \(needed) bytes, the chain has \(available) left"
        case let .memory(e):
            "guest memory: \(e)"
        }
    }

    private func place(_ index: UInt16, _ head: UInt16, _ indirect: Bool) -> String {
        indirect ? "entry \(index) of chain \(head)'s indirect table" : "descriptor \(index) of chain \(head)"
    }
}

extension QueueArea {
    /// The spec's name: "descriptor table", "available ring", "used ring".
    public var name: String {
        switch self {
        case .descriptorTable: "descriptor table"
        case .availableRing: "available ring"
        case .usedRing: "used ring"
        }
    }
}

func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
