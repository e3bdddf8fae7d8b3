#if canImport(Glibc)
import Glibc
#endif
import GuestMemory
import Virtio

/// virtio-blk (virtio 1.2 §5.2) constants.
public enum VirtioBlk {
    // Request types (§5.2.6).
    public static let typeIn: UInt32 = 0
    public static let typeOut: UInt32 = 1
    public static let typeFlush: UInt32 = 4
    public static let typeGetID: UInt32 = 8
    public static let typeDiscard: UInt32 = 11
    public static let typeWriteZeroes: UInt32 = 13
    // Status byte values (§5.2.6).
    public static let statusOK: UInt8 = 0
    public static let statusIOErr: UInt8 = 1
    public static let statusUnsupported: UInt8 = 2
    /// virtio_blk_discard_write_zeroes.flags.unmap (§5.2.6).
    public static let flagUnmap: UInt32 = 1

    /// The request header: type, reserved, sector (§5.2.6).
    public static let headerSize = 16
    /// Size of one discard / write-zeroes segment.
    public static let segmentSize = 16
    /// GET_ID answers with this many bytes (NUL padded, no terminator at 20).
    public static let idLength = 20

    /// One request queue of this many entries; seg_max leaves room for header and status.
    public static let queueSize: UInt16 = 256
    public static let segMax = UInt32(queueSize) - 2
    /// Per-request limits for discard and write zeroes (in sectors / segments): 2 GiB and
    /// 16 ranges, enough that Linux never splits a realistic request much.
    public static let maxDiscardSectors: UInt32 = 1 << 22
    public static let maxDiscardSegments: UInt32 = 16
    /// Bytes of config space this device exposes (through write_zeroes_may_unmap and
    /// its padding; no secure erase, no zones).
    public static let configSize = 60
}

/// The virtio-blk model behind the MMIO transport: features and config space (§5.2.3,
/// §5.2.4). The work happens in `VirtioBlockBackend`.
public struct VirtioBlockModel: VirtioBackedModel, Sendable {
    public let backend: VirtioBlockBackend
    let config: [UInt8]

    public init(backend: VirtioBlockBackend) {
        self.backend = backend
        config = Self.makeConfig(capacity: backend.disk.capacityBytes / DiskImage.sectorSize)
    }

    public var deviceType: VirtioDeviceType { .block }

    public var deviceFeatures: VirtioFeatures {
        var f: VirtioFeatures = [.ringEventIdx, .indirectDesc, .blkFlush, .blkSegMax, .blkBlockSize]
        // A read-only disk says so and does not offer the commands that would change it.
        if backend.disk.readOnly { f.insert(.blkReadOnly) } else { f.formUnion([.blkDiscard, .blkWriteZeroes]) }
        return f
    }

    public var queueMaxSizes: [UInt16] { [VirtioBlk.queueSize] }
    public var configSize: Int { VirtioBlk.configSize }

    /// struct virtio_blk_config (§5.2.4), little-endian; unused fields and padding zero.
    static func makeConfig(capacity: UInt64) -> [UInt8] {
        var c = [UInt8](repeating: 0, count: VirtioBlk.configSize)
        func put<T: FixedWidthInteger>(_ v: T, _ at: Int) {
            for i in 0..<MemoryLayout<T>.size { c[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) }
        }
        put(capacity, 0)                           // capacity, in 512-byte sectors
        put(VirtioBlk.segMax, 12)                  // seg_max
        put(UInt32(DiskImage.sectorSize), 20)      // blk_size
        put(UInt16(1), 34)                         // num_queues (meaningful only with MQ)
        put(VirtioBlk.maxDiscardSectors, 36)       // max_discard_sectors
        put(VirtioBlk.maxDiscardSegments, 40)      // max_discard_seg
        put(UInt32(1), 44)                         // discard_sector_alignment
        put(VirtioBlk.maxDiscardSectors, 48)       // max_write_zeroes_sectors
        put(VirtioBlk.maxDiscardSegments, 52)      // max_write_zeroes_seg
        c[56] = 1                                  // write_zeroes_may_unmap
        return c
    }

    public mutating func readConfig(offset: Int, into data: UnsafeMutableRawBufferPointer) {
        for i in 0..<data.count { data[i] = config[offset + i] }
    }

    /// Nothing is writable without CONFIG_WCE (not offered).
    public mutating func writeConfig(offset: Int, from data: UnsafeRawBufferPointer) {}

    public mutating func activate(queues: [SplitQueue?], features: VirtioFeatures) throws(DeviceActivationError) {
        guard queues.first.flatMap({ $0 }) != nil else {
            throw DeviceActivationError(reason: "DRIVER_OK without the request queue enabled")
        }
        backend.activate(queues: queues, features: features)
    }

    public mutating func reset() { backend.reset() }
}

/// One request after `parse`: the header's fields, the data buffers on each side, and
/// the guest address of its status byte.
struct BlockRequest {
    let head: UInt16
    let type: UInt32
    let sector: UInt64
    let input: [Buffer]
    let output: [Buffer]
    let status: UInt64
}

/// Serves the request queue of a virtio-blk device against a raw image (§5.2.6).
///
/// Rules enforced per request (every one checked before any I/O):
/// - the chain must hold a 16-byte header in its device-readable part and at least one
///   device-writable byte for the status, else the chain is malformed and the device goes
///   to DEVICE_NEEDS_RESET (the driver broke the request format; no status can be
///   returned);
/// - IN/OUT data lengths must be multiples of 512 and the range must lie inside the
///   capacity, computed with checked arithmetic: otherwise IOERR and no I/O;
/// - OUT, DISCARD and WRITE_ZEROES on a read-only disk: IOERR;
/// - unknown types, and DISCARD/WRITE_ZEROES not negotiated or with unknown flags (or
///   unmap on a discard): UNSUPP.
/// used.len is the number of bytes written into the writable part (data + status).
public final class VirtioBlockBackend: VirtioBackend {
    public let disk: DiskImage
    /// GET_ID answer: the configured id, NUL padded to 20 bytes.
    let id: [UInt8]
    let core = BackendState()
    /// Parallel host I/O (VirtioBlockAsync.swift); nil: every request runs synchronously
    /// on the device thread. Touched only under `core`'s lock.
    let ring: BlockRing?

    /// With `completions` (the device thread's service eventfd), reads, writes and
    /// flushes go through an io_uring and complete when the kernel signals that fd;
    /// without it, or when io_uring is unavailable, or with PVMM_BLK_SYNC=1 in the
    /// environment (benchmarks compare both), they run synchronously.
    public init(disk: DiskImage, id: String?, completions: Int32? = nil) {
        self.disk = disk
        var bytes = Array((id ?? "").utf8.prefix(VirtioBlk.idLength))
        bytes += [UInt8](repeating: 0, count: VirtioBlk.idLength - bytes.count)
        self.id = bytes
        ring = completions.flatMap { getenv("PVMM_BLK_SYNC") == nil ? BlockRing(slots: Int(VirtioBlk.queueSize), eventFD: $0) : nil }
    }

    public var epoch: UInt64 { core.epoch }

    /// Whether requests go through the io_uring (diagnostics, tests).
    public var parallelIO: Bool { ring != nil }
    /// Requests handed to the io_uring so far (the rest completed at once).
    public var requestsQueued: UInt64 { core.state.withLock { _ in ring?.queuedTotal ?? 0 } }
    /// Requests submitted to the host and not completed yet.
    public var requestsInFlight: Int { core.state.withLock { _ in ring?.inFlight ?? 0 } }

    /// DRIVER_OK: serve `queues[0]` with `features` (called by the model, under the
    /// transport lock).
    public func activate(queues: [SplitQueue?], features: VirtioFeatures) { core.activate(queues, features: features) }
    /// Waits for requests in flight (their data lands in guest memory) before the
    /// queues are dropped: after a reset the device must not touch them (§2.4).
    public func reset() { core.reset { ring?.drain() } }
    public func halt() { core.halt() }
    public func queueCursors() -> [SplitQueue.Cursors?] { core.cursors() }

    /// Waits for every request on the io_uring and returns it to the used ring (with
    /// the interrupt the driver asked for), as if the batch had ended normally.
    public func settle() -> BackendOutcome {
        guard let ring else { return BackendOutcome(epoch: epoch) }
        return core.batch { s in
            s.serve(0) { q, _ in
                var r = ServeResult()
                do throws(DeviceFault) {
                    ring.submit()
                    try self.collect(&q, ring: ring, into: &r, waitAll: true)
                    if r.requests > 0 { r.interrupt = try vq { () throws(VirtqueueError) in try q.needsNotification() } }
                } catch {
                    r.fault = error
                    r.interrupt = r.requests > 0
                }
                return r
            }
        }
    }

    public func queueNotified(_ queue: Int) -> BackendOutcome { process() }
    /// Polls the driver-to-device queue (receive buffers are not work).
    public func poll(_ phase: PollPhase) -> Bool { core.poll(phase, queues: [0]) }

    public func serviceRequested() -> BackendOutcome { process() }

    func process() -> BackendOutcome {
        core.batch { s in
            s.serve(0) { q, features in
                if let ring { return self.serveParallel(&q, features: features, ring: ring) }
                return q.serve { (chain) throws(DeviceFault) -> UInt32 in try self.handle(chain, features: features) }
            }
        }
    }

    // MARK: One request

    /// Executes one validated request chain and writes its status; returns used.len.
    /// Throws when the chain is malformed (the device must then fail). Public for the
    /// fuzz target, which drives chains one by one.
    public func handle(_ chain: DescriptorChain, features: VirtioFeatures) throws(DeviceFault) -> UInt32 {
        let r = try parse(chain)
        let (status, written) = execute(type: r.type, sector: r.sector, input: r.input, output: r.output,
                                        memory: chain.memory, features: features)
        return try finish(r, status: status, written: written, memory: chain.memory)
    }

    /// The checks every request gets before anything else: a status byte and a whole
    /// header, then the header's fields.
    func parse(_ chain: DescriptorChain) throws(DeviceFault) -> BlockRequest {
        guard let statusBuffer = chain.writable.last else {
            throw .malformed("request \(chain.head): no device-writable byte for the status")
        }
        guard chain.readableLength >= UInt32(VirtioBlk.headerSize) else {
            throw .malformed("request \(chain.head): header is \(chain.readableLength) bytes, needs \(VirtioBlk.headerSize)")
        }
        var reader = chain.reader()
        let type: UInt32 = try vq { () throws(VirtqueueError) in try reader.read() }
        _ = try vq { () throws(VirtqueueError) in try reader.read(UInt32.self) }  // reserved (ioprio)
        let sector: UInt64 = try vq { () throws(VirtqueueError) in try reader.read() }
        // The status is the chain's last writable byte; everything before it is data.
        return BlockRequest(head: chain.head, type: type, sector: sector,
                            input: Self.dropping(VirtioBlk.headerSize, from: chain.readable),
                            output: Self.dropLast(1, from: chain.writable),
                            status: statusBuffer.addr + UInt64(statusBuffer.len) - 1)
    }

    /// Writes the status byte; returns used.len (data bytes written + the status).
    func finish(_ r: BlockRequest, status: UInt8, written: Int, memory: GuestMemory) throws(DeviceFault) -> UInt32 {
        do {
            try memory.write(status, at: r.status)
        } catch {
            throw .queue(.memory(error))
        }
        return UInt32(written) + 1
    }

    /// Returns the status and how many data bytes went into the guest's writable buffers.
    func execute(type: UInt32, sector: UInt64, input: [Buffer], output: [Buffer], memory: GuestMemory,
                 features: VirtioFeatures) -> (UInt8, Int) {
        switch type {
        case VirtioBlk.typeIn:
            let length = Self.total(output)
            guard let offset = range(sector: sector, length: length) else { return (VirtioBlk.statusIOErr, 0) }
            let (ok, done) = transfer(output, memory: memory, at: offset, toGuest: true)
            return (ok ? VirtioBlk.statusOK : VirtioBlk.statusIOErr, done)
        case VirtioBlk.typeOut:
            guard !disk.readOnly, let offset = range(sector: sector, length: Self.total(input)) else {
                return (VirtioBlk.statusIOErr, 0)
            }
            return (transfer(input, memory: memory, at: offset, toGuest: false).0 ? VirtioBlk.statusOK : VirtioBlk.statusIOErr, 0)
        case VirtioBlk.typeFlush:
            return (disk.sync() ? VirtioBlk.statusOK : VirtioBlk.statusIOErr, 0)
        case VirtioBlk.typeGetID:
            var writer = ChainWriter(memory: memory, buffers: output)
            let n = id.withUnsafeBytes { p in (try? writer.write(p)) ?? 0 }
            return (VirtioBlk.statusOK, n)
        case VirtioBlk.typeDiscard, VirtioBlk.typeWriteZeroes:
            return (discardOrZero(type: type, input: input, memory: memory, features: features), 0)
        default:
            return (VirtioBlk.statusUnsupported, 0)
        }
    }

    /// The byte offset of [sector*512, +length) if the length is whole sectors and the
    /// range lies inside the capacity; nil otherwise (checked arithmetic throughout).
    func range(sector: UInt64, length: UInt64) -> UInt64? {
        guard length % DiskImage.sectorSize == 0 else { return nil }
        let (offset, o1) = sector.multipliedReportingOverflow(by: DiskImage.sectorSize)
        let (end, o2) = offset.addingReportingOverflow(length)
        guard !o1, !o2, end <= disk.capacityBytes else { return nil }
        return offset
    }

    /// pread/pwrite straight between the image and guest buffers (no bounce copy).
    /// Guest-contiguous buffers are merged into one system call. Returns success and the
    /// bytes moved.
    func transfer(_ buffers: [Buffer], memory: GuestMemory, at offset: UInt64, toGuest: Bool) -> (Bool, Int) {
        var done = 0
        for piece in Self.merged(buffers) {
            let disk = self.disk
            let position = offset + UInt64(done)
            let ok = (try? memory.withBytes(at: piece.addr, length: Int(piece.len)) { p in
                toGuest ? disk.read(into: p, at: position) : disk.write(from: UnsafeRawBufferPointer(p), at: position)
            }) ?? false
            guard ok else { return (false, done) }
            done += Int(piece.len)
        }
        return (true, done)
    }

    /// DISCARD / WRITE_ZEROES (§5.2.6): every segment is read and checked before any is
    /// carried out, so a bad segment leaves the image untouched.
    func discardOrZero(type: UInt32, input: [Buffer], memory: GuestMemory, features: VirtioFeatures) -> UInt8 {
        let discard = type == VirtioBlk.typeDiscard
        if disk.readOnly { return VirtioBlk.statusIOErr }
        guard features.contains(discard ? .blkDiscard : .blkWriteZeroes) else { return VirtioBlk.statusUnsupported }
        let length = Self.total(input)
        let segmentSize = UInt64(VirtioBlk.segmentSize)
        guard length > 0, length % segmentSize == 0, length / segmentSize <= UInt64(VirtioBlk.maxDiscardSegments) else {
            return VirtioBlk.statusIOErr
        }
        var reader = ChainReader(memory: memory, buffers: input)
        var segments: [(sector: UInt64, count: UInt32, flags: UInt32)] = []
        for _ in 0..<Int(length / segmentSize) {
            guard let sector = try? reader.read(UInt64.self), let count = try? reader.read(UInt32.self),
                  let flags = try? reader.read(UInt32.self) else { return VirtioBlk.statusIOErr }
            segments.append((sector, count, flags))
        }
        // Flags first: the spec makes any unknown flag (and unmap on a discard) UNSUPP.
        for s in segments where s.flags & ~VirtioBlk.flagUnmap != 0 || (discard && s.flags != 0) {
            return VirtioBlk.statusUnsupported
        }
        var ranges: [(offset: UInt64, length: UInt64, unmap: Bool)] = []
        for s in segments {
            let bytes = UInt64(s.count) * DiskImage.sectorSize  // < 2^41: no overflow
            guard s.count <= VirtioBlk.maxDiscardSectors, let offset = range(sector: s.sector, length: bytes) else {
                return VirtioBlk.statusIOErr
            }
            ranges.append((offset, bytes, s.flags & VirtioBlk.flagUnmap != 0))
        }
        for r in ranges {
            let ok = discard ? disk.discard(at: r.offset, length: r.length)
                             : disk.writeZeroes(at: r.offset, length: r.length, mayUnmap: r.unmap)
            if !ok { return VirtioBlk.statusIOErr }
        }
        return VirtioBlk.statusOK
    }

    // MARK: Buffer list helpers

    static func total(_ buffers: [Buffer]) -> UInt64 { buffers.reduce(0) { $0 + UInt64($1.len) } }

    /// `buffers` without their first `n` bytes.
    static func dropping(_ n: Int, from buffers: [Buffer]) -> [Buffer] {
        var skip = UInt64(n)
        var out: [Buffer] = []
        for b in buffers {
            if skip >= UInt64(b.len) { skip -= UInt64(b.len); continue }
            out.append(Buffer(addr: b.addr + skip, len: b.len - UInt32(skip)))
            skip = 0
        }
        return out
    }

    /// `buffers` without their last `n` bytes.
    static func dropLast(_ n: Int, from buffers: [Buffer]) -> [Buffer] {
        var out = buffers
        var cut = UInt64(n)
        while cut > 0, let last = out.last {
            out.removeLast()
            if UInt64(last.len) > cut {
                out.append(Buffer(addr: last.addr, len: last.len - UInt32(cut)))
                cut = 0
            } else {
                cut -= UInt64(last.len)
            }
        }
        return out
    }

    /// Adjacent guest buffers joined. Both halves were checked to be in RAM, and RAM
    /// regions are separated by the MMIO hole, so a join never spans two regions.
    static func merged(_ buffers: [Buffer]) -> [Buffer] {
        var out: [Buffer] = []
        out.reserveCapacity(buffers.count)
        for b in buffers {
            if let last = out.last, last.addr + UInt64(last.len) == b.addr, UInt64(last.len) + UInt64(b.len) <= UInt64(Int32.max) {
                out[out.count - 1].len += b.len
            } else {
                out.append(b)
            }
        }
        return out
    }
}
