import GuestMemory
import HostNet
import Synchronization
import Virtio

/// Serves a virtio-net queue pair (virtio 1.2 §5.1.6) against a host `FrameChannel`
/// (a tap, passt's socket), on the device thread.
///
/// Receive (§5.1.6.3-4): the guest's buffers become one iovec list and the frame is read
/// from the channel straight into them (readv). With MRG_RXBUF a frame may span several
/// chains: the device takes chains until they hold a maximal frame (header + MTU + 18),
/// reads, writes `num_buffers`, and gives the unused chains back. With GUEST_USO the tap
/// hands over UDP segmentation frames of up to 64 KiB whole: what did not fit lands in a
/// device buffer and is copied into as many further chains as it needs (so a small frame
/// still takes only the chains a maximal one needs). While the guest has
/// posted no buffers the channel is not watched for input at all (the host side queues
/// or drops; nothing waits), and notifications on receiveq are enabled so the next post
/// wakes the device.
///
/// Transmit (§5.1.6.2): each chain's header is copied, checked and rewritten in a device
/// buffer, then header and frame go out in one writev straight from guest memory. A full
/// channel (EAGAIN) keeps the chain for later and watches for writable instead.
///
/// Locking: the queues live under the backend lock (`BackendState`), but the lock is
/// never held across host I/O: a frame is prepared under the lock, moved without it, and
/// completed under it again, if the epoch (bumped by every reset and activation) is
/// unchanged. A vCPU resetting the device therefore waits only for ring bookkeeping, and
/// a frame moved across a reset lands in buffers the old driver owned and is not returned.
///
/// UDP segmentation offload (HOST_USO, gso_type UDP_L4): a frame of up to 64 KiB with one
/// UDP header goes to the tap as it is and the host kernel cuts it into datagrams of
/// gso_size payload bytes, so one writev carries up to 128 datagrams.
///
/// Drops (counted in `NetStats`, the chain returned with used.len 0 on transmit): short
/// header, runt or oversized frames, GSO requests other than a well-formed UDP_L4 one
/// with HOST_USO, bad checksum requests, writable
/// descriptors on transmit. DEVICE_NEEDS_RESET: any virtqueue rule broken (§2.7), a
/// receive chain with readable buffers or under a header's worth of room, a transmit
/// frame above 64 KiB.
public final class VirtioNetBackend: HostFDBackend, @unchecked Sendable {
    // @unchecked: the mutable fields below the lock are touched only on the device thread
    // (queue notifications, service requests and host events all run there).
    public let channel: any FrameChannel
    public let mac: MACBytes
    public let stats: NetStats
    public let mtu: Int
    let core = BackendState()
    let service: any Notifier
    private let link = Atomic<Bool>(true)

    /// Largest frame the device accepts or delivers, header included.
    let maxFrame: Int
    /// Frames moved per wake-up before yielding to other work (service re-signals).
    static let budget = 64
    /// What the driver acks for the tap to hand it UDP segmentation frames.
    static let guestUSO: VirtioFeatures = [.netGuestCsum, .netGuestUSO4, .netGuestUSO6, .netMergeableRxBuffers]

    // Device-thread state.
    // weak: the loop owns the handler that owns the device that owns this backend.
    private weak var interest: (any IOInterest)?
    private let rxIOV = IOVecList(capacity: 1024 + Int(VirtioNetSpec.queueSize))
    private let txIOV = IOVecList(capacity: Int(VirtioNetSpec.queueSize) + 1)
    private let scratch = IOVecList(capacity: Int(VirtioNetSpec.queueSize))
    /// The chains that take the rest of a UDP segmentation frame.
    private let extraIOV = IOVecList(capacity: 1024 + 1)
    /// Heads and capacities of the chains gathered for one receive.
    private let rxChains = UnsafeMutablePointer<(head: UInt16, room: UInt32)>.allocate(capacity: Int(VirtioNetSpec.queueSize))
    private let txHeader = UnsafeMutableRawBufferPointer.allocate(byteCount: VirtioNetSpec.headerSize, alignment: 8)
    private let zeroHeader = UnsafeMutableRawBufferPointer.allocate(byteCount: VirtioNetSpec.headerSize, alignment: 8)
    /// Where the tail of a frame longer than the guest's buffers goes (then dropped).
    private let overflow = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536 + VirtioNetSpec.headerSize, alignment: 16)
    private var txBlocked = false
    private var rxWanted = false
    /// A service request runs receive only after an activation or a pass out of budget;
    /// else tap readiness and receive notifications drive it (the poller's requests for
    /// transmit work must not cost a readv that fails with EAGAIN per polled frame).
    private var rxServiceNeeded = true
    private var closed = false
    private var linkChanged = false
    private var offloadEpoch: UInt64 = .max
    private var localEpoch: UInt64 = .max

    /// Log lines (the host side going away) start "pvmm: virtio-net NAME".
    let name: String
    let log: @Sendable (String) -> Void

    public init(channel: any FrameChannel, mac: MACBytes, stats: NetStats, service: any Notifier, name: String = "net",
                log: @escaping @Sendable (String) -> Void = writeStderrLine) {
        self.channel = channel
        self.name = name
        self.log = log
        self.mac = mac
        self.stats = stats
        self.service = service
        mtu = min(max(channel.mtu, 68), 65535 - VirtioNetSpec.ethernetHeader - VirtioNetSpec.vlanTag)
        maxFrame = VirtioNetSpec.headerSize + VirtioNetSpec.ethernetHeader + VirtioNetSpec.vlanTag + mtu
        zeroHeader.initializeMemory(as: UInt8.self, repeating: 0)
        txHeader.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit {
        rxChains.deallocate()
        txHeader.deallocate()
        zeroHeader.deallocate()
        overflow.deallocate()
    }

    public var epoch: UInt64 { core.epoch }
    public var hostFD: Int32 { channel.fd }
    public var hostFDBackend: (any HostFDBackend)? { self }
    /// VIRTIO_NET_S_LINK_UP: false once the channel's peer has gone (passt exited).
    public var linkUp: Bool { link.load(ordering: .acquiring) }

    public func attach(_ interest: any IOInterest) { self.interest = interest }

    public func activate(queues: [SplitQueue?], features: VirtioFeatures) { core.activate(queues, features: features) }
    public func reset() { core.reset() }
    public func halt() { core.halt() }
    public func queueCursors() -> [SplitQueue.Cursors?] { core.cursors() }

    // MARK: Events (device thread)

    public func queueNotified(_ queue: Int) -> BackendOutcome {
        var out = begin()
        switch queue {
        case VirtioNetSpec.receiveQueue: merge(&out, receive())
        case VirtioNetSpec.transmitQueue: merge(&out, transmit())
        default: break
        }
        return finish(out)
    }

    /// Polls the driver-to-device queue (receive buffers are not work).
    public func poll(_ phase: PollPhase) -> Bool { core.poll(phase, queues: [VirtioNetSpec.transmitQueue]) }

    /// After DRIVER_OK (buffers posted early), when a batch ran out of budget, or when
    /// the poller found transmit work.
    public func serviceRequested() -> BackendOutcome {
        var out = begin()
        merge(&out, transmit())
        if out.failure == nil && rxServiceNeeded { merge(&out, receive()) }
        return finish(out)
    }

    public func hostEvent(_ events: IOEvents) -> BackendOutcome {
        var out = begin()
        if events.contains(.writable) || events.contains(.hangup) || events.contains(.error), txBlocked {
            switch channel.flush() {
            case .wouldBlock: break
            case .closed: channelClosed()
            default: txBlocked = false
            }
            if !txBlocked { merge(&out, transmit()) }
        }
        if events.contains(.readable) || events.contains(.hangup) { merge(&out, receive()) }
        if events.contains(.hangup) { channelClosed() }
        return finish(out)
    }

    /// Per-wake-up setup: forget device-thread state from before a reset, and apply the
    /// checksum offload the driver acked (TUNSETOFFLOAD, here rather than under the
    /// transport lock a vCPU holds at DRIVER_OK).
    private func begin() -> BackendOutcome {
        let e = core.epoch
        if e != localEpoch {
            localEpoch = e
            txBlocked = channel.hasPendingOutput
            rxServiceNeeded = true
        }
        if offloadEpoch != e {
            let features = core.state.withLock { $0.active ? $0.features : nil }
            if let features {
                offloadEpoch = e
                channel.setGuestOffload(checksum: features.contains(.netGuestCsum),
                                        udpSegmentation: features.isSuperset(of: Self.guestUSO))
            }
        }
        return BackendOutcome(epoch: e)
    }

    private func merge(_ out: inout BackendOutcome, _ r: ServeResult) {
        out.requests += r.requests
        out.interrupt = out.interrupt || r.interrupt
        if out.failure == nil, let f = r.fault { out.failure = f.description }
    }

    /// Sets the fd's interest from what the device waits for: input while the guest has
    /// buffers, writable while a transmit is held back.
    private func finish(_ outcome: BackendOutcome) -> BackendOutcome {
        var out = outcome
        if linkChanged {
            linkChanged = false
            out.configChanged = true
        }
        if !closed {
            var want: IOEvents = []
            if rxWanted { want.insert(.readable) }
            if txBlocked { want.insert(.writable) }
            interest?.setInterest(channel.fd, want)
        }
        return out
    }

    /// The peer went away (passt exited): link down, a configuration change
    /// notification, and the fd is no longer watched. Transmits are then dropped.
    private func channelClosed() {
        guard !closed else { return }
        closed = true
        rxWanted = false
        txBlocked = false
        interest?.remove(channel.fd)
        link.store(false, ordering: .releasing)
        linkChanged = true
        log("pvmm: virtio-net \(name): the host side closed (passt exited?): link down, transmits dropped")
    }

    // MARK: Receive (§5.1.6.3, §5.1.6.4)

    private enum Gather {
        case inactive
        /// No (or not enough) buffers posted; notifications are re-enabled.
        case starved
        case ready(chains: Int, room: Int, mergeable: Bool, guestCsum: Bool)
        case fault(DeviceFault)
    }

    func receive() -> ServeResult {
        var result = ServeResult()
        let epoch = core.epoch
        var moved = 0
        rxWanted = false
        rxServiceNeeded = false
        if closed { return result }
        loop: while true {
            if moved == Self.budget {
                // More may be waiting: come back after the other events.
                service.signal()
                rxWanted = true
                rxServiceNeeded = true
                break
            }
            switch gather(epoch) {
            case .inactive:
                break loop
            case .starved:
                stats.rxNoBuffers.add()
                break loop
            case .fault(let f):
                result.fault = f
                break loop
            case let .ready(chains, room, mergeable, guestCsum):
                let vnet = channel.vnetHeader
                let m = rxIOV.mark()
                if !vnet { rxIOV.dropFirst(VirtioNetSpec.headerSize) }
                let r = channel.receive(rxIOV.vectors)
                rxIOV.restore(m)
                let step = completeReceive(r, epoch: epoch, chains: chains, room: room, mergeable: mergeable,
                                           guestCsum: guestCsum, vnet: vnet)
                switch step {
                case .delivered:
                    moved += 1
                    result.requests += 1
                    continue loop
                case .dropped:
                    continue loop
                case .empty:
                    rxWanted = true
                    break loop
                case .stale:
                    break loop
                case .fault(let f):
                    result.fault = f
                    break loop
                case .closed:
                    channelClosed()
                    break loop
                }
            }
        }
        publish(VirtioNetSpec.receiveQueue, epoch: epoch, &result)
        return result
    }

    /// One used.idx store and one notification decision for everything a pass returned
    /// on `queue` (chains completed before a fault are published too).
    private func publish(_ queue: Int, epoch: UInt64, _ result: inout ServeResult) {
        core.state.withLock { s in
            guard core.epoch == epoch, s.active, !s.halted || result.requests > 0, var q = s.queues[queue] else { return }
            do throws(VirtqueueError) {
                try q.publishUsed()
                if result.requests > 0 { result.interrupt = try q.needsNotification() }
            } catch {
                if result.fault == nil { result.fault = .queue(error) }
                result.interrupt = result.requests > 0
            }
            s.queues[queue] = q
            if result.fault != nil { s.halted = true }
        }
    }

    /// Under the lock: pops chains into `rxIOV` until they hold a maximal frame (one
    /// chain without MRG_RXBUF).
    private func gather(_ epoch: UInt64) -> Gather {
        core.state.withLock { s -> Gather in
            guard core.epoch == epoch, s.active, !s.halted, var q = s.queues[VirtioNetSpec.receiveQueue] else { return .inactive }
            defer { s.queues[VirtioNetSpec.receiveQueue] = q }
            let mergeable = s.features.contains(.netMergeableRxBuffers)
            let guestCsum = s.features.contains(.netGuestCsum)
            rxIOV.removeAll()
            var chains = 0
            do throws(VirtqueueError) {
                while true {
                    try q.disableNotifications()
                    while chains < Int(VirtioNetSpec.queueSize), rxIOV.count <= 1024,
                          chains == 0 || (mergeable && rxIOV.totalLength < maxFrame),
                          let head = try q.popAvailable() {
                        scratch.removeAll()
                        let before = rxIOV.totalLength
                        let shape = try q.collect(head: head, readable: scratch, writable: rxIOV)
                        guard shape.readableLength == 0 else {
                            s.halted = true
                            return .fault(.malformed("receive chain \(head) has device-readable buffers"))
                        }
                        let room = rxIOV.totalLength - before
                        guard room >= (chains == 0 ? VirtioNetSpec.headerSize : 1) else {
                            s.halted = true
                            return .fault(.malformed("receive chain \(head) has \(room) writable bytes, too few for a frame"))
                        }
                        rxChains[chains] = (head, UInt32(room))
                        chains += 1
                    }
                    if chains > 0 && (!mergeable || rxIOV.totalLength >= maxFrame) {
                        let room = rxIOV.totalLength
                        rxIOV.appendHost(overflow)
                        return .ready(chains: chains, room: room, mergeable: mergeable, guestCsum: guestCsum)
                    }
                    // Not enough room for a whole frame (the ring ran out): give the chains
                    // back and ask for a notification when the guest posts more (§2.7.14
                    // re-check included: if it did meanwhile, gather again).
                    q.undoPops(UInt16(chains))
                    chains = 0
                    rxIOV.removeAll()
                    if !(try q.enableNotificationsForMore()) { return .starved }
                }
            } catch {
                s.halted = true
                return .fault(.queue(error))
            }
        }
    }

    private enum ReceiveStep { case delivered, dropped, empty, stale, closed, fault(DeviceFault) }

    /// Under the lock again: returns the used chains with their lengths and gives the
    /// rest back.
    private func completeReceive(_ r: FrameIOResult, epoch: UInt64, chains: Int, room: Int, mergeable: Bool,
                                 guestCsum: Bool, vnet: Bool) -> ReceiveStep {
        core.state.withLock { s -> ReceiveStep in
            guard core.epoch == epoch, s.active, !s.halted, var q = s.queues[VirtioNetSpec.receiveQueue] else { return .stale }
            defer { s.queues[VirtioNetSpec.receiveQueue] = q }
            var length: Int
            switch r {
            case .wouldBlock:
                q.undoPops(UInt16(chains))
                return .empty
            case .closed:
                q.undoPops(UInt16(chains))
                return .closed
            case .failed:
                q.undoPops(UInt16(chains))
                stats.rxDropError.add()
                return .dropped
            case .done(let n):
                length = vnet ? n : n + VirtioNetSpec.headerSize
            }
            var chains = chains
            if length > room, mergeable, vnet, s.features.isSuperset(of: Self.guestUSO), length - room <= overflow.count,
               segmentationFrame() {
                // A segmentation frame: its tail went to `overflow`; more chains take it.
                // (Any other frame above MTU + 18 is dropped, as without GUEST_USO.)
                let more: Int?
                do throws(VirtqueueError) { more = try extend(&q, from: chains, toHold: length - room) } catch {
                    s.halted = true
                    return .fault(.queue(error))
                }
                guard let more else {
                    s.halted = true
                    return .fault(.malformed("receive chain with device-readable buffers or no room"))
                }
                if more > 0 {
                    _ = extraIOV.write(UnsafeRawBufferPointer(rebasing: overflow.prefix(length - room)), at: 0)
                    chains += more
                }
            }
            guard length <= rxRoom(chains) else {
                // Truncated by the kernel (or the framing), or no chains for the rest of a
                // segmentation frame: the frame is gone, the buffers are reused.
                q.undoPops(UInt16(chains))
                stats.rxDropTooBig.add()
                return .dropped
            }
            guard length >= VirtioNetSpec.headerSize + VirtioNetSpec.minFrame else {
                q.undoPops(UInt16(chains))
                stats.rxDropError.add()
                return .dropped
            }
            if !vnet {
                _ = rxIOV.write(UnsafeRawBufferPointer(zeroHeader), at: 0)
            } else if !guestCsum {
                // §5.1.6.4.1: without GUEST_CSUM the device sets flags to zero (the tap,
                // with no offload, delivered a checksummed frame).
                var zero: UInt8 = 0
                _ = withUnsafeBytes(of: &zero) { rxIOV.write($0, at: VirtioNetSpec.headerFlagsOffset) }
            }
            var used = 0
            var left = length
            do throws(VirtqueueError) {
                while left > 0 {
                    let c = rxChains[used]
                    let n = min(Int(c.room), left)
                    try q.writeUsed(head: c.head, len: UInt32(n))
                    left -= n
                    used += 1
                }
            } catch {
                s.halted = true
                return .stale
            }
            q.undoPops(UInt16(chains - used))
            // num_buffers (§5.1.6.4): the chains this frame took; 1 without MRG_RXBUF.
            var count = UInt16(mergeable ? used : 1).littleEndian
            _ = withUnsafeBytes(of: &count) { rxIOV.write($0, at: VirtioNetSpec.headerNumBuffersOffset) }
            stats.rxPackets.add()
            stats.rxBytes.add(UInt64(length - VirtioNetSpec.headerSize))
            return .delivered
        }
    }

    /// Under the lock: pops chains after the first `from` (in `rxChains`) into `extraIOV`
    /// until they hold `bytes`; the number taken, 0 (chains given back) when the ring has
    /// too few, nil for a chain with readable buffers or no room (the device fails).
    private func extend(_ q: inout SplitQueue, from: Int, toHold bytes: Int) throws(VirtqueueError) -> Int? {
        extraIOV.removeAll()
        var taken = 0
        while extraIOV.totalLength < bytes, from + taken < Int(VirtioNetSpec.queueSize), extraIOV.count < 1024,
              let head = try q.popAvailable() {
            scratch.removeAll()
            let before = extraIOV.totalLength
            let shape = try q.collect(head: head, readable: scratch, writable: extraIOV)
            guard shape.readableLength == 0, extraIOV.totalLength > before else { return nil }
            rxChains[from + taken] = (head, UInt32(extraIOV.totalLength - before))
            taken += 1
        }
        if extraIOV.totalLength >= bytes { return taken }
        q.undoPops(UInt16(taken))
        return 0
    }

    /// The frame just read carries a UDP_L4 header (the tap's, in the first chain).
    private func segmentationFrame() -> Bool {
        var gso: UInt8 = 0
        let ok = withUnsafeMutableBytes(of: &gso) { rxIOV.read(into: $0, at: VirtioNetSpec.headerGSOTypeOffset) }
        return ok && gso == VirtioNetSpec.gsoUDPL4
    }

    /// The room of the first `chains` gathered chains.
    private func rxRoom(_ chains: Int) -> Int { (0..<chains).reduce(0) { $0 + Int(rxChains[$1].room) } }

    // MARK: Transmit (§5.1.6.2)

    private enum Prepared {
        case none
        case frame(head: UInt16)
        case fault(DeviceFault)
    }

    func transmit() -> ServeResult {
        var result = ServeResult()
        let epoch = core.epoch
        var moved = 0
        if txBlocked { return result }
        loop: while true {
            if moved == Self.budget {
                service.signal()
                break
            }
            switch prepareTransmit(epoch, result: &result) {
            case .none: break loop
            case .fault(let f):
                result.fault = f
                break loop
            case .frame(let head):
                let r = closed ? FrameIOResult.closed : channel.send(txIOV.vectors)
                let sent = core.state.withLock { s -> Bool in
                    guard core.epoch == epoch, s.active, !s.halted, var q = s.queues[VirtioNetSpec.transmitQueue] else { return false }
                    defer { s.queues[VirtioNetSpec.transmitQueue] = q }
                    switch r {
                    case .wouldBlock:
                        q.undoPops(1)
                        txBlocked = true
                        return false
                    case .done(let n):
                        stats.txPackets.add()
                        if txHeader[VirtioNetSpec.headerGSOTypeOffset] == VirtioNetSpec.gsoUDPL4 && channel.vnetHeader { stats.txSegmented.add() }
                        stats.txBytes.add(UInt64(max(0, n - (channel.vnetHeader ? VirtioNetSpec.headerSize : 0))))
                    case .closed, .failed:
                        stats.txDropError.add()
                    }
                    do throws(VirtqueueError) { try q.writeUsed(head: head, len: 0) } catch {
                        s.halted = true
                        result.fault = .queue(error)
                        return false
                    }
                    result.requests += 1
                    return true
                }
                if case .closed = r { channelClosed() }
                if !sent { break loop }
                moved += 1
            }
        }
        publish(VirtioNetSpec.transmitQueue, epoch: epoch, &result)
        return result
    }

    /// Under the lock: pops transmit chains, returning the ones to drop at once, until one
    /// is ready to send (its iovecs in `txIOV`, the checked header in front).
    private func prepareTransmit(_ epoch: UInt64, result: inout ServeResult) -> Prepared {
        core.state.withLock { s -> Prepared in
            guard core.epoch == epoch, s.active, !s.halted, var q = s.queues[VirtioNetSpec.transmitQueue] else { return .none }
            defer { s.queues[VirtioNetSpec.transmitQueue] = q }
            let csum = s.features.contains(.netCsum)
            let uso = csum && s.features.contains(.netHostUSO) && channel.vnetHeader
            do throws(VirtqueueError) {
                while true {
                    try q.disableNotifications()
                    while let head = try q.popAvailable() {
                        txIOV.removeAll()
                        scratch.removeAll()
                        let shape = try q.collect(head: head, readable: txIOV, writable: scratch)
                        if let drop = check(shape, csum: csum, uso: uso) {
                            drop.add()
                            try q.writeUsed(head: head, len: 0)
                            result.requests += 1
                            continue
                        }
                        if Int(shape.readableLength) - VirtioNetSpec.headerSize > VirtioNetSpec.maxTransmitChainFrame {
                            s.halted = true
                            return .fault(.malformed("transmit chain \(head) carries a \(Int(shape.readableLength) - VirtioNetSpec.headerSize)-byte frame (more than 64 KiB)"))
                        }
                        txIOV.dropFirst(VirtioNetSpec.headerSize)
                        if channel.vnetHeader { txIOV.prepend(txHeader) }
                        return .frame(head: head)
                    }
                    if !(try q.enableNotifications()) { return .none }
                }
            } catch {
                s.halted = true
                return .fault(.queue(error))
            }
        }
    }

    /// The drop counter for a transmit chain the device refuses, or nil when it may go
    /// out; fills `txHeader` with the sanitized header.
    private func check(_ shape: DescriptorChain.Shape, csum: Bool, uso: Bool) -> StatCounter? {
        if shape.writableLength > 0 { return stats.txDropMalformed }
        guard Int(shape.readableLength) >= VirtioNetSpec.headerSize else { return stats.txDropShort }
        let frame = Int(shape.readableLength) - VirtioNetSpec.headerSize
        if frame > VirtioNetSpec.maxTransmitChainFrame { return nil }  // the caller fails the device
        // One copy of the header: the guest cannot change it between check and send.
        guard txIOV.read(into: txHeader, at: 0) else { return stats.txDropShort }
        let flags = txHeader[VirtioNetSpec.headerFlagsOffset]
        let gso = txHeader[VirtioNetSpec.headerGSOTypeOffset]
        let segmented = gso == VirtioNetSpec.gsoUDPL4
        guard frame >= VirtioNetSpec.minFrame, segmented || frame + VirtioNetSpec.headerSize <= maxFrame else { return stats.txDropSize }
        guard gso & ~VirtioNetSpec.gsoECN == VirtioNetSpec.gsoNone || (segmented && uso) else { return stats.txDropHeader }
        let needsCsum = flags & VirtioNetSpec.flagNeedsCsum != 0
        let start = Int(txHeader.loadUnaligned(fromByteOffset: VirtioNetSpec.headerCsumStartOffset, as: UInt16.self).littleEndian)
        let off = Int(txHeader.loadUnaligned(fromByteOffset: VirtioNetSpec.headerCsumOffsetOffset, as: UInt16.self).littleEndian)
        if needsCsum {
            guard csum, start + off + 2 <= frame else { return stats.txDropHeader }
        }
        let hdrLen = Int(txHeader.loadUnaligned(fromByteOffset: VirtioNetSpec.headerHdrLenOffset, as: UInt16.self).littleEndian)
        let segment = Int(txHeader.loadUnaligned(fromByteOffset: VirtioNetSpec.headerGSOSizeOffset, as: UInt16.self).littleEndian)
        if segmented {
            // §5.1.6.2.1: NEEDS_CSUM with csum_start at the UDP header, each segment at
            // most an MTU's worth, the headers inside the frame. The host kernel checks
            // the packet itself (SKB_GSO_DODGY) and refuses what does not parse.
            guard needsCsum, off == VirtioNetSpec.udpChecksumOffset, segment >= 1,
                  segment <= mtu, hdrLen <= frame, start + VirtioNetSpec.udpHeader <= frame else { return stats.txDropHeader }
        }
        // The header the host sees: only NEEDS_CSUM with its two offsets, and a UDP_L4
        // request with its sizes, survive.
        txHeader.initializeMemory(as: UInt8.self, repeating: 0)
        if needsCsum {
            txHeader[VirtioNetSpec.headerFlagsOffset] = VirtioNetSpec.flagNeedsCsum
            txHeader.storeBytes(of: UInt16(start).littleEndian, toByteOffset: VirtioNetSpec.headerCsumStartOffset, as: UInt16.self)
            txHeader.storeBytes(of: UInt16(off).littleEndian, toByteOffset: VirtioNetSpec.headerCsumOffsetOffset, as: UInt16.self)
        }
        if segmented {
            txHeader[VirtioNetSpec.headerGSOTypeOffset] = VirtioNetSpec.gsoUDPL4
            txHeader.storeBytes(of: UInt16(hdrLen).littleEndian, toByteOffset: VirtioNetSpec.headerHdrLenOffset, as: UInt16.self)
            txHeader.storeBytes(of: UInt16(segment).littleEndian, toByteOffset: VirtioNetSpec.headerGSOSizeOffset, as: UInt16.self)
        }
        return nil
    }
}
