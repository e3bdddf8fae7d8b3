#if canImport(Glibc)
import Glibc
#endif

/// The snapshot container (docs/snapshot.md): a header, then tagged sections, each with
/// its own length and CRC-32, so a reader finds a truncated or corrupted file before it
/// decodes a single field, and names the section that is wrong.
///
///     header:  magic "PVMMSNAP" | version u32 | flavour u32 | sections u32 | crc32 u32 (of the 20 bytes before)
///     section: tag [4] ASCII | length u64 | crc32 u32 (of the payload) | payload
///
/// All integers little-endian. Plain bytes in, plain bytes out: no KVM, no files.
public enum SnapshotFormat {
    public static let magic: [UInt8] = Array("PVMMSNAP".utf8)
    /// Bumped on any change a version-1 reader could misread.
    public static let version: UInt32 = 1
    public static let headerSize = 24
    public static let sectionHeaderSize = 16
    /// More is not a snapshot of a pvmm VM (a vCPU section is ~6 KiB; 4096 vCPUs at most).
    public static let maxSections: UInt32 = 8192
    /// The state file (not guest memory) is a few hundred KiB at most.
    public static let maxStateBytes = 64 << 20
}

/// Which KVM took the snapshot: vCPU state of one cannot run on the other.
public enum SnapshotFlavour: UInt32, Sendable {
    case pvm = 1
    case hardware = 2

    public var name: String { self == .pvm ? "PVM (pagetable-based, kvm_pvm)" : "hardware KVM (VMX/SVM)" }

    /// This host's flavour as its loaded KVM module says (no KVM call: a reader of a
    /// snapshot may not have /dev/kvm open). The VMM confirms it with its vCPU probe.
    public static var ofThisHost: SnapshotFlavour {
        var st = stat()
        return stat("/sys/module/kvm_pvm", &st) == 0 ? .pvm : .hardware
    }
}

/// One section's four-character tag ("VCPU").
public struct SectionTag: Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt32
    public init(_ s: StaticString) {
        precondition(s.utf8CodeUnitCount == 4)
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(s.utf8Start[i]) << (8 * UInt32(i)) }
        raw = v
    }
    public init(raw: UInt32) { self.raw = raw }
    public var description: String {
        let b = (0..<4).map { UInt8(truncatingIfNeeded: raw >> (8 * UInt32($0))) }
        return b.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) ? String(decoding: b, as: UTF8.self) : "0x" + String(raw, radix: 16)
    }
}

/// What is wrong with a snapshot, a sentence each, naming the section or field.
public enum SnapshotError: Error, Equatable, Sendable, CustomStringConvertible {
    case notASnapshot(String)
    case version(found: UInt32)
    case flavour(found: UInt32, host: SnapshotFlavour)
    case truncated(String)
    case checksum(section: String)
    case malformed(field: String, message: String)
    case missing(section: String)
    case diskChanged(index: Int, path: String, what: String)
    case memory(String)
    case file(path: String, message: String)

    public var description: String {
        switch self {
        case .notASnapshot(let m): "not a pvmm snapshot: \(m)"
        case .version(let v): "snapshot format version \(v) is not supported (this pvmm reads version \(SnapshotFormat.version))"
        case .flavour(let f, let host):
            "snapshot was taken on \(SnapshotFlavour(rawValue: f)?.name ?? "an unknown host (flavour \(f))"); this host is \(host.name): its vCPU state cannot run here"
        case .truncated(let w): "snapshot is truncated: \(w)"
        case .checksum(let s): "snapshot section \(s) is corrupt (CRC-32 mismatch)"
        case .malformed(let f, let m): "snapshot field \(f): \(m)"
        case .missing(let s): "snapshot has no \(s) section"
        case .diskChanged(let i, let p, let w): "disk \(i) (\(p)) changed since the snapshot: \(w) (--force-disks restores anyway)"
        case .memory(let m): "snapshot memory: \(m)"
        case .file(let p, let m): "\(p): \(m)"
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zlib's crc32 and pvos's
/// `blk read` compute it.
public enum CRC32 {
    static let table: [UInt32] = (0..<256).map { i in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func checksum(_ bytes: some Sequence<UInt8>, seed: UInt32 = 0) -> UInt32 {
        var c = ~seed
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return ~c
    }
}

/// Little-endian writer for section payloads.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    public init() {}

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { int(v) }
    public mutating func u32(_ v: UInt32) { int(v) }
    public mutating func u64(_ v: UInt64) { int(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    mutating func int<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
    /// u32 length, then the bytes.
    public mutating func blob(_ b: some Collection<UInt8>) {
        u32(UInt32(b.count))
        bytes.append(contentsOf: b)
    }
    /// A C struct's bytes (KVM's own layout, which the kernel ABI keeps stable), length-prefixed.
    public mutating func raw<T>(_ v: T) {
        withUnsafeBytes(of: v) { blob($0) }
    }
}

/// Bounds-checked little-endian reader; every failure names `section`.
public struct ByteReader {
    let bytes: ArraySlice<UInt8>
    var offset: Int
    public let section: String

    public init(_ bytes: ArraySlice<UInt8>, section: String) {
        self.bytes = bytes
        offset = bytes.startIndex
        self.section = section
    }

    public var isAtEnd: Bool { offset == bytes.endIndex }

    mutating func take(_ n: Int, _ field: String) throws(SnapshotError) -> ArraySlice<UInt8> {
        guard n >= 0, bytes.endIndex - offset >= n else {
            throw .truncated("section \(section) ends inside \(field)")
        }
        defer { offset += n }
        return bytes[offset..<(offset + n)]
    }

    mutating func int<T: FixedWidthInteger>(_: T.Type, _ field: String) throws(SnapshotError) -> T {
        let s = try take(MemoryLayout<T>.size, field)
        var v: T = 0
        for (i, b) in s.enumerated() { v |= T(b) << (8 * i) }
        return v
    }

    public mutating func u8(_ f: String) throws(SnapshotError) -> UInt8 { try int(UInt8.self, f) }
    public mutating func u16(_ f: String) throws(SnapshotError) -> UInt16 { try int(UInt16.self, f) }
    public mutating func u32(_ f: String) throws(SnapshotError) -> UInt32 { try int(UInt32.self, f) }
    public mutating func u64(_ f: String) throws(SnapshotError) -> UInt64 { try int(UInt64.self, f) }
    public mutating func bool(_ f: String) throws(SnapshotError) -> Bool {
        switch try u8(f) {
        case 0: return false
        case 1: return true
        case let v: throw .malformed(field: "\(section).\(f)", message: "\(v) is not a boolean")
        }
    }

    public mutating func blob(_ f: String, max: Int) throws(SnapshotError) -> ArraySlice<UInt8> {
        let n = try u32(f + " length")
        guard n <= UInt32(max) else { throw .malformed(field: "\(section).\(f)", message: "\(n) bytes, at most \(max) allowed") }
        return try take(Int(n), f)
    }

    /// A C struct written by `ByteWriter.raw`: its length must be exactly the struct's.
    public mutating func raw<T>(_ zero: T, _ f: String) throws(SnapshotError) -> T {
        let b = try blob(f, max: MemoryLayout<T>.size)
        guard b.count == MemoryLayout<T>.size else {
            throw .malformed(field: "\(section).\(f)", message: "\(b.count) bytes, KVM's struct has \(MemoryLayout<T>.size)")
        }
        var v = zero
        withUnsafeMutableBytes(of: &v) { p in for (i, x) in b.enumerated() { p[i] = x } }
        return v
    }

    /// A blob that must be exactly `size` bytes (one of KVM's structs, kept as bytes).
    public mutating func exact(_ f: String, _ size: Int) throws(SnapshotError) -> ArraySlice<UInt8> {
        let b = try blob(f, max: size)
        guard b.count == size else {
            throw .malformed(field: "\(section).\(f)", message: "\(b.count) bytes, KVM's struct has \(size)")
        }
        return b
    }

    /// The section must be used up: trailing bytes mean a different layout.
    public func finish() throws(SnapshotError) {
        guard isAtEnd else { throw .malformed(field: section, message: "\(bytes.endIndex - offset) unexpected bytes at the end") }
    }
}

/// A parsed container: the flavour and the sections in file order.
public struct SnapshotContainer: Sendable {
    public var flavour: SnapshotFlavour
    public var sections: [(tag: SectionTag, payload: ArraySlice<UInt8>)]

    public init(flavour: SnapshotFlavour, sections: [(tag: SectionTag, payload: ArraySlice<UInt8>)] = []) {
        self.flavour = flavour
        self.sections = sections
    }

    public mutating func append(_ tag: SectionTag, _ payload: [UInt8]) { sections.append((tag, payload[...])) }

    /// The whole file.
    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        for b in SnapshotFormat.magic { w.u8(b) }
        w.u32(SnapshotFormat.version)
        w.u32(flavour.rawValue)
        w.u32(UInt32(sections.count))
        w.u32(CRC32.checksum(w.bytes))
        for (tag, payload) in sections {
            w.u32(tag.raw)
            w.u64(UInt64(payload.count))
            w.u32(CRC32.checksum(payload))
            for b in payload { w.u8(b) }
        }
        return w.bytes
    }

    /// Parses and checks the container: magic, version, header CRC, flavour against
    /// `host`, every section's length and CRC. Nothing in a section is decoded yet.
    public init(parsing bytes: [UInt8], host: SnapshotFlavour) throws(SnapshotError) {
        guard bytes.count >= SnapshotFormat.headerSize else {
            if bytes.count >= 8 && Array(bytes[0..<8]) != SnapshotFormat.magic { throw .notASnapshot("no PVMMSNAP magic") }
            throw .truncated("\(bytes.count) bytes is shorter than the \(SnapshotFormat.headerSize)-byte header")
        }
        guard Array(bytes[0..<8]) == SnapshotFormat.magic else { throw .notASnapshot("no PVMMSNAP magic") }
        var r = ByteReader(bytes[8...], section: "header")
        let version = try r.u32("version")
        let flavour = try r.u32("flavour")
        let count = try r.u32("section count")
        let crc = try r.u32("crc32")
        // The version is reported before the checksum: a newer format may lay out its
        // header differently.
        guard version == SnapshotFormat.version else { throw .version(found: version) }
        guard CRC32.checksum(bytes[0..<20]) == crc else { throw .checksum(section: "header") }
        guard let f = SnapshotFlavour(rawValue: flavour), f == host else { throw .flavour(found: flavour, host: host) }
        guard count <= SnapshotFormat.maxSections else {
            throw .malformed(field: "header.sections", message: "\(count) is more than \(SnapshotFormat.maxSections)")
        }
        self.flavour = f
        var sections: [(tag: SectionTag, payload: ArraySlice<UInt8>)] = []
        var offset = SnapshotFormat.headerSize
        for i in 0..<Int(count) {
            var h = ByteReader(bytes[offset...], section: "section \(i) header")
            let tag = SectionTag(raw: try h.u32("tag"))
            let length = try h.u64("length")
            let sum = try h.u32("crc32")
            offset += SnapshotFormat.sectionHeaderSize
            guard length <= UInt64(bytes.count - offset) else {
                throw .truncated("section \(i) (\(tag)) needs \(length) bytes, \(bytes.count - offset) left")
            }
            let payload = bytes[offset..<(offset + Int(length))]
            guard CRC32.checksum(payload) == sum else { throw .checksum(section: "\(i) (\(tag))") }
            sections.append((tag, payload))
            offset += Int(length)
        }
        guard offset == bytes.count else {
            throw .malformed(field: "file", message: "\(bytes.count - offset) bytes after the last section")
        }
        self.sections = sections
    }

    public func all(_ tag: SectionTag) -> [ArraySlice<UInt8>] { sections.filter { $0.tag == tag }.map(\.payload) }

    public func one(_ tag: SectionTag) throws(SnapshotError) -> ArraySlice<UInt8> {
        let s = all(tag)
        guard s.count == 1 else {
            if s.isEmpty { throw .missing(section: tag.description) }
            throw .malformed(field: tag.description, message: "\(s.count) sections, one expected")
        }
        return s[0]
    }
}
