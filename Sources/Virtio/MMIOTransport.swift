import GuestMemory

/// A device model behind a virtio transport: what it offers and what it does once the
/// driver has set it up. The transport owns the register state machine; the model only
/// sees validated queues and config-space accesses inside `configSize`.
public protocol VirtioDeviceModel {
    var deviceType: VirtioDeviceType { get }
    /// Features offered (VERSION_1 is added by the transport: virtio-mmio v2 is 1.x only).
    var deviceFeatures: VirtioFeatures { get }
    /// One entry per queue: its QueueNumMax (a power of two, at most 32768).
    var queueMaxSizes: [UInt16] { get }
    /// Bytes of device-specific configuration space (§4.2.2 Config, 0x100+).
    var configSize: Int { get }
    /// Reads config bytes [offset, offset+data.count), always inside configSize.
    mutating func readConfig(offset: Int, into data: UnsafeMutableRawBufferPointer)
    /// Writes config bytes [offset, offset+data.count), always inside configSize.
    mutating func writeConfig(offset: Int, from data: UnsafeRawBufferPointer)
    /// A chance to refuse a feature combination at FEATURES_OK (§2.2.1). The transport has
    /// already checked that every bit was offered and VERSION_1 accepted.
    mutating func acceptFeatures(_ features: VirtioFeatures) -> Bool
    /// DRIVER_OK: start with the negotiated features. `queues[i]` is nil when the driver
    /// did not enable queue i. Throwing sets DEVICE_NEEDS_RESET.
    mutating func activate(queues: [SplitQueue?], features: VirtioFeatures) throws(DeviceActivationError)
    /// The driver reset the device (Status 0): drop queues and return to the initial state.
    mutating func reset()
}

extension VirtioDeviceModel {
    public func acceptFeatures(_ features: VirtioFeatures) -> Bool { true }
}

/// Why a device could not start.
public struct DeviceActivationError: Error, Equatable, Sendable {
    public var reason: String
    public init(reason: String) { self.reason = reason }
}

/// InterruptStatus bits (virtio 1.2 §4.2.2).
public struct InterruptStatus: OptionSet, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// A used buffer notification: some queue has new used entries.
    public static let usedBuffer = InterruptStatus(rawValue: 1)
    /// A configuration change notification (also sent with DEVICE_NEEDS_RESET).
    public static let configChange = InterruptStatus(rawValue: 2)
}

/// What the VMM must do after an MMIO write.
public enum MMIOAction: Equatable, Sendable {
    case none
    /// The driver notified queue `queue` (only after DRIVER_OK, for a ready queue). With
    /// an ioeventfd on QueueNotify these writes never reach the transport.
    case notify(queue: UInt16)
    /// DRIVER_OK accepted and `activate` succeeded: wire ioeventfds/irqfd for the ready
    /// queues and start serving them.
    case activate
    /// The driver wrote 0 to Status: the device and all queues are reset; tear down.
    case reset
    /// DEVICE_NEEDS_RESET is now set (`reason` is for the log). Stop serving the queues.
    /// `interrupt`: a configuration change interrupt is pending and must be injected
    /// (only once DRIVER_OK was set, §2.1.2).
    case failed(reason: String, interrupt: Bool)
}

/// virtio-mmio constants (virtio 1.2 §4.2.2).
///
/// VendorID is "PVMM" in little-endian ASCII (0x4D4D5650), as QEMU uses "QEMU"; drivers
/// ignore it for virtio-mmio.
public enum VirtioMMIO {
    public static let magicValue: UInt32 = 0x7472_6976  // "virt"
    public static let version: UInt32 = 2
    public static let vendorID: UInt32 = 0x4D4D_5650  // "PVMM"
    /// Config space offset; the VMM maps at least configOffset + configSize bytes.
    public static let configOffset: UInt64 = 0x100
}

/// virtio-mmio register offsets (virtio 1.2 §4.2.2).
public enum MMIORegister {
    public static let magicValue: UInt64 = 0x000
    public static let version: UInt64 = 0x004
    public static let deviceID: UInt64 = 0x008
    public static let vendorID: UInt64 = 0x00C
    public static let deviceFeatures: UInt64 = 0x010
    public static let deviceFeaturesSel: UInt64 = 0x014
    public static let driverFeatures: UInt64 = 0x020
    public static let driverFeaturesSel: UInt64 = 0x024
    public static let queueSel: UInt64 = 0x030
    public static let queueNumMax: UInt64 = 0x034
    public static let queueNum: UInt64 = 0x038
    public static let queueReady: UInt64 = 0x044
    public static let queueNotify: UInt64 = 0x050
    public static let interruptStatus: UInt64 = 0x060
    public static let interruptACK: UInt64 = 0x064
    public static let status: UInt64 = 0x070
    public static let queueDescLow: UInt64 = 0x080
    public static let queueDescHigh: UInt64 = 0x084
    public static let queueDriverLow: UInt64 = 0x090
    public static let queueDriverHigh: UInt64 = 0x094
    public static let queueDeviceLow: UInt64 = 0x0A0
    public static let queueDeviceHigh: UInt64 = 0x0A4
    public static let shmSel: UInt64 = 0x0AC
    public static let shmLenLow: UInt64 = 0x0B0
    public static let shmLenHigh: UInt64 = 0x0B4
    public static let shmBaseLow: UInt64 = 0x0B8
    public static let shmBaseHigh: UInt64 = 0x0BC
    public static let queueReset: UInt64 = 0x0C0
    public static let configGeneration: UInt64 = 0x0FC
}

/// The virtio-mmio version 2 register file (virtio 1.2 §4.2.2), in front of a
/// `VirtioDeviceModel`.
///
/// Pure state: the VMM routes guest accesses to `read`/`write` and acts on the returned
/// `MMIOAction`. Control registers take only aligned 32-bit accesses; anything else reads
/// as zero and is ignored on write, as are accesses to unknown offsets. Config space
/// (0x100 + configSize) takes 1, 2, 4 or 8-byte accesses.
public struct MMIOTransport<Device: VirtioDeviceModel> {
    /// Per-queue registers as the driver wrote them.
    struct QueueRegisters {
        var size: UInt32
        var ready = false
        var desc: UInt64 = 0
        var driver: UInt64 = 0
        var device: UInt64 = 0
    }

    public var device: Device
    public let memory: GuestMemory
    public private(set) var status: DeviceStatus = []
    /// DriverFeatures as written (bits beyond 63 are tracked by `driverSetUnknownBits`).
    public private(set) var driverFeatures: VirtioFeatures = []
    public private(set) var interruptStatus: InterruptStatus = []
    public private(set) var configGeneration: UInt32 = 0
    /// Why DEVICE_NEEDS_RESET was set, for logs.
    public private(set) var failureReason: String?
    private var driverSetUnknownBits = false
    private var deviceFeaturesSel: UInt32 = 0
    private var driverFeaturesSel: UInt32 = 0
    private var queueSel: UInt32 = 0
    private var queueRegisters: [QueueRegisters]
    /// Queues validated at QueueReady, handed to the device at DRIVER_OK.
    private var readyQueues: [SplitQueue?]
    private let maxSizes: [UInt16]

    public init(device: Device, memory: GuestMemory) {
        self.device = device
        self.memory = memory
        maxSizes = device.queueMaxSizes.map { min($0, SplitQueue.largestSize) }
        queueRegisters = maxSizes.map { QueueRegisters(size: UInt32($0)) }
        readyQueues = Array(repeating: nil, count: maxSizes.count)
    }

    /// Features offered to the driver.
    public var offeredFeatures: VirtioFeatures { device.deviceFeatures.union(.version1) }
    /// Features in force: the driver's, once FEATURES_OK was accepted.
    public var negotiatedFeatures: VirtioFeatures { status.contains(.featuresOK) ? driverFeatures : [] }
    /// The interrupt line level: any InterruptStatus bit set (§4.2.3.3).
    public var interruptPending: Bool { !interruptStatus.isEmpty }
    public var queueCount: Int { maxSizes.count }

    /// Queue `index` as validated at QueueReady (cursors at zero), or nil if not ready.
    public func queue(_ index: Int) -> SplitQueue? {
        index >= 0 && index < readyQueues.count ? readyQueues[index] : nil
    }

    // MARK: Device-side events

    /// The device put entries in a used ring and the queue asked for a notification: sets
    /// InterruptStatus bit 0. The VMM then raises the interrupt line.
    public mutating func signalUsedBuffers() {
        interruptStatus.insert(.usedBuffer)
    }

    /// The device changed its config space: bumps ConfigGeneration (§4.2.2) and, once the
    /// driver is running, sets InterruptStatus bit 1. Returns whether to inject it.
    @discardableResult
    public mutating func configChanged() -> Bool {
        configGeneration &+= 1
        guard status.contains(.driverOK) else { return false }
        interruptStatus.insert(.configChange)
        return true
    }

    /// The device hit an error only a reset cures (§2.1.2): sets DEVICE_NEEDS_RESET and,
    /// if DRIVER_OK was set, a configuration change interrupt the VMM must inject.
    public mutating func fail(reason: String) -> MMIOAction {
        if failureReason == nil { failureReason = reason }
        status.insert(.deviceNeedsReset)
        let interrupt = status.contains(.driverOK)
        if interrupt { interruptStatus.insert(.configChange) }
        return .failed(reason: reason, interrupt: interrupt)
    }

    // MARK: Guest accesses

    /// A guest read of `data.count` bytes at `offset` from the device's base.
    public mutating func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        for i in data.indices { data[i] = 0 }
        if offset >= VirtioMMIO.configOffset {
            guard let o = configRange(offset: offset, count: data.count) else { return }
            device.readConfig(offset: o, into: data)
            return
        }
        guard data.count == 4, offset % 4 == 0 else { return }
        let v = readRegister(offset)
        for i in 0..<4 { data[i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }

    /// A guest write of `data.count` bytes at `offset` from the device's base.
    public mutating func write(offset: UInt64, from data: UnsafeRawBufferPointer) -> MMIOAction {
        if offset >= VirtioMMIO.configOffset {
            if let o = configRange(offset: offset, count: data.count) { device.writeConfig(offset: o, from: data) }
            return .none
        }
        guard data.count == 4, offset % 4 == 0 else { return .none }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(data[i]) << (8 * UInt32(i)) }
        return writeRegister(offset, v)
    }

    /// Offset into config space of an access, or nil when it is not a 1/2/4/8-byte access
    /// entirely inside configSize.
    private func configRange(offset: UInt64, count: Int) -> Int? {
        guard count == 1 || count == 2 || count == 4 || count == 8 else { return nil }
        let o = offset - VirtioMMIO.configOffset
        guard o < UInt64(device.configSize), UInt64(count) <= UInt64(device.configSize) - o else { return nil }
        return Int(o)
    }

    private var selectedQueue: Int? {
        queueSel < UInt32(maxSizes.count) ? Int(queueSel) : nil
    }

    private func readRegister(_ offset: UInt64) -> UInt32 {
        switch offset {
        case MMIORegister.magicValue: return VirtioMMIO.magicValue
        case MMIORegister.version: return VirtioMMIO.version
        case MMIORegister.deviceID: return device.deviceType.rawValue
        case MMIORegister.vendorID: return VirtioMMIO.vendorID
        case MMIORegister.deviceFeatures:
            let f = offeredFeatures.rawValue
            switch deviceFeaturesSel {
            case 0: return UInt32(truncatingIfNeeded: f)
            case 1: return UInt32(truncatingIfNeeded: f >> 32)
            default: return 0
            }
        case MMIORegister.queueNumMax: return selectedQueue.map { UInt32(maxSizes[$0]) } ?? 0
        case MMIORegister.queueReady: return selectedQueue.map { queueRegisters[$0].ready ? 1 : 0 } ?? 0
        case MMIORegister.interruptStatus: return interruptStatus.rawValue
        case MMIORegister.status: return status.rawValue
        // No shared memory regions: length and base read as -1 (§4.2.2).
        case MMIORegister.shmLenLow, MMIORegister.shmLenHigh, MMIORegister.shmBaseLow, MMIORegister.shmBaseHigh: return .max
        case MMIORegister.configGeneration: return configGeneration
        default: return 0  // write-only, QueueReset (RING_RESET not offered) and holes
        }
    }

    private mutating func writeRegister(_ offset: UInt64, _ v: UInt32) -> MMIOAction {
        switch offset {
        case MMIORegister.deviceFeaturesSel: deviceFeaturesSel = v
        case MMIORegister.driverFeaturesSel: driverFeaturesSel = v
        case MMIORegister.driverFeatures:
            // Negotiation ends at FEATURES_OK (§3.1.1); later writes are ignored.
            guard !status.contains(.featuresOK) else { break }
            switch driverFeaturesSel {
            case 0: driverFeatures = VirtioFeatures(rawValue: driverFeatures.rawValue & ~0xFFFF_FFFF | UInt64(v))
            case 1: driverFeatures = VirtioFeatures(rawValue: driverFeatures.rawValue & 0xFFFF_FFFF | UInt64(v) << 32)
            default: if v != 0 { driverSetUnknownBits = true }  // never offered: FEATURES_OK fails
            }
        case MMIORegister.queueSel: queueSel = v
        case MMIORegister.queueNum:
            if let q = editableQueue { queueRegisters[q].size = v }
        case MMIORegister.queueDescLow, MMIORegister.queueDescHigh, MMIORegister.queueDriverLow, MMIORegister.queueDriverHigh,
             MMIORegister.queueDeviceLow, MMIORegister.queueDeviceHigh:
            if let q = editableQueue { setQueueAddress(q, offset, v) }
        case MMIORegister.queueReady: return writeQueueReady(v)
        case MMIORegister.queueNotify:
            // Without NOTIFICATION_DATA the value is the queue index (§4.2.3.2).
            guard status.contains(.driverOK), !status.contains(.deviceNeedsReset),
                  v < UInt32(maxSizes.count), queueRegisters[Int(v)].ready else { break }
            return .notify(queue: UInt16(v))
        case MMIORegister.interruptACK: interruptStatus.subtract(InterruptStatus(rawValue: v))
        case MMIORegister.status: return writeStatus(v)
        default: break  // read-only registers, SHMSel, QueueReset, holes
        }
        return .none
    }

    /// The selected queue if its registers may change: not ready and before DRIVER_OK
    /// (§4.2.2.2). Writes to a live queue's layout are ignored.
    private var editableQueue: Int? {
        guard let q = selectedQueue, !queueRegisters[q].ready, !status.contains(.driverOK) else { return nil }
        return q
    }

    private mutating func setQueueAddress(_ q: Int, _ offset: UInt64, _ v: UInt32) {
        func set(_ a: inout UInt64, high: Bool) {
            a = high ? (a & 0xFFFF_FFFF) | UInt64(v) << 32 : (a & ~0xFFFF_FFFF) | UInt64(v)
        }
        switch offset {
        case MMIORegister.queueDescLow, MMIORegister.queueDescHigh:
            set(&queueRegisters[q].desc, high: offset == MMIORegister.queueDescHigh)
        case MMIORegister.queueDriverLow, MMIORegister.queueDriverHigh:
            set(&queueRegisters[q].driver, high: offset == MMIORegister.queueDriverHigh)
        default:
            set(&queueRegisters[q].device, high: offset == MMIORegister.queueDeviceHigh)
        }
    }

    /// QueueReady (§4.2.2): 1 validates the layout now, so a bad queue becomes
    /// DEVICE_NEEDS_RESET at setup instead of a fault later; 0 stops using the queue.
    private mutating func writeQueueReady(_ v: UInt32) -> MMIOAction {
        guard let q = selectedQueue else { return .none }
        if v == 0 {
            guard queueRegisters[q].ready else { return .none }
            // A live queue cannot be stopped without VIRTIO_F_RING_RESET (not offered).
            if status.contains(.driverOK) { return fail(reason: "queue \(q) disabled after DRIVER_OK") }
            queueRegisters[q].ready = false
            readyQueues[q] = nil
            return .none
        }
        guard !queueRegisters[q].ready else { return .none }
        if status.contains(.driverOK) { return fail(reason: "queue \(q) enabled after DRIVER_OK") }
        // The ring format depends on the negotiated features (§3.1.1 step 7 follows 5).
        guard status.contains(.featuresOK) else { return fail(reason: "queue \(q) enabled before FEATURES_OK") }
        let r = queueRegisters[q]
        guard r.size <= UInt32(UInt16.max) else {
            return fail(reason: "queue \(q): size \(r.size) above maximum \(maxSizes[q])")
        }
        do {
            readyQueues[q] = try SplitQueue(memory: memory, size: UInt16(r.size), maxSize: maxSizes[q],
                                            descriptorTable: r.desc, availableRing: r.driver, usedRing: r.device,
                                            features: negotiatedFeatures)
        } catch {
            return fail(reason: "queue \(q): \(error)")
        }
        queueRegisters[q].ready = true
        return .none
    }

    /// Status (§2.1, §3.1.1). 0 resets. Otherwise bits are only added, in the order of the
    /// initialization sequence; a bit whose prerequisite is missing is not kept, which the
    /// driver sees when it reads Status back. DEVICE_NEEDS_RESET belongs to the device.
    private mutating func writeStatus(_ v: UInt32) -> MMIOAction {
        if v == 0 {
            reset()
            return .reset
        }
        let requested = DeviceStatus(rawValue: v & 0xFF).subtracting(.deviceNeedsReset)
        let current = status.subtracting(.deviceNeedsReset)
        // Clearing bits other than by reset is not a defined transition: ignore the write.
        guard requested.isSuperset(of: current) else { return .none }
        let added = requested.subtracting(current)
        var action = MMIOAction.none

        if added.contains(.acknowledge) { status.insert(.acknowledge) }
        if added.contains(.driver), status.contains(.acknowledge) { status.insert(.driver) }
        if added.contains(.featuresOK), status.contains(.driver), featuresAcceptable() {
            status.insert(.featuresOK)
        }
        if added.contains(.driverOK), status.contains(.featuresOK), !status.contains(.deviceNeedsReset),
           !status.contains(.failed) {
            status.insert(.driverOK)
            do {
                try device.activate(queues: readyQueues, features: negotiatedFeatures)
                action = .activate
            } catch {
                action = fail(reason: error.reason)
            }
        }
        if added.contains(.failed) { status.insert(.failed) }
        return action
    }

    /// FEATURES_OK checks (§2.2.1, §6.1): only offered bits, VERSION_1 accepted, and the
    /// device agrees.
    private mutating func featuresAcceptable() -> Bool {
        !driverSetUnknownBits && driverFeatures.isSubset(of: offeredFeatures) && driverFeatures.contains(.version1)
            && device.acceptFeatures(driverFeatures)
    }

    /// Device reset (§2.1.2, §4.2.2.1): status, features, selectors, queues and
    /// InterruptStatus back to their initial values. ConfigGeneration keeps counting.
    private mutating func reset() {
        status = []
        driverFeatures = []
        driverSetUnknownBits = false
        deviceFeaturesSel = 0
        driverFeaturesSel = 0
        queueSel = 0
        interruptStatus = []
        failureReason = nil
        queueRegisters = maxSizes.map { QueueRegisters(size: UInt32($0)) }
        readyQueues = Array(repeating: nil, count: maxSizes.count)
        device.reset()
    }
}

// MARK: Snapshot

/// A transport's register file and its queues' device-side cursors: everything of a
/// virtio-mmio device that lives in the VMM rather than in guest memory (§4.2.2).
public struct MMIOTransportState: Sendable, Equatable {
    public struct Queue: Sendable, Equatable {
        public var size: UInt32
        public var ready: Bool
        public var desc: UInt64
        public var driver: UInt64
        public var device: UInt64
        /// The backend's cursors for a queue in service (DRIVER_OK), else nil.
        public var cursors: SplitQueue.Cursors?

        public init(size: UInt32, ready: Bool, desc: UInt64, driver: UInt64, device: UInt64, cursors: SplitQueue.Cursors?) {
            self.size = size
            self.ready = ready
            self.desc = desc
            self.driver = driver
            self.device = device
            self.cursors = cursors
        }
    }

    public var status: UInt32 = 0
    public var driverFeatures: UInt64 = 0
    public var driverSetUnknownBits = false
    public var deviceFeaturesSel: UInt32 = 0
    public var driverFeaturesSel: UInt32 = 0
    public var queueSel: UInt32 = 0
    public var interruptStatus: UInt32 = 0
    public var configGeneration: UInt32 = 0
    public var queues: [Queue] = []

    public init() {}
}

/// A saved transport state that cannot be put back; `reason` names the field.
public struct TransportRestoreError: Error, Equatable, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

extension MMIOTransport {
    /// The registers, with `cursors[i]` (the backend's, for served queues) per queue.
    public func savedState(cursors: [SplitQueue.Cursors?]) -> MMIOTransportState {
        var s = MMIOTransportState()
        s.status = status.rawValue
        s.driverFeatures = driverFeatures.rawValue
        s.driverSetUnknownBits = driverSetUnknownBits
        s.deviceFeaturesSel = deviceFeaturesSel
        s.driverFeaturesSel = driverFeaturesSel
        s.queueSel = queueSel
        s.interruptStatus = interruptStatus.rawValue
        s.configGeneration = configGeneration
        s.queues = queueRegisters.indices.map { i in
            let r = queueRegisters[i]
            return MMIOTransportState.Queue(size: r.size, ready: r.ready, desc: r.desc, driver: r.driver, device: r.device,
                                            cursors: i < cursors.count ? cursors[i] : nil)
        }
        return s
    }

    /// Puts a saved state back on a freshly reset transport, checking it as the register
    /// writes that built it were checked: the queue count, status bits only in the
    /// initialization order, features only offered ones, every ready queue's layout
    /// (SplitQueue validation against this guest's memory). With DRIVER_OK the device is
    /// activated with the queues at their saved cursors. Returns whether it was.
    public mutating func restore(_ s: MMIOTransportState) throws(TransportRestoreError) -> Bool {
        guard s.queues.count == maxSizes.count else {
            throw TransportRestoreError("queues: \(s.queues.count) saved, the device has \(maxSizes.count)")
        }
        guard s.status <= 0xFF else { throw TransportRestoreError("status: 0x\(String(s.status, radix: 16)) has undefined bits") }
        let st = DeviceStatus(rawValue: s.status)
        let order: [DeviceStatus] = [.acknowledge, .driver, .featuresOK, .driverOK]
        for (i, bit) in order.enumerated().dropFirst() where st.contains(bit) && !st.contains(order[i - 1]) {
            throw TransportRestoreError("status: 0x\(String(s.status, radix: 16)) skips a step of the initialization sequence")
        }
        let features = VirtioFeatures(rawValue: s.driverFeatures)
        if st.contains(.featuresOK) && (!features.isSubset(of: offeredFeatures) || !features.contains(.version1)) {
            throw TransportRestoreError("driver_features: 0x\(String(s.driverFeatures, radix: 16)) was not offered")
        }
        guard s.interruptStatus <= 3 else { throw TransportRestoreError("interrupt_status: 0x\(String(s.interruptStatus, radix: 16))") }
        reset()
        status = st
        driverFeatures = features
        driverSetUnknownBits = s.driverSetUnknownBits
        deviceFeaturesSel = s.deviceFeaturesSel
        driverFeaturesSel = s.driverFeaturesSel
        queueSel = s.queueSel
        interruptStatus = InterruptStatus(rawValue: s.interruptStatus)
        configGeneration = s.configGeneration
        for (i, q) in s.queues.enumerated() {
            queueRegisters[i] = QueueRegisters(size: q.size, ready: q.ready, desc: q.desc, driver: q.driver, device: q.device)
            guard q.ready else {
                if q.cursors != nil { throw TransportRestoreError("queue \(i): cursors for a queue that is not ready") }
                continue
            }
            guard st.contains(.featuresOK), q.size <= UInt32(UInt16.max) else {
                throw TransportRestoreError("queue \(i): ready without FEATURES_OK or with size \(q.size)")
            }
            do {
                var sq = try SplitQueue(memory: memory, size: UInt16(q.size), maxSize: maxSizes[i], descriptorTable: q.desc,
                                        availableRing: q.driver, usedRing: q.device, features: negotiatedFeatures)
                if let c = q.cursors { sq.restore(c) }
                readyQueues[i] = sq
            } catch {
                throw TransportRestoreError("queue \(i): \(error)")
            }
        }
        guard st.contains(.driverOK) else { return false }
        do { try device.activate(queues: readyQueues, features: negotiatedFeatures) } catch {
            throw TransportRestoreError("activate: \(error.reason)")
        }
        return true
    }
}
