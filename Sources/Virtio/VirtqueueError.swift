import GuestMemory

/// One of the three areas of a split virtqueue (virtio 1.2 §2.7).
public enum QueueArea: String, Sendable {
    /// The descriptor table (Descriptor Area, QueueDesc).
    case descriptorTable
    /// The available ring (Driver Area, QueueDriver).
    case availableRing
    /// The used ring (Device Area, QueueDevice).
    case usedRing
}

/// Why the driver's queue setup, a descriptor chain or a buffer access was refused.
///
/// Everything here is a guest (driver) error or a guest trying to escape: the device
/// answers with DEVICE_NEEDS_RESET (or drops the chain), never with a trap. `head` is the
/// chain's head index; `index` the offending descriptor, in the queue's table or, when
/// `indirect` is true, in the chain's indirect table.
public enum VirtqueueError: Error, Equatable, Sendable {
    // MARK: Queue setup (§2.7, §4.2.2)

    /// Queue size 0, not a power of two or above the device's maximum (§2.7).
    case badQueueSize(size: UInt16, max: UInt16)
    /// A ring area does not have the alignment §2.7 requires (16, 2 and 4 bytes).
    case misalignedArea(QueueArea, address: UInt64, alignment: UInt64)
    /// A ring area is not entirely inside one guest RAM region.
    case areaOutsideMemory(QueueArea, address: UInt64, length: UInt64)

    // MARK: Available ring (§2.7.6)

    /// avail.idx runs more than a queue's worth of entries ahead of what the device has
    /// consumed: the driver cannot have made that many buffers available (§2.7.13).
    case availIndexTooFarAhead(availIdx: UInt16, lastAvail: UInt16, size: UInt16)

    // MARK: Descriptor chains (§2.7.5)

    /// A chain head (from the available ring, or handed to addUsed) >= queue size.
    case headOutOfRange(head: UInt16, size: UInt16)
    /// A descriptor's `next` is outside its table (queue size, or the indirect table's
    /// entry count).
    case nextOutOfRange(head: UInt16, index: UInt16, next: UInt16, indirect: Bool)
    /// A chain that revisits a descriptor: more descriptors walked in one table than the
    /// table has. `index` is where the walk stopped (§2.7.5.3.1: a chain must end).
    case descriptorLoop(head: UInt16, index: UInt16, indirect: Bool)
    /// More buffer descriptors than the queue size, with no loop: direct ones then an
    /// indirect table that together exceed it (§2.7.5.3.1 counts indirect descriptors too).
    case chainTooLong(head: UInt16, limit: UInt16)
    /// VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC negotiated (§2.7.5.3.1).
    case indirectNotNegotiated(head: UInt16, index: UInt16)
    /// An indirect table whose length is zero, not a multiple of 16, or holds more
    /// descriptors than the queue size (§2.7.5.3).
    case badIndirectLength(head: UInt16, index: UInt16, length: UInt32)
    /// VIRTQ_DESC_F_INDIRECT inside an indirect table (§2.7.5.3.1).
    case nestedIndirect(head: UInt16, index: UInt16)
    /// VIRTQ_DESC_F_INDIRECT together with VIRTQ_DESC_F_NEXT (§2.7.5.3.1).
    case indirectWithNext(head: UInt16, index: UInt16)
    /// A device-readable descriptor after a device-writable one (§2.7.4.2).
    case readableAfterWritable(head: UInt16, index: UInt16, indirect: Bool)
    /// A buffer or indirect table not entirely inside one guest RAM region.
    case bufferOutsideMemory(head: UInt16, address: UInt64, length: UInt32)
    /// The chain's buffers add up to more than UInt32.max bytes (§2.7.5.2).
    case chainTooLarge(head: UInt16)

    // MARK: Buffer access

    /// A fixed-size read or write needs more bytes than the chain has left.
    case bufferTooShort(needed: Int, available: Int)
    /// A ring or buffer access failed in GuestMemory. Unexpected after validation, but
    /// never trusted away.
    case memory(GuestMemoryError)
}
