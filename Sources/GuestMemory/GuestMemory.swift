#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemPackage

/// Why a guest-memory access was refused. Every case names the offending guest range.
public enum GuestMemoryError: Error, Equatable, Sendable {
    /// [address, address+length) is not entirely inside one RAM region.
    case outOfRange(address: UInt64, length: UInt64)
    /// address + length overflows 64 bits.
    case overflow(address: UInt64, length: UInt64)
    /// The requested RAM size cannot be laid out (zero, unaligned or too large).
    case badSize(UInt64)
    /// mmap of the backing store failed.
    case mapFailed(Errno)
    /// Writing a memory image (a snapshot) failed.
    case imageWrite(Errno)
}

extension GuestMemoryError: CustomStringConvertible {
    /// A sentence with hex guest addresses, for logs and crash reports.
    public var description: String {
        func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        return switch self {
        case let .outOfRange(address, length): "\(hex(address)) (\(length) bytes) is not inside guest RAM"
        case let .overflow(address, length): "\(hex(address)) + \(length) bytes overflows 64 bits"
        case let .badSize(size): "\(size) bytes of RAM cannot be laid out (zero, not page-aligned or too large)"
        case let .mapFailed(e): "mmap of guest RAM failed: \(e)"
        case let .imageWrite(e): "writing the memory image failed: \(e)"
        }
    }
}

/// One contiguous range of guest-physical RAM and where it lives in this process.
public struct GuestRegion: Sendable, Equatable {
    public let guestBase: UInt64
    public let size: UInt64
    /// Host virtual address of `guestBase` (for KVM_SET_USER_MEMORY_REGION only).
    public let hostAddress: UInt
    public var guestEnd: UInt64 { guestBase + size }
}

/// Guest RAM: one anonymous shared mapping, split around the MMIO hole below 4 GiB.
///
/// This is the only type that does pointer arithmetic on guest memory. Every access is
/// checked with overflow-safe arithmetic against the RAM regions and fails with a
/// `GuestMemoryError` instead of touching host memory outside the mapping.
///
/// `@unchecked Sendable`: the mapping is immutable after init; the bytes inside are shared
/// with the guest, which writes them concurrently anyway, so no lock could make them
/// consistent. Callers treat guest bytes as untrusted input.
public final class GuestMemory: @unchecked Sendable {
    public let regions: [GuestRegion]
    public let size: UInt64
    let base: UnsafeMutableRawPointer
    /// A private copy-on-write mapping of a snapshot's memory file (a restore), not
    /// anonymous shared memory. Changes only in `discardAll`, with nothing running.
    var fileBacked = false

    public static let pageSize: UInt64 = 4096

    /// Maps `size` bytes of RAM. RAM fills [0, holeStart) first and continues at `holeEnd`.
    /// With `file` (a snapshot's memory image, `size` bytes, RAM in mapping order) the
    /// mapping is private and copy-on-write: pages are read from the file only when the
    /// guest touches them, written ones become this process's own, and every VM restored
    /// from the same file shares the untouched ones in the page cache.
    public init(size: UInt64, holeStart: UInt64 = 0xC000_0000, holeEnd: UInt64 = 0x1_0000_0000,
                file: Int32? = nil) throws(GuestMemoryError) {
        guard size > 0, size % GuestMemory.pageSize == 0, size <= (1 << 46), holeStart <= holeEnd else { throw .badSize(size) }
        let p = file.map { mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, $0, 0) }
            ?? mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let p, p != MAP_FAILED else { throw .mapFailed(Errno(rawValue: errno)) }
        fileBacked = file != nil
        // Guest RAM holds no secrets of ours but must not be dumped or inherited by children.
        _ = madvise(p, Int(size), MADV_DONTFORK)
        base = p
        self.size = size
        let low = min(size, holeStart)
        var r = [GuestRegion(guestBase: 0, size: low, hostAddress: UInt(bitPattern: p))]
        if size > low {
            r.append(GuestRegion(guestBase: holeEnd, size: size - low, hostAddress: UInt(bitPattern: p + Int(low))))
        }
        regions = r
    }

    deinit { munmap(base, Int(size)) }

    /// The highest guest-physical address of RAM, exclusive.
    /// Zeroes all of RAM and gives its pages back to the host (a VM reboot): the mapping
    /// is shared memory, so MADV_REMOVE punches the pages out (MADV_DONTNEED would only
    /// unmap them and keep their contents); memset if the kernel refuses.
    public func discardAll() {
        if fileBacked {
            // MADV_REMOVE cannot punch a private file mapping, and MADV_DONTNEED would bring
            // the snapshot back: put fresh anonymous memory at the same address (KVM's
            // memslot follows the host address, its MMU notifier sees the remap).
            let p = mmap(base, Int(size), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0)
            if let p, p != MAP_FAILED {
                _ = madvise(p, Int(size), MADV_DONTFORK)
                fileBacked = false
                return
            }
        }
        if madvise(base, Int(size), MADV_REMOVE) != 0 { memset(base, 0, Int(size)) }
    }

    public var ramEnd: UInt64 { regions[regions.count - 1].guestEnd }

    /// True when [address, address+length) lies inside one RAM region.
    public func contains(_ address: UInt64, length: UInt64) -> Bool {
        (try? offset(of: address, length: length)) != nil
    }

    /// Offset into the backing mapping of [address, address+length), or an error.
    @inline(__always)
    func offset(of address: UInt64, length: UInt64) throws(GuestMemoryError) -> Int {
        let (end, o) = address.addingReportingOverflow(length)
        if o { throw .overflow(address: address, length: length) }
        var hostOffset: UInt64 = 0
        for r in regions {
            if address >= r.guestBase && end <= r.guestEnd {
                return Int(hostOffset + (address - r.guestBase))
            }
            hostOffset += r.size
        }
        throw .outOfRange(address: address, length: length)
    }

    /// Calls `body` with the host bytes of [address, address+length). The pointer must not
    /// escape: it is valid only while this GuestMemory lives.
    @inline(__always)
    public func withBytes<R>(at address: UInt64, length: Int,
                             _ body: (UnsafeMutableRawBufferPointer) throws(GuestMemoryError) -> R) throws(GuestMemoryError) -> R {
        guard length >= 0 else { throw .outOfRange(address: address, length: UInt64(bitPattern: Int64(length))) }
        let off = try offset(of: address, length: UInt64(length))
        return try body(UnsafeMutableRawBufferPointer(start: base + off, count: length))
    }

    /// The host address of [address, address+length), for an iovec that readv/writev fill
    /// or drain straight from guest memory. Checked like every access; valid only while
    /// this GuestMemory lives (the device holding the iovec holds the memory too).
    @inline(__always)
    public func hostPointer(at address: UInt64, length: UInt64) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        base + (try offset(of: address, length: length))
    }

    // MARK: Scalars (little-endian, unaligned allowed)

    @inline(__always)
    public func read<T: FixedWidthInteger>(_: T.Type = T.self, at address: UInt64) throws(GuestMemoryError) -> T {
        let off = try offset(of: address, length: UInt64(MemoryLayout<T>.size))
        return T(littleEndian: (base + off).loadUnaligned(as: T.self))
    }

    @inline(__always)
    public func write<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws(GuestMemoryError) {
        let off = try offset(of: address, length: UInt64(MemoryLayout<T>.size))
        (base + off).storeBytes(of: value.littleEndian, as: T.self)
    }

    // MARK: Byte ranges

    public func write(bytes: UnsafeRawBufferPointer, at address: UInt64) throws(GuestMemoryError) {
        let off = try offset(of: address, length: UInt64(bytes.count))
        if let src = bytes.baseAddress { (base + off).copyMemory(from: src, byteCount: bytes.count) }
    }

    public func write(_ bytes: [UInt8], at address: UInt64) throws(GuestMemoryError) {
        let off = try offset(of: address, length: UInt64(bytes.count))
        bytes.withUnsafeBytes { if let src = $0.baseAddress { (base + off).copyMemory(from: src, byteCount: $0.count) } }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at address: UInt64) throws(GuestMemoryError) {
        let off = try offset(of: address, length: UInt64(buffer.count))
        if let dst = buffer.baseAddress { dst.copyMemory(from: base + off, byteCount: buffer.count) }
    }

    public func readBytes(at address: UInt64, count: Int) throws(GuestMemoryError) -> [UInt8] {
        guard count >= 0 else { throw .outOfRange(address: address, length: 0) }
        let off = try offset(of: address, length: UInt64(count))
        return [UInt8](UnsafeRawBufferPointer(start: base + off, count: count))
    }

    public func fill(_ byte: UInt8, at address: UInt64, count: UInt64) throws(GuestMemoryError) {
        let off = try offset(of: address, length: count)
        memset(base + off, Int32(byte), Int(count))
    }

    /// Reads a NUL-terminated string of at most `max` bytes (without the NUL).
    public func readCString(at address: UInt64, max: Int) throws(GuestMemoryError) -> [UInt8] {
        var out: [UInt8] = []
        var a = address
        while out.count < max {
            let b: UInt8 = try read(at: a)
            if b == 0 { break }
            out.append(b)
            a &+= 1
        }
        return out
    }
}
