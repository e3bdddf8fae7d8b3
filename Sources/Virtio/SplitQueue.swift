import GuestMemory
import Synchronization

/// The device side of a split virtqueue (virtio 1.2 §2.7).
///
/// Built from what the driver wrote to the transport's queue registers; construction
/// validates the layout (`validate()`), so a `SplitQueue` value always describes rings
/// that lie inside guest RAM with the alignment the spec requires.
///
/// The rings are shared with a guest that may rewrite them at any moment. Every field is
/// therefore read from guest memory exactly once into a local before it is checked and
/// used (no double fetch), and every access still goes through GuestMemory's bounds
/// checks. Ring layout (§2.7.6, §2.7.8):
///
///     avail: flags u16 | idx u16 | ring[size] u16 | used_event u16
///     used:  flags u16 | idx u16 | ring[size] {id u32, len u32} | avail_event u16
///
/// Not thread-safe: one owner (the device's queue worker) pops and adds.
public struct SplitQueue: Sendable {
    /// The largest queue size a split virtqueue can have (§2.7).
    public static let largestSize: UInt16 = 32768

    /// VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.7): the driver needs no used-buffer notifications.
    public static let availNoInterrupt: UInt16 = 1
    /// VIRTQ_USED_F_NO_NOTIFY (§2.7.10): the device needs no available-buffer notifications.
    public static let usedNoNotify: UInt16 = 1

    public let memory: GuestMemory
    /// Number of entries; a power of two, at most `maxSize`.
    public let size: UInt16
    /// The device's limit for this queue (QueueNumMax).
    public let maxSize: UInt16
    /// Guest-physical addresses of the Descriptor, Driver and Device Areas.
    public let descriptorTable: UInt64
    public let availableRing: UInt64
    public let usedRing: UInt64
    /// The features the driver and device agreed on (only INDIRECT_DESC and EVENT_IDX
    /// matter here).
    public let features: VirtioFeatures

    /// last_avail_idx: the free-running index of the next available-ring entry to consume.
    public private(set) var nextAvail: UInt16 = 0
    /// The free-running used index the device will publish next.
    public private(set) var nextUsed: UInt16 = 0
    /// avail.idx as last read; entries before it can be consumed without re-reading it.
    private var availShadow: UInt16 = 0
    /// used.idx when needsNotification last ran: the `old` of vring_need_event.
    private var signalledUsed: UInt16 = 0
    /// The used.idx last stored in the ring.
    private var publishedUsed: UInt16 = 0

    /// Creates and validates a queue. Throws what `validate()` throws.
    ///
    /// `startIndex` is the free-running index both rings start from: 0 for a queue the
    /// driver just set up (§2.7.6, §2.7.8), another value when resuming a queue whose
    /// rings already carry indices (a restored VM), and for the fuzz harness to reach the
    /// 16-bit wrap of every index.
    public init(memory: GuestMemory, size: UInt16, maxSize: UInt16 = SplitQueue.largestSize,
                descriptorTable: UInt64, availableRing: UInt64, usedRing: UInt64,
                features: VirtioFeatures, startIndex: UInt16 = 0) throws(VirtqueueError) {
        nextAvail = startIndex
        nextUsed = startIndex
        availShadow = startIndex
        signalledUsed = startIndex
        self.memory = memory
        self.size = size
        self.maxSize = min(maxSize, SplitQueue.largestSize)
        self.descriptorTable = descriptorTable
        self.availableRing = availableRing
        self.usedRing = usedRing
        self.features = features
        try validate()
    }

    /// The device-side cursors, which live only in the VMM (the rings themselves are in
    /// guest memory): what a snapshot saves per queue.
    public struct Cursors: Sendable, Equatable {
        public var nextAvail: UInt16
        public var nextUsed: UInt16
        public var signalledUsed: UInt16
        public init(nextAvail: UInt16, nextUsed: UInt16, signalledUsed: UInt16) {
            self.nextAvail = nextAvail
            self.nextUsed = nextUsed
            self.signalledUsed = signalledUsed
        }
    }

    public var cursors: Cursors { Cursors(nextAvail: nextAvail, nextUsed: nextUsed, signalledUsed: signalledUsed) }

    /// Puts saved cursors back (a restore). Any values are safe: every index read from
    /// the rings is checked against them as for a live queue (§2.7.13.3: avail.idx more
    /// than `size` ahead is a driver error). avail.idx is re-read on the next pop.
    public mutating func restore(_ c: Cursors) {
        nextAvail = c.nextAvail
        nextUsed = c.nextUsed
        signalledUsed = c.signalledUsed
        availShadow = c.nextAvail
    }

    public var eventIdx: Bool { features.contains(.ringEventIdx) }
    public var indirectDescriptors: Bool { features.contains(.indirectDesc) }

    /// Byte sizes of the three areas for a queue of `size` entries (§2.7), including the
    /// event fields, which a 1.x driver always allocates. Nil on overflow (cannot happen
    /// for a 16-bit size, but the arithmetic stays checked).
    public static func areaSizes(size: UInt16) -> (descriptorTable: UInt64, availableRing: UInt64, usedRing: UInt64)? {
        let n = UInt64(size)
        let (d, o1) = n.multipliedReportingOverflow(by: 16)
        let (a2, o2) = n.multipliedReportingOverflow(by: 2)
        let (a, o3) = a2.addingReportingOverflow(6)
        let (u8, o4) = n.multipliedReportingOverflow(by: 8)
        let (u, o5) = u8.addingReportingOverflow(6)
        if o1 || o2 || o3 || o4 || o5 { return nil }
        return (d, a, u)
    }

    /// The checks the device makes when the driver sets QueueReady (§2.7, §2.7.1,
    /// §4.2.2): size a non-zero power of two within `maxSize`; each area aligned (16, 2,
    /// 4) and entirely inside one guest RAM region. Overlapping areas are not refused: they
    /// can only corrupt the guest's own queue.
    public func validate() throws(VirtqueueError) {
        guard size != 0, size & (size &- 1) == 0, size <= maxSize else {
            throw .badQueueSize(size: size, max: maxSize)
        }
        guard let sizes = SplitQueue.areaSizes(size: size) else { throw .badQueueSize(size: size, max: maxSize) }
        let areas: [(QueueArea, UInt64, UInt64, UInt64)] = [
            (.descriptorTable, descriptorTable, sizes.descriptorTable, 16),
            (.availableRing, availableRing, sizes.availableRing, 2),
            (.usedRing, usedRing, sizes.usedRing, 4),
        ]
        for (area, address, length, alignment) in areas {
            guard address % alignment == 0 else { throw .misalignedArea(area, address: address, alignment: alignment) }
            guard memory.contains(address, length: length) else {
                throw .areaOutsideMemory(area, address: address, length: length)
            }
        }
    }

    // MARK: Ring field addresses (in range after validate(); offsets < 2^19)

    private var availIdxAddress: UInt64 { availableRing + 2 }
    private var usedEventAddress: UInt64 { availableRing + 4 + 2 * UInt64(size) }
    private var usedIdxAddress: UInt64 { usedRing + 2 }
    private var availEventAddress: UInt64 { usedRing + 4 + 8 * UInt64(size) }
    /// Ring slot of a free-running index (size is a power of two).
    private func slot(_ index: UInt16) -> UInt64 { UInt64(index & (size &- 1)) }

    @inline(__always)
    private func load<T: FixedWidthInteger>(_ address: UInt64) throws(VirtqueueError) -> T {
        do { return try memory.read(at: address) } catch { throw .memory(error) }
    }

    @inline(__always)
    private func store<T: FixedWidthInteger>(_ value: T, _ address: UInt64) throws(VirtqueueError) {
        do { try memory.write(value, at: address) } catch { throw .memory(error) }
    }

    // MARK: Available ring (§2.7.6)

    /// The head index of the next available chain, or nil when the driver has offered
    /// nothing new. The head is not checked here: `chain(head:)` does that.
    ///
    /// Throws `availIndexTooFarAhead` when avail.idx claims more than `size` outstanding
    /// entries (§2.7.13: the driver cannot offer more buffers than the ring holds), without
    /// consuming anything; the device should then fail.
    public mutating func popAvailable() throws(VirtqueueError) -> UInt16? {
        if nextAvail == availShadow {
            let idx: UInt16 = try load(availIdxAddress)
            let pending = idx &- nextAvail
            if pending == 0 { return nil }
            guard pending <= size else {
                throw .availIndexTooFarAhead(availIdx: idx, lastAvail: nextAvail, size: size)
            }
            availShadow = idx
            // Ring entries and descriptors are read only after idx; pairs with the driver's
            // barrier before its idx update (§2.7.13.3.1).
            atomicMemoryFence(ordering: .acquiring)
        }
        let head: UInt16 = try load(availableRing + 4 + 2 * slot(nextAvail))
        nextAvail &+= 1
        return head
    }

    /// Validates the chain starting at `head` (see DescriptorChain).
    public func chain(head: UInt16) throws(VirtqueueError) -> DescriptorChain {
        try DescriptorChain(memory: memory, descriptorTable: descriptorTable, queueSize: size, head: head,
                            indirectAllowed: indirectDescriptors)
    }

    /// popAvailable + chain(head:). When the chain is invalid its head is consumed and the
    /// error thrown; use the two calls separately to return a bad chain to the driver.
    public mutating func popChain() throws(VirtqueueError) -> DescriptorChain? {
        guard let head = try popAvailable() else { return nil }
        return try chain(head: head)
    }

    /// Undoes the last popAvailable, for a device that found no room to process the chain
    /// yet (e.g. a full host-side buffer) and wants to see it again.
    public mutating func undoPop() {
        nextAvail &-= 1
    }

    // MARK: Used ring (§2.7.8)

    /// Returns chain `head` to the driver with `len` bytes written to its device-writable
    /// buffers, then publishes the new used.idx (writeUsed + publishUsed).
    public mutating func addUsed(head: UInt16, len: UInt32) throws(VirtqueueError) {
        try writeUsed(head: head, len: len)
        try publishUsed()
    }

    /// Writes the next used-ring element without publishing it: the driver sees it only
    /// at the next `publishUsed`, so a batch costs one release fence and one idx store
    /// (and mergeable rx can fill several elements before the frame is visible).
    public mutating func writeUsed(head: UInt16, len: UInt32) throws(VirtqueueError) {
        guard head < size else { throw .headOutOfRange(head: head, size: size) }
        let element = usedRing + 4 + 8 * slot(nextUsed)
        try store(UInt32(head), element)
        try store(len, element + 4)
        nextUsed &+= 1
    }

    /// Used elements written since the last publish.
    public var unpublishedUsed: UInt16 { nextUsed &- publishedUsed }

    /// Publishes every element written so far: used.idx = the device's next index.
    public mutating func publishUsed() throws(VirtqueueError) {
        guard publishedUsed != nextUsed else { return }
        // §2.7.8.2: id and len must be visible before the idx that publishes them.
        atomicMemoryFence(ordering: .releasing)
        try store(nextUsed, usedIdxAddress)
        publishedUsed = nextUsed
    }

    /// Validates the chain at `head` and appends its buffers to `readable` and `writable`
    /// (no allocation; see DescriptorChain.walk). On a throw the lists hold a partial
    /// chain; the caller discards them.
    public func collect(head: UInt16, readable: IOVecList, writable: IOVecList) throws(VirtqueueError) -> DescriptorChain.Shape {
        let mem = memory
        return try DescriptorChain.walk(memory: mem, descriptorTable: descriptorTable, queueSize: size, head: head,
                                        indirectAllowed: indirectDescriptors) { (b, w) throws(VirtqueueError) in
            try (w ? writable : readable).append(b, memory: mem)
        }
    }

    /// Undoes the last `n` popAvailable calls (chains the device took but could not use
    /// yet, e.g. mergeable rx buffers beyond the frame that arrived).
    public mutating func undoPops(_ n: UInt16) {
        nextAvail &-= n
    }

    // MARK: Used buffer notification suppression (§2.7.7)

    /// vring_need_event (§2.7.7, virtio_ring.h): true when `event` lies in the window of
    /// used indices [old, new) just published, i.e. the driver asked to be told when
    /// used.idx passes `event`. All arithmetic is modulo 2^16, so it works across wraps.
    @inline(__always)
    public static func needEvent(event: UInt16, new: UInt16, old: UInt16) -> Bool {
        (new &- event &- 1) < (new &- old)
    }

    /// Whether the driver wants a used-buffer notification for the entries added since the
    /// last call. With EVENT_IDX: vring_need_event on avail.used_event. Without: unless
    /// avail.flags has VIRTQ_AVAIL_F_NO_INTERRUPT. Call after addUsed, before injecting
    /// the interrupt. Assumes fewer than 2^16 entries are added between calls.
    public mutating func needsNotification() throws(VirtqueueError) -> Bool {
        // The used.idx store must be visible before the driver's suppression state is read
        // (store-load), or a driver re-enabling notifications concurrently is missed.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIdx {
            let event: UInt16 = try load(usedEventAddress)
            let old = signalledUsed
            signalledUsed = nextUsed
            return SplitQueue.needEvent(event: event, new: nextUsed, old: old)
        }
        let flags: UInt16 = try load(availableRing)
        return flags & SplitQueue.availNoInterrupt == 0
    }

    // MARK: Available buffer notification suppression (§2.7.10)

    /// Writes used.avail_event: with EVENT_IDX, the driver notifies only once avail.idx
    /// passes `index`.
    public func setAvailEvent(_ index: UInt16) throws(VirtqueueError) {
        try store(index, availEventAddress)
    }

    /// Asks the driver for a notification on the next available buffer, then reports
    /// whether buffers arrived meanwhile (true: keep processing; the re-check closes the
    /// race between draining the ring and re-enabling notifications, §2.7.14).
    public mutating func enableNotifications() throws(VirtqueueError) -> Bool {
        if eventIdx {
            try setAvailEvent(nextAvail)
        } else {
            try store(UInt16(0), usedRing)
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let idx: UInt16 = try load(availIdxAddress)
        return idx != nextAvail
    }

    /// Asks for a notification when the driver posts beyond what the ring already holds
    /// (a device that popped and gave back buffers too small for its next use, e.g.
    /// virtio-net mergeable rx). Returns true when more was posted meanwhile.
    public mutating func enableNotificationsForMore() throws(VirtqueueError) -> Bool {
        let posted: UInt16 = try load(availIdxAddress)
        if eventIdx {
            try setAvailEvent(posted)
        } else {
            try store(UInt16(0), usedRing)
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let idx: UInt16 = try load(availIdxAddress)
        return idx != posted
    }

    /// Tells the driver notifications are not needed (while the device is busy draining).
    /// With EVENT_IDX this is implicit: avail_event stays behind avail.idx.
    public func disableNotifications() throws(VirtqueueError) {
        if !eventIdx { try store(SplitQueue.usedNoNotify, usedRing) }
    }

    /// Turns notifications off between batches, while the device polls the ring
    /// (docs/devices.md, "Polling"). With EVENT_IDX an avail_event one behind the next
    /// index to consume is one the driver's index has already passed, so it never kicks
    /// (§2.7.10: it notifies only when its new index moves past avail_event); without it,
    /// VIRTQ_USED_F_NO_NOTIFY. `enableNotifications` undoes either.
    public func suppressNotifications() throws(VirtqueueError) {
        if eventIdx { try setAvailEvent(nextAvail &- 1) } else { try store(SplitQueue.usedNoNotify, usedRing) }
    }

    /// The driver's avail.idx as it stands (a poll looks whether it moved).
    public func availIndex() throws(VirtqueueError) -> UInt16 { try load(availIdxAddress) }
}
