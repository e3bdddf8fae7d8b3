import GuestMemory
import Testing
import Virtio

/// A device model that records what the transport did to it.
struct FakeDevice: VirtioDeviceModel {
    var deviceType = VirtioDeviceType.block
    var deviceFeatures: VirtioFeatures = [.blkSegMax, .indirectDesc, .ringEventIdx]
    var queueMaxSizes: [UInt16] = [256, 16]
    var config: [UInt8] = Array(0..<12)
    var configSize: Int { config.count }
    var refuseFeatures = false
    var activationError: String?
    var activated: [SplitQueue?]?
    var activatedFeatures: VirtioFeatures = []
    var resets = 0

    mutating func readConfig(offset: Int, into data: UnsafeMutableRawBufferPointer) {
        for i in 0..<data.count { data[i] = config[offset + i] }
    }
    mutating func writeConfig(offset: Int, from data: UnsafeRawBufferPointer) {
        for i in 0..<data.count { config[offset + i] = data[i] }
    }
    func acceptFeatures(_ features: VirtioFeatures) -> Bool { !refuseFeatures }
    mutating func activate(queues: [SplitQueue?], features: VirtioFeatures) throws(DeviceActivationError) {
        if let activationError { throw DeviceActivationError(reason: activationError) }
        activated = queues
        activatedFeatures = features
    }
    mutating func reset() {
        resets += 1
        activated = nil
    }
}

typealias Transport = MMIOTransport<FakeDevice>
typealias Reg = MMIORegister

extension MMIOTransport {
    mutating func r32(_ offset: UInt64) -> UInt32 {
        var v: UInt32 = 0
        withUnsafeMutableBytes(of: &v) { read(offset: offset, into: $0) }
        return v
    }

    @discardableResult
    mutating func w32(_ offset: UInt64, _ value: UInt32) -> MMIOAction {
        withUnsafeBytes(of: value.littleEndian) { write(offset: offset, from: $0) }
    }

    mutating func readBytes(_ offset: UInt64, _ count: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0xCC, count: count)
        b.withUnsafeMutableBytes { read(offset: offset, into: $0) }
        return b
    }

    @discardableResult
    mutating func writeBytes(_ offset: UInt64, _ bytes: [UInt8]) -> MMIOAction {
        bytes.withUnsafeBytes { write(offset: offset, from: $0) }
    }

    /// The driver's side of §3.1.1 up to FEATURES_OK; returns Status read back.
    mutating func negotiate(_ features: VirtioFeatures) -> DeviceStatus {
        w32(Reg.status, DeviceStatus.acknowledge.rawValue)
        w32(Reg.status, DeviceStatus([.acknowledge, .driver]).rawValue)
        w32(Reg.driverFeaturesSel, 0)
        w32(Reg.driverFeatures, UInt32(truncatingIfNeeded: features.rawValue))
        w32(Reg.driverFeaturesSel, 1)
        w32(Reg.driverFeatures, UInt32(truncatingIfNeeded: features.rawValue >> 32))
        w32(Reg.status, DeviceStatus([.acknowledge, .driver, .featuresOK]).rawValue)
        return DeviceStatus(rawValue: r32(Reg.status))
    }

    @discardableResult
    mutating func setUpQueue(_ q: UInt32, size: UInt32, desc: UInt64, driver: UInt64, device: UInt64) -> MMIOAction {
        w32(Reg.queueSel, q)
        w32(Reg.queueNum, size)
        w32(Reg.queueDescLow, UInt32(truncatingIfNeeded: desc))
        w32(Reg.queueDescHigh, UInt32(truncatingIfNeeded: desc >> 32))
        w32(Reg.queueDriverLow, UInt32(truncatingIfNeeded: driver))
        w32(Reg.queueDriverHigh, UInt32(truncatingIfNeeded: driver >> 32))
        w32(Reg.queueDeviceLow, UInt32(truncatingIfNeeded: device))
        w32(Reg.queueDeviceHigh, UInt32(truncatingIfNeeded: device >> 32))
        return w32(Reg.queueReady, 1)
    }
}

let memory16M = try! GuestMemory(size: 16 << 20)
let allUpToFeaturesOK: DeviceStatus = [.acknowledge, .driver, .featuresOK]

func freshTransport(_ device: FakeDevice = FakeDevice()) -> Transport {
    Transport(device: device, memory: memory16M)
}

@Suite struct MMIORegisters {
    @Test func identification() {
        var t = freshTransport()
        #expect(t.r32(Reg.magicValue) == 0x7472_6976)
        #expect(t.r32(Reg.version) == 2)
        #expect(t.r32(Reg.deviceID) == 2)
        #expect(t.r32(Reg.vendorID) == 0x4D4D_5650)
        #expect(t.readBytes(Reg.vendorID, 4) == Array("PVMM".utf8))
        // No shared memory regions (§4.2.2: -1).
        #expect(t.r32(Reg.shmLenLow) == .max && t.r32(Reg.shmLenHigh) == .max && t.r32(Reg.shmBaseHigh) == .max)
    }

    @Test func wrongWidthUnalignedAndHolesAreIgnored() {
        var t = freshTransport()
        #expect(t.readBytes(Reg.magicValue, 2) == [0, 0])  // 16-bit read of a register
        #expect(t.readBytes(Reg.magicValue, 8) == [UInt8](repeating: 0, count: 8))
        #expect(t.readBytes(Reg.magicValue + 1, 4) == [0, 0, 0, 0])  // unaligned
        #expect(t.r32(0x0E8) == 0)  // a hole
        #expect(t.r32(Reg.queueNotify) == 0)  // write-only
        #expect(t.readBytes(0, 0) == [])
        // Writes of the wrong width or at odd offsets change nothing.
        #expect(t.writeBytes(Reg.status, [1]) == .none)
        #expect(t.writeBytes(Reg.status, [1, 0]) == .none)
        #expect(t.writeBytes(Reg.status + 1, [1, 0, 0, 0]) == .none)
        #expect(t.writeBytes(Reg.status, [1, 0, 0, 0, 0, 0, 0, 0]) == .none)
        #expect(t.status == [])
        #expect(t.w32(Reg.magicValue, 0) == .none)  // read-only
        #expect(t.r32(Reg.magicValue) == 0x7472_6976)
        // Far beyond everything: config space is only 12 bytes.
        #expect(t.readBytes(0x1000, 4) == [0, 0, 0, 0])
        #expect(t.readBytes(.max - 1, 2) == [0, 0])
        #expect(t.writeBytes(.max, [1]) == .none)
    }

    @Test func configSpace() {
        var t = freshTransport()
        #expect(t.readBytes(0x100, 4) == [0, 1, 2, 3])
        #expect(t.readBytes(0x108, 4) == [8, 9, 10, 11])
        #expect(t.readBytes(0x10B, 1) == [11])
        #expect(t.readBytes(0x100, 8) == [0, 1, 2, 3, 4, 5, 6, 7])
        #expect(t.readBytes(0x10A, 4) == [0, 0, 0, 0])  // runs past the end
        #expect(t.readBytes(0x10C, 1) == [0])
        #expect(t.readBytes(0x100, 3) == [0, 0, 0])  // not a 1/2/4/8 access
        t.writeBytes(0x102, [0xAA, 0xBB])
        t.writeBytes(0x10B, [0xCC, 0xDD])  // past the end: dropped
        #expect(t.device.config[2...3] == [0xAA, 0xBB] && t.device.config[11] == 11)
    }

    @Test func configGeneration() {
        var t = freshTransport()
        let g0 = t.r32(Reg.configGeneration)
        #expect(t.configChanged() == false)  // before DRIVER_OK: no interrupt
        #expect(t.r32(Reg.configGeneration) == g0 &+ 1 && t.interruptStatus == [])
        #expect(t.negotiate([.version1]) == allUpToFeaturesOK)
        t.w32(Reg.status, DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue)
        #expect(t.configChanged() == true)
        #expect(t.r32(Reg.configGeneration) == g0 &+ 2)
        #expect(t.r32(Reg.interruptStatus) == 2)
    }

    @Test func interruptACK() {
        var t = freshTransport()
        #expect(t.negotiate([.version1]) == allUpToFeaturesOK)
        t.w32(Reg.status, DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue)
        t.signalUsedBuffers()
        t.configChanged()
        #expect(t.r32(Reg.interruptStatus) == 3 && t.interruptPending)
        t.w32(Reg.interruptACK, 1)
        #expect(t.r32(Reg.interruptStatus) == 2)
        t.w32(Reg.interruptACK, 0xFFFF_FFFC)  // undefined bits: no effect
        #expect(t.r32(Reg.interruptStatus) == 2)
        t.w32(Reg.interruptACK, 2)
        #expect(t.r32(Reg.interruptStatus) == 0 && !t.interruptPending)
        #expect(t.w32(Reg.interruptStatus, 3) == .none && t.r32(Reg.interruptStatus) == 0)  // read-only
    }
}

@Suite struct FeatureNegotiation {
    @Test func offeredFeaturesIncludeVersion1() {
        var t = freshTransport()
        t.w32(Reg.deviceFeaturesSel, 0)
        #expect(t.r32(Reg.deviceFeatures) == UInt32(1 << 2 | 1 << 28 | 1 << 29))
        t.w32(Reg.deviceFeaturesSel, 1)
        #expect(t.r32(Reg.deviceFeatures) == 1)  // bit 32
        t.w32(Reg.deviceFeaturesSel, 2)
        #expect(t.r32(Reg.deviceFeatures) == 0)
    }

    @Test func acceptedSubsetKeepsFeaturesOK() {
        var t = freshTransport()
        #expect(t.negotiate([.version1, .ringEventIdx]) == allUpToFeaturesOK)
        #expect(t.negotiatedFeatures == [.version1, .ringEventIdx])
        // Negotiation is over: later DriverFeatures writes are ignored.
        t.w32(Reg.driverFeaturesSel, 0)
        t.w32(Reg.driverFeatures, 0xFFFF_FFFF)
        #expect(t.negotiatedFeatures == [.version1, .ringEventIdx])
    }

    @Test func refusesUnofferedFeature() {
        var t = freshTransport()
        let status = t.negotiate([.version1, .blkReadOnly])
        #expect(status == [.acknowledge, .driver])  // FEATURES_OK not kept
        #expect(t.negotiatedFeatures == [])
        // The driver may retry with a valid subset.
        #expect(t.negotiate([.version1, .blkSegMax]) == allUpToFeaturesOK)
    }

    @Test func refusesWithoutVersion1() {
        var t = freshTransport()
        #expect(t.negotiate([.blkSegMax]) == [.acknowledge, .driver])
    }

    @Test func refusesBitsBeyond63() {
        var t = freshTransport()
        t.w32(Reg.status, 1)
        t.w32(Reg.status, 3)
        t.w32(Reg.driverFeaturesSel, 2)
        t.w32(Reg.driverFeatures, 1)
        t.w32(Reg.driverFeaturesSel, 1)
        t.w32(Reg.driverFeatures, 1)
        t.w32(Reg.status, allUpToFeaturesOK.rawValue)
        #expect(t.status == [.acknowledge, .driver])
    }

    @Test func deviceMayRefuseCombination() {
        var d = FakeDevice()
        d.refuseFeatures = true
        var t = freshTransport(d)
        #expect(t.negotiate([.version1]) == [.acknowledge, .driver])
    }

    @Test func statusBitsNeedTheirPrerequisites() {
        var t = freshTransport()
        t.w32(Reg.status, DeviceStatus.driver.rawValue)  // DRIVER without ACKNOWLEDGE
        #expect(t.status == [])
        t.w32(Reg.status, DeviceStatus([.acknowledge, .driverOK]).rawValue)  // DRIVER_OK too early
        #expect(t.status == [.acknowledge])
        t.w32(Reg.status, DeviceStatus([.acknowledge, .driver, .featuresOK]).rawValue)  // no VERSION_1 yet
        #expect(t.status == [.acknowledge, .driver])
        // Bits are only cleared by a reset: this write is ignored.
        t.w32(Reg.status, DeviceStatus.driver.rawValue)
        #expect(t.status == [.acknowledge, .driver])
        // The driver cannot set DEVICE_NEEDS_RESET.
        t.w32(Reg.status, DeviceStatus([.acknowledge, .driver, .deviceNeedsReset]).rawValue)
        #expect(t.status == [.acknowledge, .driver])
    }
}

@Suite struct QueueConfiguration {
    @Test func setUpAndActivate() throws {
        var t = freshTransport()
        #expect(t.negotiate([.version1, .ringEventIdx]) == allUpToFeaturesOK)
        t.w32(Reg.queueSel, 0)
        #expect(t.r32(Reg.queueNumMax) == 256 && t.r32(Reg.queueReady) == 0)
        t.w32(Reg.queueSel, 1)
        #expect(t.r32(Reg.queueNumMax) == 16)
        t.w32(Reg.queueSel, 2)
        #expect(t.r32(Reg.queueNumMax) == 0)  // no such queue
        #expect(t.w32(Reg.queueReady, 1) == .none && t.r32(Reg.queueReady) == 0)

        #expect(t.setUpQueue(0, size: 128, desc: 0x1_0000, driver: 0x2_0000, device: 0x3_0000) == .none)
        #expect(t.r32(Reg.queueReady) == 1)
        let q = try #require(t.queue(0))
        #expect(q.size == 128 && q.descriptorTable == 0x1_0000 && q.availableRing == 0x2_0000 && q.usedRing == 0x3_0000)
        #expect(q.eventIdx && !q.indirectDescriptors)

        // Layout registers of a ready queue are frozen.
        t.w32(Reg.queueNum, 64)
        t.w32(Reg.queueDescLow, 0x5000)
        #expect(t.queue(0)?.size == 128)

        #expect(t.w32(Reg.queueNotify, 0) == .none)  // before DRIVER_OK
        #expect(t.w32(Reg.status, DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue) == .activate)
        let active = try #require(t.device.activated)
        #expect(active.count == 2 && active[0]?.size == 128 && active[1] == nil)
        #expect(t.device.activatedFeatures == [.version1, .ringEventIdx])
        #expect(t.w32(Reg.queueNotify, 0) == .notify(queue: 0))
        #expect(t.w32(Reg.queueNotify, 1) == .none)  // not ready
        #expect(t.w32(Reg.queueNotify, 7) == .none)  // no such queue
        // After DRIVER_OK the layout cannot change, even for queues that were never enabled.
        t.w32(Reg.queueSel, 1)
        t.w32(Reg.queueNum, 8)
        #expect(t.queue(1) == nil)
    }

    @Test func highAddressHalves() throws {
        let big = try GuestMemory(size: 8 << 20, holeStart: 4 << 20, holeEnd: 0x1_0000_0000)
        var t = Transport(device: FakeDevice(), memory: big)
        #expect(t.negotiate([.version1]) == allUpToFeaturesOK)
        #expect(t.setUpQueue(1, size: 16, desc: 0x1_0000_1000, driver: 0x1_0000_2000, device: 0x1_0000_3000) == .none)
        let q = try #require(t.queue(1))
        #expect(q.descriptorTable == 0x1_0000_1000 && q.availableRing == 0x1_0000_2000 && q.usedRing == 0x1_0000_3000)
    }

    @Test(arguments: [
        (0, 0x1_0000, 0x2_0000, 0x3_0000),  // size 0
        (100, 0x1_0000, 0x2_0000, 0x3_0000),  // not a power of two
        (512, 0x1_0000, 0x2_0000, 0x3_0000),  // above QueueNumMax
        (0x1_0000, 0x1_0000, 0x2_0000, 0x3_0000),  // does not fit 16 bits
        (128, 0x1_0008, 0x2_0000, 0x3_0000),  // misaligned descriptors
        (128, 0x1_0000, 0x2_0001, 0x3_0000),  // misaligned avail
        (128, 0x1_0000, 0x2_0000, 0x3_0002),  // misaligned used
        (128, 0xFFFF_F000, 0x2_0000, 0x3_0000),  // descriptors outside RAM
        (128, 0x1_0000, 0x2_0000, (16 << 20) - 8),  // used ring runs off the end
    ] as [(UInt32, UInt64, UInt64, UInt64)])
    func badQueueLeadsToNeedsReset(size: UInt32, desc: UInt64, driver: UInt64, device: UInt64) {
        var t = freshTransport()
        #expect(t.negotiate([.version1]) == allUpToFeaturesOK)
        let action = t.setUpQueue(0, size: size, desc: desc, driver: driver, device: device)
        guard case .failed(_, let interrupt) = action else {
            Issue.record("expected .failed, got \(action)")
            return
        }
        #expect(!interrupt)  // not yet DRIVER_OK: no config interrupt owed
        #expect(t.status.contains(.deviceNeedsReset) && t.failureReason != nil)
        #expect(t.r32(Reg.queueReady) == 0 && t.queue(0) == nil)
        // DRIVER_OK is refused on a device that needs a reset; so are notifications.
        #expect(t.w32(Reg.status, DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue) == .none)
        #expect(!t.status.contains(.driverOK) && t.device.activated == nil)
        // A reset recovers.
        #expect(t.w32(Reg.status, 0) == .reset)
        #expect(t.status == [] && t.failureReason == nil)
        #expect(t.negotiate([.version1]) == allUpToFeaturesOK)
        #expect(t.setUpQueue(0, size: 128, desc: 0x1_0000, driver: 0x2_0000, device: 0x3_0000) == .none)
    }

    @Test func queueReadyBeforeFeaturesOK() {
        var t = freshTransport()
        t.w32(Reg.status, 1)
        t.w32(Reg.status, 3)
        let action = t.setUpQueue(0, size: 128, desc: 0x1_0000, driver: 0x2_0000, device: 0x3_0000)
        #expect(action == .failed(reason: "queue 0 enabled before FEATURES_OK", interrupt: false))
        #expect(t.r32(Reg.queueReady) == 0)
    }

    @Test func disablingQueues() {
        var t = freshTransport()
        #expect(t.negotiate([.version1]) == allUpToFeaturesOK)
        t.setUpQueue(0, size: 128, desc: 0x1_0000, driver: 0x2_0000, device: 0x3_0000)
        #expect(t.w32(Reg.queueReady, 0) == .none && t.r32(Reg.queueReady) == 0 && t.queue(0) == nil)
        t.setUpQueue(0, size: 64, desc: 0x1_0000, driver: 0x2_0000, device: 0x3_0000)
        #expect(t.queue(0)?.size == 64)
        t.w32(Reg.status, DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue)
        // Without RING_RESET a live queue cannot be stopped: the device needs a reset.
        #expect(t.w32(Reg.queueReady, 0) == .failed(reason: "queue 0 disabled after DRIVER_OK", interrupt: true))
        #expect(t.status.contains(.deviceNeedsReset) && t.r32(Reg.interruptStatus) == 2)
        #expect(t.w32(Reg.queueNotify, 0) == .none)
    }
}

@Suite struct DeviceLifecycle {
    @Test func failAfterDriverOKRaisesConfigInterrupt() {
        var t = freshTransport()
        #expect(t.negotiate([.version1]) == allUpToFeaturesOK)
        #expect(t.w32(Reg.status, DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue) == .activate)
        #expect(t.fail(reason: "disk gone") == .failed(reason: "disk gone", interrupt: true))
        #expect(t.r32(Reg.status) == DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK, .deviceNeedsReset]).rawValue)
        #expect(t.r32(Reg.interruptStatus) & 2 != 0)
        // The first reason is kept.
        _ = t.fail(reason: "second")
        #expect(t.failureReason == "disk gone")
        // The driver's read-modify-write of Status (keeping NEEDS_RESET) changes nothing.
        #expect(t.w32(Reg.status, t.r32(Reg.status)) == .none)
    }

    @Test func activationFailure() {
        var d = FakeDevice()
        d.activationError = "no backend"
        var t = freshTransport(d)
        #expect(t.negotiate([.version1]) == allUpToFeaturesOK)
        let action = t.w32(Reg.status, DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue)
        #expect(action == .failed(reason: "no backend", interrupt: true))
        #expect(t.status.contains(.deviceNeedsReset))
    }

    @Test func resetClearsEverything() {
        var t = freshTransport()
        #expect(t.negotiate([.version1, .indirectDesc]) == allUpToFeaturesOK)
        t.setUpQueue(1, size: 16, desc: 0x1_0000, driver: 0x2_0000, device: 0x3_0000)
        t.w32(Reg.status, DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue)
        t.signalUsedBuffers()
        _ = t.fail(reason: "x")
        let generation = t.r32(Reg.configGeneration)

        #expect(t.w32(Reg.status, 0) == .reset)
        #expect(t.device.resets == 1 && t.device.activated == nil)
        #expect(t.r32(Reg.status) == 0 && t.r32(Reg.interruptStatus) == 0 && t.failureReason == nil)
        #expect(t.driverFeatures == [] && t.negotiatedFeatures == [])
        #expect(t.r32(Reg.queueSel) == 0)  // write-only: reads 0 anyway
        t.w32(Reg.queueSel, 1)
        #expect(t.r32(Reg.queueReady) == 0 && t.queue(1) == nil)
        #expect(t.r32(Reg.configGeneration) == generation)
        // A second, full initialization works.
        #expect(t.negotiate([.version1]) == allUpToFeaturesOK)
        t.setUpQueue(1, size: 8, desc: 0x1_0000, driver: 0x2_0000, device: 0x3_0000)
        #expect(t.w32(Reg.status, DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue) == .activate)
        #expect(t.device.activated?[1]?.size == 8 && t.device.activatedFeatures == [.version1])
    }

    @Test func driverFailedStatus() {
        var t = freshTransport()
        t.w32(Reg.status, 1)
        t.w32(Reg.status, DeviceStatus([.acknowledge, .failed]).rawValue)
        #expect(t.status == [.acknowledge, .failed])
    }
}
