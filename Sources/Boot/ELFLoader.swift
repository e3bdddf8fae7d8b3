import GuestMemory
import PVMMABI

/// Which entry point the loader chose, and so which machine state the vCPU starts in.
public enum EntryKind: Equatable, Sendable {
    /// pvmm's paravirtual entry: long mode, paging on (see docs/boot.md).
    case pvmm64
    /// Xen PVH: 32-bit protected mode, paging off.
    case pvh32
}

/// A kernel image placed in guest RAM.
public struct LoadedKernel: Sendable, Equatable {
    public let entryKind: EntryKind
    public let entry: UInt64
    /// Lowest loaded guest-physical address.
    public let imageStart: UInt64
    /// Highest loaded guest-physical address, exclusive (includes bss).
    public let imageEnd: UInt64

    public init(entryKind: EntryKind, entry: UInt64, imageStart: UInt64, imageEnd: UInt64) {
        self.entryKind = entryKind
        self.entry = entry
        self.imageStart = imageStart
        self.imageEnd = imageEnd
    }
}

/// Bounds-checked little-endian reads from the kernel file. Callers check ranges with
/// `contains` first; the preconditions only turn a loader bug into a trap, never into an
/// out-of-bounds read.
struct FileBytes {
    let bytes: UnsafeRawBufferPointer
    var size: UInt64 { UInt64(bytes.count) }

    func contains(_ offset: UInt64, _ length: UInt64) -> Bool {
        let (end, o) = offset.addingReportingOverflow(length)
        return !o && end <= size
    }

    func load<T: FixedWidthInteger>(_: T.Type, _ offset: UInt64) -> T {
        precondition(contains(offset, UInt64(MemoryLayout<T>.size)))
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: Int(offset), as: T.self))
    }

    func slice(_ offset: UInt64, _ length: UInt64) -> UnsafeRawBufferPointer {
        precondition(contains(offset, length))
        return UnsafeRawBufferPointer(rebasing: bytes[Int(offset)..<Int(offset + length)])
    }
}

struct ProgramHeader {
    var type: UInt32
    var offset: UInt64
    var paddr: UInt64
    var filesz: UInt64
    var memsz: UInt64
    var align: UInt64
}

/// Loads an ELF64 x86-64 kernel at its physical addresses. The file is hostile input:
/// everything is validated (with overflow-checked arithmetic) before guest RAM is written.
public struct ELFLoader {
    static let ptLoad: UInt32 = 1
    static let ptNote: UInt32 = 4
    static let phdrSize: UInt64 = 56

    /// Validates `file`, copies its PT_LOAD segments to their p_paddr, zeroes their bss
    /// and picks the entry from the PVMM or PVH note (PVMM first when `preferPVMMEntry`).
    public static func load(_ file: UnsafeRawBufferPointer, into mem: GuestMemory,
                            preferPVMMEntry: Bool = true) throws(BootError) -> LoadedKernel {
        let f = FileBytes(bytes: file)
        let (phdrs, elfEntry) = try parseHeaders(f)

        // Pass 1: validate loadable segments.
        var loads: [(index: Int, ph: ProgramHeader)] = []
        for (i, p) in phdrs.enumerated() where p.type == ptLoad {
            guard p.filesz <= p.memsz else {
                throw .segmentFileSizeExceedsMemorySize(segment: i, fileSize: p.filesz, memorySize: p.memsz)
            }
            guard p.filesz == 0 || f.contains(p.offset, p.filesz) else {
                throw .segmentDataOutsideFile(segment: i, offset: p.offset, size: p.filesz, fileSize: file.count)
            }
            if p.memsz == 0 { continue }
            let (end, o) = p.paddr.addingReportingOverflow(p.memsz)
            guard !o else { throw .segmentAddressOverflow(segment: i, address: p.paddr, size: p.memsz) }
            let range = AddressRange(p.paddr, end)
            guard p.paddr >= BootLayout.reservedEnd else {
                throw .segmentInReservedMemory(segment: i, range: range, reservedEnd: BootLayout.reservedEnd)
            }
            guard mem.contains(p.paddr, length: p.memsz) else {
                throw .segmentOutsideRAM(segment: i, range: range,
                                         ram: mem.regions.map { AddressRange($0.guestBase, $0.guestEnd) })
            }
            loads.append((i, p))
        }
        guard !loads.isEmpty else { throw .noLoadableSegment }

        // Sorted by start, each segment must end before the next begins (O(n log n):
        // e_phnum can be up to 65534).
        let sorted = loads.sorted { $0.ph.paddr < $1.ph.paddr }
        for k in sorted.indices.dropFirst() {
            let a = sorted[k - 1], b = sorted[k]
            if b.ph.paddr < a.ph.paddr + a.ph.memsz {
                throw .segmentsOverlap(first: a.index, firstRange: AddressRange(a.ph.paddr, a.ph.paddr + a.ph.memsz),
                                       second: b.index, secondRange: AddressRange(b.ph.paddr, b.ph.paddr + b.ph.memsz))
            }
        }

        // Pass 2: entry notes.
        let (kind, entry) = try chooseEntry(f, phdrs, elfEntry: elfEntry, preferPVMMEntry: preferPVMMEntry)
        // Jumping into bss (zeroes) or between segments can only crash the guest obscurely.
        guard loads.contains(where: { entry >= $0.ph.paddr && entry - $0.ph.paddr < $0.ph.filesz }) else {
            throw .entryOutsideImage(kind: kind, entry: entry)
        }

        // Pass 3: copy. Everything was checked, so a failure here is a loader bug.
        for (i, p) in loads {
            do {
                // p_offset of an all-bss segment is unchecked (may lie past EOF): no slice.
                if p.filesz > 0 { try mem.write(bytes: f.slice(p.offset, p.filesz), at: p.paddr) }
                try mem.fill(0, at: p.paddr + p.filesz, count: p.memsz - p.filesz)
            } catch {
                throw .guestMemory(what: "segment \(i)", error)
            }
        }
        return LoadedKernel(entryKind: kind, entry: entry, imageStart: sorted[0].ph.paddr,
                            imageEnd: sorted.map { $0.ph.paddr + $0.ph.memsz }.max()!)
    }

    /// Which entry `load` would use, from the ELF header and notes alone (nothing is
    /// loaded): the VMM sets its interrupt delivery by it before the first boot.
    public static func entry(of file: UnsafeRawBufferPointer, preferPVMMEntry: Bool = true) throws(BootError) -> EntryKind {
        let f = FileBytes(bytes: file)
        let (phdrs, elfEntry) = try parseHeaders(f)
        return try chooseEntry(f, phdrs, elfEntry: elfEntry, preferPVMMEntry: preferPVMMEntry).kind
    }

    /// Walks every PT_NOTE segment and picks the PVMM or the PVH entry.
    static func chooseEntry(_ f: FileBytes, _ phdrs: [ProgramHeader], elfEntry: UInt64,
                            preferPVMMEntry: Bool) throws(BootError) -> (kind: EntryKind, entry: UInt64) {
        var pvmm: UInt64?
        var pvh: UInt64?
        for (i, p) in phdrs.enumerated() where p.type == ptNote && p.filesz > 0 {
            guard f.contains(p.offset, p.filesz) else {
                throw .segmentDataOutsideFile(segment: i, offset: p.offset, size: p.filesz, fileSize: f.bytes.count)
            }
            try walkNotes(f.slice(p.offset, p.filesz), segment: i, align: p.align == 8 ? 8 : 4, pvmm: &pvmm, pvh: &pvh)
        }
        if let e = pvmm, preferPVMMEntry || pvh == nil { return (.pvmm64, e) }
        if let e = pvh { return (.pvh32, e) }
        throw .noEntryNote(elfEntry: elfEntry)
    }

    /// Checks the ELF header and returns the program headers and e_entry.
    static func parseHeaders(_ f: FileBytes) throws(BootError) -> ([ProgramHeader], UInt64) {
        guard f.size >= 64 else { throw .fileTooSmall(size: f.bytes.count) }
        guard f.load(UInt32.self, 0) == 0x464C_457F else { throw .notELF }
        let cls = f.load(UInt8.self, 4), data = f.load(UInt8.self, 5), identVersion = f.load(UInt8.self, 6)
        guard cls == 2 else { throw .notELF64(elfClass: cls) }
        guard data == 1 else { throw .notLittleEndian(encoding: data) }
        guard identVersion == 1 else { throw .badELFVersion(UInt32(identVersion)) }
        let type = f.load(UInt16.self, 16), machine = f.load(UInt16.self, 18), version = f.load(UInt32.self, 20)
        guard machine == 62 else { throw .notX86_64(machine: machine) }
        guard version == 1 else { throw .badELFVersion(version) }
        // ET_DYN is loaded as-is at its p_paddr; no relocations are applied.
        guard type == 2 || type == 3 else { throw .notExecutable(type: type) }
        let entry = f.load(UInt64.self, 24)
        let phoff = f.load(UInt64.self, 32)
        let phentsize = f.load(UInt16.self, 54), phnum = f.load(UInt16.self, 56)
        guard phentsize == phdrSize else { throw .badProgramHeaderSize(phentsize) }
        guard phnum > 0, phnum < 0xFFFF else { throw .badProgramHeaderCount(phnum) }
        // phnum * 56 < 2^22: cannot overflow; `contains` checks the addition.
        guard f.contains(phoff, UInt64(phnum) * phdrSize) else {
            throw .programHeadersOutsideFile(offset: phoff, count: Int(phnum), fileSize: f.bytes.count)
        }
        var out: [ProgramHeader] = []
        out.reserveCapacity(Int(phnum))
        for k in 0..<UInt64(phnum) {
            let b = phoff + k * phdrSize
            out.append(ProgramHeader(type: f.load(UInt32.self, b), offset: f.load(UInt64.self, b + 8),
                                     paddr: f.load(UInt64.self, b + 24), filesz: f.load(UInt64.self, b + 32),
                                     memsz: f.load(UInt64.self, b + 40), align: f.load(UInt64.self, b + 48)))
        }
        return (out, entry)
    }

    /// Walks the notes of one PT_NOTE segment. Name and descriptor are padded to `align`
    /// (4 per the gABI; 8 when p_align is 8, as binutils emits .note.gnu.property).
    /// Each note advances by at least 12 bytes, so the walk terminates.
    static func walkNotes(_ seg: UnsafeRawBufferPointer, segment: Int, align: UInt64,
                          pvmm: inout UInt64?, pvh: inout UInt64?) throws(BootError) {
        let s = FileBytes(bytes: seg)
        var pos: UInt64 = 0
        func up(_ v: UInt64) -> UInt64 { (v + align - 1) & ~(align - 1) }  // v < 2^34: no overflow
        while pos < s.size {
            guard s.contains(pos, 12) else { throw .malformedNote(segment: segment, offset: pos, reason: "truncated note header") }
            let namesz = UInt64(s.load(UInt32.self, pos)), descsz = UInt64(s.load(UInt32.self, pos + 4))
            let type = s.load(UInt32.self, pos + 8)
            let nameOff = pos + 12
            guard s.contains(nameOff, namesz) else {
                throw .malformedNote(segment: segment, offset: pos, reason: "name (\(namesz) bytes) runs past the segment end")
            }
            let descOff = pos + up(12 + namesz)
            guard s.contains(descOff, descsz) else {
                throw .malformedNote(segment: segment, offset: pos, reason: "descriptor (\(descsz) bytes) runs past the segment end")
            }
            let name = s.slice(nameOff, namesz)
            if type == BootNotes.xenPhys32Entry, name.elementsEqual(Array(BootNotes.xenName.utf8) + [0]) {
                let v: UInt64
                switch descsz {
                case 4: v = UInt64(s.load(UInt32.self, descOff))
                case 8: v = s.load(UInt64.self, descOff)
                default: throw .badEntryNote(name: BootNotes.xenName, descSize: UInt32(descsz))
                }
                guard v <= UInt32.max else { throw .pvhEntryAbove4GiB(v) }
                if pvh == nil { pvh = v }  // first note wins
            } else if type == BootNotes.pvmmEntry64, name.elementsEqual(Array(BootNotes.pvmmName.utf8) + [0]) {
                guard descsz == 8 else { throw .badEntryNote(name: BootNotes.pvmmName, descSize: UInt32(descsz)) }
                if pvmm == nil { pvmm = s.load(UInt64.self, descOff) }
            }
            // The last note's trailing padding may be cut off by the segment end.
            pos = descOff + up(descsz)
        }
    }
}
