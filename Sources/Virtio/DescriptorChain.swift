import GuestMemory

/// One split-ring descriptor as copied out of guest memory (virtio 1.2 §2.7.5).
public struct Descriptor: Equatable, Sendable {
    /// VIRTQ_DESC_F_NEXT: the chain continues at `next`.
    public static let flagNext: UInt16 = 1
    /// VIRTQ_DESC_F_WRITE: the buffer is device-writable (else device-readable).
    public static let flagWrite: UInt16 = 2
    /// VIRTQ_DESC_F_INDIRECT: the buffer is a table of descriptors (§2.7.5.3).
    public static let flagIndirect: UInt16 = 4
    /// Size of one descriptor in the table.
    public static let size: UInt64 = 16

    public var addr: UInt64
    public var len: UInt32
    public var flags: UInt16
    public var next: UInt16

    public init(addr: UInt64, len: UInt32, flags: UInt16 = 0, next: UInt16 = 0) {
        self.addr = addr
        self.len = len
        self.flags = flags
        self.next = next
    }

    public var hasNext: Bool { flags & Descriptor.flagNext != 0 }
    public var isWritable: Bool { flags & Descriptor.flagWrite != 0 }
    public var isIndirect: Bool { flags & Descriptor.flagIndirect != 0 }

    /// Copies the 16 bytes at `address` out of guest memory in one access, so later checks
    /// see one consistent snapshot whatever the guest writes meanwhile.
    public static func load(from memory: GuestMemory, at address: UInt64) throws(GuestMemoryError) -> Descriptor {
        try memory.withBytes(at: address, length: 16) { b throws(GuestMemoryError) in
            Descriptor(addr: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                       len: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                       flags: UInt16(littleEndian: b.loadUnaligned(fromByteOffset: 12, as: UInt16.self)),
                       next: UInt16(littleEndian: b.loadUnaligned(fromByteOffset: 14, as: UInt16.self)))
        }
    }

    /// The 16-byte little-endian encoding (for drivers in tests and fuzzers).
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: addr >> (8 * UInt64(i)))) }
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: len >> (8 * UInt32(i)))) }
        for i in 0..<2 { out.append(UInt8(truncatingIfNeeded: flags >> (8 * UInt16(i)))) }
        for i in 0..<2 { out.append(UInt8(truncatingIfNeeded: next >> (8 * UInt16(i)))) }
        return out
    }
}

/// A guest buffer: [addr, addr+len) of guest-physical memory, inside one RAM region.
public struct Buffer: Equatable, Hashable, Sendable {
    public var addr: UInt64
    public var len: UInt32
    public init(addr: UInt64, len: UInt32) {
        self.addr = addr
        self.len = len
    }
}

/// A descriptor chain, validated as a whole before the device touches any buffer (as
/// crosvm does): a malformed chain is refused up front instead of half-processed.
///
/// Rules (virtio 1.2 §2.7.4-§2.7.5.3), each a `VirtqueueError` case:
/// - head and every `next` inside their table (the queue, or the indirect table);
/// - at most `queueSize` buffer descriptors, direct and indirect counted together
///   (§2.7.5.3.1); this also ends loops. Devices must therefore advertise limits such as
///   virtio-blk seg_max below the queue size;
/// - INDIRECT only if negotiated, never with NEXT, never inside an indirect table; the
///   table length a non-zero multiple of 16 holding at most `queueSize` descriptors; the
///   WRITE flag of the descriptor pointing at the table is ignored (§2.7.5.3.2);
/// - no device-readable descriptor after a device-writable one (§2.7.4.2);
/// - every buffer and indirect table inside one guest RAM region (overflow-checked);
/// - all buffers together at most UInt32.max bytes (§2.7.5.2; used.len is 32 bits).
///
/// Zero-length descriptors are legal in the spec and carry no bytes: they count toward
/// the length limit and the readable/writable ordering but are left out of the buffer
/// lists, and their address is not checked. A chain with no bytes at all is valid here;
/// whether it is a usable request is the device's call (a block request needs a header).
public struct DescriptorChain: Sendable {
    public let memory: GuestMemory
    /// The head index, to hand back with SplitQueue.addUsed.
    public let head: UInt16
    /// Device-readable buffers, in chain order, then device-writable ones.
    public private(set) var readable: [Buffer] = []
    public private(set) var writable: [Buffer] = []
    public private(set) var readableLength: UInt32 = 0
    public private(set) var writableLength: UInt32 = 0
    /// Buffer descriptors walked (direct and indirect, zero-length included).
    public private(set) var descriptorCount: Int = 0

    /// Walks and validates the chain at `head` in the queue's `descriptorTable`.
    public init(memory: GuestMemory, descriptorTable: UInt64, queueSize: UInt16, head: UInt16,
                indirectAllowed: Bool) throws(VirtqueueError) {
        self.memory = memory
        self.head = head
        var readable: [Buffer] = []
        var writable: [Buffer] = []
        let shape = try Self.walk(memory: memory, descriptorTable: descriptorTable, queueSize: queueSize, head: head,
                                  indirectAllowed: indirectAllowed) { b, w in
            if w { writable.append(b) } else { readable.append(b) }
        }
        self.readable = readable
        self.writable = writable
        readableLength = shape.readableLength
        writableLength = shape.writableLength
        descriptorCount = shape.descriptorCount
    }

    /// What a walk found besides the buffers.
    public struct Shape: Sendable, Equatable {
        public var readableLength: UInt32 = 0
        public var writableLength: UInt32 = 0
        public var descriptorCount = 0
    }

    /// Validates the chain at `head` (every rule above) and calls `visit` for each
    /// non-empty buffer in chain order, with whether it is device-writable. Allocates
    /// nothing: devices that move frames with readv/writev walk straight into an
    /// `IOVecList`. `visit` sees buffers before the whole chain is validated; a caller
    /// must discard what it collected when the walk throws.
    @inline(__always)
    public static func walk(memory: GuestMemory, descriptorTable: UInt64, queueSize: UInt16, head: UInt16,
                            indirectAllowed: Bool,
                            _ visit: (Buffer, Bool) throws(VirtqueueError) -> Void) throws(VirtqueueError) -> Shape {
        guard head < queueSize else { throw .headOutOfRange(head: head, size: queueSize) }
        var shape = Shape()
        var table = descriptorTable
        var tableCount = UInt32(queueSize)
        var inIndirect = false
        var index = head
        var sawWritable = false
        var total: UInt64 = 0
        var indirectCount = 0

        while true {
            // index < tableCount <= 32768, so the offset cannot overflow; the table itself
            // was checked to be in RAM (queue validate() or the indirect check below).
            let d: Descriptor
            do { d = try Descriptor.load(from: memory, at: table &+ UInt64(index) &* Descriptor.size) } catch {
                throw .memory(error)
            }

            if d.isIndirect {
                guard indirectAllowed else { throw .indirectNotNegotiated(head: head, index: index) }
                guard !inIndirect else { throw .nestedIndirect(head: head, index: index) }
                guard !d.hasNext else { throw .indirectWithNext(head: head, index: index) }
                guard d.len != 0, d.len % 16 == 0, d.len / 16 <= UInt32(queueSize) else {
                    throw .badIndirectLength(head: head, index: index, length: d.len)
                }
                guard memory.contains(d.addr, length: UInt64(d.len)) else {
                    throw .bufferOutsideMemory(head: head, address: d.addr, length: d.len)
                }
                table = d.addr
                tableCount = d.len / 16
                inIndirect = true
                index = 0
                continue
            }

            shape.descriptorCount += 1
            // Walking more descriptors of one table than it holds means one came twice.
            if inIndirect {
                indirectCount += 1
                guard indirectCount <= Int(tableCount) else { throw .descriptorLoop(head: head, index: index, indirect: true) }
            } else if shape.descriptorCount > Int(queueSize) {
                throw .descriptorLoop(head: head, index: index, indirect: false)
            }
            guard shape.descriptorCount <= Int(queueSize) else { throw .chainTooLong(head: head, limit: queueSize) }

            if d.isWritable {
                sawWritable = true
            } else if sawWritable {
                throw .readableAfterWritable(head: head, index: index, indirect: inIndirect)
            }

            if d.len != 0 {
                guard memory.contains(d.addr, length: UInt64(d.len)) else {
                    throw .bufferOutsideMemory(head: head, address: d.addr, length: d.len)
                }
                total += UInt64(d.len)  // <= 32768 * (2^32 - 1): no overflow
                guard total <= UInt64(UInt32.max) else { throw .chainTooLarge(head: head) }
                if d.isWritable { shape.writableLength += d.len } else { shape.readableLength += d.len }
                try visit(Buffer(addr: d.addr, len: d.len), d.isWritable)
            }

            guard d.hasNext else { break }
            guard UInt32(d.next) < tableCount else {
                throw .nextOutOfRange(head: head, index: index, next: d.next, indirect: inIndirect)
            }
            index = d.next
        }
        return shape
    }

    /// A cursor over the device-readable buffers.
    public func reader() -> ChainReader { ChainReader(memory: memory, buffers: readable) }
    /// A cursor over the device-writable buffers.
    public func writer() -> ChainWriter { ChainWriter(memory: memory, buffers: writable) }
}

/// Position in a list of guest buffers; shared by ChainReader and ChainWriter.
struct BufferCursor: Sendable {
    let buffers: [Buffer]
    var index = 0
    var offset: UInt32 = 0
    private(set) var remaining: Int

    init(_ buffers: [Buffer]) {
        self.buffers = buffers
        remaining = buffers.reduce(0) { $0 + Int($1.len) }
    }

    /// Calls `body(guestAddress, count, progress)` for successive pieces covering up to `n`
    /// bytes; returns the bytes covered.
    mutating func advance(_ n: Int, _ body: (UInt64, Int, Int) throws(VirtqueueError) -> Void) throws(VirtqueueError) -> Int {
        var done = 0
        let want = max(0, min(n, remaining))
        while done < want {
            let b = buffers[index]
            let piece = min(Int(b.len - offset), want - done)
            // addr + len was checked in RAM when the chain was built, so this cannot wrap.
            try body(b.addr + UInt64(offset), piece, done)
            done += piece
            offset += UInt32(piece)
            if offset == b.len {
                index += 1
                offset = 0
            }
        }
        remaining -= done
        return done
    }
}

/// Copies out of a chain's device-readable buffers, in order. Never reads outside them.
public struct ChainReader: Sendable {
    public let memory: GuestMemory
    var cursor: BufferCursor

    public init(memory: GuestMemory, buffers: [Buffer]) {
        self.memory = memory
        cursor = BufferCursor(buffers)
    }

    /// Bytes not yet read.
    public var remaining: Int { cursor.remaining }

    /// Fills as much of `destination` as the buffers allow; returns the bytes copied.
    public mutating func read(into destination: UnsafeMutableRawBufferPointer) throws(VirtqueueError) -> Int {
        let mem = memory
        return try cursor.advance(destination.count) { (address, count, at) throws(VirtqueueError) in
            do throws(GuestMemoryError) {
                try mem.read(into: UnsafeMutableRawBufferPointer(rebasing: destination[at..<at + count]), at: address)
            } catch {
                throw .memory(error)
            }
        }
    }

    /// Fills all of `destination` or throws `bufferTooShort` without consuming anything.
    public mutating func readExactly(into destination: UnsafeMutableRawBufferPointer) throws(VirtqueueError) {
        guard destination.count <= remaining else { throw .bufferTooShort(needed: destination.count, available: remaining) }
        _ = try read(into: destination)
    }

    /// Up to `count` bytes.
    public mutating func readBytes(_ count: Int) throws(VirtqueueError) -> [UInt8] {
        let n = max(0, min(count, remaining))
        var out = [UInt8](repeating: 0, count: n)
        var result: Result<Int, VirtqueueError> = .success(0)
        out.withUnsafeMutableBytes { p in
            do throws(VirtqueueError) { result = .success(try read(into: p)) } catch { result = .failure(error) }
        }
        _ = try result.get()
        return out
    }

    /// A little-endian integer; throws `bufferTooShort` if fewer bytes remain.
    public mutating func read<T: FixedWidthInteger>(_: T.Type = T.self) throws(VirtqueueError) -> T {
        var value = T.zero
        try withUnsafeMutableBytes(of: &value) { p throws(VirtqueueError) in try readExactly(into: p) }
        return T(littleEndian: value)
    }

    /// Skips up to `count` bytes; returns how many were skipped.
    @discardableResult
    public mutating func skip(_ count: Int) -> Int {
        (try? cursor.advance(count) { (_, _, _) throws(VirtqueueError) in }) ?? 0
    }
}

/// Copies into a chain's device-writable buffers, in order. Never writes outside them.
public struct ChainWriter: Sendable {
    public let memory: GuestMemory
    var cursor: BufferCursor
    /// Bytes written (or skipped) so far: the `len` to report in the used ring.
    public private(set) var bytesWritten: Int = 0

    public init(memory: GuestMemory, buffers: [Buffer]) {
        self.memory = memory
        cursor = BufferCursor(buffers)
    }

    /// Room left.
    public var remaining: Int { cursor.remaining }

    /// Writes as much of `source` as fits; returns the bytes copied.
    @discardableResult
    public mutating func write(_ source: UnsafeRawBufferPointer) throws(VirtqueueError) -> Int {
        let mem = memory
        let n = try cursor.advance(source.count) { (address, count, at) throws(VirtqueueError) in
            do throws(GuestMemoryError) {
                try mem.write(bytes: UnsafeRawBufferPointer(rebasing: source[at..<at + count]), at: address)
            } catch {
                throw .memory(error)
            }
        }
        bytesWritten += n
        return n
    }

    /// Writes as much of `bytes` as fits; returns the bytes copied.
    @discardableResult
    public mutating func write(_ bytes: [UInt8]) throws(VirtqueueError) -> Int {
        var result: Result<Int, VirtqueueError> = .success(0)
        bytes.withUnsafeBytes { p in
            do throws(VirtqueueError) { result = .success(try write(p)) } catch { result = .failure(error) }
        }
        return try result.get()
    }

    /// Writes all of `source` or throws `bufferTooShort` without writing anything.
    public mutating func writeExactly(_ source: UnsafeRawBufferPointer) throws(VirtqueueError) {
        guard source.count <= remaining else { throw .bufferTooShort(needed: source.count, available: remaining) }
        _ = try write(source)
    }

    /// A little-endian integer (e.g. a status byte); throws `bufferTooShort` if it does
    /// not fit.
    public mutating func write<T: FixedWidthInteger>(_ value: T) throws(VirtqueueError) {
        var le = value.littleEndian
        try withUnsafeBytes(of: &le) { p throws(VirtqueueError) in try writeExactly(p) }
    }

    /// Skips up to `count` bytes (they count as written: the device must have filled
    /// them, §2.7.8.2); returns how many were skipped.
    @discardableResult
    public mutating func skip(_ count: Int) -> Int {
        let n = (try? cursor.advance(count) { (_, _, _) throws(VirtqueueError) in }) ?? 0
        bytesWritten += n
        return n
    }
}
