#if canImport(Glibc)
import Glibc
#endif
import Devices
import GuestMemory
import Testing
import Virtio

/// A temporary raw image, removed on deinit.
final class TempImage {
    let path: String

    /// `size` bytes; byte i is `UInt8(truncatingIfNeeded: i * 7 + i / 512)`.
    init(size: Int) throws {
        var template = Array("/tmp/pvmm-blk-test-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw DiskImageError(path: "", message: "mkstemp failed") }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let bytes = Self.pattern(0..<size)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    deinit { unlink(path) }

    static func pattern(_ r: Range<Int>) -> [UInt8] { r.map { UInt8(truncatingIfNeeded: $0 * 7 + $0 / 512) } }

    /// The file's current bytes.
    var contents: [UInt8] {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += chunk[..<n]
        }
        return out
    }
}

typealias BlockDriver = FakeDriver<VirtioBlockModel>

let blockFeatures: VirtioFeatures = [.ringEventIdx, .indirectDesc, .blkFlush, .blkSegMax, .blkBlockSize,
                                     .blkDiscard, .blkWriteZeroes]

/// A started virtio-blk device on a fresh image.
func blockDevice(size: Int = 64 << 10, readOnly: Bool = false, id: String? = "disk-serial",
                 features: VirtioFeatures = blockFeatures) throws -> (BlockDriver, TempImage) {
    let image = try TempImage(size: size)
    let disk = try DiskImage.open(path: image.path, readOnly: readOnly)
    let d = try BlockDriver(model: VirtioBlockModel(backend: VirtioBlockBackend(disk: disk, id: id)))
    d.start(features: features.intersection(VirtioBlockModel(backend: d.device.backend).deviceFeatures))
    #expect(d.status.contains(.driverOK))
    return (d, image)
}

extension BlockDriver {
    /// Posts header + data + status; returns the data and status buffers.
    @discardableResult
    func request(type: UInt32, sector: UInt64 = 0, out: [UInt8] = [], inLength: UInt32 = 0,
                 statusLength: UInt32 = 1) throws -> (data: Buffer?, status: Buffer) {
        let header = try buffer([UInt8].le(type) + [UInt8].le(UInt32(0)) + [UInt8].le(sector))
        var readable = [header]
        if !out.isEmpty { readable.append(try buffer(out)) }
        let data = inLength > 0 ? try buffer(inLength, fill: 0xEE) : nil
        let status = try buffer(statusLength, fill: 0xEE)
        try queues[0].post(readable: readable, writable: (data.map { [$0] } ?? []) + [status])
        return (data, status)
    }

    func statusByte(_ b: Buffer) throws -> UInt8 { try mem.read(at: b.addr + UInt64(b.len) - 1) }

    func segment(sector: UInt64, count: UInt32, flags: UInt32 = 0) -> [UInt8] {
        [UInt8].le(sector) + [UInt8].le(count) + [UInt8].le(flags)
    }
}

@Suite struct VirtioBlockTests {
    @Test func configSpaceAndFeatures() throws {
        let (d, _) = try blockDevice(size: 1_000_000)  // not a multiple of 512: tail unreachable
        #expect(d.r32(MMIORegister.deviceID) == 2)
        #expect(d.r32(0x100) == 1953 && d.r32(0x104) == 0)  // capacity = 1_000_000 / 512
        #expect(d.r32(0x10C) == UInt32(VirtioBlk.queueSize) - 2)  // seg_max
        #expect(d.r32(0x114) == 512)  // blk_size
        d.w32(MMIORegister.deviceFeaturesSel, 0)
        let f = VirtioFeatures(rawValue: UInt64(d.r32(MMIORegister.deviceFeatures)))
        #expect(f.isSuperset(of: [.blkFlush, .blkDiscard, .blkWriteZeroes, .ringEventIdx, .indirectDesc]))
        #expect(!f.contains(.blkReadOnly))
    }

    @Test func readIntoGuestBuffers() throws {
        let (d, _) = try blockDevice()
        let (data, status) = try d.request(type: VirtioBlk.typeIn, sector: 3, inLength: 1024)
        d.kick()
        #expect(try d.statusByte(status) == VirtioBlk.statusOK)
        #expect(try d.bytes(data!) == TempImage.pattern(1536..<2560))
        #expect(try d.queues[0].usedIdx() == 1)
        #expect(try d.queues[0].usedElement(0).len == 1025)
        #expect(d.irq.signals == 1)
        #expect(d.device.interruptStatus.contains(.usedBuffer))
        #expect(d.device.stats.requests.value == 1)
    }

    @Test func readAcrossSeveralDescriptors() throws {
        let (d, _) = try blockDevice()
        let header = try d.buffer([UInt8].le(VirtioBlk.typeIn) + [UInt8].le(UInt32(0)) + [UInt8].le(UInt64(1)))
        let a = try d.buffer(300), b = try d.buffer(212)  // 512 data bytes in two pieces
        let status = try d.buffer(1)
        try d.queues[0].post(readable: [header], writable: [a, b, status])
        d.kick()
        #expect(try d.statusByte(status) == VirtioBlk.statusOK)
        #expect(try d.bytes(a) + d.bytes(b) == TempImage.pattern(512..<1024))
        // Data and status in one descriptor: the status is its last byte.
        let both = try d.buffer(513)
        try d.queues[0].post(readable: [header], writable: [both])
        d.kick()
        #expect(try d.bytes(both).prefix(512) == TempImage.pattern(512..<1024)[...])
        #expect(try d.statusByte(both) == VirtioBlk.statusOK)
    }

    @Test func writeFlushAndGetID() throws {
        let (d, image) = try blockDevice()
        let payload = [UInt8](repeating: 0x5A, count: 1024)
        let w = try d.request(type: VirtioBlk.typeOut, sector: 10, out: payload)
        let f = try d.request(type: VirtioBlk.typeFlush)
        let id = try d.request(type: VirtioBlk.typeGetID, inLength: 20)
        d.kick()
        #expect(try d.statusByte(w.status) == VirtioBlk.statusOK)
        #expect(try d.statusByte(f.status) == VirtioBlk.statusOK)
        #expect(try d.statusByte(id.status) == VirtioBlk.statusOK)
        let file = image.contents
        #expect(Array(file[5120..<6144]) == payload)
        #expect(Array(file[4096..<5120]) == TempImage.pattern(4096..<5120))
        #expect(try d.bytes(id.data!) == Array("disk-serial".utf8) + [UInt8](repeating: 0, count: 9))
        #expect(try d.queues[0].usedElement(0).len == 1)
        #expect(try d.queues[0].usedElement(2).len == 21)
        // Three requests, one batch: one interrupt.
        #expect(d.irq.signals == 1)
    }

    @Test func discardAndWriteZeroes() throws {
        let (d, image) = try blockDevice()
        let z = try d.request(type: VirtioBlk.typeWriteZeroes, out: d.segment(sector: 8, count: 9) + d.segment(sector: 40, count: 1, flags: VirtioBlk.flagUnmap))
        let dis = try d.request(type: VirtioBlk.typeDiscard, out: d.segment(sector: 64, count: 16))
        d.kick()
        #expect(try d.statusByte(z.status) == VirtioBlk.statusOK)
        #expect(try d.statusByte(dis.status) == VirtioBlk.statusOK)
        let file = image.contents
        #expect(file.count == 64 << 10)
        #expect(file[4096..<8704].allSatisfy { $0 == 0 })
        #expect(file[20480..<20992].allSatisfy { $0 == 0 })
        #expect(Array(file[8704..<9216]) == TempImage.pattern(8704..<9216))
    }

    @Test func discardFlagRules() throws {
        let (d, image) = try blockDevice()
        let unmapDiscard = try d.request(type: VirtioBlk.typeDiscard, out: d.segment(sector: 0, count: 1, flags: VirtioBlk.flagUnmap))
        let unknownFlag = try d.request(type: VirtioBlk.typeWriteZeroes, out: d.segment(sector: 0, count: 1, flags: 2))
        let outside = try d.request(type: VirtioBlk.typeWriteZeroes, out: d.segment(sector: 0, count: 1) + d.segment(sector: 127, count: 2))
        let ragged = try d.request(type: VirtioBlk.typeWriteZeroes, out: [1, 2, 3])
        d.kick()
        #expect(try d.statusByte(unmapDiscard.status) == VirtioBlk.statusUnsupported)
        #expect(try d.statusByte(unknownFlag.status) == VirtioBlk.statusUnsupported)
        #expect(try d.statusByte(outside.status) == VirtioBlk.statusIOErr)
        #expect(try d.statusByte(ragged.status) == VirtioBlk.statusIOErr)
        // The valid first segment of `outside` was not carried out either.
        #expect(image.contents == TempImage.pattern(0..<(64 << 10)))
    }

    @Test func notNegotiatedAndUnknownTypesAreUnsupported() throws {
        let (d, _) = try blockDevice(features: [.ringEventIdx])
        let dis = try d.request(type: VirtioBlk.typeDiscard, out: d.segment(sector: 0, count: 1))
        let unknown = try d.request(type: 99)
        d.kick()
        #expect(try d.statusByte(dis.status) == VirtioBlk.statusUnsupported)
        #expect(try d.statusByte(unknown.status) == VirtioBlk.statusUnsupported)
    }

    @Test func readOnlyRefusesChanges() throws {
        let (d, image) = try blockDevice(readOnly: true)
        d.w32(MMIORegister.deviceFeaturesSel, 0)
        #expect(VirtioFeatures(rawValue: UInt64(d.r32(MMIORegister.deviceFeatures))).contains(.blkReadOnly))
        let w = try d.request(type: VirtioBlk.typeOut, sector: 0, out: [UInt8](repeating: 1, count: 512))
        let z = try d.request(type: VirtioBlk.typeWriteZeroes, out: d.segment(sector: 0, count: 1))
        let dis = try d.request(type: VirtioBlk.typeDiscard, out: d.segment(sector: 0, count: 1))
        let r = try d.request(type: VirtioBlk.typeIn, sector: 0, inLength: 512)
        d.kick()
        #expect(try d.statusByte(w.status) == VirtioBlk.statusIOErr)
        #expect(try d.statusByte(z.status) == VirtioBlk.statusIOErr)
        #expect(try d.statusByte(dis.status) == VirtioBlk.statusIOErr)
        #expect(try d.statusByte(r.status) == VirtioBlk.statusOK)
        #expect(image.contents == TempImage.pattern(0..<(64 << 10)))
    }

    @Test func rangeChecks() throws {
        let (d, image) = try blockDevice(size: 64 << 10 | 100)  // 128 whole sectors and a tail
        let last = try d.request(type: VirtioBlk.typeIn, sector: 127, inLength: 512)
        let beyond = try d.request(type: VirtioBlk.typeIn, sector: 127, inLength: 1024)
        let tail = try d.request(type: VirtioBlk.typeOut, sector: 128, out: [UInt8](repeating: 1, count: 512))
        let overflow = try d.request(type: VirtioBlk.typeOut, sector: UInt64.max / 512 + 1, out: [UInt8](repeating: 1, count: 512))
        let wraps = try d.request(type: VirtioBlk.typeIn, sector: UInt64.max / 512, inLength: 1024)
        let ragged = try d.request(type: VirtioBlk.typeOut, sector: 0, out: [UInt8](repeating: 1, count: 100))
        let raggedIn = try d.request(type: VirtioBlk.typeIn, sector: 0, inLength: 700)
        d.kick()
        #expect(try d.statusByte(last.status) == VirtioBlk.statusOK)
        for s in [beyond, tail, overflow, wraps, ragged, raggedIn] {
            #expect(try d.statusByte(s.status) == VirtioBlk.statusIOErr)
        }
        #expect(try d.queues[0].usedElement(1).len == 1)
        #expect(try d.bytes(beyond.data!).allSatisfy { $0 == 0xEE })  // nothing read
        #expect(image.contents == TempImage.pattern(0..<(64 << 10 | 100)))
        #expect(d.status.contains(.driverOK) && !d.status.contains(.deviceNeedsReset))
    }

    @Test(arguments: ["short header", "no status", "outside RAM", "loop"])
    func malformedChainNeedsReset(_ kind: String) throws {
        let (d, image) = try blockDevice()
        switch kind {
        case "short header":
            try d.queues[0].post(readable: [try d.buffer(8)], writable: [try d.buffer(1)])
        case "no status":
            try d.queues[0].post(readable: [try d.buffer([UInt8].le(VirtioBlk.typeOut) + [UInt8](repeating: 0, count: 12)), try d.buffer(512)])
        case "outside RAM":
            try d.queues[0].post(readable: [Buffer(addr: 0xFFFF_FFFF_F000, len: 16)], writable: [try d.buffer(1)])
        default:
            try d.queues[0].setDescriptor(0, Descriptor(addr: 0x40_0000, len: 16, flags: Descriptor.flagNext, next: 1))
            try d.queues[0].setDescriptor(1, Descriptor(addr: 0x40_0000, len: 16, flags: Descriptor.flagNext, next: 0))
            try d.queues[0].offer(0)
        }
        d.kick()
        #expect(d.status.contains(.deviceNeedsReset))
        #expect(d.device.interruptStatus.contains(.configChange))
        #expect(d.irq.signals == 1)
        #expect(d.log.all.count == 1)
        #expect(d.log.all.first?.hasPrefix("pvmm: virtio-test t0: DEVICE_NEEDS_RESET: ") == true)
        // The device no longer touches the queue.
        _ = try d.request(type: VirtioBlk.typeFlush)
        d.kick()
        #expect(try d.queues[0].usedIdx() == 0)
        #expect(image.contents == TempImage.pattern(0..<(64 << 10)))
        // A reset brings it back.
        d.w32(MMIORegister.status, 0)
        #expect(d.status == [])
        d.start(features: [.ringEventIdx])
        #expect(d.status.contains(.driverOK))
    }

    @Test func eventIdxSuppressesInterrupts() throws {
        let (d, _) = try blockDevice()
        // used_event = 1: notify only once the second used entry (index 1) is published.
        try d.queues[0].setUsedEvent(1)
        try d.request(type: VirtioBlk.typeFlush)
        d.kick()
        #expect(try d.queues[0].usedIdx() == 1)
        #expect(d.irq.signals == 0)
        #expect(!d.device.interruptStatus.contains(.usedBuffer))
        // The device asked to be notified at the next available index.
        #expect(try d.queues[0].availEvent() == 1)
        try d.request(type: VirtioBlk.typeFlush)
        d.kick()
        #expect(d.irq.signals == 1)
        // used_event left behind: no more interrupts.
        try d.request(type: VirtioBlk.typeFlush)
        d.kick()
        #expect(d.irq.signals == 1)
        #expect(d.device.stats.interrupts.value == 1)
    }

    @Test func noInterruptFlagWithoutEventIdx() throws {
        let (d, _) = try blockDevice(features: [.blkFlush])
        try d.queues[0].setAvailFlags(SplitQueue.availNoInterrupt)
        try d.request(type: VirtioBlk.typeFlush)
        d.kick()
        #expect(try d.queues[0].usedIdx() == 1)
        #expect(d.irq.signals == 0)
        // Notifications re-enabled after the batch.
        #expect(try d.queues[0].usedFlags() == 0)
    }

    @Test func resetStopsServing() throws {
        let (d, _) = try blockDevice()
        d.w32(MMIORegister.status, 0)
        try d.request(type: VirtioBlk.typeFlush)
        d.kick()
        #expect(try d.queues[0].usedIdx() == 0)
        #expect(d.irq.signals == 0)
    }

    @Test func notifyWithoutIOEventFDWakesTheQueue() throws {
        let (d, _) = try blockDevice()
        #expect(d.service.take() == 1)  // DRIVER_OK: look at the queues once
        d.w32(MMIORegister.queueNotify, 0)
        #expect(d.kicks[0].signals == 1)
    }

    @Test func driverOKWithoutQueueFails() throws {
        let image = try TempImage(size: 4096)
        let d = try BlockDriver(model: VirtioBlockModel(backend: VirtioBlockBackend(disk: DiskImage.open(path: image.path, readOnly: false), id: nil)))
        d.start(features: [], enable: [false])
        #expect(d.status.contains(.deviceNeedsReset))
        #expect(d.log.all.count == 1)
    }
}

@Suite struct DiskImageTests {
    @Test func writableImagesAreExclusive() throws {
        let image = try TempImage(size: 4096)
        var a: DiskImage? = try DiskImage.open(path: image.path, readOnly: false)
        #expect(a?.size == 4096)
        #expect(throws: DiskImageError(path: image.path, message: "disk \(image.path): locked by another process")) {
            try DiskImage.open(path: image.path, readOnly: false)
        }
        #expect(throws: DiskImageError.self) { try DiskImage.open(path: image.path, readOnly: true) }
        a = nil  // closing the fd drops the lock
        _ = a
        let r1 = try DiskImage.open(path: image.path, readOnly: true)
        let r2 = try DiskImage.open(path: image.path, readOnly: true)  // readers share
        #expect(throws: DiskImageError.self) { try DiskImage.open(path: image.path, readOnly: false) }
        _ = (r1, r2)
    }

    @Test func missingAndUnusableFiles() throws {
        #expect(throws: DiskImageError(path: "/nonexistent/x", message: "disk /nonexistent/x: No such file or directory")) {
            try DiskImage.open(path: "/nonexistent/x", readOnly: true)
        }
        #expect(throws: DiskImageError.self) { try DiskImage.open(path: "/tmp", readOnly: true) }
    }
}

@Suite struct FailureLogTests {
    @Test func aFailLoopDoesNotFloodTheLog() throws {
        let (d, _) = try blockDevice()
        for _ in 0..<30 {
            try d.queues[0].post(readable: [try d.buffer(8)], writable: [try d.buffer(1)])
            d.kick()
            #expect(d.status.contains(.deviceNeedsReset))
            d.w32(MMIORegister.status, 0)
            d.start(features: [.ringEventIdx])
        }
        #expect(d.log.all.count == 21)
        #expect(d.log.all.last?.contains("not logging further") == true)
    }
}
