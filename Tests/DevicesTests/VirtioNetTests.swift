#if canImport(Glibc)
import Glibc
#endif
import Devices
import GuestMemory
import HostNet
import Synchronization
import Testing
import Virtio

/// A frame channel in memory: frames queued for the guest, frames the guest sent.
final class FakeChannel: FrameChannel, @unchecked Sendable {
    let vnetHeader: Bool
    let mtu: Int
    let udpSegmentation: Bool
    var inbound: [[UInt8]] = []
    var outbound: [[UInt8]] = []
    var blocked = false
    var isClosed = false
    var guestChecksum: Bool?
    var fd: Int32 { 1000 }
    var hasPendingOutput: Bool { false }

    init(vnetHeader: Bool = true, mtu: Int = 1500, udpSegmentation: Bool = false) {
        self.vnetHeader = vnetHeader
        self.mtu = mtu
        self.udpSegmentation = udpSegmentation
    }

    var guestUDPSegmentation: Bool?
    func setGuestOffload(checksum: Bool, udpSegmentation: Bool) {
        guestChecksum = checksum
        guestUDPSegmentation = udpSegmentation
    }

    func receive(_ iov: UnsafeBufferPointer<iovec>) -> FrameIOResult {
        if isClosed { return .closed }
        guard !inbound.isEmpty else { return .wouldBlock }
        let f = inbound.removeFirst()
        _ = f.withUnsafeBytes { copy($0, into: iov) }
        return .done(f.count)
    }

    func send(_ iov: UnsafeBufferPointer<iovec>) -> FrameIOResult {
        if isClosed { return .closed }
        if blocked { return .wouldBlock }
        var f: [UInt8] = []
        for v in iov { f += UnsafeRawBufferPointer(start: v.iov_base, count: v.iov_len) }
        outbound.append(f)
        return .done(f.count)
    }

    func flush() -> FrameIOResult { blocked ? .wouldBlock : .done(0) }
}

final class FakeInterest: IOInterest, @unchecked Sendable {
    var events: IOEvents = []
    var removed = false
    func setInterest(_ fd: Int32, _ events: IOEvents) { self.events = events }
    func remove(_ fd: Int32) { removed = true }
}

typealias NetDriver = FakeDriver<VirtioNetModel>

struct NetRig {
    let d: NetDriver
    let channel: FakeChannel
    let interest = FakeInterest()
    let stats = NetStats()
    let backendLog = LogRecorder()

    init(vnetHeader: Bool = true, udpSegmentation: Bool = false, features: VirtioFeatures = [.ringEventIdx],
         start: Bool = true) throws {
        channel = FakeChannel(vnetHeader: vnetHeader, udpSegmentation: udpSegmentation)
        let service = RecordingNotifier()
        let backend = VirtioNetBackend(channel: channel, mac: MACBytes([0x52, 0x54, 0, 1, 2, 3]), stats: stats, service: service,
                                       name: "t0", log: backendLog.sink)
        backend.attach(interest)
        d = try NetDriver(model: VirtioNetModel(backend: backend))
        if start {
            d.start(features: features)
            d.device.serviceRequested()
        }
    }

    var rx: FakeQueue {
        get { d.queues[0] }
        nonmutating set { d.queues[0] = newValue }
    }
    var tx: FakeQueue {
        get { d.queues[1] }
        nonmutating set { d.queues[1] = newValue }
    }

    /// A 12-byte header (flags, gso) followed by an Ethernet frame of `length` bytes.
    static func txChain(length: Int, flags: UInt8 = 0, gso: UInt8 = 0, csumStart: UInt16 = 0, csumOffset: UInt16 = 0,
                        hdrLen: UInt16 = 0, gsoSize: UInt16 = 0) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 12)
        h[0] = flags
        h[1] = gso
        h[2] = UInt8(hdrLen & 0xFF); h[3] = UInt8(hdrLen >> 8)
        h[4] = UInt8(gsoSize & 0xFF); h[5] = UInt8(gsoSize >> 8)
        h[6] = UInt8(csumStart & 0xFF); h[7] = UInt8(csumStart >> 8)
        h[8] = UInt8(csumOffset & 0xFF); h[9] = UInt8(csumOffset >> 8)
        h[10] = 0xAA  // num_buffers is not the host's business
        return h + (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 3 &+ 1) }
    }

    func send(_ bytes: [UInt8]) throws {
        let b = try d.buffer(bytes)
        try d.queues[1].post(readable: [b])
        d.kick(1)
    }
}

@Suite struct VirtioNetTests {
    @Test func configSpaceHasMACLinkAndMTU() throws {
        let rig = try NetRig(start: false)
        var cfg = [UInt8](repeating: 0, count: 12)
        for i in 0..<12 { cfg[i] = UInt8(truncatingIfNeeded: rig.d.r32(0x100 + UInt64(i & ~3)) >> (8 * UInt32(i & 3))) }
        #expect(Array(cfg[0..<6]) == [0x52, 0x54, 0, 1, 2, 3])
        #expect(cfg[6] == 1 && cfg[7] == 0)  // VIRTIO_NET_S_LINK_UP
        #expect(UInt16(cfg[10]) | UInt16(cfg[11]) << 8 == 1500)
        #expect(rig.d.r32(MMIORegister.deviceID) == 1)
        let f = VirtioFeatures(rawValue: UInt64(rig.d.r32(MMIORegister.deviceFeatures)))
        #expect(f.isSuperset(of: [.netMAC, .netStatus, .netMTU, .netMergeableRxBuffers, .ringEventIdx, .netCsum, .netGuestCsum]))
        // Without virtio-net headers on the channel (passt) there is no checksum offload.
        let plain = try NetRig(vnetHeader: false, start: false)
        let g = VirtioFeatures(rawValue: UInt64(plain.d.r32(MMIORegister.deviceFeatures)))
        #expect(!g.contains(.netCsum) && !g.contains(.netGuestCsum))
    }

    @Test func guestChecksumOffloadFollowsWhatTheDriverAcked() throws {
        let on = try NetRig(features: [.netGuestCsum])
        #expect(on.channel.guestChecksum == true && on.channel.guestUDPSegmentation == false)
        let off = try NetRig(features: [])
        #expect(off.channel.guestChecksum == false)
        let uso = try NetRig(udpSegmentation: true, features: [.netGuestCsum, .netGuestUSO4, .netGuestUSO6, .netMergeableRxBuffers])
        #expect(uso.channel.guestChecksum == true && uso.channel.guestUDPSegmentation == true)
        // Only both address families together (the tap enables them as one).
        let half = try NetRig(udpSegmentation: true, features: [.netGuestCsum, .netGuestUSO4, .netMergeableRxBuffers])
        #expect(half.channel.guestUDPSegmentation == false)
    }

    /// With GUEST_USO a 64 KiB segmentation frame from the tap lands whole, spread over
    /// as many mergeable buffers as it needs, its GSO header passed on.
    @Test func guestUDPSegmentationFramesSpanManyBuffers() throws {
        let rig = try NetRig(udpSegmentation: true, features: [.netGuestCsum, .netGuestUSO4, .netGuestUSO6, .netMergeableRxBuffers])
        var frame = NetRig.txChain(length: 42 + 40 * 1400, flags: 1, gso: 5, csumStart: 34, csumOffset: 6, hdrLen: 42, gsoSize: 1400)
        frame[10] = 0
        rig.channel.inbound = [frame]
        var buffers: [Buffer] = []
        for _ in 0..<40 {
            let b = try rig.d.buffer(2048)
            buffers.append(b)
            try rig.d.queues[0].post(writable: [b])
        }
        rig.d.kick(0)
        rig.d.device.hostEvent(.readable)
        let used = Int(try rig.rx.usedIdx())
        #expect(used == (frame.count + 2047) / 2048)
        var got: [UInt8] = []
        for i in 0..<used { got += try rig.d.mem.readBytes(at: buffers[i].addr, count: Int(try rig.rx.usedElement(UInt16(i)).len)) }
        #expect(got.count == frame.count)
        #expect(got[1] == 5 && got[4] == 0x78 && got[5] == 0x05)          // UDP_L4, gso_size 1400
        #expect(Int(got[10]) | Int(got[11]) << 8 == used)                  // num_buffers
        #expect(Array(got[12...]) == Array(frame[12...]))
        #expect(rig.stats.rxPackets.value == 1)
        // A small frame still takes one chain (2 KiB holds a maximal plain frame).
        rig.channel.inbound = [[UInt8](repeating: 0, count: 12) + [UInt8](repeating: 7, count: 60)]
        rig.d.device.hostEvent(.readable)
        #expect(Int(try rig.rx.usedIdx()) == used + 1)
        #expect(try rig.rx.usedElement(UInt16(used)).len == 72)
        // A plain frame above MTU + 18 is not spread out: dropped.
        rig.channel.inbound = [[UInt8](repeating: 0, count: 12) + [UInt8](repeating: 7, count: 4000)]
        rig.d.device.hostEvent(.readable)
        #expect(Int(try rig.rx.usedIdx()) == used + 1)
        #expect(rig.stats.rxDropTooBig.value == 1)
        // A segmentation frame larger than the buffers left is dropped, nothing fails.
        rig.channel.inbound = [frame]
        rig.d.device.hostEvent(.readable)
        #expect(Int(try rig.rx.usedIdx()) == used + 1)
        #expect(rig.stats.rxDropTooBig.value == 2 && !rig.d.status.contains(.deviceNeedsReset))
    }

    @Test func transmitSendsHeaderAndFrameInOneWrite() throws {
        let rig = try NetRig()
        let chain = NetRig.txChain(length: 60)
        try rig.send(chain)
        #expect(rig.channel.outbound.count == 1)
        var expected = chain
        expected[10] = 0  // the device rewrote the header: num_buffers cleared
        #expect(rig.channel.outbound[0] == expected)
        #expect(try rig.tx.usedIdx() == 1)
        #expect(try rig.tx.usedElement(0).len == 0)
        #expect(rig.stats.txPackets.value == 1 && rig.stats.txBytes.value == 60)
    }

    @Test func transmitSplitAcrossDescriptorsStillOneFrame() throws {
        let rig = try NetRig()
        let chain = NetRig.txChain(length: 100)
        let a = try rig.d.buffer(Array(chain[0..<5])), b = try rig.d.buffer(Array(chain[5..<50])), c = try rig.d.buffer(Array(chain[50...]))
        try rig.d.queues[1].post(readable: [a, b, c])
        rig.d.kick(1)
        var expected = chain
        expected[10] = 0
        #expect(rig.channel.outbound == [expected])
    }

    @Test func badTransmitsAreDroppedAndCounted() throws {
        let rig = try NetRig(features: [.ringEventIdx])
        try rig.send([1, 2, 3])                                            // no whole header
        try rig.send(NetRig.txChain(length: 10))                            // runt
        try rig.send(NetRig.txChain(length: 1500 + 18 + 1))                 // above MTU + 18
        try rig.send(NetRig.txChain(length: 100, gso: 1))                   // GSO not offered
        try rig.send(NetRig.txChain(length: 100, flags: 1, csumStart: 20))  // CSUM not negotiated
        let w = try rig.d.buffer(NetRig.txChain(length: 60)), x = try rig.d.buffer(16)
        try rig.d.queues[1].post(readable: [w], writable: [x])              // writable on transmit
        rig.d.kick(1)
        #expect(rig.channel.outbound.isEmpty)
        #expect(rig.stats.txDropShort.value == 1)
        #expect(rig.stats.txDropSize.value == 2)
        #expect(rig.stats.txDropHeader.value == 2)
        #expect(rig.stats.txDropMalformed.value == 1)
        #expect(try rig.tx.usedIdx() == 6)  // every chain returned
        #expect(!rig.d.status.contains(.deviceNeedsReset))
        try rig.send(NetRig.txChain(length: 60))
        #expect(rig.channel.outbound.count == 1)
    }

    @Test func checksumRequestsPassWhenNegotiated() throws {
        let rig = try NetRig(features: [.netCsum])
        try rig.send(NetRig.txChain(length: 100, flags: 1, csumStart: 34, csumOffset: 16))
        try rig.send(NetRig.txChain(length: 100, flags: 1, csumStart: 90, csumOffset: 16))  // past the frame
        #expect(rig.channel.outbound.count == 1)
        #expect(rig.channel.outbound[0][0] == 1 && rig.channel.outbound[0][6] == 34 && rig.channel.outbound[0][8] == 16)
        #expect(rig.stats.txDropHeader.value == 1)
    }

    @Test func udpSegmentationIsOfferedOnlyWhenTheTapSegments() throws {
        let f = { (rig: NetRig) -> VirtioFeatures in
            rig.d.w32(MMIORegister.deviceFeaturesSel, 0)
            let low = UInt64(rig.d.r32(MMIORegister.deviceFeatures))
            rig.d.w32(MMIORegister.deviceFeaturesSel, 1)
            return VirtioFeatures(rawValue: low | UInt64(rig.d.r32(MMIORegister.deviceFeatures)) << 32)
        }
        #expect(f(try NetRig(udpSegmentation: true, start: false)).contains(.netHostUSO))
        #expect(!f(try NetRig(udpSegmentation: false, start: false)).contains(.netHostUSO))
        #expect(!f(try NetRig(vnetHeader: false, udpSegmentation: true, start: false)).contains(.netHostUSO))
    }

    @Test func udpSegmentationFramesGoOutWholeWithTheirSizes() throws {
        let rig = try NetRig(udpSegmentation: true, features: [.netCsum, .netHostUSO])
        // 14 + 20 + 8 header bytes, then 128 datagrams of 64 bytes: one 8,234-byte frame.
        let frame = NetRig.txChain(length: 42 + 128 * 64, flags: 1, gso: 5, csumStart: 34, csumOffset: 6, hdrLen: 42, gsoSize: 64)
        try rig.send(frame)
        #expect(rig.channel.outbound.count == 1)
        var expected = frame
        expected[10] = 0
        #expect(rig.channel.outbound.first == expected)
        #expect(rig.stats.txSegmented.value == 1 && rig.stats.txPackets.value == 1)
        #expect(rig.stats.txBytes.value == UInt64(42 + 128 * 64))
        // The most a chain may carry is still 64 KiB; beyond it the driver is broken.
        try rig.send(NetRig.txChain(length: 65536, flags: 1, gso: 5, csumStart: 34, csumOffset: 6, hdrLen: 42, gsoSize: 1400))
        #expect(rig.channel.outbound.count == 2)
        try rig.send(NetRig.txChain(length: 65537, flags: 1, gso: 5, csumStart: 34, csumOffset: 6, hdrLen: 42, gsoSize: 1400))
        #expect(rig.d.status.contains(.deviceNeedsReset))
    }

    @Test func badUDPSegmentationRequestsAreDropped() throws {
        let uso = { (flags: UInt8, gso: UInt8, off: UInt16, hdrLen: UInt16, size: UInt16, length: Int) in
            NetRig.txChain(length: length, flags: flags, gso: gso, csumStart: 34, csumOffset: off, hdrLen: hdrLen, gsoSize: size)
        }
        // Not negotiated (the device offered it): a GSO request like any other.
        let plain = try NetRig(udpSegmentation: true, features: [.netCsum])
        try plain.send(uso(1, 5, 6, 42, 64, 4000))
        #expect(plain.channel.outbound.isEmpty && plain.stats.txDropHeader.value == 1)
        let rig = try NetRig(udpSegmentation: true, features: [.netCsum, .netHostUSO])
        try rig.send(uso(0, 5, 6, 42, 64, 4000))       // no NEEDS_CSUM
        try rig.send(uso(1, 5, 16, 42, 64, 4000))      // the checksum is not UDP's
        try rig.send(uso(1, 5, 6, 42, 0, 4000))        // no segment size
        try rig.send(uso(1, 5, 6, 42, 1501, 4000))     // segments above the MTU
        try rig.send(uso(1, 5, 6, 4001, 64, 4000))     // headers past the frame
        try rig.send(uso(1, 0x85, 6, 42, 64, 100))     // ECN is TCP's
        try rig.send(uso(1, 3, 6, 42, 64, 100))        // UDP fragmentation (UFO): not offered
        #expect(rig.channel.outbound.isEmpty)
        #expect(rig.stats.txDropHeader.value == 7)
        #expect(!rig.d.status.contains(.deviceNeedsReset))
        try rig.send(uso(1, 5, 6, 42, 64, 4000))
        #expect(rig.channel.outbound.count == 1)
    }

    @Test func transmitAbove64KiBNeedsReset() throws {
        let rig = try NetRig()
        try rig.send(NetRig.txChain(length: 65537))
        #expect(rig.d.status.contains(.deviceNeedsReset))
        #expect(rig.channel.outbound.isEmpty)
        #expect(rig.d.log.all.contains { $0.contains("DEVICE_NEEDS_RESET") && $0.contains("64 KiB") })
        // A reset brings it back.
        rig.d.w32(MMIORegister.status, 0)
        rig.d.start(features: [.ringEventIdx])
        try rig.send(NetRig.txChain(length: 60))
        #expect(rig.channel.outbound.count == 1)
    }

    @Test func fullChannelHoldsTransmitsAndWaitsForWritable() throws {
        let rig = try NetRig()
        rig.channel.blocked = true
        try rig.send(NetRig.txChain(length: 60))
        #expect(rig.channel.outbound.isEmpty)
        #expect(try rig.tx.usedIdx() == 0)
        #expect(rig.interest.events.contains(.writable))
        rig.channel.blocked = false
        rig.d.device.hostEvent(.writable)
        #expect(rig.channel.outbound.count == 1)
        #expect(try rig.tx.usedIdx() == 1)
        #expect(!rig.interest.events.contains(.writable))
    }

    @Test func receiveFillsOneChainWithHeaderAndFrame() throws {
        let rig = try NetRig(features: [.ringEventIdx])
        let b = try rig.d.buffer(2048, fill: 0xEE)
        try rig.d.queues[0].post(writable: [b])
        rig.d.kick(0)
        #expect(rig.interest.events.contains(.readable))  // buffers posted: watch the tap
        var frame = [UInt8](repeating: 0x77, count: 12)  // the tap's header: flags 0x77 must be cleared
        frame += (0..<100).map { UInt8($0) }
        rig.channel.inbound = [frame]
        rig.d.device.hostEvent(.readable)
        #expect(try rig.rx.usedIdx() == 1)
        let e = try rig.rx.usedElement(0)
        #expect(e.len == 112)
        let got = try rig.d.mem.readBytes(at: b.addr, count: 112)
        #expect(got[0] == 0)                   // no GUEST_CSUM: flags zero
        #expect(got[10] == 1 && got[11] == 0)  // num_buffers = 1
        #expect(Array(got[12...]) == Array(frame[12...]))
        #expect(rig.stats.rxPackets.value == 1 && rig.stats.rxBytes.value == 100)
        #expect(rig.d.irq.signals >= 1)
    }

    @Test func mergeableReceiveSpansChainsAndReturnsTheRest() throws {
        let rig = try NetRig(features: [.ringEventIdx, .netMergeableRxBuffers])
        var bufs: [Buffer] = []
        for _ in 0..<4 {
            let b = try rig.d.buffer(1024, fill: 0xEE)
            bufs.append(b)
            try rig.d.queues[0].post(writable: [b])
        }
        rig.d.kick(0)
        let frame = [UInt8](repeating: 0, count: 12) + (0..<1400).map { UInt8(truncatingIfNeeded: $0) }
        rig.channel.inbound = [frame, [UInt8](repeating: 0, count: 12) + [UInt8](repeating: 9, count: 60)]
        rig.d.device.hostEvent(.readable)
        // Frame 1 took chains 0 and 1 (1412 bytes), frame 2 chain 2 (it needed a maximal
        // frame's room, chains 2 and 3, and gave 3 back).
        #expect(try rig.rx.usedIdx() == 3)
        #expect(try rig.rx.usedElement(0).len == 1024)
        #expect(try rig.rx.usedElement(1).len == 388)
        #expect(try rig.rx.usedElement(2).len == 72)
        let h = try rig.d.mem.readBytes(at: bufs[0].addr, count: 12)
        #expect(h[10] == 2)  // num_buffers
        var got = try rig.d.mem.readBytes(at: bufs[0].addr + 12, count: 1012)
        got += try rig.d.mem.readBytes(at: bufs[1].addr, count: 388)
        #expect(got == Array(frame[12...]))
        #expect(try rig.d.mem.readBytes(at: bufs[2].addr, count: 12)[10] == 1)
        // Only one buffer left (under a maximal frame): the tap is not read.
        #expect(!rig.interest.events.contains(.readable))
    }

    @Test func noBuffersMeansTheTapIsNotWatched() throws {
        let rig = try NetRig()
        rig.channel.inbound = [[UInt8](repeating: 0, count: 12) + [UInt8](repeating: 1, count: 60)]
        rig.d.device.hostEvent(.readable)
        #expect(!rig.interest.events.contains(.readable))
        #expect(rig.stats.rxNoBuffers.value >= 1)
        #expect(rig.channel.inbound.count == 1)  // left on the host side
        // EVENT_IDX: the device asked to hear about the next post.
        #expect(try rig.rx.availEvent() == 0)
        let b = try rig.d.buffer(2048)
        try rig.d.queues[0].post(writable: [b])
        rig.d.kick(0)
        #expect(try rig.rx.usedIdx() == 1)
        #expect(rig.channel.inbound.isEmpty)
    }

    @Test func frameTooBigForTheBufferIsDroppedAndTheBufferReused() throws {
        let rig = try NetRig()
        let b = try rig.d.buffer(100)
        try rig.d.queues[0].post(writable: [b])
        rig.d.kick(0)
        rig.channel.inbound = [[UInt8](repeating: 0, count: 12) + [UInt8](repeating: 1, count: 200),
                               [UInt8](repeating: 0, count: 12) + [UInt8](repeating: 2, count: 60)]
        rig.d.device.hostEvent(.readable)
        #expect(rig.stats.rxDropTooBig.value == 1)
        #expect(try rig.rx.usedIdx() == 1)
        #expect(try rig.rx.usedElement(0).len == 72)
    }

    @Test func receiveChainWithReadableBuffersNeedsReset() throws {
        let rig = try NetRig()
        let r = try rig.d.buffer(16), w = try rig.d.buffer(2048)
        try rig.d.queues[0].post(readable: [r], writable: [w])
        rig.d.kick(0)
        #expect(rig.d.status.contains(.deviceNeedsReset))
        #expect(!rig.interest.events.contains(.readable))
        // Transmit is stopped too.
        try rig.send(NetRig.txChain(length: 60))
        #expect(rig.channel.outbound.isEmpty)
    }

    @Test func receiveBufferOutsideRAMNeedsReset() throws {
        let rig = try NetRig()
        try rig.d.queues[0].post(writable: [Buffer(addr: 0xFFFF_0000, len: 2048)])
        rig.d.kick(0)
        #expect(rig.d.status.contains(.deviceNeedsReset))
    }

    @Test func barePlainFramesGetAZeroHeader() throws {
        let rig = try NetRig(vnetHeader: false)
        let b = try rig.d.buffer(2048, fill: 0xEE)
        try rig.d.queues[0].post(writable: [b])
        rig.d.kick(0)
        let frame = (0..<64).map { UInt8($0) }
        rig.channel.inbound = [frame]
        rig.d.device.hostEvent(.readable)
        #expect(try rig.rx.usedElement(0).len == 76)
        let got = try rig.d.mem.readBytes(at: b.addr, count: 76)
        #expect(Array(got[0..<12]) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0])
        #expect(Array(got[12...]) == frame)
        // And transmit strips the header.
        try rig.send(NetRig.txChain(length: 60))
        #expect(rig.channel.outbound == [Array(NetRig.txChain(length: 60)[12...])])
    }

    @Test func closedChannelTakesTheLinkDown() throws {
        let rig = try NetRig()
        rig.channel.isClosed = true
        _ = rig.d.irq.take()
        rig.d.device.hostEvent(.hangup)
        #expect(rig.interest.removed)
        #expect((rig.d.r32(0x104) >> 16) & 1 == 0)  // status: link down
        #expect(rig.d.device.interruptStatus.contains(.configChange))
        #expect(rig.d.irq.signals == 1)
        #expect(rig.backendLog.all == ["pvmm: virtio-net t0: the host side closed (passt exited?): link down, transmits dropped"])
        // Transmits are dropped and returned, not left in the ring.
        try rig.send(NetRig.txChain(length: 60))
        #expect(try rig.tx.usedIdx() == 1 && rig.stats.txDropError.value == 1)
    }
}
