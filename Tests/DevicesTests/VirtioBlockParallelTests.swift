#if canImport(Glibc)
import Glibc
#endif
import Devices
import GuestMemory
import Synchronization
import Testing
import Virtio

// eventfd(2) is not in Swift's Glibc module (as fallocate in DiskImage.swift).
@_silgen_name("eventfd")
private func sys_eventfd(_ initial: UInt32, _ flags: Int32) -> Int32
private let efdNonblock: Int32 = 0o4000, efdCloexec: Int32 = 0o2000000

/// A started virtio-blk device whose requests go through the io_uring (VirtioBlockAsync),
/// with `events` as the completion eventfd the device thread would watch.
/// With `cold`, the image's pages are dropped from the page cache first, so reads would
/// block and go to the ring instead of completing at once.
func parallelBlockDevice(size: Int = 256 << 10, readOnly: Bool = false, cold: Bool = false) throws -> (BlockDriver, TempImage, Int32) {
    let image = try TempImage(size: size)
    if cold {
        let fd = open(image.path, O_RDONLY)
        fsync(fd)
        _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
        close(fd)
    }
    let disk = try DiskImage.open(path: image.path, readOnly: readOnly)
    let events = sys_eventfd(0, efdNonblock | efdCloexec)
    let d = try BlockDriver(model: VirtioBlockModel(backend: VirtioBlockBackend(disk: disk, id: "par", completions: events)))
    d.start(features: blockFeatures.intersection(VirtioBlockModel(backend: d.device.backend).deviceFeatures))
    #expect(d.device.backend.parallelIO)
    return (d, image, events)
}

/// used.idx values, as an interrupt hook saw them.
final class IndexLog: Sendable {
    private let values = Mutex<[UInt16]>([])
    func append(_ v: UInt16) { values.withLock { $0.append(v) } }
    var all: [UInt16] { values.withLock { $0 } }
}

extension BlockDriver {
    /// What the device thread does until every request is back: wait for the completion
    /// eventfd (bounded), drain it, serve. Returns the requests left in flight (0).
    @discardableResult
    func settle(_ events: Int32, timeoutMs: Int32 = 5000) -> Int {
        var waited: Int32 = 0
        while device.backend.requestsInFlight > 0 && waited < timeoutMs {
            var p = pollfd(fd: events, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 10)
            waited += 10
            var v: UInt64 = 0
            if read(events, &v, 8) == 8 { device.serviceRequested() }
        }
        return device.backend.requestsInFlight
    }
}

@Suite struct VirtioBlockParallelTests {
    @Test(arguments: [false, true])
    func manyReadsCompleteWithTheRightData(cold: Bool) throws {
        let (d, _, events) = try parallelBlockDevice(cold: cold)
        defer { close(events) }
        var requests: [(sector: UInt64, data: Buffer, status: Buffer)] = []
        for i in 0..<20 {  // 3 descriptors each: 60 of the queue's 64
            let sector = UInt64((i * 37) % 400)
            let (data, status) = try d.request(type: VirtioBlk.typeIn, sector: sector, inLength: 4096)
            requests.append((sector, data!, status))
        }
        d.kick()
        #expect(d.settle(events) == 0)
        #expect(try d.queues[0].usedIdx() == 20)
        var heads = Set<UInt32>()
        for i in 0..<20 {
            let e = try d.queues[0].usedElement(UInt16(i))
            heads.insert(e.id)
            #expect(e.len == 4097)
        }
        #expect(heads.count == 20)  // every chain returned once, in whatever order
        for r in requests {
            #expect(try d.statusByte(r.status) == VirtioBlk.statusOK)
            let at = Int(r.sector) * 512
            #expect(try d.bytes(r.data) == TempImage.pattern(at..<(at + 4096)))
        }
        #expect(d.irq.signals >= 1)
        #expect(d.device.stats.requests.value == 20)
        // Page-cache hits complete at once (RWF_NOWAIT); reads that would block went to
        // the ring and came back through the completion eventfd.
        if cold { #expect(d.device.backend.requestsQueued > 0) } else { #expect(d.device.backend.requestsQueued == 0) }
    }

    /// The interrupt goes out when the completion the driver waits for (used_event,
    /// §2.7.10) is in the used ring, with the rest of the batch still to come, so a
    /// driver sleeping for it refills the ring while the device works; once, and never
    /// when the driver asked for none (used_event half the index space away).
    static let awaited: [(UInt16, [UInt16])] = [(0, [1]), (3, [4]), (0x8000, [])]
    @Test(arguments: awaited)
    func theAwaitedCompletionInterruptsBeforeTheBatchEnds(usedEvent: UInt16, usedIdxAtInterrupts: [UInt16]) throws {
        let (d, _, events) = try parallelBlockDevice()
        defer { close(events) }
        var requests: [(sector: UInt64, data: Buffer, status: Buffer)] = []
        for i in 0..<8 {
            let (data, status) = try d.request(type: VirtioBlk.typeIn, sector: UInt64(8 * i), inLength: 4096)
            requests.append((UInt64(8 * i), data!, status))
        }
        try d.queues[0].setUsedEvent(usedEvent)
        let seen = IndexLog(), mem = d.mem, usedIdx = d.queues[0].used + 2
        d.irq.onSignal { seen.append((try? mem.read(at: usedIdx)) ?? 0xFFFF) }
        d.kick()
        #expect(d.settle(events) == 0)
        #expect(try d.queues[0].usedIdx() == 8)  // the whole batch, from the one kick
        #expect(seen.all == usedIdxAtInterrupts)
        for r in requests {
            #expect(try d.statusByte(r.status) == VirtioBlk.statusOK)
            let at = Int(r.sector) * 512
            #expect(try d.bytes(r.data) == TempImage.pattern(at..<(at + 4096)))
        }
        #expect(d.device.stats.requests.value == 8)
    }

    @Test func flushCompletesAfterTheWritesBeforeIt() throws {
        let (d, image, events) = try parallelBlockDevice()
        defer { close(events) }
        var writes: [Buffer] = []
        for i in 0..<8 {
            writes.append(try d.request(type: VirtioBlk.typeOut, sector: UInt64(16 * i),
                                        out: [UInt8](repeating: UInt8(0x10 + i), count: 8192)).status)
        }
        let flush = try d.request(type: VirtioBlk.typeFlush)
        d.kick()
        #expect(d.settle(events) == 0)
        #expect(try d.queues[0].usedIdx() == 9)
        // IOSQE_IO_DRAIN: the flush starts only once every earlier write completed, so
        // it is the last used entry.
        let flushHead = try d.queues[0].usedElement(8)
        #expect(try d.statusByte(flush.status) == VirtioBlk.statusOK)
        #expect(flushHead.len == 1)
        for w in writes { #expect(try d.statusByte(w) == VirtioBlk.statusOK) }
        #expect(d.device.backend.requestsQueued >= 1)  // the flush, at least
        let file = image.contents
        for i in 0..<8 { #expect(file[(8192 * i)..<(8192 * (i + 1))].allSatisfy { $0 == UInt8(0x10 + i) }) }
    }

    @Test func hostileRequestsAreStillFenced() throws {
        let (d, image, events) = try parallelBlockDevice(size: 64 << 10)
        defer { close(events) }
        let good = try d.request(type: VirtioBlk.typeIn, sector: 127, inLength: 512)
        let beyond = try d.request(type: VirtioBlk.typeIn, sector: 127, inLength: 1024)
        let overflow = try d.request(type: VirtioBlk.typeOut, sector: UInt64.max / 512 + 1, out: [UInt8](repeating: 1, count: 512))
        let ragged = try d.request(type: VirtioBlk.typeOut, sector: 0, out: [UInt8](repeating: 1, count: 100))
        d.kick()
        #expect(d.settle(events) == 0)
        #expect(try d.statusByte(good.status) == VirtioBlk.statusOK)
        for s in [beyond, overflow, ragged] { #expect(try d.statusByte(s.status) == VirtioBlk.statusIOErr) }
        #expect(try d.bytes(beyond.data!).allSatisfy { $0 == 0xEE })
        #expect(image.contents == TempImage.pattern(0..<(64 << 10)))
        // A malformed chain behind a request in flight: NEEDS_RESET, nothing crashes.
        _ = try d.request(type: VirtioBlk.typeIn, sector: 0, inLength: 4096)
        try d.queues[0].post(readable: [try d.buffer(8)], writable: [try d.buffer(1)])
        d.kick()
        #expect(d.status.contains(.deviceNeedsReset))
        d.w32(MMIORegister.status, 0)  // reset waits for whatever was in flight
        #expect(d.device.backend.requestsInFlight == 0)
    }

    @Test func readOnlyRefusesWritesOnTheParallelPath() throws {
        let (d, image, events) = try parallelBlockDevice(size: 64 << 10, readOnly: true)
        defer { close(events) }
        let w = try d.request(type: VirtioBlk.typeOut, sector: 0, out: [UInt8](repeating: 9, count: 512))
        d.kick()
        #expect(d.settle(events) == 0)
        #expect(try d.statusByte(w.status) == VirtioBlk.statusIOErr)
        #expect(image.contents == TempImage.pattern(0..<(64 << 10)))
    }

    @Test func resetWaitsForRequestsInFlight() throws {
        let (d, _, events) = try parallelBlockDevice(size: 4 << 20, cold: true)
        defer { close(events) }
        for i in 0..<16 {
            try d.request(type: VirtioBlk.typeIn, sector: UInt64(256 * i), inLength: 128 << 10)
        }
        try d.request(type: VirtioBlk.typeFlush)
        d.kick()
        d.w32(MMIORegister.status, 0)
        #expect(d.device.backend.requestsInFlight == 0)
        let used = try d.queues[0].usedIdx()
        d.device.serviceRequested()  // completions after the reset do not reach the ring
        #expect(try d.queues[0].usedIdx() == used)
    }
}
